//! `couchshare plan`: what the operator would change on CouchDB for a directory of manifests,
//! computed with the same `plan` functions the controllers use, without writing anything.
//!
//! It reads CouchDB (never Kubernetes), so what only the cluster knows is taken from the
//! manifests themselves: grants resolve CouchUser references to the users in the directory,
//! and a password's state is unknown (a user that exists is not reported as changing it).

use std::collections::BTreeMap;
use std::path::Path;

use crate::api::{CouchDatabase, CouchGrant, CouchServer, CouchShare, CouchUser};
use crate::couch::{CouchClient, CouchError};
use crate::plan::config::{ConfigLayout, config_changes, desired_config, display_key};
use crate::plan::database::{DatabaseIntent, DatabaseStep, ObservedDatabase, Owner, plan_database};
use crate::plan::grant::merge_unmanaged;
use crate::plan::security::{GrantEntries, desired_security};
use crate::plan::share::{contribution, touches_database, wants_access};

mod share;
mod users;

/// Everything read from the manifest directory.
#[derive(Default, Clone)]
pub struct Manifests {
    /// CouchServers.
    pub servers: Vec<CouchServer>,
    /// CouchDatabases.
    pub databases: Vec<CouchDatabase>,
    /// CouchUsers.
    pub users: Vec<CouchUser>,
    /// CouchGrants.
    pub grants: Vec<CouchGrant>,
    /// CouchShares.
    pub shares: Vec<CouchShare>,
}

