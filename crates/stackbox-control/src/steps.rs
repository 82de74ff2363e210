//! The pipeline's steps: a closed set, the steps of each kind of deployment, and what each
//! step reports.
//!
//! The store keeps step names as text (its journal outlives any one release); everywhere else
//! a step is a [`Step`], so a new kind of deployment or a new step is a compile error wherever
//! it is not handled, and a step's output is a typed [`StepOutput`] that is turned into JSON
//! only for the journal.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use stackbox_core::infra::ProviderKind;
use stackbox_store::DeploymentKind;

/// One step of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// The AWS provider's phase (certificate, RDS, secrets, load balancer, CDN, DNS).
    Cloud,
    /// The bundle written to disk.
    Render,
    /// Images present, networks and volumes made.
    Infrastructure,
    /// Containers created or replaced and started, each until healthy.
    Containers,
    /// The client's state read back from the engine.
    Health,
    /// What the apps need after their first start; records the URLs.
    Configure,
    /// The welcome e-mail, once per client.
    Notify,
    /// Every container stopped.
    Stop,
    /// Containers, networks and volumes removed.
    Remove,
    /// A destroy's last backup, kept for the retention period.
    FinalBackup,
    /// One backup: dumps, volumes, snapshot, repository check.
    Backup,
    /// The backup a restore takes first, so that it can be undone.
    SafetyBackup,
    /// A snapshot's data put back into the client (app services stopped meanwhile).
    Restore,
    /// A snapshot restored into a throwaway copy, compared with its manifest, removed.
    Verify,
    /// A new client's stack built from another client's snapshot.
    Clone,
    /// The admin password set in each app that has one, with the app's own command.
    AdminPassword,
}

impl Step {
    pub const ALL: [Step; 16] = [
        Step::Cloud,
        Step::Render,
        Step::Infrastructure,
        Step::Containers,
        Step::Health,
        Step::Configure,
        Step::Notify,
        Step::Stop,
        Step::Remove,
        Step::FinalBackup,
        Step::Backup,
        Step::SafetyBackup,
        Step::Restore,
        Step::Verify,
        Step::Clone,
        Step::AdminPassword,
    ];

    /// The name in the journal, the API and the metrics.
    pub fn name(self) -> &'static str {
        match self {
            Step::Cloud => "cloud",
            Step::Render => "render",
            Step::Infrastructure => "infrastructure",
            Step::Containers => "containers",
            Step::Health => "health",
            Step::Configure => "configure",
            Step::Notify => "notify",
            Step::Stop => "stop",
            Step::Remove => "remove",
            Step::FinalBackup => "final-backup",
            Step::Backup => "backup",
            Step::SafetyBackup => "safety-backup",
            Step::Restore => "restore",
            Step::Verify => "verify",
            Step::Clone => "clone",
            Step::AdminPassword => "admin-password",
        }
    }

    /// A journaled name back; `None` for one this release does not know.
    pub fn from_name(name: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|step| step.name() == name)
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The steps of each kind of deployment, in order. On the `aws` provider the `cloud` phase
/// comes first (the containers need its database endpoint and read the secrets back from its
/// secret store), and a destroy ends by removing the client's cloud resources.
pub fn steps_for(kind: DeploymentKind, provider: ProviderKind) -> &'static [Step] {
    use Step::*;
    match (kind, provider) {
        (DeploymentKind::Create | DeploymentKind::Redeploy, ProviderKind::Local) => &[
            Render,
            Infrastructure,
            Containers,
            Health,
            Configure,
            Notify,
        ],
        (DeploymentKind::Create | DeploymentKind::Redeploy, ProviderKind::Aws) => &[
            Cloud,
            Render,
            Infrastructure,
            Containers,
            Health,
            Configure,
            Notify,
        ],
        (DeploymentKind::Start, ProviderKind::Local) => {
            &[Render, Infrastructure, Containers, Health]
        }
        (DeploymentKind::Start, ProviderKind::Aws) => {
            &[Cloud, Render, Infrastructure, Containers, Health]
        }
        (DeploymentKind::Stop, _) => &[Stop],
        (DeploymentKind::Destroy, ProviderKind::Local) => &[FinalBackup, Stop, Remove],
        (DeploymentKind::Destroy, ProviderKind::Aws) => &[Stop, Remove, Cloud],
        // Dumps beside the running services, volumes, one snapshot, the repository check: one
        // step (a re-run after a crash makes a new snapshot; the interrupted row is failed).
        (DeploymentKind::Backup, _) => &[Backup],
        // The running stack, a safety backup, the data put back, and the stack converged
        // again through the one deploy path (its steps), so the client ends running.
        (DeploymentKind::Restore, _) => {
            &[SafetyBackup, Restore, Infrastructure, Containers, Health]
        }
        (DeploymentKind::Verify, _) => &[Verify],
        // Journaled on the new client: its bundle, its stack from the snapshot, its state.
        (DeploymentKind::Clone, _) => &[Render, Clone, Health, Configure],
    }
}

