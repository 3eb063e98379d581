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

#[test]
fn the_scrape_shows_each_databases_newest_backup_and_each_schedules_interval() {
    use crate::controller::runtime::state_metrics::{BackedUp, BackupFigures, LastBackup, Scheduled};
    let metrics = Metrics::new();
    metrics.state.watch_backups(Box::new(|| BackupFigures {
        databases: vec![(
            BackedUp { namespace: "drafft".into(), database: "project".into() },
            LastBackup { ended: 1_765_000_000.5, seconds: 12.25, bytes: 4096 },
        )],
        schedules: vec![(
            Scheduled { namespace: "drafft".into(), schedule: "nightly".into(), database: "project".into() },
            86_400,
            1_765_000_000.5,
        )],
    }));
    let text = metrics.encode();
    // Read only once the watches' census is set, like the resources.
    assert!(!text.contains("couchshare_backup_last_bytes"), "{text}");
    metrics.state.watch(Box::new(Vec::new));
    let text = metrics.encode();
    let db = r#"{namespace="drafft",database="project"}"#;
    assert!(text.contains(&format!("couchshare_backup_last_bytes{db} 4096")), "{text}");
    assert!(text.contains(&format!("couchshare_backup_last_duration_seconds{db} 12.25")), "{text}");
    assert!(text.contains(&format!("couchshare_backup_last_success_timestamp_seconds{db} 1765000000.5")), "{text}");
    let schedule = r#"{namespace="drafft",schedule="nightly",database="project"}"#;
    assert!(text.contains(&format!("couchshare_scheduled_backup_interval_seconds{schedule} 86400")), "{text}");
    assert!(
        text.contains(&format!("couchshare_scheduled_backup_last_success_timestamp_seconds{schedule} 1765000000.5")),
        "{text}"
    );
}
