//! Tests of the tenancy rules: consent, namespace sets, trust, name scopes and admission.

use super::*;
use ConsentScope::*;

fn consent(ns: &str, allow: &[ConsentScope]) -> Consent {
    Consent { namespace: ns.into(), allow: allow.to_vec() }
}

#[test]
fn references_need_consent_for_exactly_what_they_do() {
    let db = "CouchDatabase a/payroll";
    type Case<'a> = (&'a str, Vec<Consent>, &'a str, Vec<ConsentScope>, Result<(), &'a str>);
    let cases: Vec<Case> = vec![
        ("own namespace needs nothing", vec![], "a", vec![Admin, ReplicateTo], Ok(())),
        ("no consent at all", vec![], "b", vec![Member], Err("member")),
        ("consent to another namespace", vec![consent("c", &[Member])], "b", vec![Member], Err("member")),
        ("member consent, member grant", vec![consent("b", &[Member])], "b", vec![Member], Ok(())),
        ("member consent, admin grant", vec![consent("b", &[Member])], "b", vec![Admin], Err("admin")),
        ("admin consent covers member", vec![consent("b", &[Admin])], "b", vec![Member], Ok(())),
        (
            "grant consent is no share consent",
            vec![consent("b", &[Admin])],
            "b",
            vec![ReplicateFrom],
            Err("replicateFrom"),
        ),
        (
            "read consent, one-way source",
            vec![consent("b", &[ReplicateFrom])],
            "b",
            share_needs(EndpointRole::Source, ShareMode::OneWay),
            Ok(()),
        ),
        (
            "read consent, one-way target",
            vec![consent("b", &[ReplicateFrom])],
            "b",
            share_needs(EndpointRole::Target, ShareMode::OneWay),
            Err("replicateTo"),
        ),
        (
            "read consent, two-way source",
            vec![consent("b", &[ReplicateFrom])],
            "b",
            share_needs(EndpointRole::Source, ShareMode::TwoWay),
            Err("replicateTo"),
        ),
        (
            "both, two-way target",
            vec![consent("b", &[ReplicateTo, ReplicateFrom])],
            "b",
            share_needs(EndpointRole::Target, ShareMode::TwoWay),
            Ok(()),
        ),
    ];
    for (what, consents, from, needs, expect) in cases {
        let got = reference(db, "a", &consents, from, &needs);
        match expect {
            Ok(()) => assert_eq!(got, Ok(()), "{what}"),
            Err(missing) => {
                let Err(Refused::NoConsent { needs, from: f, .. }) = &got else { panic!("{what}: {got:?}") };
                assert_eq!((needs.as_str(), f.as_str()), (missing, from), "{what}");
                assert_eq!(got.as_ref().map_err(Refused::reason), Err("ReferenceNotPermitted"), "{what}");
            }
        }
    }
}

#[test]
fn a_refusal_says_how_to_consent() {
    let err = reference("CouchUser a/alice", "a", &[], "b", &[ReplicateFrom]).expect_err("refused");
    let message = err.to_string();
    assert!(message.contains("CouchUser a/alice") && message.contains("namespace b"), "{message}");
    assert!(message.contains("{namespace: b, allow: [replicateFrom]}"), "{message}");
}

#[test]
fn namespace_sets_from_same_all_and_selector() {
    let labels: BTreeMap<String, String> = [("tenant".to_string(), "yes".to_string())].into();
    let other: BTreeMap<String, String> = [("tenant".to_string(), "no".to_string())].into();
    let selector = LabelSelector { match_labels: Some(labels.clone()), ..Default::default() };
    let by_selector = AllowedNamespaces { from: NamespacesFrom::Selector, selector: Some(selector) };
    let same = AllowedNamespaces::default();
    let all = AllowedNamespaces { from: NamespacesFrom::All, selector: None };
    assert!(in_namespaces(&same, "srv", "srv", None), "own namespace is always in");
    assert!(!in_namespaces(&same, "srv", "b", Some(&labels)));
    assert!(in_namespaces(&all, "srv", "b", None));
    assert!(in_namespaces(&by_selector, "srv", "b", Some(&labels)));
    assert!(!in_namespaces(&by_selector, "srv", "b", Some(&other)));
    assert!(!in_namespaces(&by_selector, "srv", "b", None), "a namespace that does not exist");
    assert!(needs_labels(&by_selector, "srv", "b") && !needs_labels(&by_selector, "srv", "srv"));
    assert!(!needs_labels(&all, "srv", "b"));
}

