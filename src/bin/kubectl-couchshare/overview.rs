//! `kubectl couchshare shares` and `status`: what the resources' own status says, one line
//! each, for people and (with `-o json|yaml`) for scripts.

use couchshare::api::{
    CouchBackup, CouchDatabase, CouchGrant, CouchScheduledBackup, CouchServer, CouchShare, CouchUser, condition,
};
use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::output::{or_dash, print, table};
use crate::{Failure, Format, Scope};

async fn list<K>(scope: &Scope) -> Result<Vec<K>, Failure>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = match &scope.namespace {
        Some(ns) => Api::namespaced(scope.client.clone(), ns),
        None => Api::all(scope.client.clone()),
    };
    Ok(api.list(&ListParams::default()).await?.items)
}

/// `(status, reason, message)` of the Ready condition, from any kind's status.
fn ready<K: Serialize>(obj: &K) -> (String, String, String) {
    let v = serde_json::to_value(obj).unwrap_or_default();
    let c =
        v["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == condition::READY).cloned());
    let s = |k: &str| c.as_ref().and_then(|c| c[k].as_str()).unwrap_or_default().to_string();
    match c {
        Some(_) => (s("status"), s("reason"), s("message")),
        None => ("Unknown".into(), "NoStatus".into(), "the operator has not reported on it yet".into()),
    }
}

/// A share endpoint in a few words: `db/NAME`, `userdb/USER`, `remote URL/DB`, ...
fn endpoint(v: &Value) -> String {
    let name_ns = |r: &Value| match r["namespace"].as_str() {
        Some(ns) => format!("{ns}/{}", r["name"].as_str().unwrap_or_default()),
        None => r["name"].as_str().unwrap_or_default().to_string(),
    };
    if v["database"].is_object() {
        format!("db/{}", name_ns(&v["database"]))
    } else if v["userDatabase"].is_object() {
        format!("userdb/{}", v["userDatabase"]["user"].as_str().unwrap_or_default())
    } else if v["userDatabases"].is_object() {
        format!("users({})", v["userDatabases"]["selector"])
    } else if v["perUserDatabases"].is_object() {
        format!("per-user({})", v["perUserDatabases"]["prefix"].as_str().unwrap_or("userdb-"))
    } else if v["remote"].is_object() {
        format!(
            "remote {}/{}",
            v["remote"]["url"].as_str().unwrap_or_default(),
            v["remote"]["database"].as_str().unwrap_or_default()
        )
    } else {
        "-".into()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ShareLine {
    namespace: String,
    name: String,
    source: String,
    target: String,
    mode: String,
    strategy: String,
    ready: String,
    reason: String,
    state: Option<String>,
    changes_pending: Option<i64>,
    last_error: Option<String>,
    /// Fan-in: source databases discovered, in sync, behind, failing.
    per_user: Option<PerUser>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PerUser {
    discovered: i64,
    in_sync: i64,
    behind: i64,
    failing: i64,
}

pub async fn shares(scope: &Scope) -> Result<(), Failure> {
    let shares: Vec<CouchShare> = list(scope).await?;
    let lines: Vec<ShareLine> = shares
        .iter()
        .map(|s| {
            let spec = serde_json::to_value(&s.spec).unwrap_or_default();
            let status = s.status.clone().unwrap_or_default();
            let (ready, reason, _) = ready(s);
            let last_error = status.replications.iter().find_map(|r| r.error.clone());
            ShareLine {
                namespace: s.namespace().unwrap_or_default(),
                name: s.name_any(),
                source: endpoint(&spec["source"]),
                target: endpoint(&spec["target"]),
                mode: format!("{:?}", s.spec.mode),
                strategy: format!("{:?}", s.spec.strategy),
                ready,
                reason,
                state: status.state.clone(),
                changes_pending: status.changes_pending,
                last_error,
                per_user: status.on_change.as_ref().map(|o| PerUser {
                    discovered: o.discovered,
                    in_sync: o.in_sync,
                    behind: o.behind,
                    failing: o.failing,
                }),
            }
        })
        .collect();
    let wide = scope.format == Some(Format::Wide);
    let all = scope.namespace.is_none();
    print(scope.format, &lines, || {
        let mut headers = vec!["NAME", "SOURCE", "TARGET", "MODE", "STRATEGY", "READY", "STATE", "PENDING"];
        if all {
            headers.insert(0, "NAMESPACE");
        }
        if wide {
            headers.extend(["REASON", "PER-USER (IN SYNC/BEHIND/FAILING OF)", "LAST ERROR"]);
        }
        let rows: Vec<Vec<String>> = lines
            .iter()
            .map(|l| {
                let mut row = vec![
                    l.name.clone(),
                    l.source.clone(),
                    format!("→ {}", l.target),
                    l.mode.clone(),
                    l.strategy.clone(),
                    l.ready.clone(),
                    or_dash(l.state.clone()),
                    or_dash(l.changes_pending),
                ];
                if all {
                    row.insert(0, l.namespace.clone());
                }
                if wide {
                    row.push(l.reason.clone());
                    row.push(or_dash(
                        l.per_user
                            .as_ref()
                            .map(|p| format!("{}/{}/{} of {}", p.in_sync, p.behind, p.failing, p.discovered)),
                    ));
                    row.push(or_dash(l.last_error.clone()));
                }
                row
            })
            .collect();
        if rows.is_empty() { "No CouchShares found.".into() } else { table(&headers, &rows) }
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ServerLine {
    namespace: String,
    name: String,
    ready: String,
    version: Option<String>,
    nodes: usize,
    missing_nodes: Vec<String>,
    silent_nodes: Vec<String>,
    budget_used: Option<i32>,
    budget_total: Option<i32>,
}

#[derive(Serialize)]
struct NotReady {
    kind: &'static str,
    namespace: String,
    name: String,
    status: String,
    reason: String,
    message: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    servers: Vec<ServerLine>,
    not_ready: Vec<NotReady>,
}

fn not_ready<K: Serialize + ResourceExt>(kind: &'static str, items: &[K], out: &mut Vec<NotReady>) {
    for item in items {
        let (status, reason, message) = ready(item);
        if status != "True" {
            out.push(NotReady {
                kind,
                namespace: item.namespace().unwrap_or_default(),
                name: item.name_any(),
                status,
                reason,
                message,
            });
        }
    }
}

pub async fn status(scope: &Scope) -> Result<(), Failure> {
    let servers: Vec<CouchServer> = list(scope).await?;
    let mut lines = Vec::new();
    for s in &servers {
        let st = s.status.clone().unwrap_or_default();
        let membership = st.membership.clone().unwrap_or_default();
        lines.push(ServerLine {
            namespace: s.namespace().unwrap_or_default(),
            name: s.name_any(),
            ready: ready(s).0,
            version: st.version.clone(),
            nodes: st.nodes.len(),
            missing_nodes: membership.missing_nodes,
            silent_nodes: membership.silent_nodes,
            budget_used: st.replication_budget.as_ref().map(|b| b.used),
            budget_total: st.replication_budget.as_ref().map(|b| b.total),
        });
    }
    let mut bad = Vec::new();
    not_ready("CouchServer", &servers, &mut bad);
    not_ready("CouchDatabase", &list::<CouchDatabase>(scope).await?, &mut bad);
    not_ready("CouchUser", &list::<CouchUser>(scope).await?, &mut bad);
    not_ready("CouchGrant", &list::<CouchGrant>(scope).await?, &mut bad);
    not_ready("CouchShare", &list::<CouchShare>(scope).await?, &mut bad);
    // A backup still running is not Ready either: it shows here until it completes.
    not_ready("CouchBackup", &list::<CouchBackup>(scope).await?, &mut bad);
    not_ready("CouchScheduledBackup", &list::<CouchScheduledBackup>(scope).await?, &mut bad);
    let report = Status { servers: lines, not_ready: bad };
    let wide = scope.format == Some(Format::Wide);
    print(scope.format, &report, || {
        let rows: Vec<Vec<String>> = report
            .servers
            .iter()
            .map(|l| {
                let missing = l.missing_nodes.len() + l.silent_nodes.len();
                let membership = if missing == 0 {
                    "healthy".to_string()
                } else {
                    format!(
                        "{missing} missing: {}",
                        [l.missing_nodes.clone(), l.silent_nodes.clone()].concat().join(", ")
                    )
                };
                let budget = match (l.budget_used, l.budget_total) {
                    (Some(u), Some(t)) if t > 0 => format!("{u}/{t} ({}%)", u * 100 / t),
                    _ => "-".into(),
                };
                vec![
                    format!("{}/{}", l.namespace, l.name),
                    l.ready.clone(),
                    or_dash(l.version.clone()),
                    l.nodes.to_string(),
                    membership,
                    budget,
                ]
            })
            .collect();
        let mut out = if rows.is_empty() {
            "No CouchServers found.".to_string()
        } else {
            table(&["SERVER", "READY", "VERSION", "NODES", "MEMBERSHIP", "REPLICATION BUDGET"], &rows)
        };
        if report.not_ready.is_empty() {
            out += "\n\nEvery resource is Ready.";
        } else {
            let rows: Vec<Vec<String>> = report
                .not_ready
                .iter()
                .map(|n| {
                    let mut row = vec![
                        n.kind.to_string(),
                        format!("{}/{}", n.namespace, n.name),
                        n.status.clone(),
                        n.reason.clone(),
                    ];
                    if wide {
                        row.push(n.message.clone());
                    }
                    row
                })
                .collect();
            let mut headers = vec!["KIND", "NAME", "READY", "REASON"];
            if wide {
                headers.push("MESSAGE");
            }
            out += "\n\nNot Ready:\n";
            out += &table(&headers, &rows);
        }
        out
    })?;
    if report.not_ready.is_empty() {
        Ok(())
    } else {
        Err(Failure::NotReady(format!("{} resource(s) not Ready", report.not_ready.len())))
    }
}
