//! A share's summary state from CouchDB's per-replication states.

/// How unhealthy a replication state is: lower is worse.
fn state_rank(state: Option<&str>) -> u8 {
    match state {
        Some("failed") => 0,
        Some("error") => 1,
        Some("crashing") => 2,
        Some("pending" | "initializing") => 3,
        Some("running" | "triggered") => 5,
        Some("completed") => 6,
        // None, and states this version does not know.
        _ => 4,
    }
}

/// Whether a replication state is a failing one (failed, error, crashing).
pub fn is_failing(state: &str) -> bool {
    matches!(state, "failed" | "error" | "crashing")
}

/// Summary across directions for status: the least healthy state wins, in this order (worst first):
/// failed, error, crashing, pending (and initializing), (unknown/None, or an unrecognised state), running (and CouchDB 1.x's
/// triggered), completed. Returns the chosen state string ("unknown" for None, or for no states at all).
pub fn summary_state(states: &[Option<&str>]) -> String {
    states
        .iter()
        .copied()
        .min_by_key(|s| state_rank(*s))
        .flatten()
        .map_or_else(|| "unknown".to_string(), str::to_string)
}

/// Whether a set of per-direction states is Ready: every state is "running" (or CouchDB 1.x's "triggered") or,
/// for one-shot (continuous == false), "completed". Empty → false.
pub fn replications_ready(states: &[Option<&str>], continuous: bool) -> bool {
    !states.is_empty()
        && states.iter().all(|s| match s {
            Some("running" | "triggered") => true,
            Some("completed") => !continuous,
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_state_picks_the_least_healthy() {
        let cases: Vec<(Vec<Option<&str>>, &str)> = vec![
            (vec![], "unknown"),
            (vec![Some("running")], "running"),
            (vec![Some("running"), Some("completed")], "running"),
            (vec![Some("completed"), Some("completed")], "completed"),
            (vec![Some("running"), None], "unknown"),
            (vec![None, Some("pending")], "pending"),
            (vec![Some("pending"), Some("crashing")], "crashing"),
            (vec![Some("crashing"), Some("error"), Some("running")], "error"),
            (vec![Some("error"), Some("failed")], "failed"),
            (vec![Some("completed"), Some("somethingnew")], "somethingnew"),
            (vec![Some("triggered"), Some("completed")], "triggered"),
        ];
        for (states, expect) in cases {
            assert_eq!(summary_state(&states), expect, "{states:?}");
        }
    }

    #[test]
    fn replications_ready_table() {
        let cases: Vec<(Vec<Option<&str>>, bool, bool)> = vec![
            (vec![], true, false),
            (vec![], false, false),
            (vec![Some("running")], true, true),
            (vec![Some("running"), Some("running")], true, true),
            (vec![Some("running"), Some("pending")], true, false),
            (vec![Some("running"), None], true, false),
            (vec![Some("completed")], true, false),
            (vec![Some("completed")], false, true),
            (vec![Some("completed"), Some("running")], false, true),
            (vec![Some("completed"), Some("crashing")], false, false),
            (vec![Some("triggered")], true, true),
        ];
        for (states, continuous, expect) in cases {
            assert_eq!(replications_ready(&states, continuous), expect, "{states:?} continuous={continuous}");
        }
    }
}
