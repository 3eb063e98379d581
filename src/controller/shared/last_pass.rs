//! What each object's last pass in this process wrote, ahead of the object's store. The stores
//! lag a status write by its watch event, so a trigger that compared with the stored status
//! right after a pass would find it behind and wake the object for nothing. The grants
//! ([`super::grant_passes`]) and the shares' replications (`triggers::shown`) keep one each.
//! Apart from the code that uses the context, so that the context can hold them.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use kube::Resource;
use kube::runtime::reflector::ObjectRef;

/// Per object of kind `K`: what its last pass recorded (`T`). Cheap to clone: the clones share
/// one map.
pub(crate) struct LastPasses<K: Resource, T>(Arc<Mutex<HashMap<ObjectRef<K>, T>>>);

impl<K: Resource, T> Default for LastPasses<K, T> {
    fn default() -> Self {
        LastPasses(Arc::default())
    }
}

impl<K: Resource, T> Clone for LastPasses<K, T> {
    fn clone(&self) -> Self {
        LastPasses(self.0.clone())
    }
}

impl<K, T> LastPasses<K, T>
where
    K: Resource<DynamicType = ()>,
    ObjectRef<K>: Hash + Eq,
    T: Clone,
{
    /// Records what the pass that just wrote `obj`'s status left (`None`: a pass that failed,
    /// or the object's deletion; the store is asked again).
    pub(crate) fn record(&self, obj: &K, pass: Option<T>) {
        let mut passes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let key = ObjectRef::from_obj(obj);
        match pass {
            Some(p) => passes.insert(key, p),
            None => passes.remove(&key),
        };
    }

    /// What the last pass of the object `key` names recorded, if one did in this process.
    pub(crate) fn get(&self, key: &ObjectRef<K>) -> Option<T> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }
}
