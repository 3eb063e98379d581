//! End-to-end against the real kube-apiserver: the CRDs install, the examples are accepted,
//! and bad input is refused at `kubectl apply` time with a message a person understands.

mod support;

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};
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

/// One bad-input case: (what is wrong, the manifest, a part of the message the API server must
/// answer with).
type Case = (&'static str, String, &'static str);

/// `n` flow-style YAML list items made by `item` from 0, 1, ...
fn items(n: usize, item: impl Fn(usize) -> String) -> String {
    format!("[{}]", (0..n).map(item).collect::<Vec<_>>().join(", "))
}

/// A string of `n` characters, to cross a maximum length.
fn long(n: usize) -> String {
    "a".repeat(n)
}

/// What the API server adds to a refusal when a schema error kept it from running the CEL rules.
const CEL_SKIPPED: &str = "some validation rules were not checked because the object was invalid";

/// The bad-input corpus: every constraint of every spec field of every kind, grouped by kind.
fn invalid_resources() -> Vec<Case> {
    [server_cases(), database_cases(), user_cases(), grant_cases(), share_cases()].concat()
}

fn server_cases() -> Vec<Case> {
    let server = |spec: &str| format!("{SERVER}metadata: {{name: bad}}\nspec: {{{spec}}}\n");
    // A valid server with `extra` added to its spec.
    let with =
        |extra: &str| server(&format!("url: 'http://c:5984', adminCredentials: {{secretRef: {{name: a}}}}, {extra}"));
    let config = |config: &str| with(&format!("config: {{{config}}}"));
    let cors = |cors: &str| config(&format!("cors: {{enabled: true, {cors}}}"));
    let per_user = |per_user: &str| config(&format!("perUserDatabases: {{enabled: true, {per_user}}}"));
    let secret_ref =
        |secret_ref: &str| server(&format!("url: 'http://c:5984', adminCredentials: {{secretRef: {{{secret_ref}}}}}"));
    vec![
        // url
        (
            "server URL without a scheme",
            server("url: couchdb.svc:5984, adminCredentials: {secretRef: {name: a}}"),
            "url must start with http:// or https://",
        ),
        ("server without a URL", server("adminCredentials: {secretRef: {name: a}}"), "spec.url: Required value"),
        (
            "server URL shorter than any URL",
            server("url: 'http://', adminCredentials: {secretRef: {name: a}}"),
            "spec.url in body should be at least 8 chars long",
        ),
        (
            "server URL over 2048 characters",
            server(&format!("url: 'http://{}', adminCredentials: {{secretRef: {{name: a}}}}", long(2042))),
            "spec.url: Too long: may not be more than 2048",
        ),
        // replicationUrl
        (
            "replication URL with another scheme",
            with("replicationUrl: 'ftp://couchdb:5984'"),
            "replicationUrl must start with http:// or https://",
        ),
        (
            "replication URL shorter than any URL",
            with("replicationUrl: 'http://'"),
            "spec.replicationUrl in body should be at least 8 chars long",
        ),
        (
            "replication URL over 2048 characters",
            with(&format!("replicationUrl: 'https://{}'", long(2041))),
            "spec.replicationUrl: Too long: may not be more than 2048",
        ),
        // adminCredentials
        ("server without admin credentials", server("url: 'http://c:5984'"), "spec.adminCredentials: Required value"),
        (
            "admin credentials without a Secret",
            server("url: 'http://c:5984', adminCredentials: {}"),
            "spec.adminCredentials.secretRef: Required value",
        ),
        (
            "admin Secret without a name",
            secret_ref("usernameKey: user"),
            "spec.adminCredentials.secretRef.name: Required value",
        ),
        (
            "admin Secret with an empty name",
            secret_ref("name: ''"),
            "spec.adminCredentials.secretRef.name in body should be at least 1 chars long",
        ),
        (
            "admin Secret name over 253 characters",
            secret_ref(&format!("name: {}", long(254))),
            "spec.adminCredentials.secretRef.name: Too long: may not be more than 253",
        ),
        (
            "admin Secret with an empty username key",
            secret_ref("name: a, usernameKey: ''"),
            "spec.adminCredentials.secretRef.usernameKey in body should be at least 1 chars long",
        ),
        (
            "admin Secret with an empty password key",
            secret_ref("name: a, passwordKey: ''"),
            "spec.adminCredentials.secretRef.passwordKey in body should be at least 1 chars long",
        ),
        // tls
        (
            "CA Secret without a name",
            with("tls: {caSecretRef: {key: ca.pem}}"),
            "spec.tls.caSecretRef.name: Required value",
        ),
        (
            "CA Secret name over 253 characters",
            with(&format!("tls: {{caSecretRef: {{name: {}}}}}", long(254))),
            "spec.tls.caSecretRef.name: Too long: may not be more than 253",
        ),
        (
            "CA Secret with an empty key",
            with("tls: {caSecretRef: {name: ca, key: ''}}"),
            "spec.tls.caSecretRef.key in body should be at least 1 chars long",
        ),
        // config.cors
        (
            "CORS for any origin with credentials",
            cors("origins: ['*'], credentials: true"),
            "origin * cannot be combined with credentials",
        ),
        (
            "CORS without saying whether it is on",
            config("cors: {origins: ['https://app.example']}"),
            "spec.config.cors.enabled: Required value",
        ),
        (
            "CORS turned on by a string",
            config("cors: {enabled: 'true'}"),
            "spec.config.cors.enabled in body must be of type boolean",
        ),
        (
            "CORS with over 100 origins",
            cors(&format!("origins: {}", items(101, |i| format!("'https://a{i}.example'")))),
            "spec.config.cors.origins: Too many: 101: must have at most 100 items",
        ),
        (
            "CORS origin over 2048 characters",
            cors(&format!("origins: ['https://{}']", long(2041))),
            "spec.config.cors.origins[0]: Too long: may not be more than 2048",
        ),
        (
            "CORS with over 20 methods",
            cors(&format!("methods: {}", items(21, |i| format!("M{i}")))),
            "spec.config.cors.methods: Too many: 21: must have at most 20 items",
        ),
        (
            "CORS method over 32 characters",
            cors(&format!("methods: [{}]", long(33))),
            "spec.config.cors.methods[0]: Too long: may not be more than 32",
        ),
        (
            "CORS with over 100 headers",
            cors(&format!("headers: {}", items(101, |i| format!("x-h{i}")))),
            "spec.config.cors.headers: Too many: 101: must have at most 100 items",
        ),
        (
            "CORS header over 256 characters",
            cors(&format!("headers: [{}]", long(257))),
            "spec.config.cors.headers[0]: Too long: may not be more than 256",
        ),
        // config.perUserDatabases
        (
            "per-user databases without saying whether they are on",
            config("perUserDatabases: {q: 2}"),
            "spec.config.perUserDatabases.enabled: Required value",
        ),
        (
            "per-user databases with no shards",
            per_user("q: 0"),
            "spec.config.perUserDatabases.q in body should be greater than or equal to 1",
        ),
        (
            "per-user databases with over 256 shards",
            per_user("q: 257"),
            "spec.config.perUserDatabases.q in body should be less than or equal to 256",
        ),
        (
            "per-user database prefix CouchDB refuses",
            per_user("databasePrefix: User-"),
            "spec.config.perUserDatabases.databasePrefix in body should match '^[a-z][a-z0-9_$()+/-]*$'",
        ),
        (
            "per-user database prefix over 100 characters",
            per_user(&format!("databasePrefix: {}", long(101))),
            "spec.config.perUserDatabases.databasePrefix: Too long: may not be more than 100",
        ),
        // config.requireValidUser
        (
            "require valid user as a string",
            config("requireValidUser: 'yes'"),
            "spec.config.requireValidUser in body must be of type boolean",
        ),
        // config.settings
        (
            "config setting without a section",
            config("settings: {max_jobs: '5'}"),
            "settings keys must have the form section/key",
        ),
        (
            "config setting with a number for a value",
            config("settings: {replicator/max_jobs: 500}"),
            "spec.config.settings.replicator/max_jobs in body must be of type string",
        ),
        (
            "over 256 config settings",
            config(&format!("settings: {{{}}}", (0..257).map(|i| format!("s/k{i}: v")).collect::<Vec<_>>().join(", "))),
            "spec.config.settings: Too many: 257: must have at most 256 items",
        ),
        // allowedNamespaces
        (
            "namespace selector mode without a selector",
            with("allowedNamespaces: {from: Selector}"),
            "selector is required when from is Selector",
        ),
        (
            "allowed namespaces from something unknown",
            with("allowedNamespaces: {from: Any}"),
            "spec.allowedNamespaces.from: Unsupported value: \"Any\": supported values: \"Same\", \"All\", \"Selector\"",
        ),
        (
            "allowed namespaces with a selector that is not used",
            with("allowedNamespaces: {from: All, selector: {matchLabels: {team: a}}}"),
            "selector is only used when from is Selector",
        ),
        (
            "allowed namespaces by a selector expression without an operator",
            with("allowedNamespaces: {from: Selector, selector: {matchExpressions: [{key: team}]}}"),
            "spec.allowedNamespaces.selector.matchExpressions[0].operator: Required value",
        ),
        // trustedNamespaces
        (
            "trusted namespaces by selector without one",
            with("trustedNamespaces: {from: Selector}"),
            "selector is required when from is Selector",
        ),
        (
            "trusted namespaces from something unknown",
            with("trustedNamespaces: {from: Everyone}"),
            "spec.trustedNamespaces.from: Unsupported value: \"Everyone\": supported values: \"Same\", \"All\", \"Selector\"",
        ),
        (
            "trusted namespaces with a selector that is not used",
            with("trustedNamespaces: {selector: {matchLabels: {team: a}}}"),
            "selector is only used when from is Selector",
        ),
    ]
}

