//! A change that fails after a database server converged on new passwords is rolled back on a
//! real Docker engine with the local test images: the failure is injected (one container
//! creation refused) into the real engine adapter, after MariaDB was replaced and told its
//! rotated root password. The rollback puts the previous containers back and the previous
//! passwords into the server, so the client's apps, which still hold those, keep working.

use std::collections::BTreeSet;
use std::process::Command;

use stackbox_bundle::{BundleStore, RenderOptions};
use stackbox_core::client::{ClientId, ClientSpec};
use stackbox_core::deploy::{desired_state, DesiredNetwork, DesiredVolume, ObservedContainer};
use stackbox_core::operator::OperatorConfig;
use stackbox_core::plan::ServiceKind;
use stackbox_core::secrets::{RandomSource, SecretKey};
use stackbox_core::stack::Healthcheck;
use stackbox_engine::lifecycle::{DeployOptions, Deployment};
use stackbox_engine::{
    ContainerDetails, ContainerRuntime, DockerRuntime, EngineError, ExecOutcome, ExecSink,
    ExecSource, Probe,
};

const EDGE: &str = "stackbox-engine-rollback-test-edge";

/// The real engine, except that creating the container of `refuse` fails.
struct RefusingRuntime {
    inner: DockerRuntime,
    refuse: Option<ServiceKind>,
}

impl ContainerRuntime for RefusingRuntime {
    fn endpoint(&self) -> &str {
        self.inner.endpoint()
    }
    async fn observe(
        &self,
        client: &ClientId,
    ) -> Result<stackbox_core::deploy::Observed, EngineError> {
        self.inner.observe(client).await
    }
    async fn list_client_containers(
        &self,
        client: Option<&ClientId>,
    ) -> Result<Vec<(String, ObservedContainer)>, EngineError> {
        self.inner.list_client_containers(client).await
    }
    async fn ensure_image(&self, image: &str) -> Result<(), EngineError> {
        self.inner.ensure_image(image).await
    }
    async fn create_network(&self, network: &DesiredNetwork) -> Result<(), EngineError> {
        self.inner.create_network(network).await
    }
    async fn remove_network(&self, name: &str) -> Result<(), EngineError> {
        self.inner.remove_network(name).await
    }
    async fn connect_network(
        &self,
        network: &str,
        container: &str,
        aliases: &[String],
    ) -> Result<(), EngineError> {
        self.inner
            .connect_network(network, container, aliases)
            .await
    }
    async fn disconnect_network(&self, network: &str, container: &str) -> Result<(), EngineError> {
        self.inner.disconnect_network(network, container).await
    }
    async fn create_volume(&self, volume: &DesiredVolume) -> Result<(), EngineError> {
        self.inner.create_volume(volume).await
    }
    async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        self.inner.remove_volume(name).await
    }
    async fn create_container(
        &self,
        config: &stackbox_core::deploy::ContainerConfig,
    ) -> Result<String, EngineError> {
        if Some(config.service) == self.refuse {
            return Err(EngineError::Interrupted);
        }
        self.inner.create_container(config).await
    }
    async fn start_container(&self, id: &str) -> Result<(), EngineError> {
        self.inner.start_container(id).await
    }
    async fn stop_container(&self, id: &str) -> Result<(), EngineError> {
        self.inner.stop_container(id).await
    }
    async fn remove_container(&self, id: &str) -> Result<(), EngineError> {
        self.inner.remove_container(id).await
    }
    async fn rename_container(&self, id: &str, name: &str) -> Result<(), EngineError> {
        self.inner.rename_container(id, name).await
    }
    async fn inspect_container(&self, id: &str) -> Result<ContainerDetails, EngineError> {
        self.inner.inspect_container(id).await
    }
    async fn probe(&self, id: &str, check: &Healthcheck) -> Result<Probe, EngineError> {
        self.inner.probe(id, check).await
    }
    async fn logs_tail(&self, id: &str, lines: usize) -> Result<String, EngineError> {
        self.inner.logs_tail(id, lines).await
    }
    fn logs(&self, id: &str, options: stackbox_engine::LogOptions) -> stackbox_engine::LogEntries {
        self.inner.logs(id, options)
    }
    async fn exec_streaming(
        &self,
        id: &str,
        command: &[String],
        input: Option<ExecSource<'_>>,
        output: ExecSink<'_>,
    ) -> Result<ExecOutcome, EngineError> {
        self.inner.exec_streaming(id, command, input, output).await
    }
    async fn exec_as(
        &self,
        id: &str,
        command: &[String],
        options: stackbox_engine::ExecOptions<'_>,
        input: Option<ExecSource<'_>>,
        output: ExecSink<'_>,
    ) -> Result<ExecOutcome, EngineError> {
        self.inner
            .exec_as(id, command, options, input, output)
            .await
    }
    async fn container_env(&self, id: &str, name: &str) -> Result<Option<String>, EngineError> {
        self.inner.container_env(id, name).await
    }
    async fn volume_mountpoint(&self, name: &str) -> Result<Option<String>, EngineError> {
        self.inner.volume_mountpoint(name).await
    }
    async fn container_stats(
        &self,
        id: &str,
        service: &str,
        host_memory: Option<u64>,
    ) -> Result<stackbox_core::usage::ContainerSample, EngineError> {
        self.inner.container_stats(id, service, host_memory).await
    }
}

