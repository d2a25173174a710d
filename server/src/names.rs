//! Validation of service, env and label names: the rules live in
//! [`confhub_client::wire::names`], shared with the client's builder.

pub use confhub_client::wire::names::*;