fn database_cases() -> Vec<Case> {
    let database = |spec: &str| format!("{DATABASE}metadata: {{name: bad}}\nspec: {{{spec}}}\n");
    let with = |extra: &str| database(&format!("serverRef: {{name: main}}, {extra}"));
    let db_named = |name: &str| with(&format!("name: {name:?}"));
    let name_msg = "must be a valid CouchDB database name";
    vec![
        // serverRef (the same type in CouchUser, CouchGrant and CouchShare)
        ("database without a server", database("name: db"), "spec.serverRef: Required value"),
        (
            "server reference without a name",
            database("serverRef: {namespace: couchdb}"),
            "spec.serverRef.name: Required value",
        ),
        (
            "server reference with an empty name",
            database("serverRef: {name: ''}"),
            "spec.serverRef.name in body should be at least 1 chars long",
        ),
        (
            "server reference name over 253 characters",
            database(&format!("serverRef: {{name: {}}}", long(254))),
            "spec.serverRef.name: Too long: may not be more than 253",
        ),
        (
            "server reference to a namespace Kubernetes refuses",
            database("serverRef: {name: main, namespace: Couch_DB}"),
            "spec.serverRef.namespace in body should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'",
        ),
        (
            "server reference namespace over 63 characters",
            database(&format!("serverRef: {{name: main, namespace: {}}}", long(64))),
            "spec.serverRef.namespace: Too long: may not be more than 63",
        ),
        // name
        ("database name with uppercase", db_named("UserData"), name_msg),
        ("database name with a space", db_named("user data"), name_msg),
        ("database name with @", db_named("user@data"), name_msg),
        ("database name of a system database", db_named("_users"), name_msg),
        ("database name starting with a digit", db_named("9lives"), name_msg),
        ("database name over 238 characters", db_named(&long(239)), "spec.name: Too long: may not be more than 238"),
        (
            "database named after a resource name with a dot",
            format!("{DATABASE}metadata: {{name: my.db}}\nspec: {{serverRef: {{name: main}}}}\n"),
            "metadata.name is not a valid CouchDB database name",
        ),
        // partitioned
        ("partitioned as a string", with("partitioned: 'yes'"), "spec.partitioned in body must be of type boolean"),
        // shards
        ("no shards", with("shards: {count: 0}"), "spec.shards.count in body should be greater than or equal to 1"),
        (
            "over 256 shards",
            with("shards: {count: 257}"),
            "spec.shards.count in body should be less than or equal to 256",
        ),
        (
            "no copies of a shard",
            with("shards: {copies: 0}"),
            "spec.shards.copies in body should be greater than or equal to 1",
        ),
        (
            "over 16 copies of a shard",
            with("shards: {copies: 17}"),
            "spec.shards.copies in body should be less than or equal to 16",
        ),
        // security (the same Principals in admins and members)
        (
            "over 1000 admin names",
            with(&format!("security: {{admins: {{names: {}}}}}", items(1001, |i| format!("u{i}")))),
            "spec.security.admins.names: Too many: 1001: must have at most 1000 items",
        ),
        (
            "member role over 255 characters",
            with(&format!("security: {{members: {{roles: [{}]}}}}", long(256))),
            "spec.security.members.roles[0]: Too long: may not be more than 255",
        ),
        (
            "member named twice",
            with("security: {members: {names: [alice, alice]}}"),
            "spec.security.members.names[1]: Duplicate value: \"alice\"",
        ),
        (
            "admin role given twice",
            with("security: {admins: {roles: [ops, ops]}}"),
            "spec.security.admins.roles[1]: Duplicate value: \"ops\"",
        ),
        // deletionPolicy
        (
            "deletion policy other than Retain or Delete",
            with("deletionPolicy: Destroy"),
            "supported values: \"Retain\", \"Delete\"",
        ),
        // adopt, public
        ("adopt as a string", with("adopt: 'true'"), "spec.adopt in body must be of type boolean"),
        ("public as a string", with("public: 'no'"), "spec.public in body must be of type boolean"),
        // sharedWith (the same Consent in CouchUser)
        (
            "consent without anything allowed",
            with("sharedWith: [{namespace: team-b, allow: []}]"),
            "spec.sharedWith[0].allow",
        ),
        (
            "consent to a namespace twice",
            with("sharedWith: [{namespace: b, allow: [member]}, {namespace: b, allow: [admin]}]"),
            "Duplicate value",
        ),
        (
            "consent to over 100 namespaces",
            with(&format!("sharedWith: {}", items(101, |i| format!("{{namespace: n{i}, allow: [member]}}")))),
            "spec.sharedWith: Too many: 101: must have at most 100 items",
        ),
        (
            "consent to a namespace Kubernetes refuses",
            with("sharedWith: [{namespace: Team_B, allow: [member]}]"),
            "spec.sharedWith[0].namespace in body should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'",
        ),
        (
            "consent to a namespace over 63 characters",
            with(&format!("sharedWith: [{{namespace: {}, allow: [member]}}]", long(64))),
            "spec.sharedWith[0].namespace: Too long: may not be more than 63",
        ),
        (
            "consent without a namespace",
            with("sharedWith: [{allow: [member]}]"),
            "spec.sharedWith[0].namespace: Required value",
        ),
        (
            "consent without saying what it allows",
            with("sharedWith: [{namespace: team-b}]"),
            "spec.sharedWith[0].allow: Required value",
        ),
        (
            "consent allowing one thing twice",
            with("sharedWith: [{namespace: team-b, allow: [member, member]}]"),
            "spec.sharedWith[0].allow[1]: Duplicate value: \"member\"",
        ),
    ]
}

