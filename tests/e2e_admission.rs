//! End-to-end against the real kube-apiserver: the CRDs install, the examples are accepted,
//! and bad input is refused at `kubectl apply` time with a message a person understands.

mod support;

use support::k8s;

/// Applies every example (the valid side of admission) into a fresh namespace.
#[tokio::test]
async fn crds_install_and_every_example_is_accepted() {
    let Some(client) = k8s::client("crds_install_and_every_example_is_accepted").await else {
        return;
    };
    k8s::install_crds(&client).await;
    let ns = k8s::namespace(&client, "examples").await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut kinds = std::collections::BTreeSet::new();
    for dir in ["server", "drafft-project", "per-user-analytics", "inventory-sharing", "pouchdb-webapp"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("example folder") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("example file");
            for obj in k8s::parse_yaml(&text) {
                let kind = obj.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default();
                k8s::apply(&client, &ns, &obj)
                    .await
                    .unwrap_or_else(|e| panic!("{} ({kind}) refused: {e}", path.display()));
                kinds.insert(kind);
            }
        }
    }
    for kind in ["CouchServer", "CouchDatabase", "CouchUser", "CouchGrant", "CouchShare"] {
        assert!(kinds.contains(kind), "an example of {kind} was applied");
    }
}

const SERVER: &str = "apiVersion: couchshare.io/v1alpha1\nkind: CouchServer\n";
const DATABASE: &str = "apiVersion: couchshare.io/v1alpha1\nkind: CouchDatabase\n";
const USER: &str = "apiVersion: couchshare.io/v1alpha1\nkind: CouchUser\n";
const GRANT: &str = "apiVersion: couchshare.io/v1alpha1\nkind: CouchGrant\n";
const SHARE: &str = "apiVersion: couchshare.io/v1alpha1\nkind: CouchShare\n";

