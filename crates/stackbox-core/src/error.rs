//! The one error type of the core.

use crate::plan::{App, Plan};

/// Everything that can go wrong while reading, validating or rendering a client.
///
/// Every message names the field at fault and says how to fix it; none ever holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// A configuration file is not valid TOML, has a value of the wrong type or an unknown key.
    #[error("{origin}: {message}")]
    Syntax {
        /// Which file or input (e.g. `client configuration`).
        origin: String,
        /// The parser's description, which names the key and line.
        message: String,
    },
    /// A field is missing or its value is not acceptable.
    #[error("{field}: {problem}")]
    InvalidField {
        /// The field, as written in the configuration (`domain`, `features.calcom`, …).
        field: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// The client asks for an app its plan does not include.
    #[error(
        "features.{app}: {title} needs the {required} plan or higher, and this client is on the \
         {plan} plan; choose plan = \"{required}\" or remove features.{app}",
        app = app.key(), title = app.title()
    )]
    AppAbovePlan {
        /// The app asked for.
        app: App,
        /// The lowest plan that includes it.
        required: Plan,
        /// The client's plan.
        plan: Plan,
    },
    /// An image reference in the catalog or an override is not acceptable.
    #[error("images.{image}: {problem}")]
    InvalidImage {
        /// The catalog key (`mysql`, `traefik`, …).
        image: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// Secrets given to the renderer lack one that the stack needs (a bug in the caller).
    #[error("secret {name} is missing; render again so that it is generated")]
    MissingSecret {
        /// The secret's environment name.
        name: &'static str,
    },
}

impl CoreError {
    pub(crate) fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        CoreError::InvalidField {
            field: field.into(),
            problem: problem.into(),
        }
    }
}
