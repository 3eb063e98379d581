//! A clustered CouchDB's own set-up, as the CouchServer reconciler checks it: whether the cluster
//! is finished — its system databases exist and every node has the same admin password hash,
//! `[couchdb] uuid` and `[chttpd_auth] secret`, which a `[cluster] seedlist` alone never gives —
//! and whether its membership is whole. Pure: the controller reads, this decides.

use std::collections::BTreeMap;

/// What the controller read from a cluster. The settings are fingerprints (never the values: the
/// auth secret signs every session cookie).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedCluster {
    /// `_membership.cluster_nodes`: the nodes the cluster is configured with.
    pub cluster_nodes: Vec<String>,
    /// `_membership.all_nodes`: the nodes connected now.
    pub all_nodes: Vec<String>,
    /// System databases that do not exist.
    pub missing_system_databases: Vec<String>,
    /// The settings of every connected node that answered; a node that did not is absent.
    pub settings: BTreeMap<String, NodeSettings>,
}

/// Fingerprints of the settings every node of one cluster must share.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSettings {
    /// The admin's password hash (`[admins]`).
    pub admin_hash: Option<String>,
    /// `[couchdb] uuid`.
    pub uuid: Option<String>,
    /// `[chttpd_auth] secret`.
    pub secret: Option<String>,
}

/// How whole the cluster is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MembershipHealth {
    /// Configured nodes that are not connected.
    pub missing: Vec<String>,
    /// Connected nodes that did not answer a request routed to them.
    pub silent: Vec<String>,
}

impl MembershipHealth {
    /// Whether some node is missing or silent.
    pub fn degraded(&self) -> bool {
        !self.missing.is_empty() || !self.silent.is_empty()
    }

    /// What a person reads in the condition and the Event.
    pub fn message(&self) -> String {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!("not connected: {}", self.missing.join(", ")));
        }
        if !self.silent.is_empty() {
            parts.push(format!("connected but not answering: {}", self.silent.join(", ")));
        }
        if parts.is_empty() { "every cluster node is connected and answers".into() } else { parts.join("; ") }
    }
}

/// What the membership watch compares between its reads and the CouchServer's last pass: the
/// nodes configured, connected, and connected and answering. Nothing in CouchDB announces a node
/// leaving or coming back, so a watch reads these and wakes the server only when they moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MembershipView {
    /// `_membership.cluster_nodes`, sorted.
    pub cluster_nodes: Vec<String>,
    /// `_membership.all_nodes`, sorted.
    pub all_nodes: Vec<String>,
    /// The connected nodes that answered a request routed to them, sorted.
    pub answering: Vec<String>,
}

impl MembershipView {
    /// The view of what was read, in a canonical order.
    pub fn new(
        mut cluster_nodes: Vec<String>,
        mut all_nodes: Vec<String>,
        answering: impl IntoIterator<Item = String>,
    ) -> Self {
        let mut answering: Vec<String> = answering.into_iter().collect();
        for v in [&mut cluster_nodes, &mut all_nodes, &mut answering] {
            v.sort();
            v.dedup();
        }
        MembershipView { cluster_nodes, all_nodes, answering }
    }

    /// The view a server pass planned from.
    pub fn of(observed: &ObservedCluster) -> Self {
        Self::new(observed.cluster_nodes.clone(), observed.all_nodes.clone(), observed.settings.keys().cloned())
    }

    /// The nodes configured and not connected, and those connected and silent: the one
    /// definition of a whole cluster, for the server's pass and for the membership watch.
    pub fn health(&self) -> MembershipHealth {
        MembershipHealth {
            missing: self.cluster_nodes.iter().filter(|n| !self.all_nodes.contains(n)).cloned().collect(),
            silent: self.all_nodes.iter().filter(|n| !self.answering.contains(n)).cloned().collect(),
        }
    }

    /// Whether a node is configured and not connected, or connected and silent.
    pub fn degraded(&self) -> bool {
        self.health().degraded()
    }
}