struct Random;

impl RandomSource for Random {
    fn fill(&mut self, bytes: &mut [u8]) {
        // Distinct values per test run without a CSPRNG dependency here: the clock and a counter.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let mut seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            ^ COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, std::sync::atomic::Ordering::Relaxed);
        for byte in bytes {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *byte = seed as u8;
        }
    }
}

/// The operator settings on the test images' catalog (the engine tier's guard gives it).
fn operator(catalog: &str) -> OperatorConfig {
    let hard_limit = Command::new("sh")
        .args(["-c", "ulimit -Hn"])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(1 << 20);
    let text = format!(
        "[ingress]\nmode = \"edge\"\nedge_router = \"{EDGE}\"\nhttp_port = 18486\nhttps_port = 18849\n\
         [host]\nmax_open_files = {hard_limit}\n"
    );
    let mut operator = OperatorConfig::from_toml_with_env(&text, "test", &|_| None).unwrap();
    let images = std::fs::read_to_string(catalog).unwrap();
    operator.images = operator
        .images
        .with_overrides_toml(&images, catalog)
        .unwrap();
    operator
}

fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker").args(args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .trim()
        .to_string(),
    )
}

fn root_logs_in(id: &ClientId, password: &str) -> bool {
    docker(&[
        "exec",
        &format!("{id}-mysql-1"),
        "sh",
        "-c",
        &format!("MYSQL_PWD='{password}' mariadb -h127.0.0.1 -uroot -e 'SELECT 1'"),
    ])
    .0
}

fn container_id(name: &str) -> String {
    docker(&["inspect", "-f", "{{.Id}} {{.State.Status}}", name]).1
}