#[test]
fn trusted_acts_and_managed_objects() {
    let cases = [
        (TrustedAct::UnmanagedDatabase("hr".into()), "ReferenceNotPermitted"),
        (TrustedAct::AdoptDatabase("hr".into()), "AdoptionNotPermitted"),
        (TrustedAct::AdoptUser("hr".into()), "AdoptionNotPermitted"),
        (TrustedAct::AdminCredentials, "AdminCredentialsNotPermitted"),
    ];
    for (act, reason) in cases {
        assert_eq!(trusted(act.clone(), "b", "a/main", true), Ok(()));
        let err = trusted(act, "b", "a/main", false).expect_err("untrusted");
        assert_eq!(err.reason(), reason);
        assert!(err.to_string().contains("trustedNamespaces"), "{err}");
    }
    assert_eq!(unmanaged("database hr", None), Ok(()));
    let err = unmanaged("database payroll", Some("CouchDatabase a/payroll")).expect_err("managed");
    assert_eq!(err.reason(), "ReferenceNotPermitted");
    assert!(err.to_string().contains("CouchDatabase a/payroll"));
}

#[test]
fn a_namespace_the_server_does_not_trust_declares_only_its_own_names() {
    let tenant = name_scope("team-b", "team-a", "main", false);
    assert_eq!(name_scope("team-a", "team-a", "main", false), NameScope::Unrestricted, "server's namespace");
    assert_eq!(name_scope("team-b", "team-a", "main", true), NameScope::Unrestricted, "trusted");
    type Case<'a> = (NameKind, &'a str, bool, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (NameKind::Database, "team-b_loot", false, None),
        (NameKind::Database, "payroll", false, Some("NameOutOfScope")),
        (NameKind::Username, "carol", false, Some("NameOutOfScope")),
        (NameKind::Username, "team-b_carol", false, None),
        (NameKind::Role, "payroll-readers", false, Some("RoleNotPermitted")),
        (NameKind::Role, "team-b_readers", true, None),
        (NameKind::Role, "_admin", true, None),
        (NameKind::Role, "_admin", false, Some("RoleNotPermitted")),
        (NameKind::Username, "couchshare-repl-0123", false, Some("NameOutOfScope")),
        // Another namespace's prefix, and a namespace whose name starts this one's.
        (NameKind::Database, "team-b-x_loot", false, Some("NameOutOfScope")),
        (NameKind::Database, "team_loot", false, Some("NameOutOfScope")),
    ];
    for (kind, name, entry, expect) in cases {
        let got = in_scope(&tenant, kind, name, entry);
        assert_eq!(got.as_ref().err().map(Refused::reason), expect, "{kind} {name}");
        assert_eq!(in_scope(&NameScope::Unrestricted, kind, name, entry), Ok(()), "{name}");
    }
    let err = in_scope(&tenant, NameKind::Role, "payroll-readers", false).expect_err("refused");
    let message = err.to_string();
    assert!(message.contains("\"team-b_\"") && message.contains("team-a/main"), "{message}");
    assert!(message.contains("trustedNamespaces"), "{message}");
    let roles = ["team-b_r".to_string(), "x".to_string()];
    assert!(all_in_scope(&tenant, NameKind::Role, &roles, false).is_err());
    assert!(all_in_scope(&tenant, NameKind::Role, &roles[..1], false).is_ok());
}

#[test]
fn only_an_owner_that_is_not_refused_is_admitted() {
    type Case<'a> = (Option<&'a str>, Option<(&'a str, &'a str)>, bool);
    let cases: Vec<Case> = vec![
        (Some("carol"), Some(("True", "Ready")), true),
        (Some("carol"), Some(("False", "Unreachable")), true),
        (Some("carol"), Some(("False", "Conflict")), false),
        (Some("carol"), Some(("False", "RoleNotPermitted")), false),
        (Some("carol"), None, false),
        (None, Some(("False", "Conflict")), false),
        (None, Some(("True", "Ready")), false),
        (Some("dave"), Some(("True", "Ready")), false),
    ];
    for (recorded, ready, expect) in cases {
        assert_eq!(admitted(recorded, "carol", ready).is_ok(), expect, "{recorded:?} {ready:?}");
    }
}

#[test]
fn names_couchshare_derives_are_nobodys_to_declare() {
    assert_eq!(username_not_reserved("alice"), Ok(()));
    let err = username_not_reserved("couchshare-repl-0123456789abcdef0123").expect_err("reserved");
    assert_eq!(err.reason(), "NameReserved");
    assert!(err.to_string().contains("replication users"), "{err}");
    assert_eq!(database_not_reserved("payroll", "userdb-"), Ok(()));
    let err = database_not_reserved("userdb-64617665", "userdb-").expect_err("reserved");
    assert_eq!(err.reason(), "NameReserved");
    assert!(err.to_string().contains("perUserDatabase: true"), "{err}");
    assert_eq!(database_not_reserved("userdb-64617665", "private-"), Ok(()), "another prefix configured");
}

#[test]
fn grant_and_share_needs() {
    assert_eq!(grant_needs(Access::Member), vec![Member]);
    assert_eq!(grant_needs(Access::Admin), vec![Admin]);
    assert_eq!(share_needs(EndpointRole::Source, ShareMode::OneWay), vec![ReplicateFrom]);
    assert_eq!(share_needs(EndpointRole::Target, ShareMode::OneWay), vec![ReplicateTo]);
    assert_eq!(share_needs(EndpointRole::Target, ShareMode::TwoWay), vec![ReplicateFrom, ReplicateTo]);
}
