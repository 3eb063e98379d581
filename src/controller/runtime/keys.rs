//! The key of a CouchServer in the operator's maps and comparisons.

use std::fmt;

use kube::{Resource, ResourceExt};

use crate::api::{CouchServer, ServerRef};

/// A CouchServer by namespace and name; displayed as `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerKey {
    /// The CouchServer's namespace.
    pub namespace: String,
    /// The CouchServer's name.
    pub name: String,
}

impl ServerKey {
    /// The key of `namespace`/`name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ServerKey { namespace: namespace.into(), name: name.into() }
    }

    /// The key of a CouchServer resource.
    pub fn of(server: &CouchServer) -> Self {
        ServerKey::new(server.namespace().unwrap_or_default(), server.name_any())
    }

    /// The key of the server `reference` points to, from `obj` (whose namespace is the default).
    pub fn referenced<K: Resource>(obj: &K, reference: &ServerRef) -> Self {
        let ns = reference.namespace.clone().unwrap_or_else(|| obj.meta().namespace.clone().unwrap_or_default());
        ServerKey::new(ns, reference.name.clone())
    }

    /// A reference to this server, from any namespace.
    pub fn to_ref(&self) -> ServerRef {
        ServerRef { name: self.name.clone(), namespace: Some(self.namespace.clone()) }
    }
}

impl fmt::Display for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_as_namespace_slash_name_and_orders_by_namespace_first() {
        let a = ServerKey::new("a", "z");
        let b = ServerKey::new("b", "a");
        assert_eq!(a.to_string(), "a/z");
        assert!(a < b);
        assert_eq!(a.to_ref().namespace.as_deref(), Some("a"));
    }
}
