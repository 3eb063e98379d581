//! Table tests of [`plan_server`](super::plan_server), without servers.

use super::*;

fn couchdb(version: &str) -> ServerInfo {
    ServerInfo {
        vendor: Some("The Apache Software Foundation".into()),
        version: version.into(),
        features: vec!["partitioned".into()],
        is_couchdb: true,
    }
}

fn pouchdb() -> ServerInfo {
    ServerInfo { vendor: Some("PouchDB authors".into()), version: "4.2.0".into(), features: vec![], is_couchdb: false }
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn key(section: &str, name: &str) -> ConfigKey {
    (section.into(), name.into())
}

fn observed(info: ServerInfo, cluster: &[&str], connected: &[&str]) -> ObservedServer {
    ObservedServer {
        info,
        membership: Membership { all_nodes: names(connected), cluster_nodes: names(cluster) },
        missing_system_databases: vec![],
        cluster_settings: BTreeMap::new(),
        node_config: BTreeMap::new(),
        max_jobs: None,
        replications_used: 0,
    }
}

fn settings(hash: &str) -> NodeSettings {
    NodeSettings { admin_hash: Some(hash.into()), uuid: Some("u".into()), secret: Some("s".into()) }
}

fn config(settings: &[(&str, &str)]) -> ServerConfig {
    ServerConfig {
        cors: None,
        per_user_databases: None,
        require_valid_user: None,
        settings: settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

/// Every node has `values` for the declared keys.
fn with_config(mut o: ObservedServer, nodes: &[&str], values: &[(ConfigKey, Option<&str>)]) -> ObservedServer {
    let values: BTreeMap<ConfigKey, Option<String>> =
        values.iter().map(|(k, v)| (k.clone(), v.map(str::to_owned))).collect();
    o.node_config = nodes.iter().map(|n| (n.to_string(), Ok(values.clone()))).collect();
    o
}

#[test]
fn plan_server_table() {
    let max_jobs = config(&[("replicator/max_jobs", "200")]);
    let three = ["n1", "n2", "n3"];
    let shared = |o: ObservedServer| ObservedServer {
        cluster_settings: three.iter().map(|n| (n.to_string(), settings("h"))).collect(),
        ..o
    };
    struct Case<'a> {
        what: &'a str,
        intent: ServerIntent<'a>,
        observed: ObservedServer,
        steps: Vec<ServerStep>,
        degraded: (bool, &'a str),
        budget: (i32, i32, i32),
        watched: bool,
    }
    let cases = vec![
        Case {
            what: "a fresh single node: system databases, nothing declared",
            intent: ServerIntent::default(),
            observed: ObservedServer {
                missing_system_databases: names(&["_users", "_replicator"]),
                ..observed(couchdb("3.5.0"), &["nonode@nohost"], &["nonode@nohost"])
            },
            steps: vec![ServerStep::CreateSystemDatabases(names(&["_users", "_replicator"]))],
            degraded: (false, "SingleNode"),
            budget: (500, 1, 500),
            watched: false,
        },
        Case {
            what: "a single node with the declared value already: nothing to do",
            intent: ServerIntent { config: Some(&max_jobs) },
            observed: ObservedServer {
                max_jobs: Some("200".into()),
                ..with_config(
                    observed(couchdb("3.5.0"), &["a"], &["a"]),
                    &["a"],
                    &[(key("replicator", "max_jobs"), Some("200"))],
                )
            },
            steps: vec![],
            degraded: (false, "SingleNode"),
            budget: (200, 1, 200),
            watched: false,
        },
        Case {
            what: "a declared value missing: written, and the budget is the declared one",
            intent: ServerIntent { config: Some(&max_jobs) },
            observed: with_config(
                observed(couchdb("3.5.0"), &["a"], &["a"]),
                &["a"],
                &[(key("replicator", "max_jobs"), None)],
            ),
            steps: vec![ServerStep::SetConfig {
                node: "a".into(),
                key: key("replicator", "max_jobs"),
                value: "200".into(),
            }],
            degraded: (false, "SingleNode"),
            budget: (200, 1, 200),
            watched: false,
        },
        Case {
            what: "pouchdb-server: one configuration, read and written on the first node only",
            intent: ServerIntent { config: Some(&max_jobs) },
            observed: with_config(
                observed(pouchdb(), &[], &["nonode@nohost"]),
                &["nonode@nohost"],
                &[(key("replicator", "max_jobs"), Some("100"))],
            ),
            steps: vec![ServerStep::SetConfig {
                node: "nonode@nohost".into(),
                key: key("replicator", "max_jobs"),
                value: "200".into(),
            }],
            degraded: (false, "SingleNode"),
            budget: (200, 1, 200),
            watched: false,
        },
        Case {
            what: "a cluster formed by a seedlist: finished, then every system database created (finishing leaves one half made)",
            intent: ServerIntent::default(),
            observed: ObservedServer {
                missing_system_databases: names(&["_users"]),
                cluster_settings: [("n1", settings("1")), ("n2", settings("2")), ("n3", settings("3"))]
                    .into_iter()
                    .map(|(n, s)| (n.to_string(), s))
                    .collect(),
                ..observed(couchdb("3.5.0"), &three, &three)
            },
            steps: vec![
                ServerStep::FinishCluster(
                    "system databases missing: _users; nodes differ in the admin password hash".into(),
                ),
                ServerStep::CreateSystemDatabases(names(&["_users", "_replicator", "_global_changes"])),
            ],
            degraded: (false, "AllNodesConnected"),
            budget: (500, 3, 1500),
            watched: true,
        },
        Case {
            what: "a finished cluster missing a node: degraded, databases created one by one",
            intent: ServerIntent::default(),
            observed: ObservedServer {
                missing_system_databases: names(&["_global_changes"]),
                cluster_settings: [("n1", settings("h")), ("n2", settings("h"))]
                    .into_iter()
                    .map(|(n, s)| (n.to_string(), s))
                    .collect(),
                replications_used: 7,
                ..observed(couchdb("3.5.0"), &three, &["n1", "n2"])
            },
            steps: vec![ServerStep::CreateSystemDatabases(names(&["_global_changes"]))],
            degraded: (true, "NodesMissing"),
            budget: (500, 3, 1500),
            watched: true,
        },
        Case {
            what: "a whole cluster: the differing value is written on each node that lacks it",
            intent: ServerIntent { config: Some(&max_jobs) },
            observed: ObservedServer {
                node_config: [
                    ("n1".to_string(), Ok([(key("replicator", "max_jobs"), Some("200".to_string()))].into())),
                    ("n2".to_string(), Ok([(key("replicator", "max_jobs"), None)].into())),
                    ("n3".to_string(), Err("forbidden".to_string())),
                ]
                .into(),
                max_jobs: Some("200".into()),
                ..shared(observed(couchdb("3.5.0"), &three, &three))
            },
            steps: vec![ServerStep::SetConfig {
                node: "n2".into(),
                key: key("replicator", "max_jobs"),
                value: "200".into(),
            }],
            degraded: (false, "AllNodesConnected"),
            budget: (200, 3, 600),
            watched: true,
        },
    ];
    for case in cases {
        let plan = plan_server(&case.intent, &case.observed);
        assert_eq!(plan.steps, case.steps, "{}", case.what);
        assert_eq!((plan.status.degraded.status, plan.status.degraded.reason), case.degraded, "{}", case.what);
        let b = &plan.status.budget;
        assert_eq!((b.max_jobs_per_node, b.nodes, b.total), case.budget, "{}", case.what);
        assert_eq!(b.used, case.observed.replications_used, "{}", case.what);
        assert_eq!(plan.status.membership_view.is_some(), case.watched, "{}", case.what);
        assert_eq!(plan.status.membership.is_some(), case.observed.membership.cluster_nodes.len() > 1, "{}", case.what);
    }
}

#[test]
fn a_node_that_cannot_be_read_fails_every_declared_key_there() {
    let declared = config(&[("replicator/max_jobs", "200"), ("couchdb/max_dbs_open", "1000")]);
    let mut o = observed(couchdb("3.5.0"), &["a", "b"], &["a", "b"]);
    o.cluster_settings = ["a", "b"].iter().map(|n| (n.to_string(), settings("h"))).collect();
    let all_set: BTreeMap<ConfigKey, Option<String>> = [
        (key("replicator", "max_jobs"), Some("200".to_string())),
        (key("couchdb", "max_dbs_open"), Some("1000".to_string())),
    ]
    .into();
    o.node_config = [("a".to_string(), Ok(all_set)), ("b".to_string(), Err("no".to_string()))].into();
    let plan = plan_server(&ServerIntent { config: Some(&declared) }, &o);
    assert!(plan.steps.is_empty());
    let failed: Vec<(&str, &str)> = plan.status.failures.iter().map(|f| (f.node.as_str(), f.key.as_str())).collect();
    assert_eq!(failed, vec![("b", "couchdb/max_dbs_open"), ("b", "replicator/max_jobs")]);
    assert!(applied_config(&plan.status.declared, &plan.status.failures).is_empty());
    let none_failed = applied_config(&plan.status.declared, &[]);
    assert_eq!(none_failed, names(&["couchdb/max_dbs_open", "replicator/max_jobs"]));
}

#[test]
fn config_is_read_on_every_node_only_with_node_config() {
    let declared = config(&[("replicator/max_jobs", "200")]);
    let intent = ServerIntent { config: Some(&declared) };
    let membership = Membership { all_nodes: names(&["a", "b"]), cluster_nodes: names(&["a", "b"]) };
    let clustered = config_reads(&intent, &couchdb("3.5.0").capabilities(), &membership);
    assert_eq!(clustered.nodes, names(&["a", "b"]));
    let legacy = config_reads(&intent, &pouchdb().capabilities(), &membership);
    assert_eq!(legacy.nodes, names(&["a"]));
    assert_eq!(legacy.desired.len(), 1);
}

#[test]
fn the_connected_message_counts_nodes() {
    let plan = plan_server(&ServerIntent::default(), &observed(couchdb("3.5.0"), &["a"], &["a"]));
    assert_eq!(plan.status.connected_message(), "connected to The Apache Software Foundation 3.5.0 (1 node)");
}

#[test]
fn a_server_without_capabilities_lists_them_all() {
    let all = unsupported(&Capabilities::default());
    assert!(all.contains(&"scheduler".to_string()) && all.contains(&"purge".to_string()));
    let none = unsupported(&Capabilities {
        scheduler: true,
        node_config: true,
        purge: true,
        selector_replication: true,
        auth_object_in_endpoints: true,
        partitioned: true,
        peruser: true,
        db_updates: true,
        up: true,
        changes_selector: true,
    });
    assert!(none.is_empty());
}
