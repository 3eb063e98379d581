//! What each grant's last pass wrote, ahead of the grants' store (see [`GrantPasses`]). Apart
//! from `access`, so that the context can hold it.

use kube::runtime::reflector::ObjectRef;

use super::last_pass::LastPasses;
use crate::api::CouchGrant;
use crate::controller::runtime::status::is_ready;

/// What each grant's last pass in this process left in its status: its generation, its missing
/// users and whether it was Ready. `access::requeue_for_database` asks this before the grants' store,
/// which lags a status write by its watch event: a database pass right after a grant's pass
/// would otherwise find the grant's status behind and wake it for nothing (5–9 % of the grants
/// took that third pass in the n=1,000 bench).
#[derive(Default)]
pub(crate) struct GrantPasses(LastPasses<CouchGrant, GrantPass>);

/// One grant's last pass, as [`GrantPasses`] keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GrantPass {
    /// The generation it looked at.
    pub generation: Option<i64>,
    /// The users it found missing.
    pub missing: Vec<String>,
    /// Whether it left the grant Ready.
    pub ready: bool,
}

impl GrantPasses {
    /// Records the pass that just wrote `grant`'s status (`None`: a pass that failed, or the
    /// grant's deletion; the store is asked again).
    pub(crate) fn record(&self, grant: &CouchGrant, pass: Option<GrantPass>) {
        self.0.record(grant, pass);
    }

    /// What `grant`'s last pass left, from this record when it was of the grant's current
    /// generation, else from its status in the store.
    pub(crate) fn last(&self, grant: &CouchGrant) -> Option<GrantPass> {
        self.0.get(&ObjectRef::from_obj(grant)).filter(|p| p.generation == grant.metadata.generation).or_else(|| {
            grant.status.as_ref().map(|s| GrantPass {
                generation: s.observed_generation,
                missing: s.missing_users.clone(),
                ready: is_ready(Some(&s.conditions)),
            })
        })
    }
}
