//! The Helm chart (`charts/couchshare`): it lints, every value set renders manifests the real
//! kube-apiserver accepts (server-side dry run, strict validation), bad values are refused by
//! its schema, its CRDs are the generated ones, and the operator runs a whole scenario under
//! exactly the RBAC the chart grants (a ServiceAccount token, no admin rights).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use couchshare::api::{CouchDatabase, CouchGrant, CouchServer, CouchUser};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::{Api, DeleteParams};
use serde_json::json;
use support::operator::{Operator, admin_secret, apply_json, secret_data, server_manifest, wait_gone, wait_ready};
use support::{couchdb, k8s};

/// Kubernetes version the chart is rendered for (the test API server's).
const KUBE_VERSION: &str = "1.36.3";

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/couchshare")
}

fn require_k8s() -> bool {
    std::env::var("COUCHSHARE_REQUIRE_K8S").as_deref() == Ok("1")
}

/// The binary named by `var` (`COUCHSHARE_HELM`, `COUCHSHARE_KUBECTL`), or `None` after a SKIP
/// notice; with `COUCHSHARE_REQUIRE_K8S=1` a missing one fails the test.
fn tool(test: &str, var: &str) -> Option<String> {
    match std::env::var(var).ok().filter(|v| !v.is_empty()) {
        Some(path) => Some(path),
        None if require_k8s() => panic!("{test}: COUCHSHARE_REQUIRE_K8S=1 but {var} is not set"),
        None => {
            couchdb::say_skip(&format!(
                "SKIP {test}: {var} is not set (run through tools/test, or source the k8s.env that \
                 tools/testbin/start-k8s.sh writes)"
            ));
            None
        }
    }
}

/// Runs `program args`, feeding `stdin` when given.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {program}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(input.as_bytes()).unwrap_or_else(|e| panic!("writing to {program}: {e}"));
    }
    child.wait_with_output().unwrap_or_else(|e| panic!("waiting for {program}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `helm template <release> charts/couchshare -n <ns> --kube-version .. --skip-crds [extra..]`:
/// the manifests, or helm's error output.
fn helm_template(helm: &str, release: &str, ns: &str, extra: &[&str]) -> Result<String, String> {
    let chart = chart_dir();
    let mut args = vec!["template", release, chart.to_str().expect("UTF-8 path"), "-n", ns];
    args.extend(["--kube-version", KUBE_VERSION, "--skip-crds"]);
    args.extend(extra);
    let out = run(helm, &args, None);
    if out.status.success() { Ok(text(&out.stdout)) } else { Err(text(&out.stderr)) }
}

/// `--set` arguments for each `key=value`.
fn sets<'a>(values: &[&'a str]) -> Vec<&'a str> {
    values.iter().flat_map(|v| ["--set", v]).collect()
}

/// One rendered document: its kind, name, namespace (if any) and YAML text.
#[derive(Debug, Clone)]
struct Doc {
    kind: String,
    name: String,
    namespace: Option<String>,
    yaml: String,
}

/// Splits `helm template` output into documents (empty ones dropped).
fn documents(rendered: &str) -> Vec<Doc> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(rendered)
        .filter_map(|doc| {
            let value = serde_yaml_ng::Value::deserialize(doc).expect("helm renders valid YAML");
            if value.is_null() {
                return None;
            }
            let field = |path: &[&str]| {
                path.iter().try_fold(&value, |v, k| v.get(*k)).and_then(|v| v.as_str()).map(str::to_owned)
            };
            Some(Doc {
                kind: field(&["kind"]).expect("every document has a kind"),
                name: field(&["metadata", "name"]).expect("every document has a name"),
                namespace: field(&["metadata", "namespace"]),
                yaml: serde_yaml_ng::to_string(&value).expect("re-serialize"),
            })
        })
        .collect()
}

fn join(docs: &[&Doc]) -> String {
    docs.iter().map(|d| format!("---\n{}", d.yaml)).collect()
}

fn kinds(docs: &[Doc]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for d in docs {
        *counts.entry(d.kind.clone()).or_insert(0) += 1;
    }
    counts
}

/// Applies `docs` with `kubectl apply --server-side`, one call per namespace (`-n` must match
/// the documents' own namespace); cluster-scoped documents go with `default_ns`.
fn kubectl_apply(kubectl: &str, default_ns: &str, docs: &[Doc], dry_run: bool) -> Result<String, String> {
    let mut groups: BTreeMap<String, Vec<&Doc>> = BTreeMap::new();
    for d in docs {
        groups.entry(d.namespace.clone().unwrap_or_else(|| default_ns.to_owned())).or_default().push(d);
    }
    let mut report = String::new();
    for (ns, group) in groups {
        let mut args = vec!["apply", "--server-side", "--validate=strict", "--field-manager=ci", "-n", &ns, "-f", "-"];
        if dry_run {
            args.insert(2, "--dry-run=server");
        }
        let out = run(kubectl, &args, Some(&join(&group)));
        if !out.status.success() {
            return Err(format!("kubectl apply -n {ns} failed:\n{}{}", text(&out.stdout), text(&out.stderr)));
        }
        report.push_str(&text(&out.stdout));
    }
    Ok(report)
}

