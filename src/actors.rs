//! The actor tree: the [`registry`] spawns, finds and supervises one [`family`] actor per
//! active metric family; each family publishes its snapshot to the [`aggregator`], which
//! keeps them all and answers scrapes with the totals and rates over them.

pub mod aggregator;
pub mod family;
pub mod registry;
