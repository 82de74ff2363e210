//! Bearer tokens: who is calling, and what a client token may do.
//!
//! An operator token may do everything. A client token is read-only and scoped to its client:
//! every write answers 403 (whatever the target, so a 403 says nothing about which ids
//! exist), and a read of another client or of another client's deployment answers exactly
//! what a read of a missing one answers, 404, so a client token cannot probe for ids.
//!
//! Nothing here keeps a verified token: every request asks the control plane, so a token
//! revoked (`DELETE /v1/tokens/{id}`, `stackbox token revoke`) is refused from the next
//! request on.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use stackbox_core::client::ClientId;

use crate::control::{Authenticated, Principal};
use crate::error::{ApiError, Resource};
use crate::routes::AppState;

/// The longest bearer token looked up (longer ones are refused without asking the control
/// plane).
const MAX_TOKEN_BYTES: usize = 1024;

/// The caller of a route that needs a token, as an extractor: 401 without a valid one.
pub struct Caller(pub Authenticated);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = authenticate(state, &parts.headers).await?;
        // For the audit layer: who made the change it records.
        if let Some(slot) = parts.extensions.get::<crate::audit::CallerSlot>() {
            slot.set(&caller);
        }
        Ok(Caller(caller))
    }
}

/// Reads `Authorization: Bearer <token>` and asks the control plane whose it is.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Authenticated, ApiError> {
    let token = bearer_token(headers)?;
    state
        .control
        .verify_token(token)
        .await
        .map_err(|error| ApiError::from_control(error, Resource::Route))?
        .ok_or(ApiError::Unauthorized { token_given: true })
}

/// The token of a `Bearer` authorization header (RFC 6750's `b64token` syntax).
fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let missing = ApiError::Unauthorized { token_given: false };
    let invalid = ApiError::Unauthorized { token_given: true };
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(missing);
    };
    let Ok(value) = value.to_str() else {
        return Err(invalid);
    };
    let Some((scheme, token)) = value.split_once(' ') else {
        return Err(if value.eq_ignore_ascii_case("bearer") {
            invalid
        } else {
            missing
        });
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(missing);
    }
    let token = token.trim_start_matches(' ');
    let well_formed = !token.is_empty()
        && token.len() <= MAX_TOKEN_BYTES
        && token.trim_end_matches('=').bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        });
    if well_formed {
        Ok(token)
    } else {
        Err(invalid)
    }
}

impl Caller {
    pub fn principal(&self) -> &Principal {
        &self.0.principal
    }

    /// 403 unless the caller is the operator.
    pub fn require_operator(&self) -> Result<(), ApiError> {
        match self.0.principal {
            Principal::Operator => Ok(()),
            Principal::Client(_) => Err(ApiError::Forbidden(
                "a client token is read-only: it may read its own client and deployments",
            )),
        }
    }

    /// The `client` query parameter of a list that a client token may read its own part of:
    /// the operator gets what it asked (`None`: every client); a client token always its own
    /// client, and 404 for another's (as for a missing one).
    pub(crate) fn client_filter(&self, asked: Option<&str>) -> Result<Option<ClientId>, ApiError> {
        let asked = asked
            .map(|text| {
                ClientId::parse(text)
                    .map_err(|error| ApiError::invalid("client", error.to_string()))
            })
            .transpose()?;
        match &self.0.principal {
            Principal::Operator => Ok(asked),
            Principal::Client(own) => match asked {
                Some(asked) if &asked != own => Err(ApiError::NotFound(Resource::Client)),
                _ => Ok(Some(own.clone())),
            },
        }
    }

    /// Whether the caller may read this client (and its deployments).
    pub fn may_read(&self, client: &ClientId) -> bool {
        match &self.0.principal {
            Principal::Operator => true,
            Principal::Client(own) => own == client,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn token_of(value: &[u8]) -> Result<String, ApiError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_bytes(value).expect("header value"),
        );
        bearer_token(&headers).map(str::to_string)
    }

    #[test]
    fn bearer_tokens_are_read_strictly() {
        assert_eq!(
            token_of(b"Bearer abc.DEF-123_~+/=="),
            Ok("abc.DEF-123_~+/==".into())
        );
        assert_eq!(token_of(b"bearer  abc"), Ok("abc".into()));
        let missing = Err(ApiError::Unauthorized { token_given: false });
        let invalid = Err(ApiError::Unauthorized { token_given: true });
        assert_eq!(bearer_token(&HeaderMap::new()).map(str::to_string), missing);
        assert_eq!(token_of(b"Basic dXNlcjpwYXNz"), missing);
        assert_eq!(token_of(b"Bearer"), invalid);
        assert_eq!(token_of(b"Bearer "), invalid);
        assert_eq!(token_of(b"Bearer a b"), invalid);
        assert_eq!(token_of(b"Bearer a=b"), invalid);
        assert_eq!(token_of(b"Bearer \xff"), invalid);
        assert_eq!(
            token_of(format!("Bearer {}", "a".repeat(1025)).as_bytes()),
            invalid
        );
    }
}