#[test]
fn helm_lint_passes() {
    let test = "helm_lint_passes";
    let Some(helm) = tool(test, "COUCHSHARE_HELM") else { return };
    let chart = chart_dir();
    let chart = chart.to_str().expect("UTF-8 path");
    for values in
        [&[][..], &["couchdb.enabled=true"], &["couchdb.enabled=true", "couchdb.nodes=3"], &["watchNamespace=apps"]]
    {
        let mut args = vec!["lint", "--strict", chart, "--kube-version", KUBE_VERSION];
        args.extend(sets(values));
        let out = run(&helm, &args, None);
        assert!(
            out.status.success(),
            "helm lint --strict {values:?} failed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}

#[test]
fn chart_crds_are_identical_to_the_generated_ones() {
    let read_dir = |dir: &Path| -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|entry| {
                let path = entry.expect("directory entry").path();
                let name = path.file_name().expect("file name").to_string_lossy().into_owned();
                (name, std::fs::read(&path).expect("read CRD file"))
            })
            .collect()
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let generated = read_dir(&root.join("crds"));
    let chart = read_dir(&chart_dir().join("crds"));
    let fix = "(cp crds/*.yaml charts/couchshare/crds/)";
    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        generated.keys().collect::<Vec<_>>(),
        "the chart has the same CRD files as crds/ {fix}"
    );
    for (name, bytes) in &generated {
        assert!(chart[name] == *bytes, "charts/couchshare/crds/{name} differs from crds/{name} {fix}");
    }
    // And both are what the types generate now.
    let files = couchshare::api::crd_files().expect("CRDs serialize");
    assert_eq!(files.len(), 7, "seven CRDs");
    for (name, yaml) in files {
        assert!(chart.get(&name).is_some_and(|b| b == yaml.as_bytes()), "charts/couchshare/crds/{name} is stale");
    }
}

#[test]
fn invalid_values_are_refused_by_the_schema() {
    let test = "invalid_values_are_refused_by_the_schema";
    let Some(helm) = tool(test, "COUCHSHARE_HELM") else { return };
    // (values, a word the error must contain)
    let cases: &[(&[&str], &str)] = &[
        (&["replicas=0"], "replicas"),
        (&["replicas=two"], "replicas"),
        (&["logFormat=xml"], "logFormat"),
        (&["couchdb.nodes=0"], "nodes"),
        (&["unknownKey=1"], "unknownKey"),
        (&["couchdb.unknownKey=1"], "unknownKey"),
        (&["resyncInterval=5 minutes"], "resyncInterval"),
        (&["watchNamespace=Not_A_Namespace"], "watchNamespace"),
        (&["image.repository=null"], "repository"),
        (&["concurrency=0"], "concurrency"),
        (&["couchdb.allowedNamespaces.from=Everyone"], "from"),
        // A selector exactly with `from: Selector`, and a label selector's own keys.
        (&["couchdb.allowedNamespaces.from=Selector"], "selector"),
        (&["couchdb.trustedNamespaces.selector.matchLabels.team=a"], "selector"),
        (
            &["couchdb.allowedNamespaces.from=Selector", "couchdb.allowedNamespaces.selector.matchLabelz.a=b"],
            "matchLabelz",
        ),
        // Rules the schema cannot express fail in the templates, with a message as clear.
        (&["couchdb.enabled=true", "couchdb.cluster.copies=3"], "couchdb.cluster.copies"),
        (&["couchdb.enabled=true", "watchNamespace=apps"], "watchNamespace"),
    ];
    for (values, word) in cases {
        match helm_template(&helm, "rel", "default", &sets(values)) {
            Ok(_) => panic!("helm template {values:?} rendered; the chart must refuse it"),
            Err(message) => {
                assert!(message.contains(word), "helm template {values:?} failed without naming {word:?}:\n{message}")
            }
        }
    }
    // The chart's kubeVersion (>= 1.33) is checked too.
    let chart = chart_dir();
    let args = ["template", "rel", chart.to_str().expect("UTF-8 path"), "--kube-version", "1.32.0"];
    let out = run(&helm, &args, None);
    assert!(!out.status.success(), "Kubernetes 1.32 is refused");
    assert!(text(&out.stderr).contains("kubeVersion"), "{}", text(&out.stderr));
    // And the defaults render.
    helm_template(&helm, "rel", "default", &[]).expect("default values render");
}

/// `group/resource:verb` for every permission a Role or ClusterRole document grants.
fn permissions(doc: &Doc) -> BTreeSet<String> {
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&doc.yaml).expect("YAML");
    let strings = |v: &serde_yaml_ng::Value| -> Vec<String> {
        v.as_sequence().into_iter().flatten().map(|s| s.as_str().expect("a string").to_owned()).collect()
    };
    let mut out = BTreeSet::new();
    for rule in value["rules"].as_sequence().expect("rules") {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    out.insert(format!("{group}/{resource}:{verb}"));
                }
            }
        }
    }
    out
}

fn expand(groups_resources: &[&str], verbs: &[&str]) -> BTreeSet<String> {
    groups_resources.iter().flat_map(|gr| verbs.iter().map(move |v| format!("{gr}:{v}"))).collect()
}

