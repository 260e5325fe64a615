//! One lifecycle for the long-running processes (scheduler, worker, serve): a
//! [`Shutdown`] request that SIGTERM and Ctrl-C set alike, that every loop and every
//! wait of the process watches, so a stop finishes the work in flight, checkpoints,
//! releases its leases and returns, and the binary then flushes the traces.

/// A shutdown request shared by a process's tasks.
#[derive(Debug, Default)]
pub struct Shutdown {
    pub(crate) flag: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Shutdown {
    pub fn request(&self) {
        self.flag.store(true, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn requested(&self) -> bool {
        self.flag.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub async fn wait(&self) {
        let notified = self.notify.notified();
        if self.requested() {
            return;
        }
        notified.await;
    }

    /// Runs `work` unless a stop is requested first (`None` then): for start-up steps
    /// and waits that have nothing to finish.
    pub async fn unless_stopped<T>(&self, work: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::select! {
            t = work => Some(t),
            _ = self.wait() => None,
        }
    }
}
