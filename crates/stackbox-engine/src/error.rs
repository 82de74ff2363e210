use thiserror::Error;

/// Errors of the engine adapter and the lifecycle operations.
#[derive(Debug, Error)]
pub enum EngineError {
    #[error(
        "no Docker engine answers at {endpoint}: {problem}. Start one (`dockerd`, or \
         `systemctl start docker`) or point DOCKER_HOST at it"
    )]
    Unreachable { endpoint: String, problem: String },

    #[error(
        "image {image}{for_service} is not on the engine and could not be pulled ({problem}). \
         Provide it: add a catalog override (`--images FILE` with `[images]` mapping the \
         service to an image the engine has), or load it with `docker load -i IMAGE.tar`"
    )]
    ImageUnavailable {
        image: String,
        /// ` (service website)`, when known.
        for_service: String,
        problem: String,
    },

    #[error("the engine refused to {action} {object}: {message}")]
    Refused {
        action: &'static str,
        object: String,
        status: u16,
        message: String,
    },

    #[error("the engine connection failed while trying to {action} {object}: {problem}")]
    Transport {
        action: &'static str,
        object: String,
        problem: String,
    },

    #[error(
        "the engine has no free address range for network {network} ({message}). Each client \
         uses 3–4 networks and Docker's default pools hold about 30: set `default-address-pools` \
         in /etc/docker/daemon.json, e.g. [{{\"base\": \"10.64.0.0/10\", \"size\": 24}}] \
         (16,384 networks), and restart dockerd"
    )]
    AddressPoolExhausted { network: String, message: String },

    #[error("{object} is not on the engine")]
    NotFound { object: String },

    #[error(
        "service {service} did not become healthy{within}: {reason}\n\
         health check output:\n{health_output}\n\
         last log lines:\n{logs}"
    )]
    Unhealthy {
        service: String,
        within: String,
        reason: String,
        health_output: String,
        logs: String,
    },

    #[error(
        "service {service} is healthy, but its {what} could not be brought in line with the \
         client's configuration (exit {exit}):\n{output}\nthe deploy was rolled back; fix the \
         cause above and deploy again"
    )]
    ConvergeFailed {
        service: String,
        what: String,
        exit: i64,
        /// The command's standard error and output; the commands never print a password.
        output: String,
    },

    #[error("service {service} of client {client} is not running; start the client first")]
    ServiceNotRunning { client: String, service: String },

    #[error("{service} refused to {what} (exit {exit}): {output}")]
    AppCommandFailed {
        service: String,
        /// What the command does, e.g. `set the admin password`.
        what: String,
        /// `none` when the engine did not report one.
        exit: String,
        /// What the command printed, scrubbed of the secrets it was given.
        output: String,
    },

    #[error("deploy interrupted; what it had started was rolled back")]
    Interrupted,

    #[error("client {client} has no containers, networks or volumes on the engine")]
    ClientAbsent { client: String },
}

impl EngineError {
    /// The service a failure is about, when it is about one.
    pub fn failed_service(&self) -> Option<&str> {
        match self {
            EngineError::Unhealthy { service, .. }
            | EngineError::ConvergeFailed { service, .. }
            | EngineError::ServiceNotRunning { service, .. }
            | EngineError::AppCommandFailed { service, .. } => Some(service),
            _ => None,
        }
    }
}