#[test]
fn the_rbac_grants_exactly_the_listed_verbs() {
    let test = "the_rbac_grants_exactly_the_listed_verbs";
    let Some(helm) = tool(test, "COUCHSHARE_HELM") else { return };
    let kinds = [
        "couchservers",
        "couchdatabases",
        "couchusers",
        "couchgrants",
        "couchshares",
        "couchbackups",
        "couchscheduledbackups",
    ];
    let resources: Vec<String> = kinds.iter().map(|k| format!("couchshare.io/{k}")).collect();
    let statuses: Vec<String> = kinds.iter().map(|k| format!("couchshare.io/{k}/status")).collect();
    fn refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let mut namespaced = expand(&refs(&resources), &["get", "list", "watch", "patch", "update"]);
    namespaced.extend(expand(&refs(&statuses), &["get", "patch", "update"]));
    namespaced.extend(expand(&["couchshare.io/couchbackups"], &["create", "delete"]));
    namespaced.extend(expand(&["/secrets"], &["get", "list", "watch", "create", "patch", "delete"]));
    namespaced.extend(expand(&["events.k8s.io/events"], &["create", "patch"]));
    let mut cluster = expand(&["apiextensions.k8s.io/customresourcedefinitions"], &["get"]);
    cluster.extend(expand(&["/namespaces"], &["get"]));
    let leases = expand(&["coordination.k8s.io/leases"], &["get", "create", "update", "patch"]);

    let render = |values: &[&str]| {
        let docs = documents(&helm_template(&helm, "rel", "couchshare", &sets(values)).expect("renders"));
        for d in docs.iter().filter(|d| d.kind == "Role" || d.kind == "ClusterRole") {
            assert!(!permissions(d).iter().any(|p| p.contains('*')), "no wildcard in {} {}", d.kind, d.name);
        }
        docs
    };
    let role = |docs: &[Doc], kind: &str, ns: Option<&str>, suffix: &str| -> BTreeSet<String> {
        let found: Vec<&Doc> = docs
            .iter()
            .filter(|d| d.kind == kind && d.namespace.as_deref() == ns && d.name.ends_with(suffix))
            .collect();
        assert_eq!(found.len(), 1, "one {kind} *{suffix} in {ns:?}");
        permissions(found[0])
    };

    // Cluster-wide (default): one ClusterRole with everything but the Lease.
    let docs = render(&[]);
    let mut all = namespaced.clone();
    all.extend(cluster.iter().cloned());
    assert_eq!(role(&docs, "ClusterRole", None, "couchshare"), all);
    assert_eq!(role(&docs, "Role", Some("couchshare"), "-leader-election"), leases);
    assert_eq!(docs.iter().filter(|d| d.kind == "ClusterRole" || d.kind == "Role").count(), 2);
    let binding = docs.iter().find(|d| d.kind == "ClusterRoleBinding").expect("a ClusterRoleBinding");
    assert!(binding.yaml.contains("kind: ServiceAccount") && binding.yaml.contains("namespace: couchshare"));

    // watchNamespace: the namespaced part in a Role there; only cluster-scoped reads stay cluster-wide.
    let docs = render(&["watchNamespace=apps"]);
    assert_eq!(role(&docs, "Role", Some("apps"), "couchshare"), namespaced);
    assert_eq!(role(&docs, "ClusterRole", None, "-cluster-reads"), cluster);
    assert_eq!(role(&docs, "Role", Some("couchshare"), "-leader-election"), leases);
    assert_eq!(docs.iter().filter(|d| d.kind == "ClusterRole" || d.kind == "Role").count(), 3);
    let binding = docs.iter().find(|d| d.kind == "RoleBinding" && d.namespace.as_deref() == Some("apps"));
    assert!(binding.is_some_and(|b| b.yaml.contains("namespace: couchshare")), "bound to the release's ServiceAccount");

    // rbac.create=false: none at all.
    let docs = render(&["rbac.create=false"]);
    assert!(docs.iter().all(|d| !d.kind.contains("Role")), "no RBAC with rbac.create=false");
}

/// The operator container of a rendered Deployment.
fn operator_container(values: &[&str], helm: &str) -> serde_yaml_ng::Value {
    let docs = documents(&helm_template(helm, "rel", "couchshare", &sets(values)).expect("renders"));
    let deployment = docs.iter().find(|d| d.kind == "Deployment").expect("a Deployment");
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&deployment.yaml).expect("YAML");
    let pod = &value["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], serde_yaml_ng::Value::from(true));
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"].as_str(), Some("RuntimeDefault"));
    let mut c = pod["containers"][0].clone();
    c["replicas"] = value["spec"]["replicas"].clone();
    c["serviceAccountName"] = pod["serviceAccountName"].clone();
    c["podVolumes"] = pod["volumes"].clone();
    c
}

