//! What happened, for people and programs: the live listing of tagged processes ([`ps`]),
//! the on-disk history ([`journal`]) and its reader ([`log`]), the health of tracking
//! ([`status`]) and what the host's kernel offers it ([`doctor`]).

pub mod doctor;
pub mod journal;
pub mod log;
pub mod ps;
pub mod status;
