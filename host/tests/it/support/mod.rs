//! Shared test fixtures. Each test binary uses a subset, hence the
//! `dead_code` allowance. Add a fixture as its own file plus one `pub mod`
//! line here.
#![allow(dead_code)]

pub mod chromium;
pub mod gateway;
pub mod logs;
pub mod node;
pub mod polyglot;
pub mod redis;
pub mod scrape;
