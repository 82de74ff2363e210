//! Snapshot tests of every rendered file, for each plan and for the operator variants.
//!
//! Secrets come from a fixed test source so that snapshots are stable; real renders use the
//! operating system's CSPRNG. Review changes with `cargo insta review`.

use stackbox_core::client::{ClientId, ClientSpec};
use stackbox_core::operator::OperatorConfig;
use stackbox_core::plan::{App, ServiceKind};
use stackbox_core::render::{render, render_placed, Rendered, WritePolicy};
use stackbox_core::secrets::{SecretKey, Secrets, TestRandom};
use stackbox_core::stack::{EnvValue, MysqlPlacement, Placement};

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

const RDS_HOST: &str = "stackbox-shared.c9akciq32xyz.eu-west-1.rds.amazonaws.com";

/// The AWS placement: MySQL on a shared RDS instance with the adapter's per-client names,
/// secrets in the secret store only.
fn rds_placement() -> Placement {
    Placement {
        mysql: MysqlPlacement::external(
            RDS_HOST,
            3306,
            [
                (App::Espocrm, "smithrealesta_e11f059b_espocrm"),
                (App::Nextcloud, "smithrealesta_e11f059b_nextcloud"),
                (App::Mailtrain, "smithrealesta_e11f059b_mailtrain"),
            ],
        )
        .unwrap(),
        secrets_in_files: false,
    }
}

fn render_example_placed(spec: &ClientSpec, placement: &Placement) -> Rendered {
    let id = ClientId::new(&spec.company_name, 0xe11f059b);
    render_placed(
        spec,
        &id,
        &secrets_for(spec),
        &OperatorConfig::default(),
        placement,
    )
    .unwrap()
}

/// Every bundle file (by path) that contains one of the secret values, with the secret's name.
fn files_holding_secrets(rendered: &Rendered, secrets: &Secrets) -> Vec<(String, &'static str)> {
    let mut found = Vec::new();
    for (path, file) in &rendered.bundle.files {
        let text = String::from_utf8_lossy(&file.contents);
        for (key, value) in secrets.iter() {
            if text.contains(value) {
                found.push((path.clone(), key.env_name()));
            }
        }
    }
    found
}

#[test]
fn professional_bundle_on_rds_without_secret_files_matches_snapshots() {
    let rendered = render_example_placed(&example("professional"), &rds_placement());
    // Only the compose file and .env differ from the local professional bundle; the others
    // are covered by its snapshots and compared here byte for byte.
    let local = render_example(&example("professional"), &OperatorConfig::default());
    let mut expected: Vec<&String> = local
        .bundle
        .files
        .keys()
        .filter(|path| !path.starts_with("config/mysql/"))
        .collect();
    expected.sort();
    let paths: Vec<&String> = rendered.bundle.files.keys().collect();
    assert_eq!(paths, expected);
    for path in paths {
        if path != "docker-compose.yml" && path != ".env" {
            assert_eq!(
                rendered.bundle.files[path], local.bundle.files[path],
                "{path}"
            );
        }
    }
    insta::assert_snapshot!(
        "professional_rds__docker-compose.yml",
        rendered.bundle.text("docker-compose.yml").unwrap()
    );
    insta::assert_snapshot!(
        "professional_rds__env",
        rendered.bundle.text(".env").unwrap()
    );
}

#[test]
fn external_mysql_leaves_out_the_mysql_service_volume_and_files() {
    for plan in ["starter", "professional", "enterprise"] {
        let rendered = render_example_placed(&example(plan), &rds_placement());
        let stack = &rendered.stack;
        assert!(stack.service(ServiceKind::Mysql).is_none(), "{plan}");
        assert!(
            stack.volumes.iter().all(|v| !v.key.contains("mysql")),
            "{plan}"
        );
        assert!(
            rendered
                .bundle
                .files
                .keys()
                .all(|p| !p.starts_with("config/mysql/")),
            "{plan}"
        );
        for service in &stack.services {
            assert!(
                !service.depends_on.contains(&ServiceKind::Mysql),
                "{plan}: {} waits for a mysql that is not there",
                service.kind.name()
            );
        }
        let compose = rendered.bundle.text("docker-compose.yml").unwrap();
        assert!(!compose.contains("\n  mysql:"), "{plan}");
        assert!(!compose.contains("mysql-data"), "{plan}");
        // The internal data network stays for Redis, PostgreSQL and the rest.
        let data = stack.networks.iter().find(|n| n.key == "data").unwrap();
        assert!(data.internal);
        assert!(stack
            .service(ServiceKind::Redis)
            .unwrap()
            .networks
            .contains(&"data"));
        let names = stackbox_core::stack::service_names_placed(&example(plan), &rds_placement());
        let built: Vec<String> = stack
            .services
            .iter()
            .map(|s| s.kind.name().to_string())
            .collect();
        assert_eq!(names, built, "{plan}");
        assert!(!names.contains(&"mysql".to_string()));
    }
    // The local default still lists it.
    assert!(stackbox_core::stack::service_names(&example("starter")).contains(&"mysql".to_string()));
}

