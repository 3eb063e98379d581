//! The CouchDB client cache: one admin client per CouchServer, built from its URL, admin Secret
//! and CA, and reused while they stay the same (see `servers::connect`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::keys::ServerKey;
use crate::api::CouchServer;
use crate::couch::CouchClient;

/// A CouchServer and a client for it, with the admin's credentials.
#[derive(Clone)]
pub struct Connected {
    /// The CouchServer resource.
    pub server: Arc<CouchServer>,
    /// Admin client.
    pub couch: CouchClient,
}

/// A client and what it was built from.
struct Cached {
    /// A hash of URL, credentials and CA.
    fingerprint: [u8; 32],
    /// URL, server UID and the resourceVersions of its Secrets, when known: while they are the
    /// same, the client is reused without reading the Secrets again.
    versions: Option<String>,
    client: CouchClient,
}

/// The admin client of each CouchServer, and a client per remote endpoint a share names.
#[derive(Default)]
pub struct ClientCache {
    cached: Mutex<HashMap<ServerKey, Cached>>,
    /// By remote URL and username; the fingerprint covers the password.
    remotes: Mutex<HashMap<String, Cached>>,
}

impl ClientCache {
    /// The client of `server` if it was built from these Secret `versions`.
    pub fn by_versions(&self, server: &ServerKey, versions: &str) -> Option<CouchClient> {
        let cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        cached.get(server).filter(|c| c.versions.as_deref() == Some(versions)).map(|c| c.client.clone())
    }

    /// The client of `server` if it was built from the same URL, credentials and CA
    /// (`fingerprint`); it is then noted as built from `versions`.
    pub fn by_fingerprint(
        &self,
        server: &ServerKey,
        fingerprint: &[u8; 32],
        versions: &Option<String>,
    ) -> Option<CouchClient> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        let found = cached.get_mut(server).filter(|c| c.fingerprint == *fingerprint)?;
        found.versions.clone_from(versions);
        Some(found.client.clone())
    }

    /// The client of a remote endpoint (`key`: URL and username), if it was built with the same
    /// credentials (`fingerprint`); else `build()`s one and keeps it. A build error is returned.
    pub fn remote<E>(
        &self,
        key: &str,
        fingerprint: [u8; 32],
        build: impl FnOnce() -> Result<CouchClient, E>,
    ) -> Result<CouchClient, E> {
        let mut remotes = self.remotes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cached) = remotes.get(key).filter(|c| c.fingerprint == fingerprint) {
            return Ok(cached.client.clone());
        }
        let client = build()?;
        remotes.insert(key.to_string(), Cached { fingerprint, versions: None, client: client.clone() });
        Ok(client)
    }

    /// Keeps `client` as the one of `server`.
    pub fn insert(&self, server: ServerKey, fingerprint: [u8; 32], versions: Option<String>, client: CouchClient) {
        self.cached.lock().unwrap_or_else(|e| e.into_inner()).insert(server, Cached { fingerprint, versions, client });
    }
}
