//! The Helm chart in `deploy/helm/cattail` against the code and the real API server.
//!
//! `helm template` renders the chart for every values file in its `ci/` directory. Pure checks
//! on each rendering: the config file is accepted by the server's own config parsing and
//! serving checks (what `cattail check-config` and `cattail serve` run), and the chart's default
//! equals the built-in default config; the ClusterRole grants exactly `list` and `watch` on the
//! config's resources, and `create` on tokenreviews only when agents' tokens are checked; the
//! Deployment's arguments parse with the real CLI and agree with its volumes and ports. The
//! values schema refuses every file in `server/tests/helm/bad/` with the message its first line
//! names. Against testenv: every object of every rendering, and of the kustomize base, passes a
//! server-side dry-run with strict field validation, as does `helm install --dry-run=server`
//! (whose release notes name the Service); and the real server, acting as the chart's
//! ServiceAccount with the chart's RBAC and config, becomes InSync.
//!
//! helm is looked for as `CATTAIL_HELM_BIN`, else on PATH. Without it the tests skip with a loud
//! message, except under CI (`CI` set), where they fail: `.ci/run` installs it.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod deploy_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cattail_server::args::{Cli, Command as CliCommand, ServeArgs};
use cattail_server::config::ServerConfig;
use cattail_server::serve::{ServeOptions, serve};
use cattail_testenv::TestEnv;
use clap::Parser;
use deploy_support::{assert_grants_exactly, base, config_file, kustomization};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::{Discovery, Scope};
use kube::runtime::wait::{await_condition, conditions};
use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The Kubernetes version the chart is rendered for: testenv's.
const KUBE_VERSION: &str = "1.36.0";
const RELEASE: &str = "cattail";
const WAIT: Duration = Duration::from_secs(90);

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/helm/cattail")
}

/// The helm binary, or `None` (a loud skip) where it is missing outside CI.
fn helm() -> Option<PathBuf> {
    let found = std::env::var_os("CATTAIL_HELM_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path)
                .map(|dir| dir.join("helm"))
                .find(|candidate| candidate.is_file())
        });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "helm is not installed, and CI must run the chart's tests: .ci/run installs it with go install"
        );
        eprintln!(
            "\n\n!!! SKIPPED: helm is not on PATH (install it with `go install \
             helm.sh/helm/v3/cmd/helm@v3.22.0`, or set CATTAIL_HELM_BIN) !!!\n\n"
        );
    }
    found
}

/// The chart's `ci/*.yaml` values files, sorted.
fn ci_values() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart().join("ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "ci/ holds the values files to test");
    files
}

/// `helm template` of the chart with `values` into `namespace`: the manifests, or helm's error.
fn template(helm: &Path, values: &Path, namespace: &str) -> Result<String, String> {
    let output = Command::new(helm)
        .args(["template", RELEASE])
        .arg(chart())
        .args(["--namespace", namespace, "--kube-version", KUBE_VERSION])
        .arg("--values")
        .arg(values)
        .output()
        .unwrap();
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Every object of a multi-document YAML stream, as JSON.
fn objects(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|document| Value::deserialize(document).unwrap())
        .filter(|object| !object.is_null())
        .collect()
}

/// One rendering of the chart: its objects by kind.
struct Rendered {
    file: String,
    objects: Vec<Value>,
}

impl Rendered {
    fn new(helm: &Path, values: &Path, namespace: &str) -> Rendered {
        let file = values.file_name().unwrap().to_string_lossy().into_owned();
        let yaml = template(helm, values, namespace)
            .unwrap_or_else(|e| panic!("helm template with {file}: {e}"));
        Rendered {
            file,
            objects: objects(&yaml),
        }
    }

