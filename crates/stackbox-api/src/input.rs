//! The JSON bodies: from bytes to values validated by the core.
//!
//! `POST /v1/clients` (and the sign-up) go through four stages, each with its own answer: not
//! JSON → 400; not an object, or a field that [`NewClient`] does not have → 422 naming it; a
//! value of the wrong type → 422 naming its path (`plan`, `features.calcom`); a value the core
//! refuses → 422 naming the core's field. The core's `ClientConfigFile` has public fields, so
//! no TOML is involved: the JSON fields go into it and through `ClientSpec::from_file`, the
//! same validation as a TOML file. `POST /v1/clients/{id}/clone` ([`CloneRequest`]) goes
//! through the same stages, its domain through `Domain::parse`.
//!
//! `PATCH /v1/clients/{id}` is a JSON merge patch (RFC 7386) of the configuration: the first
//! two stages as for a new client ([`parse_client_patch`]: not JSON → 400; not an object, an
//! unknown field or another `client_id` → 422 naming it), then the patch is merged into the
//! stored configuration in the very JSON shape `POST /v1/clients` takes
//! ([`apply_client_patch`]), and the result goes through the last two stages exactly like a
//! new client's body, so a PATCH refuses what a create refuses, with the same messages.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use stackbox_core::client::{ClientConfigFile, ClientId, ClientSpec, Domain};
use stackbox_core::CoreError;
use utoipa::openapi::{RefOr, Schema};
use utoipa::PartialSchema;

use crate::dto::{CloneRequest, NewClient, RolloutRequest, RotationRequest, UpgradeRequest};
use crate::error::ApiError;

/// The longest snapshot reference: a whole restic snapshot id.
const MAX_SNAPSHOT_DIGITS: usize = 64;
/// The shortest: restic's short id, as `stackbox backup list` prints it. Fewer digits would
/// too easily match several snapshots.
const MIN_SNAPSHOT_DIGITS: usize = 8;

/// The properties of a body type, read from its derived schema (so from the struct itself).
fn schema_fields<T: PartialSchema>() -> BTreeSet<String> {
    match T::schema() {
        RefOr::T(Schema::Object(object)) => object.properties.keys().cloned().collect(),
        _ => BTreeSet::new(),
    }
}

/// The fields of [`NewClient`].
pub fn new_client_fields() -> &'static BTreeSet<String> {
    static FIELDS: OnceLock<BTreeSet<String>> = OnceLock::new();
    FIELDS.get_or_init(schema_fields::<NewClient>)
}

/// The fields of [`RotationRequest`].
fn rotation_request_fields() -> &'static BTreeSet<String> {
    static FIELDS: OnceLock<BTreeSet<String>> = OnceLock::new();
    FIELDS.get_or_init(schema_fields::<RotationRequest>)
}

/// `POST /v1/clients/{id}/rotate-secrets`'s body: none, or `{"only": [NAME, …]}` of at most
/// 32 `.env` names (the control plane says which it can rotate).
pub(crate) fn parse_rotation_request(body: &[u8]) -> Result<Vec<String>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let value = known_object(
        body,
        rotation_request_fields(),
        "optionally `only`, the secrets to rotate",
    )?;
    let request: RotationRequest = typed(value)?;
    if request.only.len() > 32 {
        return Err(ApiError::invalid("only", "only: at most 32 names"));
    }
    for name in &request.only {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(ApiError::invalid(
                "only",
                "only: each entry is a secret's .env name such as MYSQL_ROOT_PASSWORD",
            ));
        }
    }
    Ok(request.only)
}

/// `POST /v1/clients/{id}/admin-password`'s body: none, or an empty JSON object (the password
/// is generated, never chosen by the caller: a chosen one would pass through logs and shells).
pub(crate) fn parse_admin_password_request(body: &[u8]) -> Result<(), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|error| ApiError::MalformedJson(error.to_string()))?;
    let Value::Object(object) = &value else {
        return Err(ApiError::Invalid {
            field: None,
            message: "the body must be empty or {}".into(),
        });
    };
    match object.keys().next() {
        Some(field) => Err(ApiError::invalid(
            field.clone(),
            format!("{field}: unknown field; this route takes none (the password is generated)"),
        )),
        None => Ok(()),
    }
}

/// The fields of [`UpgradeRequest`].
fn upgrade_request_fields() -> &'static BTreeSet<String> {
    static FIELDS: OnceLock<BTreeSet<String>> = OnceLock::new();
    FIELDS.get_or_init(schema_fields::<UpgradeRequest>)
}

