//! End-to-end, operator running: `kubectl wait --for=condition=Ready` works on every kind, as
//! the README shows it — it returns once each resource is Ready, times out with a non-zero exit
//! on one that is not, and `--for=condition=Ready=False` finds that one.

mod support;

use std::process::Command;

use support::operator::{Operator, admin_secret};
use support::{couchdb, k8s};

fn kubectl_wait(ns: &str, args: &[&str]) -> (bool, String) {
    let kubectl = std::env::var("COUCHSHARE_KUBECTL").expect("COUCHSHARE_KUBECTL (set by tools/test)");
    let out = Command::new(kubectl).args(["wait", "-n", ns]).args(args).output().expect("run kubectl wait");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), said)
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_wait_for_condition_ready_works_on_every_kind() {
    let test = "kubectl_wait_for_condition_ready_works_on_every_kind";
    let Some((client, _couch)) = support::servers(test).await else { return };
    let ns = k8s::namespace(&client, "wait").await;
    admin_secret(&client, &ns).await;
    let op = Operator::start(&ns, &[]);
    let url = std::env::var("COUCHDB_URL").expect("COUCHDB_URL");
    let (src, dst, user) =
        (couchdb::unique_name("wait-src"), couchdb::unique_name("wait-dst"), couchdb::unique_name("waiter"));
    let yaml = format!(
        r#"apiVersion: couchshare.io/v1alpha1
kind: CouchServer
metadata: {{name: main}}
spec: {{url: "{url}", adminCredentials: {{secretRef: {{name: couchdb-admin}}}}}}
---
apiVersion: couchshare.io/v1alpha1
kind: CouchDatabase
metadata: {{name: source}}
spec: {{serverRef: {{name: main}}, name: {src}}}
---
apiVersion: couchshare.io/v1alpha1
kind: CouchDatabase
metadata: {{name: target}}
spec: {{serverRef: {{name: main}}, name: {dst}}}
---
apiVersion: couchshare.io/v1alpha1
kind: CouchUser
metadata: {{name: waiter}}
spec: {{serverRef: {{name: main}}, username: {user}}}
---
apiVersion: couchshare.io/v1alpha1
kind: CouchGrant
metadata: {{name: waiter-reads}}
spec: {{database: {{name: source}}, access: member, users: [{{name: waiter}}]}}
---
apiVersion: couchshare.io/v1alpha1
kind: CouchShare
metadata: {{name: copy}}
spec: {{source: {{database: {{name: source}}}}, target: {{database: {{name: target}}}}, mode: OneWay}}
---
apiVersion: couchshare.io/v1alpha1
kind: CouchDatabase
metadata: {{name: orphan}}
spec: {{serverRef: {{name: no-such-server}}, name: {src}-orphan}}
"#
    );
    let Some((ok, said)) = k8s::kubectl_apply(test, &ns, &yaml) else { return };
    assert!(ok, "kubectl apply: {said}");

    let every_kind = [
        "couchserver/main",
        "couchdatabase/source",
        "cdb/target",
        "cuser/waiter",
        "cgrant/waiter-reads",
        "cshare/copy",
    ];
    let mut args = vec!["--for=condition=Ready", "--timeout=90s"];
    args.extend(every_kind);
    let (ok, said) = kubectl_wait(&ns, &args);
    assert!(ok, "kubectl wait for Ready on every kind: {said}\n{}", op.tail());
    for object in [
        "couchserver.couchshare.io/main",
        "couchdatabase.couchshare.io/source",
        "couchuser.couchshare.io/waiter",
        "couchgrant.couchshare.io/waiter-reads",
        "couchshare.couchshare.io/copy",
    ] {
        assert!(said.contains(&format!("{object} condition met")), "{object}: {said}");
    }

    // A resource that cannot become Ready: the wait times out, and a script sees it by the exit code.
    let (ok, said) = kubectl_wait(&ns, &["--for=condition=Ready", "--timeout=5s", "cdb/orphan"]);
    assert!(!ok, "kubectl wait returned success for a database whose server does not exist: {said}");
    assert!(said.contains("timed out"), "{said}");
    let (ok, said) = kubectl_wait(&ns, &["--for=condition=Ready=False", "--timeout=60s", "cdb/orphan"]);
    assert!(ok, "kubectl wait for Ready=False: {said}\n{}", op.tail());
}
