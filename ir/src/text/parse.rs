//! Text to graph: the inverse of [`super::print`].
//!
//! The input is cut into tokens up front ([`lex`]); a character that cannot start a token, or a
//! string that never closes, becomes an error token, so it is reported only when the parser
//! reaches it and errors come out in reading order. Line breaks are plain whitespace and `#`
//! starts a comment, so blank lines and comments may go anywhere. Each node line is built with
//! [`Graph::add`] and its declared type, which re-runs type inference; the finished graph goes
//! through [`crate::verify`]. Every error carries the 1-based line and column of the token at
//! fault, and no input makes the parser panic.

use std::iter::Peekable;
use std::str::Chars;

use thiserror::Error;

use crate::dim::Dim;
use crate::dtype::DType;
use crate::error::IrError;
use crate::graph::{Graph, NodeId, TensorType};
use crate::infer::infer_type;
use crate::op::{Attr, Op};

/// A parse error with its 1-based line and column.
#[derive(Debug, Error, Clone, PartialEq)]
#[error("line {line}, column {column}: {msg}")]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub msg: String,
}

/// Parses the text form into a verified graph.
pub fn parse(text: &str) -> Result<Graph, ParseError> {
    Parser { tokens: lex(text), next: 0 }.graph()
}

/// Where a token starts.
#[derive(Clone, Copy, Debug)]
struct Pos {
    line: usize,
    column: usize,
}

impl Pos {
    fn error(self, msg: impl Into<String>) -> ParseError {
        ParseError { line: self.line, column: self.column, msg: msg.into() }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// `[A-Za-z_][A-Za-z0-9_.]*`: keywords, op and attribute names, dtypes, symbols, output names.
    Word(String),
    /// `%name`, a reference to a node.
    NodeRef(String),
    /// Digits, with an optional fraction and exponent; the sign is a separate `-`.
    Number(String),
    /// A double-quoted string, unescaped.
    Str(String),
    /// One of `= ( ) { } [ ] , : + - *`.
    Punct(char),
    /// Text the lexer could not read; the parser reports the message when it gets here.
    Bad(String),
    End,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    pos: Pos,
}

/// Cuts `text` into tokens, ending with [`Tok::End`] or, at the first unreadable spot, [`Tok::Bad`].
fn lex(text: &str) -> Vec<Token> {
    let mut lexer = Lexer { chars: text.chars().peekable(), pos: Pos { line: 1, column: 1 } };
    let mut tokens = Vec::new();
    while let Some(c) = lexer.peek() {
        let start = lexer.pos;
        let tok = match c {
            c if c.is_whitespace() => {
                lexer.take_while(char::is_whitespace);
                continue;
            }
            '#' => {
                lexer.take_while(|c| c != '\n');
                continue;
            }
            '%' => {
                lexer.bump();
                let name = lexer.take_while(is_name_char);
                if name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                    Tok::NodeRef(name)
                } else {
                    Tok::Bad("expected a node name ([A-Za-z_][A-Za-z0-9_.]*) after `%`".into())
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' => Tok::Word(lexer.take_while(is_name_char)),
            c if c.is_ascii_digit() => Tok::Number(lexer.number()),
            '"' => {
                lexer.bump();
                lexer.string().map_or_else(Tok::Bad, Tok::Str)
            }
            '=' | '(' | ')' | '{' | '}' | '[' | ']' | ',' | ':' | '+' | '-' | '*' => {
                lexer.bump();
                Tok::Punct(c)
            }
            other => Tok::Bad(format!("unexpected character {other:?}")),
        };
        let stop = matches!(tok, Tok::Bad(_));
        tokens.push(Token { tok, pos: start });
        if stop {
            return tokens;
        }
    }
    tokens.push(Token { tok: Tok::End, pos: lexer.pos });
    tokens
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

/// The characters of the text with the position of the next one.
struct Lexer<'a> {
    chars: Peekable<Chars<'a>>,
    pos: Pos,
}

impl Lexer<'_> {
    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    /// The character `k` places after the next one.
    fn peek_after(&self, k: usize) -> Option<char> {
        self.chars.clone().nth(k + 1)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.pos = Pos { line: self.pos.line + 1, column: 1 };
        } else {
            self.pos.column += 1;
        }
        Some(c)
    }

    fn take_while(&mut self, pred: impl Fn(char) -> bool) -> String {
        let mut s = String::new();
        while let Some(c) = self.peek().filter(|&c| pred(c)) {
            self.bump();
            s.push(c);
        }
        s
    }

