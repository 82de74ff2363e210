//! Snapshot tests of every rendered file, for each plan and for the operator variants.
//!
//! Secrets come from a fixed test source so that snapshots are stable; real renders use the
//! operating system's CSPRNG. Review changes with `cargo insta review`.

use stackbox_core::client::{ClientId, ClientSpec};
use stackbox_core::operator::OperatorConfig;
use stackbox_core::render::{render, Rendered, WritePolicy};
use stackbox_core::secrets::{SecretKey, Secrets, TestRandom};

fn example(plan: &str) -> ClientSpec {
    let text = std::fs::read_to_string(format!(
        "{}/../../examples/{plan}.toml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    ClientSpec::from_toml(&text).unwrap()
}

fn secrets_for(spec: &ClientSpec) -> Secrets {
    let mut secrets = Secrets::new();
    secrets.fill_missing(
        &SecretKey::needed_for(&spec.apps()),
        &mut TestRandom(0x5eed),
    );
    secrets
}

fn render_example(spec: &ClientSpec, operator: &OperatorConfig) -> Rendered {
    let id = ClientId::new(&spec.company_name, 0xe11f059b);
    render(spec, &id, &secrets_for(spec), operator).unwrap()
}

/// One snapshot per rendered file: `<case>__<path>`.
fn check(case: &str, rendered: &Rendered) {
    for (path, file) in &rendered.bundle.files {
        let text = String::from_utf8(file.contents.clone()).unwrap();
        let name = format!(
            "{case}__{}",
            path.trim_start_matches('.').replace('/', "__")
        );
        insta::assert_snapshot!(name, text);
    }
}

#[test]
fn starter_bundle_matches_snapshots() {
    check(
        "starter",
        &render_example(&example("starter"), &OperatorConfig::default()),
    );
}

#[test]
fn professional_bundle_matches_snapshots() {
    check(
        "professional",
        &render_example(&example("professional"), &OperatorConfig::default()),
    );
}

#[test]
fn enterprise_bundle_matches_snapshots() {
    check(
        "enterprise",
        &render_example(&example("enterprise"), &OperatorConfig::default()),
    );
}

#[test]
fn dns_challenge_and_host_ports_variant_matches_snapshots() {
    let operator = OperatorConfig::from_toml(
        "[acme]\nemail = \"ops@host.example\"\nchallenge = \"dns\"\ndns_provider = \"route53\"\n\
         dns_env = [\"AWS_ACCESS_KEY_ID\", \"AWS_SECRET_ACCESS_KEY\"]\n[ingress]\nmode = \"host-ports\"\n",
        "test",
    )
    .unwrap();
    let rendered = render_example(&example("starter"), &operator);
    insta::assert_snapshot!(
        "starter_dns_hostports__docker-compose.yml",
        rendered.bundle.text("docker-compose.yml").unwrap()
    );
    insta::assert_snapshot!(
        "starter_dns_hostports__config__traefik__traefik.yml",
        rendered.bundle.text("config/traefik/traefik.yml").unwrap()
    );
}

#[test]
fn rendering_is_deterministic() {
    for plan in ["starter", "professional", "enterprise"] {
        let spec = example(plan);
        assert_eq!(
            render_example(&spec, &OperatorConfig::default()).bundle,
            render_example(&spec, &OperatorConfig::default()).bundle
        );
    }
}

#[test]
fn only_the_certificate_store_is_create_only_and_secret_files_are_private() {
    let rendered = render_example(&example("enterprise"), &OperatorConfig::default());
    for (path, file) in &rendered.bundle.files {
        assert_eq!(
            file.policy == WritePolicy::CreateOnly,
            path == "ssl/acme.json",
            "{path}"
        );
        if path == ".env" || path == "ssl/acme.json" {
            assert_eq!(file.mode, 0o600, "{path}");
        }
    }
}

#[test]
fn compose_file_holds_no_secret_value() {
    let spec = example("enterprise");
    let secrets = secrets_for(&spec);
    let rendered = render_example(&spec, &OperatorConfig::default());
    let compose = rendered.bundle.text("docker-compose.yml").unwrap();
    for (key, value) in secrets.iter() {
        assert!(
            !compose.contains(value),
            "{} leaked into docker-compose.yml",
            key.env_name()
        );
        assert!(rendered
            .bundle
            .text(".env")
            .unwrap()
            .contains(&format!("{}={value}\n", key.env_name())));
    }
}

#[test]
fn databases_and_caches_are_internal_and_never_published() {
    let rendered = render_example(&example("enterprise"), &OperatorConfig::default());
    let internal: Vec<_> = rendered
        .stack
        .networks
        .iter()
        .filter(|n| n.internal)
        .map(|n| n.key)
        .collect();
    for service in &rendered.stack.services {
        let name = service.kind.name();
        let is_store = [
            "mysql",
            "redis",
            "postgres",
            "plausible-events-db",
            "mailtrain-redis",
            "mailtrain-mongo",
        ]
        .contains(&name);
        if is_store {
            assert!(
                service.networks.iter().all(|n| internal.contains(n)),
                "{name} is on a non-internal network"
            );
        }
        if name != "traefik" {
            assert!(service.ports.is_empty(), "{name} publishes a port");
        }
        assert!(
            !service.healthcheck.test.is_empty() && service.healthcheck.test[0].starts_with("CMD"),
            "{name}"
        );
        assert!(
            service.limits.millicpus > 0 && service.limits.memory_mib > 0,
            "{name}"
        );
    }
}

#[test]
fn every_app_waits_for_its_databases() {
    use stackbox_core::plan::ServiceKind::*;
    let rendered = render_example(&example("enterprise"), &OperatorConfig::default());
    for (app, deps) in [
        (Espocrm, vec![Mysql]),
        (Nextcloud, vec![Mysql, Redis]),
        (Calcom, vec![Postgres]),
        (Plausible, vec![Postgres, PlausibleEventsDb]),
        (Mailtrain, vec![Mysql, MailtrainRedis, MailtrainMongo]),
    ] {
        assert_eq!(
            rendered.stack.service(app).unwrap().depends_on,
            deps,
            "{app}"
        );
    }
}

#[test]
fn routes_exist_only_for_enabled_services() {
    let spec = ClientSpec::from_toml(
        "company_name = \"X\"\ndomain = \"x.example.com\"\nplan = \"professional\"\nadmin_email = \"a@x.example.com\"\n[features]\ncalcom = false\n",
    )
    .unwrap();
    let compose = render_example(&spec, &OperatorConfig::default())
        .bundle
        .text("docker-compose.yml")
        .unwrap()
        .to_string();
    assert!(compose.contains("Host(`analytics.x.example.com`)"));
    assert!(compose.contains("Host(`crm.x.example.com`)"));
    assert!(!compose.contains("booking.x.example.com"));
    assert!(!compose.contains("newsletter.x.example.com"));
    assert!(!compose.contains("\n  calcom:"));
}

#[test]
fn hostile_company_name_is_escaped_for_every_format() {
    let name = "O'Brien & \"Sons\" $HOME ${X} `id` <script>alert(1)</script> \\ 東京";
    let spec = ClientSpec::from_toml(&format!(
        "company_name = {}\ndomain = \"obrien.example.com\"\nplan = \"enterprise\"\nadmin_email = \"a@obrien.example.com\"\n",
        serde_json::to_string(name).unwrap()
    ))
    .unwrap();
    let rendered = render_example(&spec, &OperatorConfig::default());
    let bundle = &rendered.bundle;
    let html = bundle.text("website/index.html").unwrap();
    assert!(!html.contains("<script>alert"), "raw script tag in HTML");
    assert!(html.contains(
        "O&#39;Brien &amp; &quot;Sons&quot; $HOME ${X} `id` &lt;script&gt;alert(1)&lt;/script&gt;"
    ));
    let php = bundle.text("config/espocrm/config.php").unwrap();
    assert!(
        php.contains(r#"'O\'Brien & "Sons" $HOME ${X} `id` <script>alert(1)</script> \\ 東京'"#),
        "{php}"
    );
    let compose = bundle.text("docker-compose.yml").unwrap();
    // Compose would interpolate `$HOME`: it must be written `$$HOME`.
    assert!(compose.contains("$$HOME $${X}"), "{compose}");
    assert!(
        !bundle.text(".env").unwrap().contains("Brien"),
        "free text must stay out of .env"
    );
}

#[test]
fn edge_router_configuration_snapshot() {
    insta::assert_snapshot!(
        "edge__traefik.yml",
        stackbox_core::render::traefik::render_edge()
    );
}
