//! A CouchDB HTTP client: typed calls, typed errors, retries. Knows nothing of Kubernetes.