    /// `[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?`, as Rust's `{:?}` writes an `f64` (or an integer).
    fn number(&mut self) -> String {
        let is_digit = |c: Option<char>| c.is_some_and(|c| c.is_ascii_digit());
        let mut s = self.take_while(|c| c.is_ascii_digit());
        if self.peek() == Some('.') && is_digit(self.peek_after(0)) {
            s.extend(self.bump());
            s += &self.take_while(|c| c.is_ascii_digit());
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            let signed = matches!(self.peek_after(0), Some('+' | '-'));
            if is_digit(self.peek_after(usize::from(signed))) {
                s.extend(self.bump());
                if signed {
                    s.extend(self.bump());
                }
                s += &self.take_while(|c| c.is_ascii_digit());
            }
        }
        s
    }

    /// The rest of a string after its opening quote, with `\\ \" \n \t` unescaped. A raw line
    /// break or the end of the text before the closing quote leaves it unterminated.
    fn string(&mut self) -> Result<String, String> {
        let mut s = String::new();
        loop {
            let c = self.peek().filter(|&c| c != '\n').ok_or("unterminated string")?;
            self.bump();
            match c {
                '"' => return Ok(s),
                '\\' => s.push(match self.bump().ok_or("unterminated string")? {
                    '\\' => '\\',
                    '"' => '"',
                    'n' => '\n',
                    't' => '\t',
                    other => return Err(format!("unknown escape `\\{other}` in string")),
                }),
                c => s.push(c),
            }
        }
    }
}

/// One term of a dim expression as written: `INT`, `SYM` or `INT*SYM`, with its sign.
struct Term {
    negative: bool,
    coefficient: Option<u64>,
    symbol: Option<String>,
}

struct Parser {
    tokens: Vec<Token>,
    next: usize,
}

impl Parser {
    /// The token `k` places ahead (the last token, `End` or `Bad`, repeats forever).
    fn peek(&self, k: usize) -> &Token {
        &self.tokens[(self.next + k).min(self.tokens.len() - 1)]
    }

    fn bump(&mut self) -> Token {
        let token = self.peek(0).clone();
        self.next = (self.next + 1).min(self.tokens.len() - 1);
        token
    }

    fn at_punct(&self, c: char) -> bool {
        self.peek(0).tok == Tok::Punct(c)
    }

    /// Consumes `c` if it is next.
    fn eat(&mut self, c: char) -> bool {
        let found = self.at_punct(c);
        if found {
            self.bump();
        }
        found
    }

