//! Thread pools of their own for blocking and CPU-heavy work.
//!
//! The runtime's blocking pool runs the embedded database's statements and file I/O. Work
//! that only blocks or computes (a handler that sleeps, a hash computed a million times)
//! runs here instead, on a fixed number of threads with a bounded queue, so however much
//! of it arrives, queries and downloads never wait behind it: past the queue, the caller
//! is told the server is busy ([`PoolBusy`], a 503) at once.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

type Task = Box<dyn FnOnce() + Send>;

/// The pool's queue is full (or its threads are gone): try again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server is busy; try again")]
pub struct PoolBusy;

/// A fixed set of threads and a bounded queue. Cheap to clone; the threads end when the
/// last clone is dropped.
#[derive(Clone)]
pub struct BlockingPool {
    tx: SyncSender<Task>,
}

impl BlockingPool {
    /// `threads` threads named `{name}-N`, with room for `queue` waiting tasks.
    pub fn new(name: &str, threads: usize, queue: usize) -> Self {
        let (tx, rx) = sync_channel::<Task>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || worker(&rx))
                .expect("a pool thread starts");
        }
        Self { tx }
    }

    /// Runs `f` on a pool thread and awaits its result; [`PoolBusy`] at once when the
    /// queue is full.
    pub async fn run<T, F>(&self, f: F) -> Result<T, PoolBusy>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        let task: Task = Box::new(move || {
            let _ = done.send(f());
        });
        match self.tx.try_send(task) {
            Ok(()) => result.await.map_err(|_| PoolBusy),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(PoolBusy),
        }
    }
}

fn worker(rx: &Mutex<Receiver<Task>>) {
    loop {
        let task = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        match task {
            // A task that panics loses its own result only; the thread goes on.
            Ok(task) => {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(task));
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn work_runs_and_a_full_queue_is_refused_at_once() {
        let pool = BlockingPool::new("test-pool", 1, 1);
        assert_eq!(pool.run(|| 6 * 7).await, Ok(42));
        // Hold the only thread, fill the only queue slot: the next task is refused.
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let (started, running) = std::sync::mpsc::channel::<()>();
        let busy = pool.run(move || {
            started.send(()).unwrap();
            hold.recv().unwrap();
        });
        tokio::pin!(busy);
        assert!(futures_util::FutureExt::now_or_never(busy.as_mut()).is_none());
        running.recv().unwrap();
        // Polled once, the second task takes the queue's slot and waits for its result.
        let queued = pool.run(|| 1);
        tokio::pin!(queued);
        assert!(futures_util::FutureExt::now_or_never(queued.as_mut()).is_none());
        assert_eq!(pool.run(|| 2).await, Err(PoolBusy));
        release.send(()).unwrap();
        assert_eq!(busy.await, Ok(()));
        assert_eq!(queued.await, Ok(1));
    }

    #[actix_rt::test]
    async fn a_panicking_task_loses_only_its_result() {
        let pool = BlockingPool::new("test-panic", 1, 4);
        assert_eq!(pool.run(|| panic!("boom")).await, Err::<(), _>(PoolBusy));
        assert_eq!(pool.run(|| 1).await, Ok(1));
    }
}