fn user_cases() -> Vec<Case> {
    let user = |spec: &str| format!("{USER}metadata: {{name: bad}}\nspec: {{{spec}}}\n");
    let with = |extra: &str| user(&format!("serverRef: {{name: main}}, {extra}"));
    vec![
        // serverRef
        ("user without a server", user("username: alice"), "spec.serverRef: Required value"),
        // username
        ("username with the reserved _ prefix", with("username: _admin"), "username must not start with _"),
        ("username with a colon", with("username: 'a:b'"), "username must not contain :"),
        ("empty username", with("username: ''"), "spec.username in body should be at least 1 chars long"),
        (
            "username over 255 characters",
            with(&format!("username: {}", long(256))),
            "spec.username: Too long: may not be more than 255",
        ),
        (
            "user claiming a replication user's name",
            with("username: couchshare-repl-0123456789abcdef0123"),
            "reserved for the scoped replication users of shares",
        ),
        (
            "user named like a replication user by its metadata.name",
            format!("{USER}metadata: {{name: couchshare-repl-x}}\nspec: {{serverRef: {{name: main}}}}\n"),
            "reserved for the scoped replication users of shares",
        ),
        // roles
        (
            "user role with the reserved _ prefix",
            with("roles: [_admin]"),
            "roles must be non-empty and must not start with _",
        ),
        ("empty user role", with("roles: ['']"), "roles must be non-empty and must not start with _"),
        (
            "user role over 255 characters",
            with(&format!("roles: [{}]", long(256))),
            "spec.roles[0]: Too long: may not be more than 255",
        ),
        (
            "over 100 user roles",
            with(&format!("roles: {}", items(101, |i| format!("r{i}")))),
            "spec.roles: Too many: 101: must have at most 100 items",
        ),
        ("user role given twice", with("roles: [ops, ops]"), "spec.roles[1]: Duplicate value: \"ops\""),
        // password
        ("password without a Secret", with("password: {}"), "spec.password.secretRef: Required value"),
        (
            "password Secret without a name",
            with("password: {secretRef: {key: pw}}"),
            "spec.password.secretRef.name: Required value",
        ),
        (
            "password Secret name over 253 characters",
            with(&format!("password: {{secretRef: {{name: {}}}}}", long(254))),
            "spec.password.secretRef.name: Too long: may not be more than 253",
        ),
        (
            "password Secret with an empty key",
            with("password: {secretRef: {name: pw, key: ''}}"),
            "spec.password.secretRef.key in body should be at least 1 chars long",
        ),
        // credentialsSecret
        (
            "credentials Secret with an empty name",
            with("credentialsSecret: {name: ''}"),
            "spec.credentialsSecret.name in body should be at least 1 chars long",
        ),
        (
            "credentials Secret name over 253 characters",
            with(&format!("credentialsSecret: {{name: {}}}", long(254))),
            "spec.credentialsSecret.name: Too long: may not be more than 253",
        ),
        (
            "connection URLs for over 100 databases",
            with(&format!("credentialsSecret: {{databases: {}}}", items(101, |i| format!("db{i}")))),
            "spec.credentialsSecret.databases: Too many: 101: must have at most 100 items",
        ),
        (
            "connection URL for a database name over 238 characters",
            with(&format!("credentialsSecret: {{databases: [{}]}}", long(239))),
            "spec.credentialsSecret.databases[0]: Too long: may not be more than 238",
        ),
        (
            "connection URL for one database twice",
            with("credentialsSecret: {databases: [notes, notes]}"),
            "spec.credentialsSecret.databases[1]: Duplicate value: \"notes\"",
        ),
        (
            "credentials Secret label that is not a string",
            with("credentialsSecret: {labels: {replicate: true}}"),
            "spec.credentialsSecret.labels.replicate in body must be of type string",
        ),
        (
            "credentials Secret annotation that is not a string",
            with("credentialsSecret: {annotations: {copies: 3}}"),
            "spec.credentialsSecret.annotations.copies in body must be of type string",
        ),
        // rotation
        (
            "rotation generation below zero",
            with("rotation: {generation: -1}"),
            "spec.rotation.generation in body should be greater than or equal to 0",
        ),
        // perUserDatabase, adopt
        (
            "per-user database as a string",
            with("perUserDatabase: 'yes'"),
            "spec.perUserDatabase in body must be of type boolean",
        ),
        ("adopt as a number", with("adopt: 1"), "spec.adopt in body must be of type boolean"),
        // deletionPolicy
        (
            "user deletion policy other than Retain or Delete",
            with("deletionPolicy: Purge"),
            "spec.deletionPolicy: Unsupported value: \"Purge\": supported values: \"Retain\", \"Delete\"",
        ),
        // sharedWith
        (
            "consent that allows something unknown",
            with("sharedWith: [{namespace: team-b, allow: [everything]}]"),
            "Unsupported value: \"everything\"",
        ),
        (
            "user consent to a namespace Kubernetes refuses",
            with("sharedWith: [{namespace: -team-b, allow: [replicateFrom]}]"),
            "spec.sharedWith[0].namespace in body should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'",
        ),
        (
            "user consent to a namespace twice",
            with("sharedWith: [{namespace: b, allow: [replicateFrom]}, {namespace: b, allow: [replicateTo]}]"),
            "spec.sharedWith[1]: Duplicate value: {\"namespace\":\"b\"}",
        ),
    ]
}

