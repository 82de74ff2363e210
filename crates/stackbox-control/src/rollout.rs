//! Fleet rollouts: one release to many clients, in waves, each client through its own
//! journaled upgrade (`request_upgrade`).
//!
//! The request plans the members once (every client, or the ones named, in id order): a
//! client that cannot move now is recorded `skipped` with the reason (stopped, already on the
//! release, on the aws provider, a move the upgrade graph refuses), the others are cut into
//! waves by the core (`stackbox_core::rollout`). The driver, a task beside the pipeline, looks
//! at the running rollout every tick: a member whose upgrade finished becomes `succeeded` when
//! the client runs healthy afterwards, `failed` otherwise (its upgrade was undone, or it
//! ended degraded); then the core says what to start, and the driver starts those upgrades.
//! The first failure halts the rollout: nothing new starts, the upgrades running finish, and
//! the members not started are `skipped` with "halted", on their release.
//!
//! Everything the driver knows is in the store, so a control plane restarted in the middle
//! carries on: the upgrades resume as deployments, and a member whose upgrade was queued just
//! before the crash (but not yet recorded on the member) is found by the `rollout` parameter
//! its deployment carries, so it is never upgraded twice.

use std::time::Duration;

use serde_json::json;
use stackbox_core::client::ClientId;
use stackbox_core::infra::{effective_provider, ProviderKind};
use stackbox_core::release::{plan_move, release_catalogs, BASE_RELEASE};
use stackbox_core::rollout::{next_step, Member, MemberStatus, NextStep, RolloutSettings};
use stackbox_store::{
    ClientFilter, ClientState, DeploymentStatus, NewRolloutMember, RolloutId, RolloutMember,
    RolloutRecord, StoreError,
};

use crate::{field_error, Control, ControlError};

/// The parameter of an upgrade that a rollout started: the rollout's id.
pub(crate) const ROLLOUT_PARAM: &str = "rollout";

/// How often the driver looks at the running rollout.
const TICK: Duration = Duration::from_millis(500);

