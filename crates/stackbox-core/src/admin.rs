//! The admin password reset: which apps have an admin account, and how each one is told a new
//! password, as each upstream image supports it.
//!
//! The client has one admin login (`admin` + `ADMIN_PASSWORD`) for the apps that have one. The
//! apps hash it into their own user tables at installation, so a new value in the environment
//! alone changes nothing there (which is why a rotation refuses it). What does:
//!
//! - **Nextcloud**: `php occ user:resetpassword --password-from-env admin` in the running
//!   container, with the password in `OC_PASS` (core/Command/User/ResetPassword.php reads
//!   `getenv('OC_PASS')`), as `www-data`: `occ` refuses any user but the owner of
//!   `config/config.php` (nextcloud/docker's README: `docker exec --user www-data … php occ`).
//! - **EspoCRM**: `bin/command set-password admin` in the running container, the password on
//!   its standard input (Espo\Core\Console\Commands\SetPassword prints "Enter a new password:"
//!   and reads one line; espocrm-docker's own installer runs `printf '%s\n' "$PASSWORD" |
//!   bin/command set-password admin`), as `www-data`, the web server's user that owns `data/`.
//! - **Mailtrain v2**: its entrypoint sets the admin's password from `ADMIN_PASSWORD` on every
//!   start (setup/docker-entrypoint-db-setup.js): the new value in its environment and a
//!   recreate (the deploy path's, since the environment changed) set it.
//! - **Cal.com** and **Plausible** have no preset admin: the first account registered becomes
//!   the owner, so there is nothing to reset (yet).
//!
//! The password never appears in an argument (command lines are visible to every process on
//! the host and in the engine's records): it goes in an exec's environment or standard input
//! only, and [`ResetCommand`]'s `Debug` does not show it.

use std::collections::BTreeSet;

use crate::plan::{App, ServiceKind};
use crate::secrets::SecretKey;
use crate::CoreError;

/// How one app is given a new admin password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminMechanism {
    /// The app's own command line in its running container ([`reset_command`]).
    Exec { service: ServiceKind },
    /// The app applies `ADMIN_PASSWORD` from its environment on every start: a recreate with
    /// the new value sets it.
    Recreate { service: ServiceKind },
    /// The app has no admin account to reset.
    NotApplicable { reason: &'static str },
}

/// What happened (or will happen) to one app's admin password, by its name on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResetOutcome {
    /// Set through the app's own command line.
    Set,
    /// Set by recreating the app with the new value in its environment.
    Recreated,
    /// The app has no admin account.
    NotApplicable,
}

impl ResetOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ResetOutcome::Set => "set",
            ResetOutcome::Recreated => "recreated",
            ResetOutcome::NotApplicable => "not-applicable",
        }
    }
}

impl AdminMechanism {
    /// The outcome once the reset has been carried out.
    pub fn outcome(self) -> ResetOutcome {
        match self {
            AdminMechanism::Exec { .. } => ResetOutcome::Set,
            AdminMechanism::Recreate { .. } => ResetOutcome::Recreated,
            AdminMechanism::NotApplicable { .. } => ResetOutcome::NotApplicable,
        }
    }

    /// Why there is nothing to do, for [`AdminMechanism::NotApplicable`].
    pub fn reason(self) -> Option<&'static str> {
        match self {
            AdminMechanism::NotApplicable { reason } => Some(reason),
            AdminMechanism::Exec { .. } | AdminMechanism::Recreate { .. } => None,
        }
    }
}

/// How `app` is given a new admin password.
pub fn admin_mechanism(app: App) -> AdminMechanism {
    match app {
        App::Nextcloud => AdminMechanism::Exec {
            service: ServiceKind::Nextcloud,
        },
        App::Espocrm => AdminMechanism::Exec {
            service: ServiceKind::Espocrm,
        },
        App::Mailtrain => AdminMechanism::Recreate {
            service: ServiceKind::Mailtrain,
        },
        App::Calcom => AdminMechanism::NotApplicable {
            reason: "Cal.com has no preset admin account: the first account registered becomes \
                     its owner, whose password only its owner changes",
        },
        App::Plausible => AdminMechanism::NotApplicable {
            reason: "Plausible has no preset admin account: the first account registered \
                     becomes its owner, whose password only its owner changes",
        },
    }
}

/// Whether the app has an admin account StackBox set up (and so can reset).
pub fn has_admin(app: App) -> bool {
    !matches!(admin_mechanism(app), AdminMechanism::NotApplicable { .. })
}

