//! The channels by which one part of the operator requeues objects of a kind from outside that
//! kind's watch: a reconciler waking another kind's objects, a trigger waking its kind. The
//! context holds the senders; the receivers feed each kind's `Controller` (see `wiring`). They
//! are defined here, not in the context or in a trigger, so that the triggers the context
//! holds need neither.

use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc::UnboundedSender;

use crate::api::{CouchDatabase, CouchGrant, CouchServer, CouchShare, CouchUser};

/// Where a server's drift follower asks for the server to be looked at again.
pub type ServerTrigger = UnboundedSender<ObjectRef<CouchServer>>;

/// Where database events turn into reconcile requests.
pub type DatabaseTrigger = UnboundedSender<ObjectRef<CouchDatabase>>;

/// Where a database reconciler asks for its grants to be looked at again.
pub type GrantTrigger = UnboundedSender<ObjectRef<CouchGrant>>;

/// Where a database reconciler asks for the shares it just let in to be looked at again.
pub type ShareTrigger = UnboundedSender<ObjectRef<CouchShare>>;

/// Where a server reconciler asks for the users waiting on it to be looked at again.
pub type UserTrigger = UnboundedSender<ObjectRef<CouchUser>>;

/// Channels by which one controller requeues another's objects.
#[derive(Default)]
pub struct Triggers {
    /// To the CouchServer controller.
    pub servers: Option<ServerTrigger>,
    /// To the CouchDatabase controller.
    pub databases: Option<DatabaseTrigger>,
    /// To the CouchGrant controller.
    pub grants: Option<GrantTrigger>,
    /// To the CouchShare controller.
    pub shares: Option<ShareTrigger>,
    /// To the CouchUser controller.
    pub users: Option<UserTrigger>,
}
