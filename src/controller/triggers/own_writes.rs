//! The Secrets this process wrote, by namespace and name, with the resourceVersion its write
//! produced. A watch event carrying that same version is the operator's own write coming
//! back, not a change: the user reconciler is not requeued for it. Any other version — an edit
//! by someone else, a deletion — is a change.

use std::collections::HashMap;
use std::sync::Mutex;

/// The last resourceVersion this process wrote, per Secret.
#[derive(Default)]
pub struct OwnWrites {
    written: Mutex<HashMap<(String, String), String>>,
}

impl OwnWrites {
    /// Notes that this process's write left `namespace/name` at `version`.
    pub fn note(&self, namespace: &str, name: &str, version: Option<&str>) {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        match version {
            Some(v) => written.insert((namespace.to_string(), name.to_string()), v.to_string()),
            None => written.remove(&(namespace.to_string(), name.to_string())),
        };
    }

    /// Whether `namespace/name` at `version` is exactly what this process wrote last.
    pub fn is_own(&self, namespace: &str, name: &str, version: Option<&str>) -> bool {
        let written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        version.is_some_and(|v| written.get(&(namespace.to_string(), name.to_string())).map(String::as_str) == Some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_version_this_process_wrote_is_its_own() {
        let own = OwnWrites::default();
        assert!(!own.is_own("ns", "s", Some("5")), "nothing written yet");
        own.note("ns", "s", Some("5"));
        assert!(own.is_own("ns", "s", Some("5")));
        assert!(!own.is_own("ns", "s", Some("6")), "an edit by someone else");
        assert!(!own.is_own("ns", "other", Some("5")));
        assert!(!own.is_own("ns", "s", None));
        own.note("ns", "s", None);
        assert!(!own.is_own("ns", "s", Some("5")), "forgotten");
    }
}