    fn all_of(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    /// The one object of `kind`, as its k8s-openapi type.
    fn one<T: serde::de::DeserializeOwned>(&self, kind: &str) -> T {
        let all = self.all_of(kind);
        assert_eq!(all.len(), 1, "{}: one {kind}", self.file);
        serde_json::from_value(all[0].clone()).unwrap()
    }

    /// The server config the chart's ConfigMap holds, parsed and checked as the server does.
    fn config(&self) -> ServerConfig {
        let map: ConfigMap = self.one("ConfigMap");
        let text = &map.data.as_ref().unwrap()["config.yaml"];
        let config = ServerConfig::from_yaml_str(text)
            .unwrap_or_else(|e| panic!("{}: the server refuses config.yaml: {e}", self.file));
        ServeOptions::from_config(config.clone())
            .unwrap_or_else(|e| panic!("{}: the server refuses config.yaml: {e}", self.file));
        config
    }
}

fn rendered_all(helm: &Path) -> Vec<Rendered> {
    ci_values()
        .iter()
        .map(|values| Rendered::new(helm, values, "cattail-system"))
        .collect()
}

#[test]
fn every_config_the_chart_renders_is_accepted_by_the_server() {
    let Some(helm) = helm() else { return };
    for rendered in rendered_all(&helm) {
        let config = rendered.config();
        // Every watched resource is one of the values' profile entries.
        assert!(!config.resources.is_empty(), "{}", rendered.file);
    }
}

#[test]
fn the_chart_default_config_is_the_built_in_default() {
    let Some(helm) = helm() else { return };
    let rendered = Rendered::new(
        &helm,
        &chart().join("ci/existing-secret.yaml"),
        "cattail-system",
    );
    assert_eq!(
        rendered.config(),
        ServerConfig::default(),
        "the chart's default config.yaml differs from the built-in default: update \
         profile and config in deploy/helm/cattail/values.yaml from `cattail check-config`"
    );
    // The kustomize base holds the same config.
    assert_eq!(
        ServerConfig::load(config_file()).unwrap(),
        rendered.config()
    );
}

#[test]
fn the_chart_cluster_role_is_exactly_what_the_config_needs() {
    let Some(helm) = helm() else { return };
    let mut saw_tokens = false;
    let mut saw_no_tokens = false;
    for rendered in rendered_all(&helm) {
        let config = rendered.config();
        let role: ClusterRole = rendered.one("ClusterRole");
        let token_rules = assert_grants_exactly(&role, &config, &rendered.file);
        let tokens = config.auth.tokens.is_some();
        assert_eq!(
            token_rules,
            usize::from(tokens),
            "{}: create on tokenreviews exactly when auth.tokens is set",
            rendered.file
        );
        saw_tokens |= tokens;
        saw_no_tokens |= !tokens;

        let binding: ClusterRoleBinding = rendered.one("ClusterRoleBinding");
        let account: ServiceAccount = rendered.one("ServiceAccount");
        assert_eq!(binding.role_ref.kind, "ClusterRole");
        assert_eq!(Some(binding.role_ref.name), role.metadata.name);
        let subjects = binding.subjects.unwrap();
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].kind, "ServiceAccount");
        assert_eq!(Some(&subjects[0].name), account.metadata.name.as_ref());
        assert_eq!(subjects[0].namespace, account.metadata.namespace);
        // No other RBAC objects.
        for kind in ["Role", "RoleBinding"] {
            assert!(
                rendered.all_of(kind).is_empty(),
                "{}: a {kind}",
                rendered.file
            );
        }
    }
    assert!(
        saw_tokens && saw_no_tokens,
        "ci/ covers both token settings"
    );
}

/// The `serve` arguments of the chart's Deployment, parsed by the real CLI.
fn serve_args(deployment: &Deployment) -> ServeArgs {
    let container = &deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    let args = std::iter::once("cattail".to_owned()).chain(container.args.clone().unwrap());
    let CliCommand::Serve(serve_args) = Cli::try_parse_from(args).unwrap().command else {
        panic!("the container must run `cattail serve`");
    };
    serve_args
}

