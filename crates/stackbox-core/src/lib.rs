//! StackBox's pure core.
//!
//! It turns one client's configuration (plus the operator's settings and the client's
//! secrets) into the desired stack ([`stack::Stack`]) and the files of its deployment
//! bundle ([`render::Bundle`]).
//!
//! Architecture invariant: this crate does no IO. It reads no file, no clock, no
//! environment variable and no random source of its own: randomness comes in through
//! [`secrets::RandomSource`], files go out as bytes in a [`render::Bundle`]. The test
//! `core_has_no_io_dependencies` checks its Cargo.toml.

pub mod admin;
pub mod alerts;
pub mod backup;
pub mod calendar;
pub mod catalog;
pub mod client;
pub mod deploy;
pub mod doctor;
pub mod error;
pub mod infra;
pub mod logs;
pub mod notify;
pub mod onboarding;
pub mod operator;
pub mod plan;
pub mod probes;
pub mod release;
pub mod render;
pub mod rollout;
pub mod secrets;
pub mod stack;
pub mod usage;

pub use error::CoreError;