/// Every app of the client with how it is reset, in the order a reset goes through them: the
/// apps whose command is run (Nextcloud, then EspoCRM), then the recreated ones, then those
/// without an admin. Errors (422 naming `apps`) when no app of the client has an admin.
pub fn reset_plan(apps: &BTreeSet<App>) -> Result<Vec<(App, AdminMechanism)>, CoreError> {
    // A fixed order, so that a report reads the same every time and a failure half-way
    // always leaves the same apps set before it.
    let order = [
        App::Nextcloud,
        App::Espocrm,
        App::Mailtrain,
        App::Calcom,
        App::Plausible,
    ];
    let plan: Vec<(App, AdminMechanism)> = order
        .into_iter()
        .filter(|app| apps.contains(app))
        .map(|app| (app, admin_mechanism(app)))
        .collect();
    if !plan.iter().any(|(app, _)| has_admin(*app)) {
        return Err(CoreError::invalid(
            "apps",
            "none of this client's apps has an admin account (EspoCRM, Nextcloud and Mailtrain \
             have one; Cal.com's and Plausible's first registered account is their owner)",
        ));
    }
    Ok(plan)
}

/// One command to run in an app's running container: the argument vector (never a secret),
/// the user and working directory it runs as, its extra environment and its standard input
/// (where the password goes). `Debug` hides the environment's values and the input.
#[derive(Clone, PartialEq, Eq)]
pub struct ResetCommand {
    /// The container of this service runs it.
    pub service: ServiceKind,
    /// As in `docker exec --user`.
    pub user: &'static str,
    pub working_dir: &'static str,
    pub argv: Vec<String>,
    /// Extra environment variables of the exec.
    pub env: Vec<(String, String)>,
    /// Fed to the command's standard input, which is then closed.
    pub stdin: Option<String>,
}

impl std::fmt::Debug for ResetCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResetCommand")
            .field("service", &self.service)
            .field("user", &self.user)
            .field("working_dir", &self.working_dir)
            .field("argv", &self.argv)
            .field(
                "env",
                &self
                    .env
                    .iter()
                    .map(|(name, _)| format!("{name}=<redacted>"))
                    .collect::<Vec<_>>(),
            )
            .field("stdin", &self.stdin.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl ResetCommand {
    /// Every secret value the command carries, to scrub from what it prints.
    pub fn secret_values(&self) -> Vec<&str> {
        let mut values: Vec<&str> = self.env.iter().map(|(_, value)| value.as_str()).collect();
        if let Some(input) = &self.stdin {
            values.push(input.trim_end_matches('\n'));
        }
        values
    }
}

/// The command that sets `username`'s password to `password` in `app` (an app with
/// [`AdminMechanism::Exec`]). The user name must be a plain login name (it is an argument:
/// never one that starts with `-`, which the apps' option parsers would take as an option),
/// and the password must have the admin password's format (it is fed as one line).
pub fn reset_command(app: App, username: &str, password: &str) -> Result<ResetCommand, CoreError> {
    validate_username(username)?;
    validate_password(password)?;
    match admin_mechanism(app) {
        AdminMechanism::Exec {
            service: service @ ServiceKind::Nextcloud,
        } => Ok(ResetCommand {
            service,
            user: "www-data",
            working_dir: "/var/www/html",
            argv: vec![
                "php".into(),
                "/var/www/html/occ".into(),
                "user:resetpassword".into(),
                "--password-from-env".into(),
                username.into(),
            ],
            env: vec![("OC_PASS".into(), password.into())],
            stdin: None,
        }),
        AdminMechanism::Exec {
            service: service @ ServiceKind::Espocrm,
        } => Ok(ResetCommand {
            service,
            user: "www-data",
            working_dir: "/var/www/html",
            argv: vec![
                "/var/www/html/bin/command".into(),
                "set-password".into(),
                username.into(),
            ],
            env: Vec::new(),
            stdin: Some(format!("{password}\n")),
        }),
        AdminMechanism::Exec { service } => Err(CoreError::invalid(
            "apps",
            format!("no reset command is known for {}", service.name()),
        )),
        AdminMechanism::Recreate { .. } | AdminMechanism::NotApplicable { .. } => {
            Err(CoreError::invalid(
                "apps",
                format!(
                    "{} is not reset through a command in its container",
                    app.title()
                ),
            ))
        }
    }
}

fn validate_username(username: &str) -> Result<(), CoreError> {
    let valid = !username.is_empty()
        && username.len() <= 64
        && !username.starts_with('-')
        && username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(CoreError::invalid(
            "admin_username",
            "must be 1 to 64 of [A-Za-z0-9._@-], not starting with '-'",
        ))
    }
}

fn validate_password(password: &str) -> Result<(), CoreError> {
    if SecretKey::AdminPassword.accepts(password) {
        Ok(())
    } else {
        Err(CoreError::invalid(
            "admin_password",
            "must be at least 16 characters of [A-Za-z0-9] (the generator's format)",
        ))
    }
}

