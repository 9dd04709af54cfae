//! saturn's optimiser (equality saturation with `egg`, a target cost model, DAG extraction).
//!
//! Not built yet: this crate holds the place of the pass pipeline in the workspace so that the
//! dependency structure (`passes` depends on `ir` only, and never on the runtime) is fixed from
//! the start. See ARCHITECTURE.md.
