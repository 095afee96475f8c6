//! Graceful shutdown: after SIGTERM the service drains — requests in flight finish, new API
//! requests are refused with 503 `shutting_down` (and `Retry-After`, so that clients go to
//! another instance), `/api/status` says `"ready": false` — and the listener closes once
//! nothing is in flight (or at the drain deadline).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Whether the service is draining, and how many API requests are in flight.
#[derive(Default)]
pub struct Lifecycle {
    draining: AtomicBool,
    active: AtomicUsize,
    idle: Notify,
}

/// One admitted API request; dropping it ends the request.
pub struct Active<'a>(&'a Lifecycle);

impl Lifecycle {
    /// Admits a request, or `None` once draining.
    pub fn begin(&self) -> Option<Active<'_>> {
        self.active.fetch_add(1, Ordering::SeqCst);
        if self.draining.load(Ordering::SeqCst) {
            self.end();
            return None;
        }
        Some(Active(self))
    }

    /// Starts draining: from now on `begin` refuses.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// API requests in flight.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Resolves once no request is in flight.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.active() == 0 {
                return;
            }
            notified.await;
        }
    }

    fn end(&self) {
        if self.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn draining_refuses_new_requests_and_idle_waits_for_the_last_one() {
        let life = std::sync::Arc::new(Lifecycle::default());
        let first = life.begin().expect("admitted before draining");
        life.drain();
        assert!(life.begin().is_none());
        assert_eq!(life.active(), 1);
        let waiter = {
            let life = std::sync::Arc::clone(&life);
            tokio::spawn(async move { life.idle().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(first);
        waiter.await.unwrap();
        assert_eq!(life.active(), 0);
    }
}
