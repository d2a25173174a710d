//! Client for the confhub configuration server.
//!
//! [`wire`] holds every type exchanged with the server, shared with `confhub-server`.

pub mod wire;
