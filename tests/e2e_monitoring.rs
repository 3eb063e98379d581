//! The dashboard and the alerts, proven against a real Prometheus: an e2e scenario (shares
//! running, completed and crashing, an on-change fan-in, a `_security` edited by hand, a
//! CouchServer that is down) with Prometheus scraping the operator on loopback; every panel's
//! PromQL run through Prometheus's HTTP API; `promtool check rules` and `promtool test rules`
//! with input series from that scrape, one firing and one silent case per alert, and the same
//! cases failing on a rules file with one alert broken. And the chart: the opt-in ConfigMap and
//! PrometheusRule carry exactly `monitoring/`'s files and pass the API server's validation.

mod support;

#[path = "monitoring/alert_tests.rs"]
mod alert_tests;
#[path = "monitoring/prometheus.rs"]
mod prometheus;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use alert_tests::{Case, Scraped, all_labels, label, labels_of, promtool};
use couchshare::api::{CouchServer, CouchShare};
use couchshare::couch::{CouchClient, CreateDatabase, Principals, Security};
use kube::api::Api;
use prometheus::{Prometheus, tool};
use serde_json::{Value, json};
use support::operator::{Operator, admin_secret, apply_json, manifest, server_manifest, wait_not_ready, wait_ready};
use support::{couchdb, k8s};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The tools, or a SKIP naming the missing one (a failure where capabilities are required).
fn tools(test: &str) -> Option<(PathBuf, PathBuf)> {
    let prometheus = tool("COUCHSHARE_PROMETHEUS", "prometheus");
    let promtool = tool("COUCHSHARE_PROMTOOL", "promtool");
    match (prometheus, promtool) {
        (Some(p), Some(t)) => Some((p, t)),
        _ => {
            couchdb::skip_lacking(&format!(
                "SKIP {test}: no prometheus/promtool (tools/testbin/install-monitoring.sh installs Debian's prometheus)"
            ));
            None
        }
    }
}

/// The panels of the dashboard: (title, [expr]).
fn panels() -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(root().join("monitoring/dashboard.json")).expect("dashboard");
    let dash: Value = serde_json::from_str(&text).expect("dashboard JSON");
    dash["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter(|p| p["type"] != "row")
        .map(|p| {
            let exprs =
                p["targets"].as_array().into_iter().flatten().filter_map(|t| t["expr"].as_str()).map(str::to_string);
            (p["title"].as_str().unwrap_or_default().to_string(), exprs.collect())
        })
        .collect()
}

/// Grafana's variables as "All" selects them.
fn as_all(expr: &str) -> String {
    expr.replace("$namespace", ".*")
}

