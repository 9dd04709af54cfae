//! `parse` on hand-written text: what it accepts beyond `print`'s exact output (comments, blank
//! lines, the attribute value forms), and where and how it reports malformed input.

use saturn_ir::text::{ParseError, parse, print};
use saturn_ir::{Attr, DType, Dim, Op, TensorType};

/// Parses `text`, which must fail, and checks the error sits at the first `needle` on line
/// `line` and that its message mentions `msg`.
fn assert_error_at(text: &str, line: usize, needle: &str, msg: &str) {
    let err = parse(text).expect_err("the text should not parse");
    let source_line = text.lines().nth(line - 1).unwrap_or("");
    let column = source_line.find(needle).map(|i| i + 1).unwrap_or(source_line.len() + 1);
    assert_eq!((err.line, err.column), (line, column), "{err}\n{text}");
    assert!(err.msg.contains(msg), "message `{}` lacks `{msg}`", err.msg);
}

/// A graph with `body` between a header and the closing brace; the body starts on line 2.
fn graph(body: &str) -> String {
    format!("graph \"g\" {{\n{body}\n}}\n")
}

#[test]
fn accepts_comments_blank_lines_and_the_documented_example() {
    let text = "# a comment before the graph\n\n\
        graph \"tiny\" {  # trailing comment\n\
        \n\
          %ids = input() : i64[S]   # token ids\n\
          %embed = param() {key=\"model.embed_#not_a_comment\"} : f32[128, 64]\n\
        # a comment line\n\
          %h = gather(%embed, %ids) : f32[S, 64]\n\
          output hidden = %h\n\
        }\n\n# after\n";
    let g = parse(text).unwrap();
    assert_eq!(g.name, "tiny");
    assert_eq!(g.len(), 3);
    let embed = g.find("embed").unwrap();
    assert_eq!(g.node(embed).op, Op::Param { key: "model.embed_#not_a_comment".into() });
    assert_eq!(g.ty(g.find("h").unwrap()).to_string(), "f32[S, 64]");
    assert_eq!(g.outputs()[0].0, "hidden");
    assert_eq!(parse(&print(&g)).unwrap(), g);
}

#[test]
fn reads_every_attribute_value_form() {
    let text = graph(
        "  %x = input() : f32[P+S, 2*S-1, -P+S]\n\
           %a = scalar() {value=-2.5e-8} : f32[]\n\
           %b = scalar() {value=-inf} : f32[]\n\
           %c = scalar() {value=inf} : bf16[]\n\
           %d = scalar() {value=1e20} : f32[]\n\
           %e = scalar() {value=3} : i64[]\n\
           %r = arange() {start=-P+S, len=2*S} : i64[2*S]\n\
           %k = cast(%x) {dtype=bf16} : bf16[P+S, 2*S-1, -P+S]\n\
           %s = reduce_sum(%x) {axis=1, keepdim=false} : f32[P+S, -P+S]\n\
           %t = permute(%s) {perm=[1, 0]} : f32[-P+S, P+S]\n\
           %w = param() {key=\"a\\\\b\\\"c\\n\\t{e}\"} : f32[4]\n\
           output o = %t",
    );
    let g = parse(&text).unwrap();
    let op = |name: &str| g.node(g.find(name).unwrap()).op.clone();
    assert_eq!(op("a"), Op::Scalar { value: -2.5e-8 });
    assert_eq!(op("b"), Op::Scalar { value: f64::NEG_INFINITY });
    assert_eq!(op("c"), Op::Scalar { value: f64::INFINITY });
    assert_eq!(op("d"), Op::Scalar { value: 1e20 });
    assert_eq!(op("e"), Op::Scalar { value: 3.0 });
    let (p, s) = (Dim::sym("P"), Dim::sym("S"));
    assert_eq!(op("r"), Op::Arange { start: s.sub(&p), len: s.add(&s) });
    assert_eq!(op("k"), Op::Cast { dtype: DType::BF16 });
    assert_eq!(op("t"), Op::Permute { perm: vec![1, 0] });
    assert_eq!(op("w"), Op::Param { key: "a\\b\"c\n\t{e}".into() });
    assert_eq!(op("w").attrs()[0].1, Attr::Str("a\\b\"c\n\t{e}".into()));
    let x = g.ty(g.find("x").unwrap());
    assert_eq!(*x, TensorType::new(DType::F32, [p.add(&s), Dim::linear(-1, [("S".into(), 2)]), s.sub(&p)]));
    assert_eq!(parse(&print(&g)).unwrap(), g);
}

