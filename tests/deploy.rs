//! Everything under `deploy/`, checked by real validators that `tests/setup/deploy-tools.sh`
//! installs (tests/run.sh runs it), and against tallyd itself:
//!
//! - Kubernetes manifests, as files and as `kubectl kustomize` renders them:
//!   `kubernetes-validate --strict` (the Kubernetes OpenAPI schemas it bundles) for built-in
//!   kinds, `check-jsonschema` with `deploy/schemas/podmonitor-v1.json` for the PodMonitor.
//! - `deploy/kubernetes/mapping.yml`: compiled by tallyd's own mapping loader.
//! - The Deployment's tallyd arguments: parsed as tallyd parses them, then run with the real
//!   binary, which must shut down after the grace period with exit code 0; the shutdown
//!   timings, ports, probes, labels and security settings must agree across the manifests.
//! - `deploy/prometheus/scrape-config.yml`: `promtool check config` (Debian's promtool has no
//!   Kubernetes discovery, so the test swaps it for a static target; tests/prometheus.rs runs
//!   the relabelling against a real Prometheus).
//! - `deploy/Dockerfile`: parsed by BuildKit's parser (PyPI `dockerfile`), its build context
//!   resolved by `cargo metadata --locked`, its CMD parsed as tallyd parses flags.
//! - `deploy/tallyd.service`: `systemd-analyze verify` and `systemd-analyze security`;
//!   `deploy/tallyd.socket`: `systemd-analyze verify`, and socket activation by
//!   `systemd-socket-activate` with `--web.systemd-socket`.
//!
//! A validator that is missing fails the test with "run `bash tests/run.sh`"; a validator that
//! rejects a file fails it with the validator's own output.

mod common;

use clap::Parser;
use common::{swap_kubernetes_sd, Tallyd};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tallyd::config::{Cli, LogFormat, Settings};

const INSTALL_HINT: &str =
    "run `bash tests/run.sh` (it runs tests/setup/deploy-tools.sh, which installs it)";

/// Kubernetes versions the manifests must be valid for: the oldest where the preStop `sleep`
/// action is on by default, and the newest kubernetes-validate knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

