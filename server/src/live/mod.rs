//! Live updates: noticing that the configuration changed ([`detect`]), the refresh loop
//! that turns a new version into pushes, and the hub that fans them out to WebSocket
//! subscribers ([`hub`]), who holds what ([`instances`]), and what open console pages hear of ([`events`]). See ARCHITECTURE.md §3.1 and §6.

pub mod detect;
pub(crate) mod events;
pub mod hub;
pub mod instances;
pub mod refresh;
pub mod session;
pub mod status;