#[test]
fn the_deployment_runs_the_operator_locked_down() {
    let test = "the_deployment_runs_the_operator_locked_down";
    let Some(helm) = tool(test, "COUCHSHARE_HELM") else { return };
    let args = |c: &serde_yaml_ng::Value| -> Vec<String> {
        c["args"].as_sequence().expect("args").iter().map(|a| a.as_str().expect("string").to_owned()).collect()
    };
    let c = operator_container(&[], &helm);
    assert_eq!(c["image"].as_str(), Some("ghcr.io/couchshare/couchshare:0.1.0"), "tag defaults to appVersion");
    assert_eq!(c["replicas"].as_u64(), Some(2));
    assert_eq!(c["serviceAccountName"].as_str(), Some("rel-couchshare"));
    let a = args(&c);
    assert_eq!(a[0], "run");
    for pair in [
        ["--health-addr", "0.0.0.0:8080"],
        ["--log-format", "json"],
        ["--concurrency", "8"],
        ["--resync-interval", "5m"],
        ["--lease-name", "rel-couchshare-leader"],
    ] {
        assert!(a.windows(2).any(|w| w == pair), "args {a:?} contain {pair:?}");
    }
    assert!(a.contains(&"--leader-election".to_owned()), "{a:?}");
    assert!(!a.contains(&"--namespace".to_owned()), "cluster-wide by default: {a:?}");
    let env: BTreeMap<String, String> = c["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .map(|e| {
            let source = e["valueFrom"]["fieldRef"]["fieldPath"].as_str().or(e["value"].as_str()).unwrap_or_default();
            (e["name"].as_str().expect("name").to_owned(), source.to_owned())
        })
        .collect();
    assert_eq!(env.get("POD_NAME").map(String::as_str), Some("metadata.name"));
    assert_eq!(env.get("POD_NAMESPACE").map(String::as_str), Some("metadata.namespace"));
    assert!(env.contains_key("RUST_LOG"));
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsUser"].as_u64(), Some(65532));
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(sc["capabilities"]["drop"][0].as_str(), Some("ALL"));
    assert_eq!(c["livenessProbe"]["httpGet"]["path"].as_str(), Some("/healthz"));
    assert_eq!(c["readinessProbe"]["httpGet"]["path"].as_str(), Some("/readyz"));
    assert_eq!(c["ports"][0]["name"].as_str(), Some("http"));
    assert_eq!(c["ports"][0]["containerPort"].as_u64(), Some(8080));
    assert!(c["resources"]["limits"]["memory"].is_string(), "resource limits from values");
    assert!(!a.contains(&"--backup-dir".to_owned()), "no backup volume by default: {a:?}");
    assert!(c["volumeMounts"].is_null() && c["podVolumes"].is_null(), "no volume by default");

    // backupVolume: the volume is the pod's, mounted at /backups, and the operator writes there.
    let c = operator_container(&["backupVolume.persistentVolumeClaim.claimName=couchshare-backups"], &helm);
    let a = args(&c);
    assert!(a.windows(2).any(|w| w == ["--backup-dir", "/backups"]), "{a:?}");
    assert_eq!(c["volumeMounts"][0]["name"].as_str(), Some("backups"));
    assert_eq!(c["volumeMounts"][0]["mountPath"].as_str(), Some("/backups"));
    assert_eq!(c["volumeMounts"][0]["readOnly"].as_bool(), None, "writable");
    assert_eq!(c["podVolumes"][0]["name"].as_str(), Some("backups"));
    assert_eq!(c["podVolumes"][0]["persistentVolumeClaim"]["claimName"].as_str(), Some("couchshare-backups"));

    let c = operator_container(
        &["watchNamespace=apps", "logFormat=human", "image.tag=1.2.3", "replicas=3", "rustLog=debug"],
        &helm,
    );
    let a = args(&c);
    assert!(a.windows(2).any(|w| w == ["--namespace", "apps"]), "{a:?}");
    assert!(a.windows(2).any(|w| w == ["--log-format", "human"]), "{a:?}");
    assert_eq!(c["image"].as_str(), Some("ghcr.io/couchshare/couchshare:1.2.3"));
    assert_eq!(c["replicas"].as_u64(), Some(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_value_set_renders_manifests_the_api_server_accepts() {
    let test = "every_value_set_renders_manifests_the_api_server_accepts";
    let Some(client) = k8s::client(test).await else { return };
    let Some(helm) = tool(test, "COUCHSHARE_HELM") else { return };
    let Some(kubectl) = tool(test, "COUCHSHARE_KUBECTL") else { return };
    let started = Instant::now();
    // With --skip-crds the CouchServer (couchdb.enabled) is checked against the real CRD, and
    // the ServiceMonitor (serviceMonitor.enabled) against the Prometheus Operator's kind.
    k8s::install_crds(&client).await;
    k8s::install_fixture_crd(&client, "servicemonitor-crd.yaml").await;

    struct Case {
        name: &'static str,
        values: Vec<String>,
        /// Kinds (with counts) the render must contain, and no others.
        expect: Vec<(&'static str, usize)>,
    }
    let with = |base: &[(&'static str, usize)], changes: &[(&'static str, usize)]| {
        let mut kinds: BTreeMap<&'static str, usize> = base.iter().copied().collect();
        kinds.extend(changes.iter().copied());
        kinds.into_iter().collect::<Vec<_>>()
    };
    let operator = with(
        &[
            ("ServiceAccount", 1),
            ("ClusterRole", 1),
            ("ClusterRoleBinding", 1),
            ("Role", 1),
            ("RoleBinding", 1),
            ("Service", 1),
            ("Deployment", 1),
        ],
        &[],
    );
    let couchdb = |secrets| {
        with(
            &operator,
            &[("Service", 3), ("Secret", secrets), ("ConfigMap", 1), ("StatefulSet", 1), ("CouchServer", 1)],
        )
    };
    // A Role and RoleBinding in the watched namespace, next to the leader-election ones.
    let namespaced = [("Role", 2), ("RoleBinding", 2)];
    let strings = |values: &[&str]| values.iter().map(|v| v.to_string()).collect::<Vec<_>>();

    let other_ns = k8s::namespace(&client, "chart-watched").await;
    let cases = vec![
        Case { name: "defaults", values: vec![], expect: operator.clone() },
        Case { name: "couchdb single node", values: strings(&["couchdb.enabled=true"]), expect: couchdb(1) },
        Case {
            name: "couchdb cluster of 3",
            values: strings(&[
                "couchdb.enabled=true",
                "couchdb.nodes=3",
                "couchdb.cluster.shards=8",
                "couchdb.allowedNamespaces.from=All",
            ]),
            expect: couchdb(2),
        },
        Case {
            name: "namespaced RBAC (another namespace)",
            values: vec![format!("watchNamespace={other_ns}")],
            expect: with(&operator, &namespaced),
        },
        Case {
            name: "namespaced RBAC (release namespace) with couchdb",
            // The release namespace is only known below: "{release}" is replaced.
            values: strings(&["watchNamespace={release}", "couchdb.enabled=true"]),
            expect: with(&couchdb(1), &namespaced),
        },
        Case {
            name: "other knobs",
            values: strings(&[
                "replicas=1",
                "logFormat=human",
                "image.tag=dev",
                "concurrency=2",
                "resyncInterval=90s",
                "serviceAccount.name=couchshare-operator",
                "couchdb.enabled=true",
                "couchdb.persistence.enabled=false",
                "couchdb.serverName=shared",
                "couchdb.adminSecret.name=my-couchdb-admin",
                "couchdb.config.couchdb.max_document_size=8000000",
                "couchdb.serverSpec.config.cors.enabled=true",
                "podLabels.team=data",
                "backupVolume.persistentVolumeClaim.claimName=couchshare-backups",
            ]),
            expect: couchdb(1),
        },
        Case {
            name: "serviceMonitor enabled",
            values: strings(&["serviceMonitor.enabled=true"]),
            expect: with(&operator, &[("ServiceMonitor", 1)]),
        },
    ];

    for case in cases {
        let ns = k8s::namespace(&client, "chart").await;
        let values: Vec<String> = case.values.iter().map(|v| v.replace("{release}", &ns)).collect();
        let set_args: Vec<&str> = values.iter().flat_map(|v| ["--set", v.as_str()]).collect();
        let rendered = helm_template(&helm, "rel", &ns, &set_args)
            .unwrap_or_else(|e| panic!("{}: helm template {values:?} failed:\n{e}", case.name));
        let docs = documents(&rendered);
        if case.name == "serviceMonitor enabled" {
            let monitors: Vec<&Doc> = docs.iter().filter(|d| d.kind == "ServiceMonitor").collect();
            assert_eq!(monitors.len(), 1, "serviceMonitor.enabled renders a ServiceMonitor");
            assert!(monitors[0].yaml.contains("port: http-metrics"), "{}", monitors[0].yaml);
            // The server validates it (strict): the same document with a misspelt key is refused,
            // so its acceptance below means something.
            let mut misspelt = monitors[0].clone();
            misspelt.yaml = misspelt.yaml.replace("scrapeTimeout:", "scrapeTimout:");
            assert_ne!(misspelt.yaml, monitors[0].yaml, "the ServiceMonitor has a scrapeTimeout");
            let refused = kubectl_apply(&kubectl, &ns, &[misspelt], true)
                .expect_err("a ServiceMonitor with an unknown field is refused by the API server");
            assert!(refused.contains("scrapeTimout"), "the refusal names the field: {refused}");
        } else {
            assert!(docs.iter().all(|d| d.kind != "ServiceMonitor"), "{}: no ServiceMonitor by default", case.name);
        }
        let found = kinds(&docs);
        let expected: BTreeMap<String, usize> = case.expect.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        assert_eq!(found, expected, "{}: the kinds rendered", case.name);

        let report = kubectl_apply(&kubectl, &ns, &docs, true).unwrap_or_else(|e| {
            panic!("{}: the API server refused the rendered manifests ({values:?}):\n{e}", case.name)
        });
        let accepted = report.lines().filter(|l| l.contains("(server dry run)")).count();
        assert_eq!(accepted, docs.len(), "{}: every document accepted:\n{report}", case.name);
        println!("{}: {values:?} -> {found:?}, accepted by the API server (dry run)", case.name);
    }
    println!("{test}: {:.1?}", started.elapsed());
}

/// The chart's RBAC installed for real in a fresh release namespace, and a kubeconfig that
/// authenticates as its ServiceAccount.
struct ChartIdentity {
    release_ns: String,
    fullname: String,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

/// The cluster and CA of the admin kubeconfig (`$KUBECONFIG`) with a ServiceAccount token.
fn token_kubeconfig(token: &str) -> String {
    let path = std::env::var("KUBECONFIG").expect("KUBECONFIG");
    let admin: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&path).expect("read KUBECONFIG")).expect("kubeconfig YAML");
    let cluster = &admin["clusters"][0]["cluster"];
    let server = cluster["server"].as_str().expect("cluster server");
    let ca = match std::env::var("COUCHSHARE_TEST_PKI") {
        Ok(pki) => json!({"certificate-authority": format!("{pki}/ca.crt")}),
        Err(_) => json!({"certificate-authority-data": cluster["certificate-authority-data"].as_str().expect("CA")}),
    };
    let mut cluster = json!({"server": server});
    cluster.as_object_mut().expect("object").extend(ca.as_object().expect("object").clone());
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": "couchshare-operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "test", "user": "couchshare-operator"}}],
        "current-context": "operator",
    });
    serde_yaml_ng::to_string(&config).expect("kubeconfig")
}

