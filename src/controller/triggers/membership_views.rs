//! What each clustered CouchServer's last pass planned from, for its membership watch (see
//! `membership`). Apart from the watch, so that the context can hold it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::controller::runtime::keys::ServerKey;
use crate::plan::cluster::MembershipView;

/// The membership each clustered server's last pass planned from.
#[derive(Default)]
pub struct MembershipWatch {
    pub(super) planned: Arc<Mutex<HashMap<ServerKey, MembershipView>>>,
}

impl MembershipWatch {
    /// Records what a pass of `server` planned from (`None`: a single node, nothing to watch).
    pub fn planned(&self, server: &ServerKey, view: Option<MembershipView>) {
        let mut planned = self.planned.lock().unwrap_or_else(|e| e.into_inner());
        match view {
            Some(v) => planned.insert(server.clone(), v),
            None => planned.remove(server),
        };
    }

    pub(super) fn view(
        planned: &Mutex<HashMap<ServerKey, MembershipView>>,
        server: &ServerKey,
    ) -> Option<MembershipView> {
        planned.lock().unwrap_or_else(|e| e.into_inner()).get(server).cloned()
    }
}
