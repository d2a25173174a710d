//! The offline tools behind `confhub check`, `confhub history` and `confhub diff`: they
//! read a repository directly and share the resolution code with the server.

pub mod check;
pub mod history;
