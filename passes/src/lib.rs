//! saturn-passes
