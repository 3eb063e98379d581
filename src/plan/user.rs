//! What to do with one CouchUser: its `_users` document (roles, password, owner record), its
//! per-user database, and the contents of its credentials Secret.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::couch;
use crate::plan::ownership::{Owner, Ownership, Refusal, decide_ownership};

/// Field of the `_users` document that records which resource owns it.
pub const OWNER_FIELD: &str = "couchshare.io/owner";

/// CouchDB's default per-user database prefix (`couch_peruser/database_prefix`).
pub const DEFAULT_USERDB_PREFIX: &str = "userdb-";

/// `<prefix><hex(username)>`, the name CouchDB's `couch_peruser` gives a user's database.
pub fn per_user_database_name(prefix: &str, username: &str) -> String {
    format!("{prefix}{}", hex::encode(username.as_bytes()))
}

/// A per-user database's `_security` with its owner as admin and member, or `None` when it
/// already is. Entries grants and shares added stay (they are written entry by entry, see
/// `plan::grant`); CouchDB's default `_admin` role is dropped once the owner is named, since it
/// would otherwise keep members admin-only.
pub fn with_owner(security: &couch::Security, username: &str) -> Option<couch::Security> {
    let mut out = security.clone();
    for section in [&mut out.admins, &mut out.members] {
        if !section.names.iter().any(|n| n == username) {
            section.names.push(username.to_string());
        }
        section.roles.retain(|r| r != crate::plan::security::ADMIN_ROLE);
    }
    (out != *security).then_some(out)
}

/// A fingerprint of a password as applied for one resource: recorded in status so the operator
/// knows when to re-apply (CouchDB never returns passwords). Salted with the resource UID and
/// truncated; it is not the password and not CouchDB's hash.
pub fn password_fingerprint(uid: &str, password: &str) -> String {
    let mut hash = Sha256::new();
    for part in ["couchshare.io/password/v1", uid, password] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hex::encode(&hash.finalize()[..16])
}

/// What the controller knows before deciding.
#[derive(Debug, Clone)]
pub struct UserIntent {
    /// This resource.
    pub me: Owner,
    /// The CouchDB username.
    pub username: String,
    /// Declared roles.
    pub roles: Vec<String>,
    /// Fingerprint of the password the user must have.
    pub password_fingerprint: String,
    /// Fingerprint recorded in status after the last successful password write.
    pub applied_fingerprint: Option<String>,
    /// `status.username` names this user already.
    pub previously_owned: bool,
    /// `spec.adopt`.
    pub adopt: bool,
    /// Why this namespace may not adopt (it is not trusted by the server), when it may not:
    /// refused only when adopting would actually happen.
    pub adopt_refused: Option<crate::plan::tenancy::Refused>,
    /// Another live resource that claims the same username on the same server, first.
    pub earlier_claimant: Option<Owner>,
}

/// What the controller read from `_users`.
#[derive(Debug, Clone, Default)]
pub struct ObservedUser {
    /// The user document exists.
    pub exists: bool,
    /// Its roles.
    pub roles: Vec<String>,
    /// The owner recorded in it.
    pub owner: Option<Owner>,
    /// Whether that owner (if not this resource) still exists.
    pub owner_alive: bool,
}

/// How the user document must be written, if at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserWrite {
    /// Include the password (CouchDB hashes it; costly: never without need).
    pub set_password: bool,
}

/// The headline for status and Events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserOutcome {
    /// Nothing to change.
    Unchanged,
    /// The user was created.
    Created,
    /// An existing user was taken over.
    Adopted,
    /// Roles or the owner record were updated.
    Updated,
    /// The password was changed.
    PasswordChanged,
    /// The user had been deleted out of band and is recreated.
    Recreated,
}

/// The plan for one reconcile of the user document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserPlan {
    /// The write, if any.
    pub write: Option<UserWrite>,
    /// The headline.
    pub outcome: UserOutcome,
}