/// How long the membership watch waits between reads: [`MEMBERSHIP_EVERY`], or
/// [`DEGRADED_EVERY`] while the cluster is degraded (so it turns healthy soon after the node
/// returns).
pub fn membership_interval(last: &MembershipView) -> std::time::Duration {
    if last.degraded() { DEGRADED_EVERY } else { MEMBERSHIP_EVERY }
}

/// How often the membership watch reads a healthy cluster.
pub const MEMBERSHIP_EVERY: std::time::Duration = std::time::Duration::from_secs(30);
/// How often it reads a degraded one.
pub const DEGRADED_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether a watch's `read` wakes the server: it differs from what the server's last pass
/// planned from (`planned`), and the watch has not already woken it for this same read
/// (`woken_for`: a pass that reads differently again is not woken in a loop).
pub fn membership_wakes(
    planned: Option<&MembershipView>,
    read: &MembershipView,
    woken_for: Option<&MembershipView>,
) -> bool {
    planned.is_some_and(|p| p != read) && woken_for != Some(read)
}

/// What to do with the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterPlan {
    /// Finish the cluster (`POST /_cluster_setup {"action": "finish_cluster"}`), and why.
    pub finish: Option<String>,
    /// Finishing is needed but waits until every node is connected (it would leave a missing
    /// node with its own settings, and place system database shards without it).
    pub finish_waits: Option<String>,
    /// Membership health.
    pub health: MembershipHealth,
}

