//! `StoreError`, the crate's one error enum.
//!
//! Every variant names what was wrong (the client, deployment, step, file or setting) and, where
//! the operator can act, what to do. No variant carries a secret value, a token or key material:
//! decryption failures name the client only, key-format errors describe the problem without
//! echoing the text, and database URLs are shown with their password replaced.

use std::path::PathBuf;

use stackbox_core::client::ClientId;

use crate::model::{
    BackupId, BackupStatus, DeploymentId, DeploymentStatus, MailId, MailStatus, SignupId,
    SignupStatus, StepStatus, TokenId, TokenRole,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "unsupported database location {url:?}: use sqlite://PATH, a plain file path, or \
         postgres://USER@HOST/DATABASE"
    )]
    UnsupportedUrl { url: String },

    #[error("cannot prepare the database file {path}: {source}")]
    DatabaseFile {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("cannot open the database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },

    #[error("database migration {version} ({name}) failed: {source}")]
    Migration {
        version: i64,
        name: &'static str,
        source: sqlx::Error,
    },

    #[error(
        "database migration {version} ({name}) differs from the one applied to this database; \
         migrations must never change once released"
    )]
    MigrationChanged { version: i64, name: &'static str },

    #[error(
        "the database's schema is at version {found}, newer than this StackBox knows \
         (version {known}); run the StackBox release that last used this database, or a newer one"
    )]
    SchemaTooNew { found: i64, known: i64 },

    #[error("database error while {action}: {source}")]
    Database {
        action: &'static str,
        source: sqlx::Error,
    },

    #[error("the database holds an unreadable value in {table}.{column}: {problem}")]
    Corrupt {
        table: &'static str,
        column: &'static str,
        problem: String,
    },

    #[error("not a {what}: expected {expected}")]
    MalformedId {
        what: &'static str,
        expected: &'static str,
    },

    #[error("client {client} was not found")]
    ClientNotFound { client: ClientId },

    #[error("client {client} already exists")]
    ClientExists { client: ClientId },

    #[error("the domain {domain} is already used by client {owner}")]
    DomainTaken { domain: String, owner: ClientId },

    #[error(
        "the configuration names client_id {spec_id} but is being stored as client {id}; \
         remove client_id from the configuration or use the same id"
    )]
    ClientIdMismatch { id: ClientId, spec_id: ClientId },

    #[error(
        "client {client} already has an unfinished deployment ({deployment}); wait until it \
         finishes"
    )]
    ClientBusy {
        client: ClientId,
        deployment: DeploymentId,
    },

    #[error(
        "a page limit of {limit} is not allowed; ask for 1 to {max} items",
        max = crate::MAX_PAGE_LIMIT
    )]
    InvalidLimit { limit: u32 },

    #[error("invalid deployment steps: {problem}")]
    InvalidSteps { problem: String },

    #[error("deployment {deployment} was not found")]
    DeploymentNotFound { deployment: DeploymentId },

    #[error("deployment {deployment} has no step named {step:?}")]
    StepNotFound {
        deployment: DeploymentId,
        step: String,
    },

    #[error(
        "step {step:?} of deployment {deployment} is {from} and cannot become {to} (allowed: \
         pending to running or skipped, running to succeeded or failed, an interrupted running \
         step to running again through resume_step)"
    )]
    StepTransition {
        deployment: DeploymentId,
        step: String,
        from: StepStatus,
        to: StepStatus,
    },

    #[error("deployment {deployment} has already finished ({status}); it cannot change any more")]
    DeploymentFinished {
        deployment: DeploymentId,
        status: DeploymentStatus,
    },

    #[error(
        "{status} is not a final deployment status; finish with succeeded, failed or compensated"
    )]
    NotAFinalStatus { status: DeploymentStatus },

    #[error(
        "deployment {deployment} cannot succeed while these steps have not succeeded or been \
         skipped: {}", steps.join(", ")
    )]
    UnfinishedSteps {
        deployment: DeploymentId,
        steps: Vec<String>,
    },

    #[error("{}", token_scope_problem(*role))]
    TokenScope { role: TokenRole },

    #[error("rollout {rollout} was not found")]
    RolloutNotFound { rollout: crate::model::RolloutId },

    #[error(
        "rollout {rollout} is still running; wait until it finishes (or halt it) before \
         starting another"
    )]
    RolloutRunning { rollout: crate::model::RolloutId },

    #[error("token {token} was not found")]
    TokenNotFound { token: TokenId },

    #[error("cannot read or write the master key file {path}: {source}")]
    MasterKeyFile {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "the master key in {origin} is not valid: {problem}; a master key is 32 bytes written as \
         64 hexadecimal digits or as standard Base64 (44 characters)"
    )]
    InvalidMasterKey {
        origin: String,
        problem: &'static str,
    },

    #[error(
        "the master key (fingerprint {given}) is not the one this database's secrets are \
         encrypted with (fingerprint {expected}); use the original master key file or \
         STACKBOX_MASTER_KEY"
    )]
    MasterKeyMismatch { expected: String, given: String },

    #[error("the operating system's random number generator failed: {source}")]
    Random { source: getrandom::Error },

    #[error(
        "cannot decrypt the secrets of client {client}: the master key is not the one they were \
         encrypted with, or the stored data was altered or copied from another client"
    )]
    Decrypt { client: ClientId },

    #[error("cannot encrypt the secrets of client {client}")]
    Encrypt { client: ClientId },

    #[error("the decrypted secrets of client {client} are not readable: {problem}")]
    SecretsFormat { client: ClientId, problem: String },

    #[error("{field} is not acceptable: {problem}")]
    InvalidValue {
        field: &'static str,
        problem: String,
    },

    #[error(
        "a sign-up's configuration must not name a client_id ({client}): StackBox assigns the \
         id when the sign-up is provisioned; remove client_id"
    )]
    SignupClientIdGiven { client: ClientId },

    #[error("sign-up {signup} was not found")]
    SignupNotFound { signup: SignupId },

    #[error(
        "sign-up {signup} is {from} and cannot become {to} (allowed: pending or expired to paid, \
         paid to provisioned, pending to expired; a checkout session is set while pending)"
    )]
    SignupTransition {
        signup: SignupId,
        from: SignupStatus,
        to: SignupStatus,
    },

    #[error("checkout session {session} already belongs to sign-up {owner}")]
    CheckoutSessionTaken { session: String, owner: SignupId },

    #[error("client {client} has no billing record; store one with upsert_billing first")]
    BillingNotFound { client: ClientId },

    #[error("subscription {subscription} already belongs to client {owner}")]
    SubscriptionTaken {
        subscription: String,
        owner: ClientId,
    },

    #[error("mail {mail} was not found")]
    MailNotFound { mail: MailId },

    #[error(
        "mail {mail} is {from} and cannot become {to} (allowed: sending to sent, pending or \
         failed; pending to failed; failed to pending through requeue_mail)"
    )]
    MailTransition {
        mail: MailId,
        from: MailStatus,
        to: MailStatus,
    },

    #[error(
        "cannot decrypt mail {mail}: the master key is not the one it was encrypted with, or \
         the stored data was altered or copied from another mail"
    )]
    DecryptMail { mail: MailId },

    #[error("cannot encrypt mail {mail}")]
    EncryptMail { mail: MailId },

    #[error(
        "cannot decrypt the sealed data: the master key is not the one it was sealed with, the \
         associated data differs from the sealing's, or the data was altered"
    )]
    DecryptBlob,

    #[error("cannot encrypt the data: it is too large for the cipher")]
    EncryptBlob,

    #[error(
        "cannot decrypt the backup repository key of client {client}: the master key is not \
         the one it was encrypted with, or the stored data was altered or copied from \
         elsewhere; its backups cannot be read without the original master key"
    )]
    DecryptBackupKey { client: ClientId },

    #[error("cannot encrypt the backup repository key of client {client}")]
    EncryptBackupKey { client: ClientId },

    #[error("backup {backup} was not found")]
    BackupNotFound { backup: BackupId },

    #[error(
        "backup {backup} is {status}; only a succeeded backup has a snapshot whose restore can \
         be verified"
    )]
    BackupNotVerifiable {
        backup: BackupId,
        status: BackupStatus,
    },

    #[error(
        "{matches} snapshots of client {client} start with {prefix:?}; give more of the \
         snapshot id"
    )]
    AmbiguousSnapshot {
        client: ClientId,
        prefix: String,
        matches: usize,
    },

    #[error(
        "client {client} still exists; its backups and backup key are only forgotten after it \
         was destroyed and its retention ended"
    )]
    ClientNotDestroyed { client: ClientId },
}

fn token_scope_problem(role: TokenRole) -> &'static str {
    match role {
        TokenRole::Operator => {
            "an operator token belongs to no client; create it without a client id"
        }
        TokenRole::Client => "a client token needs the client it may read; give the client id",
    }
}

impl StoreError {
    /// Wraps a driver error with what the store was doing.
    pub(crate) fn database(action: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| StoreError::Database { action, source }
    }

    pub(crate) fn corrupt(
        table: &'static str,
        column: &'static str,
        problem: impl ToString,
    ) -> StoreError {
        StoreError::Corrupt {
            table,
            column,
            problem: problem.to_string(),
        }
    }
}

impl From<getrandom::Error> for StoreError {
    fn from(source: getrandom::Error) -> StoreError {
        StoreError::Random { source }
    }
}