/// The longest tallyd's shutdown takes besides the grace period: 3 s each (STEP_TIMEOUT in
/// src/daemon.rs) to stop the listeners, drain the family actors and stop the aggregator, and
/// 5 s for HTTP requests in flight (src/http.rs).
const SHUTDOWN_STEPS_WORST: Duration = Duration::from_secs(14);

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// A fresh directory under Cargo's temporary directory for integration tests, one per test
/// (`what`), emptied at each run rather than piling up.
fn scratch_dir(what: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("deploy-{what}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A tool of the venv that tests/setup/deploy-tools.sh creates.
fn venv_tool(name: &str) -> PathBuf {
    let path = repo("target/test-env/deploy-venv/bin").join(name);
    assert!(
        path.is_file(),
        "{name} is not installed at {}: {INSTALL_HINT}",
        path.display()
    );
    path
}

/// A tool on PATH.
fn path_tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{name} is not on PATH: {INSTALL_HINT}"))
}

/// Runs `command`; its exit status and its stdout and stderr together.
fn run(command: &mut Command) -> (bool, String) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Runs `command` and returns its output; fails with that output unless it succeeds.
fn run_ok(command: &mut Command) -> String {
    let shown = format!("{command:?}");
    let (ok, text) = run(command);
    assert!(ok, "{shown} failed:\n{text}");
    text
}

// ---------------------------------------------------------------------------------------------
// Manifests: files and kustomize output, split into documents.

#[derive(Debug, Deserialize)]
struct Head {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    kind: Option<String>,
}

/// One YAML document of a manifest file or of the kustomize output.
struct Doc {
    origin: String,
    text: String,
    api_version: String,
    kind: String,
}

/// The documents of a multi-document YAML stream that have an `apiVersion` and a `kind`.
fn documents(origin: &str, text: &str) -> Vec<Doc> {
    let mut docs = Vec::new();
    let mut current = String::new();
    for line in text.lines().chain(std::iter::once("---")) {
        if line.trim_end() == "---" {
            let head: Head = serde_saphyr::from_str(&current)
                .unwrap_or_else(|e| panic!("{origin} is not valid YAML: {e}"));
            if let (Some(api_version), Some(kind)) = (head.api_version, head.kind) {
                docs.push(Doc {
                    origin: format!("{origin}#{}", docs.len()),
                    text: std::mem::take(&mut current),
                    api_version,
                    kind,
                });
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs
}

/// `deploy/kubernetes/*.yaml|*.yml`: path relative to the repository, and text.
fn kubernetes_files() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(repo("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .map(|p| {
            let rel = format!(
                "deploy/kubernetes/{}",
                p.file_name().unwrap().to_string_lossy()
            );
            let text = read(&rel);
            (rel, text)
        })
        .collect();
    files.sort();
    files
}

/// `kubectl kustomize deploy/kubernetes`.
fn kustomize() -> String {
    run_ok(
        Command::new(path_tool("kubectl"))
            .arg("kustomize")
            .arg(repo("deploy/kubernetes")),
    )
}

/// Every resource document: from each manifest file (except the Kustomization itself), then
/// from the kustomize output.
fn all_documents() -> Vec<Doc> {
    let mut docs = Vec::new();
    for (path, text) in kubernetes_files() {
        docs.extend(
            documents(&path, &text)
                .into_iter()
                .filter(|d| d.kind != "Kustomization"),
        );
    }
    docs.extend(documents(
        "kubectl kustomize deploy/kubernetes",
        &kustomize(),
    ));
    docs
}

fn is_prometheus_operator(doc: &Doc) -> bool {
    doc.api_version.starts_with("monitoring.coreos.com/")
}

/// Writes each document to its own file in `dir`.
fn write_docs<'a>(dir: &Path, docs: impl IntoIterator<Item = &'a Doc>) -> Vec<PathBuf> {
    docs.into_iter()
        .enumerate()
        .map(|(i, doc)| {
            let path = dir.join(format!("{i:02}-{}.yaml", doc.kind.to_lowercase()));
            std::fs::write(&path, format!("# {}\n{}", doc.origin, doc.text)).unwrap();
            path
        })
        .collect()
}

/// `kubernetes-validate --strict` for each Kubernetes version: Ok, or its output.
fn kubernetes_validate(files: &[PathBuf]) -> Result<(), String> {
    let tool = venv_tool("kubernetes-validate");
    for version in KUBERNETES_VERSIONS {
        let (ok, text) = run(Command::new(&tool)
            .args(["--strict", "--kubernetes-version", version])
            .args(files));
        let passed = text.matches(" passed for resource ").count();
        if !ok || text.contains("WARN") || text.contains("ERROR") || passed != files.len() {
            return Err(format!(
                "kubernetes-validate against Kubernetes {version} ({passed} of {} passed):\n{text}",
                files.len()
            ));
        }
    }
    Ok(())
}

const PODMONITOR_SCHEMA: &str = "deploy/schemas/podmonitor-v1.json";

/// `check-jsonschema` against the PodMonitor schema: Ok, or its output.
fn check_podmonitor(files: &[PathBuf]) -> Result<(), String> {
    let (ok, text) = run(Command::new(venv_tool("check-jsonschema"))
        .arg("--schemafile")
        .arg(repo(PODMONITOR_SCHEMA))
        .args(files));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "check-jsonschema --schemafile {PODMONITOR_SCHEMA}:\n{text}"
        ))
    }
}

#[test]
fn kubernetes_manifests_pass_kubernetes_validate() {
    let docs = all_documents();
    let core: Vec<&Doc> = docs.iter().filter(|d| !is_prometheus_operator(d)).collect();
    for doc in &core {
        assert!(
            !doc.api_version.contains('.') || doc.api_version.contains(".k8s.io/"),
            "{}: no validator here for {} {}",
            doc.origin,
            doc.api_version,
            doc.kind
        );
    }
    let kinds: BTreeSet<&str> = core.iter().map(|d| d.kind.as_str()).collect();
    assert!(
        kinds.is_superset(&BTreeSet::from(["ConfigMap", "Deployment"])),
        "{kinds:?}"
    );
    let dir = scratch_dir("kubernetes-validate");
    if let Err(output) = kubernetes_validate(&write_docs(&dir, core)) {
        panic!("{output}");
    }

    // The validator is live and strict: a misspelt field fails.
    let bad = read("deploy/kubernetes/deployment.yaml").replacen(
        "readOnlyRootFilesystem",
        "readOnlyRootFileSystem",
        1,
    );
    let bad_file = dir.join("misspelt.yaml");
    std::fs::write(&bad_file, bad).unwrap();
    let output = kubernetes_validate(&[bad_file]).expect_err("a misspelt field must fail");
    assert!(output.contains("readOnlyRootFileSystem"), "{output}");
}