/// `POST /v1/clients/{id}/upgrade`'s body: `{"to": RELEASE}` (a release name's alphabet; the
/// control plane says whether the move is allowed).
pub(crate) fn parse_upgrade_request(body: &[u8]) -> Result<String, ApiError> {
    let value = known_object(
        body,
        upgrade_request_fields(),
        "`to`, the release to move to",
    )?;
    if value.get("to").is_none() {
        return Err(ApiError::invalid(
            "to",
            "to: is missing; give the release to move to",
        ));
    }
    let request: UpgradeRequest = typed(value)?;
    stackbox_core::release::validate_release_name("to", &request.to).map_err(core_error)?;
    Ok(request.to)
}

/// The fields of [`RolloutRequest`].
fn rollout_request_fields() -> &'static BTreeSet<String> {
    static FIELDS: OnceLock<BTreeSet<String>> = OnceLock::new();
    FIELDS.get_or_init(schema_fields::<RolloutRequest>)
}

/// What `POST /v1/rollouts` asks for, validated: the release, the clients (all when `None`)
/// and the wave settings (the defaults where left out).
pub(crate) struct ParsedRollout {
    pub to: String,
    pub clients: Option<Vec<ClientId>>,
    pub settings: stackbox_core::rollout::RolloutSettings,
}

/// `POST /v1/rollouts`'s body: `to` (required), `clients`, `canary`, `growth`, `max_wave`,
/// `concurrency`; each refusal names its field (`clients[2]` for a malformed id).
pub(crate) fn parse_rollout_request(body: &[u8]) -> Result<ParsedRollout, ApiError> {
    let value = known_object(
        body,
        rollout_request_fields(),
        "`to`, the release to move the clients to, and optionally `clients`, `canary`, \
         `growth`, `max_wave` and `concurrency`",
    )?;
    if value.get("to").is_none() {
        return Err(ApiError::invalid(
            "to",
            "to: is missing; give the release to move the clients to",
        ));
    }
    let request: RolloutRequest = typed(value)?;
    stackbox_core::release::validate_release_name("to", &request.to).map_err(core_error)?;
    let clients = match request.clients {
        None => None,
        Some(list) => {
            if list.is_empty() {
                return Err(ApiError::invalid(
                    "clients",
                    "clients: is empty; leave it out to roll out to every client",
                ));
            }
            let mut ids = Vec::with_capacity(list.len());
            for (index, text) in list.iter().enumerate() {
                let id = ClientId::parse(text).map_err(|error| {
                    let field = format!("clients[{index}]");
                    ApiError::invalid(field.clone(), format!("{field}: {error}"))
                })?;
                ids.push(id);
            }
            Some(ids)
        }
    };
    let defaults = stackbox_core::rollout::RolloutSettings::default();
    let settings = stackbox_core::rollout::RolloutSettings {
        canary: request.canary.unwrap_or(defaults.canary),
        growth: request.growth.unwrap_or(defaults.growth),
        max_wave: request.max_wave.unwrap_or(defaults.max_wave),
        concurrency: request.concurrency.unwrap_or(defaults.concurrency),
    }
    .validated()
    .map_err(core_error)?;
    Ok(ParsedRollout {
        to: request.to,
        clients,
        settings,
    })
}

/// The fields of [`CloneRequest`].
fn clone_request_fields() -> &'static BTreeSet<String> {
    static FIELDS: OnceLock<BTreeSet<String>> = OnceLock::new();
    FIELDS.get_or_init(schema_fields::<CloneRequest>)
}

/// The first two stages: JSON (400), then an object of known fields (422 naming the unknown
/// one). `what` finishes "the body must be a JSON object holding …".
fn known_object(body: &[u8], known: &BTreeSet<String>, what: &str) -> Result<Value, ApiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|error| ApiError::MalformedJson(error.to_string()))?;
    let Value::Object(object) = &value else {
        return Err(ApiError::Invalid {
            field: None,
            message: format!("the body must be a JSON object holding {what}"),
        });
    };
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
    Ok(value)
}

/// The third stage: values of the right types (422 naming the path).
fn typed<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let field = error.path().to_string();
        let problem = error.into_inner().to_string();
        ApiError::invalid(field.clone(), format!("{field}: {problem}"))
    })
}

/// Parses and validates a client configuration sent as JSON.
pub fn parse_new_client(body: &[u8]) -> Result<ClientSpec, ApiError> {
    let value = known_object(body, new_client_fields(), "the client's configuration")?;
    validated_client(value, None)
}

