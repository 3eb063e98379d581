//! The one retry backoff of the operator's own loops: exponential from a base, capped, with
//! ±20% jitter. The reconcile error policy counts failures per object with [`Backoff`]; the
//! per-server feed followers use [`delay`] directly. (The CouchDB client retries inside one call
//! with backon; that is a different loop, bounded to a couple of seconds.)

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;

/// The delay after the `n`-th consecutive failure (n ≥ 1): `base · 2ⁿ⁻¹`, at most `max`, ±20%.
pub fn delay(base: Duration, max: Duration, n: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << n.saturating_sub(1).min(16));
    jitter(exp.min(max), 0.2)
}

/// `d` ± `fraction`, uniformly.
pub fn jitter(d: Duration, fraction: f64) -> Duration {
    let factor = rand::rng().random_range((1.0 - fraction)..=(1.0 + fraction));
    d.mul_f64(factor)
}

/// Consecutive transient failures per object (by [`object_key`](super::context::object_key)).
/// An entry goes on success ([`reset`](Self::reset)) or when its object is gone
/// ([`prune`](Self::prune)).
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// A backoff from `base` up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff { base, max, failures: Mutex::default() }
    }

    /// Counts one more failure of `key` and returns the delay before its retry.
    pub fn next(&self, key: &str) -> Duration {
        let n = {
            let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            let n = failures.entry(key.to_string()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        delay(self.base, self.max, n)
    }

    /// Forgets the failures of `key` after a success.
    pub fn reset(&self, key: &str) {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    /// Forgets the failures of every object `exists` says is gone (deleted while failing).
    pub fn prune(&self, exists: impl Fn(&str) -> bool) {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).retain(|key, _| exists(key));
    }

    /// How many objects have failures counted.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_from_the_base_to_the_cap_and_a_success_starts_over() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let within =
            |d: Duration, ms: u64| d.as_millis() as f64 >= ms as f64 * 0.79 && d.as_millis() as f64 <= ms as f64 * 1.21;
        assert!(within(b.next("k"), 100));
        assert!(within(b.next("k"), 200));
        for _ in 0..10 {
            b.next("k");
        }
        assert!(within(b.next("k"), 1000));
        b.reset("k");
        assert!(within(b.next("k"), 100));
    }

    #[test]
    fn prune_forgets_the_objects_that_are_gone_and_keeps_the_rest() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        b.next("CouchDatabase/ns/gone");
        b.next("CouchDatabase/ns/kept");
        b.next("CouchDatabase/ns/kept");
        b.prune(|key| key.ends_with("/kept"));
        assert_eq!(b.len(), 1);
        // The one kept still counts its failures: its third is 400 ms ± 20%.
        assert!(b.next("CouchDatabase/ns/kept") >= Duration::from_millis(319));
    }
}
