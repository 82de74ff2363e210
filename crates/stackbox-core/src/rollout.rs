//! Fleet rollouts: moving many clients to one release in waves, decided without IO.
//!
//! A rollout orders its clients once, when it is asked for, and cuts them into waves: a
//! canary wave first, then waves that grow by a factor up to a ceiling. Within a wave at most
//! `concurrency` upgrades run at once; a wave starts only when every client of the waves
//! before it has finished well. The first client that fails (its upgrade failed, or it
//! finished unhealthy) halts the rollout: nothing new starts, the upgrades already running
//! finish, and every client not yet started stays on its release.
//!
//! [`next_step`] is the whole decision. The control plane keeps the members' states in its
//! store and asks again whenever one changes, so a rollout resumed after a restart continues
//! exactly where the journal says it was.

use serde::{Deserialize, Serialize};

use crate::CoreError;

/// How a rollout cuts its clients into waves and how many run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutSettings {
    /// Clients in the first wave, upgraded alone before anyone else.
    pub canary: usize,
    /// Each wave after the canary is this many times the one before (1 keeps them equal).
    pub growth: usize,
    /// No wave is larger than this.
    pub max_wave: usize,
    /// Upgrades that run at the same time within a wave.
    pub concurrency: usize,
}

impl Default for RolloutSettings {
    fn default() -> Self {
        RolloutSettings {
            canary: 1,
            growth: 2,
            max_wave: 50,
            concurrency: 4,
        }
    }
}

/// The most upgrades a rollout runs at once: each one takes a backup and replaces containers,
/// and one host has only so many cores and so much disk bandwidth.
pub const MAX_CONCURRENCY: usize = 32;

impl RolloutSettings {
    /// The settings, checked: every field names its allowed range when it is outside it.
    pub fn validated(self) -> Result<RolloutSettings, CoreError> {
        let range = |field: &str, value: usize, low: usize, high: usize| {
            if (low..=high).contains(&value) {
                Ok(())
            } else {
                Err(CoreError::invalid(
                    field,
                    format!("{value} is outside {low}..={high}; choose a number in that range"),
                ))
            }
        };
        range("canary", self.canary, 1, 1000)?;
        range("growth", self.growth, 1, 10)?;
        range("max_wave", self.max_wave, 1, 10_000)?;
        range("concurrency", self.concurrency, 1, MAX_CONCURRENCY)?;
        if self.max_wave < self.canary {
            return Err(CoreError::invalid(
                "max_wave",
                format!(
                    "{} is smaller than canary ({}); a wave cannot be smaller than the canary",
                    self.max_wave, self.canary
                ),
            ));
        }
        Ok(self)
    }

    /// The wave of each of `count` clients, in their order: `canary` clients in wave 0, then
    /// waves of `canary × growth`, `canary × growth²`, … clients, none above `max_wave`.
    pub fn waves(&self, count: usize) -> Vec<usize> {
        let mut waves = Vec::with_capacity(count);
        let mut size = self.canary.max(1);
        let mut wave = 0;
        while waves.len() < count {
            let take = size.min(count - waves.len());
            waves.extend(std::iter::repeat_n(wave, take));
            wave += 1;
            size = size
                .saturating_mul(self.growth.max(1))
                .min(self.max_wave.max(1));
        }
        waves
    }
}

/// Where one client of a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemberStatus {
    /// Not started yet.
    Pending,
    /// Its upgrade runs.
    Running,
    /// Upgraded, and running healthy on the new release.
    Succeeded,
    /// Its upgrade failed (it was put back on its release) or it finished unhealthy.
    Failed,
    /// Left out, with the reason: stopped, already on the release, a move the upgrade graph
    /// refuses, or the rollout halted before its turn.
    Skipped,
}

impl MemberStatus {
    pub const ALL: [MemberStatus; 5] = [
        MemberStatus::Pending,
        MemberStatus::Running,
        MemberStatus::Succeeded,
        MemberStatus::Failed,
        MemberStatus::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Pending => "pending",
            MemberStatus::Running => "running",
            MemberStatus::Succeeded => "succeeded",
            MemberStatus::Failed => "failed",
            MemberStatus::Skipped => "skipped",
        }
    }

    pub fn from_name(name: &str) -> Option<MemberStatus> {
        MemberStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether nothing more happens to this member.
    pub fn is_final(self) -> bool {
        !matches!(self, MemberStatus::Pending | MemberStatus::Running)
    }
}

/// What a member's position in the decision needs: its wave and its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub wave: usize,
    pub status: MemberStatus,
}

/// What the rollout does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextStep {
    /// Start the upgrades of these members (indices into the slice given), in this order.
    Start(Vec<usize>),
    /// Upgrades are running and nothing may start beside them: ask again when one finishes.
    Wait,
    /// A member failed and nothing runs any more: the rollout ends halted; its pending
    /// members are left on their release.
    Halt,
    /// Every member finished and none failed.
    Finish,
}

