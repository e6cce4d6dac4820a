//! The compile stage: validated policy -> one immutable snapshot of what the maps must hold.
pub mod error;
pub mod evaluator;
pub mod l4;
pub mod l7;
pub mod packet;
pub mod policy;
#[cfg(test)]
mod proptests;
pub mod snapshot;
pub mod validate;

pub use error::{Location, PolicyError, PolicyErrors};
