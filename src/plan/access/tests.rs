use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;

fn object<K: serde::de::DeserializeOwned>(kind: &str, ns: &str, name: &str, spec: Value, status: Value) -> K {
    serde_json::from_value(json!({
        "apiVersion": "couchshare.io/v1alpha1", "kind": kind,
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{ns}-{name}")},
        "spec": spec, "status": status,
    }))
    .expect("a valid object")
}

fn ready(reason: &str, extra: Value) -> Value {
    let mut status = json!({"conditions": [{"type": "Ready", "status": "True", "reason": reason, "message": "",
                                            "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
    if let (Some(s), Some(e)) = (status.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    status
}

struct Fixture {
    server: CouchServer,
    database: CouchDatabase,
    grants: Vec<CouchGrant>,
    users: Vec<CouchUser>,
    shares: Vec<CouchShare>,
}

impl Fixture {
    fn new(db_spec: Value) -> Self {
        let mut spec = json!({"serverRef": {"name": "main"}, "name": "team-a_payroll"});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), db_spec.as_object()) {
            s.extend(e.clone());
        }
        Fixture {
            server: object(
                "CouchServer",
                "team-a",
                "main",
                json!({"url": "http://couch:5984", "adminCredentials": {"secretRef": {"name": "admin"}}, "allowedNamespaces": {"from": "All"}}),
                json!({}),
            ),
            database: object("CouchDatabase", "team-a", "payroll", spec, ready("Ready", json!({}))),
            grants: vec![],
            users: vec![],
            shares: vec![],
        }
    }

    fn user(mut self, ns: &str, name: &str, username: &str) -> Self {
        self.users.push(object(
            "CouchUser",
            ns,
            name,
            json!({"serverRef": {"name": "main", "namespace": "team-a"}, "username": username}),
            ready("Ready", json!({"username": username})),
        ));
        self
    }

    fn grant(mut self, ns: &str, name: &str, spec: Value) -> Self {
        self.grants.push(object("CouchGrant", ns, name, spec, json!({})));
        self
    }

    fn explain(&self) -> Explained {
        let labels = BTreeMap::new();
        explain(&World {
            server: &self.server,
            database: &self.database,
            grants: &self.grants.iter().cloned().map(Arc::new).collect::<Vec<_>>(),
            users: &self.users.iter().cloned().map(Arc::new).collect::<Vec<_>>(),
            shares: &self.shares.iter().cloned().map(Arc::new).collect::<Vec<_>>(),
            namespace_labels: &labels,
        })
    }
}

fn causes(e: &Explained, section: &str, value: &str) -> Vec<String> {
    e.entries.iter().filter(|x| x.section == section && x.value == value).flat_map(|x| x.causes.clone()).collect()
}

#[test]
fn no_members_means_server_admins_only_and_says_why() {
    let e = Fixture::new(json!({})).explain();
    assert_eq!(e.security.members.roles, ["_admin"]);
    assert!(causes(&e, "members", "_admin")[0].contains("spec.public is false"));
    assert!(e.refused.is_empty());
}

#[test]
fn base_grants_and_consent_each_give_their_cause() {
    let e = Fixture::new(json!({
        "security": {"admins": {"roles": ["payroll-admins"]}},
        "sharedWith": [{"namespace": "team-b", "allow": ["member"]}],
    }))
    .user("team-a", "alice", "alice")
    .user("team-b", "bob", "team-b_bob")
    .grant(
        "team-a",
        "alice-reads",
        json!({"database": {"name": "payroll"}, "users": [{"name": "alice"}], "roles": ["readers"]}),
    )
    .grant(
        "team-b",
        "bob-reads",
        json!({"database": {"name": "payroll", "namespace": "team-a"}, "users": [{"name": "bob"}]}),
    )
    .grant(
        "team-b",
        "bob-owns",
        json!({"database": {"name": "payroll", "namespace": "team-a"}, "access": "admin", "users": [{"name": "bob"}]}),
    )
    .grant("team-a", "ghost", json!({"database": {"name": "payroll"}, "users": [{"name": "nobody"}]}))
    .grant("team-a", "elsewhere", json!({"database": {"name": "other"}, "users": [{"name": "alice"}]}))
    .explain();
    assert_eq!(e.security.admins.roles, ["payroll-admins"]);
    assert_eq!(e.security.members.names, ["alice", "team-b_bob"]);
    assert_eq!(e.security.members.roles, ["readers"]);
    assert_eq!(causes(&e, "admins", "payroll-admins"), ["base _security of CouchDatabase team-a/payroll"]);
    assert_eq!(causes(&e, "members", "alice"), ["CouchGrant team-a/alice-reads (member)"]);
    let bob = causes(&e, "members", "team-b_bob");
    assert_eq!(bob.len(), 1);
    assert!(
        bob[0].starts_with(
            "CouchGrant team-b/bob-reads (member); consent: CouchDatabase team-a/payroll sharedWith team-b"
        ),
        "{bob:?}"
    );
    let refused: Vec<(&str, &str)> = e.refused.iter().map(|r| (r.source.as_str(), r.why.as_str())).collect();
    assert!(refused.iter().any(|(s, w)| *s == "CouchGrant team-b/bob-owns" && w.contains("admin")), "{refused:?}");
    assert!(
        refused.iter().any(|(s, w)| *s == "CouchGrant team-a/ghost" && w.contains("does not exist")),
        "{refused:?}"
    );
    assert!(!refused.iter().any(|(s, _)| s.contains("elsewhere")), "a grant on another database is not about this one");
}

#[test]
fn a_namespace_out_of_scope_adds_nothing() {
    let e = Fixture::new(json!({"sharedWith": [{"namespace": "team-b", "allow": ["member"]}]}))
        .grant("team-b", "raw", json!({"database": {"name": "payroll", "namespace": "team-a"}, "usernames": ["alice"]}))
        .explain();
    assert_eq!(e.security.members.roles, ["_admin"], "nothing of the grant is merged");
    assert!(e.refused.iter().any(|r| r.source == "CouchGrant team-b/raw"), "{:?}", e.refused);
}

#[test]
fn a_users_refusal_keeps_it_out() {
    let mut f = Fixture::new(json!({})).user("team-a", "alice", "alice");
    f.users[0].status.as_mut().expect("status").conditions[0].status = "False".into();
    f.users[0].status.as_mut().expect("status").conditions[0].reason = "Conflict".into();
    let e = f.grant("team-a", "g", json!({"database": {"name": "payroll"}, "users": [{"name": "alice"}]})).explain();
    assert!(e.security.members.names.is_empty());
    assert!(e.refused.iter().any(|r| r.why.contains("CouchUser team-a/alice")), "{:?}", e.refused);
}

impl Fixture {
    fn per_user(mut self, ns: &str, name: &str, username: &str, db: &str, extra: Value) -> Self {
        let mut spec = json!({"serverRef": {"name": "main", "namespace": "team-a"}, "username": username, "perUserDatabase": true});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        let mut user: CouchUser =
            object("CouchUser", ns, name, spec, ready("Ready", json!({"username": username, "perUserDatabase": db})));
        user.metadata.labels = Some([("app".to_string(), "notes".to_string())].into());
        self.users.push(user);
        self
    }

    fn unmanaged(&self, couch_name: &str, trusted: Value) -> ExplainedUnmanaged {
        let labels = BTreeMap::new();
        let mut server = self.server.clone();
        if let Ok(t) = serde_json::from_value(trusted) {
            server.spec.trusted_namespaces = t;
        }
        let databases = vec![Arc::new(self.database.clone())];
        explain_unmanaged(&UnmanagedWorld {
            tenants: Tenants {
                server: &server,
                grants: &self.grants.iter().cloned().map(Arc::new).collect::<Vec<_>>(),
                users: &self.users.iter().cloned().map(Arc::new).collect::<Vec<_>>(),
                shares: &self.shares.iter().cloned().map(Arc::new).collect::<Vec<_>>(),
                namespace_labels: &labels,
            },
            couch_name,
            databases: &databases,
            leaving: None,
            arriving: None,
        })
    }
}

#[test]
fn a_per_user_database_takes_its_grants_and_fan_in_users_and_refuses_without_the_owners_consent() {
    let mut f = Fixture::new(json!({}))
        .per_user("team-a", "ana", "team-a_ana", "userdb-616e61", json!({}))
        .grant("team-a", "support", json!({"database": {"userDatabase": {"user": "ana"}}, "access": "member", "roles": ["team-a_support"]}))
        .grant("team-b", "snoop", json!({"database": {"userDatabase": {"user": "ana", "namespace": "team-a"}}, "access": "member", "roles": ["team-b_snoop"]}));
    f.shares.push(object(
        "CouchShare",
        "team-a",
        "fan-in",
        json!({"source": {"userDatabases": {"selector": {"matchLabels": {"app": "notes"}}}}, "target": {"database": {"name": "payroll"}}}),
        ready("Replicating", json!({"replicationUser": crate::plan::share::replication_username("team-a", "fan-in")})),
    ));
    let e = f.unmanaged("userdb-616e61", json!(null));
    assert_eq!(e.owner.as_deref(), Some("team-a/ana"));
    let values: Vec<(&str, &str)> = e.entries.iter().map(|x| (x.section, x.value.as_str())).collect();
    assert!(values.contains(&("members", "team-a_support")), "{e:#?}");
    assert!(values.iter().any(|(s, v)| *s == "members" && v.starts_with("couchshare-repl-")), "{e:#?}");
    assert!(!values.iter().any(|(_, v)| *v == "team-b_snoop"), "no consent, no entry: {e:#?}");
    assert!(e.refused.iter().any(|r| r.source == "CouchGrant team-b/snoop"), "{e:#?}");
    // Another database is not touched by any of it.
    assert!(f.unmanaged("userdb-626f62", json!(null)).entries.is_empty());
}

#[test]
fn a_couch_name_grant_needs_trust_and_a_name_no_resource_manages() {
    let f = Fixture::new(json!({}))
        .user("team-b", "bob", "team-b_bob")
        .grant("team-b", "legacy", json!({"database": {"couchName": "legacy", "serverRef": {"name": "main", "namespace": "team-a"}}, "access": "member", "users": [{"name": "bob"}]}))
        .grant("team-b", "payroll-by-name", json!({"database": {"couchName": "team-a_payroll", "serverRef": {"name": "main", "namespace": "team-a"}}, "access": "member", "users": [{"name": "bob"}]}));
    let untrusted = f.unmanaged("legacy", json!(null));
    assert!(untrusted.entries.is_empty(), "team-b is not trusted: {untrusted:#?}");
    assert!(untrusted.refused.iter().any(|r| r.source == "CouchGrant team-b/legacy"), "{untrusted:#?}");
    let trusted = f.unmanaged("legacy", json!({"from": "All"}));
    assert_eq!(trusted.entries.len(), 1, "{trusted:#?}");
    assert_eq!((trusted.entries[0].section, trusted.entries[0].value.as_str()), ("members", "team-b_bob"));
    // A name a CouchDatabase manages is refused, trusted or not.
    let managed = f.unmanaged("team-a_payroll", json!({"from": "All"}));
    assert!(managed.entries.is_empty(), "{managed:#?}");
    assert!(managed.refused.iter().any(|r| r.why.contains("CouchDatabase team-a/payroll")), "{managed:#?}");
}
