//! Tests of replication documents: endpoints, bodies, fingerprints, keep/rewrite/refuse.

use super::*;

fn owner(uid: &str) -> Owner {
    Owner { kind: "CouchShare".into(), namespace: "ns".into(), name: format!("s-{uid}"), uid: uid.into() }
}

fn auth(username: &str, password: &str) -> Option<EndpointAuth> {
    Some(EndpointAuth { username: username.into(), password: password.into() })
}

fn spec() -> ReplicationSpec {
    ReplicationSpec {
        id: "couchshare-ns-s-fwd".into(),
        source: Endpoint {
            base_url: "http://couch:5984".into(),
            database: "team/a".into(),
            auth: auth("repl", "s3cret:pw"),
        },
        target: Endpoint { base_url: "https://remote.example/couch".into(), database: "b".into(), auth: None },
        continuous: true,
        selector: Some(json!({"type": "task"})),
        owner: owner("me"),
    }
}

#[test]
fn endpoints_never_carry_credentials_in_the_url() {
    let e = spec().source;
    let obj = endpoint_json(&e, EndpointStyle::AuthObject);
    assert_eq!(
        obj,
        json!({"url": "http://couch:5984/team%2Fa", "auth": {"basic": {"username": "repl", "password": "s3cret:pw"}}})
    );
    let header = endpoint_json(&e, EndpointStyle::BasicHeader);
    let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("repl:s3cret:pw"));
    assert_eq!(header, json!({"url": "http://couch:5984/team%2Fa", "headers": {"Authorization": expected}}));
    assert_eq!(expected, "Basic cmVwbDpzM2NyZXQ6cHc=");
    for v in [&obj, &header] {
        let url = v["url"].as_str().expect("url");
        assert!(!url.contains("s3cret") && !url.contains('@'), "{url}");
    }
    let anonymous = Endpoint { base_url: "https://h/couch/".into(), database: "b".into(), auth: None };
    assert_eq!(endpoint_json(&anonymous, EndpointStyle::AuthObject), json!({"url": "https://h/couch/b"}));
    let leaky = Endpoint { base_url: "http://u:p@h:5984".into(), database: "b".into(), auth: None };
    assert_eq!(endpoint_json(&leaky, EndpointStyle::BasicHeader), json!({"url": "http://h:5984/b"}));
    let debug = format!("{:?}", e);
    assert!(debug.contains("repl") && !debug.contains("s3cret"), "{debug}");
}