/// Decides whether the cluster must be finished, and how whole it is. A single node has nothing
/// to finish.
pub fn plan_cluster(observed: &ObservedCluster) -> ClusterPlan {
    let health = MembershipView::of(observed).health();
    if observed.cluster_nodes.len() < 2 {
        return ClusterPlan { health, ..ClusterPlan::default() };
    }
    let mut why = Vec::new();
    if !observed.missing_system_databases.is_empty() {
        why.push(format!("system databases missing: {}", observed.missing_system_databases.join(", ")));
    }
    let first = observed.settings.values().next();
    let differ = |field: fn(&NodeSettings) -> &Option<String>| {
        first.is_some_and(|f| observed.settings.values().any(|s| field(s) != field(f)))
    };
    for (name, field) in [
        ("the admin password hash", (|s: &NodeSettings| &s.admin_hash) as fn(&NodeSettings) -> &Option<String>),
        ("[couchdb] uuid", |s: &NodeSettings| &s.uuid),
        ("[chttpd_auth] secret", |s: &NodeSettings| &s.secret),
    ] {
        if differ(field) {
            why.push(format!("nodes differ in {name}"));
        }
    }
    if why.is_empty() {
        return ClusterPlan { health, ..ClusterPlan::default() };
    }
    let why = why.join("; ");
    if health.degraded() {
        ClusterPlan { finish: None, finish_waits: Some(why), health }
    } else {
        ClusterPlan { finish: Some(why), finish_waits: None, health }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(n: &str) -> NodeSettings {
        NodeSettings { admin_hash: Some(format!("h{n}")), uuid: Some("u".into()), secret: Some("s".into()) }
    }

    fn cluster(
        nodes: &[&str],
        connected: &[&str],
        answering: &[(&str, NodeSettings)],
        missing_dbs: &[&str],
    ) -> ObservedCluster {
        ObservedCluster {
            cluster_nodes: nodes.iter().map(|s| s.to_string()).collect(),
            all_nodes: connected.iter().map(|s| s.to_string()).collect(),
            missing_system_databases: missing_dbs.iter().map(|s| s.to_string()).collect(),
            settings: answering.iter().map(|(n, s)| (n.to_string(), s.clone())).collect(),
        }
    }

    fn view(configured: &[&str], connected: &[&str], answering: &[&str]) -> MembershipView {
        let v = |s: &[&str]| s.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        MembershipView::new(v(configured), v(connected), v(answering))
    }

    #[test]
    fn a_membership_read_wakes_the_server_once_for_each_change_it_has_not_planned_from() {
        let whole = view(&["n1", "n2", "n3"], &["n3", "n1", "n2"], &["n2", "n1", "n3"]);
        let gone = view(&["n1", "n2", "n3"], &["n1", "n2"], &["n1", "n2"]);
        let silent = view(&["n1", "n2", "n3"], &["n1", "n2", "n3"], &["n1", "n2"]);
        assert!(!whole.degraded(), "the order of a listing is no change");
        assert!(gone.degraded() && silent.degraded());
        assert_eq!(membership_interval(&whole), MEMBERSHIP_EVERY);
        assert_eq!(membership_interval(&silent), DEGRADED_EVERY);
        type Case<'a> = (&'a str, Option<&'a MembershipView>, &'a MembershipView, Option<&'a MembershipView>, bool);
        let cases: [Case; 6] = [
            ("no pass yet: the pass reads for itself", None, &gone, None, false),
            ("the same as the pass planned from", Some(&whole), &whole, None, false),
            ("a node left", Some(&whole), &gone, None, true),
            ("a node left, already woken for it", Some(&whole), &gone, Some(&gone), false),
            ("it came back before the pass", Some(&gone), &whole, Some(&gone), true),
            ("connected and now silent", Some(&whole), &silent, Some(&gone), true),
        ];
        for (name, planned, read, woken_for, wakes) in cases {
            assert_eq!(membership_wakes(planned, read, woken_for), wakes, "{name}");
        }
    }

    #[test]
    fn plan_cluster_table() {
        let three = ["n1", "n2", "n3"];
        fn shared(n: &str) -> (&str, NodeSettings) {
            (n, same("shared"))
        }
        type Case<'a> = (&'a str, ObservedCluster, Option<&'a str>, Option<&'a str>, &'a str);
        let cases: Vec<Case> = vec![
            (
                "a single node: nothing to finish",
                cluster(&["n1"], &["n1"], &[("n1", same("1"))], &["_users"]),
                None,
                None,
                "every cluster node",
            ),
            (
                "finished and whole",
                cluster(&three, &three, &[shared("n1"), shared("n2"), shared("n3")], &[]),
                None,
                None,
                "every cluster node",
            ),
            (
                "formed by a seedlist only: no system databases, a hash per node",
                cluster(
                    &three,
                    &three,
                    &[("n1", same("1")), ("n2", same("2")), ("n3", same("3"))],
                    &["_users", "_replicator"],
                ),
                Some("system databases missing: _users, _replicator; nodes differ in the admin password hash"),
                None,
                "every cluster node",
            ),
            (
                "system databases made by hand, hashes still differ",
                cluster(&three, &three, &[("n1", same("1")), shared("n2"), shared("n3")], &[]),
                Some("nodes differ in the admin password hash"),
                None,
                "every cluster node",
            ),
            (
                "an auth secret on one node only",
                cluster(
                    &three,
                    &three,
                    &[shared("n1"), ("n2", NodeSettings { secret: None, ..same("shared") }), shared("n3")],
                    &[],
                ),
                Some("nodes differ in [chttpd_auth] secret"),
                None,
                "every cluster node",
            ),
            (
                "the same everywhere, even unset: nothing to do (no endless finishing)",
                cluster(
                    &three,
                    &three,
                    &[
                        ("n1", NodeSettings { secret: None, ..same("x") }),
                        ("n2", NodeSettings { secret: None, ..same("x") }),
                        ("n3", NodeSettings { secret: None, ..same("x") }),
                    ],
                    &[],
                ),
                None,
                None,
                "every cluster node",
            ),
            (
                "a node missing: degraded, finishing waits for it",
                cluster(&three, &["n1", "n2"], &[("n1", same("1")), shared("n2")], &["_users"]),
                None,
                Some("system databases missing: _users; nodes differ in the admin password hash"),
                "not connected: n3",
            ),
            (
                "a node connected but silent: degraded",
                cluster(&three, &three, &[shared("n1"), shared("n2")], &[]),
                None,
                None,
                "connected but not answering: n3",
            ),
        ];
        for (what, observed, finish, waits, health) in cases {
            let plan = plan_cluster(&observed);
            assert_eq!(plan.finish.as_deref(), finish, "{what}");
            assert_eq!(plan.finish_waits.as_deref(), waits, "{what}");
            assert!(plan.health.message().starts_with(health), "{what}: {}", plan.health.message());
            assert_eq!(plan.health.degraded(), !health.starts_with("every"), "{what}");
        }
    }
}
