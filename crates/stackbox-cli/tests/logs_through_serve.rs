//! A client's container logs through `stackbox serve` on a real engine: the website's lines
//! come back, an unknown service is 422 naming `service`, another client's token gets 404,
//! `follow=true` streams events until the test closes it, and `stackbox logs --server`
//! prints the last lines.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::server::{client_body, finished, poll, Server};

const EDGE: &str = "stackbox-logs-serve-test-edge";

#[test]
fn logs_through_the_api_and_the_cli() {
    let Some(images) = stackbox_testkit::engine_images() else {
        return;
    };
    let mut server = Server::new(&images, EDGE, 28196, 28559);
    server.start();
    let operator = server.token(&["--operator"]);
    let (status, created) = server.http(
        "POST",
        "/v1/clients",
        &operator,
        Some(&client_body("Serve Logs Shop", "serve-logs.example")),
    );
    assert_eq!(status, 202, "{created}");
    let id = created["client_id"].as_str().unwrap().to_string();
    server.made.borrow_mut().push(id.clone());
    let view = poll(
        &server,
        &operator,
        created["deployment_id"].as_str().unwrap(),
        Duration::from_secs(300),
        finished,
    );
    assert_eq!(view["status"], "succeeded", "{view}");

    // The website's lines (its health checks write to its log; wait for some).
    let path = format!("/v1/clients/{id}/logs?service=website");
    let deadline = Instant::now() + Duration::from_secs(60);
    let lines = loop {
        let (status, body) = server.http("GET", &path, &operator, None);
        assert_eq!(status, 200, "{body}");
        let lines = body["lines"].as_array().cloned().unwrap_or_default();
        if !lines.is_empty() || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(!lines.is_empty(), "the website logged nothing");
    for line in &lines {
        assert_eq!(line["service"], "website", "{line}");
        assert!(["stdout", "stderr"].contains(&line["stream"].as_str().unwrap()));
        assert!(line["time"].as_str().unwrap().starts_with("20"), "{line}");
    }
    // The whole client, bounded by tail.
    let (status, body) = server.http(
        "GET",
        &format!("/v1/clients/{id}/logs?tail=3&since=1h"),
        &operator,
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body["lines"].as_array().unwrap().len() <= 3, "{body}");

    // Refusals.
    let (status, error) = server.http(
        "GET",
        &format!("/v1/clients/{id}/logs?service=nope"),
        &operator,
        None,
    );
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"]["field"], "service", "{error}");
    let (status, error) = server.http(
        "GET",
        &format!("/v1/clients/{id}/logs?since=soon"),
        &operator,
        None,
    );
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"]["field"], "since", "{error}");
    let own = server.token(&["--client", &id]);
    let (status, _) = server.http("GET", &path, &own, None);
    assert_eq!(status, 200);
    let (status, second) = server.http(
        "POST",
        "/v1/clients",
        &operator,
        Some(&client_body("Other Logs Shop", "other-logs.example")),
    );
    assert_eq!(status, 202, "{second}");
    let second_id = second["client_id"].as_str().unwrap().to_string();
    server.made.borrow_mut().push(second_id.clone());
    let other = server.token(&["--client", &second_id]);
    let (status, error) = server.http("GET", &path, &other, None);
    assert_eq!(status, 404, "{error}");

    // Followed: at least one event, then the test hangs up.
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path}&follow=true&tail=5 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {operator}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&received).contains("data:") && Instant::now() < deadline {
        let n = stream.read(&mut buffer).unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&buffer[..n]);
    }
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("text/event-stream"), "{text}");
    assert!(text.contains("\"service\":\"website\""), "{text}");
    drop(stream);

    // The CLI through --server.
    let output = server
        .command()
        .args([
            "--server",
            &format!("http://127.0.0.1:{}", server.port),
            "--token",
            &operator,
            "logs",
            &id,
            "website",
            "--tail",
            "5",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Vec<&str> = stdout.lines().collect();
    assert!(!printed.is_empty() && printed.len() <= 5, "{stdout}");
    assert!(printed.iter().all(|l| l.starts_with("website")), "{stdout}");
    // The server still answers after the followed stream was dropped.
    let (status, _) = server.http("GET", &path, &operator, None);
    assert_eq!(status, 200);
    let view = poll(
        &server,
        &operator,
        second["deployment_id"].as_str().unwrap(),
        Duration::from_secs(300),
        finished,
    );
    assert_eq!(view["status"], "succeeded", "{view}");
}