impl Control {
    /// Plans and records a rollout of release `to` over `only` (or every client), and returns
    /// it; the driver starts it at its next tick. `Invalid` naming `to` for an unknown release,
    /// or naming a settings field outside its range; the store refuses a second running one.
    pub async fn request_rollout(
        &self,
        to: &str,
        settings: RolloutSettings,
        only: Option<&[ClientId]>,
        requested_by: Option<serde_json::Value>,
    ) -> Result<RolloutRecord, ControlError> {
        let settings = settings.validated().map_err(field_error)?;
        let operator = &self.inner.config.operator;
        let names: Vec<String> = release_catalogs(&operator.images, &operator.releases)
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        if !names.iter().any(|name| name == to) {
            return Err(ControlError::Invalid {
                field: "to".into(),
                problem: format!(
                    "{to:?} is not one of the operator's releases ({}); add it under \
                     [[releases]] in stackbox.toml",
                    names.join(", ")
                ),
            });
        }
        let store = &self.inner.store;
        let ids = match only {
            Some(ids) => {
                let mut ids = ids.to_vec();
                ids.sort();
                ids.dedup();
                ids
            }
            None => store
                .every_client(ClientFilter::default())
                .await?
                .into_iter()
                .map(|c| c.id)
                .collect(),
        };
        let mut planned = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(record) = store.client(&id).await? else {
                return Err(ControlError::UnknownClient { client: id });
            };
            let spec = record.spec()?;
            let from = spec
                .release
                .clone()
                .unwrap_or_else(|| BASE_RELEASE.to_string());
            let skipped = if from == to {
                Some(format!("it already runs release {to}"))
            } else if effective_provider(&spec, operator) == ProviderKind::Aws {
                Some("clients on the aws provider are not upgraded yet".to_string())
            } else if record.state != ClientState::Running {
                Some(format!(
                    "it is {}; only running clients are upgraded in a rollout (start it, then \
                     upgrade it on its own)",
                    record.state
                ))
            } else {
                match plan_move(&operator.images, &operator.releases, &from, to) {
                    Ok(change) if change.images.is_empty() => {
                        Some(format!("release {from} already has release {to}'s images"))
                    }
                    Ok(_) => None,
                    Err(error) => Some(error.to_string()),
                }
            };
            planned.push((id, from, skipped));
        }
        let eligible = planned.iter().filter(|(_, _, s)| s.is_none()).count();
        let mut waves = settings.waves(eligible).into_iter();
        let members: Vec<NewRolloutMember> = planned
            .into_iter()
            .map(|(client_id, from_release, skipped)| NewRolloutMember {
                wave: if skipped.is_none() {
                    waves
                        .next()
                        .map(|w| u32::try_from(w).unwrap_or(u32::MAX))
                        .unwrap_or(0)
                } else {
                    0
                },
                client_id,
                from_release,
                skipped,
            })
            .collect();
        let rollout = store
            .create_rollout(to, &settings, requested_by.as_ref(), &members)
            .await?;
        tracing::info!(
            rollout = %rollout.id,
            to,
            clients = members.len(),
            eligible,
            "rollout planned"
        );
        Ok(rollout)
    }

    /// Asks the running rollout to stop starting upgrades (those running finish); false when
    /// it is not running (or was already halted).
    pub async fn halt_rollout(&self, id: &RolloutId, reason: &str) -> Result<bool, ControlError> {
        match self.inner.store.rollout(id).await? {
            None => Err(ControlError::Store(StoreError::RolloutNotFound {
                rollout: id.clone(),
            })),
            Some(_) => Ok(self.inner.store.halt_rollout(id, reason).await?),
        }
    }

    /// One look at the running rollout: finished members recorded, then what the core says
    /// to do next, done.
    pub(crate) async fn rollout_pass(&self) -> Result<(), ControlError> {
        let store = &self.inner.store;
        let Some(mut rollout) = store.running_rollout().await? else {
            return Ok(());
        };
        for member in rollout.members.clone() {
            if member.status == MemberStatus::Running {
                self.settle_member(&rollout, &member).await?;
            }
        }
        rollout = self.reread(&rollout.id).await?;
        if let Some(failed) = rollout
            .members
            .iter()
            .find(|m| m.status == MemberStatus::Failed)
        {
            let reason = format!(
                "client {} failed: {}",
                failed.client_id,
                failed.detail.as_deref().unwrap_or("its upgrade failed")
            );
            if store.halt_rollout(&rollout.id, &reason).await? {
                tracing::warn!(rollout = %rollout.id, %reason, "rollout halted");
            }
            rollout = self.reread(&rollout.id).await?;
        }
        let members: Vec<Member> = rollout
            .members
            .iter()
            .map(|m| Member {
                wave: m.wave as usize,
                status: m.status,
            })
            .collect();
        match next_step(
            &members,
            rollout.settings.concurrency,
            rollout.halt_reason.is_some(),
        ) {
            NextStep::Wait => {}
            NextStep::Start(indices) => {
                for index in indices {
                    self.start_member(&rollout, &rollout.members[index]).await?;
                }
            }
            NextStep::Halt => {
                for member in &rollout.members {
                    if member.status == MemberStatus::Pending {
                        store
                            .move_rollout_member(
                                &rollout.id,
                                member.position,
                                MemberStatus::Pending,
                                MemberStatus::Skipped,
                                None,
                                Some("the rollout halted before its turn; it runs its release"),
                            )
                            .await?;
                    }
                }
                store.finish_rollout(&rollout.id).await?;
                tracing::warn!(rollout = %rollout.id, "rollout ended halted");
            }
            NextStep::Finish => {
                store.finish_rollout(&rollout.id).await?;
                tracing::info!(rollout = %rollout.id, "rollout succeeded");
            }
        }
        Ok(())
    }

    async fn reread(&self, id: &RolloutId) -> Result<RolloutRecord, ControlError> {
        self.inner.store.rollout(id).await?.ok_or_else(|| {
            ControlError::Store(StoreError::RolloutNotFound {
                rollout: id.clone(),
            })
        })
    }

    /// A running member whose upgrade finished: succeeded when the client runs healthy on
    /// the new release, failed otherwise.
    async fn settle_member(
        &self,
        rollout: &RolloutRecord,
        member: &RolloutMember,
    ) -> Result<(), ControlError> {
        let store = &self.inner.store;
        let Some(deployment_id) = &member.deployment_id else {
            return Ok(());
        };
        let Some(deployment) = store.deployment(deployment_id).await? else {
            return self
                .finish_member(
                    rollout,
                    member,
                    MemberStatus::Failed,
                    "its upgrade's deployment is gone",
                )
                .await;
        };
        let (status, detail) = match deployment.status {
            DeploymentStatus::Pending | DeploymentStatus::Running => return Ok(()),
            DeploymentStatus::Succeeded => match store.client(&member.client_id).await? {
                Some(record) if record.state == ClientState::Running => {
                    (MemberStatus::Succeeded, None)
                }
                Some(record) => (
                    MemberStatus::Failed,
                    Some(format!(
                        "its health regressed: it is {} after the upgrade{}",
                        record.state,
                        record
                            .state_reason
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    )),
                ),
                None => (
                    MemberStatus::Failed,
                    Some("it was destroyed during its upgrade".to_string()),
                ),
            },
            DeploymentStatus::Compensated => (
                MemberStatus::Failed,
                Some(format!(
                    "its upgrade failed and was undone, it runs release {} again: {}",
                    member.from_release,
                    deployment.error.as_deref().unwrap_or("no error recorded")
                )),
            ),
            DeploymentStatus::Failed => (
                MemberStatus::Failed,
                Some(format!(
                    "its upgrade failed: {}",
                    deployment.error.as_deref().unwrap_or("no error recorded")
                )),
            ),
        };
        match detail {
            None => {
                store
                    .move_rollout_member(
                        &rollout.id,
                        member.position,
                        MemberStatus::Running,
                        status,
                        None,
                        None,
                    )
                    .await?;
                Ok(())
            }
            Some(detail) => self.finish_member(rollout, member, status, &detail).await,
        }
    }

    async fn finish_member(
        &self,
        rollout: &RolloutRecord,
        member: &RolloutMember,
        status: MemberStatus,
        detail: &str,
    ) -> Result<(), ControlError> {
        self.inner
            .store
            .move_rollout_member(
                &rollout.id,
                member.position,
                MemberStatus::Running,
                status,
                None,
                Some(detail),
            )
            .await?;
        Ok(())
    }

    /// Starts a pending member's upgrade, or adopts the one a crash left unrecorded.
    async fn start_member(
        &self,
        rollout: &RolloutRecord,
        member: &RolloutMember,
    ) -> Result<(), ControlError> {
        let store = &self.inner.store;
        let skip = |detail: String| async move {
            store
                .move_rollout_member(
                    &rollout.id,
                    member.position,
                    MemberStatus::Pending,
                    MemberStatus::Skipped,
                    None,
                    Some(&detail),
                )
                .await
        };
        let latest = store.deployments_of_client(&member.client_id, 10).await?;
        if let Some(adopted) = latest.into_iter().find(|d| {
            d.params
                .as_ref()
                .and_then(|p| p.get(ROLLOUT_PARAM))
                .and_then(|r| r.as_str())
                == Some(rollout.id.as_str())
        }) {
            store
                .move_rollout_member(
                    &rollout.id,
                    member.position,
                    MemberStatus::Pending,
                    MemberStatus::Running,
                    Some(&adopted.id),
                    None,
                )
                .await?;
            return Ok(());
        }
        match store.client(&member.client_id).await? {
            None => {
                skip("it was destroyed before its turn".into()).await?;
                return Ok(());
            }
            Some(record) if record.state != ClientState::Running => {
                skip(format!(
                    "it was {} at its turn; only running clients are upgraded",
                    record.state
                ))
                .await?;
                return Ok(());
            }
            Some(_) => {}
        }
        let mut params = serde_json::Map::new();
        params.insert(ROLLOUT_PARAM.into(), json!(rollout.id.as_str()));
        if let Some(by) = &rollout.requested_by {
            params.insert(stackbox_store::REQUESTED_BY_PARAM.into(), by.clone());
        }
        match self
            .request_upgrade(&member.client_id, &rollout.to_release, params)
            .await
        {
            Ok(deployment) => {
                store
                    .move_rollout_member(
                        &rollout.id,
                        member.position,
                        MemberStatus::Pending,
                        MemberStatus::Running,
                        Some(&deployment.id),
                        None,
                    )
                    .await?;
                tracing::info!(
                    rollout = %rollout.id,
                    client = %member.client_id,
                    deployment = %deployment.id,
                    wave = member.wave,
                    "rollout upgrade started"
                );
            }
            // Another deployment of the client runs (a backup, an operator's change): its
            // turn comes again at the next tick.
            Err(ControlError::Store(StoreError::ClientBusy { .. }))
            | Err(ControlError::Busy { .. }) => {}
            Err(ControlError::UnknownClient { .. }) => {
                skip("it was destroyed before its turn".into()).await?;
            }
            Err(ControlError::Invalid { field, problem }) => {
                skip(format!("{field}: {problem}")).await?;
            }
            Err(error) => {
                store
                    .move_rollout_member(
                        &rollout.id,
                        member.position,
                        MemberStatus::Pending,
                        MemberStatus::Failed,
                        None,
                        Some(&format!("its upgrade could not be started: {error}")),
                    )
                    .await?;
            }
        }
        Ok(())
    }
}

/// How often expired domain redirects are looked for.
const REDIRECT_TICK: Duration = Duration::from_secs(3600);

/// The driver, every tick, beside the pipeline; and, once an hour, the end of expired domain
/// redirects (a change of the configuration, like a rollout's upgrades).
pub(crate) async fn run(control: Control) {
    let mut last_redirect_pass: Option<tokio::time::Instant> = None;
    loop {
        tokio::time::sleep(TICK).await;
        if let Err(error) = control.rollout_pass().await {
            tracing::warn!(%error, "rollout pass failed");
        }
        if last_redirect_pass.is_none_or(|at| at.elapsed() >= REDIRECT_TICK) {
            last_redirect_pass = Some(tokio::time::Instant::now());
            match control.expire_redirects_pass().await {
                Ok(0) => {}
                Ok(changed) => tracing::info!(changed, "expired domain redirects ended"),
                Err(error) => tracing::warn!(%error, "domain redirect pass failed"),
            }
        }
    }
}
