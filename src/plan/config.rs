//! Server configuration: the `section/key → value` pairs a CouchServer declares, and which of
//! them differ on a node.

use std::collections::BTreeMap;

use crate::api::ServerConfig;

/// A configuration key: `(section, key)`.
pub type ConfigKey = (String, String);

/// CouchDB's default `replicator/max_jobs`.
pub const DEFAULT_MAX_JOBS: i32 = 500;

fn bool_str(b: bool) -> String {
    if b { "true".into() } else { "false".into() }
}

fn key(section: &str, key: &str) -> ConfigKey {
    (section.to_string(), key.to_string())
}

/// Where a server keeps its HTTP settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigLayout {
    /// CouchDB 2 and 3: `[chttpd]` (and `/_node/{node}/_config`).
    Clustered,
    /// CouchDB 1.x and pouchdb-server: `[httpd]` and `[couch_httpd_auth]` (and `/_config`).
    Legacy,
}

/// Every configuration value the spec declares, in CouchDB's own string form.
/// Typed fields win over the free `settings` map for the same key.
pub fn desired_config(config: &ServerConfig, layout: ConfigLayout) -> BTreeMap<ConfigKey, String> {
    let (httpd, auth) = match layout {
        ConfigLayout::Clustered => ("chttpd", "chttpd"),
        ConfigLayout::Legacy => ("httpd", "couch_httpd_auth"),
    };
    let mut out = BTreeMap::new();
    for (k, v) in &config.settings {
        if let Some((section, name)) = k.split_once('/') {
            out.insert(key(section, name), v.clone());
        }
    }
    if let Some(cors) = &config.cors {
        out.insert(key(httpd, "enable_cors"), bool_str(cors.enabled));
        if !cors.origins.is_empty() {
            out.insert(key("cors", "origins"), cors.origins.join(","));
        }
        if let Some(credentials) = cors.credentials {
            out.insert(key("cors", "credentials"), bool_str(credentials));
        }
        if !cors.methods.is_empty() {
            out.insert(key("cors", "methods"), cors.methods.join(","));
        }
        if !cors.headers.is_empty() {
            out.insert(key("cors", "headers"), cors.headers.join(","));
        }
    }
    if let Some(peruser) = &config.per_user_databases {
        out.insert(key("couch_peruser", "enable"), bool_str(peruser.enabled));
        if let Some(delete) = peruser.delete_dbs {
            out.insert(key("couch_peruser", "delete_dbs"), bool_str(delete));
        }
        if let Some(q) = peruser.q {
            out.insert(key("couch_peruser", "q"), q.to_string());
        }
        if let Some(prefix) = &peruser.database_prefix {
            out.insert(key("couch_peruser", "database_prefix"), prefix.clone());
        }
    }
    if let Some(require) = config.require_valid_user {
        // CouchDB 3 reads it under [chttpd]; [chttpd_auth] has no effect there.
        out.insert(key(auth, "require_valid_user"), bool_str(require));
    }
    out
}

/// The declared values that a node does not have yet (`observed` holds what the node
/// answered for each declared key; `None` is "not set").
pub fn config_changes(
    desired: &BTreeMap<ConfigKey, String>,
    observed: &BTreeMap<ConfigKey, Option<String>>,
) -> Vec<(ConfigKey, String)> {
    desired
        .iter()
        .filter(|(k, v)| observed.get(*k).and_then(|o| o.as_deref()) != Some(v.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// `section/key`, the form status and messages use.
pub fn display_key(k: &ConfigKey) -> String {
    format!("{}/{}", k.0, k.1)
}

/// The replication budget of a cluster: `replicator/max_jobs` per node (CouchDB's default
/// when unset or unreadable) times the node count.
pub fn replication_budget(max_jobs: Option<&str>, nodes: usize) -> (i32, i32) {
    let per_node = max_jobs.and_then(|v| v.trim().parse::<i32>().ok()).filter(|v| *v > 0).unwrap_or(DEFAULT_MAX_JOBS);
    let nodes = i32::try_from(nodes.max(1)).unwrap_or(i32::MAX);
    (per_node, per_node.saturating_mul(nodes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CorsConfig, PerUserDatabasesConfig};

    #[test]
    fn desired_config_maps_every_typed_field() {
        let config = ServerConfig {
            cors: Some(CorsConfig {
                enabled: true,
                origins: vec!["https://app.example".into(), "http://localhost:8080".into()],
                credentials: Some(true),
                methods: vec!["GET".into(), "PUT".into()],
                headers: vec![],
            }),
            per_user_databases: Some(PerUserDatabasesConfig {
                enabled: true,
                delete_dbs: Some(false),
                q: Some(1),
                database_prefix: None,
            }),
            require_valid_user: Some(true),
            settings: [
                ("replicator/max_jobs".to_string(), "200".to_string()),
                ("chttpd/require_valid_user".to_string(), "false".to_string()),
            ]
            .into_iter()
            .collect(),
        };
        let legacy = desired_config(&config, ConfigLayout::Legacy);
        assert_eq!(legacy.get(&key("httpd", "enable_cors")).map(String::as_str), Some("true"));
        assert_eq!(legacy.get(&key("couch_httpd_auth", "require_valid_user")).map(String::as_str), Some("true"));
        let got: Vec<(String, String)> =
            desired_config(&config, ConfigLayout::Clustered).iter().map(|(k, v)| (display_key(k), v.clone())).collect();
        let want: Vec<(String, String)> = [
            ("chttpd/enable_cors", "true"),
            ("chttpd/require_valid_user", "true"),
            ("cors/credentials", "true"),
            ("cors/methods", "GET,PUT"),
            ("cors/origins", "https://app.example,http://localhost:8080"),
            ("couch_peruser/delete_dbs", "false"),
            ("couch_peruser/enable", "true"),
            ("couch_peruser/q", "1"),
            ("replicator/max_jobs", "200"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn only_differing_values_are_written() {
        let desired: BTreeMap<ConfigKey, String> =
            [(key("a", "x"), "1".into()), (key("a", "y"), "2".into()), (key("b", "z"), "3".into())]
                .into_iter()
                .collect();
        let observed: BTreeMap<ConfigKey, Option<String>> =
            [(key("a", "x"), Some("1".into())), (key("a", "y"), Some("9".into())), (key("b", "z"), None)]
                .into_iter()
                .collect();
        let changes = config_changes(&desired, &observed);
        assert_eq!(changes, vec![(key("a", "y"), "2".into()), (key("b", "z"), "3".into())]);
        let all_set: BTreeMap<ConfigKey, Option<String>> =
            desired.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect();
        assert!(config_changes(&desired, &all_set).is_empty(), "nothing to write when every node matches");
    }

    #[test]
    fn replication_budget_defaults_and_multiplies() {
        assert_eq!(replication_budget(None, 1), (500, 500));
        assert_eq!(replication_budget(Some("200"), 3), (200, 600));
        assert_eq!(replication_budget(Some("garbage"), 2), (500, 1000));
        assert_eq!(replication_budget(Some("100"), 0), (100, 100));
    }
}