/// The last two stages of a client configuration: types (422 naming the path), then the core
/// (422 naming its field). `id`, when given, is the configuration's `client_id`.
fn validated_client(value: Value, id: Option<&ClientId>) -> Result<ClientSpec, ApiError> {
    let new: NewClient = typed(value)?;
    let file = ClientConfigFile {
        client_id: id.map(|id| id.to_string()).or(new.client_id),
        company_name: new.company_name,
        domain: new.domain,
        plan: new.plan,
        admin_email: new.admin_email,
        brand_color: new.brand_color,
        infrastructure: new.infrastructure,
        // Not an API field: the control plane records it, and `upgrade` changes it.
        release: None,
        features: new.features.unwrap_or_default(),
        // Not an API field either: the control plane records the old domain when it changes.
        previous_domains: Vec::new(),
    };
    ClientSpec::from_file(file).map_err(core_error)
}

/// The first two stages of `PATCH /v1/clients/{id}`: a JSON object whose fields are those of
/// a client's configuration, and whose `client_id`, if given, is this client's (the id cannot
/// change). Returns the patch without `client_id`.
pub(crate) fn parse_client_patch(
    body: &[u8],
    id: &ClientId,
) -> Result<Map<String, Value>, ApiError> {
    let value = known_object(
        body,
        new_client_fields(),
        "the fields of the client's configuration to change (a JSON merge patch)",
    )?;
    let Value::Object(mut patch) = value else {
        unreachable!("known_object returns objects only");
    };
    match patch.remove("client_id") {
        None => {}
        Some(Value::String(given)) if given == id.as_str() => {}
        Some(given) => {
            return Err(ApiError::invalid(
                "client_id",
                format!(
                    "client_id: cannot be changed: this is client {id}, and the patch gives \
                     {given}; leave client_id out of the patch"
                ),
            ))
        }
    }
    Ok(patch)
}

/// The stored configuration with the patch merged in (RFC 7386), validated like a new client's
/// body: the client's configuration after the change.
pub(crate) fn apply_client_patch(
    current: &ClientSpec,
    id: &ClientId,
    patch: Map<String, Value>,
) -> Result<ClientSpec, ApiError> {
    let mut merged = configuration_json(current);
    merge_patch(&mut merged, &Value::Object(patch));
    validated_client(merged, Some(id))
}

/// A configuration in the JSON shape of `POST /v1/clients` (without its id): what a patch
/// applies to.
fn configuration_json(spec: &ClientSpec) -> Value {
    let mut object = Map::new();
    let mut put = |field: &str, value: Value| {
        object.insert(field.to_string(), value);
    };
    put("company_name", Value::from(spec.company_name.as_str()));
    put("domain", Value::from(spec.domain.as_str()));
    put("plan", Value::from(spec.plan.key()));
    put("admin_email", Value::from(spec.admin_email.as_str()));
    put("brand_color", Value::from(spec.brand_color.as_str()));
    if let Some(provider) = spec.infrastructure {
        put("infrastructure", Value::from(provider.key()));
    }
    if !spec.features.is_empty() {
        put(
            "features",
            Value::Object(
                spec.features
                    .iter()
                    .map(|(app, on)| (app.key().to_string(), Value::from(*on)))
                    .collect(),
            ),
        );
    }
    Value::Object(object)
}

