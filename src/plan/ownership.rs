//! Who owns a CouchDB object: the record the operator keeps on CouchDB, the claims resources
//! make, and the rule that decides between them (adopt explicitly, first claimant wins).

use serde::{Deserialize, Serialize};

/// The resource that owns a CouchDB object, as recorded on CouchDB.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Kind of the owning resource.
    pub kind: String,
    /// Namespace of the owning resource.
    pub namespace: String,
    /// Name of the owning resource.
    pub name: String,
    /// UID of the owning resource: what makes ownership unambiguous.
    pub uid: String,
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// Why the controller must not touch an object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// It exists, and nothing says it is ours.
    #[error(
        "{what} already exists on the server and was not created for this resource; set adopt: true to take it over"
    )]
    AlreadyExists {
        /// What it is, e.g. `database projects`.
        what: String,
    },
    /// Another resource owns or claims it.
    #[error("{what} is already managed by {owner}")]
    Conflict {
        /// What it is.
        what: String,
        /// The other resource.
        owner: Owner,
    },
    /// Something couchshare does not write holds it: another object's record, or none at all
    /// (made by hand).
    #[error("{what} is held by {holder}; couchshare does not write it")]
    Held {
        /// What it is.
        what: String,
        /// Who holds it, e.g. `CouchUser team-b/squatter`.
        holder: String,
    },
    /// Taking it over needs a namespace the server trusts.
    #[error(transparent)]
    NotPermitted(#[from] crate::plan::tenancy::Refused),
}

impl Refusal {
    /// The condition and Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::AlreadyExists { .. } => "AlreadyExists",
            Refusal::Conflict { .. } | Refusal::Held { .. } => "Conflict",
            Refusal::NotPermitted(refused) => refused.reason(),
        }
    }
}

/// How this resource relates to an object that exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// The record names this resource.
    Ours,
    /// Unrecorded, but this resource said it was its own before (a crash between creating
    /// it and recording it): record it.
    Reclaim,
    /// Someone else's or nobody's, and `adopt: true`: record it and take over.
    Adopt,
}

/// Decides whether an existing object may be managed by `me`.
pub fn decide_ownership(
    what: &str,
    me: &Owner,
    recorded: Option<&Owner>,
    recorded_owner_alive: bool,
    previously_owned: bool,
    adopt: bool,
) -> Result<Ownership, Refusal> {
    match recorded {
        Some(owner) if owner.uid == me.uid => Ok(Ownership::Ours),
        Some(owner) if recorded_owner_alive => Err(Refusal::Conflict { what: what.into(), owner: owner.clone() }),
        None if previously_owned => Ok(Ownership::Reclaim),
        _ if adopt => Ok(Ownership::Adopt),
        _ => Err(Refusal::AlreadyExists { what: what.into() }),
    }
}

/// A live resource's claim on a CouchDB object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The resource.
    pub owner: Owner,
    /// Its creation time (RFC 3339 text sorts correctly) — earlier claims win.
    pub created: String,
}

/// The earliest claim (by creation time, then UID) when it is not `me`'s.
pub fn earlier_claimant(me: &Claim, claims: impl IntoIterator<Item = Claim>) -> Option<Owner> {
    let key = |c: &Claim| (c.created.clone(), c.owner.uid.clone());
    claims
        .into_iter()
        .filter(|c| c.owner.uid != me.owner.uid)
        .filter(|c| key(c) < key(me))
        .min_by_key(key)
        .map(|c| c.owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(uid: &str) -> Owner {
        Owner { kind: "CouchUser".into(), namespace: "ns".into(), name: format!("r-{uid}"), uid: uid.into() }
    }

    #[test]
    fn ownership_table() {
        let me = owner("me");
        let other = owner("other");
        let cases = [
            ("recorded as mine", Some(&me), false, false, false, Ok(Ownership::Ours)),
            ("recorded as a live other's, even with adopt", Some(&other), true, true, true, Err("Conflict")),
            ("recorded as a deleted other's, no adopt", Some(&other), false, false, false, Err("AlreadyExists")),
            ("recorded as a deleted other's, adopt", Some(&other), false, false, true, Ok(Ownership::Adopt)),
            ("unrecorded, mine before", None, false, true, false, Ok(Ownership::Reclaim)),
            ("unrecorded, adopt", None, false, false, true, Ok(Ownership::Adopt)),
            ("unrecorded, no adopt", None, false, false, false, Err("AlreadyExists")),
        ];
        for (what, recorded, alive, previously, adopt, expect) in cases {
            let got = decide_ownership("user alice", &me, recorded, alive, previously, adopt);
            let got = got.map_err(|e| e.reason());
            assert_eq!(got, expect, "{what}");
        }
    }

    #[test]
    fn the_earliest_claim_wins_and_ties_break_on_uid() {
        let claim = |uid: &str, t: &str| Claim { owner: owner(uid), created: t.into() };
        let me = claim("m", "2026-01-02T00:00:00Z");
        assert_eq!(earlier_claimant(&me, [claim("a", "2026-01-01T00:00:00Z")]), Some(owner("a")));
        assert_eq!(earlier_claimant(&me, [claim("z", "2026-01-03T00:00:00Z")]), None);
        assert_eq!(earlier_claimant(&me, [claim("a", "2026-01-02T00:00:00Z")]), Some(owner("a")), "tie: lower uid");
        assert_eq!(earlier_claimant(&me, [claim("z", "2026-01-02T00:00:00Z")]), None);
        assert_eq!(earlier_claimant(&me, [me.clone()]), None, "never myself");
    }
}
