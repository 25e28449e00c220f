//! Integration tests against a real Docker Engine (a private dockerd per test), a real
//! Prometheus and Alertmanager, and a real browser. Run them through `scripts/test.sh`, which
//! installs the tools and runs as root.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod util;

mod builds;
mod cleanup;
mod deploy;
mod e2e;
mod exporter;
mod faults;
mod fleet;
mod forecast;
mod logs;
mod lru;
mod package;
mod router;
mod runners;
mod schedule;
mod security;
mod stack;
mod storage;
mod webhook;