/// RFC 7386, section 2: objects merge member by member, `null` removes a member, anything
/// else replaces the target.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(members) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(object) = target {
        for (name, value) in members {
            if value.is_null() {
                object.remove(name);
            } else {
                merge_patch(object.entry(name.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// Parses the body of `POST /v1/clients/{id}/clone`: the new domain, validated by the core,
/// and the snapshot, checked like one in a path.
pub(crate) fn parse_clone_request(body: &[u8]) -> Result<(Domain, Option<String>), ApiError> {
    let value = known_object(
        body,
        clone_request_fields(),
        "the new client's `domain` and, optionally, the `snapshot`",
    )?;
    // `domain` is a `String` in the type, so serde alone would report a missing one at the
    // path `.`; name the field instead.
    if value.get("domain").is_none() {
        return Err(ApiError::invalid(
            "domain",
            "domain: is missing; give the new client's domain",
        ));
    }
    let request: CloneRequest = typed(value)?;
    let domain = Domain::parse(&request.domain).map_err(core_error)?;
    if let Some(snapshot) = &request.snapshot {
        if !is_snapshot_ref(snapshot) {
            return Err(ApiError::invalid("snapshot", snapshot_problem(snapshot)));
        }
    }
    Ok((domain, request.snapshot))
}

/// A snapshot as the API takes it: `latest`, or 8 to 64 lowercase hex digits (a restic
/// snapshot id or its first digits). Checked before it reaches the control plane, like every
/// id, so that nothing else (a path, an option for restic) can be smuggled in.
pub(crate) fn is_snapshot_ref(text: &str) -> bool {
    text == "latest"
        || ((MIN_SNAPSHOT_DIGITS..=MAX_SNAPSHOT_DIGITS).contains(&text.len())
            && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// Why `text` is not a snapshot, for people.
fn snapshot_problem(text: &str) -> String {
    format!(
        "snapshot: {text:?} is not a snapshot; use `latest` or {MIN_SNAPSHOT_DIGITS} to \
         {MAX_SNAPSHOT_DIGITS} lowercase hex digits of a snapshot id (see \
         GET /v1/clients/{{id}}/backups)"
    )
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

    fn clone_field_of(body: &str) -> Option<String> {
        match parse_clone_request(body.as_bytes()) {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("expected a 422 for {body}, got {other:?}"),
        }
    }

    #[test]
    fn a_clone_request_gives_the_core_domain_and_the_snapshot_as_written() {
        let (domain, snapshot) =
            parse_clone_request(br#"{"domain": " Staging.Example.COM ", "snapshot": "latest"}"#)
                .expect("valid");
        assert_eq!(domain, Domain::parse("staging.example.com").expect("valid"));
        assert_eq!(snapshot.as_deref(), Some("latest"));
        let (_, snapshot) =
            parse_clone_request(br#"{"domain": "staging.example.com"}"#).expect("valid");
        assert_eq!(snapshot, None);
        let (_, snapshot) =
            parse_clone_request(br#"{"domain": "staging.example.com", "snapshot": null}"#)
                .expect("valid");
        assert_eq!(snapshot, None);
    }

    #[test]
    fn each_clone_request_problem_names_its_field() {
        assert_eq!(clone_field_of("{}").as_deref(), Some("domain"));
        assert_eq!(
            clone_field_of(r#"{"domain": 3}"#).as_deref(),
            Some("domain")
        );
        assert_eq!(
            clone_field_of(r#"{"domain": null}"#).as_deref(),
            Some("domain")
        );
        assert_eq!(
            clone_field_of(r#"{"domain": "a..example.com"}"#).as_deref(),
            Some("domain")
        );
        assert_eq!(
            clone_field_of(r#"{"domain": "a.example.com", "snapshot": "ABCDEF12"}"#).as_deref(),
            Some("snapshot")
        );
        assert_eq!(
            clone_field_of(r#"{"domain": "a.example.com", "snapshot": 12345678}"#).as_deref(),
            Some("snapshot")
        );
        // An unknown field is named even when the domain is missing too.
        assert_eq!(
            clone_field_of(r#"{"domian": "a.example.com"}"#).as_deref(),
            Some("domian")
        );
        assert_eq!(clone_field_of("[]"), None);
        assert!(matches!(
            parse_clone_request(b"{"),
            Err(ApiError::MalformedJson(_))
        ));
    }

    fn client() -> (ClientId, ClientSpec) {
        let id = ClientId::parse("smith-0000000a").expect("id");
        let mut spec = parse_new_client(GOOD.as_bytes()).expect("valid");
        spec.client_id = Some(id.clone());
        (id, spec)
    }

    fn patched(patch: &str) -> Result<ClientSpec, ApiError> {
        let (id, spec) = client();
        let patch = parse_client_patch(patch.as_bytes(), &id)?;
        apply_client_patch(&spec, &id, patch)
    }

    fn patch_field_of(patch: &str) -> Option<String> {
        match patched(patch) {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("expected a 422 for {patch}, got {other:?}"),
        }
    }

    #[test]
    fn merge_patch_follows_rfc_7386s_examples() {
        // RFC 7386, appendix A, a selection.
        for (target, patch, result) in [
            (r#"{"a":"b"}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
            (r#"{"a":"b"}"#, r#"{"b":"c"}"#, r#"{"a":"b","b":"c"}"#),
            (r#"{"a":"b"}"#, r#"{"a":null}"#, r#"{}"#),
            (r#"{"a":"b","b":"c"}"#, r#"{"a":null}"#, r#"{"b":"c"}"#),
            (r#"{"a":["b"]}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
            (
                r#"{"a":{"b":"c"}}"#,
                r#"{"a":{"b":"d","c":null}}"#,
                r#"{"a":{"b":"d"}}"#,
            ),
            (r#"{"a":[{"b":"c"}]}"#, r#"{"a":[1]}"#, r#"{"a":[1]}"#),
            (r#"{"e":null}"#, r#"{"a":1}"#, r#"{"e":null,"a":1}"#),
            (r#"[1,2]"#, r#"{"a":"b","c":null}"#, r#"{"a":"b"}"#),
            (
                r#"{}"#,
                r#"{"a":{"bb":{"ccc":null}}}"#,
                r#"{"a":{"bb":{}}}"#,
            ),
        ] {
            let mut target: Value = serde_json::from_str(target).expect("JSON");
            merge_patch(&mut target, &serde_json::from_str(patch).expect("JSON"));
            assert_eq!(
                target,
                serde_json::from_str::<Value>(result).expect("JSON"),
                "{patch}"
            );
        }
    }

    #[test]
    fn an_empty_patch_gives_the_stored_configuration_back() {
        let (_, spec) = client();
        assert_eq!(patched("{}").expect("valid"), spec);
        assert_eq!(
            patched(r#"{"client_id": "smith-0000000a", "plan": "professional"}"#).expect("valid"),
            spec
        );
    }

    #[test]
    fn a_patch_changes_only_what_it_names_and_null_gives_defaults_back() {
        let (_, spec) = client();
        let changed = patched(r##"{"company_name": "Smith & Sons", "brand_color": "#aa0000"}"##)
            .expect("valid");
        assert_eq!(changed.company_name.as_str(), "Smith & Sons");
        assert_eq!(changed.brand_color.as_str(), "#aa0000");
        assert_eq!(changed.domain, spec.domain);
        assert_eq!(changed.features, spec.features);
        assert_eq!(changed.client_id, spec.client_id);
        let defaults =
            patched(r#"{"brand_color": null, "features": {"calcom": null}}"#).expect("valid");
        assert_eq!(
            defaults.brand_color,
            stackbox_core::client::BrandColor::default()
        );
        assert!(defaults.features.is_empty(), "{:?}", defaults.features);
        let switched = patched(r#"{"features": {"nextcloud": false}}"#).expect("valid");
        assert_eq!(
            switched.features.len(),
            2,
            "merged app by app: {:?}",
            switched.features
        );
    }

    #[test]
    fn each_patch_problem_names_its_field_with_the_creates_message() {
        assert_eq!(
            patch_field_of(r#"{"colour": "red"}"#).as_deref(),
            Some("colour")
        );
        assert_eq!(
            patch_field_of(r#"{"domain": "smith..com"}"#).as_deref(),
            Some("domain")
        );
        assert_eq!(
            patch_field_of(r#"{"plan": "platinum"}"#).as_deref(),
            Some("plan")
        );
        assert_eq!(patch_field_of(r#"{"plan": 3}"#).as_deref(), Some("plan"));
        assert_eq!(
            patch_field_of(r#"{"company_name": null}"#).as_deref(),
            Some("company_name")
        );
        assert_eq!(
            patch_field_of(r#"{"features": {"website": true}}"#).as_deref(),
            Some("features.website")
        );
        // Professional has no Mailtrain: switching it on is refused as on a create.
        assert_eq!(
            patch_field_of(r#"{"features": {"mailtrain": true}}"#).as_deref(),
            Some("features.mailtrain")
        );
        assert_eq!(
            patch_field_of(r#"{"client_id": "jones-0000000b"}"#).as_deref(),
            Some("client_id")
        );
        assert_eq!(
            patch_field_of(r#"{"client_id": null}"#).as_deref(),
            Some("client_id")
        );
        assert_eq!(patch_field_of("[]"), None);
        assert!(matches!(patched("{"), Err(ApiError::MalformedJson(_))));
        // The same message as a create's for the same value.
        let create = parse_new_client(
            GOOD.replace("smith.example.com\"", "smith..com\"")
                .as_bytes(),
        );
        let patch = patched(r#"{"domain": "smith..com"}"#);
        match (create, patch) {
            (
                Err(ApiError::Invalid { message: a, .. }),
                Err(ApiError::Invalid { message: b, .. }),
            ) => {
                assert_eq!(a, b)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn snapshots_are_latest_or_8_to_64_lowercase_hex_digits() {
        let longest = "f".repeat(64);
        for good in ["latest", "0123abcd", "4f9c2a7be0d1", longest.as_str()] {
            assert!(is_snapshot_ref(good), "{good}");
        }
        let too_long = "f".repeat(65);
        for bad in [
            "",
            "0123abc",
            "0123ABCD",
            "0123abcg",
            "Latest",
            "latest ",
            "../../etc",
            "--help00",
            "0123abcd\n",
            too_long.as_str(),
        ] {
            assert!(!is_snapshot_ref(bad), "{bad:?}");
        }
    }
}
