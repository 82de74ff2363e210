//! The store against both engines: every behaviour runs once on SQLite and once on a real
//! PostgreSQL (see `harness`).

mod harness;

mod alerts;
mod audit;
mod backups;
mod billing;
mod clients;
mod credential_links;
mod deployments;
mod outbox;
mod rollouts;
mod schema;
mod secrets;
mod signups;
mod tokens;
