//! One program per hook.
mod exec;
mod exit;
mod fork;
