//! What happened, for people and programs: the live listing of tagged processes ([`ps`]),
//! the on-disk history ([`journal`]) and its reader ([`log`]), and the health of tracking
//! ([`status`]).

pub mod journal;
pub mod log;
pub mod ps;
pub mod status;
