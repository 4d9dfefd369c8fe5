//! Every manifest under `deploy/kubernetes/` read into the Kubernetes API types (1.33), and held
//! to the gateway: probe paths and ports, listen addresses, drain timings, mounts, selectors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Probe, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;

#[derive(Default)]
struct Manifests {
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    config_maps: Vec<ConfigMap>,
    secrets: Vec<Secret>,
    budgets: Vec<PodDisruptionBudget>,
    autoscalers: Vec<HorizontalPodAutoscaler>,
    policies: Vec<NetworkPolicy>,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

fn typed<T: serde::de::DeserializeOwned>(value: serde_norway::Value, file: &Path) -> T {
    serde_norway::from_value(value)
        .unwrap_or_else(|e| panic!("{} does not match its Kubernetes type: {e}", file.display()))
}

/// Reads every YAML document of every file, by its `kind`; an unknown kind fails the test, so a
/// new manifest cannot go unchecked.
fn load() -> Manifests {
    let mut manifests = Manifests::default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 7, "manifests found: {files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for document in serde_norway::Deserializer::from_str(&text) {
            let value = serde_norway::Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{} is not YAML: {e}", file.display()));
            let kind = value["kind"].as_str().unwrap_or_default().to_owned();
            match kind.as_str() {
                "Deployment" => manifests.deployments.push(typed(value, &file)),
                "Service" => manifests.services.push(typed(value, &file)),
                "ConfigMap" => manifests.config_maps.push(typed(value, &file)),
                "Secret" => manifests.secrets.push(typed(value, &file)),
                "PodDisruptionBudget" => manifests.budgets.push(typed(value, &file)),
                "HorizontalPodAutoscaler" => manifests.autoscalers.push(typed(value, &file)),
                "NetworkPolicy" => manifests.policies.push(typed(value, &file)),
                other => panic!("{}: no check for kind {other:?}", file.display()),
            }
        }
    }
    manifests
}

fn env_of<'a>(container: &'a Container, name: &str) -> &'a str {
    container
        .env
        .iter()
        .flatten()
        .find(|var| var.name == name)
        .and_then(|var| var.value.as_deref())
        .unwrap_or_else(|| panic!("the container sets {name}"))
}

fn port_named(container: &Container, name: &str) -> i32 {
    container
        .ports
        .iter()
        .flatten()
        .find(|port| port.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("the container has a port named {name}"))
        .container_port
}

/// The path and the container port an HTTP probe reaches.
fn probe_target(probe: &Probe, container: &Container) -> (String, i32) {
    let get = probe.http_get.as_ref().expect("an HTTP probe");
    let port = match &get.port {
        IntOrString::Int(port) => *port,
        IntOrString::String(name) => port_named(container, name),
    };
    (get.path.clone().unwrap_or_default(), port)
}

fn labels(map: &Option<BTreeMap<String, String>>) -> BTreeMap<String, String> {
    map.clone().unwrap_or_default()
}

fn selects(selector: &BTreeMap<String, String>, pod: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| pod.get(k) == Some(v))
}

/// The pod template of the (one) Deployment.
fn pod_of(manifests: &Manifests) -> &PodSpec {
    manifests.deployments[0]
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref())
        .expect("the Deployment has a pod template")
}

