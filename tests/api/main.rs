//! Integration tests: the real server on port 0 against a fresh Postgres database per test.

mod helpers;

mod health;
mod orders;