#[test]
fn the_podmonitor_passes_its_crd_schema() {
    run_ok(
        Command::new(venv_tool("check-jsonschema"))
            .arg("--check-metaschema")
            .arg(repo(PODMONITOR_SCHEMA)),
    );
    let docs = all_documents();
    let monitors: Vec<&Doc> = docs.iter().filter(|d| is_prometheus_operator(d)).collect();
    for doc in &monitors {
        assert_eq!(
            (doc.api_version.as_str(), doc.kind.as_str()),
            ("monitoring.coreos.com/v1", "PodMonitor"),
            "{}: no schema here for it",
            doc.origin
        );
    }
    // Once as a file, once as rendered by kustomize.
    assert_eq!(monitors.len(), 2);
    let dir = scratch_dir("podmonitor");
    if let Err(output) = check_podmonitor(&write_docs(&dir, monitors)) {
        panic!("{output}");
    }

    // The schema is live and strict: a misspelt field fails.
    let bad = read("deploy/kubernetes/podmonitor.yaml").replacen("interval:", "intervall:", 1);
    let bad_file = dir.join("misspelt.yaml");
    std::fs::write(&bad_file, bad).unwrap();
    let output = check_podmonitor(&[bad_file]).expect_err("a misspelt field must fail");
    assert!(output.contains("intervall"), "{output}");
}

// ---------------------------------------------------------------------------------------------
// The shapes the wiring checks read (serde ignores every other field).

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    name: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct Deployment {
    spec: DeploymentSpec,
}

#[derive(Debug, Deserialize)]
struct DeploymentSpec {
    template: PodTemplate,
}

