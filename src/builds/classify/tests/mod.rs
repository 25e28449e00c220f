//! The classifier's unit tests: behaviour case by case (`cases`), the real-world corpus under
//! `tests/fixtures/build-failures` (`corpus`), and the scan against a naive reference
//! (`scanner`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cases;
mod corpus;
mod scanner;