/// (what is wrong, the manifest, a part of the message the API server must answer with)
fn invalid_resources() -> Vec<(&'static str, String, &'static str)> {
    let db_named = |name: &str| {
        format!("{DATABASE}metadata: {{name: bad}}\nspec: {{serverRef: {{name: main}}, name: {name:?}}}\n")
    };
    let share = |body: &str| format!("{SHARE}metadata: {{name: bad}}\nspec:\n{body}");
    let name_msg = "must be a valid CouchDB database name";
    vec![
        ("database name with uppercase", db_named("UserData"), name_msg),
        ("database name with a space", db_named("user data"), name_msg),
        ("database name with @", db_named("user@data"), name_msg),
        ("database name of a system database", db_named("_users"), name_msg),
        ("database name starting with a digit", db_named("9lives"), name_msg),
        ("database name over 238 characters", db_named(&"a".repeat(239)), "238"),
        (
            "database named after a resource name with a dot",
            format!("{DATABASE}metadata: {{name: my.db}}\nspec: {{serverRef: {{name: main}}}}\n"),
            "metadata.name is not a valid CouchDB database name",
        ),
        (
            "deletion policy other than Retain or Delete",
            format!(
                "{DATABASE}metadata: {{name: bad}}\nspec: {{serverRef: {{name: main}}, deletionPolicy: Destroy}}\n"
            ),
            "supported values: \"Retain\", \"Delete\"",
        ),
        (
            "server URL without a scheme",
            format!(
                "{SERVER}metadata: {{name: bad}}\nspec: {{url: couchdb.svc:5984, adminCredentials: {{secretRef: {{name: a}}}}}}\n"
            ),
            "url must start with http:// or https://",
        ),
        (
            "replication URL with another scheme",
            format!(
                "{SERVER}metadata: {{name: bad}}\nspec: {{url: 'http://c:5984', replicationUrl: 'ftp://c', adminCredentials: {{secretRef: {{name: a}}}}}}\n"
            ),
            "replicationUrl must start with http:// or https://",
        ),
        (
            "config setting without a section",
            format!(
                "{SERVER}metadata: {{name: bad}}\nspec: {{url: 'http://c:5984', adminCredentials: {{secretRef: {{name: a}}}}, config: {{settings: {{max_jobs: '5'}}}}}}\n"
            ),
            "settings keys must have the form section/key",
        ),
        (
            "CORS for any origin with credentials",
            format!(
                "{SERVER}metadata: {{name: bad}}\nspec: {{url: 'http://c:5984', adminCredentials: {{secretRef: {{name: a}}}}, config: {{cors: {{enabled: true, origins: ['*'], credentials: true}}}}}}\n"
            ),
            "origin * cannot be combined with credentials",
        ),
        (
            "namespace selector mode without a selector",
            format!(
                "{SERVER}metadata: {{name: bad}}\nspec: {{url: 'http://c:5984', adminCredentials: {{secretRef: {{name: a}}}}, allowedNamespaces: {{from: Selector}}}}\n"
            ),
            "selector is required when from is Selector",
        ),
        (
            "username with the reserved _ prefix",
            format!("{USER}metadata: {{name: bad}}\nspec: {{serverRef: {{name: main}}, username: _admin}}\n"),
            "username must not start with _",
        ),
        (
            "username with a colon",
            format!("{USER}metadata: {{name: bad}}\nspec: {{serverRef: {{name: main}}, username: 'a:b'}}\n"),
            "username must not contain :",
        ),
        (
            "user role with the reserved _ prefix",
            format!("{USER}metadata: {{name: bad}}\nspec: {{serverRef: {{name: main}}, roles: [_admin]}}\n"),
            "roles must be non-empty and must not start with _",
        ),
        (
            "grant access other than member or admin",
            format!("{GRANT}metadata: {{name: bad}}\nspec: {{database: {{name: db}}, access: owner, roles: [r]}}\n"),
            "supported values: \"member\", \"admin\"",
        ),
        (
            "grant that grants nothing",
            format!("{GRANT}metadata: {{name: bad}}\nspec: {{database: {{name: db}}}}\n"),
            "a grant needs at least one of users, usernames or roles",
        ),
        (
            "grant on a managed and an unmanaged database at once",
            format!(
                "{GRANT}metadata: {{name: bad}}\nspec: {{database: {{name: db, couchName: db, serverRef: {{name: main}}}}, roles: [r]}}\n"
            ),
            "database needs exactly one of name",
        ),
        (
            "grant on a CouchDatabase and a per-user database at once",
            format!(
                "{GRANT}metadata: {{name: bad}}\nspec: {{database: {{name: db, userDatabase: {{user: alice}}}}, roles: [r]}}\n"
            ),
            "database needs exactly one of name",
        ),
        (
            "grant on a per-user database with a server of its own",
            format!(
                "{GRANT}metadata: {{name: bad}}\nspec: {{database: {{userDatabase: {{user: alice}}, serverRef: {{name: main}}}}, roles: [r]}}\n"
            ),
            "database.serverRef is only used with couchName",
        ),
        (
            "consent without anything allowed",
            format!(
                "{DATABASE}metadata: {{name: bad}}\nspec: {{serverRef: {{name: main}}, sharedWith: [{{namespace: team-b, allow: []}}]}}\n"
            ),
            "spec.sharedWith[0].allow",
        ),
        (
            "consent that allows something unknown",
            format!(
                "{USER}metadata: {{name: bad}}\nspec: {{serverRef: {{name: main}}, sharedWith: [{{namespace: team-b, allow: [everything]}}]}}\n"
            ),
            "Unsupported value: \"everything\"",
        ),
        (
            "consent to a namespace twice",
            format!(
                "{DATABASE}metadata: {{name: bad}}\nspec: {{serverRef: {{name: main}}, sharedWith: [{{namespace: b, allow: [member]}}, {{namespace: b, allow: [admin]}}]}}\n"
            ),
            "Duplicate value",
        ),
        (
            "trusted namespaces by selector without one",
            format!(
                "{SERVER}metadata: {{name: bad}}\nspec: {{url: 'http://x:5984', adminCredentials: {{secretRef: {{name: a}}}}, trustedNamespaces: {{from: Selector}}}}\n"
            ),
            "selector is required when from is Selector",
        ),
        (
            "grant on an unmanaged database without its server",
            format!("{GRANT}metadata: {{name: bad}}\nspec: {{database: {{couchName: userdb-616c}}, roles: [r]}}\n"),
            "database.serverRef is required with couchName",
        ),
        (
            "two-way share without a selector",
            share("  source: {database: {name: a}}\n  target: {database: {name: b}}\n  mode: TwoWay\n"),
            "a TwoWay share needs a selector",
        ),
        (
            "share with two sources at once",
            share("  source: {database: {name: a}, userDatabase: {user: alice}}\n  target: {database: {name: b}}\n"),
            "source needs exactly one of database, userDatabase, userDatabases, perUserDatabases or remote",
        ),
        (
            "share from a database into itself",
            share("  source: {database: {name: a}}\n  target: {database: {name: a}}\n"),
            "source and target are the same database",
        ),
        (
            "share from a per-user database into itself",
            share("  source: {userDatabase: {user: alice}}\n  target: {userDatabase: {user: alice}}\n"),
            "source and target are the same per-user database",
        ),
        (
            "user claiming a replication user's name",
            format!(
                "{USER}metadata: {{name: bad}}\nspec: {{serverRef: {{name: main}}, username: couchshare-repl-0123456789abcdef0123}}\n"
            ),
            "reserved for the scoped replication users of shares",
        ),
        (
            "user named like a replication user by its metadata.name",
            format!("{USER}metadata: {{name: couchshare-repl-x}}\nspec: {{serverRef: {{name: main}}}}\n"),
            "reserved for the scoped replication users of shares",
        ),
        (
            "share without a target",
            share("  source: {database: {name: a}}\n  target: {}\n"),
            "target needs exactly one of database, userDatabase or remote",
        ),
        (
            "share with credentials in a remote URL",
            share(
                "  source: {database: {name: a}}\n  target: {remote: {url: 'https://admin:pw@partner.example', database: inv, credentialsSecretRef: {name: p}}}\n",
            ),
            "remote.url must not contain credentials",
        ),
        (
            "share with a remote URL without a scheme",
            share(
                "  source: {database: {name: a}}\n  target: {remote: {url: 'partner.example:5984', database: inv, credentialsSecretRef: {name: p}}}\n",
            ),
            "remote.url must start with http:// or https://",
        ),
        (
            "two-way fan-in",
            share(
                "  source: {userDatabases: {selector: {matchLabels: {app: notes}}}}\n  target: {database: {name: b}}\n  mode: TwoWay\n  allowUnfiltered: true\n",
            ),
            "source.userDatabases (fan-in) only works with mode OneWay",
        ),
        (
            "share into a replicator database that is not one",
            share(
                "  source: {database: {name: a}}\n  target: {database: {name: b}}\n  replicatorDatabase: tenant-a/jobs\n",
            ),
            "replicatorDatabase must be _replicator or end in /_replicator",
        ),
        (
            "share whose selector is not an object",
            share("  source: {database: {name: a}}\n  target: {database: {name: b}}\n  selector: [type]\n"),
            "spec.selector: Invalid value: \"array\": spec.selector in body must be of type object",
        ),
    ]
}