#[test]
fn the_chart_deployment_agrees_with_the_server_flags() {
    let Some(helm) = helm() else { return };
    for rendered in rendered_all(&helm) {
        let file = &rendered.file;
        let deployment: Deployment = rendered.one("Deployment");
        let args = serve_args(&deployment);
        let spec = deployment.spec.as_ref().unwrap();
        let pod = spec.template.spec.as_ref().unwrap();
        let container = &pod.containers[0];
        let mount_of = |path: &Path| {
            let mount = container
                .volume_mounts
                .iter()
                .flatten()
                .find(|m| path.parent() == Some(Path::new(&m.mount_path)))
                .unwrap_or_else(|| panic!("{file}: {} is not on a volume", path.display()));
            assert!(mount.sub_path.is_none(), "{file}: whole-volume mounts only");
            pod.volumes
                .iter()
                .flatten()
                .find(|v| v.name == mount.name)
                .unwrap()
                .clone()
        };

        // The config comes from the chart's ConfigMap.
        let map: ConfigMap = rendered.one("ConfigMap");
        let config_volume = mount_of(&args.config.clone().unwrap());
        assert_eq!(
            Some(config_volume.config_map.unwrap().name),
            map.metadata.name,
            "{file}"
        );

        // TLS from a Secret, or plaintext only when asked for.
        let values: Value = serde_yaml_ng::from_str(
            &std::fs::read_to_string(chart().join("ci").join(file)).unwrap(),
        )
        .unwrap();
        let plaintext = values["insecurePlaintext"] == true;
        assert_eq!(args.insecure_plaintext, plaintext, "{file}");
        let mut tls_files = vec![args.tls_cert_file.clone(), args.tls_key_file.clone()];
        if values["tls"]["clientCAKey"].is_string() {
            tls_files.push(args.tls_client_ca_file.clone());
        } else {
            assert!(args.tls_client_ca_file.is_none(), "{file}");
        }
        for flag in tls_files {
            if plaintext {
                assert!(flag.is_none(), "{file}: plaintext with a TLS flag");
                continue;
            }
            let flag = flag.unwrap_or_else(|| panic!("{file}: a TLS flag is missing"));
            let secret = mount_of(&flag).secret.expect("TLS comes from a Secret");
            let expected = match values["tls"]["existingSecret"].as_str() {
                Some(name) if !name.is_empty() => name.to_owned(),
                _ => {
                    // cert-manager: the Certificate writes the Secret the pod mounts.
                    let certificate = rendered
                        .all_of("Certificate")
                        .into_iter()
                        .find(|c| c["spec"]["isCA"] != true)
                        .unwrap_or_else(|| panic!("{file}: no server Certificate"));
                    certificate["spec"]["secretName"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                }
            };
            assert_eq!(secret.secret_name.as_deref(), Some(&*expected), "{file}");
        }

        // Ports, the headless Service, the replica's name, the grace period.
        let port = |name: &str| {
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .unwrap()
                .container_port
        };
        assert_eq!(i32::from(args.listen.port()), port("grpc"), "{file}");
        assert_eq!(i32::from(args.admin_listen.port()), port("admin"), "{file}");
        let service: Service = rendered.one("Service");
        let service_spec = service.spec.unwrap();
        assert_eq!(service_spec.cluster_ip.as_deref(), Some("None"));
        let labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone()
            .unwrap();
        for (key, value) in service_spec.selector.unwrap() {
            assert_eq!(
                labels.get(&key),
                Some(&value),
                "{file}: Service selector {key}"
            );
        }
        let grace = pod.termination_grace_period_seconds.unwrap();
        assert!(
            u64::try_from(grace).unwrap() > args.shutdown_grace.as_secs(),
            "{file}: terminationGracePeriodSeconds must exceed --shutdown-grace"
        );
        // The drain fits in the grace period, and names this Service's other replicas,
        // found in the pod's namespace and without the pod's own IP.
        if let Err(error) = args.drain_period(rendered.config().fanout.drain_period) {
            panic!("{file}: {error}");
        }
        assert_eq!(args.replicas_service, service.metadata.name, "{file}");
        for (name, path) in [
            ("CATTAIL_NAMESPACE", "metadata.namespace"),
            ("CATTAIL_POD_IP", "status.podIP"),
        ] {
            let var = container.env.iter().flatten().find(|e| e.name == name);
            let field = var.and_then(|v| v.value_from.as_ref()?.field_ref.as_ref());
            assert_eq!(field.map(|f| &*f.field_path), Some(path), "{file}: {name}");
        }
        let server_id = container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "CATTAIL_SERVER_ID")
            .expect("CATTAIL_SERVER_ID is set");
        let field = server_id.value_from.as_ref().unwrap().field_ref.as_ref();
        assert_eq!(field.unwrap().field_path, "metadata.name");
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));

        // With an HPA the Deployment leaves replicas to it; the HPA scales this Deployment.
        let hpas = rendered.all_of("HorizontalPodAutoscaler");
        if let Some(hpa) = hpas.first() {
            assert!(
                spec.replicas.is_none(),
                "{file}: replicas set beside an HPA"
            );
            assert_eq!(
                hpa["spec"]["scaleTargetRef"]["name"].as_str(),
                deployment.metadata.name.as_deref()
            );
            assert_eq!(
                hpa["spec"]["metrics"][0]["pods"]["metric"]["name"],
                "cattail_connected_agents"
            );
        } else {
            assert!(spec.replicas.is_some(), "{file}");
        }

        // The NetworkPolicy selects the pods and opens only the two named ports.
        for policy in rendered.all_of("NetworkPolicy") {
            for (key, value) in policy["spec"]["podSelector"]["matchLabels"]
                .as_object()
                .unwrap()
            {
                assert_eq!(
                    labels.get(key).map(String::as_str),
                    value.as_str(),
                    "{file}"
                );
            }
            let ports: Vec<&Value> = policy["spec"]["ingress"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|rule| rule["ports"].as_array().unwrap())
                .map(|p| &p["port"])
                .collect();
            assert_eq!(ports, ["grpc", "admin"], "{file}");
        }
    }
}

