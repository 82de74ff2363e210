//! The store against both engines: every behaviour runs once on SQLite and once on a real
//! PostgreSQL (see `harness`).

mod harness;

mod clients;
mod deployments;
mod schema;
mod secrets;
mod tokens;
