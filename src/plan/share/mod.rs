//! What to do for one CouchShare: its replication documents (one per direction, or per fan-in
//! source), its sharing document, its scoped replication user's name, and its summary state.
//!
//! [`plan_share`] decides a whole pass from the share's intent and what was observed on CouchDB;
//! the submodules are its parts.

use serde_json::{Value, json};

use crate::plan::ownership::Owner;

mod documents;
mod ids;
mod intent;
mod pass;
mod refs;
mod selector;
mod sharing;
mod state;

pub use documents::*;
pub use ids::*;
pub use intent::*;
pub use pass::*;
pub use refs::*;
pub use selector::*;
pub use sharing::*;
pub use state::*;

/// Field recording, in replication documents, sharing documents and scoped users, which CouchShare wrote them.
pub const SHARE_FIELD: &str = "couchshare.io/share";
/// Field in replication documents holding the fingerprint of the spec they were written from.
pub const SPEC_HASH_FIELD: &str = "couchshare.io/spec-hash";

/// Which way a replication runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Source → target.
    Forward,
    /// Target → source (`TwoWay` only).
    Backward,
}

impl Direction {
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Direction::Forward => "fwd",
            Direction::Backward => "back",
        }
    }
}

fn owner_json(owner: &Owner) -> Value {
    json!({ "kind": owner.kind, "namespace": owner.namespace, "name": owner.name, "uid": owner.uid })
}

/// The owner recorded in a document's [`SHARE_FIELD`], if it is well formed.
fn recorded_owner(doc: &Value) -> Option<Owner> {
    serde_json::from_value(doc.get(SHARE_FIELD)?.clone()).ok()
}
