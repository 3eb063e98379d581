//! End-to-end, operator running: `credentialsSecret.template` keys reach an app as working
//! URLs, a rotation re-renders them, an unknown placeholder leaves the user `Ready=False`
//! with nothing written, admission refuses what CEL can check, and no password reaches a
//! label, an annotation, the status or an Event.

mod support;

use std::time::Duration;

use couchshare::api::{CouchServer, CouchUser};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use serde_json::{Value, json};
use support::operator::{
    Operator, admin_secret, apply_json, events_for, ready, secret_data, server_manifest, wait_for, wait_not_ready,
    wait_ready,
};
use support::{couchdb, k8s};

struct Env {
    client: Client,
    couch: couchshare::couch::CouchClient,
    ns: String,
    op: Operator,
}

async fn setup(test: &str) -> Option<Env> {
    let (client, couch) = support::servers(test).await?;
    let ns = k8s::namespace(&client, "tmpl").await;
    admin_secret(&client, &ns).await;
    let op = Operator::start(&ns, &[]);
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let _: CouchServer = apply_json(&client, &ns, server_manifest("main", &url, json!({}))).await;
    wait_ready(&Api::<CouchServer>::namespaced(client.clone(), &ns), "main", &op).await;
    Some(Env { client, couch, ns, op })
}

fn user(name: &str, spec: Value) -> Value {
    let mut full = json!({"serverRef": {"name": "main"}});
    if let (Some(f), Some(s)) = (full.as_object_mut(), spec.as_object()) {
        f.extend(s.clone());
    }
    json!({"apiVersion": "couchshare.io/v1alpha1", "kind": "CouchUser", "metadata": {"name": name}, "spec": full})
}

/// Who CouchDB says a request with the credentials of `url` (in the URL, as an app passes them)
/// is: `GET {url}/_session` with the user info as Basic auth, the way PouchDB and curl send it.
async fn session_name(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8().ok().map(|c| c.into_owned());
    let (user, pass) = (decode(parsed.username())?, decode(parsed.password()?)?);
    let mut bare = parsed.clone();
    bare.set_username("").ok()?;
    bare.set_password(None).ok()?;
    let base = bare.as_str().trim_end_matches('/').to_string();
    let body: Value = reqwest::Client::new()
        .get(format!("{base}/_session"))
        .basic_auth(user, Some(pass))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    body["userCtx"]["name"].as_str().map(str::to_string)
}

async fn eventually_session(url: &str, expected: Option<&str>) -> bool {
    couchdb::eventually(Duration::from_secs(30), || async {
        (session_name(url).await.as_deref() == expected).then_some(())
    })
    .await
    .is_some()
}

