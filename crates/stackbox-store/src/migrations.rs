//! The schema migrations, embedded in the binary, and the one table that records them.
//!
//! A small versioned runner of our own rather than sqlx's `migrate`: it needs no macros or
//! extra features, it can take PostgreSQL's advisory lock so that two servers starting at once
//! do not both migrate, and it lets a migration carry a part for one engine only.
//!
//! A migration is a shared file (`NNNN_name.sql`, run on both engines) and, where the engines
//! cannot share a statement, a companion per engine (`NNNN_name.sqlite.sql`,
//! `NNNN_name.postgres.sql`), run just before the shared file in the same transaction. The
//! recorded checksum is the SHA-256 of what ran on that engine (companion, then shared file),
//! so editing either is noticed; a migration without companions has the checksum of its shared
//! file alone, as before companions existed.

use sha2::{Digest, Sha256};

use crate::Backend;

pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) name: &'static str,
    /// Runs on both engines.
    shared: &'static str,
    /// Runs on SQLite only, before `shared`.
    sqlite: Option<&'static str>,
    /// Runs on PostgreSQL only, before `shared`.
    postgres: Option<&'static str>,
}

impl Migration {
    /// What runs on `backend`, in order: its companion (if any), then the shared file.
    pub(crate) fn parts(&self, backend: Backend) -> impl Iterator<Item = &'static str> {
        let companion = match backend {
            Backend::Sqlite => self.sqlite,
            Backend::Postgres => self.postgres,
        };
        companion.into_iter().chain(std::iter::once(self.shared))
    }

    /// What the runner records, to notice a released migration that was edited afterwards.
    pub(crate) fn checksum(&self, backend: Backend) -> Vec<u8> {
        self.parts(backend)
            .fold(Sha256::new(), |digest, part| digest.chain_update(part))
            .finalize()
            .to_vec()
    }
}

/// Every migration, in order. Add new ones at the end; never edit a released one.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        shared: include_str!("../migrations/0001_initial.sql"),
        sqlite: None,
        postgres: None,
    },
    Migration {
        version: 2,
        name: "onboarding",
        shared: include_str!("../migrations/0002_onboarding.sql"),
        sqlite: None,
        postgres: None,
    },
    Migration {
        version: 3,
        name: "backups",
        shared: include_str!("../migrations/0003_backups.sql"),
        // Widening `deployments.kind`'s CHECK: SQLite cannot alter a constraint and rebuilds
        // the table, PostgreSQL replaces the constraint in place.
        sqlite: Some(include_str!("../migrations/0003_backups.sqlite.sql")),
        postgres: Some(include_str!("../migrations/0003_backups.postgres.sql")),
    },
    Migration {
        version: 4,
        name: "rollouts",
        shared: include_str!("../migrations/0004_rollouts.sql"),
        sqlite: None,
        postgres: None,
    },
    Migration {
        version: 5,
        name: "alerts",
        shared: include_str!("../migrations/0005_alerts.sql"),
        sqlite: None,
        postgres: None,
    },
    Migration {
        version: 6,
        name: "audit",
        shared: include_str!("../migrations/0006_audit.sql"),
        sqlite: None,
        postgres: None,
    },
    Migration {
        version: 7,
        name: "audit append-only",
        shared: include_str!("../migrations/0007_audit_append_only.sql"),
        // Triggers that refuse UPDATE and DELETE on the audit log: each engine has its own
        // syntax, and a companion runs before its shared file, so they follow the table.
        sqlite: Some(include_str!(
            "../migrations/0007_audit_append_only.sqlite.sql"
        )),
        postgres: Some(include_str!(
            "../migrations/0007_audit_append_only.postgres.sql"
        )),
    },
];

/// Created before anything else, on both engines.
pub(crate) const SCHEMA_TABLE: &str = "CREATE TABLE IF NOT EXISTS stackbox_schema (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    checksum BYTEA NOT NULL,
    applied_at BIGINT NOT NULL
)";

/// The newest schema version this build knows.
pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |migration| migration.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_migration_without_companions_keeps_the_checksum_of_its_file_alone() {
        // Databases migrated before companions existed recorded SHA-256 of the file: those
        // rows must still match.
        for migration in MIGRATIONS.iter().filter(|m| m.version <= 2) {
            let file_digest = Sha256::digest(migration.shared.as_bytes()).to_vec();
            for backend in [Backend::Sqlite, Backend::Postgres] {
                assert_eq!(
                    migration.checksum(backend),
                    file_digest,
                    "{}",
                    migration.name
                );
            }
        }
    }

    #[test]
    fn a_migration_with_companions_runs_the_engines_part_first_and_checksums_both() {
        let backups = MIGRATIONS.iter().find(|m| m.version == 3).unwrap();
        let sqlite: Vec<&str> = backups.parts(Backend::Sqlite).collect();
        let postgres: Vec<&str> = backups.parts(Backend::Postgres).collect();
        assert_eq!(sqlite, [backups.sqlite.unwrap(), backups.shared]);
        assert_eq!(postgres, [backups.postgres.unwrap(), backups.shared]);
        let concatenated = format!("{}{}", backups.sqlite.unwrap(), backups.shared);
        assert_eq!(
            backups.checksum(Backend::Sqlite),
            Sha256::digest(concatenated.as_bytes()).to_vec()
        );
        assert_ne!(
            backups.checksum(Backend::Sqlite),
            backups.checksum(Backend::Postgres)
        );
    }

    #[test]
    fn migrations_are_numbered_one_after_another() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version, index as i64 + 1, "{}", migration.name);
        }
    }
}
