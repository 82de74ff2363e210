//! The schema migrations, embedded in the binary, and the one table that records them.
//!
//! A small versioned runner of our own rather than sqlx's `migrate`: it needs no macros or
//! extra features, and it can take PostgreSQL's advisory lock so that two servers starting
//! at once do not both migrate.

use sha2::{Digest, Sha256};

pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
}

impl Migration {
    /// What the runner records, to notice a released migration that was edited afterwards.
    pub(crate) fn checksum(&self) -> Vec<u8> {
        Sha256::digest(self.sql.as_bytes()).to_vec()
    }
}

/// Every migration, in order. Add new ones at the end; never edit a released one.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "onboarding",
        sql: include_str!("../migrations/0002_onboarding.sql"),
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