#[test]
fn unknown_operand() {
    let text = graph("  %x = input() : f32[4]\n  %y = neg(%z) : f32[4]\n  output o = %y");
    assert_error_at(&text, 3, "%z", "unknown operand `%z`");
    let text = graph("  %x = input() : f32[4]\n  output o = %nope");
    assert_error_at(&text, 3, "%nope", "unknown operand `%nope`");
}

#[test]
fn bad_dtype() {
    let text = graph("  %x = input() : f33[4]\n  output o = %x");
    assert_error_at(&text, 2, "f33", "unknown dtype `f33`");
}

#[test]
fn declared_type_differs_from_inferred() {
    let text = graph("  %x = input() : f32[4]\n  %y = neg(%x) : f32[5]\n  output o = %y");
    assert_error_at(&text, 3, "f32[5]", "declared type f32[5] but the operands give f32[4]");
    let text = graph("  %c = scalar() {value=1.0} : f32[2]\n  output o = %c");
    assert_error_at(&text, 2, "f32[2]", "rank 0");
}

#[test]
fn operand_type_errors_point_at_the_op() {
    let text = graph("  %x = input() : i64[4]\n  %y = neg(%x) : i64[4]\n  output o = %y");
    assert_error_at(&text, 3, "neg", "must be a float tensor");
    let text = graph("  %x = input() : f32[4]\n  %y = add(%x) : f32[4]\n  output o = %y");
    assert_error_at(&text, 3, "add", "expects 2 operand(s)");
}

#[test]
fn attribute_errors_point_at_the_attribute() {
    let text = graph("  %x = input() {foo=1} : f32[4]\n  output o = %x");
    assert_error_at(&text, 2, "foo", "unknown attribute `foo`");
    let text = graph("  %x = input() : f32[4]\n  %y = softmax(%x) {axis=S} : f32[4]\n  output o = %y");
    assert_error_at(&text, 3, "axis", "attribute `axis` must be an integer");
    let text = graph("  %x = input() : f32[4]\n  %y = softmax(%x) : f32[4]\n  output o = %y");
    assert_error_at(&text, 3, "softmax", "missing attribute `axis`");
    let text =
        graph("  %x = input() : f32[4]\n  %y = softmax(%x) {axis=0, axis=0} : f32[4]\n  output o = %y");
    assert_error_at(&text, 3, "axis=0}", "attribute `axis` is given twice");
    let text = graph("  %x = input() : f32[4]\n  %y = softmax(%x) {axis=99999999999999999999} : f32[4]");
    assert_error_at(&text, 3, "9999", "integer `99999999999999999999` is too large");
}

#[test]
fn string_errors() {
    let text = graph("  %w = param() {key=\"abc} : f32[4]\n  output o = %w");
    assert_error_at(&text, 2, "\"", "unterminated string");
    let text = graph("  %w = param() {key=\"a\\qb\"} : f32[4]\n  output o = %w");
    assert_error_at(&text, 2, "\"", "unknown escape `\\q`");
    assert_error_at("graph \"unclosed {\n}", 1, "\"", "unterminated string");
}

#[test]
fn bad_fused_expressions_are_parse_errors() {
    let line = |expr: &str| {
        graph(&format!(
            "  %a = input() : f32[4]\n  %y = fused_elementwise(%a, %a) {{expr=\"{expr}\"}} : f32[4]\n  \
             output o = %y"
        ))
    };
    // Malformed expressions are blamed on the `expr` attribute.
    for (expr, msg) in [
        ("", "expected an operand, a number or an op"),
        ("mul($0", "expected `,`"),
        ("mul($0)", "expected `,`"),
        ("add($0, $1) x", "unexpected `x`"),
        ("frob($0)", "unknown op or number `frob`"),
        ("$", "bad operand `$`"),
        ("$-1", "bad operand `$-1`"),
        ("1.5.2", "unknown op or number `1.5.2`"),
        ("add($0,, $1)", "expected an operand"),
        ("neg($0))", "unexpected `)`"),
    ] {
        assert_error_at(&line(expr), 3, "expr=", msg);
        assert!(parse(&line(expr)).unwrap_err().msg.contains("attribute `expr`"), "{expr}");
    }
    let deep = format!("{}$0{}", "neg(".repeat(300), ")".repeat(300));
    assert_error_at(&line(&deep), 3, "expr=", "nested too deeply");
    // An operand the node does not have is a type error of the op.
    assert_error_at(&line("add($0, $2)"), 3, "fused_elementwise", "uses $2 but there are 2 operands");
    // `expr` must be a string.
    let text =
        graph("  %a = input() : f32[4]\n  %y = fused_elementwise(%a) {expr=3} : f32[4]\n  output o = %y");
    assert_error_at(&text, 3, "expr", "attribute `expr` must be a string");
    let text = graph("  %a = input() : f32[4]\n  %y = fused_elementwise(%a) : f32[4]\n  output o = %y");
    assert_error_at(&text, 3, "fused_elementwise", "missing attribute `expr`");
    // The good form parses and round-trips, constants included.
    let g = parse(&line("max(mul(silu($0), $1), -inf)")).unwrap();
    assert_eq!(parse(&print(&g)).unwrap(), g);
}

