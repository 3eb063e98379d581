//! The decisions of scheduled backups, without a clock of their own: which backup is the base
//! of the next one, which completed backups retention deletes, which chain a restore replays,
//! and which backup a point in time names.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};

/// One backup of a schedule, as the plan needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The CouchBackup's name.
    pub name: String,
    /// When it completed; `None` while it runs.
    pub completed_at: Option<Timestamp>,
    /// The backup it is incremental from.
    pub base: Option<String>,
}

/// The name of the CouchBackup a group backup `group` makes of CouchDatabase `database`:
/// `<group>-<database>`, or, past Kubernetes' 253 characters, its first characters and a hash
/// of the whole (so two long names stay apart).
pub fn member_name(group: &str, database: &str) -> String {
    const MAX: usize = 253;
    let full = format!("{group}-{database}");
    if full.len() <= MAX {
        return full;
    }
    let hash = hex::encode(&Sha256::digest(full.as_bytes())[..5]);
    let mut head = full[..MAX - hash.len() - 1].to_owned();
    while head.ends_with(['-', '.']) {
        head.pop();
    }
    format!("{head}-{hash}")
}

/// `72h` or `30d` as a duration (what the schema admits for `retention.maxAge`).
pub fn parse_age(text: &str) -> Option<SignedDuration> {
    let (number, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: i64 = number.parse().ok().filter(|n| *n > 0)?;
    match unit {
        "h" => Some(SignedDuration::from_hours(n)),
        "d" => Some(SignedDuration::from_hours(n.checked_mul(24)?)),
        _ => None,
    }
}

/// How many backups the chain ending at `name` holds (1 for a full backup).
fn chain_length(by_name: &BTreeMap<&str, &Held>, name: &str) -> usize {
    let mut seen = BTreeSet::new();
    let mut at = Some(name);
    while let Some(n) = at {
        if !seen.insert(n) {
            break;
        }
        at = by_name.get(n).and_then(|h| h.base.as_deref());
    }
    seen.len()
}

/// The base of the next incremental backup: the newest completed backup, unless its chain
/// already holds `full_every` backups (then a full one starts a new chain). `None`: full.
pub fn next_base(held: &[Held], full_every: usize) -> Option<String> {
    let by_name: BTreeMap<&str, &Held> = held.iter().map(|h| (h.name.as_str(), h)).collect();
    let newest = held.iter().filter(|h| h.completed_at.is_some()).max_by_key(|h| h.completed_at)?;
    (chain_length(&by_name, &newest.name) < full_every.max(1)).then(|| newest.name.clone())
}

/// The completed backups retention deletes: beyond the newest `count`, or older than `max_age`.
/// Never the newest completed backup, never one a kept backup is incremental from (directly or
/// not), never one that has not completed.
pub fn expired(held: &[Held], count: usize, max_age: Option<SignedDuration>, now: Timestamp) -> Vec<String> {
    let mut completed: Vec<&Held> = held.iter().filter(|h| h.completed_at.is_some()).collect();
    completed.sort_by_key(|h| std::cmp::Reverse(h.completed_at));
    let young = |h: &Held| max_age.is_none_or(|age| h.completed_at.is_some_and(|t| now.duration_since(t) <= age));
    let mut keep: BTreeSet<&str> =
        completed.iter().take(count.max(1)).filter(|h| young(h)).map(|h| h.name.as_str()).collect();
    if let Some(newest) = completed.first() {
        keep.insert(newest.name.as_str());
    }
    // And what the kept ones need, and whatever has not completed, with what it needs.
    let by_name: BTreeMap<&str, &Held> = held.iter().map(|h| (h.name.as_str(), h)).collect();
    let mut roots: Vec<&str> = keep.iter().copied().collect();
    roots.extend(held.iter().filter(|h| h.completed_at.is_none()).map(|h| h.name.as_str()));
    for root in roots {
        let mut at = by_name.get(root).and_then(|h| h.base.as_deref());
        while let Some(base) = at {
            if !keep.insert(base) {
                break;
            }
            at = by_name.get(base).and_then(|h| h.base.as_deref());
        }
    }
    completed.iter().filter(|h| !keep.contains(h.name.as_str())).map(|h| h.name.clone()).collect()
}

/// The backups a restore of `name` replays, full first: `name` and its bases. `Err` names
/// what breaks the chain (a base that is missing, or a loop).
pub fn chain<'a>(name: &'a str, base_of: impl Fn(&str) -> Option<Option<&'a str>>) -> Result<Vec<&'a str>, String> {
    let mut out = vec![name];
    let mut at = name;
    loop {
        match base_of(at) {
            None => return Err(format!("CouchBackup {at} is missing")),
            Some(None) => break,
            Some(Some(base)) => {
                if out.contains(&base) {
                    return Err(format!("CouchBackup {base} is its own base"));
                }
                out.push(base);
                at = base;
            }
        }
    }
    out.reverse();
    Ok(out)
}

/// The newest completed backup at or before `point` (any time when `None`).
pub fn at_point(held: &[Held], point: Option<Timestamp>) -> Option<String> {
    held.iter()
        .filter(|h| h.completed_at.is_some_and(|t| point.is_none_or(|p| t <= p)))
        .max_by_key(|h| h.completed_at)
        .map(|h| h.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hours: i64) -> Timestamp {
        Timestamp::UNIX_EPOCH + SignedDuration::from_hours(hours)
    }

    fn held(name: &str, hour: Option<i64>, base: Option<&str>) -> Held {
        Held { name: name.into(), completed_at: hour.map(at), base: base.map(str::to_owned) }
    }

    #[test]
    fn ages_are_hours_or_days() {
        assert_eq!(parse_age("72h"), Some(SignedDuration::from_hours(72)));
        assert_eq!(parse_age("30d"), Some(SignedDuration::from_hours(720)));
        assert_eq!(parse_age("0d"), None);
        assert_eq!(parse_age("5m"), None);
        assert_eq!(parse_age(""), None);
    }

    #[test]
    fn an_incremental_follows_the_newest_completed_backup_until_the_chain_is_full() {
        assert_eq!(next_base(&[], 3), None, "the first backup is full");
        let one = [held("a", Some(1), None)];
        assert_eq!(next_base(&one, 3).as_deref(), Some("a"));
        let three = [held("a", Some(1), None), held("b", Some(2), Some("a")), held("c", Some(3), Some("b"))];
        assert_eq!(next_base(&three, 3), None, "a chain of fullEvery starts again with a full one");
        assert_eq!(next_base(&three[..2], 3).as_deref(), Some("b"));
        assert_eq!(next_base(&one, 1), None, "fullEvery 1: every backup is full");
        let running = [held("a", Some(1), None), held("b", None, Some("a"))];
        assert_eq!(next_base(&running, 3).as_deref(), Some("a"), "only a completed backup is a base");
    }

    #[test]
    fn retention_keeps_the_newest_and_every_base_a_kept_backup_needs() {
        let full = [held("a", Some(1), None), held("b", Some(2), None), held("c", Some(3), None)];
        assert_eq!(expired(&full, 2, None, at(10)), ["a"]);
        assert_eq!(expired(&full, 5, None, at(10)), Vec::<String>::new());
        // Everything older than an hour, but the newest stays: never everything.
        assert_eq!(expired(&full, 5, Some(SignedDuration::from_hours(1)), at(10)), ["b", "a"]);
        // A chain: keeping d keeps c, b and a, which it needs.
        let chain = [
            held("a", Some(1), None),
            held("b", Some(2), Some("a")),
            held("c", Some(3), Some("b")),
            held("d", Some(4), Some("c")),
        ];
        assert_eq!(expired(&chain, 1, None, at(10)), Vec::<String>::new());
        // A new chain: the old one goes whole once no kept backup needs it.
        let two = [
            held("a", Some(1), None),
            held("b", Some(2), Some("a")),
            held("c", Some(3), None),
            held("d", Some(4), Some("c")),
        ];
        assert_eq!(expired(&two, 2, None, at(10)), ["b", "a"]);
        // A running incremental keeps its base.
        let running = [held("a", Some(1), None), held("b", Some(2), None), held("c", None, Some("a"))];
        assert_eq!(expired(&running, 1, None, at(10)), Vec::<String>::new());
    }

    #[test]
    fn a_restore_replays_the_chain_from_the_full_backup_up() {
        let bases: BTreeMap<&str, Option<&str>> = [("a", None), ("b", Some("a")), ("c", Some("b"))].into();
        let lookup = |n: &str| bases.get(n).copied();
        assert_eq!(chain("c", lookup), Ok(vec!["a", "b", "c"]));
        assert_eq!(chain("a", lookup), Ok(vec!["a"]));
        let broken: BTreeMap<&str, Option<&str>> = [("c", Some("b"))].into();
        assert!(chain("c", |n| broken.get(n).copied()).is_err_and(|e| e.contains("b is missing")));
        let looped: BTreeMap<&str, Option<&str>> = [("a", Some("b")), ("b", Some("a"))].into();
        assert!(chain("a", |n| looped.get(n).copied()).is_err());
    }

    #[test]
    fn a_point_in_time_names_the_newest_backup_completed_by_then() {
        let all = [held("a", Some(1), None), held("b", Some(5), None), held("c", None, None)];
        assert_eq!(at_point(&all, None).as_deref(), Some("b"));
        assert_eq!(at_point(&all, Some(at(4))).as_deref(), Some("a"));
        assert_eq!(at_point(&all, Some(at(0))), None);
    }

    #[test]
    fn a_group_member_is_named_after_both_and_stays_a_valid_distinct_name() {
        assert_eq!(member_name("nightly", "drafft"), "nightly-drafft");
        let group = "g".repeat(200);
        let (a, b) = (member_name(&group, &"a".repeat(100)), member_name(&group, &format!("{}b", "a".repeat(99))));
        assert_eq!(a.len(), 253);
        assert_ne!(a, b, "two long names stay apart");
        assert!(a.starts_with(&group));
        let dashed = member_name(&"x".repeat(241), &"y".repeat(20));
        assert!(
            dashed.starts_with(&format!("{}-", "x".repeat(241))) && !dashed.contains("--"),
            "the cut falls on the dash: {dashed}"
        );
        assert!(dashed.len() <= 253);
    }
}