/// Decides what to do with the `_users` document.
pub fn plan_user(intent: &UserIntent, observed: &ObservedUser) -> Result<UserPlan, Refusal> {
    let what = format!("user {}", intent.username);
    if let Some(owner) = &intent.earlier_claimant {
        return Err(Refusal::Conflict { what, owner: owner.clone() });
    }
    if !observed.exists {
        let outcome = if intent.previously_owned { UserOutcome::Recreated } else { UserOutcome::Created };
        return Ok(UserPlan { write: Some(UserWrite { set_password: true }), outcome });
    }
    let ownership = decide_ownership(
        &what,
        &intent.me,
        observed.owner.as_ref(),
        observed.owner_alive,
        intent.previously_owned,
        intent.adopt,
    )?;
    let password_stale = intent.applied_fingerprint.as_deref() != Some(intent.password_fingerprint.as_str());
    let mut have: Vec<&String> = observed.roles.iter().collect();
    let mut want: Vec<&String> = intent.roles.iter().collect();
    have.sort();
    have.dedup();
    want.sort();
    want.dedup();
    let roles_differ = have != want;
    Ok(match ownership {
        Ownership::Adopt if let Some(refused) = &intent.adopt_refused => return Err(refused.clone().into()),
        // An adopted user's password is unknown: it must be set to the declared one.
        Ownership::Adopt => UserPlan { write: Some(UserWrite { set_password: true }), outcome: UserOutcome::Adopted },
        Ownership::Reclaim => UserPlan { write: Some(UserWrite { set_password: true }), outcome: UserOutcome::Updated },
        Ownership::Ours if password_stale => {
            UserPlan { write: Some(UserWrite { set_password: true }), outcome: UserOutcome::PasswordChanged }
        }
        Ownership::Ours if roles_differ => {
            UserPlan { write: Some(UserWrite { set_password: false }), outcome: UserOutcome::Updated }
        }
        Ownership::Ours => UserPlan { write: None, outcome: UserOutcome::Unchanged },
    })
}

/// A Secret key for a database's connection URL: `url-<database>` with characters Secrets do
/// not allow in keys replaced by `_`.
pub fn database_url_key(database: &str) -> String {
    let safe: String =
        database.chars().map(|c| if c.is_ascii_alphanumeric() || "-._".contains(c) { c } else { '_' }).collect();
    format!("url-{safe}")
}

/// A connection URL for `database` on `server_url`, with the credentials percent-encoded.
pub fn connection_url(server_url: &str, username: &str, password: &str, database: Option<&str>) -> Option<String> {
    let mut url = url::Url::parse(server_url).ok()?;
    // The url crate encodes user info but leaves `%` as it is (taken for an escape already
    // made): a password with `%` in it would come out as another password.
    url.set_username(&username.replace('%', "%25")).ok()?;
    url.set_password(Some(&password.replace('%', "%25"))).ok()?;
    if let Some(db) = database {
        let base = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base}/{}", couch::encode_db(db)));
    }
    Some(url.to_string())
}