/// The next step of a rollout whose members stand as `members`. `halted` is true once the
/// rollout was told to stop (a failure seen earlier, or the operator), so that nothing new
/// starts even if the failed member's record were read before its status.
pub fn next_step(members: &[Member], concurrency: usize, halted: bool) -> NextStep {
    let running = members
        .iter()
        .filter(|m| m.status == MemberStatus::Running)
        .count();
    let failed = members.iter().any(|m| m.status == MemberStatus::Failed);
    if failed || halted {
        return if running > 0 {
            NextStep::Wait
        } else {
            NextStep::Halt
        };
    }
    let Some(wave) = members
        .iter()
        .filter(|m| !m.status.is_final())
        .map(|m| m.wave)
        .min()
    else {
        return NextStep::Finish;
    };
    let room = concurrency.max(1).saturating_sub(running);
    let start: Vec<usize> = members
        .iter()
        .enumerate()
        .filter(|(_, m)| m.wave == wave && m.status == MemberStatus::Pending)
        .map(|(i, _)| i)
        .take(room)
        .collect();
    if start.is_empty() {
        NextStep::Wait
    } else {
        NextStep::Start(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MemberStatus::*;

    fn members(spec: &[(usize, MemberStatus)]) -> Vec<Member> {
        spec.iter()
            .map(|(wave, status)| Member {
                wave: *wave,
                status: *status,
            })
            .collect()
    }

    #[test]
    fn waves_start_with_the_canary_and_grow_by_the_factor_up_to_the_ceiling() {
        let settings = RolloutSettings {
            canary: 1,
            growth: 2,
            max_wave: 4,
            concurrency: 2,
        };
        assert_eq!(settings.waves(12), vec![0, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4]);
        assert_eq!(settings.waves(0), Vec::<usize>::new());
        let flat = RolloutSettings {
            canary: 2,
            growth: 1,
            ..settings
        };
        assert_eq!(flat.waves(5), vec![0, 0, 1, 1, 2]);
    }

    #[test]
    fn settings_outside_their_range_are_refused_naming_the_field() {
        let error = RolloutSettings {
            concurrency: 0,
            ..RolloutSettings::default()
        }
        .validated()
        .unwrap_err();
        assert!(error
            .to_string()
            .starts_with("concurrency: 0 is outside 1..=32"));
        let error = RolloutSettings {
            canary: 5,
            max_wave: 2,
            ..RolloutSettings::default()
        }
        .validated()
        .unwrap_err();
        assert!(error.to_string().starts_with("max_wave:"), "{error}");
        assert!(RolloutSettings::default().validated().is_ok());
    }

    #[test]
    fn the_canary_runs_alone_and_the_next_wave_waits_for_it() {
        let m = members(&[(0, Pending), (1, Pending), (1, Pending)]);
        assert_eq!(next_step(&m, 4, false), NextStep::Start(vec![0]));
        let m = members(&[(0, Running), (1, Pending), (1, Pending)]);
        assert_eq!(next_step(&m, 4, false), NextStep::Wait);
        let m = members(&[(0, Succeeded), (1, Pending), (1, Pending)]);
        assert_eq!(next_step(&m, 4, false), NextStep::Start(vec![1, 2]));
    }

    #[test]
    fn a_wave_never_runs_more_than_the_concurrency_at_once() {
        let m = members(&[(0, Succeeded), (1, Running), (1, Pending), (1, Pending)]);
        assert_eq!(next_step(&m, 2, false), NextStep::Start(vec![2]));
        let m = members(&[(0, Succeeded), (1, Running), (1, Running), (1, Pending)]);
        assert_eq!(next_step(&m, 2, false), NextStep::Wait);
    }

    #[test]
    fn a_failure_halts_once_the_running_upgrades_finish_and_starts_nothing_new() {
        let m = members(&[(0, Succeeded), (1, Failed), (1, Running), (2, Pending)]);
        assert_eq!(next_step(&m, 4, false), NextStep::Wait);
        let m = members(&[(0, Succeeded), (1, Failed), (1, Succeeded), (2, Pending)]);
        assert_eq!(next_step(&m, 4, false), NextStep::Halt);
        let m = members(&[(0, Succeeded), (1, Pending)]);
        assert_eq!(next_step(&m, 4, true), NextStep::Halt);
    }

    #[test]
    fn skipped_members_do_not_hold_a_wave_and_all_final_finishes() {
        let m = members(&[(0, Skipped), (1, Pending)]);
        assert_eq!(next_step(&m, 1, false), NextStep::Start(vec![1]));
        let m = members(&[(0, Skipped), (1, Succeeded)]);
        assert_eq!(next_step(&m, 1, false), NextStep::Finish);
        assert_eq!(next_step(&[], 1, false), NextStep::Finish);
    }

    #[test]
    fn member_status_names_round_trip() {
        for status in MemberStatus::ALL {
            assert_eq!(MemberStatus::from_name(status.as_str()), Some(status));
        }
        assert_eq!(MemberStatus::from_name("done"), None);
    }
}
