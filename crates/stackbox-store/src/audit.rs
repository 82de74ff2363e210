//! The audit log: every change asked of the control plane, appended, never updated.
//!
//! # What it guarantees
//!
//! - Rows are only inserted. The store has no function that changes or removes one, and the
//!   database refuses UPDATE and DELETE on the table (triggers of migration 0007), so a
//!   destroyed client's entries stay with the rest.
//! - An entry holds no request body (bodies may carry secrets): who, what, when, the result.

use crate::model::Timestamp;
use crate::{checked_limit, postgres, sqlite, time_ordered_id, Pool, Store, StoreError};

/// Who asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorKind {
    Operator,
    /// A client token (read-only: its changes are refused, and recorded as such).
    Client,
    /// A route without a token: the sign-up, the payment webhook, the credentials page.
    Public,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::Operator => "operator",
            ActorKind::Client => "client",
            ActorKind::Public => "public",
        }
    }

    pub fn from_name(name: &str) -> Option<ActorKind> {
        [ActorKind::Operator, ActorKind::Client, ActorKind::Public]
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }
}

/// How the request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditOutcome {
    /// Done, or accepted as a deployment (its own result is in the deployment's journal).
    Accepted,
    /// Refused: a 4xx (bad input, no permission, a conflict).
    Refused,
    /// The control plane failed: a 5xx.
    Failed,
}

impl AuditOutcome {
    pub fn of_status(status: u16) -> AuditOutcome {
        match status {
            0..=399 => AuditOutcome::Accepted,
            400..=499 => AuditOutcome::Refused,
            _ => AuditOutcome::Failed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Accepted => "accepted",
            AuditOutcome::Refused => "refused",
            AuditOutcome::Failed => "failed",
        }
    }

    pub fn from_name(name: &str) -> Option<AuditOutcome> {
        [
            AuditOutcome::Accepted,
            AuditOutcome::Refused,
            AuditOutcome::Failed,
        ]
        .into_iter()
        .find(|outcome| outcome.as_str() == name)
    }
}

/// An entry to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEntry {
    pub actor_kind: ActorKind,
    pub token_id: Option<String>,
    /// The method and the route as declared: `POST /v1/clients/{id}/stop`.
    pub action: String,
    pub client_id: Option<String>,
    pub status: u16,
    pub deployment_id: Option<String>,
}

/// An entry as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: String,
    pub at: Timestamp,
    pub actor_kind: ActorKind,
    pub token_id: Option<String>,
    pub action: String,
    pub client_id: Option<String>,
    pub status: u16,
    pub outcome: AuditOutcome,
    pub deployment_id: Option<String>,
}

const MAX_FIELD_CHARS: usize = 300;

/// One line, without control characters, at most [`MAX_FIELD_CHARS`]: the fields come from
/// request paths and must not forge lines in what reads them.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_FIELD_CHARS)
        .collect()
}

impl Store {
    /// Appends an entry at the current time; returns it as kept.
    pub async fn append_audit(&self, entry: &NewAuditEntry) -> Result<AuditRecord, StoreError> {
        let at = Timestamp::now();
        let record = AuditRecord {
            id: time_ordered_id("aud_", at)?,
            at,
            actor_kind: entry.actor_kind,
            token_id: entry.token_id.as_deref().map(clean),
            action: clean(&entry.action),
            client_id: entry.client_id.as_deref().map(clean),
            status: entry.status,
            outcome: AuditOutcome::of_status(entry.status),
            deployment_id: entry.deployment_id.as_deref().map(clean),
        };
        on_backend!(self, audit_sql::insert(&record))?;
        Ok(record)
    }

    /// Entries newest first: of one client (or all), older than the entry `before` (keyset
    /// pagination), at most `limit`.
    pub async fn audit_entries(
        &self,
        client: Option<&str>,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let limit = checked_limit(limit)?;
        on_backend!(self, audit_sql::entries(client, before, limit))
    }
}