fn grant_cases() -> Vec<Case> {
    let grant = |spec: &str| format!("{GRANT}metadata: {{name: bad}}\nspec: {{{spec}}}\n");
    // A grant on the CouchDatabase `db` with `extra` added to its spec.
    let with = |extra: &str| grant(&format!("database: {{name: db}}, {extra}"));
    // A grant of role `r` on the database `database`.
    let on = |database: &str| grant(&format!("database: {{{database}}}, roles: [r]"));
    vec![
        // the grant as a whole
        (
            "grant that grants nothing",
            grant("database: {name: db}"),
            "a grant needs at least one of users, usernames or roles",
        ),
        // database
        ("grant without a database", grant("roles: [r]"), "spec.database: Required value"),
        (
            "grant on a managed and an unmanaged database at once",
            on("name: db, couchName: db, serverRef: {name: main}"),
            "database needs exactly one of name",
        ),
        (
            "grant on a CouchDatabase and a per-user database at once",
            on("name: db, userDatabase: {user: alice}"),
            "database needs exactly one of name",
        ),
        ("grant on no database at all", on(""), "database needs exactly one of name"),
        (
            "grant on a per-user database with a server of its own",
            on("userDatabase: {user: alice}, serverRef: {name: main}"),
            "database.serverRef is only used with couchName",
        ),
        (
            "grant on an unmanaged database without its server",
            on("couchName: userdb-616c"),
            "database.serverRef is required with couchName",
        ),
        (
            "grant on a per-user database in a namespace of the database's",
            on("userDatabase: {user: alice}, namespace: team-b"),
            "database.namespace is only used with name",
        ),
        (
            "grant on a CouchDatabase with an empty name",
            on("name: ''"),
            "spec.database.name in body should be at least 1 chars long",
        ),
        (
            "grant on a CouchDatabase name over 253 characters",
            on(&format!("name: {}", long(254))),
            "spec.database.name: Too long: may not be more than 253",
        ),
        (
            "grant on a CouchDatabase in a namespace over 63 characters",
            on(&format!("name: db, namespace: {}", long(64))),
            "spec.database.namespace: Too long: may not be more than 63",
        ),
        (
            "grant on a per-user database without its user",
            on("userDatabase: {namespace: team-b}"),
            "spec.database.userDatabase.user: Required value",
        ),
        (
            "grant on a per-user database in a namespace Kubernetes refuses",
            on("userDatabase: {user: alice, namespace: team_b}"),
            "spec.database.userDatabase.namespace in body should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'",
        ),
        (
            "grant on a CouchDatabase in a namespace Kubernetes refuses",
            on("name: db, namespace: Team-B"),
            "spec.database.namespace in body should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'",
        ),
        (
            "grant on an unmanaged database CouchDB would refuse",
            on("couchName: Payroll, serverRef: {name: main}"),
            "spec.database.couchName: Invalid value: \"Payroll\": must be a valid CouchDB database name",
        ),
        (
            "grant on an unmanaged database name over 238 characters",
            on(&format!("couchName: {}, serverRef: {{name: main}}", long(239))),
            "spec.database.couchName: Too long: may not be more than 238",
        ),
        (
            "grant on an unmanaged database on a server without a name",
            on("couchName: payroll, serverRef: {namespace: couchdb}"),
            "spec.database.serverRef.name: Required value",
        ),
        // access
        (
            "grant access other than member or admin",
            with("access: owner, roles: [r]"),
            "supported values: \"member\", \"admin\"",
        ),
        // users
        (
            "grant to a CouchUser without a name",
            with("users: [{namespace: team-b}]"),
            "spec.users[0].name: Required value",
        ),
        (
            "grant to a CouchUser with an empty name",
            with("users: [{name: ''}]"),
            "spec.users[0].name in body should be at least 1 chars long",
        ),
        (
            "grant to a CouchUser in a namespace Kubernetes refuses",
            with("users: [{name: alice, namespace: team-b-}]"),
            "spec.users[0].namespace in body should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'",
        ),
        (
            "grant to a CouchUser in a namespace over 63 characters",
            with(&format!("users: [{{name: alice, namespace: {}}}]", long(64))),
            "spec.users[0].namespace: Too long: may not be more than 63",
        ),
        (
            "grant to over 1000 CouchUsers",
            with(&format!("users: {}", items(1001, |i| format!("{{name: u{i}}}")))),
            "spec.users: Too many: 1001: must have at most 1000 items",
        ),
        // usernames
        ("grant to an empty username", with("usernames: ['']"), "usernames must be non-empty and must not contain :"),
        (
            "grant to a username with a colon",
            with("usernames: ['org.couchdb.user:bob']"),
            "usernames must be non-empty and must not contain :",
        ),
        (
            "grant to a username over 255 characters",
            with(&format!("usernames: [{}]", long(256))),
            "spec.usernames[0]: Too long: may not be more than 255",
        ),
        ("grant to one username twice", with("usernames: [bob, bob]"), "spec.usernames[1]: Duplicate value: \"bob\""),
        (
            "grant to over 1000 usernames",
            with(&format!("usernames: {}", items(1001, |i| format!("u{i}")))),
            "spec.usernames: Too many: 1001: must have at most 1000 items",
        ),
        // roles
        ("grant to an empty role", with("roles: ['']"), "roles must be non-empty"),
        (
            "grant to a role over 255 characters",
            with(&format!("roles: [{}]", long(256))),
            "spec.roles[0]: Too long: may not be more than 255",
        ),
        ("grant to one role twice", with("roles: [ops, ops]"), "spec.roles[1]: Duplicate value: \"ops\""),
        (
            "grant to over 1000 roles",
            with(&format!("roles: {}", items(1001, |i| format!("r{i}")))),
            "spec.roles: Too many: 1001: must have at most 1000 items",
        ),
    ]
}

