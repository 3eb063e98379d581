//! Conditions and status writes: one field manager, server-side apply, written only when
//! something changed, `lastTransitionTime` kept while a condition's status stays the same.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::Error;

/// The field manager of every status write.
pub const FIELD_MANAGER: &str = "couchshare";

/// A condition to set, before timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCondition {
    /// Condition type.
    pub type_: &'static str,
    /// `True`, `False` or `Unknown`.
    pub status: bool,
    /// `PascalCase` reason.
    pub reason: String,
    /// Message for people.
    pub message: String,
}

impl NewCondition {
    /// `Ready=True`.
    pub fn ready(reason: &str, message: impl Into<String>) -> Self {
        NewCondition {
            type_: crate::api::condition::READY,
            status: true,
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// `Ready=False` from an error.
    pub fn not_ready(error: &Error) -> Self {
        NewCondition {
            type_: crate::api::condition::READY,
            status: false,
            reason: error.reason().into(),
            message: error.to_string(),
        }
    }
}

/// Merges `new` into `conditions`: the transition time changes only when the status does.
pub fn set_condition(conditions: &mut Vec<Condition>, new: NewCondition, generation: Option<i64>, now: Time) {
    let status = if new.status { "True" } else { "False" }.to_string();
    let message: String = new.message.chars().take(1024).collect();
    if let Some(existing) = conditions.iter_mut().find(|c| c.type_ == new.type_) {
        if existing.status != status {
            existing.last_transition_time = now;
        }
        existing.status = status;
        existing.reason = new.reason;
        existing.message = message;
        existing.observed_generation = generation;
    } else {
        conditions.push(Condition {
            type_: new.type_.to_string(),
            status,
            reason: new.reason,
            message,
            observed_generation: generation,
            last_transition_time: now,
        });
    }
}

/// The `(status, reason)` of a condition, for noticing transitions.
pub fn condition_state(conditions: &[Condition], type_: &str) -> Option<(String, String)> {
    conditions.iter().find(|c| c.type_ == type_).map(|c| (c.status.clone(), c.reason.clone()))
}

/// Whether `conditions` say Ready=True (no status, or no Ready condition yet, is not Ready).
pub fn is_ready(conditions: Option<&[Condition]>) -> bool {
    conditions
        .and_then(|c| condition_state(c, crate::api::condition::READY))
        .is_some_and(|(status, _)| status == "True")
}

/// Writes `status` with server-side apply, unless it equals `current`. Returns whether it wrote.
pub async fn apply_status<K, S>(api: &Api<K>, obj: &K, current: Option<&S>, status: &S) -> Result<bool, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(false);
    }
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(&obj.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).expect("valid"))
    }

    #[test]
    fn transition_time_changes_only_with_status() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, NewCondition::ready("Created", "ok"), Some(1), at(10));
        assert_eq!(conditions[0].last_transition_time, at(10));
        set_condition(&mut conditions, NewCondition::ready("Ready", "still ok"), Some(2), at(20));
        assert_eq!(conditions[0].last_transition_time, at(10), "same status keeps the time");
        assert_eq!(conditions[0].observed_generation, Some(2));
        assert_eq!(conditions[0].message, "still ok");
        let err = Error::InvalidSpec("bad".into());
        set_condition(&mut conditions, NewCondition::not_ready(&err), Some(2), at(30));
        assert_eq!(conditions[0].status, "False");
        assert_eq!(conditions[0].reason, "InvalidSpec");
        assert_eq!(conditions[0].last_transition_time, at(30));
        assert_eq!(conditions.len(), 1);
    }
}
