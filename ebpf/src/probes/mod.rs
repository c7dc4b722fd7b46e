//! One program per hook.
mod doom;
mod exec;
mod exit;
mod fork;
mod snapshot;