fn share_cases() -> Vec<Case> {
    let share = |body: &str| format!("{SHARE}metadata: {{name: bad}}\nspec:\n{body}");
    // A share from the CouchDatabase `a` into `b` with `extra` (indented YAML lines) added.
    let with = |extra: &str| {
        share(&format!("  source: {{database: {{name: a}}}}\n  target: {{database: {{name: b}}}}\n{extra}"))
    };
    let from = |source: &str| share(&format!("  source: {{{source}}}\n  target: {{database: {{name: b}}}}\n"));
    let into = |target: &str| share(&format!("  source: {{database: {{name: a}}}}\n  target: {{{target}}}\n"));
    let remote = |remote: &str| into(&format!("remote: {{{remote}}}"));
    let fan_in = "  source: {userDatabases: {selector: {matchLabels: {app: notes}}}}\n  target: {database: {name: b}}\n  strategy: OnChange\n";
    let every_user_db = "  source: {perUserDatabases: {}}\n  target: {database: {name: b}}\n  strategy: OnChange\n  credentials: Admin\n";
    vec![
        // source
        ("share without a source", share("  target: {database: {name: b}}\n"), "spec.source: Required value"),
        (
            "share with two sources at once",
            from("database: {name: a}, userDatabase: {user: alice}"),
            "source needs exactly one of database, userDatabase, userDatabases, perUserDatabases or remote",
        ),
        (
            "share from nothing",
            from(""),
            "source needs exactly one of database, userDatabase, userDatabases, perUserDatabases or remote",
        ),
        (
            "share from a CouchDatabase without a name",
            from("database: {namespace: team-b}"),
            "spec.source.database.name: Required value",
        ),
        (
            "share from a CouchDatabase name over 253 characters",
            from(&format!("database: {{name: {}}}", long(254))),
            "spec.source.database.name: Too long: may not be more than 253",
        ),
        (
            "share from a CouchDatabase in a namespace Kubernetes refuses",
            from("database: {name: a, namespace: team.b}"),
            "spec.source.database.namespace in body should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'",
        ),
        (
            "share into a per-user database in a namespace Kubernetes refuses",
            into("userDatabase: {user: bob, namespace: -team-b}"),
            "spec.target.userDatabase.namespace in body should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'",
        ),
        (
            "share from a per-user database without its user",
            from("userDatabase: {namespace: team-b}"),
            "spec.source.userDatabase.user: Required value",
        ),
        (
            "share from a per-user database of a user name over 253 characters",
            from(&format!("userDatabase: {{user: {}}}", long(254))),
            "spec.source.userDatabase.user: Too long: may not be more than 253",
        ),
        ("fan-in without a selector", from("userDatabases: {}"), "spec.source.userDatabases.selector: Required value"),
        (
            "fan-in by a selector expression without an operator",
            from("userDatabases: {selector: {matchExpressions: [{key: app}]}}"),
            "spec.source.userDatabases.selector.matchExpressions[0].operator: Required value",
        ),
        (
            "fan-in from every per-user database by a prefix that matches system databases",
            share(&every_user_db.replace("perUserDatabases: {}", "perUserDatabases: {prefix: _}")),
            "prefix must start with a lowercase letter",
        ),
        (
            "fan-in from every per-user database by a prefix with a /",
            share(&every_user_db.replace("perUserDatabases: {}", "perUserDatabases: {prefix: tenant/userdb-}")),
            "prefix must start with a lowercase letter",
        ),
        (
            "fan-in from every per-user database by a prefix over 200 characters",
            share(
                &every_user_db.replace("perUserDatabases: {}", &format!("perUserDatabases: {{prefix: {}}}", long(201))),
            ),
            "spec.source.perUserDatabases.prefix: Too long: may not be more than 200",
        ),
        (
            "fan-in from every per-user database without strategy OnChange",
            share("  source: {perUserDatabases: {}}\n  target: {database: {name: b}}\n  credentials: Admin\n"),
            "source.perUserDatabases (every per-user database on the server) needs strategy: OnChange",
        ),
        (
            "fan-in from every per-user database with scoped credentials",
            share("  source: {perUserDatabases: {}}\n  target: {database: {name: b}}\n  strategy: OnChange\n"),
            "source.perUserDatabases reads databases no resource declares: it needs credentials: Admin",
        ),
        // target
        ("share without a target", share("  source: {database: {name: a}}\n"), "spec.target: Required value"),
        ("share into nothing", into(""), "target needs exactly one of database, userDatabase or remote"),
        (
            "share into a database and a per-user database at once",
            into("database: {name: b}, userDatabase: {user: bob}"),
            "target needs exactly one of database, userDatabase or remote",
        ),
        (
            "share into a per-user database in a namespace over 63 characters",
            into(&format!("userDatabase: {{user: bob, namespace: {}}}", long(64))),
            "spec.target.userDatabase.namespace: Too long: may not be more than 63",
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
        // remote (the same type as a source and as a target)
        (
            "share with credentials in a remote URL",
            remote("url: 'https://admin:pw@partner.example', database: inv, credentialsSecretRef: {name: p}"),
            "remote.url must not contain credentials",
        ),
        (
            "share with a remote URL without a scheme",
            remote("url: 'partner.example:5984', database: inv, credentialsSecretRef: {name: p}"),
            "remote.url must start with http:// or https://",
        ),
        (
            "share with a remote URL shorter than any URL",
            remote("url: 'http://', database: inv, credentialsSecretRef: {name: p}"),
            "spec.target.remote.url in body should be at least 8 chars long",
        ),
        (
            "share with a remote URL over 2048 characters",
            remote(&format!("url: 'https://{}', database: inv, credentialsSecretRef: {{name: p}}", long(2041))),
            "spec.target.remote.url: Too long: may not be more than 2048",
        ),
        (
            "share with a remote without a URL",
            remote("database: inv, credentialsSecretRef: {name: p}"),
            "spec.target.remote.url: Required value",
        ),
        (
            "share with a remote database CouchDB would refuse",
            remote("url: 'https://partner.example', database: Inventory, credentialsSecretRef: {name: p}"),
            "spec.target.remote.database: Invalid value: \"Inventory\": must be a valid CouchDB database name",
        ),
        (
            "share with a remote database name over 238 characters",
            remote(&format!(
                "url: 'https://partner.example', database: {}, credentialsSecretRef: {{name: p}}",
                long(239)
            )),
            "spec.target.remote.database: Too long: may not be more than 238",
        ),
        (
            "share with a remote without a database",
            remote("url: 'https://partner.example', credentialsSecretRef: {name: p}"),
            "spec.target.remote.database: Required value",
        ),
        (
            "share with a remote without credentials",
            remote("url: 'https://partner.example', database: inv"),
            "spec.target.remote.credentialsSecretRef: Required value",
        ),
        (
            "share with remote credentials under an empty password key",
            share(
                "  source: {remote: {url: 'https://partner.example', database: inv, credentialsSecretRef: {name: p, passwordKey: ''}}}\n  target: {database: {name: b}}\n",
            ),
            "spec.source.remote.credentialsSecretRef.passwordKey in body should be at least 1 chars long",
        ),
        // serverRef
        (
            "share between two remotes without a server",
            share(
                "  source: {remote: {url: 'https://a.example', database: a, credentialsSecretRef: {name: p}}}\n  target: {remote: {url: 'https://b.example', database: b, credentialsSecretRef: {name: p}}}\n",
            ),
            "serverRef is required when both source and target are remote",
        ),
        (
            "share run by a server without a name",
            with("  serverRef: {namespace: couchdb}\n"),
            "spec.serverRef.name: Required value",
        ),
        // replicatorDatabase
        (
            "share into a replicator database that is not one",
            with("  replicatorDatabase: tenant-a/jobs\n"),
            "replicatorDatabase must be _replicator or end in /_replicator",
        ),
        (
            "share into a replicator database over 238 characters",
            with(&format!("  replicatorDatabase: {}/_replicator\n", long(227))),
            "spec.replicatorDatabase: Too long: may not be more than 238",
        ),
        // mode, strategy, credentials
        (
            "share in an unknown mode",
            with("  mode: Both\n"),
            "spec.mode: Unsupported value: \"Both\": supported values: \"OneWay\", \"TwoWay\"",
        ),
        (
            "share with an unknown strategy",
            with("  strategy: Polling\n"),
            "spec.strategy: Unsupported value: \"Polling\": supported values: \"Continuous\", \"OnChange\"",
        ),
        (
            "share with unknown credentials",
            with("  credentials: Root\n"),
            "spec.credentials: Unsupported value: \"Root\": supported values: \"Scoped\", \"Admin\"",
        ),
        ("two-way share without a selector", with("  mode: TwoWay\n"), "a TwoWay share needs a selector"),
        (
            "two-way fan-in",
            share(
                "  source: {userDatabases: {selector: {matchLabels: {app: notes}}}}\n  target: {database: {name: b}}\n  mode: TwoWay\n  allowUnfiltered: true\n",
            ),
            "source.userDatabases (fan-in) only works with mode OneWay",
        ),
        (
            "on-change share that is not a fan-in",
            with("  strategy: OnChange\n"),
            "strategy: OnChange is for fan-in: source.userDatabases or source.perUserDatabases",
        ),
        (
            "two-way on-change share",
            share(&format!("{every_user_db}  mode: TwoWay\n  allowUnfiltered: true\n")),
            "strategy: OnChange only works with mode OneWay",
        ),
        // selector, allowUnfiltered, continuous
        (
            "share whose selector is not an object",
            with("  selector: [type]\n"),
            "spec.selector: Invalid value: \"array\": spec.selector in body must be of type object",
        ),
        (
            "allow unfiltered as a string",
            with("  allowUnfiltered: 'yes'\n"),
            "spec.allowUnfiltered in body must be of type boolean",
        ),
        ("continuous as a string", with("  continuous: 'no'\n"), "spec.continuous in body must be of type boolean"),
        // maxConcurrent
        (
            "concurrency for a continuous share",
            with("  maxConcurrent: 5\n"),
            "maxConcurrent only applies to strategy: OnChange",
        ),
        (
            "on-change share with no concurrency",
            share(&format!("{fan_in}  maxConcurrent: 0\n")),
            "spec.maxConcurrent in body should be greater than or equal to 1",
        ),
        (
            "on-change share with over 100 at once",
            share(&format!("{fan_in}  maxConcurrent: 101\n")),
            "spec.maxConcurrent in body should be less than or equal to 100",
        ),
        // sharingDocument
        (
            "on-change share with a sharing document",
            share(&format!("{fan_in}  sharingDocument: {{id: shared}}\n")),
            "strategy: OnChange writes no sharing document; remove sharingDocument",
        ),
        (
            "sharing document with a reserved id",
            with("  sharingDocument: {id: _design/sharing}\n"),
            "sharing document id must not start with _",
        ),
        (
            "sharing document with an empty id",
            with("  sharingDocument: {id: ''}\n"),
            "spec.sharingDocument.id in body should be at least 1 chars long",
        ),
        (
            "sharing document id over 512 characters",
            with(&format!("  sharingDocument: {{id: {}}}\n", long(513))),
            "spec.sharingDocument.id: Too long: may not be more than 512",
        ),
        (
            "sharing document body that is not an object",
            with("  sharingDocument: {body: [read]}\n"),
            "spec.sharingDocument.body in body must be of type object",
        ),
        // revoke
        (
            "revoked as a string",
            with("  revoke: {revoked: 'yes'}\n"),
            "spec.revoke.revoked in body must be of type boolean",
        ),
        (
            "purge as a string",
            with("  revoke: {purgeSharedDocuments: 'yes'}\n"),
            "spec.revoke.purgeSharedDocuments in body must be of type boolean",
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
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &k8s::api_resource(&obj));
        match k8s::create(&client, &ns, &obj).await {
            Ok(_) => {
                failures.push(format!("{what}: accepted"));
                // Out of the way of the next case of its kind, which reuses the name.
                let _ = api.delete(&obj.name_any(), &DeleteParams::default()).await;
                continue;
            }
            Err(kube::Error::Api(status)) if status.code == 422 && status.message.contains(expected) => {
                // Exactly one rule answers, so the fragment is that rule's. (The API server adds
                // a note when a schema error kept it from evaluating the CEL rules.)
                let causes: Vec<_> = status.details.iter().flat_map(|d| &d.causes).collect();
                let answering = causes.iter().filter(|c| !c.message.contains(CEL_SKIPPED)).count();
                if answering == 1 {
                    eprintln!("refused as expected: {what}: {}", status.message);
                } else {
                    failures.push(format!("{what}: expected one error, got {answering}: {}", status.message));
                }
            }
            Err(e) => failures.push(format!("{what}: expected 422 containing {expected:?}, got {e}")),
        }
        // A refused manifest leaves nothing behind.
        match api.get_opt(&obj.name_any()).await {
            Ok(None) => {}
            Ok(Some(_)) => failures.push(format!("{what}: refused, yet the object exists")),
            Err(e) => failures.push(format!("{what}: reading it back: {e}")),
        }
    }
    // Nor anything of any kind, under any name, in the namespace.
    for kind in ["CouchServer", "CouchDatabase", "CouchUser", "CouchGrant", "CouchShare"] {
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("couchshare.io", "v1alpha1", kind));
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
        let left = api.list(&ListParams::default()).await.unwrap_or_else(|e| panic!("listing {kind}: {e}"));
        let names: Vec<String> = left.items.iter().map(|o| o.name_any()).collect();
        if !names.is_empty() {
            failures.push(format!("{kind} left behind after the corpus: {names:?}"));
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
        ("database name removed", db("  name: projects\n"), db(""), "name is immutable"),
        (
            "partitioned turned on later",
            db("  name: p\n"),
            db("  name: p\n  partitioned: true\n"),
            "partitioned is immutable",
        ),
        ("shards added later", db("  name: s\n"), db("  name: s\n  shards: {count: 2}\n"), "shards is immutable"),
        ("shards removed", db("  name: s\n  shards: {copies: 2}\n"), db("  name: s\n"), "shards is immutable"),
        ("username", user("  username: alice\n"), user("  username: alicia\n"), "username is immutable"),
        ("username added later", user(""), user("  username: alice\n"), "username is immutable"),
        ("username removed", user("  username: alice\n"), user(""), "username is immutable"),
        (
            "un-revoking a share",
            share("  revoke: {revoked: true}\n"),
            share("  revoke: {revoked: false}\n"),
            "a revoked share stays revoked",
        ),
        ("revocation removed", share("  revoke: {revoked: true}\n"), share(""), "a revoked share stays revoked"),
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
        let stored = k8s::apply(&client, &ns, &original)
            .await
            .unwrap_or_else(|e| panic!("{what}: the original is valid, got {e}"));
        let edited = k8s::parse_yaml(&edited).pop().expect("one object");
        match k8s::apply(&client, &ns, &edited).await {
            Ok(_) => failures.push(format!("{what}: edit accepted")),
            Err(kube::Error::Api(status)) if status.code == 422 && status.message.contains(expected) => {
                eprintln!("refused as expected: {what}: {}", status.message);
            }
            Err(e) => failures.push(format!("{what}: expected 422 containing {expected:?}, got {e}")),
        }
        // A refused edit leaves the stored object as it was.
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &k8s::api_resource(&original));
        let now = api.get(&original.name_any()).await.unwrap_or_else(|e| panic!("{what}: reading it back: {e}"));
        if now.resource_version() != stored.resource_version() || now.data["spec"] != stored.data["spec"] {
            failures.push(format!("{what}: refused, yet the stored spec changed to {}", now.data["spec"]));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