/// Why a preview could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    /// A file could not be read or parsed.
    #[error("{path}: {message}")]
    Manifest {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// CouchDB could not be read.
    #[error("reading CouchDB: {0}")]
    Couch(#[from] CouchError),
}

/// Reads every `.yaml`/`.yml` file under `dir` (other kinds are ignored).
pub fn read_manifests(dir: &Path) -> Result<Manifests, PreviewError> {
    let mut files = Vec::new();
    collect(dir, &mut files)
        .map_err(|e| PreviewError::Manifest { path: dir.display().to_string(), message: e.to_string() })?;
    files.sort();
    let mut out = Manifests::default();
    for file in files {
        let err = |message: String| PreviewError::Manifest { path: file.display().to_string(), message };
        let text = std::fs::read_to_string(&file).map_err(|e| err(e.to_string()))?;
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let value: serde_yaml_ng::Value = serde::Deserialize::deserialize(doc).map_err(|e| err(e.to_string()))?;
            let parse = |e: serde_yaml_ng::Error| err(e.to_string());
            match value.get("kind").and_then(|k| k.as_str()) {
                Some("CouchServer") => out.servers.push(serde_yaml_ng::from_value(value).map_err(parse)?),
                Some("CouchDatabase") => out.databases.push(serde_yaml_ng::from_value(value).map_err(parse)?),
                Some("CouchUser") => out.users.push(serde_yaml_ng::from_value(value).map_err(parse)?),
                Some("CouchGrant") => out.grants.push(serde_yaml_ng::from_value(value).map_err(parse)?),
                Some("CouchShare") => out.shares.push(serde_yaml_ng::from_value(value).map_err(parse)?),
                _ => {}
            }
        }
    }
    Ok(out)
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    if dir.is_file() {
        out.push(dir.to_path_buf());
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    Ok(())
}

/// The manifests as `kubectl apply -n namespace` stores them: each in its own namespace, or in
/// `namespace` when it names none (references between them are resolved by namespace).
fn in_namespace(manifests: &Manifests, namespace: &str) -> Manifests {
    fn set<K: kube::Resource>(objects: &mut [K], namespace: &str) {
        for o in objects {
            o.meta_mut().namespace.get_or_insert_with(|| namespace.to_string());
        }
    }
    let mut out = manifests.clone();
    set(&mut out.servers, namespace);
    set(&mut out.databases, namespace);
    set(&mut out.users, namespace);
    set(&mut out.grants, namespace);
    set(&mut out.shares, namespace);
    out
}

fn name_of<K: kube::Resource>(obj: &K) -> String {
    obj.meta().name.clone().unwrap_or_default()
}

/// What `grant` contributes, with its CouchUser references resolved against the manifests.
fn grant_entries(grant: &CouchGrant, users: &[CouchUser]) -> GrantEntries {
    let mut names = grant.spec.usernames.clone();
    for r in &grant.spec.users {
        if let Some(u) = users.iter().find(|u| name_of(*u) == r.name) {
            names.push(u.couch_username().to_string());
        }
    }
    names.sort();
    names.dedup();
    GrantEntries { access: grant.spec.access, names, roles: grant.spec.roles.clone() }
}

/// The lines `couchshare plan` prints: `+` creates, `~` changes, `=` unchanged, `!` refused.
pub async fn preview(couch: &CouchClient, manifests: &Manifests, namespace: &str) -> Result<Vec<String>, PreviewError> {
    let manifests = &in_namespace(manifests, namespace);
    let mut lines = Vec::new();
    let caps = couch.capabilities().await?;
    let layout = if caps.node_config { ConfigLayout::Clustered } else { ConfigLayout::Legacy };
    for server in &manifests.servers {
        for db in crate::controller::SYSTEM_DATABASES {
            if !couch.database_exists(db).await? {
                lines.push(format!("+ CouchServer {}: create system database {db}", name_of(server)));
            }
        }
        let desired = server.spec.config.as_ref().map(|c| desired_config(c, layout)).unwrap_or_default();
        let membership = couch.membership().await?;
        let nodes = if caps.node_config {
            membership.cluster_nodes
        } else {
            membership.cluster_nodes.into_iter().take(1).collect()
        };
        for node in nodes {
            let mut observed = BTreeMap::new();
            for (section, key) in desired.keys() {
                observed.insert((section.clone(), key.clone()), couch.config_get(&node, section, key).await?);
            }
            let changes = config_changes(&desired, &observed);
            for (key, value) in &changes {
                lines.push(format!(
                    "~ CouchServer {}: set {} = {value:?} on {node}",
                    name_of(server),
                    display_key(key)
                ));
            }
            if changes.is_empty() && !desired.is_empty() {
                lines.push(format!("= CouchServer {}: configuration on {node} unchanged", name_of(server)));
            }
        }
    }
    for db in &manifests.databases {
        let name = db.couch_name().to_string();
        let mut grants: Vec<GrantEntries> = manifests
            .grants
            .iter()
            .filter(|g| g.spec.database.name.as_deref() == Some(name_of(db).as_str()))
            .map(|g| grant_entries(g, &manifests.users))
            .collect();
        for share in manifests.shares.iter().filter(|s| wants_access(s) && touches_database(s, db)) {
            grants.push(contribution(share));
        }
        let exists = couch.database_exists(&name).await?;
        let recorded: Option<Owner> = if exists {
            couch
                .get_document(&name, crate::plan::database::OWNER_DOC_ID)
                .await?
                .and_then(|d| d.get("owner").cloned())
                .and_then(|o| serde_json::from_value(o).ok())
        } else {
            None
        };
        let me =
            Owner { kind: "CouchDatabase".into(), namespace: namespace.into(), name: name_of(db), uid: String::new() };
        // Without the cluster there is no UID: a database recorded for a resource of the same
        // namespace and name counts as this one's.
        let ours = recorded.as_ref().is_some_and(|o| o.namespace == me.namespace && o.name == me.name);
        let me = Owner { uid: recorded.as_ref().filter(|_| ours).map(|o| o.uid.clone()).unwrap_or_default(), ..me };
        let intent = DatabaseIntent {
            me,
            name: name.clone(),
            create: crate::couch::CreateDatabase {
                q: db.spec.shards.as_ref().and_then(|s| s.count).and_then(|q| u32::try_from(q).ok()),
                n: db.spec.shards.as_ref().and_then(|s| s.copies).and_then(|n| u32::try_from(n).ok()),
                partitioned: db.spec.partitioned,
            },
            adopt: db.spec.adopt,
            // The dry run knows no CouchServer's trust: it shows what a trusted namespace gets.
            adopt_refused: None,
            previously_owned: ours,
            earlier_claimant: None,
            security: desired_security(&db.spec.security, &grants, db.spec.public),
        };
        let observed = ObservedDatabase {
            exists,
            owner: recorded.clone(),
            owner_alive: recorded.is_some() && !ours,
            security: if exists { Some(couch.security(&name).await?) } else { None },
        };
        match plan_database(&intent, &observed) {
            Err(refusal) => lines.push(format!("! CouchDatabase {}: {refusal}", name_of(db))),
            Ok(plan) if plan.steps.is_empty() => {
                lines.push(format!("= CouchDatabase {}: database {name} unchanged", name_of(db)))
            }
            Ok(plan) => {
                for step in plan.steps {
                    lines.push(match step {
                        DatabaseStep::Create(o) => format!(
                            "+ CouchDatabase {}: create database {name} (q={}, n={}, partitioned={})",
                            name_of(db),
                            o.q.map(|q| q.to_string()).unwrap_or_else(|| "default".into()),
                            o.n.map(|n| n.to_string()).unwrap_or_else(|| "default".into()),
                            o.partitioned
                        ),
                        DatabaseStep::RecordOwner(_) => {
                            format!("~ CouchDatabase {}: record the owner of {name}", name_of(db))
                        }
                        DatabaseStep::PutSecurity(s) => format!(
                            "~ CouchDatabase {}: _security of {name}: admins {:?} {:?}, members {:?} {:?}",
                            name_of(db),
                            s.admins.names,
                            s.admins.roles,
                            s.members.names,
                            s.members.roles
                        ),
                    });
                }
            }
        }
    }
    for user in &manifests.users {
        users::preview_user(couch, user, &mut lines).await?;
    }
    for grant in manifests.grants.iter().filter(|g| g.spec.database.couch_name.is_some()) {
        let Some(db) = grant.spec.database.couch_name.as_deref() else { continue };
        let entries: Vec<GrantEntries> = manifests
            .grants
            .iter()
            .filter(|g| g.spec.database.couch_name.as_deref() == Some(db))
            .map(|g| grant_entries(g, &manifests.users))
            .collect();
        match couch.security(db).await {
            Ok(actual) => match merge_unmanaged(&actual, &entries) {
                Some(s) => lines.push(format!(
                    "~ CouchGrant {}: _security of {db}: members {:?} {:?}, admins {:?} {:?}",
                    name_of(grant),
                    s.members.names,
                    s.members.roles,
                    s.admins.names,
                    s.admins.roles
                )),
                None => lines.push(format!("= CouchGrant {}: entries already in {db}", name_of(grant))),
            },
            Err(e) if e.is_not_found() => {
                lines.push(format!("! CouchGrant {}: database {db} does not exist", name_of(grant)))
            }
            Err(e) => return Err(e.into()),
        }
    }
    for share in &manifests.shares {
        share::preview_share(couch, &caps, manifests, share, &mut lines).await?;
    }
    Ok(lines)
}