/// Renders the chart (cluster-wide, or watching only `watch`), applies only its ServiceAccount
/// and RBAC for real in a fresh release namespace, and writes a kubeconfig with a token of that
/// ServiceAccount.
async fn install_chart_rbac(client: &Client, helm: &str, kubectl: &str, watch: Option<&str>) -> ChartIdentity {
    let release_ns = k8s::namespace(client, "chart-rel").await;
    // ClusterRoles are cluster-wide: a release name no other run uses.
    let release = format!("cs-{}", release_ns.rsplit('-').next().expect("suffix"));
    let watch_value = format!("watchNamespace={}", watch.unwrap_or(""));
    let rendered = helm_template(helm, &release, &release_ns, &["--set", &watch_value])
        .unwrap_or_else(|e| panic!("helm template: {e}"));
    let rbac_kinds = ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"];
    let docs: Vec<Doc> = documents(&rendered).into_iter().filter(|d| rbac_kinds.contains(&d.kind.as_str())).collect();
    let roles = docs.iter().filter(|d| d.kind == "Role").count();
    assert_eq!(roles, if watch.is_some() { 2 } else { 1 }, "a leader-election Role, and one for the watched namespace");
    let out = kubectl_apply(kubectl, &release_ns, &docs, false).unwrap_or_else(|e| panic!("installing RBAC: {e}"));
    println!("chart RBAC ({watch_value}) installed:\n{out}");
    let sa = docs.iter().find(|d| d.kind == "ServiceAccount").expect("a ServiceAccount").name.clone();
    // The ServiceAccount is named after the release (serviceAccount.name is empty).
    let fullname = sa.clone();

    let out = run(kubectl, &["create", "token", &sa, "-n", &release_ns, "--duration=1h"], None);
    assert!(out.status.success(), "kubectl create token: {}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("operator.kubeconfig");
    std::fs::write(&kubeconfig, token_kubeconfig(&token)).expect("write kubeconfig");

    // The token is the ServiceAccount, and has the chart's rights and no others.
    let path = kubeconfig.to_str().expect("UTF-8 path");
    let can = |args: &[&str]| {
        let mut full = vec!["--kubeconfig", path, "auth", "can-i"];
        full.extend(args);
        text(&run(kubectl, &full, None).stdout).trim().to_owned()
    };
    let everywhere = if watch.is_some() { "no" } else { "yes" };
    assert_eq!(can(&["watch", "couchdatabases.couchshare.io", "-A"]), everywhere, "watch in every namespace");
    let there = watch.unwrap_or("anywhere");
    assert_eq!(can(&["patch", "couchusers.couchshare.io", "--subresource=status", "-n", there]), "yes");
    assert_eq!(can(&["get", "customresourcedefinitions.apiextensions.k8s.io/couchusers.couchshare.io"]), "yes");
    assert_eq!(can(&["get", "customresourcedefinitions.apiextensions.k8s.io/crontabs.example.com"]), "no");
    assert_eq!(can(&["create", "leases.coordination.k8s.io", "-n", &release_ns]), "yes");
    assert_eq!(can(&["create", "leases.coordination.k8s.io", "-n", "default"]), "no", "leases only in the release ns");
    assert_eq!(can(&["create", "deployments.apps", "-n", &release_ns]), "no", "not an admin");
    assert_eq!(can(&["delete", "couchdatabases.couchshare.io", "-n", there]), "no", "no delete on resources");
    ChartIdentity { release_ns, fullname, kubeconfig, _dir: dir }
}

fn forbidden_lines(op: &Operator) -> Vec<String> {
    op.output().lines().filter(|l| l.to_lowercase().contains("forbidden")).map(str::to_owned).collect()
}

fn assert_nothing_forbidden(op: &Operator) {
    let forbidden = forbidden_lines(op);
    let shown: Vec<String> = forbidden.iter().take(3).map(|l| l.chars().take(600).collect()).collect();
    assert!(
        forbidden.is_empty(),
        "the chart's RBAC lacks a permission ({} forbidden lines in {}):\n{}",
        forbidden.len(),
        op.log.display(),
        shown.join("\n")
    );
}

/// A CouchServer, a CouchDatabase (deletionPolicy Delete), a CouchUser with a generated password
/// and a CouchGrant in `ns`, all Ready and real on CouchDB; then the database and the user are
/// deleted through their finalizers.
async fn scenario(client: &Client, couch: &couchshare::couch::CouchClient, ns: &str, op: &Operator) {
    admin_secret(client, ns).await;
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let _: CouchServer = apply_json(client, ns, server_manifest("main", &url, json!({}))).await;
    wait_ready(&Api::<CouchServer>::namespaced(client.clone(), ns), "main", op).await;

    let db = couchdb::unique_name("chart");
    let username = couchdb::unique_name("chart_user");
    let _: CouchDatabase = apply_json(
        client,
        ns,
        json!({"apiVersion": "couchshare.io/v1alpha1", "kind": "CouchDatabase", "metadata": {"name": "project"},
               "spec": {"serverRef": {"name": "main"}, "name": db, "deletionPolicy": "Delete"}}),
    )
    .await;
    let _: CouchUser = apply_json(
        client,
        ns,
        json!({"apiVersion": "couchshare.io/v1alpha1", "kind": "CouchUser", "metadata": {"name": "sync"},
               "spec": {"serverRef": {"name": "main"}, "username": username, "roles": ["sync"],
                        "credentialsSecret": {"databases": [db]}, "deletionPolicy": "Delete"}}),
    )
    .await;
    let _: CouchGrant = apply_json(
        client,
        ns,
        json!({"apiVersion": "couchshare.io/v1alpha1", "kind": "CouchGrant", "metadata": {"name": "sync-member"},
               "spec": {"database": {"name": "project"}, "access": "member", "users": [{"name": "sync"}]}}),
    )
    .await;
    let databases = Api::<CouchDatabase>::namespaced(client.clone(), ns);
    let users = Api::<CouchUser>::namespaced(client.clone(), ns);
    let grants = Api::<CouchGrant>::namespaced(client.clone(), ns);
    wait_ready(&databases, "project", op).await;
    wait_ready(&users, "sync", op).await;
    wait_ready(&grants, "sync-member", op).await;

    assert!(couch.database_exists(&db).await.expect("HEAD database"), "database {db} created on CouchDB");
    let creds = secret_data(client, ns, "sync-couchdb").await.expect("the credentials Secret exists");
    assert_eq!(creds.get("username").map(String::as_str), Some(username.as_str()));
    assert!(creds.get("password").is_some_and(|p| p.len() >= 20), "a generated password");
    let members = couchdb::eventually(Duration::from_secs(30), || async {
        let security = couch.security(&db).await.ok()?;
        security.members.names.contains(&username).then_some(())
    })
    .await;
    assert!(members.is_some(), "the grant made {username} a member of {db}\n{}", op.tail());

    // Finalizers under the chart's RBAC: deleting with deletionPolicy Delete removes the
    // database, and the user with its Secret, and then the resources go away. The grant goes
    // first: a grant reconcile reading `_security` while the database is being deleted can
    // recreate it on pouchdb-server (a real CouchDB answers 404).
    grants.delete("sync-member", &DeleteParams::default()).await.expect("delete CouchGrant");
    wait_gone(&grants, "sync-member", op).await;
    databases.delete("project", &DeleteParams::default()).await.expect("delete CouchDatabase");
    wait_gone(&databases, "project", op).await;
    assert!(!couch.database_exists(&db).await.expect("HEAD database"), "database {db} deleted on CouchDB");
    users.delete("sync", &DeleteParams::default()).await.expect("delete CouchUser");
    wait_gone(&users, "sync", op).await;
    assert!(secret_data(client, ns, "sync-couchdb").await.is_none(), "the credentials Secret is deleted");
    assert_nothing_forbidden(op);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_runs_a_scenario_under_the_charts_rbac() {
    let test = "the_operator_runs_a_scenario_under_the_charts_rbac";
    let Some(helm) = tool(test, "COUCHSHARE_HELM") else { return };
    let Some(kubectl) = tool(test, "COUCHSHARE_KUBECTL") else { return };
    let started = Instant::now();
    let Some((client, couch)) = support::servers(test).await else { return };
    let identity = install_chart_rbac(&client, &helm, &kubectl, None).await;
    let ns = k8s::namespace(&client, "chart-app").await;
    // Operator::start adds --namespace: fine, the chart's RBAC is cluster-wide here.
    let op = Operator::start(&ns, &["--kubeconfig", identity.kubeconfig.to_str().expect("UTF-8 path")]);
    scenario(&client, &couch, &ns, &op).await;
    println!(
        "{test}: release {} in {}, scenario in {ns}: {:.1?}",
        identity.fullname,
        identity.release_ns,
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_runs_a_scenario_under_the_charts_namespaced_rbac() {
    let test = "the_operator_runs_a_scenario_under_the_charts_namespaced_rbac";
    let Some(helm) = tool(test, "COUCHSHARE_HELM") else { return };
    let Some(kubectl) = tool(test, "COUCHSHARE_KUBECTL") else { return };
    let started = Instant::now();
    let Some((client, couch)) = support::servers(test).await else { return };
    // watchNamespace=<ns>: a Role there, a ClusterRole only for the CRDs and namespaces.
    let ns = k8s::namespace(&client, "chart-app").await;
    let identity = install_chart_rbac(&client, &helm, &kubectl, Some(&ns)).await;
    let op = Operator::start(&ns, &["--kubeconfig", identity.kubeconfig.to_str().expect("UTF-8 path")]);
    scenario(&client, &couch, &ns, &op).await;
    println!(
        "{test}: release {} in {}, scenario in {ns}: {:.1?}",
        identity.fullname,
        identity.release_ns,
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_elects_a_leader_under_the_charts_rbac() {
    let test = "the_operator_elects_a_leader_under_the_charts_rbac";
    let Some(helm) = tool(test, "COUCHSHARE_HELM") else { return };
    let Some(kubectl) = tool(test, "COUCHSHARE_KUBECTL") else { return };
    let started = Instant::now();
    let Some((client, _couch)) = support::servers(test).await else { return };
    let identity = install_chart_rbac(&client, &helm, &kubectl, None).await;
    let ns = k8s::namespace(&client, "chart-app").await;
    let kubeconfig = identity.kubeconfig.to_str().expect("UTF-8 path");
    // What the chart's Deployment passes: the Lease named after the release, in its namespace.
    let lease = format!("{}-leader", identity.fullname);
    let op = Operator::start(
        &ns,
        &[
            "--kubeconfig",
            kubeconfig,
            "--leader-election",
            "--lease-name",
            &lease,
            "--lease-namespace",
            &identity.release_ns,
        ],
    );

    admin_secret(&client, &ns).await;
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let _: CouchServer = apply_json(&client, &ns, server_manifest("main", &url, json!({}))).await;
    wait_ready(&Api::<CouchServer>::namespaced(client.clone(), &ns), "main", &op).await;

    let leases = Api::<Lease>::namespaced(client.clone(), &identity.release_ns);
    let held = couchdb::eventually(Duration::from_secs(30), || async {
        let l = leases.get_opt(&lease).await.ok()??;
        l.spec?.holder_identity.filter(|h| !h.is_empty())
    })
    .await;
    assert!(held.is_some(), "the Lease {lease} in {} is held\n{}", identity.release_ns, op.tail());
    assert!(op.output().contains("became the leader"), "the operator says it leads\n{}", op.tail());
    assert_nothing_forbidden(&op);
    println!("{test}: Lease {lease} held by {held:?}: {:.1?}", started.elapsed());
}

/// The data of a Secret, or `None` when it does not exist.
async fn secret(client: &Client, ns: &str, name: &str) -> Option<BTreeMap<String, String>> {
    secret_data(client, ns, name).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_couchdb_secrets_survive_upgrade_and_uninstall() {
    let test = "the_couchdb_secrets_survive_upgrade_and_uninstall";
    let Some(client) = k8s::client(test).await else { return };
    let Some(helm) = tool(test, "COUCHSHARE_HELM") else { return };
    let started = Instant::now();
    k8s::install_crds(&client).await;
    let ns = k8s::namespace(&client, "chart-install").await;
    let release = format!("cs-{}", ns.rsplit('-').next().expect("suffix"));
    let chart = chart_dir();
    let chart = chart.to_str().expect("UTF-8 path");
    // No kubelet: never --wait; --no-hooks so that nothing waits on a hook either. The CRDs
    // are installed already (by the tests' field manager, which helm's server-side apply of
    // crds/ would conflict with): --skip-crds.
    let helm_run = |verb: &str, extra: &[&str]| {
        let mut args = vec![verb, release.as_str()];
        if verb != "uninstall" {
            args.push(chart);
        }
        args.extend(["-n", ns.as_str(), "--no-hooks"]);
        if verb != "uninstall" {
            args.push("--skip-crds");
        }
        args.extend(extra);
        let out = run(&helm, &args, None);
        assert!(out.status.success(), "helm {verb} failed:\n{}{}", text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    };
    let values = ["--set", "couchdb.enabled=true", "--set", "couchdb.nodes=3"];
    let notes = helm_run("install", &values);
    assert!(
        notes.contains("Wait until the CouchServer main is Ready"),
        "NOTES say how to wait for the server:\n{notes}"
    );

    let admin = format!("{release}-couchshare-couchdb-admin");
    let cookie = format!("{release}-couchshare-couchdb-erlang-cookie");
    let first_admin = secret(&client, &ns, &admin).await.expect("admin Secret installed");
    let first_cookie = secret(&client, &ns, &cookie).await.expect("Erlang cookie Secret installed");
    assert_eq!(first_admin["username"], "admin");
    assert_eq!(first_admin["password"].len(), 32, "a random 32-character password");
    let servers = Api::<CouchServer>::namespaced(client.clone(), &ns);
    let server = servers.get("main").await.expect("the CouchServer main exists");
    assert_eq!(server.spec.admin_credentials.secret_ref.name, admin);
    assert_eq!(server.spec.url, format!("http://{release}-couchshare-couchdb.{ns}.svc:5984"));

    helm_run("upgrade", &[&values[..], &["--set", "replicas=1", "--set", "couchdb.cluster.shards=4"]].concat());
    assert_eq!(secret(&client, &ns, &admin).await.as_ref(), Some(&first_admin), "the admin Secret is unchanged");
    assert_eq!(secret(&client, &ns, &cookie).await.as_ref(), Some(&first_cookie), "the cookie is unchanged");

    helm_run("uninstall", &[]);
    assert_eq!(secret(&client, &ns, &admin).await.as_ref(), Some(&first_admin), "kept after uninstall");
    assert!(servers.get_opt("main").await.expect("get CouchServer").is_none(), "the CouchServer is uninstalled");
    // Installing again reuses the kept Secret, so CouchDB's data stays reachable.
    helm_run("install", &values);
    assert_eq!(secret(&client, &ns, &admin).await.as_ref(), Some(&first_admin), "reused by a new install");
    println!("{test}: {:.1?}", started.elapsed());
}
