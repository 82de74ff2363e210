//! The prober against a real TLS server (`openssl s_server -www`) on loopback with a
//! certificate made by `openssl` for this test, signed by a test CA: hostnames the
//! certificate names are up with its real expiry; a hostname it does not name, an untrusted
//! issuer and a closed port are failures that say why. Skips with one line without openssl.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use stackbox_probe::{ProbeError, ProbeOptions, Prober};

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A test CA and a leaf for shop.example and www.shop.example valid for 10 days.
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=StackBox probe test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=shop.example",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
        ],
    );
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=DNS:shop.example,DNS:www.shop.example\n\
         basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "10",
            "-extfile",
            "leaf.ext",
            "-out",
            "leaf.pem",
        ],
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tls_server(dir: &Path, port: u16) -> Server {
    let child = Command::new("openssl")
        .current_dir(dir)
        .args(["s_server", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-cert", "leaf.pem", "-key", "leaf.key", "-www", "-quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "openssl s_server did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server(child)
}

fn options(port: u16, roots: Option<Vec<u8>>) -> ProbeOptions {
    ProbeOptions {
        via: format!("127.0.0.1:{port}"),
        timeout: Duration::from_secs(5),
        extra_roots_pem: roots,
        concurrency: 2,
    }
}

#[tokio::test]
async fn hostnames_the_certificate_names_are_up_with_its_expiry_and_others_fail_saying_why() {
    if Command::new("openssl").arg("version").output().is_err() {
        println!("skipped: openssl is not installed (scripts/install-test-deps.sh)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let port = free_port();
    let _server = tls_server(dir.path(), port);
    let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();

    let prober = Prober::new(options(port, Some(ca))).await.unwrap();
    let hostnames: Vec<String> = ["shop.example", "www.shop.example", "other.example"]
        .map(String::from)
        .to_vec();
    let results = prober.probe_all(&hostnames).await.unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for result in &results[..2] {
        assert!(result.is_up(), "{result:?}");
        assert_eq!(result.status, Some(200), "{result:?}");
        let expires = result
            .certificate_expires_at
            .expect("the certificate's expiry");
        let days = stackbox_core::probes::days_left(expires, now);
        assert!((9..=10).contains(&days), "{days} days left: {result:?}");
    }
    assert_eq!(results[0].hostname, "shop.example");
    let wrong_name = &results[2];
    assert_eq!(wrong_name.hostname, "other.example");
    let problem = wrong_name.problem.as_deref().unwrap();
    assert!(problem.contains("certificate"), "{problem}");
    assert_eq!(wrong_name.status, None);

    // Without the operator's extra root, the test CA is not trusted.
    let untrusting = Prober::new(options(port, None)).await.unwrap();
    let results = untrusting
        .probe_all(&["shop.example".to_string()])
        .await
        .unwrap();
    let problem = results[0].problem.as_deref().unwrap();
    assert!(problem.to_lowercase().contains("issuer"), "{problem}");

    // Nobody listening: refused, quickly.
    let closed = Prober::new(options(free_port(), None)).await.unwrap();
    let results = closed
        .probe_all(&["shop.example".to_string()])
        .await
        .unwrap();
    let problem = results[0].problem.as_deref().unwrap();
    assert!(problem.to_lowercase().contains("refused"), "{problem}");
}

#[tokio::test]
async fn a_roots_file_without_certificates_and_an_unresolvable_edge_are_refused_naming_the_field() {
    let error = Prober::new(options(443, Some(b"not a certificate".to_vec())))
        .await
        .err()
        .expect("refused");
    assert!(matches!(error, ProbeError::Roots { .. }), "{error}");
    assert!(error.to_string().contains("probes.ca_file"), "{error}");
    let mut bad = options(443, None);
    bad.via = "no-such-host.invalid:443".into();
    let error = Prober::new(bad).await.err().expect("refused");
    assert!(error.to_string().contains("probes.via"), "{error}");
}