/// No password in the Secret's labels and annotations, the user's status, or its Events.
async fn password_nowhere_but_data(env: &Env, name: &str, secret: &str, password: &str) {
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let s = secrets.get(secret).await.expect("the Secret");
    let meta = serde_json::to_string(&(s.metadata.labels, s.metadata.annotations)).expect("json");
    let encoded: String =
        percent_encoding::utf8_percent_encode(password, percent_encoding::NON_ALPHANUMERIC).to_string();
    assert!(!meta.contains(password) && !meta.contains(&encoded), "a password in the Secret's metadata: {meta}");
    let users: Api<CouchUser> = Api::namespaced(env.client.clone(), &env.ns);
    let status = serde_json::to_string(&users.get(name).await.expect("user").status).expect("json");
    assert!(!status.contains(password), "a password in the status");
    for (reason, message) in events_for(&env.client, &env.ns, name).await {
        assert!(!message.contains(password), "a password in Event {reason}");
    }
    assert!(!env.op.output().contains(password), "a password in the operator's log");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_template_key_reaches_an_app_as_a_working_url_and_a_rotation_re_renders_it() {
    let test = "a_template_key_reaches_an_app_as_a_working_url_and_a_rotation_re_renders_it";
    let Some(env) = setup(test).await else { return };
    let users = Api::<CouchUser>::namespaced(env.client.clone(), &env.ns);
    let db = couchdb::unique_name("tmpl-db");

    // A declared password with every character that breaks a URL unless percent-encoded.
    let tricky = "p@ss:w/rd%2F?#x";
    let declared = couchdb::unique_name("declared");
    let _: Secret = apply_json(
        &env.client,
        &env.ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "declared-pw"}, "stringData": {"pw": tricky}}),
    )
    .await;
    let template = json!({
        "COUCHDB_URL": "{{ urlWithCredentials }}",
        "POUCHDB_URL": format!("{{{{ databaseURL(\"{db}\") }}}}"),
        "DSN": "couchdb://{{ usernameEncoded }}:{{ passwordEncoded }}@server",
    });
    let spec = json!({"username": declared, "password": {"secretRef": {"name": "declared-pw", "key": "pw"}},
                      "credentialsSecret": {"template": template}});
    let _: CouchUser = apply_json(&env.client, &env.ns, user("declared", spec)).await;
    wait_ready(&users, "declared", &env.op).await;
    let data = secret_data(&env.client, &env.ns, "declared-couchdb").await.expect("credentials Secret");
    let base = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let port = url::Url::parse(&base).expect("url").port().expect("port");
    assert_eq!(data["COUCHDB_URL"], format!("http://{declared}:p%40ss%3Aw%2Frd%252F%3F%23x@127.0.0.1:{port}/"));
    assert_eq!(data["POUCHDB_URL"], format!("http://{declared}:p%40ss%3Aw%2Frd%252F%3F%23x@127.0.0.1:{port}/{db}"));
    assert_eq!(data["DSN"], format!("couchdb://{declared}:p%40ss%3Aw%2Frd%252F%3F%23x@server"));
    assert_eq!(data["password"], tricky, "the operator's own keys stay");
    assert!(
        eventually_session(&data["COUCHDB_URL"], Some(&declared)).await,
        "CouchDB knows the user by the rendered URL's credentials"
    );
    password_nowhere_but_data(&env, "declared", "declared-couchdb", tricky).await;

    // A generated password: bumping the rotation re-renders every template key.
    let generated = couchdb::unique_name("gen");
    let spec = |generation: i64| {
        json!({"username": generated, "rotation": {"generation": generation},
               "credentialsSecret": {"template": {"COUCHDB_URL": "{{ urlWithCredentials }}"}}})
    };
    let _: CouchUser = apply_json(&env.client, &env.ns, user("gen", spec(0))).await;
    wait_ready(&users, "gen", &env.op).await;
    let old = secret_data(&env.client, &env.ns, "gen-couchdb").await.expect("Secret");
    assert!(
        old["COUCHDB_URL"].contains(&format!("{generated}:{}@", old["password"])),
        "rendered from the Secret's own password"
    );
    assert!(eventually_session(&old["COUCHDB_URL"], Some(&generated)).await, "the rendered URL logs in");
    let _: CouchUser = apply_json(&env.client, &env.ns, user("gen", spec(1))).await;
    wait_for(&users, "gen", &env.op, "rotation 1 applied", |u| {
        u.status.as_ref().and_then(|s| s.rotation_generation) == Some(1) && ready(u).is_some_and(|r| r.0 == "True")
    })
    .await;
    let new = secret_data(&env.client, &env.ns, "gen-couchdb").await.expect("Secret");
    assert_ne!(new["password"], old["password"]);
    assert!(new["COUCHDB_URL"].contains(&format!(":{}@", new["password"])), "the template key was re-rendered");
    assert!(eventually_session(&new["COUCHDB_URL"], Some(&generated)).await, "the re-rendered URL logs in");
    assert!(eventually_session(&old["COUCHDB_URL"], None).await, "the old URL no longer does");
    password_nowhere_but_data(&env, "gen", "gen-couchdb", &new["password"]).await;
    password_nowhere_but_data(&env, "gen", "gen-couchdb", &old["password"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_placeholder_leaves_the_user_not_ready_and_writes_nothing() {
    let test = "an_unknown_placeholder_leaves_the_user_not_ready_and_writes_nothing";
    let Some(env) = setup(test).await else { return };
    let users = Api::<CouchUser>::namespaced(env.client.clone(), &env.ns);
    let username = couchdb::unique_name("typo");
    let spec = |source: &str| json!({"username": username, "credentialsSecret": {"template": {"COUCHDB_URL": source}}});
    let _: CouchUser = apply_json(&env.client, &env.ns, user("typo", spec("{{ urlWithCredential }}"))).await;
    let u = wait_not_ready(&users, "typo", &env.op, "InvalidSpec").await;
    let (_, _, message) = ready(&u).expect("Ready condition");
    assert!(
        message.contains("COUCHDB_URL") && message.contains("unknown placeholder urlWithCredential"),
        "the message names the key and the placeholder: {message}"
    );
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    assert!(secrets.get_opt("typo-couchdb").await.expect("get").is_none(), "no Secret was written");
    assert!(env.couch.get_user(&username).await.expect("get user").is_none(), "no user was written");
    assert!(
        events_for(&env.client, &env.ns, "typo").await.iter().any(|(_, m)| m.contains("unknown placeholder")),
        "an Event says why"
    );

    // The fix is a spec change, and the user goes Ready with the key rendered.
    let _: CouchUser = apply_json(&env.client, &env.ns, user("typo", spec("{{ urlWithCredentials }}"))).await;
    wait_ready(&users, "typo", &env.op).await;
    let data = secret_data(&env.client, &env.ns, "typo-couchdb").await.expect("Secret");
    assert!(eventually_session(&data["COUCHDB_URL"], Some(&username)).await, "the rendered URL logs in");
}

#[tokio::test(flavor = "multi_thread")]
async fn admission_refuses_templates_cel_can_judge() {
    let test = "admission_refuses_templates_cel_can_judge";
    let Some((client, _couch)) = support::servers(test).await else { return };
    let ns = k8s::namespace(&client, "tmpl-cel").await;
    let manifest = |template: &str| {
        format!(
            "apiVersion: couchshare.io/v1alpha1\nkind: CouchUser\nmetadata: {{name: cel}}\nspec:\n  serverRef: {{name: main}}\n  credentialsSecret:\n    template:\n{template}\n"
        )
    };
    for (template, said) in [
        ("      COUCHDB_URL: \"{{ .URLWithCredentials }}\"", "without a leading dot"),
        ("      password: \"{{ password }}\"", "written by the operator"),
        ("      url-db: \"{{ url }}\"", "written by the operator"),
        ("      \"bad key\": \"{{ url }}\"", "valid Secret keys"),
        ("      COUCHDB_URL: \"{{ url \"", "needs its }}"),
    ] {
        let Some((ok, out)) = k8s::kubectl_apply(test, &ns, &manifest(template)) else { return };
        assert!(!ok, "{template} was accepted: {out}");
        assert!(out.contains(said), "{template}: {out}");
    }
    let Some((ok, out)) = k8s::kubectl_apply(test, &ns, &manifest("      COUCHDB_URL: \"{{ urlWithCredentials }}\""))
    else {
        return;
    };
    assert!(ok, "a good template is accepted: {out}");
}