/// The metric names an expression reads.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while let Some(at) = expr[i..].find("couchshare_") {
        let start = i + at;
        let end = start
            + expr[start..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(expr.len() - start);
        if start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == '_') {
            out.insert(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

/// The address the operator serves `/metrics` on, from its log.
fn metrics_address(op: &Operator) -> Option<String> {
    let out = op.output();
    let line = out.lines().find(|l| l.contains("serving /healthz"))?;
    let at = line.find("address=")?;
    Some(line[at + "address=".len()..].split_whitespace().next()?.to_string())
}

/// A per-user database as an app's sign-up makes it, with one document.
async fn user_database(couch: &CouchClient, prefix: &str, name: &str) -> String {
    let db = format!("{prefix}{}", hex::encode(name));
    couch.create_database(&db, &CreateDatabase { q: Some(1), ..Default::default() }).await.expect("per-user database");
    couch.put_document(&db, "note-1", &json!({"text": "hello"})).await.expect("a note");
    db
}

#[tokio::test]
async fn the_chart_ships_monitorings_dashboard_and_alerts() {
    for file in ["dashboard.json", "alerts.yaml"] {
        let source = std::fs::read_to_string(root().join("monitoring").join(file)).expect("monitoring file");
        let shipped = std::fs::read_to_string(root().join("charts/couchshare/files").join(file)).expect("chart file");
        assert!(
            source == shipped,
            "charts/couchshare/files/{file} differs from monitoring/{file}: cp monitoring/{file} charts/couchshare/files/"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_charts_dashboard_configmap_and_prometheusrule_pass_the_api_server() {
    let test = "the_charts_dashboard_configmap_and_prometheusrule_pass_the_api_server";
    let Some((client, _couch)) = support::servers(test).await else { return };
    let Some(helm) = std::env::var_os("COUCHSHARE_HELM") else {
        couchdb::say_skip(&format!("SKIP {test}: COUCHSHARE_HELM is not set (run through tools/test)"));
        return;
    };
    k8s::install_fixture_crd(&client, "prometheusrule-crd.yaml").await;
    let ns = k8s::namespace(&client, "monchart").await;
    let out = std::process::Command::new(helm)
        .args(["template", "mon", "charts/couchshare", "--namespace", &ns])
        .args(["--set", "grafanaDashboard.enabled=true,prometheusRule.enabled=true,prometheusRule.labels.release=kps"])
        .current_dir(root())
        .output()
        .expect("helm template");
    assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
    let docs = k8s::parse_yaml(&String::from_utf8_lossy(&out.stdout));
    let find = |kind: &str| {
        docs.iter().find(|d| {
            d.types.as_ref().is_some_and(|t| t.kind == kind)
                && d.metadata
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.get("app.kubernetes.io/component").map(String::as_str) == Some("monitoring"))
        })
    };
    let cm = find("ConfigMap").expect("the dashboard ConfigMap");
    assert_eq!(cm.metadata.labels.as_ref().and_then(|l| l.get("grafana_dashboard")).map(String::as_str), Some("1"));
    let shipped: Value =
        serde_json::from_str(cm.data["data"]["couchshare.json"].as_str().expect("dashboard key")).expect("JSON");
    let source: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("monitoring/dashboard.json")).expect("dashboard"))
            .expect("JSON");
    assert_eq!(shipped, source, "the ConfigMap holds monitoring/dashboard.json");
    let rule = find("PrometheusRule").expect("the PrometheusRule");
    let groups: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(root().join("monitoring/alerts.yaml")).expect("alerts"))
            .expect("YAML");
    assert_eq!(
        rule.data["spec"]["groups"], groups["groups"],
        "the PrometheusRule holds monitoring/alerts.yaml's groups"
    );
    for doc in [cm, rule] {
        let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), &ns, &k8s::api_resource(doc));
        let params = kube::api::PatchParams::apply("couchshare-tests").force().dry_run();
        let mut params = params;
        params.field_validation = Some(kube::api::ValidationDirective::Strict);
        api.patch(&doc.metadata.name.clone().unwrap_or_default(), &params, &kube::api::Patch::Apply(doc))
            .await
            .unwrap_or_else(|e| panic!("the API server refused {:?}: {e}", doc.types));
    }
    // Off by default.
    let out = std::process::Command::new(std::env::var_os("COUCHSHARE_HELM").expect("helm"))
        .args(["template", "mon", "charts/couchshare"])
        .current_dir(root())
        .output()
        .expect("helm template");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("kind: PrometheusRule") && !text.contains("grafana_dashboard"), "opt-in only");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_dashboard_panel_and_alert_holds_against_a_real_prometheus_scraping_the_operator() {
    let test = "every_dashboard_panel_and_alert_holds_against_a_real_prometheus_scraping_the_operator";
    let Some((client, couch)) = support::servers(test).await else { return };
    let Some((prometheus_bin, promtool_bin)) = tools(test) else { return };
    let rules_file = root().join("monitoring/alerts.yaml");
    let (ok, said) = promtool(&promtool_bin, &["check", "rules", &rules_file.display().to_string()]);
    assert!(ok, "promtool check rules: {said}");

    let ns = k8s::namespace(&client, "monitoring").await;
    admin_secret(&client, &ns).await;
    // A resync slower than the audit's cycle (at least 10 s), so that the audit, not the resync,
    // finds the hand edit below.
    let backup_dir = tempfile::tempdir().expect("a backup volume");
    let backup_path = backup_dir.path().to_str().expect("UTF-8").to_string();
    let op = Operator::start(
        &ns,
        &["--resync-interval", "60s", "--security-audit-rate", "50", "--backup-dir", &backup_path],
    );
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let servers: Api<CouchServer> = Api::namespaced(client.clone(), &ns);
    let shares: Api<CouchShare> = Api::namespaced(client.clone(), &ns);
    let _: CouchServer = apply_json(&client, &ns, server_manifest("main", &url, json!({}))).await;
    wait_ready(&servers, "main", &op).await;
    let work = std::env::var_os("COUCHSHARE_TEST_WORK").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let dir = work.join(format!("prometheus-{ns}"));
    let address = metrics_address(&op).expect("the operator logs its address");
    let prom = Prometheus::start(&prometheus_bin, &dir, &address, &rules_file);
    prom.ready().await;

    // The scenario: what each panel and alert is about, made for real.
    let mut names = BTreeMap::new();
    for db in ["source", "target", "once-target", "audited"] {
        names.insert(db, support::operator::ready_database(&client, &ns, db, &op).await);
    }
    couch.put_document(&names["source"], "doc-1", &json!({"type": "item"})).await.expect("a document");
    let share = |name: &str, spec: Value| manifest("CouchShare", name, spec);
    let _: CouchShare = apply_json(
        &client,
        &ns,
        share(
            "running",
            json!({"source": {"database": {"name": "source"}}, "target": {"database": {"name": "target"}}}),
        ),
    )
    .await;
    let _: CouchShare = apply_json(&client, &ns, share("once", json!({"source": {"database": {"name": "source"}}, "target": {"database": {"name": "once-target"}}, "continuous": false}))).await;
    let _: k8s_openapi::api::core::v1::Secret = apply_json(&client, &ns, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "partner"}, "stringData": {"username": "partner", "password": "partner-pw"}})).await;
    // A remote that refuses connections: CouchDB's scheduler reports the replication crashing.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let _: CouchShare = apply_json(&client, &ns, share("to-partner", json!({"source": {"database": {"name": "source"}}, "target": {"remote": {"url": format!("http://127.0.0.1:{dead}"), "database": "inventory", "credentialsSecretRef": {"name": "partner"}}}}))).await;
    let prefix = format!("t{:012x}-userdb-", rand::random::<u64>() >> 16);
    let _: CouchShare = apply_json(&client, &ns, share("fan-in", json!({"source": {"perUserDatabases": {"prefix": prefix}}, "target": {"database": {"name": "target"}}, "strategy": "OnChange", "credentials": "Admin"}))).await;
    wait_ready(&shares, "running", &op).await;
    wait_ready(&shares, "fan-in", &op).await;
    user_database(&couch, &prefix, "ann").await;
    user_database(&couch, &prefix, "bob").await;
    // A _security edited by hand, for the audit to find and repair.
    let open = Security { admins: Principals::default(), members: Principals::default(), extra: Default::default() };
    couch.put_security(&names["audited"], &open).await.expect("a hand edit of _security");
    // A backup schedule: its interval and last success, for the missed-backup alert.
    let _: couchshare::api::CouchScheduledBackup = apply_json(
        &client,
        &ns,
        manifest(
            "CouchScheduledBackup",
            "nightly",
            json!({"database": "source", "schedule": "* * * * *", "retention": {"count": 1}, "destination": {"volume": {}}}),
        ),
    )
    .await;
    // A CouchServer that is down: unreachable, and its reconciles keep failing.
    let _: CouchServer =
        apply_json(&client, &ns, server_manifest("down", &format!("http://127.0.0.1:{dead}"), json!({}))).await;
    wait_not_ready(&servers, "down", &op, "Unreachable").await;

    let panels = panels();
    // Queries the scenario makes no series for, and why.
    let single = std::env::var("COUCHDB_TOPOLOGY").as_deref() != Ok("cluster");
    let may_be_empty = |expr: &str| -> bool {
        // No fan-in source fails in this scenario (its failures have their own tests).
        expr.contains("couchshare_onchange_replication_failures_total")
            // A single node reports no cluster membership.
            || (single && expr.contains("couchshare_server_nodes_missing"))
    };
    // Every panel's queries: valid, and with series, once the scenario has made them.
    let mut last: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(150);
    loop {
        last.clear();
        for (title, exprs) in &panels {
            for expr in exprs {
                match prom.query(&as_all(expr)).await {
                    Err(e) => panic!("panel {title:?}: Prometheus refused {expr}: {e}"),
                    Ok(result) if result.is_empty() && !may_be_empty(expr) => last.push(format!("{title}: {expr}")),
                    Ok(_) => {}
                }
            }
        }
        if last.is_empty() || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    assert!(
        last.is_empty(),
        "panels without series after the scenario:\n{}\noperator:\n{}",
        last.join("\n"),
        op.tail()
    );
    // Every metric a panel reads is one the operator exports.
    let text =
        reqwest::get(format!("http://{address}/metrics")).await.expect("GET /metrics").text().await.expect("body");
    let exported: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    // A family with no series yet is not in the text: the names the operator registers are
    // read from its metrics module (`registry.register("name", ...)`, prefixed `couchshare_`).
    let source = std::fs::read_to_string(root().join("src/controller/runtime/metrics.rs")).expect("metrics.rs");
    let registered: BTreeSet<String> = source
        .split("registry.register(")
        .skip(1)
        .filter_map(|rest| rest.trim_start().strip_prefix('"')?.split('"').next().map(|n| format!("couchshare_{n}")))
        .collect();
    assert!(registered.contains("couchshare_reconciles"), "registered metric names found: {registered:?}");
    let exported: BTreeSet<String> = exported.union(&registered).cloned().collect();
    for (title, exprs) in &panels {
        for expr in exprs {
            for name in metric_names(expr) {
                let family = ["_bucket", "_total", "_count", "_sum"]
                    .iter()
                    .fold(name.clone(), |n, s| n.strip_suffix(s).map(str::to_string).unwrap_or(n));
                assert!(exported.contains(&family), "panel {title:?} reads {name}, which the operator does not export");
            }
        }
    }

    assert!(
        prom.alerts()
            .await
            .iter()
            .any(|(a, _)| a == "CouchshareReplicationFailing" || a == "CouchshareServerUnreachable"),
        "the real Prometheus holds the rules: {:?}",
        prom.alerts().await
    );

    // The alert cases take a failing replication's series: wait for CouchDB to report one.
    let failing = format!(r#"couchshare_replication_state{{namespace="{ns}",state=~"crashing|error|failed"}} == 1"#);
    let reported = couchdb::eventually(Duration::from_secs(90), || async {
        prom.query(&failing).await.ok().filter(|r| !r.is_empty())
    })
    .await;
    assert!(
        reported.is_some(),
        "CouchDB never reported the share to a closed port failing
{}",
        op.tail()
    );
    let scheduled = format!(r#"couchshare_scheduled_backup_interval_seconds{{namespace="{ns}"}}"#);
    let reported = couchdb::eventually(Duration::from_secs(60), || async {
        prom.query(&scheduled).await.ok().filter(|r| !r.is_empty())
    })
    .await;
    assert!(reported.is_some(), "the backup schedule's interval was never scraped\n{}", op.tail());
    // Alert unit tests on the scraped series.
    let scraped = Scraped(prom.series(r#"{__name__=~"couchshare_.*|up"}"#).await);
    let cases = cases(&scraped, &ns);
    let covered: BTreeSet<&str> = cases.iter().map(|c| c.alert).collect();
    for alert in alert_test_names(&rules_file) {
        for fires in [true, false] {
            assert!(
                cases.iter().any(|c| c.alert == alert && c.fires_with.is_some() == fires),
                "alert {alert} has no {} case",
                if fires { "firing" } else { "silent" }
            );
        }
        assert!(covered.contains(alert.as_str()));
    }
    let tests_file = dir.join("alerts.test.yaml");
    std::fs::write(&tests_file, alert_tests::test_file(&rules_file, &cases)).expect("write the promtool tests");
    let (ok, said) = promtool(&promtool_bin, &["test", "rules", &tests_file.display().to_string()]);
    assert!(ok, "promtool test rules {}:\n{said}", tests_file.display());

    // The same cases on a rules file with one alert broken fail, and name it.
    let broken_rules = dir.join("alerts.broken.yaml");
    let original = std::fs::read_to_string(&rules_file).expect("rules");
    let broken = original.replace("expr: couchshare_server_reachable == 0", "expr: couchshare_server_reachable == 2");
    assert_ne!(broken, original, "the rule to break is in the rules file");
    std::fs::write(&broken_rules, broken).expect("write the broken rules");
    let broken_tests = dir.join("alerts.broken.test.yaml");
    std::fs::write(&broken_tests, alert_tests::test_file(&broken_rules, &cases)).expect("write");
    let (ok, said) = promtool(&promtool_bin, &["test", "rules", &broken_tests.display().to_string()]);
    assert!(
        !ok && said.contains("CouchshareServerUnreachable"),
        "a broken CouchshareServerUnreachable went unnoticed:\n{said}"
    );

    pictures(&prom, test).await;
}

fn alert_test_names(rules: &Path) -> Vec<String> {
    alert_tests::alert_names(rules)
}

/// The key panels as Prometheus's own graph page draws them, from this scrape, into
/// `COUCHSHARE_GRAPHS_DIR` (default: the Prometheus folder of this run).
async fn pictures(prom: &Prometheus, test: &str) {
    let Some(chromium) = tool("COUCHSHARE_CHROMIUM", "chromium") else {
        couchdb::skip_lacking(&format!(
            "SKIP {test} (graph pictures part): no chromium (tools/testbin/install-monitoring.sh)"
        ));
        return;
    };
    let out = std::env::var_os("COUCHSHARE_GRAPHS_DIR").map(PathBuf::from).unwrap_or_else(|| prom.dir.join("graphs"));
    std::fs::create_dir_all(&out).expect("graphs dir");
    for (file, expr) in [
        ("replications-by-state.png", "sum by (state) (couchshare_replication_state)"),
        ("reconciles-by-kind.png", "sum by (kind) (rate(couchshare_reconciles_total[1m]))"),
        ("reconcile-errors.png", "sum by (kind, reason) (rate(couchshare_reconcile_errors_total[1m]))"),
        ("couchdb-requests.png", "sum by (status) (rate(couchshare_couchdb_requests_total[1m]))"),
        ("fan-in-databases.png", "sum by (share, state) (couchshare_onchange_databases)"),
    ] {
        prom.screenshot(&chromium, expr, "2m", &out.join(file)).unwrap_or_else(|e| panic!("picture {file}: {e}"));
    }
}

/// A firing and a silent case for every alert, on series the scenario's scrape holds.
fn cases(s: &Scraped, ns: &str) -> Vec<Case> {
    let ours = |m: &serde_json::Map<String, Value>| label(m, "namespace") == ns;
    let need = |name: &str, what: &str, found: Option<serde_json::Map<String, Value>>| {
        found.unwrap_or_else(|| panic!("the scrape holds no {name} series for {what}"))
    };
    let case = |name: &str,
                alert: &'static str,
                inputs: Vec<(serde_json::Map<String, Value>, &str)>,
                fires: Option<BTreeMap<String, String>>| Case {
        name: name.to_string(),
        alert,
        inputs: inputs.into_iter().map(|(m, v)| (m, v.to_string())).collect(),
        fires_with: fires,
    };
    let mut out = Vec::new();

    let crashing = need(
        "couchshare_replication_state",
        "a crashing replication",
        s.find("couchshare_replication_state", |m| {
            ours(m) && ["crashing", "error", "failed"].contains(&label(m, "state"))
        }),
    );
    let running = need(
        "couchshare_replication_state",
        "a running replication",
        s.find("couchshare_replication_state", |m| ours(m) && label(m, "state") == "running"),
    );
    out.push(case(
        "a replication crashing for 35 min fires",
        "CouchshareReplicationFailing",
        vec![(crashing.clone(), "1x40")],
        Some(labels_of(&crashing, &["namespace", "share", "replication", "state"])),
    ));
    out.push(case(
        "a running replication is silent",
        "CouchshareReplicationFailing",
        vec![(running.clone(), "1x40")],
        None,
    ));

    let pending = need(
        "couchshare_replication_changes_pending",
        "a share",
        s.find("couchshare_replication_changes_pending", |m| ours(m) && label(m, "share") == "running"),
    );
    out.push(case(
        "changes pending that never go down fire",
        "CouchshareShareStalled",
        vec![(pending.clone(), "5x40")],
        Some(labels_of(&pending, &["namespace", "share", "replication"])),
    ));
    out.push(case(
        "changes pending that go down are silent",
        "CouchshareShareStalled",
        vec![(pending.clone(), "400-10x40")],
        None,
    ));

    let bucket = need(
        "couchshare_onchange_lag_seconds_bucket",
        "the fan-in",
        s.find("couchshare_onchange_lag_seconds_bucket", ours),
    );
    let buckets = s.siblings("couchshare_onchange_lag_seconds_bucket", &bucket, &["namespace", "share"]);
    let slow: Vec<_> = buckets
        .iter()
        .map(|b| {
            let le = label(b, "le").parse::<f64>().unwrap_or(f64::INFINITY);
            (b.clone(), if le >= 200.0 { "0+10x40" } else { "0x40" })
        })
        .collect();
    let fast: Vec<_> = buckets.iter().map(|b| (b.clone(), "0+10x40")).collect();
    out.push(case(
        "a fan-in whose changes all take minutes fires",
        "CouchshareFanInLagHigh",
        slow,
        Some(labels_of(&bucket, &["namespace", "share"])),
    ));
    out.push(case("a fan-in done within 50 ms is silent", "CouchshareFanInLagHigh", fast, None));

    let reachable = need(
        "couchshare_server_reachable",
        "server main",
        s.find("couchshare_server_reachable", |m| ours(m) && label(m, "server") == "main"),
    );
    out.push(case(
        "a server unreachable for 35 min fires",
        "CouchshareServerUnreachable",
        vec![(reachable.clone(), "0x40")],
        Some(all_labels(&reachable)),
    ));
    out.push(case(
        "a reachable server is silent",
        "CouchshareServerUnreachable",
        vec![(reachable.clone(), "1x40")],
        None,
    ));

    // A single node reports no membership: its server's scraped identity under the gauge's name.
    let missing =
        s.find("couchshare_server_nodes_missing", |m| ours(m) && label(m, "server") == "main").unwrap_or_else(|| {
            let mut m = reachable.clone();
            m.insert("__name__".into(), Value::String("couchshare_server_nodes_missing".into()));
            m
        });
    out.push(case(
        "a node missing for 35 min fires",
        "CouchshareClusterNodeMissing",
        vec![(missing.clone(), "1x40")],
        Some(all_labels(&missing)),
    ));
    out.push(case("no node missing is silent", "CouchshareClusterNodeMissing", vec![(missing.clone(), "0x40")], None));

    let jobs = need(
        "couchshare_server_replication_jobs",
        "server main",
        s.find("couchshare_server_replication_jobs", |m| ours(m) && label(m, "server") == "main"),
    );
    let budget = need(
        "couchshare_server_replication_budget",
        "server main",
        s.find("couchshare_server_replication_budget", |m| ours(m) && label(m, "server") == "main"),
    );
    out.push(case(
        "450 of 500 replication jobs fire",
        "CouchshareReplicationBudgetHigh",
        vec![(jobs.clone(), "450x40"), (budget.clone(), "500x40")],
        Some(all_labels(&jobs)),
    ));
    out.push(case(
        "3 of 500 replication jobs are silent",
        "CouchshareReplicationBudgetHigh",
        vec![(jobs.clone(), "3x40"), (budget.clone(), "500x40")],
        None,
    ));

    let errors = need(
        "couchshare_reconcile_errors_total",
        "the down server",
        s.find("couchshare_reconcile_errors_total", |m| label(m, "kind") == "CouchServer"),
    );
    out.push(case(
        "reconcile errors without pause fire",
        "CouchshareReconcileErrors",
        vec![(errors.clone(), "0+2x40")],
        Some(labels_of(&errors, &["kind", "reason"])),
    ));
    out.push(case("errors that stopped are silent", "CouchshareReconcileErrors", vec![(errors.clone(), "5x40")], None));

    let up = need("up", "the operator's target", s.find("up", |m| label(m, "job") == "couchshare"));
    out.push(case(
        "an operator down for 35 min fires",
        "CouchshareOperatorDown",
        vec![(up.clone(), "0x40")],
        Some(BTreeMap::new()),
    ));
    out.push(case("an operator up is silent", "CouchshareOperatorDown", vec![(up.clone(), "1x40")], None));

    let interval = need(
        "couchshare_scheduled_backup_interval_seconds",
        "the schedule",
        s.find("couchshare_scheduled_backup_interval_seconds", ours),
    );
    let success = need(
        "couchshare_scheduled_backup_last_success_timestamp_seconds",
        "the schedule",
        s.find("couchshare_scheduled_backup_last_success_timestamp_seconds", ours),
    );
    out.push(case(
        "a schedule of a minute with no success for 35 min fires",
        "CouchshareBackupMissed",
        vec![(interval.clone(), "60x40"), (success.clone(), "0x40")],
        Some(labels_of(&success, &["namespace", "schedule", "database"])),
    ));
    out.push(case(
        "a schedule that succeeds every minute is silent",
        "CouchshareBackupMissed",
        vec![(interval.clone(), "60x40"), (success.clone(), "0+60x40")],
        None,
    ));

    let leader = need("couchshare_leader", "the leading operator", s.find("couchshare_leader", |_| true));
    out.push(case(
        "replicas up and none leading fire",
        "CouchshareNoLeader",
        vec![(up.clone(), "1x40"), (leader.clone(), "0x40")],
        Some(BTreeMap::new()),
    ));
    out.push(case(
        "a replica leading is silent",
        "CouchshareNoLeader",
        vec![(up.clone(), "1x40"), (leader.clone(), "1x40")],
        None,
    ));
    out
}
