//! Database events from two listings of a server's databases, for when CouchDB's `_db_updates`
//! feed cannot be read: what appeared is `created`, what went is `deleted`, in name order
//! (a database deleted and created again between two listings is not seen; its content is).

use std::collections::BTreeSet;

use crate::couch::DbUpdate;

/// The events that turn listing `before` into listing `after`, as `_db_updates` would report
/// them (without a sequence).
pub fn listing_changes(before: &BTreeSet<String>, after: &BTreeSet<String>) -> Vec<DbUpdate> {
    let event = |name: &String, kind: &str| DbUpdate {
        db_name: name.clone(),
        kind: kind.to_string(),
        seq: serde_json::Value::Null,
    };
    let created = after.difference(before).map(|n| event(n, "created"));
    let deleted = before.difference(after).map(|n| event(n, "deleted"));
    created.chain(deleted).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn what_appeared_was_created_and_what_went_was_deleted() {
        let changes = listing_changes(&set(&["a", "b", "c"]), &set(&["b", "c", "d", "e"]));
        let seen: Vec<(&str, &str)> = changes.iter().map(|u| (u.db_name.as_str(), u.kind.as_str())).collect();
        assert_eq!(seen, [("d", "created"), ("e", "created"), ("a", "deleted")]);
        assert!(listing_changes(&set(&["a"]), &set(&["a"])).is_empty());
    }
}