#[derive(Debug, Deserialize)]
struct PodTemplate {
    metadata: Meta,
    spec: PodSpec,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    termination_grace_period_seconds: u64,
    security_context: SecurityContext,
    containers: Vec<Container>,
    #[serde(default)]
    volumes: Vec<Volume>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Container {
    name: String,
    image: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    ports: Vec<ContainerPort>,
    liveness_probe: Option<Probe>,
    readiness_probe: Option<Probe>,
    lifecycle: Option<Lifecycle>,
    resources: Option<Resources>,
    security_context: Option<SecurityContext>,
    #[serde(default)]
    volume_mounts: Vec<VolumeMount>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerPort {
    name: Option<String>,
    container_port: u16,
    protocol: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    http_get: HttpGet,
}

#[derive(Debug, Deserialize)]
struct HttpGet {
    path: String,
    port: PortRef,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(untagged)]
enum PortRef {
    Number(u16),
    Name(String),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Lifecycle {
    pre_stop: Option<Handler>,
}

#[derive(Debug, Deserialize)]
struct Handler {
    sleep: Option<SleepAction>,
}

#[derive(Debug, Deserialize)]
struct SleepAction {
    seconds: u64,
}

#[derive(Debug, Deserialize)]
struct Resources {
    #[serde(default)]
    requests: BTreeMap<String, String>,
    #[serde(default)]
    limits: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecurityContext {
    run_as_non_root: Option<bool>,
    run_as_user: Option<u32>,
    read_only_root_filesystem: Option<bool>,
    allow_privilege_escalation: Option<bool>,
    capabilities: Option<Capabilities>,
    seccomp_profile: Option<SeccompProfile>,
}

#[derive(Debug, Deserialize)]
struct Capabilities {
    #[serde(default)]
    drop: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct SeccompProfile {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VolumeMount {
    name: String,
    mount_path: String,
    read_only: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Volume {
    name: String,
    config_map: Option<NameRef>,
}

#[derive(Debug, Deserialize)]
struct NameRef {
    name: String,
}

#[derive(Debug, Deserialize)]
struct PodMonitor {
    spec: PodMonitorSpec,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodMonitorSpec {
    selector: LabelSelector,
    pod_metrics_endpoints: Vec<PodMetricsEndpoint>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LabelSelector {
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodMetricsEndpoint {
    port: String,
    path: String,
    interval: String,
    scrape_timeout: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Kustomization {
    resources: Vec<String>,
    config_map_generator: Vec<ConfigMapGenerator>,
    images: Vec<ImageOverride>,
}

#[derive(Debug, Deserialize)]
struct ConfigMapGenerator {
    name: String,
    files: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImageOverride {
    name: String,
    new_tag: String,
}

#[derive(Debug, Deserialize)]
struct ConfigMap {
    metadata: Meta,
    data: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct PrometheusConfig {
    scrape_configs: Vec<ScrapeConfig>,
}

#[derive(Debug, Deserialize)]
struct ScrapeConfig {
    job_name: String,
    scrape_interval: String,
    scrape_timeout: String,
    kubernetes_sd_configs: Vec<KubernetesSdConfig>,
}

/// The keys of Prometheus' `kubernetes_sd_config` the file might use; any other is a mistake
/// (Debian's promtool cannot check this block: it is built without Kubernetes discovery).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct KubernetesSdConfig {
    role: String,
    api_server: Option<String>,
    kubeconfig_file: Option<String>,
    namespaces: Option<serde::de::IgnoredAny>,
    selectors: Option<serde::de::IgnoredAny>,
    attach_metadata: Option<serde::de::IgnoredAny>,
}

fn parse<T: for<'de> Deserialize<'de>>(path: &str) -> T {
    serde_saphyr::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn duration(text: &str) -> Duration {
    humantime_serde::re::humantime::parse_duration(text)
        .unwrap_or_else(|e| panic!("{text:?} is not a duration: {e}"))
}

fn deployment() -> Deployment {
    parse("deploy/kubernetes/deployment.yaml")
}

fn container<'a>(pod: &'a PodSpec, name: &str) -> &'a Container {
    pod.containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name:?} in deployment.yaml"))
}

/// The tallyd container's arguments, as tallyd parses and validates them.
fn tallyd_settings(args: &[String]) -> Settings {
    let cli = Cli::try_parse_from(std::iter::once("tallyd".to_owned()).chain(args.iter().cloned()))
        .unwrap_or_else(|e| panic!("tallyd rejects {args:?}:\n{e}"));
    Settings::load(&cli).unwrap_or_else(|e| panic!("tallyd rejects {args:?}: {e}"))
}

// ---------------------------------------------------------------------------------------------

#[test]
fn the_kustomization_renders_every_manifest_and_the_mapping_configmap() {
    let k: Kustomization = parse("deploy/kubernetes/kustomization.yaml");
    // Every manifest file is a resource, and every resource a file.
    let mut manifests = Vec::new();
    for (path, text) in kubernetes_files() {
        let name = path.rsplit('/').next().unwrap().to_owned();
        let docs = documents(&path, &text);
        if docs.iter().any(|d| d.kind == "Kustomization") {
            assert_eq!(name, "kustomization.yaml");
        } else if docs.is_empty() {
            // Not a manifest: it must be generator input.
            assert!(
                k.config_map_generator
                    .iter()
                    .any(|g| g.files.contains(&name)),
                "{path} is neither a manifest nor used by kustomization.yaml"
            );
        } else {
            manifests.push(name);
        }
    }
    let mut resources = k.resources.clone();
    resources.sort();
    assert_eq!(resources, manifests, "resources of kustomization.yaml");
    let image = &k.images[0];
    assert_eq!(
        (image.name.as_str(), image.new_tag.as_str()),
        ("ghcr.io/tallyd/tallyd", env!("CARGO_PKG_VERSION")),
        "the image tag follows the crate version"
    );

    let rendered = kustomize();
    let docs = documents("kustomize", &rendered);
    let mut kinds: Vec<&str> = docs.iter().map(|d| d.kind.as_str()).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        ["ConfigMap", "Deployment", "PodMonitor"],
        "{rendered}"
    );
    let of_kind = |kind: &str| &docs.iter().find(|d| d.kind == kind).unwrap().text;
    let configmap: ConfigMap = serde_saphyr::from_str(of_kind("ConfigMap")).unwrap();
    assert_eq!(
        configmap.data.get("mapping.yml").map(String::as_str),
        Some(read("deploy/kubernetes/mapping.yml").as_str()),
        "the ConfigMap holds mapping.yml as it is"
    );
    let generated = configmap.metadata.name.unwrap();
    assert!(generated.starts_with("tallyd-mapping-"), "{generated}");
    let rendered: Deployment = serde_saphyr::from_str(of_kind("Deployment")).unwrap();
    let pod = &rendered.spec.template.spec;
    let volume = pod
        .volumes
        .iter()
        .find_map(|v| v.config_map.as_ref())
        .expect("a ConfigMap volume");
    assert_eq!(
        volume.name, generated,
        "kustomize renames the volume's ConfigMap"
    );
    assert_eq!(
        container(pod, "tallyd").image,
        format!("ghcr.io/tallyd/tallyd:{}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_mapping_file_is_accepted_by_tallyd() {
    use tallyd::mapping::{Mapper, MetricClass, Outcome};
    let path = repo("deploy/kubernetes/mapping.yml");
    let mapper =
        Mapper::load(&path).unwrap_or_else(|e| panic!("tallyd rejects {}: {e}", path.display()));
    // The examples its comments give.
    let mapped = |name: &str, class: MetricClass| match mapper.map(name, class) {
        Outcome::Mapped(m) => {
            let labels: Vec<(String, String)> = m
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            (m.name.to_string(), labels)
        }
        other => panic!("{name} ({class:?}) is not mapped: {other:?}"),
    };
    let owned = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        mapped("checkout.eu.requests", MetricClass::Counter),
        ("checkout_requests_total".into(), owned(&[("region", "eu")]))
    );
    assert_eq!(
        mapped("db.orders.select.duration", MetricClass::Observer),
        (
            "db_query_duration_seconds".into(),
            owned(&[("database", "orders"), ("operation", "select")])
        )
    );
    assert!(matches!(
        mapper.map("checkout.eu.requests", MetricClass::Gauge),
        Outcome::Unmapped
    ));
    assert!(matches!(
        mapper.map("checkout.latency", MetricClass::Observer),
        Outcome::Unmapped
    ));
    assert!(matches!(
        mapper.map("debug.cache_miss", MetricClass::Counter),
        Outcome::Drop
    ));
}

#[test]
fn the_deployment_wires_tallyd_as_documented() {
    let d = deployment();
    let template = &d.spec.template;
    let pod = &template.spec;
    let tallyd = container(pod, "tallyd");
    let settings = tallyd_settings(&tallyd.args);

    // StatsD on the pod's loopback; HTTP on every interface, on the declared port.
    assert_eq!(settings.statsd.listen_udp, "127.0.0.1:9125");
    assert_eq!(settings.statsd.listen_tcp, "127.0.0.1:9125");
    let http = tallyd::config::resolve(&settings.web.listen_address).unwrap();
    assert!(http.ip().is_unspecified(), "{http}");
    assert_eq!(settings.log.format, LogFormat::Json);
    let [port] = &tallyd.ports[..] else {
        panic!("tallyd declares exactly its HTTP port: {:?}", tallyd.ports);
    };
    assert_eq!(port.container_port, http.port());
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    let port_name = port.name.clone().expect("a named port");
    for (probe, path) in [
        (&tallyd.liveness_probe, "/-/healthy"),
        (&tallyd.readiness_probe, "/-/ready"),
    ] {
        let probe = probe.as_ref().expect("liveness and readiness probes");
        assert_eq!(probe.http_get.path, path);
        assert!(
            [
                PortRef::Name(port_name.clone()),
                PortRef::Number(http.port())
            ]
            .contains(&probe.http_get.port),
            "{probe:?}"
        );
    }

    // The mapping ConfigMap is mounted where the flag points.
    let mapping = Path::new(&settings.statsd.mapping_config);
    let mount = tallyd
        .volume_mounts
        .iter()
        .find(|m| mapping.starts_with(&m.mount_path))
        .unwrap_or_else(|| panic!("nothing mounted at {}", mapping.display()));
    assert_eq!(mount.read_only, Some(true));
    assert_eq!(
        mapping.file_name().unwrap(),
        "mapping.yml",
        "the ConfigMap key is the file name"
    );
    let volume = pod.volumes.iter().find(|v| v.name == mount.name).unwrap();
    let k: Kustomization = parse("deploy/kubernetes/kustomization.yaml");
    let generator = k
        .config_map_generator
        .iter()
        .find(|g| g.files == ["mapping.yml"])
        .expect("kustomization.yaml generates the mapping ConfigMap");
    assert_eq!(volume.config_map.as_ref().unwrap().name, generator.name);

    // Annotations for deploy/prometheus/scrape-config.yml.
    let a = &template.metadata.annotations;
    assert_eq!(
        a.get("prometheus.io/scrape").map(String::as_str),
        Some("true")
    );
    assert_eq!(a.get("prometheus.io/port"), Some(&http.port().to_string()));
    assert_eq!(
        a.get("prometheus.io/path"),
        Some(&settings.web.telemetry_path)
    );

    // The PodMonitor selects this pod and scrapes the named port.
    let monitor: PodMonitor = parse("deploy/kubernetes/podmonitor.yaml");
    for (k, v) in &monitor.spec.selector.match_labels {
        assert_eq!(
            template.metadata.labels.get(k),
            Some(v),
            "the PodMonitor selects by {k}={v}"
        );
    }
    let [endpoint] = &monitor.spec.pod_metrics_endpoints[..] else {
        panic!("one endpoint");
    };
    assert_eq!(endpoint.port, port_name);
    assert_eq!(endpoint.path, settings.web.telemetry_path);

    // Shutdown: the final values are served at least one scrape interval, and the kubelet
    // waits for the preStop sleep, the grace period and the rest of the shutdown.
    let grace = settings.shutdown.grace_period;
    assert_eq!(grace, Duration::from_secs(5));
    let job: PrometheusConfig = parse("deploy/prometheus/scrape-config.yml");
    for (what, interval, timeout) in [
        ("PodMonitor", &endpoint.interval, &endpoint.scrape_timeout),
        (
            "scrape-config.yml",
            &job.scrape_configs[0].scrape_interval,
            &job.scrape_configs[0].scrape_timeout,
        ),
    ] {
        assert!(
            duration(interval) <= grace,
            "{what} scrapes every {interval}, longer than the grace period {grace:?}"
        );
        assert!(duration(timeout) < duration(interval), "{what}");
    }
    let pre_stop = tallyd
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|h| h.sleep.as_ref())
        .expect("a preStop sleep on tallyd")
        .seconds;
    assert!(pre_stop > 0);
    let needed = Duration::from_secs(pre_stop) + grace + SHUTDOWN_STEPS_WORST;
    assert!(
        Duration::from_secs(pod.termination_grace_period_seconds) > needed,
        "terminationGracePeriodSeconds must exceed {needed:?}"
    );
    // Only tallyd waits: the app gets SIGTERM first and flushes to a tallyd still reading.
    let app = container(pod, "app");
    assert!(app
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .is_none());

    // Resources and the restrictive security context.
    let r = tallyd.resources.as_ref().expect("resources");
    let pairs = |m: &BTreeMap<String, String>| {
        m.iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        pairs(&r.requests),
        [
            ("cpu".into(), "50m".into()),
            ("memory".into(), "32Mi".into())
        ]
    );
    assert_eq!(
        pairs(&r.limits),
        [
            ("cpu".into(), "500m".into()),
            ("memory".into(), "128Mi".into())
        ]
    );
    let s = tallyd.security_context.as_ref().expect("securityContext");
    assert_eq!(s.run_as_non_root, Some(true));
    assert_eq!(s.run_as_user, Some(NONROOT_UID));
    assert_eq!(s.read_only_root_filesystem, Some(true));
    assert_eq!(s.allow_privilege_escalation, Some(false));
    assert_eq!(s.capabilities.as_ref().unwrap().drop, ["ALL"]);
    assert_eq!(s.seccomp_profile.as_ref().unwrap().kind, "RuntimeDefault");
    assert_eq!(pod.security_context.run_as_non_root, Some(true));
    assert_eq!(pod.security_context.run_as_user, Some(NONROOT_UID));
    assert_eq!(
        pod.security_context.seccomp_profile.as_ref().unwrap().kind,
        "RuntimeDefault"
    );
    assert_eq!(
        tallyd.image,
        format!("ghcr.io/tallyd/tallyd:{}", env!("CARGO_PKG_VERSION"))
    );
}

/// The user the image runs as (distroless `nonroot`), and the manifests too.
const NONROOT_UID: u32 = 65532;

#[test]
fn the_deployment_arguments_run_the_real_tallyd() {
    let d = deployment();
    let tallyd = container(&d.spec.template.spec, "tallyd");
    let grace = tallyd_settings(&tallyd.args).shutdown.grace_period;
    // The harness binds every socket to 127.0.0.1:0 and reads the logfmt start line; the
    // mapping file comes from the repository instead of the ConfigMap.
    let mapping = repo("deploy/kubernetes/mapping.yml");
    let args: Vec<String> = tallyd
        .args
        .iter()
        .filter(|a| {
            ![
                "--statsd.listen-udp=",
                "--statsd.listen-tcp=",
                "--web.listen-address=",
                "--log.format=",
            ]
            .iter()
            .any(|flag| a.starts_with(flag))
        })
        .map(|a| match a.strip_prefix("--statsd.mapping-config=") {
            Some(_) => format!("--statsd.mapping-config={}", mapping.display()),
            None => a.clone(),
        })
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut t = Tallyd::start(&args);
    assert_eq!(t.get("/-/healthy").0, 200);
    assert_eq!(t.get("/-/ready").0, 200);
    t.send_udp(b"deploy.check:1|c");
    t.wait_value("deploy_check", &[], 1.0);
    let (status, took) = t.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
    assert!(
        status.success(),
        "{status:?}; log:\n{}",
        t.logs().join("\n")
    );
    assert!(
        took >= grace && took < grace + Duration::from_secs(5),
        "exited {took:?} after SIGTERM, grace period {grace:?}"
    );
}

// ---------------------------------------------------------------------------------------------

#[test]
fn the_scrape_config_passes_promtool_check_config() {
    let path = "deploy/prometheus/scrape-config.yml";
    let config: PrometheusConfig = parse(path);
    let [job] = &config.scrape_configs[..] else {
        panic!("{path} holds one job");
    };
    assert_eq!(job.job_name, "tallyd");
    let roles: Vec<&str> = job
        .kubernetes_sd_configs
        .iter()
        .map(|sd| sd.role.as_str())
        .collect();
    assert_eq!(roles, ["pod"], "pod discovery, for the pod annotations");

    // Wrapped into a whole prometheus.yml, with a static target in place of the discovery.
    let text = read(path);
    let wrapped = format!(
        "global:\n  scrape_interval: 15s\n{}",
        swap_kubernetes_sd(
            &text,
            "static_configs:\n  - targets: [\"127.0.0.1:9102\"]\n"
        )
    );
    let dir = scratch_dir("promtool");
    let file = dir.join("prometheus.yml");
    std::fs::write(&file, &wrapped).unwrap();
    let (ok, output) = run(Command::new(path_tool("promtool"))
        .args(["check", "config"])
        .arg(&file));
    assert!(ok, "promtool check config:\n{output}\n---\n{wrapped}");
}

// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct Instruction {
    cmd: String,
    flags: Vec<String>,
    value: Vec<String>,
    json: bool,
}

/// deploy/Dockerfile as BuildKit's parser reads it.
fn dockerfile() -> Vec<Instruction> {
    let script = "import dockerfile, json, sys\n\
                  print(json.dumps([{'cmd': c.cmd.upper(), 'flags': list(c.flags), \
                  'value': list(c.value), 'json': c.json} for c in dockerfile.parse_file(sys.argv[1])]))";
    let out = run_ok(
        Command::new(venv_tool("python"))
            .args(["-c", script])
            .arg(repo("deploy/Dockerfile")),
    );
    serde_saphyr::from_str(&out).unwrap_or_else(|e| panic!("parser output {out}: {e}"))
}

/// Copies a file or a directory tree.
fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::copy(from, to).unwrap();
    }
}

#[test]
fn the_dockerfile_builds_the_locked_release_and_runs_it_as_nonroot() {
    const KNOWN: [&str; 18] = [
        "ADD",
        "ARG",
        "CMD",
        "COPY",
        "ENTRYPOINT",
        "ENV",
        "EXPOSE",
        "FROM",
        "HEALTHCHECK",
        "LABEL",
        "MAINTAINER",
        "ONBUILD",
        "RUN",
        "SHELL",
        "STOPSIGNAL",
        "USER",
        "VOLUME",
        "WORKDIR",
    ];
    let instructions = dockerfile();
    for i in &instructions {
        assert!(KNOWN.contains(&i.cmd.as_str()), "unknown instruction {i:?}");
    }
    let stages: Vec<&Instruction> = instructions.iter().filter(|i| i.cmd == "FROM").collect();
    let [builder, runtime] = &stages[..] else {
        panic!("two stages, a builder and a runtime: {stages:?}");
    };
    assert!(
        builder.value[0].starts_with("rust:") && builder.value[0].ends_with("-slim-bookworm"),
        "{builder:?}"
    );
    let builder_name = builder.value.last().unwrap();
    assert!(
        runtime.value[0] == "gcr.io/distroless/cc-debian12:nonroot",
        "{runtime:?}"
    );
    let runtime_at = instructions
        .iter()
        .position(|i| std::ptr::eq(i, *runtime))
        .unwrap();
    let (build, run_stage) = instructions.split_at(runtime_at);
    assert!(
        build
            .iter()
            .any(|i| i.cmd == "RUN" && i.value.concat().contains("cargo build --release --locked")),
        "the builder runs `cargo build --release --locked`"
    );

    // The runtime stage: the binary from the builder, a non-root user, the ports, tallyd.
    let find = |cmd: &str| -> &Instruction {
        let found: Vec<&Instruction> = run_stage.iter().filter(|i| i.cmd == cmd).collect();
        let [one] = found[..] else {
            panic!("one {cmd} in the runtime stage: {found:?}");
        };
        one
    };
    let copy = find("COPY");
    assert_eq!(copy.flags, [format!("--from={builder_name}")]);
    let user = find("USER");
    let uid: u32 = user.value[0]
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric USER");
    assert_eq!(uid, NONROOT_UID, "the uid the Kubernetes manifests run as");
    let exposed: BTreeSet<&str> = find("EXPOSE").value.iter().map(String::as_str).collect();
    assert_eq!(
        exposed,
        BTreeSet::from(["9102/tcp", "9125/udp", "9125/tcp"])
    );
    let entrypoint = find("ENTRYPOINT");
    assert!(
        entrypoint.json,
        "exec form, so tallyd is PID 1 and gets SIGTERM"
    );
    assert_eq!(entrypoint.value, [copy.value.last().unwrap().clone()]);
    let cmd = find("CMD");
    assert!(cmd.json, "exec form");
    let settings = tallyd_settings(&cmd.value);
    for addr in [&settings.statsd.listen_udp, &settings.statsd.listen_tcp] {
        let addr = tallyd::config::resolve(addr).unwrap();
        assert!(
            addr.ip().is_unspecified() && addr.port() == 9125,
            "StatsD on every interface in a container: {addr}"
        );
    }
    assert_eq!(
        tallyd::config::resolve(&settings.web.listen_address)
            .unwrap()
            .port(),
        9102
    );

    // The build context: what the builder copies is let through the ignore file, and is
    // enough for cargo to resolve the package with the lock file as it is.
    let ignore = read("deploy/Dockerfile.dockerignore");
    let ignore: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        ignore.first(),
        Some(&"*"),
        "the ignore file lets in only what it lists"
    );
    let context =
        std::env::temp_dir().join(format!("tallyd-docker-context-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&context);
    std::fs::create_dir_all(&context).unwrap();
    for copy in build.iter().filter(|i| i.cmd == "COPY") {
        let (sources, _) = copy.value.split_at(copy.value.len() - 1);
        for source in sources {
            let source = source.trim_end_matches('/');
            assert!(
                ignore.contains(&format!("!{source}").as_str())
                    || ignore.contains(&format!("!{source}/").as_str()),
                "Dockerfile.dockerignore keeps {source} out of the build context"
            );
            copy_tree(&repo(source), &context.join(source));
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let (ok, output) = run(Command::new(cargo)
        .args(["metadata", "--locked", "--offline", "--format-version=1"])
        .current_dir(&context));
    let _ = std::fs::remove_dir_all(&context);
    assert!(
        ok,
        "`cargo metadata --locked` in the Docker build context failed:\n{output}"
    );
}

// ---------------------------------------------------------------------------------------------

#[test]
fn the_systemd_unit_verifies_and_is_sandboxed() {
    let unit = read("deploy/tallyd.service");
    assert!(unit.contains("ExecStart=/usr/local/bin/tallyd"));
    // systemd-analyze checks that ExecStart exists: point it at the binary under test.
    let dir = scratch_dir("systemd");
    let file = dir.join("tallyd.service");
    std::fs::write(
        &file,
        unit.replace("/usr/local/bin/tallyd", env!("CARGO_BIN_EXE_tallyd")),
    )
    .unwrap();
    let analyze = path_tool("systemd-analyze");
    // verify exits 0 even for unknown keys and bad values, which it reports: none may be.
    let output = run_ok(
        Command::new(&analyze)
            .args(["verify", "--man=no"])
            .arg(&file),
    );
    assert!(
        output.trim().is_empty(),
        "systemd-analyze verify:\n{output}"
    );
    // Exposure 2.0 or less ("OK"); the threshold is in tenths.
    let output = run_ok(
        Command::new(&analyze)
            .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
            .arg(&file),
    );
    assert!(output.contains("Overall exposure level"), "{output}");
    // The socket unit, beside the service it starts.
    std::fs::write(dir.join("tallyd.socket"), read("deploy/tallyd.socket")).unwrap();
    let output = run_ok(
        Command::new(&analyze)
            .args(["verify", "--man=no"])
            .arg(dir.join("tallyd.socket")),
    );
    assert!(
        output.trim().is_empty(),
        "systemd-analyze verify tallyd.socket:\n{output}"
    );
}

#[test]
fn socket_activation_serves_http_on_the_socket_systemd_passes() {
    // systemd-socket-activate does what a .socket unit does: it holds the port, and on the
    // first connection starts tallyd with the listening socket as descriptor 3.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut activator = Command::new(path_tool("systemd-socket-activate"))
        .args(["-l", &format!("127.0.0.1:{port}")])
        .arg(env!("CARGO_BIN_EXE_tallyd"))
        .args([
            "--web.systemd-socket",
            "--statsd.listen-udp=127.0.0.1:0",
            "--statsd.listen-tcp=",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let get = |path: &str| common::get_at(addr, path);
    let started = std::time::Instant::now();
    let healthy = loop {
        match get("/-/healthy") {
            Some(response) => break response,
            None if started.elapsed() < std::time::Duration::from_secs(10) => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            None => panic!("nothing listens on port {port}"),
        }
    };
    let metrics = get("/metrics").unwrap();
    let _ = activator.kill();
    let _ = activator.wait();
    assert!(healthy.starts_with("HTTP/1.1 200"), "{healthy}");
    assert!(
        metrics.starts_with("HTTP/1.1 200") && metrics.contains("\ntallyd_lines_total 0\n"),
        "{metrics}"
    );
}