#[test]
fn spec_hash_follows_what_the_replication_does() {
    let base = spec_hash(&spec());
    assert_eq!(base.len(), 32);
    assert!(base.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(base, spec_hash(&spec()));
    let unchanged: Vec<(&str, ReplicationSpec)> = vec![
        ("id", ReplicationSpec { id: "other".into(), ..spec() }),
        ("owner", ReplicationSpec { owner: owner("other"), ..spec() }),
    ];
    for (what, s) in unchanged {
        assert_eq!(spec_hash(&s), base, "{what} must not change the hash");
    }
    let ab = ReplicationSpec { selector: Some(json!({"a": 1, "b": {"$in": [1]}})), ..spec() };
    let ba = ReplicationSpec { selector: Some(json!({"b": {"$in": [1]}, "a": 1})), ..spec() };
    assert_eq!(spec_hash(&ab), spec_hash(&ba), "selector key order must not change the hash");
    let mut password = spec();
    password.source.auth = auth("repl", "rotated");
    let mut username = spec();
    username.source.auth = auth("repl2", "s3cret:pw");
    let mut no_auth = spec();
    no_auth.source.auth = None;
    let mut database = spec();
    database.target.database = "c".into();
    let mut url = spec();
    url.target.base_url = "https://elsewhere.example".into();
    let changed: Vec<(&str, ReplicationSpec)> = vec![
        ("selector", ReplicationSpec { selector: Some(json!({"type": "note"})), ..spec() }),
        ("no selector", ReplicationSpec { selector: None, ..spec() }),
        ("continuous", ReplicationSpec { continuous: false, ..spec() }),
        ("password", password),
        ("username", username),
        ("credentials dropped", no_auth),
        ("database", database),
        ("url", url),
    ];
    for (what, s) in changed {
        assert_ne!(spec_hash(&s), base, "{what} must change the hash");
    }
}

#[test]
fn canonical_json_sorts_keys_at_every_level() {
    let mut a = String::new();
    canonical_json(&json!({"b": [{"z": 1, "a": "x\"y"}], "a": null}), &mut a);
    assert_eq!(a, r#"{"a":null,"b":[{"a":"x\"y","z":1}]}"#);
}

#[test]
fn replication_docs_carry_owner_and_hash() {
    let s = spec();
    let doc = replication_doc(&s, EndpointStyle::AuthObject);
    assert_eq!(doc["source"], endpoint_json(&s.source, EndpointStyle::AuthObject));
    assert_eq!(doc["target"], json!({"url": "https://remote.example/couch/b"}));
    assert_eq!(doc["continuous"], json!(true));
    assert_eq!(doc["selector"], json!({"type": "task"}));
    assert_eq!(doc["create_target"], json!(false));
    assert_eq!(doc[SHARE_FIELD], serde_json::to_value(&s.owner).expect("owner"));
    assert_eq!(doc[SPEC_HASH_FIELD], json!(spec_hash(&s)));
    assert!(doc.get("_id").is_none() && doc.get("_rev").is_none());
    let unfiltered = replication_doc(&ReplicationSpec { selector: None, ..spec() }, EndpointStyle::BasicHeader);
    assert!(unfiltered.get("selector").is_none());
}

#[test]
fn plan_replication_table() {
    let s = spec();
    let body = replication_doc(&s, EndpointStyle::AuthObject);
    let with = |extra: Value| {
        let mut doc = body.clone();
        doc["_id"] = json!(s.id);
        doc["_rev"] = json!("3-abc");
        if let (Some(doc), Value::Object(extra)) = (doc.as_object_mut(), extra) {
            doc.extend(extra);
        }
        doc
    };
    let mut no_owner = with(json!({}));
    no_owner.as_object_mut().expect("object").remove(SHARE_FIELD);
    type Expect = Result<ReplicationAction, &'static str>;
    let cases: Vec<(&str, Option<Value>, Expect)> = vec![
        ("missing: create", None, Ok(ReplicationAction::Create(body.clone()))),
        ("same hash: keep", Some(with(json!({}))), Ok(ReplicationAction::Keep)),
        (
            "completed one-shot, same hash: keep, never re-run",
            Some(with(json!({"_replication_state": "completed", "continuous": false}))),
            Ok(ReplicationAction::Keep),
        ),
        (
            "another spec: update in place",
            Some(with(json!({SPEC_HASH_FIELD: "0123"}))),
            Ok(ReplicationAction::Update { rev: "3-abc".into(), body: body.clone() }),
        ),
        (
            "no hash at all: update",
            Some(with(json!({SPEC_HASH_FIELD: null}))),
            Ok(ReplicationAction::Update { rev: "3-abc".into(), body: body.clone() }),
        ),
        ("another share's: conflict", Some(with(json!({SHARE_FIELD: owner("other")}))), Err("Conflict")),
        ("nobody's: already exists", Some(no_owner), Err("AlreadyExists")),
        ("malformed owner: already exists", Some(with(json!({SHARE_FIELD: "me"}))), Err("AlreadyExists")),
    ];
    for (what, existing, expect) in cases {
        let got = plan_replication(&s, existing.as_ref(), EndpointStyle::AuthObject).map_err(|e| match e {
            Refusal::AlreadyExists { what } => {
                assert_eq!(what, "replication document couchshare-ns-s-fwd");
                "AlreadyExists"
            }
            Refusal::Conflict { what, owner: o } => {
                assert_eq!(what, "replication document couchshare-ns-s-fwd");
                assert_eq!(o, owner("other"));
                "Conflict"
            }
            other => other.reason(),
        });
        assert_eq!(got, expect, "{what}");
    }
}

#[test]
fn stale_replications_are_ours_and_unwanted() {
    let me = owner("me");
    let doc = |id: &str, o: Option<Owner>| {
        let mut d = json!({"_id": id, "_rev": format!("1-{id}"), "source": "a", "target": "b"});
        if let Some(o) = o {
            d[SHARE_FIELD] = serde_json::to_value(o).expect("owner");
        }
        d
    };
    let docs = vec![
        doc("couchshare-ns-s-fwd", Some(me.clone())),
        doc("couchshare-ns-s-back", Some(me.clone())),
        doc("couchshare-ns-s-fwd-616c696365", Some(me.clone())),
        doc("couchshare-ns-t-fwd", Some(owner("other"))),
        doc("by-hand", None),
        json!({"_id": "no-rev", SHARE_FIELD: me.clone()}),
    ];
    let wanted = vec!["couchshare-ns-s-fwd".to_string()];
    assert_eq!(
        stale_replications(&docs, &me, &wanted),
        vec![
            ("couchshare-ns-s-back".to_string(), "1-couchshare-ns-s-back".to_string()),
            ("couchshare-ns-s-fwd-616c696365".to_string(), "1-couchshare-ns-s-fwd-616c696365".to_string()),
        ]
    );
    assert_eq!(stale_replications(&docs[..1], &me, &wanted), vec![]);
    assert_eq!(stale_replications(&docs, &owner("nobody"), &[]), vec![]);
}

#[test]
fn a_replication_document_under_the_shares_ids_that_is_not_its_own_refuses_it() {
    let me = owner("me");
    let mine = json!({"_id": "couchshare-ns-s-fwd", SHARE_FIELD: serde_json::to_value(&me).expect("owner")});
    let theirs =
        json!({"_id": "couchshare-ns-s-rev", SHARE_FIELD: serde_json::to_value(owner("other")).expect("owner")});
    let by_hand = json!({"_id": "couchshare-ns-s-fwd", "source": "a"});
    assert_eq!(foreign_replication_doc(&[], &me), None);
    assert_eq!(foreign_replication_doc(std::slice::from_ref(&mine), &me), None);
    assert!(matches!(foreign_replication_doc(&[mine.clone(), theirs], &me), Some(Refusal::Conflict { .. })));
    let Some(Refusal::AlreadyExists { what }) = foreign_replication_doc(&[by_hand], &me) else { panic!("by hand") };
    assert_eq!(what, "replication document couchshare-ns-s-fwd");
}