#[test]
fn apps_connect_to_the_external_server_with_their_own_database_and_user() {
    let rendered = render_example_placed(&example("enterprise"), &rds_placement());
    let env = |kind: ServiceKind, name: &str| {
        rendered.stack.service(kind).unwrap().environment[name].clone()
    };
    let text = EnvValue::text;
    assert_eq!(
        env(ServiceKind::Espocrm, "ESPOCRM_DATABASE_HOST"),
        text(RDS_HOST)
    );
    assert_eq!(
        env(ServiceKind::Espocrm, "ESPOCRM_DATABASE_PORT"),
        text("3306")
    );
    assert_eq!(
        env(ServiceKind::Espocrm, "ESPOCRM_DATABASE_NAME"),
        text("smithrealesta_e11f059b_espocrm")
    );
    assert_eq!(
        env(ServiceKind::Espocrm, "ESPOCRM_DATABASE_USER"),
        text("smithrealesta_e11f059b_espocrm")
    );
    assert_eq!(
        env(ServiceKind::Espocrm, "ESPOCRM_DATABASE_PASSWORD"),
        EnvValue::secret(SecretKey::EspocrmDbPassword)
    );
    assert_eq!(env(ServiceKind::Nextcloud, "MYSQL_HOST"), text(RDS_HOST));
    assert_eq!(
        env(ServiceKind::Nextcloud, "MYSQL_DATABASE"),
        text("smithrealesta_e11f059b_nextcloud")
    );
    assert_eq!(
        env(ServiceKind::Nextcloud, "MYSQL_USER"),
        text("smithrealesta_e11f059b_nextcloud")
    );
    assert_eq!(env(ServiceKind::Mailtrain, "MYSQL_HOST"), text(RDS_HOST));
    assert_eq!(env(ServiceKind::Mailtrain, "MYSQL_PORT"), text("3306"));
    assert_eq!(
        env(ServiceKind::Mailtrain, "MYSQL_USER"),
        text("smithrealesta_e11f059b_mailtrain")
    );
    // The containers that reach the database but had only the internal network get a route.
    for kind in [ServiceKind::EspocrmDaemon, ServiceKind::NextcloudCron] {
        assert_eq!(
            rendered.stack.service(kind).unwrap().networks,
            ["web", "data"]
        );
    }
    // No MySQL root password is needed: the adapter owns the server.
    let mut secrets = secrets_for(&example("enterprise"));
    let mut without_root = Secrets::new();
    for (key, value) in secrets.iter() {
        if key != SecretKey::MysqlRootPassword {
            without_root.insert(key, value.to_string());
        }
    }
    let id = ClientId::new(&example("enterprise").company_name, 0xe11f059b);
    render_placed(
        &example("enterprise"),
        &id,
        &without_root,
        &OperatorConfig::default(),
        &rds_placement(),
    )
    .unwrap();
    // But every secret a container uses is still required.
    secrets = without_root;
    let mut missing = Secrets::new();
    for (key, value) in secrets.iter() {
        if key != SecretKey::EspocrmDbPassword {
            missing.insert(key, value.to_string());
        }
    }
    let error = render_placed(
        &example("enterprise"),
        &id,
        &missing,
        &OperatorConfig::default(),
        &rds_placement(),
    )
    .unwrap_err();
    assert!(error.to_string().contains("ESPOCRM_DB_PASSWORD"), "{error}");
}

#[test]
fn without_secret_files_no_bundle_file_holds_a_secret_value() {
    for plan in ["starter", "professional", "enterprise"] {
        let spec = example(plan);
        let secrets = secrets_for(&spec);
        for mysql in [MysqlPlacement::Local, rds_placement().mysql] {
            let placement = Placement {
                mysql,
                secrets_in_files: false,
            };
            let rendered = render_example_placed(&spec, &placement);
            assert_eq!(files_holding_secrets(&rendered, &secrets), vec![], "{plan}");
            // .env says where the secrets are and which ones compose needs, without values.
            let env = rendered.bundle.text(".env").unwrap();
            let id = ClientId::new(&spec.company_name, 0xe11f059b);
            assert!(
                env.contains(&format!("AWS Secrets Manager, secret stackbox/{id}")),
                "{env}"
            );
            for key in rendered.stack.secrets() {
                assert!(env.contains(&format!("#   {}\n", key.env_name())), "{env}");
                assert!(!env.contains(&format!("\n{}=", key.env_name())), "{env}");
            }
            assert!(stackbox_core::render::env::parse_secrets(env)
                .unwrap()
                .iter()
                .next()
                .is_none());
        }
    }
}

#[test]
fn with_secret_files_only_env_holds_secret_values() {
    // The database init scripts read the app passwords from the container's environment:
    // .env is the one file with secrets, and it holds every one.
    for plan in ["starter", "professional", "enterprise"] {
        let spec = example(plan);
        let secrets = secrets_for(&spec);
        let rendered = render_example(&spec, &OperatorConfig::default());
        let holding = files_holding_secrets(&rendered, &secrets);
        assert!(
            holding.iter().all(|(path, _)| path == ".env"),
            "{plan}: {holding:?}"
        );
        assert_eq!(holding.len(), secrets.iter().count(), "{plan}");
        let env = rendered.bundle.text(".env").unwrap();
        for (key, value) in secrets.iter() {
            assert!(env.contains(&format!("{}={value}\n", key.env_name())));
        }
        // Explicitly the default placement: the same bundle.
        assert_eq!(
            render_example_placed(&spec, &Placement::default()).bundle,
            rendered.bundle
        );
    }
}

#[test]
fn database_init_scripts_are_shell_files_the_entrypoints_source() {
    let rendered = render_example(&example("enterprise"), &OperatorConfig::default());
    for (path, target) in [
        ("config/mysql/init.sh", "mysql"),
        ("config/postgres/init.sh", "postgres"),
    ] {
        let file = &rendered.bundle.files[path];
        // Not executable: the entrypoints source it, which defines docker_process_sql.
        assert_eq!(file.mode & 0o111, 0, "{path}");
        let kind = ServiceKind::from_name(target).unwrap();
        let service = rendered.stack.service(kind).unwrap();
        assert!(service.mounts.iter().any(|m| matches!(
            m,
            stackbox_core::stack::Mount::BundleFile { source, target, read_only: true }
                if *source == path && target.starts_with("/docker-entrypoint-initdb.d/") && target.ends_with(".sh")
        )));
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
