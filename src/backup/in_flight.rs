//! Requests running on their own, answered in the order they were started: a backup keeps a
//! few `_bulk_get` reads in flight and a restore a few `_bulk_docs` writes, so that CouchDB
//! works on the next while this process handles the last (couchbackup and couchrestore keep 5).

use std::collections::VecDeque;
use std::future::Future;

use tokio::task::JoinHandle;

/// Requests in flight at once: memory holds at most this many answers (or batches) besides the
/// one being handled.
pub(super) const IN_FLIGHT: usize = 4;

/// Tasks answered in order; those still running when this is dropped (a failed backup or
/// restore) are aborted.
pub(super) struct InFlight<T>(VecDeque<JoinHandle<T>>);

impl<T: Send + 'static> InFlight<T> {
    pub(super) fn new() -> Self {
        InFlight(VecDeque::new())
    }

    /// Starts `task`, after waiting for the oldest when [`IN_FLIGHT`] already run; returns
    /// the oldest's answer then.
    pub(super) async fn start(&mut self, task: impl Future<Output = T> + Send + 'static) -> Option<T> {
        let oldest = if self.0.len() >= IN_FLIGHT { self.next().await } else { None };
        self.0.push_back(tokio::spawn(task));
        oldest
    }

    /// The answer of the oldest task; `None` when none runs.
    pub(super) async fn next(&mut self) -> Option<T> {
        let task = self.0.pop_front()?;
        match task.await {
            Ok(answer) => Some(answer),
            // The task panicked (a bug): the panic goes on here. Nothing else aborts one while
            // this holds it.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

impl<T> Drop for InFlight<T> {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn answers_come_in_the_order_started_and_at_most_four_run() {
        let mut tasks = InFlight::new();
        let mut answers = Vec::new();
        for i in 0..6u64 {
            // Later tasks finish first: the order is still the starting order.
            let task = async move {
                tokio::time::sleep(Duration::from_millis(60 - i * 10)).await;
                i
            };
            if let Some(a) = tasks.start(task).await {
                answers.push(a);
            }
            assert!(tasks.0.len() <= IN_FLIGHT);
        }
        while let Some(a) = tasks.next().await {
            answers.push(a);
        }
        assert_eq!(answers, [0, 1, 2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn dropping_aborts_what_still_runs() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let mut tasks = InFlight::new();
        tasks
            .start(async move {
                tokio::time::sleep(Duration::from_secs(30)).await;
                let _ = tx.send(()).await;
            })
            .await;
        drop(tasks);
        assert_eq!(rx.recv().await, None, "the task was aborted: its sender is gone without sending");
    }
}