/// Each file of `server/tests/helm/bad/` with the message its first line (`# expect: ...`)
/// promises.
fn bad_values() -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helm/bad");
    let mut files: Vec<(PathBuf, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let expect = text
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("# expect: "))
                .unwrap_or_else(|| panic!("{}: no `# expect:` line", path.display()))
                .to_owned();
            (path, expect)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn the_values_schema_refuses_bad_values() {
    let Some(helm) = helm() else { return };
    let bad = bad_values();
    assert!(bad.len() >= 10, "server/tests/helm/bad/ holds the cases");
    for (path, expect) in bad {
        match template(&helm, &path, "cattail-system") {
            Ok(_) => panic!("{}: rendered, but must be refused", path.display()),
            Err(message) => assert!(
                message.contains(&expect),
                "{}: refused, but not with {expect:?}:\n{message}",
                path.display()
            ),
        }
    }
}

/// Creates the stand-in CRDs of `tests/helm/crds.yaml` and waits until they are served.
async fn install_crds(client: &kube::Client) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helm/crds.yaml");
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in objects(&std::fs::read_to_string(path).unwrap()) {
        let crd: CustomResourceDefinition = serde_json::from_value(crd).unwrap();
        let name = crd.metadata.name.clone().unwrap();
        api.create(&PostParams::default(), &crd).await.unwrap();
        tokio::time::timeout(
            WAIT,
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} is not established"))
        .unwrap();
    }
}

/// Server-side apply of `object` with `dryRun=All` and strict field validation: the API server
/// runs defaulting, validation and admission, and stores nothing. The error names the object.
async fn dry_run(
    client: &kube::Client,
    discovery: &Discovery,
    object: &Value,
    what: &str,
) -> Result<(), String> {
    let object: DynamicObject = serde_json::from_value(object.clone()).unwrap();
    let types = object.types.clone().unwrap();
    let gvk = GroupVersionKind::try_from(&types).unwrap();
    let (resource, capabilities) = discovery
        .resolve_gvk(&gvk)
        .unwrap_or_else(|| panic!("{what}: the API server does not serve {gvk:?}"));
    let name = object.metadata.name.clone().unwrap();
    let api: Api<DynamicObject> = match capabilities.scope {
        Scope::Cluster => Api::all_with(client.clone(), &resource),
        Scope::Namespaced => {
            let namespace = object
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| panic!("{what}: {} {name} has no namespace", types.kind));
            Api::namespaced_with(client.clone(), &namespace, &resource)
        }
    };
    let params = PatchParams::apply("cattail-test")
        .dry_run()
        .validation_strict();
    match api.patch(&name, &params, &Patch::Apply(&object)).await {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("{what}: {} {name} refused: {e}", types.kind)),
    }
}

/// Creates `namespace` for real: dry-run objects in it need it to exist.
async fn create_namespace(client: &kube::Client, namespace: &str) {
    let object: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
}

/// The kustomize base as `kubectl apply -k` would send it: its resources, and the ConfigMap its
/// configMapGenerator makes from config.yaml (kustomize is not installed here).
fn kustomize_base() -> Vec<Value> {
    let kustomization = kustomization();
    let mut all = Vec::new();
    for file in kustomization["resources"].as_sequence().unwrap() {
        let text = std::fs::read_to_string(base().join(file.as_str().unwrap())).unwrap();
        all.extend(objects(&text));
    }
    let generator = kustomization["configMapGenerator"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|g| g["name"].as_str() == Some("cattail-config"))
        .unwrap();
    let labels: BTreeMap<String, String> =
        serde_yaml_ng::from_value(generator["options"]["labels"].clone()).unwrap();
    let config = std::fs::read_to_string(config_file()).unwrap();
    all.push(serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "cattail-config",
            "namespace": generator["namespace"].as_str().unwrap(),
            "labels": labels,
        },
        "data": {"config.yaml": config},
    }));
    let overlay = base().join("../cert-manager/certificate.yaml");
    all.extend(objects(&std::fs::read_to_string(overlay).unwrap()));
    all
}

