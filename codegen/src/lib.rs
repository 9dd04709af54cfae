//! saturn-codegen