/// `text` with every non-empty secret value replaced by `<redacted>`: for what an app's
/// command printed, which goes into errors and the journal.
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for secret in secrets {
        if !secret.is_empty() {
            out = out.replace(secret, "<redacted>");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Plan;

    const PASSWORD: &str = "Abcdefgh12345678";

    #[test]
    fn every_app_has_one_mechanism_and_only_espocrm_nextcloud_and_mailtrain_have_admins() {
        let admins: BTreeSet<App> = App::ALL.into_iter().filter(|a| has_admin(*a)).collect();
        assert_eq!(
            admins,
            BTreeSet::from([App::Espocrm, App::Nextcloud, App::Mailtrain])
        );
        assert_eq!(
            admin_mechanism(App::Mailtrain).outcome(),
            ResetOutcome::Recreated
        );
        for app in [App::Calcom, App::Plausible] {
            let mechanism = admin_mechanism(app);
            assert_eq!(mechanism.outcome(), ResetOutcome::NotApplicable);
            assert!(mechanism.reason().unwrap().contains("first account"));
        }
    }

    #[test]
    fn the_plan_runs_commands_first_then_recreates_then_lists_the_apps_without_admin() {
        let plan = reset_plan(&Plan::Enterprise.apps()).unwrap();
        let apps: Vec<App> = plan.iter().map(|(app, _)| *app).collect();
        assert_eq!(
            apps,
            [
                App::Nextcloud,
                App::Espocrm,
                App::Mailtrain,
                App::Calcom,
                App::Plausible
            ]
        );
        let professional = reset_plan(&Plan::Professional.apps()).unwrap();
        assert!(!professional.iter().any(|(app, _)| *app == App::Mailtrain));
        let none = reset_plan(&BTreeSet::from([App::Calcom, App::Plausible])).unwrap_err();
        assert!(none.to_string().starts_with("apps:"), "{none}");
    }

    #[test]
    fn nextcloud_gets_the_password_in_oc_pass_as_www_data_and_never_in_an_argument() {
        let command = reset_command(App::Nextcloud, "admin", PASSWORD).unwrap();
        assert_eq!(command.service, ServiceKind::Nextcloud);
        assert_eq!(command.user, "www-data");
        assert_eq!(
            command.argv,
            [
                "php",
                "/var/www/html/occ",
                "user:resetpassword",
                "--password-from-env",
                "admin"
            ]
        );
        assert_eq!(command.env, [("OC_PASS".to_string(), PASSWORD.to_string())]);
        assert_eq!(command.stdin, None);
        assert!(!command.argv.iter().any(|a| a.contains(PASSWORD)));
    }

    #[test]
    fn espocrm_reads_the_password_as_one_line_on_its_standard_input() {
        let command = reset_command(App::Espocrm, "admin", PASSWORD).unwrap();
        assert_eq!(command.service, ServiceKind::Espocrm);
        assert_eq!(command.user, "www-data");
        assert_eq!(
            command.argv,
            ["/var/www/html/bin/command", "set-password", "admin"]
        );
        assert!(command.env.is_empty());
        assert_eq!(command.stdin.as_deref(), Some("Abcdefgh12345678\n"));
        assert_eq!(command.secret_values(), [PASSWORD]);
    }

    #[test]
    fn debug_never_shows_the_password() {
        for app in [App::Nextcloud, App::Espocrm] {
            let command = reset_command(app, "admin", PASSWORD).unwrap();
            let shown = format!("{command:?}");
            assert!(!shown.contains(PASSWORD), "{shown}");
            assert!(shown.contains("admin"), "{shown}");
        }
    }

    #[test]
    fn option_like_or_odd_user_names_and_passwords_outside_the_format_are_refused() {
        for name in ["", "-admin", "--password-from-env", "ad min", "a;b", "ä"] {
            let error = reset_command(App::Nextcloud, name, PASSWORD).unwrap_err();
            assert!(error.to_string().starts_with("admin_username"), "{name}");
        }
        for password in [
            "short",
            "sixteen chars xx",
            "Abcdefgh1234567\n",
            "Abcdefgh1234567$",
        ] {
            let error = reset_command(App::Espocrm, "admin", password).unwrap_err();
            assert!(
                error.to_string().starts_with("admin_password"),
                "{password}"
            );
        }
        for app in [App::Mailtrain, App::Calcom, App::Plausible] {
            assert!(reset_command(app, "admin", PASSWORD).is_err(), "{app:?}");
        }
    }

    #[test]
    fn scrubbing_removes_every_secret_from_a_message() {
        let text = format!("could not set {PASSWORD} for admin ({PASSWORD})");
        assert_eq!(
            scrub(&text, &[PASSWORD, ""]),
            "could not set <redacted> for admin (<redacted>)"
        );
    }
}
