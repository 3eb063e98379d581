//! The reconcile tail every kind shares: a status snapshot before the pass, the conditions the
//! pass's outcome sets, one server-side-apply status write (skipped when nothing changed), the
//! Events of what the pass did and of a `Ready` transition, and the backoff reset on success.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::context::{Context, now, object_key};
use super::error::Error;
use super::status::{NewCondition, apply_status, condition_state, set_condition};
use crate::api::{
    CouchBackup, CouchBackupStatus, CouchDatabase, CouchDatabaseStatus, CouchGrant, CouchGrantStatus,
    CouchScheduledBackup, CouchScheduledBackupStatus, CouchServer, CouchServerStatus, CouchShare, CouchShareStatus,
    CouchUser, CouchUserStatus, condition,
};

/// An Event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// `Warning` rather than `Normal`.
    pub warning: bool,
    /// `PascalCase` reason.
    pub reason: String,
    /// Message for people.
    pub message: String,
}

impl Note {
    /// A `Normal` Event.
    pub fn normal(reason: &str, message: impl Into<String>) -> Self {
        Note { warning: false, reason: reason.into(), message: message.into() }
    }

    /// A `Warning` Event.
    pub fn warning(reason: &str, message: impl Into<String>) -> Self {
        Note { warning: true, reason: reason.into(), message: message.into() }
    }
}

/// What a successful ensure step decided, for [`Pass::finish`] to record.
#[derive(Debug)]
pub struct Outcome {
    /// The `Ready` condition (a success may still be `Ready=False`: pending, a user not found).
    pub ready: NewCondition,
    /// Other conditions set alongside `Ready` (e.g. `PasswordSynced`).
    pub conditions: Vec<NewCondition>,
    /// When to come back.
    pub requeue: Action,
    /// Published after the status write, whatever changed: what the pass did (`Created`).
    pub events: Vec<Note>,
    /// Published only when `Ready`'s `(status, reason)` changed in this pass.
    pub on_transition: Option<Note>,
}

impl Outcome {
    /// `ready`, then back at `requeue`, with no Event.
    pub fn new(ready: NewCondition, requeue: Action) -> Self {
        Outcome { ready, conditions: Vec::new(), requeue, events: Vec::new(), on_transition: None }
    }

    /// Also sets `condition`.
    pub fn with_condition(mut self, condition: NewCondition) -> Self {
        self.conditions.push(condition);
        self
    }

    /// Also publishes `note`, transition or not.
    pub fn with_event(mut self, note: Note) -> Self {
        self.events.push(note);
        self
    }

    /// Publishes `note` when `Ready` changed.
    pub fn on_transition(mut self, note: Note) -> Self {
        self.on_transition = Some(note);
        self
    }
}

/// The status of a reconciled kind: conditions and the generation they describe.
pub trait ReconciledStatus: Default + Clone + PartialEq + Serialize {
    /// The conditions.
    fn conditions(&self) -> &[Condition];
    /// The conditions, to change.
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
    /// Sets `observedGeneration`.
    fn set_observed_generation(&mut self, generation: Option<i64>);
}

/// A kind whose reconciler ends in a [`Pass::finish`].
pub trait Reconciled:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug
{
    /// Its status.
    type Status: ReconciledStatus;
    /// The status as the object was read.
    fn current_status(&self) -> Option<&Self::Status>;
}

macro_rules! reconciled {
    ($($kind:ty => $status:ty),* $(,)?) => {$(
        impl ReconciledStatus for $status {
            fn conditions(&self) -> &[Condition] {
                &self.conditions
            }
            fn conditions_mut(&mut self) -> &mut Vec<Condition> {
                &mut self.conditions
            }
            fn set_observed_generation(&mut self, generation: Option<i64>) {
                self.observed_generation = generation;
            }
        }
        impl Reconciled for $kind {
            type Status = $status;
            fn current_status(&self) -> Option<&$status> {
                self.status.as_ref()
            }
        }
    )*};
}

reconciled!(
    CouchDatabase => CouchDatabaseStatus,
    CouchUser => CouchUserStatus,
    CouchGrant => CouchGrantStatus,
    CouchServer => CouchServerStatus,
    CouchShare => CouchShareStatus,
    CouchBackup => CouchBackupStatus,
    CouchScheduledBackup => CouchScheduledBackupStatus,
);

