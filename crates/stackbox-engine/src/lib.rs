//! The Docker engine adapter: brings a client's desired stack up on a real engine and runs
//! its lifecycle (deploy, status, stop, cleanup, destroy).
//!
//! The pure core decides ([`stackbox_core::deploy`]: desired state, plan, overall state);
//! this crate observes and acts, through the small [`ContainerRuntime`] trait that
//! [`DockerRuntime`] implements with the Docker Engine API.

pub mod admin;
mod docker;
mod error;
pub mod host;
pub mod lifecycle;
mod runtime;
pub mod usage;

pub use docker::{ContainerEvent, DockerRuntime};
pub use error::EngineError;
pub use runtime::{
    ContainerDetails, ContainerRuntime, ExecOptions, ExecOutcome, ExecSink, ExecSource, LogEntries,
    LogEntry, LogOptions, LogStream, Probe,
};
