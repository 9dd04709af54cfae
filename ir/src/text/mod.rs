//! The text form of a graph: what `saturn dump` prints, what snapshot tests store, and what
//! [`parse`] reads back. `parse(&print(g)) == g` for every valid graph, and printing is
//! deterministic (node order is index order; attributes have a fixed order).
//!
//! ```text
//! graph "tiny" {
//!   %ids = input() : i64[S]
//!   %embed = param() {key="model.embed_tokens.weight"} : f32[128, 64]
//!   %h = gather(%embed, %ids) : f32[S, 64]
//!   output hidden = %h
//! }
//! ```
//!
//! Each node line is `%name = op(%operand, ...) {attr=value, ...} : dtype[dims]`; the braces are
//! left out when an op has no attributes. Dims are constants, symbols, or linear expressions
//! such as `P+S` and `2*S-1`. A `#` starts a comment that runs to the end of the line.

mod parse;
mod print;

pub use parse::{ParseError, parse};
pub use print::print;
