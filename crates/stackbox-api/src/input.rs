//! The body of `POST /v1/clients`: from JSON bytes to a `ClientSpec` validated by the core.
//!
//! Four stages, each with its own answer: not JSON → 400; not an object, or a field that
//! [`NewClient`] does not have → 422 naming it; a value of the wrong type → 422 naming its path
//! (`plan`, `features.calcom`); a value the core refuses → 422 naming the core's field. The
//! core's `ClientConfigFile` has public fields, so no TOML is involved: the JSON fields go into
//! it and through `ClientSpec::from_file`, the same validation as a TOML file.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use serde_json::Value;
use stackbox_core::client::{ClientConfigFile, ClientSpec};
use stackbox_core::CoreError;
use utoipa::openapi::{RefOr, Schema};
use utoipa::PartialSchema;

use crate::dto::NewClient;
use crate::error::ApiError;

/// The fields of [`NewClient`], read from its derived schema (so from the struct itself).
pub fn new_client_fields() -> &'static BTreeSet<String> {
    static FIELDS: OnceLock<BTreeSet<String>> = OnceLock::new();
    FIELDS.get_or_init(|| match NewClient::schema() {
        RefOr::T(Schema::Object(object)) => object.properties.keys().cloned().collect(),
        _ => BTreeSet::new(),
    })
}

/// Parses and validates a client configuration sent as JSON.
pub fn parse_new_client(body: &[u8]) -> Result<ClientSpec, ApiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|error| ApiError::MalformedJson(error.to_string()))?;
    let Value::Object(object) = &value else {
        return Err(ApiError::Invalid {
            field: None,
            message: "the body must be a JSON object holding the client's configuration"
                .to_string(),
        });
    };
    let known = new_client_fields();
    if let Some(unknown) = object.keys().find(|key| !known.contains(*key)) {
        let expected: Vec<&str> = known.iter().map(String::as_str).collect();
        return Err(ApiError::invalid(
            unknown.clone(),
            format!(
                "{unknown}: unknown field; the fields are {}",
                expected.join(", ")
            ),
        ));
    }
    let new: NewClient = serde_path_to_error::deserialize(value).map_err(|error| {
        let field = error.path().to_string();
        let problem = error.into_inner().to_string();
        ApiError::invalid(field.clone(), format!("{field}: {problem}"))
    })?;
    let file = ClientConfigFile {
        client_id: new.client_id,
        company_name: new.company_name,
        domain: new.domain,
        plan: new.plan,
        admin_email: new.admin_email,
        brand_color: new.brand_color,
        infrastructure: new.infrastructure,
        features: new.features.unwrap_or_default(),
    };
    ClientSpec::from_file(file).map_err(core_error)
}

/// The 422 for a value the core refused, naming the core's field.
pub fn core_error(error: CoreError) -> ApiError {
    let message = error.to_string();
    let field = match error {
        CoreError::InvalidField { field, .. } => Some(field),
        CoreError::AppAbovePlan { app, .. } => Some(format!("features.{}", app.key())),
        CoreError::Syntax { .. }
        | CoreError::InvalidImage { .. }
        | CoreError::MissingSecret { .. } => None,
    };
    ApiError::Invalid { field, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(body: &str) -> Option<String> {
        match parse_new_client(body.as_bytes()) {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("expected a 422 for {body}, got {other:?}"),
        }
    }

    const GOOD: &str = r##"{"company_name": "Smith Real Estate", "domain": "smith.example.com",
        "plan": "professional", "admin_email": "owner@smith.example.com", "brand_color": "#003366",
        "features": {"calcom": false}}"##;

    #[test]
    fn the_fields_are_those_of_the_toml_file() {
        let fields: Vec<&str> = new_client_fields().iter().map(String::as_str).collect();
        assert_eq!(
            fields,
            [
                "admin_email",
                "brand_color",
                "client_id",
                "company_name",
                "domain",
                "features",
                "infrastructure",
                "plan"
            ]
        );
    }

    #[test]
    fn a_good_body_gives_the_same_spec_as_the_same_toml() {
        let from_json = parse_new_client(GOOD.as_bytes()).expect("valid");
        let from_toml = ClientSpec::from_toml(
            "company_name = \"Smith Real Estate\"\ndomain = \"smith.example.com\"\n\
             plan = \"professional\"\nadmin_email = \"owner@smith.example.com\"\n\
             brand_color = \"#003366\"\n[features]\ncalcom = false\n",
        )
        .expect("valid");
        assert_eq!(from_json, from_toml);
    }

    #[test]
    fn each_problem_names_its_field() {
        assert_eq!(field_of(r#"{"colour": "red"}"#).as_deref(), Some("colour"));
        assert_eq!(
            field_of(&GOOD.replace("\"professional\"", "3")).as_deref(),
            Some("plan")
        );
        assert_eq!(
            field_of(&GOOD.replace("false", "\"no\"")).as_deref(),
            Some("features.calcom")
        );
        assert_eq!(
            field_of(&GOOD.replace("calcom", "website")).as_deref(),
            Some("features.website")
        );
        assert_eq!(
            field_of(&GOOD.replace("\"calcom\": false", "\"mailtrain\": true")).as_deref(),
            Some("features.mailtrain")
        );
        assert_eq!(
            field_of(&GOOD.replace("smith.example.com\"", "smith..com\"")).as_deref(),
            Some("domain")
        );
        assert_eq!(field_of("[1, 2]"), None);
        assert_eq!(field_of("{}").as_deref(), Some("company_name"));
    }

    #[test]
    fn broken_json_is_malformed_even_when_a_field_is_also_wrong() {
        for body in ["{", "{\"colour\": 1,", "", "{} x", "\u{0}"] {
            assert!(
                matches!(
                    parse_new_client(body.as_bytes()),
                    Err(ApiError::MalformedJson(_))
                ),
                "{body:?}"
            );
        }
    }
}