#[test]
fn the_deployment_probes_the_gateways_own_paths_and_ports() {
    let manifests = load();
    let [deployment] = manifests.deployments.as_slice() else {
        panic!("one Deployment");
    };
    let spec = deployment.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(3));
    let pod = spec.template.spec.as_ref().unwrap();
    let [container] = pod.containers.as_slice() else {
        panic!("one container");
    };
    assert_eq!(container.args.as_deref(), Some(&["serve".to_owned()][..]));

    // The ports the gateway listens on are the ones declared and probed.
    let listen: std::net::SocketAddr = env_of(container, "INTEGRATION_LISTEN").parse().unwrap();
    let admin: std::net::SocketAddr = env_of(container, "INTEGRATION_ADMIN_LISTEN")
        .parse()
        .unwrap();
    assert_eq!(listen.port(), integration_gateway::DEFAULT_PORT);
    assert_eq!(admin.port(), integration_gateway::DEFAULT_ADMIN_PORT);
    assert_eq!(port_named(container, "http"), i32::from(listen.port()));
    assert_eq!(port_named(container, "admin"), i32::from(admin.port()));
    let admin_port = i32::from(admin.port());
    let liveness = probe_target(container.liveness_probe.as_ref().unwrap(), container);
    let readiness = probe_target(container.readiness_probe.as_ref().unwrap(), container);
    let startup = probe_target(container.startup_probe.as_ref().unwrap(), container);
    assert_eq!(
        liveness,
        (integration_gateway::HEALTHZ_PATH.to_owned(), admin_port)
    );
    assert_eq!(
        readiness,
        (integration_gateway::READYZ_PATH.to_owned(), admin_port)
    );
    assert_eq!(
        startup,
        (integration_gateway::HEALTHZ_PATH.to_owned(), admin_port)
    );
    let annotations = labels(&spec.template.metadata.as_ref().unwrap().annotations);
    assert_eq!(
        annotations["prometheus.io/path"],
        integration_gateway::METRICS_PATH
    );
    assert_eq!(annotations["prometheus.io/port"], admin_port.to_string());
}

#[test]
fn the_pod_outlives_its_drain_and_runs_locked_down() {
    let manifests = load();
    let pod = pod_of(&manifests);
    let container = &pod.containers[0];

    // preStop, then the grace period, then the drain bound: all inside the termination period.
    let pre_stop = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|h| h.sleep.as_ref())
        .expect("a preStop sleep")
        .seconds;
    let grace = humantime::parse_duration(env_of(container, "INTEGRATION_DRAIN_GRACE")).unwrap();
    let drain = humantime::parse_duration(env_of(container, "INTEGRATION_DRAIN_TIMEOUT")).unwrap();
    let needed = Duration::from_secs(u64::try_from(pre_stop).unwrap()) + grace + drain;
    let period =
        Duration::from_secs(u64::try_from(pod.termination_grace_period_seconds.unwrap()).unwrap());
    assert!(
        period > needed,
        "terminationGracePeriodSeconds {period:?} <= {needed:?}"
    );
    // Readiness notices the drain well inside the grace period.
    let readiness = container.readiness_probe.as_ref().unwrap();
    let noticed = readiness.period_seconds.unwrap() * readiness.failure_threshold.unwrap();
    assert!(
        Duration::from_secs(u64::try_from(noticed).unwrap())
            < grace + Duration::from_secs(u64::try_from(pre_stop).unwrap())
    );

    let pod_security = pod.security_context.as_ref().unwrap();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    let resources = container.resources.as_ref().unwrap();
    assert!(
        resources
            .requests
            .as_ref()
            .is_some_and(|r| r.contains_key("cpu") && r.contains_key("memory"))
    );
    assert!(
        resources
            .limits
            .as_ref()
            .is_some_and(|l| l.contains_key("memory"))
    );
}

