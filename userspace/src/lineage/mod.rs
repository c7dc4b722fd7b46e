//! Who created whom: the service registry ([`registry`]), the recorded creator tree
//! ([`tree`]), how a process escaped its service ([`escape`]), adoption of running processes
//! (`track`, [`adopt`]), finding a service through the host's init system ([`discover`]) and
//! starting a service under tracking (`run`, [`run`]).

pub mod adopt;
pub mod discover;
pub mod escape;
pub mod registry;
pub mod run;
pub mod tree;
