//! What to do with one CouchDatabase: create, adopt, refuse, repair, or delete — decided from
//! the spec, who owns the database on CouchDB, and what CouchDB holds now.

use crate::api::DeletionPolicy;
use crate::couch;
pub use crate::plan::ownership::{Owner, Refusal};
use crate::plan::ownership::{Ownership, decide_ownership};
use crate::plan::security::{security_matches, security_to_write};

/// Id of the `_local` document that records which resource owns a database. `_local`
/// documents never replicate and never show in `_all_docs`.
pub const OWNER_DOC_ID: &str = "_local/couchshare.io-owner";

/// What the controller knows before deciding.
#[derive(Debug, Clone)]
pub struct DatabaseIntent {
    /// This resource.
    pub me: Owner,
    /// The CouchDB name.
    pub name: String,
    /// Creation options.
    pub create: couch::CreateDatabase,
    /// `spec.adopt`.
    pub adopt: bool,
    /// Why this namespace may not adopt (it is not trusted by the server), when it may not:
    /// refused only when adopting would actually happen.
    pub adopt_refused: Option<crate::plan::tenancy::Refused>,
    /// `status.couchName` already names this database: it was ours before (so a missing
    /// database is drift, and an unmarked one is ours after a crash between create and marker).
    pub previously_owned: bool,
    /// Another live resource that claims the same database on the same server and came first.
    pub earlier_claimant: Option<Owner>,
    /// The `_security` it must have.
    pub security: couch::Security,
}

/// What the controller read from CouchDB.
#[derive(Debug, Clone, Default)]
pub struct ObservedDatabase {
    /// The database exists.
    pub exists: bool,
    /// The owner recorded in the database, if any.
    pub owner: Option<Owner>,
    /// Whether the recorded owner (if not this resource) still exists in the cluster.
    pub owner_alive: bool,
    /// Its `_security`.
    pub security: Option<couch::Security>,
}

/// One change to make on CouchDB, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum DatabaseStep {
    /// `PUT /{db}` with options.
    Create(couch::CreateDatabase),
    /// Write the owner record.
    RecordOwner(Owner),
    /// `PUT /{db}/_security`.
    PutSecurity(couch::Security),
}

/// What a person should hear about (an Event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseOutcome {
    /// Nothing had to change.
    Unchanged,
    /// The database was created.
    Created,
    /// An existing database was taken over (`adopt: true`).
    Adopted,
    /// The database had been deleted out of band and is recreated.
    Recreated,
    /// `_security` differed from the declared state and is rewritten.
    SecurityRestored,
}

/// The plan for one reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabasePlan {
    /// Steps in order; empty when CouchDB already matches.
    pub steps: Vec<DatabaseStep>,
    /// The headline for status and Events.
    pub outcome: DatabaseOutcome,
}

/// Decides what to do with one CouchDatabase.
pub fn plan_database(intent: &DatabaseIntent, observed: &ObservedDatabase) -> Result<DatabasePlan, Refusal> {
    let what = format!("database {}", intent.name);
    if let Some(owner) = &intent.earlier_claimant {
        return Err(Refusal::Conflict { what, owner: owner.clone() });
    }
    if !observed.exists {
        return Ok(DatabasePlan {
            steps: vec![
                DatabaseStep::Create(intent.create.clone()),
                DatabaseStep::RecordOwner(intent.me.clone()),
                DatabaseStep::PutSecurity(security_to_write(None, &intent.security)),
            ],
            outcome: if intent.previously_owned { DatabaseOutcome::Recreated } else { DatabaseOutcome::Created },
        });
    }
    let mut steps = Vec::new();
    let mut outcome = DatabaseOutcome::Unchanged;
    let ownership = decide_ownership(
        &what,
        &intent.me,
        observed.owner.as_ref(),
        observed.owner_alive,
        intent.previously_owned,
        intent.adopt,
    )?;
    match ownership {
        Ownership::Ours => {}
        Ownership::Reclaim => steps.push(DatabaseStep::RecordOwner(intent.me.clone())),
        Ownership::Adopt if let Some(refused) = &intent.adopt_refused => return Err(refused.clone().into()),
        Ownership::Adopt => {
            steps.push(DatabaseStep::RecordOwner(intent.me.clone()));
            outcome = DatabaseOutcome::Adopted;
        }
    }
    let matches = observed.security.as_ref().is_some_and(|s| security_matches(s, &intent.security));
    if !matches {
        steps.push(DatabaseStep::PutSecurity(security_to_write(observed.security.as_ref(), &intent.security)));
        if outcome == DatabaseOutcome::Unchanged {
            outcome = DatabaseOutcome::SecurityRestored;
        }
    }
    Ok(DatabasePlan { steps, outcome })
}

