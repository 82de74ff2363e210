//! The crate's one error type.

use std::fmt;

use aws_sdk_acm::error::{DisplayErrorContext, ProvideErrorMetadata};
use stackbox_core::CoreError;

/// The phase's steps (design document, Phase 1), plus the read-only and destroy passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InfraStep {
    /// 1. ACM certificate(s), the hosted zone and the DNS validation records.
    Certificate,
    /// 2. RDS instance (dedicated) or the shared one, the app databases and users.
    Database,
    /// 3. The Secrets Manager secret.
    Secret,
    /// 4. Target group, listener rule and listener certificate on the shared ALB.
    LoadBalancer,
    /// 5. The CloudFront distribution.
    Cdn,
    /// 6. Route53 records.
    Dns,
    /// 7. The host registered as the target.
    TargetRegistration,
    /// Reading the environment and the operator's shared resources.
    Setup,
    /// `destroy`.
    Destroy,
}

impl InfraStep {
    pub fn key(self) -> &'static str {
        match self {
            InfraStep::Certificate => "certificate",
            InfraStep::Database => "database",
            InfraStep::Secret => "secret",
            InfraStep::LoadBalancer => "load-balancer",
            InfraStep::Cdn => "cdn",
            InfraStep::Dns => "dns",
            InfraStep::TargetRegistration => "target-registration",
            InfraStep::Setup => "setup",
            InfraStep::Destroy => "destroy",
        }
    }
}

impl fmt::Display for InfraStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// Everything that can go wrong in the infrastructure phase. No variant ever holds a secret or a
/// credential: SDK errors are reduced to the service's code and message.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// An AWS service refused a request or could not be reached.
    #[error("{step}: {resource}: {service} {operation} failed: {code}: {message}")]
    Service {
        step: InfraStep,
        /// The resource the request was about (`target-group sb-…`).
        resource: String,
        /// `acm`, `rds`, `secretsmanager`, `elbv2`, `cloudfront`, `route53`.
        service: &'static str,
        operation: &'static str,
        /// The service's error code (`AccessDenied`, `PriorityInUse`, …), or `unreachable`.
        code: String,
        message: String,
    },
    /// A resource with the client's name exists but is not the client's: never adopted or touched.
    #[error(
        "{step}: {resource} ({id}) already exists and {owner}; StackBox never adopts or changes \
         it: remove or rename it, or give the client another domain"
    )]
    Conflict {
        step: InfraStep,
        resource: String,
        id: String,
        /// Whose it is, in words (`belongs to client x`, `is not tagged as this client's`).
        owner: String,
    },
    /// Something the phase needs is missing or not in the state it must be.
    #[error("{step}: {resource}: {problem}")]
    Failed {
        step: InfraStep,
        resource: String,
        /// What is wrong and what to do.
        problem: String,
    },
    /// The MySQL bootstrap failed (connecting, or an SQL statement).
    #[error("{step}: database {resource}: {message}")]
    Database {
        step: InfraStep,
        resource: String,
        message: String,
    },
    /// The request could not be built from the client and operator configuration.
    #[error(transparent)]
    Config(#[from] CoreError),
    /// A step failed, and undoing what this run had created failed too: these remain.
    #[error("{error}; undoing this run also failed, these remain and need removing by hand: {}", .remaining.join("; "))]
    RollbackIncomplete {
        error: Box<AwsError>,
        remaining: Vec<String>,
    },
}

impl AwsError {
    /// The step at fault.
    pub fn step(&self) -> Option<InfraStep> {
        match self {
            AwsError::Service { step, .. }
            | AwsError::Conflict { step, .. }
            | AwsError::Failed { step, .. }
            | AwsError::Database { step, .. } => Some(*step),
            AwsError::Config(_) => None,
            AwsError::RollbackIncomplete { error, .. } => error.step(),
        }
    }

    /// The service's error code, for [`AwsError::Service`].
    pub fn code(&self) -> Option<&str> {
        match self {
            AwsError::Service { code, .. } => Some(code),
            AwsError::RollbackIncomplete { error, .. } => error.code(),
            _ => None,
        }
    }

    pub(crate) fn failed(
        step: InfraStep,
        resource: impl Into<String>,
        problem: impl Into<String>,
    ) -> AwsError {
        AwsError::Failed {
            step,
            resource: resource.into(),
            problem: problem.into(),
        }
    }
}

/// The code of an SDK error, if the service sent one.
pub(crate) fn error_code<E: ProvideErrorMetadata>(error: &E) -> Option<&str> {
    error.code()
}

/// Maps an SDK error to [`AwsError::Service`] with its code and message (never the request,
/// which may carry secret values, and never credentials).
pub(crate) fn service_error<E>(
    step: InfraStep,
    resource: impl Into<String>,
    service: &'static str,
    operation: &'static str,
    error: E,
) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = error.code().map(str::to_string);
    let message = error.message().map(str::to_string);
    let (code, message) = match (code, message) {
        (Some(code), Some(message)) => (code, message),
        (Some(code), None) => (code, "no message".to_string()),
        (None, message) => (
            "unreachable".to_string(),
            message.unwrap_or_else(|| DisplayErrorContext(&error).to_string()),
        ),
    };
    AwsError::Service {
        step,
        resource: resource.into(),
        service,
        operation,
        code,
        message,
    }
}