    /// The error for the next token when it is not `expected` (or the lexer's own error).
    fn unexpected(&self, expected: &str) -> ParseError {
        let token = self.peek(0);
        let found = match &token.tok {
            Tok::Bad(msg) => return token.pos.error(msg.clone()),
            Tok::Word(w) | Tok::Number(w) => format!("`{w}`"),
            Tok::NodeRef(n) => format!("`%{n}`"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Punct(c) => format!("`{c}`"),
            Tok::End => "the end of the text".into(),
        };
        token.pos.error(format!("expected {expected}, found {found}"))
    }

    fn expect(&mut self, c: char) -> Result<(), ParseError> {
        if self.eat(c) { Ok(()) } else { Err(self.unexpected(&format!("`{c}`"))) }
    }

    fn word(&mut self, what: &str) -> Result<(String, Pos), ParseError> {
        match self.peek(0).tok.clone() {
            Tok::Word(w) => Ok((w, self.bump().pos)),
            _ => Err(self.unexpected(what)),
        }
    }

    /// A word without dots: a symbol, an identifier attribute or an attribute name.
    fn identifier(&mut self, what: &str) -> Result<(String, Pos), ParseError> {
        let (w, pos) = self.word(what)?;
        if w.contains('.') {
            return Err(pos.error(format!("expected {what} ([A-Za-z_][A-Za-z0-9_]*), found `{w}`")));
        }
        Ok((w, pos))
    }

    /// `graph "NAME" { ... }` and nothing after it.
    fn graph(&mut self) -> Result<Graph, ParseError> {
        if self.peek(0).tok != Tok::Word("graph".into()) {
            return Err(self.unexpected("`graph`"));
        }
        self.bump();
        let name = match self.peek(0).tok.clone() {
            Tok::Str(s) => {
                self.bump();
                s
            }
            _ => return Err(self.unexpected("the graph name as a quoted string")),
        };
        self.expect('{')?;
        let mut graph = Graph::new(name);
        let close = loop {
            let token = self.peek(0).clone();
            match token.tok {
                Tok::NodeRef(name) => {
                    self.bump();
                    self.node(&mut graph, name, token.pos)?;
                }
                Tok::Word(w) if w == "output" => {
                    self.bump();
                    self.output(&mut graph)?;
                }
                Tok::Punct('}') => break self.bump().pos,
                Tok::End => return Err(token.pos.error("missing `}` at the end of the graph")),
                _ => return Err(self.unexpected("a node (`%name = ...`), `output` or `}`")),
            }
        };
        if self.peek(0).tok != Tok::End {
            return Err(self.unexpected("nothing after the graph's closing `}`"));
        }
        crate::verify(&graph).map_err(|e| close.error(e.to_string()))?;
        Ok(graph)
    }

    /// The rest of `%name = op(%a, ...) {k=v, ...} : dtype[dims]` after `%name`.
    fn node(&mut self, graph: &mut Graph, name: String, name_pos: Pos) -> Result<(), ParseError> {
        self.expect('=')?;
        let (op_name, op_pos) = self.word("an op name")?;
        self.expect('(')?;
        let mut operands = Vec::new();
        if !self.eat(')') {
            loop {
                operands.push(self.node_ref(graph)?);
                if self.eat(')') {
                    break;
                }
                self.expect(',')?;
            }
        }
        let mut attrs: Vec<(String, Attr)> = Vec::new();
        let mut attr_keys: Vec<(String, Pos)> = Vec::new();
        if self.eat('{') && !self.eat('}') {
            loop {
                let (key, key_pos) = self.identifier("an attribute name")?;
                if attr_keys.iter().any(|(k, _)| *k == key) {
                    return Err(key_pos.error(format!("attribute `{key}` is given twice")));
                }
                self.expect('=')?;
                attrs.push((key.clone(), self.attr_value()?));
                attr_keys.push((key, key_pos));
                if self.eat('}') {
                    break;
                }
                self.expect(',')?;
            }
        }
        // `from_parts` names the attribute at fault, if any; point at it.
        let blame = |msg: &str| {
            attr_keys
                .iter()
                .find(|(key, _)| msg.contains(&format!("attribute `{key}`")))
                .map_or(op_pos, |&(_, pos)| pos)
        };
        let op = Op::from_parts(&op_name, attrs).map_err(|msg| blame(&msg).error(msg))?;
        self.expect(':')?;
        let type_pos = self.peek(0).pos;
        let declared = self.tensor_type()?;
        // A type error is the declared type's fault when the operands alone type-check.
        let operand_types: Vec<&TensorType> = operands.iter().map(|&id| graph.ty(id)).collect();
        let type_at_fault = op.is_leaf() || infer_type(&op, &operand_types, None).is_ok();
        graph.add(name, op, &operands, Some(declared)).map_err(|e| {
            let pos = match e {
                IrError::BadName { .. } | IrError::DuplicateName { .. } => name_pos,
                IrError::Type { .. } if type_at_fault => type_pos,
                _ => op_pos,
            };
            pos.error(e.to_string())
        })?;
        Ok(())
    }

    /// The rest of `output NAME = %node` after `output`.
    fn output(&mut self, graph: &mut Graph) -> Result<(), ParseError> {
        let (name, name_pos) = self.word("an output name")?;
        self.expect('=')?;
        let node = self.node_ref(graph)?;
        graph.set_output(name, node).map_err(|e| name_pos.error(e.to_string()))
    }

    /// `%name` of a node defined earlier.
    fn node_ref(&mut self, graph: &Graph) -> Result<NodeId, ParseError> {
        match self.peek(0).tok.clone() {
            Tok::NodeRef(name) => {
                let pos = self.bump().pos;
                graph
                    .find(&name)
                    .ok_or_else(|| pos.error(format!("unknown operand `%{name}` (not defined above)")))
            }
            _ => Err(self.unexpected("an operand `%name`")),
        }
    }

    /// `dtype[dim, ...]`.
    fn tensor_type(&mut self) -> Result<TensorType, ParseError> {
        let (dtype, pos) = self.word("a dtype")?;
        let dtype: DType = dtype.parse().map_err(|msg: String| pos.error(msg))?;
        self.expect('[')?;
        Ok(TensorType { dtype, shape: self.dim_list()? })
    }

    /// `dim, ...]` after the opening `[`.
    fn dim_list(&mut self) -> Result<Vec<Dim>, ParseError> {
        let mut dims = Vec::new();
        if self.eat(']') {
            return Ok(dims);
        }
        loop {
            let pos = self.peek(0).pos;
            let terms = self.dim_terms()?;
            dims.push(linear_dim(&terms).map_err(|msg| pos.error(msg))?);
            if self.eat(']') {
                return Ok(dims);
            }
            if !self.at_punct(',') {
                return Err(self.unexpected("`,` or `]` in a list of dims"));
            }
            self.bump();
        }
    }

    /// A dim expression: `-`? term (`+`|`-` term)*, each term `INT`, `SYM` or `INT*SYM`.
    fn dim_terms(&mut self) -> Result<Vec<Term>, ParseError> {
        let mut terms = Vec::new();
        let mut negative = self.eat('-');
        loop {
            let token = self.peek(0).clone();
            let term = match token.tok {
                Tok::Number(digits) => {
                    self.bump();
                    let coefficient = digits.parse::<u64>().map_err(|_| {
                        token.pos.error(if is_float(&digits) {
                            format!("expected an integer, found `{digits}`")
                        } else {
                            format!("integer `{digits}` is too large")
                        })
                    })?;
                    let symbol = if self.eat('*') { Some(self.identifier("a symbol")?.0) } else { None };
                    Term { negative, coefficient: Some(coefficient), symbol }
                }
                Tok::Word(_) => {
                    Term { negative, coefficient: None, symbol: Some(self.identifier("a symbol")?.0) }
                }
                _ => return Err(self.unexpected("a dim (an integer, a symbol or `INT*SYM`)")),
            };
            terms.push(term);
            negative = match self.peek(0).tok {
                Tok::Punct('+') => false,
                Tok::Punct('-') => true,
                _ => return Ok(terms),
            };
            self.bump();
        }
    }

    /// An attribute value; see `attr` in print.rs for the forms.
    fn attr_value(&mut self) -> Result<Attr, ParseError> {
        let pos = self.peek(0).pos;
        match (self.peek(0).tok.clone(), &self.peek(1).tok) {
            (Tok::Str(s), _) => {
                self.bump();
                return Ok(Attr::Str(s));
            }
            (Tok::Punct('['), _) => {
                self.bump();
                return Ok(Attr::Dims(self.dim_list()?));
            }
            (Tok::Number(text), _) if is_float(&text) => {
                self.bump();
                return float(&text, pos);
            }
            (Tok::Punct('-'), Tok::Number(text)) if is_float(text) => {
                let text = format!("-{text}");
                self.bump();
                self.bump();
                return float(&text, pos);
            }
            _ => {}
        }
        let terms = self.dim_terms()?;
        Ok(match terms.as_slice() {
            [Term { negative, coefficient: Some(c), symbol: None }] => {
                let value = if *negative { -i128::from(*c) } else { i128::from(*c) };
                Attr::Int(
                    i64::try_from(value)
                        .map_err(|_| pos.error(format!("integer {value} is out of range")))?,
                )
            }
            [Term { negative: false, coefficient: None, symbol: Some(word) }] => match word.as_str() {
                "true" => Attr::Bool(true),
                "false" => Attr::Bool(false),
                "inf" => Attr::Float(f64::INFINITY),
                "NaN" => Attr::Float(f64::NAN),
                _ => Attr::Ident(word.clone()),
            },
            [Term { negative: true, coefficient: None, symbol: Some(word) }] if word == "inf" => {
                Attr::Float(f64::NEG_INFINITY)
            }
            _ => Attr::Dim(linear_dim(&terms).map_err(|msg| pos.error(msg))?),
        })
    }
}

fn is_float(number: &str) -> bool {
    number.contains(['.', 'e', 'E'])
}

fn float(text: &str, pos: Pos) -> Result<Attr, ParseError> {
    text.parse().map(Attr::Float).map_err(|_| pos.error(format!("`{text}` is not a valid number")))
}

/// Sums the terms into a [`Dim`]. Each sum must lie within `±i64::MAX`, so huge literals are an
/// error rather than an overflow.
fn linear_dim(terms: &[Term]) -> Result<Dim, String> {
    let mut constant: i128 = 0;
    let mut coefficients: Vec<(String, i128)> = Vec::new();
    for term in terms {
        let magnitude = i128::from(term.coefficient.unwrap_or(1));
        let value = if term.negative { -magnitude } else { magnitude };
        match &term.symbol {
            None => constant += value,
            Some(s) => match coefficients.iter_mut().find(|(name, _)| name == s) {
                Some((_, c)) => *c += value,
                None => coefficients.push((s.clone(), value)),
            },
        }
    }
    let in_range = |v: i128| match i64::try_from(v) {
        Ok(v) if v != i64::MIN => Ok(v),
        _ => Err(format!("dim coefficient {v} is out of range")),
    };
    let terms =
        coefficients.into_iter().map(|(s, c)| Ok((s, in_range(c)?))).collect::<Result<Vec<_>, String>>()?;
    Ok(Dim::linear(in_range(constant)?, terms))
}
