//! What the exposition says after a few recorded events.

use super::*;

#[test]
fn the_exposition_names_what_happened() {
    let m = Metrics::new();
    m.reconciled("CouchDatabase", Duration::from_millis(3), None);
    m.reconciled("CouchDatabase", Duration::from_millis(3), Some("Unreachable"));
    m.couch_request(&RequestRecord {
        method: "GET",
        call: "/{db}/_security".into(),
        status: Some(200),
        elapsed: Duration::from_millis(1),
    });
    m.replication("ns", "s", "r", "running", Some(4), Some(0));
    m.replication("ns", "s", "r", "crashing", Some(5), Some(1));
    m.server("ns", "main", true, Some((500, 3)));
    let text = m.encode();
    assert!(text.contains(r#"couchshare_reconciles_total{kind="CouchDatabase"} 2"#), "{text}");
    assert!(text.contains(r#"couchshare_reconcile_errors_total{kind="CouchDatabase",reason="Unreachable"} 1"#));
    assert!(text.contains(r#"couchshare_couchdb_requests_total{method="GET",call="/{db}/_security",status="200"} 1"#));
    assert!(
        text.contains(r#"couchshare_replication_state{namespace="ns",share="s",replication="r",state="crashing"} 1"#)
    );
    assert!(!text.contains(r#"state="running"} 1"#), "the previous state is cleared");
    assert!(text.contains(r#"couchshare_replication_changes_pending{namespace="ns",share="s",replication="r"} 5"#));
    assert!(text.contains(r#"couchshare_server_replication_budget{namespace="ns",server="main"} 500"#));
}

#[test]
fn a_server_shows_one_source_of_database_events() {
    let m = Metrics::new();
    m.database_events("ns", "main", "_all_dbs");
    m.database_events("ns", "main", "_db_updates");
    let text = m.encode();
    assert!(text.contains(r#"couchshare_server_database_events{namespace="ns",server="main",source="_db_updates"} 1"#));
    assert!(text.contains(r#"couchshare_server_database_events{namespace="ns",server="main",source="_all_dbs"} 0"#));
}

#[test]
fn the_scrape_says_leader_with_the_process_prefix_and_no_resources_before_the_watches() {
    let metrics = Metrics::new();
    let text = metrics.encode();
    assert!(text.contains("couchshare_leader 0"), "{text}");
    assert!(!text.contains("couchshare_resources"), "{text}");
    metrics.state.leading(true);
    assert!(metrics.encode().contains("couchshare_leader 1"));
}
