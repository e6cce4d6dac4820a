//! L4: L4Policy objects -> validated [`policy::Policy`] values -> the tables of the XDP/TC
//! programs ([`tables`]). [`reference`] states the same semantics as plain loops, the oracle of
//! the property tests and of the eBPF program tests; [`packet`] is the packet description both
//! are asked about. [`warnings`] finds what a valid policy does that is almost never meant.
pub mod failsafe;
#[cfg(test)]
mod node_tests;
pub mod packet;
pub mod policy;
#[cfg(test)]
mod proptests;
pub mod reference;
pub mod tables;
pub mod validate;
pub mod warnings;

pub use tables::*;