#[tokio::test]
async fn the_api_server_refuses_each_invalid_resource_with_a_clear_message() {
    let Some(client) = k8s::client("the_api_server_refuses_each_invalid_resource_with_a_clear_message").await else {
        return;
    };
    k8s::install_crds(&client).await;
    let ns = k8s::namespace(&client, "invalid").await;
    let cases = invalid_resources();
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for (what, yaml, expected) in &cases {
        let obj = k8s::parse_yaml(yaml).pop().expect("one object");
        match k8s::create(&client, &ns, &obj).await {
            Ok(_) => failures.push(format!("{what}: accepted")),
            Err(kube::Error::Api(status)) if status.code == 422 && status.message.contains(expected) => {
                eprintln!("refused as expected: {what}: {}", status.message);
            }
            Err(e) => failures.push(format!("{what}: expected 422 containing {expected:?}, got {e}")),
        }
    }
    assert!(failures.is_empty(), "{} of {} cases wrong:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// (what changes, the valid original, the edited manifest, the expected message)
fn immutable_edits() -> Vec<(&'static str, String, String, &'static str)> {
    let db = |extra: &str| format!("{DATABASE}metadata: {{name: imm}}\nspec:\n  serverRef: {{name: main}}\n{extra}");
    let user = |extra: &str| format!("{USER}metadata: {{name: imm}}\nspec:\n  serverRef: {{name: main}}\n{extra}");
    let share = |extra: &str| {
        format!(
            "{SHARE}metadata: {{name: imm}}\nspec:\n  source: {{database: {{name: a}}}}\n  target: {{database: {{name: b}}}}\n{extra}"
        )
    };
    vec![
        ("database name", db("  name: projects\n"), db("  name: projects2\n"), "name is immutable"),
        ("database name added later", db(""), db("  name: other\n"), "name is immutable"),
        (
            "partitioned",
            db("  name: p\n  partitioned: false\n"),
            db("  name: p\n  partitioned: true\n"),
            "partitioned is immutable",
        ),
        (
            "shards",
            db("  name: s\n  shards: {count: 2}\n"),
            db("  name: s\n  shards: {count: 4}\n"),
            "shards is immutable",
        ),
        ("username", user("  username: alice\n"), user("  username: alicia\n"), "username is immutable"),
        (
            "un-revoking a share",
            share("  revoke: {revoked: true}\n"),
            share("  revoke: {revoked: false}\n"),
            "a revoked share stays revoked",
        ),
    ]
}

#[tokio::test]
async fn immutable_fields_cannot_be_changed() {
    let Some(client) = k8s::client("immutable_fields_cannot_be_changed").await else {
        return;
    };
    k8s::install_crds(&client).await;
    let mut failures = Vec::new();
    for (what, original, edited, expected) in immutable_edits() {
        // One namespace per case: every case reuses the name `imm`.
        let ns = k8s::namespace(&client, "immutable").await;
        let original = k8s::parse_yaml(&original).pop().expect("one object");
        k8s::apply(&client, &ns, &original).await.unwrap_or_else(|e| panic!("{what}: the original is valid, got {e}"));
        let edited = k8s::parse_yaml(&edited).pop().expect("one object");
        match k8s::apply(&client, &ns, &edited).await {
            Ok(_) => failures.push(format!("{what}: edit accepted")),
            Err(kube::Error::Api(status)) if status.code == 422 && status.message.contains(expected) => {
                eprintln!("refused as expected: {what}: {}", status.message);
            }
            Err(e) => failures.push(format!("{what}: expected 422 containing {expected:?}, got {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