/// What deleting a CouchDatabase does on CouchDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletionStep {
    /// `deletionPolicy: Retain`: leave it.
    Retain,
    /// Delete it.
    Delete,
    /// Not ours (never created, or owned by someone else): leave it.
    NotOurs,
    /// Already gone.
    AlreadyGone,
}

/// Decides what deleting the resource does to the database.
pub fn plan_database_deletion(
    policy: DeletionPolicy,
    me: &Owner,
    exists: bool,
    recorded_owner: Option<&Owner>,
    previously_owned: bool,
) -> DeletionStep {
    if policy == DeletionPolicy::Retain {
        return DeletionStep::Retain;
    }
    if !exists {
        return DeletionStep::AlreadyGone;
    }
    match recorded_owner {
        Some(owner) if owner.uid == me.uid => DeletionStep::Delete,
        None if previously_owned => DeletionStep::Delete,
        _ => DeletionStep::NotOurs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SecuritySpec;
    use crate::plan::security::desired_security;

    fn owner(uid: &str) -> Owner {
        Owner { kind: "CouchDatabase".into(), namespace: "ns".into(), name: format!("r-{uid}"), uid: uid.into() }
    }

    fn intent() -> DatabaseIntent {
        DatabaseIntent {
            me: owner("me"),
            name: "projects".into(),
            create: couch::CreateDatabase { q: Some(2), n: None, partitioned: false },
            adopt: false,
            adopt_refused: None,
            previously_owned: false,
            earlier_claimant: None,
            security: desired_security(&SecuritySpec::default(), &[], false),
        }
    }

    fn untrusted() -> crate::plan::tenancy::Refused {
        crate::plan::tenancy::Refused::Untrusted {
            act: crate::plan::tenancy::TrustedAct::AdoptDatabase("projects".into()),
            from: "tenant-b".into(),
            server: "a/main".into(),
        }
    }

    fn observed(
        exists: bool,
        owner_uid: Option<&str>,
        alive: bool,
        security: Option<couch::Security>,
    ) -> ObservedDatabase {
        ObservedDatabase { exists, owner: owner_uid.map(owner), owner_alive: alive, security }
    }

    #[test]
    fn plan_database_table() {
        let good = Some(intent().security.clone());
        let public = Some(couch::Security::default());
        type Expect = Result<(Vec<&'static str>, DatabaseOutcome), &'static str>;
        let cases: Vec<(&str, DatabaseIntent, ObservedDatabase, Expect)> = vec![
            (
                "missing: create, record owner, set security",
                intent(),
                observed(false, None, false, None),
                Ok((vec!["create", "owner", "security"], DatabaseOutcome::Created)),
            ),
            (
                "missing but ours before: recreate (drift)",
                DatabaseIntent { previously_owned: true, ..intent() },
                observed(false, None, false, None),
                Ok((vec!["create", "owner", "security"], DatabaseOutcome::Recreated)),
            ),
            (
                "ours and matching: nothing",
                intent(),
                observed(true, Some("me"), false, good.clone()),
                Ok((vec![], DatabaseOutcome::Unchanged)),
            ),
            (
                "ours, security edited by hand: restore",
                intent(),
                observed(true, Some("me"), false, public.clone()),
                Ok((vec!["security"], DatabaseOutcome::SecurityRestored)),
            ),
            (
                "exists unmarked, no adopt: refuse",
                intent(),
                observed(true, None, false, public.clone()),
                Err("AlreadyExists"),
            ),
            (
                "exists unmarked, adopt: take over",
                DatabaseIntent { adopt: true, ..intent() },
                observed(true, None, false, public.clone()),
                Ok((vec!["owner", "security"], DatabaseOutcome::Adopted)),
            ),
            (
                "exists unmarked, adopt from an untrusted namespace: refuse, write nothing",
                DatabaseIntent { adopt: true, adopt_refused: Some(untrusted()), ..intent() },
                observed(true, None, false, public.clone()),
                Err("AdoptionNotPermitted"),
            ),
            (
                "missing, adopt from an untrusted namespace: nothing to adopt, create",
                DatabaseIntent { adopt: true, adopt_refused: Some(untrusted()), ..intent() },
                observed(false, None, false, None),
                Ok((vec!["create", "owner", "security"], DatabaseOutcome::Created)),
            ),
            (
                "ours, adopt from a namespace no longer trusted: still ours",
                DatabaseIntent { adopt: true, adopt_refused: Some(untrusted()), ..intent() },
                observed(true, Some("me"), false, good.clone()),
                Ok((vec![], DatabaseOutcome::Unchanged)),
            ),
            (
                "owned by a live resource: conflict, even with adopt",
                DatabaseIntent { adopt: true, ..intent() },
                observed(true, Some("other"), true, good.clone()),
                Err("Conflict"),
            ),
            (
                "owned by a deleted resource, no adopt: refuse",
                intent(),
                observed(true, Some("gone"), false, good.clone()),
                Err("AlreadyExists"),
            ),
            (
                "owned by a deleted resource, adopt: take over",
                DatabaseIntent { adopt: true, ..intent() },
                observed(true, Some("gone"), false, good.clone()),
                Ok((vec!["owner"], DatabaseOutcome::Adopted)),
            ),
            (
                "unmarked but ours before (crash after create): mark it",
                DatabaseIntent { previously_owned: true, ..intent() },
                observed(true, None, false, good.clone()),
                Ok((vec!["owner"], DatabaseOutcome::Unchanged)),
            ),
            (
                "an earlier resource claims the name: conflict before touching CouchDB",
                DatabaseIntent { earlier_claimant: Some(owner("first")), ..intent() },
                observed(false, None, false, None),
                Err("Conflict"),
            ),
        ];
        for (what, intent, observed, expect) in cases {
            let got = plan_database(&intent, &observed);
            match (got, expect) {
                (Ok(plan), Ok((steps, outcome))) => {
                    let names: Vec<_> = plan
                        .steps
                        .iter()
                        .map(|s| match s {
                            DatabaseStep::Create(_) => "create",
                            DatabaseStep::RecordOwner(_) => "owner",
                            DatabaseStep::PutSecurity(_) => "security",
                        })
                        .collect();
                    assert_eq!(names, steps, "{what}");
                    assert_eq!(plan.outcome, outcome, "{what}");
                }
                (Err(refusal), Err(kind)) => {
                    let got = refusal.reason();
                    assert_eq!(got, kind, "{what}");
                }
                (got, expect) => panic!("{what}: got {got:?}, expected {expect:?}"),
            }
        }
    }

    #[test]
    fn created_database_gets_admin_only_security_not_public() {
        let plan = plan_database(&intent(), &observed(false, None, false, None)).expect("plan");
        let Some(DatabaseStep::PutSecurity(sec)) = plan.steps.last() else { panic!("security last") };
        assert_eq!(sec.members.roles, vec!["_admin".to_string()]);
    }

    #[test]
    fn deletion_table() {
        use DeletionPolicy::*;
        let me = owner("me");
        let other = owner("other");
        assert_eq!(plan_database_deletion(Retain, &me, true, Some(&me), true), DeletionStep::Retain);
        assert_eq!(plan_database_deletion(Delete, &me, true, Some(&me), true), DeletionStep::Delete);
        assert_eq!(plan_database_deletion(Delete, &me, false, None, true), DeletionStep::AlreadyGone);
        assert_eq!(plan_database_deletion(Delete, &me, true, Some(&other), true), DeletionStep::NotOurs);
        assert_eq!(plan_database_deletion(Delete, &me, true, None, false), DeletionStep::NotOurs);
        assert_eq!(plan_database_deletion(Delete, &me, true, None, true), DeletionStep::Delete);
    }
}
