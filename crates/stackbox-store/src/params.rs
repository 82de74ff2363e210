//! What a deployment's parameters ([`Deployment::params`]) record for its history, beside what
//! its steps need: who asked for it ([`RequestedBy`], under `requested_by`) and, for a change
//! of the client's configuration, each field's old and new value ([`FieldChange`], under
//! `changes`). One place for the format, so that the control plane that writes it and the API
//! that shows it cannot drift apart.
//!
//! Neither ever holds a secret: a token is named by its id (never the token or its hash), and a
//! client's configuration holds none (secrets are stored apart, sealed).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::model::{Deployment, DeploymentKind, TokenId, TokenRole};

/// The parameter that names who asked for a deployment.
pub const REQUESTED_BY_PARAM: &str = "requested_by";

/// The parameter that holds a configuration change's fields.
pub const CHANGES_PARAM: &str = "changes";

/// Who asked for a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestedBy {
    /// A request through the API, with this token.
    Token { id: TokenId, role: TokenRole },
    /// The backup schedule of `stackbox serve` (a backup whose reason is `scheduled`).
    Schedule,
}

impl RequestedBy {
    /// The JSON kept in the deployment's parameters: `{"by": "token", "token_id", "role"}`.
    pub fn to_json(&self) -> Value {
        match self {
            RequestedBy::Token { id, role } => {
                json!({ "by": "token", "token_id": id.as_str(), "role": role.as_str() })
            }
            RequestedBy::Schedule => json!({ "by": "schedule" }),
        }
    }

    /// Reads [`RequestedBy::to_json`]'s form back; `None` for anything else.
    pub fn from_json(value: &Value) -> Option<RequestedBy> {
        match value.get("by")?.as_str()? {
            "token" => Some(RequestedBy::Token {
                id: TokenId::parse(value.get("token_id")?.as_str()?).ok()?,
                role: TokenRole::from_name(value.get("role")?.as_str()?)?,
            }),
            "schedule" => Some(RequestedBy::Schedule),
            _ => None,
        }
    }
}

/// One field of a client's configuration as a change found it and left it. `null` stands for
/// a field that was not set (an app switch not written, the operator's default provider).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange {
    pub from: Value,
    pub to: Value,
}

impl FieldChange {
    /// The parameters' form of a whole change: field → `{"from", "to"}`.
    pub fn map_to_json(changes: &BTreeMap<String, FieldChange>) -> Value {
        Value::Object(
            changes
                .iter()
                .map(|(field, change)| {
                    (
                        field.clone(),
                        json!({ "from": change.from, "to": change.to }),
                    )
                })
                .collect(),
        )
    }
}

impl Deployment {
    /// Who asked for this deployment, when that was recorded: a token for requests through the
    /// API, the schedule for scheduled backups. `None` for deployments the pipeline started
    /// on its own account (billing) and for those made before this was recorded.
    pub fn requested_by(&self) -> Option<RequestedBy> {
        let params = self.params.as_ref()?;
        if let Some(recorded) = params.get(REQUESTED_BY_PARAM) {
            return RequestedBy::from_json(recorded);
        }
        let scheduled = self.kind == DeploymentKind::Backup
            && params.get("reason").and_then(Value::as_str) == Some("scheduled");
        scheduled.then_some(RequestedBy::Schedule)
    }

    /// The configuration change this deployment applies, field by field; empty for every
    /// deployment that is not one.
    pub fn changes(&self) -> BTreeMap<String, FieldChange> {
        let Some(Value::Object(changes)) = self.params.as_ref().and_then(|p| p.get(CHANGES_PARAM))
        else {
            return BTreeMap::new();
        };
        changes
            .iter()
            .filter_map(|(field, change)| {
                Some((
                    field.clone(),
                    FieldChange {
                        from: change.get("from")?.clone(),
                        to: change.get("to")?.clone(),
                    },
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeploymentId, DeploymentStatus, Timestamp};
    use stackbox_core::client::ClientId;

    fn deployment(kind: DeploymentKind, params: Option<Value>) -> Deployment {
        Deployment {
            id: DeploymentId::parse("dep_0195501e2c4a9f3b2d7e8c1a0b4d").expect("id"),
            client_id: ClientId::parse("smith-0000000a").expect("id"),
            kind,
            status: DeploymentStatus::Pending,
            created_at: Timestamp::from_unix_millis(0),
            started_at: None,
            finished_at: None,
            error: None,
            params,
            steps: Vec::new(),
        }
    }

    #[test]
    fn who_asked_reads_back_as_written() {
        let token = RequestedBy::Token {
            id: TokenId::parse("tok_0123456789abcdef").expect("id"),
            role: TokenRole::Operator,
        };
        assert_eq!(
            token.to_json(),
            json!({"by": "token", "token_id": "tok_0123456789abcdef", "role": "operator"})
        );
        for by in [token, RequestedBy::Schedule] {
            assert_eq!(RequestedBy::from_json(&by.to_json()), Some(by.clone()));
            let params = json!({ "delete_backups": false, REQUESTED_BY_PARAM: by.to_json() });
            assert_eq!(
                deployment(DeploymentKind::Destroy, Some(params)).requested_by(),
                Some(by)
            );
        }
        for unreadable in [
            json!({"by": "token", "token_id": "tok_short", "role": "operator"}),
            json!({"by": "token", "token_id": "tok_0123456789abcdef", "role": "root"}),
            json!({"by": "someone"}),
            json!("token"),
        ] {
            assert_eq!(RequestedBy::from_json(&unreadable), None, "{unreadable}");
        }
    }

    #[test]
    fn a_scheduled_backup_was_asked_for_by_the_schedule_and_others_by_nobody_known() {
        let scheduled = json!({"reason": "scheduled"});
        assert_eq!(
            deployment(DeploymentKind::Backup, Some(scheduled.clone())).requested_by(),
            Some(RequestedBy::Schedule)
        );
        assert_eq!(
            deployment(DeploymentKind::Backup, Some(json!({"reason": "manual"}))).requested_by(),
            None
        );
        assert_eq!(
            deployment(DeploymentKind::Restore, Some(scheduled)).requested_by(),
            None
        );
        assert_eq!(
            deployment(DeploymentKind::Redeploy, None).requested_by(),
            None
        );
    }

    #[test]
    fn changes_read_back_field_by_field_and_are_empty_for_other_deployments() {
        let mut changes = BTreeMap::new();
        changes.insert(
            "brand_color".to_string(),
            FieldChange {
                from: json!("#003366"),
                to: json!("#aa0000"),
            },
        );
        changes.insert(
            "features.calcom".to_string(),
            FieldChange {
                from: Value::Null,
                to: json!(false),
            },
        );
        let params = json!({ CHANGES_PARAM: FieldChange::map_to_json(&changes) });
        assert_eq!(
            deployment(DeploymentKind::Redeploy, Some(params)).changes(),
            changes
        );
        assert!(deployment(DeploymentKind::Redeploy, None)
            .changes()
            .is_empty());
        assert!(
            deployment(DeploymentKind::Restore, Some(json!({"snapshot": "abc"})))
                .changes()
                .is_empty()
        );
    }
}
