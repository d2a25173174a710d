//! The offline tools behind `confhub check`, `confhub history`, `confhub diff` and
//! `confhub rollout`: they
//! read a repository directly and share the resolution code with the server.

pub mod check;
pub mod history;
pub mod rollout;