struct Cleanup(ClientId);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", EDGE]);
        let filter = format!("label=io.stackbox.client={}", self.0);
        for (list, remove) in [
            (["ps", "-aq"].as_slice(), ["rm", "-f"].as_slice()),
            (&["network", "ls", "-q"], &["network", "rm"]),
            (&["volume", "ls", "-q"], &["volume", "rm"]),
        ] {
            let mut args = list.to_vec();
            args.extend(["--filter", &filter]);
            for object in docker(&args).1.lines() {
                let mut args = remove.to_vec();
                args.push(object);
                let _ = docker(&args);
            }
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_rotation_that_fails_after_mariadb_took_the_new_root_password_gives_it_back_the_old() {
    let Some(images) = stackbox_testkit::engine_images() else {
        return;
    };
    let operator = operator(&images);
    let root = tempfile::tempdir().unwrap();
    let bundles = BundleStore::new(root.path());
    let spec = ClientSpec::from_toml(
        "company_name = \"Rollback Bakery\"\ndomain = \"rollback.example.com\"\nplan = \"starter\"\n\
         admin_email = \"owner@rollback.example.com\"\nbrand_color = \"#335577\"\n",
    )
    .unwrap();
    let first = bundles
        .render_client(&spec, &operator, RenderOptions::default(), &mut Random)
        .unwrap();
    let _cleanup = Cleanup(first.id.clone());
    let engine = DockerRuntime::connect().await.unwrap();
    let edge = bundles.edge_router(&operator).unwrap();
    let desired = |outcome: &stackbox_bundle::RenderOutcome| {
        desired_state(
            &outcome.rendered.stack,
            &outcome.secrets,
            &outcome.rendered.bundle,
            &std::path::absolute(&outcome.path)
                .unwrap()
                .display()
                .to_string(),
            &|_| None,
        )
        .unwrap()
    };
    let first_desired = desired(&first);
    let deploy = Deployment::prepare(
        &engine,
        &first_desired,
        edge.as_ref(),
        DeployOptions::default(),
    )
    .await
    .unwrap();
    deploy.run(&|_| {}).await.unwrap();
    let old_root = first
        .secrets
        .get(SecretKey::MysqlRootPassword)
        .unwrap()
        .to_string();
    assert!(root_logs_in(&first.id, &old_root));
    let mysql_before = container_id(&format!("{}-mysql-1", first.id));
    let nextcloud_before = container_id(&format!("{}-nextcloud-1", first.id));

    // The root and Redis passwords rotate; Nextcloud (which uses Redis's) is recreated after
    // MariaDB and Redis are, and its creation fails.
    let rotated = bundles
        .render_client(
            &spec,
            &operator,
            RenderOptions {
                rotate_only: BTreeSet::from([
                    SecretKey::MysqlRootPassword,
                    SecretKey::RedisPassword,
                ]),
                ..RenderOptions::default()
            },
            &mut Random,
        )
        .unwrap();
    let new_root = rotated
        .secrets
        .get(SecretKey::MysqlRootPassword)
        .unwrap()
        .to_string();
    assert_ne!(new_root, old_root);
    let refusing = RefusingRuntime {
        inner: engine.clone(),
        refuse: Some(ServiceKind::Nextcloud),
    };
    let rotated_desired = desired(&rotated);
    let change = Deployment::prepare(
        &refusing,
        &rotated_desired,
        edge.as_ref(),
        DeployOptions::default(),
    )
    .await
    .unwrap();
    let seen = std::cell::RefCell::new(Vec::new());
    let record = |event: stackbox_engine::lifecycle::Event| seen.borrow_mut().push(event);
    let error = change.run(&record).await.unwrap_err();
    assert!(matches!(error, EngineError::Interrupted), "{error}");
    // MariaDB was replaced and converged on the new root password before Nextcloud's turn.
    let converged = seen.borrow().iter().any(|event| {
        matches!(
            event,
            stackbox_engine::lifecycle::Event::Service { service, phase: stackbox_engine::lifecycle::Phase::Converging, .. }
                if service == "mysql"
        )
    });
    assert!(converged, "mysql did not converge before the failure");
    change.rollback(&|_| {}).await.unwrap();

    // The previous containers are back, running, and MariaDB has the previous root password.
    assert_eq!(container_id(&format!("{}-mysql-1", first.id)), mysql_before);
    assert_eq!(
        container_id(&format!("{}-nextcloud-1", first.id)),
        nextcloud_before
    );
    assert!(mysql_before.ends_with("running"), "{mysql_before}");
    assert!(
        root_logs_in(&first.id, &old_root),
        "the previous root password no longer works"
    );
    assert!(
        !root_logs_in(&first.id, &new_root),
        "the rotated root password still works"
    );
    // And a converge of the previous state is a no-op that succeeds.
    let again = Deployment::prepare(
        &engine,
        &first_desired,
        edge.as_ref(),
        DeployOptions::default(),
    )
    .await
    .unwrap();
    let outcome = again.run(&|_| {}).await.unwrap();
    assert!(outcome.unchanged, "{:?}", outcome.services);
}