/// The step names of a kind on the local provider, as the journal holds them.
pub fn step_names(kind: DeploymentKind) -> Vec<&'static str> {
    steps_for(kind, ProviderKind::Local)
        .iter()
        .map(|step| step.name())
        .collect()
}

/// The MySQL endpoint the `cloud` step found or made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudMysql {
    pub host: String,
    pub port: u16,
    /// App → database name.
    pub databases: BTreeMap<String, String>,
}

/// What a step reports; its JSON is the journal's `output`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StepOutput {
    Rendered {
        files: usize,
    },
    Infrastructure {
        networks: usize,
        volumes: usize,
    },
    Containers(serde_json::Value),
    Health {
        state: serde_json::Value,
        services: usize,
    },
    Configured {
        services: BTreeMap<String, String>,
    },
    /// The `cloud` step: read back after a restart to give the later steps their placement.
    Cloud {
        mysql: Option<CloudMysql>,
        resources: serde_json::Value,
    },
    Stopped {
        stopped: usize,
    },
    Removed(serde_json::Value),
    BackedUp {
        snapshot: String,
        bytes_added: u64,
        files: u64,
        databases: usize,
        rows: u64,
    },
    Restored {
        snapshot: String,
    },
    Verified {
        snapshot: String,
        copy: String,
        seconds: f64,
    },
    Skipped {
        skipped: String,
    },
    Other(serde_json::Value),
}

impl StepOutput {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_name_parses_back_and_names_are_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for step in Step::ALL {
            assert_eq!(Step::from_name(step.name()), Some(step));
            assert!(seen.insert(step.name()));
        }
        assert_eq!(Step::from_name("teleport"), None);
    }

    #[test]
    fn every_kind_has_steps_on_both_providers() {
        for kind in [
            DeploymentKind::Create,
            DeploymentKind::Redeploy,
            DeploymentKind::Stop,
            DeploymentKind::Start,
            DeploymentKind::Destroy,
            DeploymentKind::Backup,
            DeploymentKind::Restore,
            DeploymentKind::Verify,
            DeploymentKind::Clone,
        ] {
            for provider in [ProviderKind::Local, ProviderKind::Aws] {
                assert!(
                    !steps_for(kind, provider).is_empty(),
                    "{kind:?} {provider:?}"
                );
            }
        }
    }

    #[test]
    fn the_cloud_output_round_trips_through_its_journal_json() {
        let output = StepOutput::Cloud {
            mysql: Some(CloudMysql {
                host: "db.example".into(),
                port: 3306,
                databases: [("espocrm".to_string(), "x_espocrm".to_string())].into(),
            }),
            resources: serde_json::json!({"certificate": "arn:aws:acm:x"}),
        };
        let json = output.to_json();
        assert_eq!(json["mysql"]["port"], 3306);
        let cloud: CloudRecord = serde_json::from_value(json).unwrap();
        assert_eq!(cloud.mysql.unwrap().host, "db.example");
    }
}

/// The `cloud` step's journaled output, read back.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CloudRecord {
    #[serde(default)]
    pub mysql: Option<CloudMysql>,
}
