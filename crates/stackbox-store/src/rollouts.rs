//! Fleet rollouts: each rollout and its members, the journal the control plane's rollout
//! driver reads on every tick (and after a restart) to know where it stands.
//!
//! # What it guarantees
//!
//! - At most one rollout is `running` (a partial unique index): a second one is refused with
//!   [`StoreError::RolloutRunning`] naming the first.
//! - A rollout moves only running → halted (with its reason) or running → succeeded, and a
//!   member only along guarded transitions (`pending → running | skipped | failed`, `running →
//!   succeeded | failed`): a late or repeated report changes nothing and says so.

use stackbox_core::client::ClientId;
use stackbox_core::rollout::{MemberStatus, RolloutSettings};

use crate::model::{DeploymentId, RolloutId, RolloutStatus, Timestamp};
use crate::{checked_limit, postgres, sqlite, time_ordered_id, Pool, Store, StoreError};

/// One client of a rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutMember {
    /// Its place in the rollout's order (from 0).
    pub position: u32,
    pub client_id: ClientId,
    pub wave: u32,
    /// The release it ran when the rollout was planned.
    pub from_release: String,
    pub status: MemberStatus,
    /// Its upgrade's deployment, once started.
    pub deployment_id: Option<DeploymentId>,
    /// Why it failed or was skipped.
    pub detail: Option<String>,
    pub updated_at: Timestamp,
}

/// A member as planned: pending, or skipped from the start with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRolloutMember {
    pub client_id: ClientId,
    pub wave: u32,
    pub from_release: String,
    /// `None`: pending; `Some(reason)`: skipped.
    pub skipped: Option<String>,
}

/// A rollout with its members in order.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutRecord {
    pub id: RolloutId,
    pub to_release: String,
    pub status: RolloutStatus,
    pub settings: RolloutSettings,
    /// Who asked (`RequestedBy::to_json`'s form).
    pub requested_by: Option<serde_json::Value>,
    pub halt_reason: Option<String>,
    pub created_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub members: Vec<RolloutMember>,
}

/// A reason or detail as kept: cut like every error for people.
fn shortened(text: &str) -> String {
    crate::onboarding::shortened(text).to_string()
}

impl Store {
    /// Records a new running rollout with its members in order. Refused with
    /// [`StoreError::RolloutRunning`] while another one runs.
    pub async fn create_rollout(
        &self,
        to_release: &str,
        settings: &RolloutSettings,
        requested_by: Option<&serde_json::Value>,
        members: &[NewRolloutMember],
    ) -> Result<RolloutRecord, StoreError> {
        crate::onboarding::checked_line("to_release", to_release, 200)?;
        let now = Timestamp::now();
        let id = RolloutId::from_trusted(time_ordered_id(RolloutId::PREFIX, now)?);
        let members: Vec<NewRolloutMember> = members
            .iter()
            .map(|m| NewRolloutMember {
                skipped: m.skipped.as_deref().map(shortened),
                ..m.clone()
            })
            .collect();
        on_backend!(
            self,
            rollouts_sql::insert_rollout(&id, to_release, settings, requested_by, &members, now)
        )?;
        self.rollout(&id)
            .await?
            .ok_or_else(|| StoreError::RolloutNotFound { rollout: id })
    }

    /// A rollout with its members; `None` when there is none with this id.
    pub async fn rollout(&self, id: &RolloutId) -> Result<Option<RolloutRecord>, StoreError> {
        on_backend!(self, rollouts_sql::rollout(id))
    }

    /// The newest rollouts first, at most `limit`, each with its members.
    pub async fn rollouts(&self, limit: u32) -> Result<Vec<RolloutRecord>, StoreError> {
        let limit = checked_limit(limit)?;
        on_backend!(self, rollouts_sql::rollouts(limit))
    }

    /// The rollout that runs now, if any.
    pub async fn running_rollout(&self) -> Result<Option<RolloutRecord>, StoreError> {
        on_backend!(self, rollouts_sql::running_rollout())
    }

    /// Moves a member `from` → `to` (see the module's transitions), recording its deployment
    /// and detail when given. Returns whether it moved: `false` when it was no longer `from`.
    pub async fn move_rollout_member(
        &self,
        rollout: &RolloutId,
        position: u32,
        from: MemberStatus,
        to: MemberStatus,
        deployment: Option<&DeploymentId>,
        detail: Option<&str>,
    ) -> Result<bool, StoreError> {
        use MemberStatus::*;
        let allowed = matches!(
            (from, to),
            (Pending, Running)
                | (Pending, Skipped)
                | (Pending, Failed)
                | (Running, Succeeded)
                | (Running, Failed)
        );
        if !allowed {
            return Err(StoreError::InvalidValue {
                field: "rollout member status",
                problem: format!(
                    "a member cannot go from {} to {}",
                    from.as_str(),
                    to.as_str()
                ),
            });
        }
        let detail = detail.map(shortened);
        on_backend!(
            self,
            rollouts_sql::move_member(
                rollout,
                position,
                (from, to),
                deployment,
                detail.as_deref(),
                Timestamp::now()
            )
        )
    }

    /// Records why a running rollout stops starting upgrades. Only the first reason is kept;
    /// returns whether this one was.
    pub async fn halt_rollout(
        &self,
        rollout: &RolloutId,
        reason: &str,
    ) -> Result<bool, StoreError> {
        on_backend!(
            self,
            rollouts_sql::set_halt_reason(rollout, &shortened(reason))
        )
    }

    /// Ends a running rollout: `halted` when it has a halt reason, `succeeded` otherwise.
    /// Returns whether it ended now (`false` when it had already).
    pub async fn finish_rollout(&self, rollout: &RolloutId) -> Result<bool, StoreError> {
        on_backend!(self, rollouts_sql::finish(rollout, Timestamp::now()))
    }
}