/// One reconcile pass of `K`, from the status snapshot to the tail.
///
/// The contract:
/// - [`Pass::begin`] snapshots the status the object was read with; the ensure step fills the
///   observed fields of [`Pass::status`] and may push Events of its own to [`Pass::events`]
///   (published after the status write, on success and on failure alike).
/// - [`Pass::finish`] takes the ensure step's result. `Ok(outcome)` sets `outcome.ready` and
///   `outcome.conditions`; `Err(e)` sets `Ready=False` with `e.reason()`. Either way
///   `observedGeneration` is set and the status is server-side applied only when it differs
///   from the snapshot.
/// - Events, after that write: [`Pass::events`], then `outcome.events`, then, only when
///   `Ready`'s `(status, reason)` changed, `outcome.on_transition` (for `Ok`) or a Warning
///   with the error's reason and message (for `Err`).
/// - `Ok` resets the object's backoff and returns `outcome.requeue`; `Err(e)` returns `e`
///   unchanged, for `error_policy` to back off or wait. A failed status write is returned
///   as the error and publishes nothing.
pub struct Pass<K: Reconciled> {
    /// The status being built.
    pub status: K::Status,
    /// Events to publish whatever the outcome.
    pub events: Vec<Note>,
    current: Option<K::Status>,
}

impl<K: Reconciled> Pass<K> {
    /// Starts a pass from the status `obj` was read with.
    pub fn begin(obj: &K) -> Self {
        let current = obj.current_status().cloned();
        Pass { status: current.clone().unwrap_or_default(), events: Vec::new(), current }
    }

    /// The status the object was read with (for Events on a change of an observed field).
    pub fn current(&self) -> Option<&K::Status> {
        self.current.as_ref()
    }

    /// The `(status, reason)` condition `type_` had before the pass.
    pub fn was(&self, type_: &str) -> Option<(String, String)> {
        self.current.as_ref().and_then(|s| condition_state(s.conditions(), type_))
    }

    /// Sets a condition now, for the object's generation (what `finish` does for `Ready`).
    pub fn set(&mut self, obj: &K, condition: NewCondition) {
        set_condition(self.status.conditions_mut(), condition, obj.meta().generation, now());
    }

    /// Records the pass: see the type's contract.
    pub async fn finish(mut self, ctx: &Context, obj: &K, result: Result<Outcome, Error>) -> Result<Action, Error> {
        let was = self.was(condition::READY);
        self.status.set_observed_generation(obj.meta().generation);
        match &result {
            Ok(outcome) => {
                self.set(obj, outcome.ready.clone());
                for c in &outcome.conditions {
                    self.set(obj, c.clone());
                }
            }
            Err(e) => self.set(obj, NewCondition::not_ready(e)),
        }
        let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
        apply_status(&api, obj, self.current.as_ref(), &self.status).await?;
        let changed = was != condition_state(self.status.conditions(), condition::READY);
        for note in notes(std::mem::take(&mut self.events), &result, changed) {
            ctx.event(obj, note.warning, &note.reason, note.message).await;
        }
        let outcome = result?;
        ctx.backoff.reset(&object_key(obj));
        Ok(outcome.requeue)
    }
}

/// The Events of a pass, in order: the pass's own, the outcome's, then the transition's when
/// `Ready` changed. Waiting for something in progress is not an Event (the condition says it,
/// and it is how most resources start); a failure is, once, when it begins.
fn notes(mut events: Vec<Note>, result: &Result<Outcome, Error>, changed: bool) -> Vec<Note> {
    match result {
        Ok(outcome) => {
            events.extend(outcome.events.iter().cloned());
            events.extend(outcome.on_transition.clone().filter(|_| changed));
        }
        Err(Error::Waiting { .. } | Error::Settling { .. }) => {}
        Err(e) if changed => events.push(Note::warning(e.reason(), e.to_string())),
        Err(_) => {}
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reasons(notes: Vec<Note>) -> Vec<String> {
        notes.into_iter().map(|n| n.reason).collect()
    }

    #[test]
    fn events_only_on_transitions_besides_what_the_pass_did() {
        let ok = || {
            Ok(Outcome::new(NewCondition::ready("Ready", "ok"), Action::await_change())
                .on_transition(Note::normal("Ready", "ok")))
        };
        let did = || ok().map(|o| o.with_event(Note::normal("Created", "created")));
        let failed = || Err(Error::SecretNotFound { namespace: "ns".into(), name: "s".into() });
        let waiting = || Err(Error::Waiting { what: "x".into() });
        let own = || vec![Note::normal("ReplicationState", "running")];
        assert!(reasons(notes(vec![], &ok(), false)).is_empty(), "nothing changed: no Event");
        assert_eq!(reasons(notes(vec![], &ok(), true)), ["Ready"]);
        assert_eq!(reasons(notes(vec![], &did(), false)), ["Created"], "what the pass did, transition or not");
        assert_eq!(reasons(notes(vec![], &failed(), false)), Vec::<String>::new(), "the same failure again");
        let first_failure = notes(vec![], &failed(), true);
        assert!(first_failure[0].warning);
        assert_eq!(reasons(first_failure), ["SecretNotFound"]);
        assert_eq!(
            reasons(notes(own(), &failed(), true)),
            ["ReplicationState", "SecretNotFound"],
            "the pass's own first"
        );
        assert!(reasons(notes(vec![], &waiting(), true)).is_empty(), "waiting is not an Event, transition or not");
    }
}
