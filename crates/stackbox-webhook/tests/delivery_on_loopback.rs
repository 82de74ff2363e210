//! Deliveries to real HTTP receivers on loopback (axum), which verify the signature with
//! [`stackbox_webhook::verify`] and record what they got.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use stackbox_webhook::{
    verify, WebhookClient, WebhookError, WebhookOptions, DEFAULT_TOLERANCE, SIGNATURE_HEADER,
};

const SECRET: &[u8] = b"whsec_loopback_test_secret_0123456789";
const BODY: &[u8] = br#"{"alert":"memory_near_limit","client":"acme","percent":93}"#;
const NOW: i64 = 1_780_000_000;

#[derive(Debug, Clone)]
struct Recorded {
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

type Log = Arc<Mutex<Vec<Recorded>>>;

async fn handle(State(log): State<Log>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Err(e) = verify(signature, &body, SECRET, NOW, DEFAULT_TOLERANCE) {
        return (StatusCode::UNAUTHORIZED, e.to_string()).into_response();
    }
    log.lock().unwrap().push(Recorded {
        path: uri.path().to_owned(),
        headers: headers.clone(),
        body: body.to_vec(),
    });
    match uri.path() {
        "/ok" => (StatusCode::OK, "thanks").into_response(),
        "/fail500" => (StatusCode::INTERNAL_SERVER_ERROR, "database down").into_response(),
        // A careless receiver that echoes the secret and a long body.
        "/bad400" => (
            StatusCode::BAD_REQUEST,
            format!(
                "unknown alert; secret={} {}",
                String::from_utf8_lossy(SECRET),
                "y".repeat(1000)
            ),
        )
            .into_response(),
        "/busy429" => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "30")],
            "",
        )
            .into_response(),
        "/redirect" => (StatusCode::FOUND, [(header::LOCATION, "/ok")], "").into_response(),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            (StatusCode::OK, "late").into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn receiver() -> (String, Log) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind loopback");
    let addr: SocketAddr = listener.local_addr().expect("local addr");
    let log = Log::default();
    let app = Router::new().fallback(handle).with_state(log.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), log)
}

fn client() -> WebhookClient {
    WebhookClient::new(WebhookOptions {
        connect_timeout: Duration::from_secs(1),
        total_timeout: Duration::from_secs(1),
    })
    .expect("client")
}

fn paths(log: &Log) -> Vec<String> {
    log.lock().unwrap().iter().map(|r| r.path.clone()).collect()
}

fn assert_no_secret(error: &WebhookError) {
    let secret = String::from_utf8_lossy(SECRET);
    assert!(!error.to_string().contains(&*secret), "{error}");
    assert!(!format!("{error:?}").contains(&*secret), "{error:?}");
}

#[tokio::test]
async fn a_2xx_delivery_arrives_once_signed_with_the_right_headers_and_body() {
    let (base, log) = receiver().await;
    let delivered = client()
        .deliver(&format!("{base}/ok"), SECRET, "alert_01J9Z", BODY, NOW)
        .await
        .expect("delivered");
    assert_eq!(delivered.status, 200);
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 1, "{log:?}");
    let got = &log[0];
    assert_eq!(got.path, "/ok");
    assert_eq!(got.body, BODY);
    let header = |name: &str| got.headers.get(name).and_then(|v| v.to_str().ok());
    assert_eq!(header("content-type"), Some("application/json"));
    assert_eq!(header("stackbox-delivery"), Some("alert_01J9Z"));
    assert_eq!(
        header("user-agent"),
        Some(concat!("stackbox-webhook/", env!("CARGO_PKG_VERSION")))
    );
    let signature = header("stackbox-signature").expect("signature header");
    assert!(
        signature.starts_with(&format!("t={NOW},v1=")),
        "{signature}"
    );
}

#[tokio::test]
async fn a_500_is_retryable_with_its_status_and_body_excerpt() {
    let (base, log) = receiver().await;
    let error = client()
        .deliver(&format!("{base}/fail500"), SECRET, "d1", BODY, NOW)
        .await
        .expect_err("500");
    match &error {
        WebhookError::Retryable {
            status: Some(500),
            problem,
        } => assert!(problem.contains("database down"), "{problem}"),
        other => panic!("{other:?}"),
    }
    assert!(error.is_retryable());
    assert_eq!(paths(&log), ["/fail500"]);
}

#[tokio::test]
async fn a_429_is_retryable_and_names_retry_after() {
    let (base, _log) = receiver().await;
    let error = client()
        .deliver(&format!("{base}/busy429"), SECRET, "d1", BODY, NOW)
        .await
        .expect_err("429");
    match &error {
        WebhookError::Retryable {
            status: Some(429),
            problem,
        } => assert!(problem.contains("Retry-After: 30"), "{problem}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_400_is_rejected_with_a_short_excerpt_and_no_secret() {
    let (base, _log) = receiver().await;
    let error = client()
        .deliver(&format!("{base}/bad400"), SECRET, "d1", BODY, NOW)
        .await
        .expect_err("400");
    match &error {
        WebhookError::Rejected {
            status: 400,
            problem,
        } => {
            assert!(problem.contains("unknown alert"), "{problem}");
            assert!(problem.contains("[redacted]"), "{problem}");
            assert!(problem.len() < 300, "{problem}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!error.is_retryable());
    assert_no_secret(&error);
}

#[tokio::test]
async fn a_302_is_rejected_naming_the_location_and_not_followed() {
    let (base, log) = receiver().await;
    let error = client()
        .deliver(&format!("{base}/redirect"), SECRET, "d1", BODY, NOW)
        .await
        .expect_err("302");
    match &error {
        WebhookError::Rejected {
            status: 302,
            problem,
        } => assert!(problem.contains("\"/ok\""), "{problem}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(paths(&log), ["/redirect"], "the redirect was followed");
}

#[tokio::test]
async fn a_closed_port_is_retryable_without_a_status() {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let error = client()
        .deliver(&format!("http://{addr}/ok"), SECRET, "d1", BODY, NOW)
        .await
        .expect_err("closed port");
    match &error {
        WebhookError::Retryable {
            status: None,
            problem,
        } => assert!(problem.contains("could not connect"), "{problem}"),
        other => panic!("{other:?}"),
    }
    assert_no_secret(&error);
}

#[tokio::test]
async fn a_receiver_slower_than_the_total_timeout_is_retryable() {
    let (base, log) = receiver().await;
    let started = std::time::Instant::now();
    let error = client()
        .deliver(&format!("{base}/slow"), SECRET, "d1", BODY, NOW)
        .await
        .expect_err("timeout");
    assert!(started.elapsed() < Duration::from_millis(2500));
    match &error {
        WebhookError::Retryable {
            status: None,
            problem,
        } => assert!(problem.contains("total timeout"), "{problem}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(paths(&log), ["/slow"]);
}

#[tokio::test]
async fn invalid_arguments_are_refused_before_sending() {
    let (base, log) = receiver().await;
    let c = client();
    let field = |r: Result<_, WebhookError>| match r {
        Err(WebhookError::InvalidConfig { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        field(
            c.deliver("ftp://example.com/", SECRET, "d1", BODY, NOW)
                .await
        ),
        "webhook_url"
    );
    assert_eq!(
        field(c.deliver(&format!("{base}/ok"), b"", "d1", BODY, NOW).await),
        "secret"
    );
    assert_eq!(
        field(
            c.deliver(&format!("{base}/ok"), SECRET, "has space", BODY, NOW)
                .await
        ),
        "delivery_id"
    );
    assert!(paths(&log).is_empty());
}
