//! saturn-runtime