#[test]
fn name_errors() {
    let text = graph("  %x = input() : f32[4]\n  %x = input() : f32[4]\n  output o = %x");
    assert_error_at(&text, 3, "%x", "used twice");
    let text = graph("  %x = input() : f32[4]\n  output o = %x\n  output o = %x");
    assert_error_at(&text, 4, "o =", "output name `o` is used twice");
    assert_error_at(&graph("  %1x = input() : f32[4]"), 2, "%", "expected a node name");
}

#[test]
fn unknown_op() {
    let text = graph("  %x = input() : f32[4]\n  %y = frobnicate(%x) : f32[4]\n  output o = %y");
    assert_error_at(&text, 3, "frobnicate", "unknown op `frobnicate`");
}

#[test]
fn malformed_dims() {
    let line = |ty: &str| graph(&format!("  %x = input() : {ty}\n  output o = %x"));
    assert_error_at(&line("f32[S+]"), 2, "]", "expected a dim");
    assert_error_at(&line("f32[2*3]"), 2, "3]", "expected a symbol");
    assert_error_at(&line("f32[S.x]"), 2, "S.x", "expected a symbol");
    assert_error_at(&line("f32[4 4]"), 2, "4]", "expected `,` or `]`");
    assert_error_at(&line("f32[1.5]"), 2, "1.5", "expected an integer, found `1.5`");
    assert_error_at(&line("f32[4"), 3, "output", "expected `,` or `]`");
    assert_error_at(&line("f32[99999999999999999999*S]"), 2, "9999", "too large");
    assert_error_at(&line("f32[-9223372036854775808*S]"), 2, "-", "out of range");
    assert_error_at(&line("f32[9223372036854775807*S+9223372036854775807*S]"), 2, "9223", "out of range");
}

#[test]
fn structure_errors() {
    assert_error_at("", 1, "", "expected `graph`, found the end of the text");
    assert_error_at("graph g {\n}", 1, "g {", "expected the graph name as a quoted string");
    let text = "graph \"g\" {\n  %x = input() : f32[4]\n  output o = %x\n";
    assert_error_at(text, 4, "", "missing `}`");
    let text = graph("  %x = input() : f32[4]\n  output o = %x") + "extra\n";
    assert_error_at(&text, 5, "extra", "nothing after the graph's closing `}`");
    let text = graph("  %x = input() : f32[4] junk");
    assert_error_at(&text, 2, "junk", "expected a node");
    assert_error_at(&graph("  %x = input() : f32[4]"), 3, "}", "has no outputs");
    assert_error_at(&graph("  %x = input() : f32[4] @"), 2, "@", "unexpected character '@'");
}

#[test]
fn errors_come_in_reading_order() {
    // An unknown operand on line 3 is reported before the unreadable character on line 4.
    let text = graph("  %x = input() : f32[4]\n  %y = neg(%q) : f32[4]\n  @");
    assert_error_at(&text, 3, "%q", "unknown operand");
}

#[test]
fn error_display_has_line_and_column() {
    let err = ParseError { line: 3, column: 12, msg: "unknown operand `%z`".into() };
    assert_eq!(err.to_string(), "line 3, column 12: unknown operand `%z`");
    let text = graph("  %x = input() : f32[4]\n  %y = neg(%z) : f32[4]\n  output o = %y");
    assert_eq!(
        parse(&text).unwrap_err().to_string(),
        "line 3, column 12: unknown operand `%z` (not defined above)"
    );
}