#[test]
fn config_and_secrets_are_mounted_where_the_gateway_reads_them() {
    let manifests = load();
    let pod = pod_of(&manifests);
    let container = &pod.containers[0];
    let volumes = pod.volumes.as_ref().unwrap();
    let mount_of = |file: &str| {
        container
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| Path::new(file).parent() == Some(Path::new(&m.mount_path)))
            .unwrap_or_else(|| panic!("a volume is mounted where {file} lives"))
    };

    // The configuration file is a key of the ConfigMap, mounted at its directory.
    let config_file = env_of(container, "INTEGRATION_CONFIG");
    let mount = mount_of(config_file);
    let volume = volumes.iter().find(|v| v.name == mount.name).unwrap();
    let map_name = &volume.config_map.as_ref().expect("a ConfigMap volume").name;
    let map = manifests
        .config_maps
        .iter()
        .find(|m| m.metadata.name.as_ref() == Some(map_name))
        .expect("the ConfigMap is in the manifests");
    let key = Path::new(config_file)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    let toml = &map.data.as_ref().unwrap()[key];
    let config = integration_config::ConfigDocument::from_toml_str(toml)
        .unwrap()
        .build_unvalidated()
        .expect("the ConfigMap's TOML is a configuration");
    assert!(!config.integrations.is_empty());

    // Every secret the configuration references is a key of a mounted Secret; so is the caller token.
    let mut files: Vec<String> = Vec::new();
    for reference in toml.split("${file:").skip(1) {
        files.push(reference.split('}').next().unwrap().to_owned());
    }
    files.push(env_of(container, "INTEGRATION_CALLER_TOKEN_FILE").to_owned());
    for file in files {
        let mount = mount_of(&file);
        assert_eq!(mount.read_only, Some(true));
        let volume = volumes.iter().find(|v| v.name == mount.name).unwrap();
        let secret_name = volume
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.as_ref())
            .unwrap_or_else(|| panic!("{file} comes from a Secret volume"));
        let secret = manifests
            .secrets
            .iter()
            .find(|s| s.metadata.name.as_ref() == Some(secret_name))
            .unwrap_or_else(|| panic!("the example Secret {secret_name} is in the manifests"));
        let key = Path::new(&file).file_name().unwrap().to_str().unwrap();
        assert!(
            secret
                .string_data
                .as_ref()
                .is_some_and(|d| d.contains_key(key)),
            "Secret {secret_name} has the key {key}"
        );
    }
}

#[test]
fn service_budget_autoscaler_and_policy_select_the_gateway() {
    let manifests = load();
    let deployment = &manifests.deployments[0];
    let name = deployment.metadata.name.clone().unwrap();
    let spec = deployment.spec.as_ref().unwrap();
    let pod_labels = labels(&spec.template.metadata.as_ref().unwrap().labels);
    assert!(selects(&labels(&spec.selector.match_labels), &pod_labels));

    let [service] = manifests.services.as_slice() else {
        panic!("one Service");
    };
    let service_spec = service.spec.as_ref().unwrap();
    assert!(selects(&labels(&service_spec.selector), &pod_labels));
    let ports = service_spec.ports.as_ref().unwrap();
    assert_eq!(
        ports.len(),
        1,
        "only the callers' port: the admin port stays off the Service"
    );
    assert_eq!(
        ports[0].target_port,
        Some(IntOrString::String("http".to_owned()))
    );

    let budget = manifests.budgets[0].spec.as_ref().unwrap();
    assert!(selects(
        &labels(&budget.selector.as_ref().unwrap().match_labels),
        &pod_labels
    ));
    assert_eq!(budget.max_unavailable, Some(IntOrString::Int(1)));

    let autoscaler = manifests.autoscalers[0].spec.as_ref().unwrap();
    assert_eq!(autoscaler.scale_target_ref.kind, "Deployment");
    assert_eq!(autoscaler.scale_target_ref.name, name);
    assert_eq!(autoscaler.min_replicas, Some(3));
    assert!(autoscaler.max_replicas >= 3);

    let policy = manifests.policies[0].spec.as_ref().unwrap();
    assert!(selects(
        &labels(&policy.pod_selector.as_ref().unwrap().match_labels),
        &pod_labels
    ));
    let rules = policy.ingress.as_ref().unwrap();
    let http_rule = rules
        .iter()
        .find(|rule| {
            rule.ports
                .iter()
                .flatten()
                .any(|p| p.port == Some(IntOrString::String("http".to_owned())))
        })
        .expect("a rule for the callers' port");
    // Only labelled callers: every peer of the rule names a pod label.
    let peers = http_rule.from.as_ref().expect("the rule names its callers");
    assert!(!peers.is_empty());
    for peer in peers {
        let selector = peer
            .pod_selector
            .as_ref()
            .expect("callers are selected by label");
        assert_eq!(
            labels(&selector.match_labels)
                .get("integration-gateway/caller")
                .map(String::as_str),
            Some("true")
        );
        assert!(peer.ip_block.is_none());
    }
}