/// `helm install --dry-run=server` against testenv: helm's own path to the API server (it reads
/// the server's version and validates against its OpenAPI), and the release notes it prints.
fn helm_install_dry_run(helm: &Path, env: &TestEnv, values: &Path, namespace: &str) {
    let output = Command::new(helm)
        .args(["install", RELEASE])
        .arg(chart())
        .args(["--namespace", namespace, "--dry-run=server"])
        .arg("--kubeconfig")
        .arg(env.kubeconfig_path())
        .arg("--values")
        .arg(values)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "helm install --dry-run=server with {}: {}{stdout}",
        values.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let notes = stdout
        .split_once("\nNOTES:\n")
        .map(|(_, notes)| notes)
        .unwrap_or_else(|| panic!("no release notes: {stdout}"));
    let address = format!("://{RELEASE}.{namespace}.svc:5473");
    assert!(
        notes.contains(&address),
        "the notes name {address}: {notes}"
    );
}

#[tokio::test]
async fn every_object_passes_a_server_side_dry_run() {
    let Some(helm) = helm() else { return };
    let env = TestEnv::start().await.unwrap();
    let client = env.client();
    install_crds(&client).await;
    let discovery = Discovery::new(client.clone()).run().await.unwrap();

    let mut checked = 0;
    for values in ci_values() {
        let stem = values.file_stem().unwrap().to_string_lossy().into_owned();
        let namespace = format!("ci-{stem}");
        create_namespace(&client, &namespace).await;
        let rendered = Rendered::new(&helm, &values, &namespace);
        helm_install_dry_run(&helm, &env, &values, &namespace);
        for object in &rendered.objects {
            dry_run(&client, &discovery, object, &rendered.file)
                .await
                .unwrap();
            checked += 1;
        }
    }

    let base = kustomize_base();
    let namespace = base
        .iter()
        .find(|o| o["kind"] == "Namespace")
        .and_then(|o| o["metadata"]["name"].as_str())
        .unwrap();
    create_namespace(&client, namespace).await;
    for object in &base {
        dry_run(&client, &discovery, object, "the kustomize base")
            .await
            .unwrap();
        checked += 1;
    }
    assert!(checked > 40, "only {checked} objects were checked");

    // A dry run stores nothing: the chart's Deployment does not exist.
    let deployments = Api::<Deployment>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(deployments.items.is_empty());

    // The dry run does refuse what the real server refuses: an unknown field, strictly.
    let mut bad =
        objects(&template(&helm, &chart().join("ci/existing-secret.yaml"), namespace).unwrap())
            .into_iter()
            .find(|o| o["kind"] == "Deployment")
            .unwrap();
    bad["spec"]["replica"] = serde_json::json!(3);
    let refused = dry_run(&client, &discovery, &bad, "a broken Deployment")
        .await
        .expect_err("a Deployment with an unknown field passed the dry run");
    assert!(refused.contains("replica"), "{refused}");
}

#[tokio::test]
async fn the_chart_rbac_is_enough_to_get_in_sync() {
    let Some(helm) = helm() else { return };
    let env = TestEnv::start().await.unwrap();
    let admin = env.client();
    // Token auth on, so the role includes tokenreviews; the default profile.
    let namespace = "cattail-system";
    let rendered = Rendered::new(&helm, &chart().join("ci/issuer.yaml"), namespace);
    create_namespace(&admin, namespace).await;
    let post = PostParams::default();
    let account: ServiceAccount = rendered.one("ServiceAccount");
    Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
        .create(&post, &account)
        .await
        .unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .create(&post, &rendered.one("ClusterRole"))
        .await
        .unwrap();
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&post, &rendered.one("ClusterRoleBinding"))
        .await
        .unwrap();
    let name = account.metadata.name.clone().unwrap();
    let agent = env.service_account_client(namespace, &name).await.unwrap();

    // Nothing beyond the role: no Secrets.
    match Api::<Secret>::namespaced(agent.clone(), namespace)
        .list(&ListParams::default())
        .await
    {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("listing secrets: expected 403, got {other:?}"),
    }

    // The real server with the chart's config, acting as the chart's ServiceAccount.
    let options = ServeOptions::from_config(rendered.config()).unwrap();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token = CancellationToken::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(serve(
        options,
        agent,
        grpc,
        None,
        cattail_server::admin::metrics_handle(),
        token.clone(),
        Some(ready_tx),
    ));
    let handle = ready_rx.await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !handle.sync.get() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server never got in sync with the chart's RBAC"
        );
        assert!(!task.is_finished(), "the server stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    token.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
