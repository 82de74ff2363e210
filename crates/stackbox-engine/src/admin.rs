//! An app's admin password set with its own command line, in the client's running container
//! (the core's [`stackbox_core::admin::reset_command`] says which command, user, environment
//! and input; this runs it through [`ContainerRuntime::exec_as`]).

use stackbox_core::admin::{scrub, ResetCommand};
use stackbox_core::client::ClientId;
use stackbox_core::deploy::ContainerState;

use crate::runtime::{ContainerRuntime, ExecOptions};
use crate::EngineError;

/// Runs `command` in the client's running container of its service; `Ok` when it exited 0.
/// A container that is not running is [`EngineError::ServiceNotRunning`]; a command that
/// fails is [`EngineError::AppCommandFailed`] with what it printed, scrubbed of the password.
pub async fn set_admin_password<R: ContainerRuntime>(
    runtime: &R,
    client: &ClientId,
    command: &ResetCommand,
) -> Result<(), EngineError> {
    let service = command.service.name();
    let observed = runtime.observe(client).await?;
    let container = observed
        .containers
        .iter()
        .find(|c| {
            c.service_kind() == Some(command.service)
                && c.state == ContainerState::Running
                && !c.is_set_aside()
        })
        .ok_or_else(|| EngineError::ServiceNotRunning {
            client: client.to_string(),
            service: service.to_string(),
        })?;
    let options = ExecOptions {
        user: Some(command.user),
        working_dir: Some(command.working_dir),
        env: &command.env,
    };
    let mut stdout: Vec<u8> = Vec::new();
    let outcome = match &command.stdin {
        Some(text) => {
            let mut input = text.as_bytes();
            runtime
                .exec_as(
                    &container.id,
                    &command.argv,
                    options,
                    Some(&mut input),
                    &mut stdout,
                )
                .await?
        }
        None => {
            runtime
                .exec_as(&container.id, &command.argv, options, None, &mut stdout)
                .await?
        }
    };
    if outcome.succeeded() {
        return Ok(());
    }
    let printed = format!(
        "{} {}",
        String::from_utf8_lossy(&stdout).trim(),
        outcome.stderr.trim()
    );
    let printed: String = printed.trim().chars().take(2000).collect();
    Err(EngineError::AppCommandFailed {
        service: service.to_string(),
        what: "set the admin password".to_string(),
        exit: outcome
            .exit_code
            .map_or_else(|| "none".to_string(), |code| code.to_string()),
        output: scrub(&printed, &command.secret_values()),
    })
}
