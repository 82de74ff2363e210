//! The cloud phase as the pipeline sees it: [`CloudInfra`], defined here where it is used.
//! `stackbox-aws` provides the real one (the binary's `aws` feature wires it); the pipeline
//! only needs what the containers need back (where MySQL is) and a record for the journal.

use std::fmt;

use futures_util::future::LocalBoxFuture as BoxFuture;
use stackbox_core::client::ClientId;
use stackbox_core::infra::InfraRequest;
use stackbox_core::secrets::Secrets;

/// What the phase gives the container steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudOutcome {
    /// The MySQL endpoint (host, port, app → database name), when an app uses MySQL.
    pub mysql: Option<(String, u16, std::collections::BTreeMap<String, String>)>,
    /// What was made and where (ARNs, ids, names): recorded in the deployment journal.
    pub record: serde_json::Value,
}

/// A cloud provider's infrastructure phase. Every operation is idempotent; a failed `apply`
/// undoes what it created before returning its error. The futures need not be `Send`: the
/// pipeline runs them on its own thread (like the engine's).
pub trait CloudInfra: Send + Sync + fmt::Debug {
    fn apply<'a>(
        &'a self,
        request: &'a InfraRequest,
    ) -> BoxFuture<'a, Result<CloudOutcome, String>>;

    /// Removes everything of the client (found by tag and name); the record of what went.
    fn destroy<'a>(
        &'a self,
        client: &'a ClientId,
    ) -> BoxFuture<'a, Result<serde_json::Value, String>>;

    /// The client's secrets as the provider's secret store holds them.
    fn read_secrets<'a>(
        &'a self,
        client: &'a ClientId,
    ) -> BoxFuture<'a, Result<Option<Secrets>, String>>;
}
