//! The names a share writes under: replication document ids, sharing document ids, the scoped
//! replication user.

use sha2::{Digest, Sha256};

use super::Direction;

/// The sharing document id: the template with `{source}` and `{target}` replaced by the database names.
pub fn sharing_doc_id(template: &str, source_db: &str, target_db: &str) -> String {
    // One pass, so a database name that looks like a placeholder is left as it is.
    let mut out = String::with_capacity(template.len() + source_db.len() + target_db.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        if let Some(after) = tail.strip_prefix("{source}") {
            out.push_str(source_db);
            rest = after;
        } else if let Some(after) = tail.strip_prefix("{target}") {
            out.push_str(target_db);
            rest = after;
        } else {
            out.push('{');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Deterministic replication document id for one direction of a share, from its identity:
/// `couchshare_<namespace>_<name>_<fwd|back>` plus `_<hex(source_user)>` for one fan-in source.
/// Characters outside [A-Za-z0-9_.-] are replaced by `_`. Never starts with `_`.
pub fn replication_doc_id(namespace: &str, name: &str, direction: Direction, fan_in_user: Option<&str>) -> String {
    // `_` cannot appear in Kubernetes names: with it as separator, no two shares share an id.
    let mut id = format!("couchshare_{namespace}_{name}_{}", direction.suffix());
    if let Some(user) = fan_in_user {
        id.push('_');
        id.push_str(&hex::encode(user.as_bytes()));
    }
    id.chars().map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '_' }).collect()
}

/// The prefix every replication document id of one share starts with.
pub fn replication_doc_prefix(namespace: &str, name: &str) -> String {
    replication_doc_id(namespace, name, Direction::Forward, None)
        .trim_end_matches(Direction::Forward.suffix())
        .to_string()
}

/// The share (namespace, name) whose replication document `id` is, read back from the id
/// [`replication_doc_id`] gave it (`_` never appears in a Kubernetes name); `None` for any other
/// document.
pub fn replication_doc_owner(id: &str) -> Option<(String, String)> {
    let mut parts = id.split('_');
    let (Some("couchshare"), Some(ns), Some(name), Some(direction)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let known = [Direction::Forward.suffix(), Direction::Backward.suffix()].contains(&direction);
    (known && !ns.is_empty() && !name.is_empty()).then(|| (ns.to_string(), name.to_string()))
}

/// Deterministic name of the scoped replication user of a share:
/// `couchshare-repl-` + the first 20 hex chars of sha256("<namespace>/<name>"). Valid CouchDB username.
pub fn replication_username(namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    format!("couchshare-repl-{}", &hex::encode(digest)[..20])
}

/// Field of the scoped user's document: fingerprint of the password it was given.
pub const PASSWORD_FIELD: &str = "couchshare.io/password-fingerprint";

/// `Ok` when an existing `_users` document under a share's replication username is that share's
/// (its record names the share's UID), else who holds it: a CouchUser's record, another share's,
/// or nobody's (made by hand), which the share never overwrites.
pub fn replication_user_owned(doc: &crate::couch::UserDoc, me: &crate::plan::ownership::Owner) -> Result<(), String> {
    let recorded = |field: &str| -> Option<crate::plan::ownership::Owner> {
        doc.extra.get(field).and_then(|o| serde_json::from_value(o.clone()).ok())
    };
    match recorded(super::SHARE_FIELD).or_else(|| recorded(crate::plan::user::OWNER_FIELD)) {
        Some(owner) if owner.uid == me.uid => Ok(()),
        Some(owner) => Err(owner.to_string()),
        None => Err("a user made outside couchshare".into()),
    }
}

/// The scoped replication user's document to write, or `None` when the one in `_users` is up
/// to date: it was given this password (`fingerprint`) by this share (`owner.uid`). Anything
/// else in the existing document is kept.
pub fn replication_user_update(
    existing: Option<&crate::couch::UserDoc>,
    username: &str,
    password: &str,
    fingerprint: &str,
    owner: &crate::plan::ownership::Owner,
) -> Option<crate::couch::UserDoc> {
    use serde_json::Value;
    let up_to_date = existing.is_some_and(|d| {
        d.extra.get(PASSWORD_FIELD).and_then(Value::as_str) == Some(fingerprint)
            && d.extra.get(super::SHARE_FIELD).and_then(|o| o.get("uid")).and_then(Value::as_str)
                == Some(owner.uid.as_str())
    });
    if up_to_date {
        return None;
    }
    let mut doc = existing.cloned().unwrap_or_else(|| crate::couch::UserDoc::new(username.to_string(), vec![], None));
    doc.password = Some(password.to_string());
    doc.extra.insert(PASSWORD_FIELD.into(), Value::String(fingerprint.to_string()));
    doc.extra.insert(super::SHARE_FIELD.into(), super::owner_json(owner));
    Some(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replication_document_id_names_its_share() {
        for (direction, user) in
            [(Direction::Forward, None), (Direction::Backward, None), (Direction::Forward, Some("bob"))]
        {
            let id = replication_doc_id("inv", "alice-to.bob", direction, user);
            assert_eq!(replication_doc_owner(&id), Some(("inv".into(), "alice-to.bob".into())), "{id}");
        }
        assert_eq!(replication_doc_owner("couchshare_inv_x_sideways"), None);
        assert_eq!(replication_doc_owner("_design/x"), None);
        assert_eq!(replication_doc_owner("someone_else_s_fwd"), None);
        assert_eq!(replication_doc_owner("couchshare__x_fwd"), None);
    }

    #[test]
    fn sharing_doc_ids_fill_the_template() {
        assert_eq!(sharing_doc_id("db_sharing-{source}--{target}", "a", "b"), "db_sharing-a--b");
        assert_eq!(sharing_doc_id("{target}/{source}/{target}", "a", "b"), "b/a/b");
        assert_eq!(sharing_doc_id("fixed", "a", "b"), "fixed");
        assert_eq!(sharing_doc_id("{x}-{source", "a", "b"), "{x}-{source", "other braces stay");
        assert_eq!(sharing_doc_id("{source}-{target}", "{target}", "b"), "{target}-b", "one pass");
    }

    #[test]
    fn replication_doc_ids_are_deterministic_and_sanitized() {
        let fwd = replication_doc_id("ns", "share", Direction::Forward, None);
        assert_eq!(fwd, "couchshare_ns_share_fwd");
        assert_eq!(fwd, replication_doc_id("ns", "share", Direction::Forward, None));
        assert_eq!(replication_doc_id("ns", "share", Direction::Backward, None), "couchshare_ns_share_back");
        assert_eq!(
            replication_doc_id("ns", "share", Direction::Forward, Some("alice")),
            "couchshare_ns_share_fwd_616c696365"
        );
        assert_ne!(
            replication_doc_id("ns", "share", Direction::Forward, Some("alice")),
            replication_doc_id("ns", "share", Direction::Forward, Some("bob"))
        );
        let odd = replication_doc_id("n s", "a/b:c.d_e", Direction::Forward, Some("Ünï"));
        assert_eq!(odd, "couchshare_n_s_a_b_c.d_e_fwd_c39c6ec3af");
        assert!(odd.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)));
        assert!(!replication_doc_id("_x", "_y", Direction::Backward, None).starts_with('_'));
        let prefix = replication_doc_prefix("ns", "share");
        assert_eq!(prefix, "couchshare_ns_share_");
        for id in [fwd.clone(), replication_doc_id("ns", "share", Direction::Forward, Some("alice"))] {
            assert!(id.starts_with(&prefix));
        }
        assert!(!replication_doc_id("ns", "share-2", Direction::Forward, None).starts_with(&prefix));
        assert_ne!(
            replication_doc_id("a-b", "c", Direction::Forward, None),
            replication_doc_id("a", "b-c", Direction::Forward, None),
            "namespace a-b/name c and namespace a/name b-c never share an id"
        );
    }

    #[test]
    fn replication_usernames_are_valid_and_stable() {
        let u = replication_username("ns", "share");
        assert_eq!(u, replication_username("ns", "share"));
        assert_ne!(u, replication_username("ns", "share2"));
        assert_ne!(u, replication_username("ns-share", ""), "the separator counts");
        assert_eq!(u.len(), "couchshare-repl-".len() + 20);
        let suffix = u.strip_prefix("couchshare-repl-").expect("prefix");
        assert!(suffix.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert!(!u.starts_with('_') && !u.contains(':'), "CouchDB refuses names starting with _ or with :");
        assert_eq!(
            u,
            format!("couchshare-repl-{}", &hex::encode(Sha256::digest(b"ns/share"))[..20]),
            "sha256 of <namespace>/<name>"
        );
    }

    #[test]
    fn the_replication_user_is_written_only_when_its_password_or_owner_changed() {
        let me = crate::plan::ownership::Owner {
            kind: "CouchShare".into(),
            namespace: "ns".into(),
            name: "s".into(),
            uid: "u1".into(),
        };
        let first = replication_user_update(None, "repl", "pw", "fp1", &me).expect("created");
        assert_eq!((first.name.as_str(), first.password.as_deref()), ("repl", Some("pw")));
        let mut stored = first.clone();
        stored.password = None;
        stored.rev = Some("1-a".into());
        assert_eq!(replication_user_update(Some(&stored), "repl", "pw", "fp1", &me), None, "up to date");
        let changed = replication_user_update(Some(&stored), "repl", "pw2", "fp2", &me).expect("new password");
        assert_eq!((changed.rev.as_deref(), changed.password.as_deref()), (Some("1-a"), Some("pw2")));
        let other = crate::plan::ownership::Owner { uid: "u2".into(), ..me };
        assert!(replication_user_update(Some(&stored), "repl", "pw", "fp1", &other).is_some(), "re-owned");
    }
}