/// The keys the operator writes into the credentials Secret (and only these).
pub fn credentials_data(
    server_url: &str,
    username: &str,
    password: &str,
    databases: &[String],
) -> BTreeMap<String, String> {
    let mut data = BTreeMap::new();
    data.insert("username".to_string(), username.to_string());
    data.insert("password".to_string(), password.to_string());
    data.insert("url".to_string(), server_url.to_string());
    for db in databases {
        if let Some(url) = connection_url(server_url, username, password, Some(db)) {
            data.insert(database_url_key(db), url);
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(uid: &str) -> Owner {
        Owner { kind: "CouchUser".into(), namespace: "ns".into(), name: format!("r-{uid}"), uid: uid.into() }
    }

    fn intent() -> UserIntent {
        UserIntent {
            me: owner("me"),
            username: "alice".into(),
            roles: vec!["writers".into()],
            password_fingerprint: "fp-new".into(),
            applied_fingerprint: Some("fp-new".into()),
            previously_owned: true,
            adopt: false,
            adopt_refused: None,
            earlier_claimant: None,
        }
    }

    fn observed(exists: bool, owner_uid: Option<&str>, roles: &[&str]) -> ObservedUser {
        ObservedUser {
            exists,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            owner: owner_uid.map(owner),
            owner_alive: owner_uid == Some("other"),
        }
    }

    #[test]
    fn plan_user_table() {
        let write = |set_password| Some(UserWrite { set_password });
        type Expect = Result<(Option<UserWrite>, UserOutcome), &'static str>;
        let cases: Vec<(&str, UserIntent, ObservedUser, Expect)> = vec![
            (
                "new user: create with password",
                UserIntent { previously_owned: false, applied_fingerprint: None, ..intent() },
                observed(false, None, &[]),
                Ok((write(true), UserOutcome::Created)),
            ),
            (
                "deleted by hand: recreate",
                intent(),
                observed(false, None, &[]),
                Ok((write(true), UserOutcome::Recreated)),
            ),
            (
                "unchanged: no write (PBKDF2 is expensive)",
                intent(),
                observed(true, Some("me"), &["writers"]),
                Ok((None, UserOutcome::Unchanged)),
            ),
            (
                "password source changed: set password",
                UserIntent { applied_fingerprint: Some("fp-old".into()), ..intent() },
                observed(true, Some("me"), &["writers"]),
                Ok((write(true), UserOutcome::PasswordChanged)),
            ),
            (
                "roles edited by hand: restore roles only",
                intent(),
                observed(true, Some("me"), &["writers", "admins-by-hand"]),
                Ok((write(false), UserOutcome::Updated)),
            ),
            (
                "existing user, no adopt: refuse",
                UserIntent { previously_owned: false, ..intent() },
                observed(true, None, &[]),
                Err("AlreadyExists"),
            ),
            (
                "existing user, adopt: take over and set the password",
                UserIntent { previously_owned: false, adopt: true, ..intent() },
                observed(true, None, &[]),
                Ok((write(true), UserOutcome::Adopted)),
            ),
            (
                "existing user, adopt from an untrusted namespace: refuse, write nothing",
                UserIntent {
                    previously_owned: false,
                    adopt: true,
                    adopt_refused: Some(crate::plan::tenancy::Refused::Untrusted {
                        act: crate::plan::tenancy::TrustedAct::AdoptUser("alice".into()),
                        from: "tenant-b".into(),
                        server: "a/main".into(),
                    }),
                    ..intent()
                },
                observed(true, None, &[]),
                Err("AdoptionNotPermitted"),
            ),
            (
                "owned by another live resource: conflict",
                UserIntent { adopt: true, ..intent() },
                observed(true, Some("other"), &[]),
                Err("Conflict"),
            ),
            (
                "claimed first by another resource: conflict before touching CouchDB",
                UserIntent { earlier_claimant: Some(owner("first")), ..intent() },
                observed(false, None, &[]),
                Err("Conflict"),
            ),
        ];
        for (what, intent, observed, expect) in cases {
            let got = plan_user(&intent, &observed).map(|p| (p.write, p.outcome)).map_err(|e| e.reason());
            assert_eq!(got, expect, "{what}");
        }
    }

    #[test]
    fn per_user_database_names_are_hex_of_the_username() {
        assert_eq!(per_user_database_name("userdb-", "alice"), "userdb-616c696365");
        assert_eq!(per_user_database_name("u-", "Ünï"), "u-c39c6ec3af");
    }

    #[test]
    fn the_owner_is_added_and_other_entries_stay() {
        let mut new_db = couch::Security::default();
        new_db.admins.roles = vec!["_admin".into()];
        new_db.members.roles = vec!["_admin".into()];
        let owned = with_owner(&new_db, "alice").expect("owner added");
        assert_eq!(owned.admins.names, ["alice"]);
        assert_eq!(owned.members.names, ["alice"]);
        assert!(owned.members.roles.is_empty(), "_admin dropped once the owner is named");
        assert_eq!(with_owner(&owned, "alice"), None, "already owned: nothing to write");
        let mut shared = owned.clone();
        shared.members.names.push("couchshare-repl-x".into());
        assert_eq!(with_owner(&shared, "alice"), None, "entries grants and shares added stay");
    }

    #[test]
    fn fingerprints_depend_on_password_and_resource_and_hide_the_password() {
        let a = password_fingerprint("uid-1", "s3cret");
        assert_eq!(a, password_fingerprint("uid-1", "s3cret"));
        assert_ne!(a, password_fingerprint("uid-2", "s3cret"));
        assert_ne!(a, password_fingerprint("uid-1", "s3cret!"));
        assert!(!a.contains("s3cret"));
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn credentials_are_percent_encoded_in_urls() {
        let data = credentials_data(
            "http://couch.example:5984",
            "app:user",
            "p@ss/w:rd",
            &["drafft_v2".to_string(), "team/_replicator".to_string()],
        );
        assert_eq!(data["username"], "app:user");
        assert_eq!(data["password"], "p@ss/w:rd");
        assert_eq!(data["url"], "http://couch.example:5984");
        assert_eq!(data["url-drafft_v2"], "http://app%3Auser:p%40ss%2Fw%3Ard@couch.example:5984/drafft_v2");
        assert_eq!(
            data["url-team__replicator"],
            "http://app%3Auser:p%40ss%2Fw%3Ard@couch.example:5984/team%2F_replicator"
        );
        let parsed = url::Url::parse(&data["url-drafft_v2"]).expect("a valid URL");
        assert_eq!(
            percent_encoding::percent_decode_str(parsed.password().expect("password")).decode_utf8_lossy(),
            "p@ss/w:rd"
        );
    }
}
