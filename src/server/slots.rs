//! The table of open connections that `--web.max-connections` bounds.
//!
//! A connection is *serving* while it answers an authorized request, and waiting otherwise:
//! in its TLS handshake, sending headers, being authenticated, or idle between requests. When
//! the table is full, a newcomer closes the connection that has been waiting the longest, so
//! clients that connect and send nothing (or trickle bytes, or hammer wrong passwords) cannot
//! keep a scraper out, and the daemon holds no more than the limit. Only when every connection
//! is serving does a newcomer wait, unread, until one has answered; accepting stops meanwhile,
//! so later ones wait in the kernel's accept queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{watch, Notify};
use tokio::task::AbortHandle;
use tracing::debug;

/// The open connections.
pub(super) struct Slots {
    max: usize,
    table: Mutex<Table>,
    /// Signalled when a connection closes or stops serving.
    freed: Notify,
}

#[derive(Default)]
struct Table {
    next: u64,
    open: HashMap<u64, Entry>,
}

struct Entry {
    serving: bool,
    /// When it started waiting.
    since: Instant,
    /// Closes it; unset for the moment between its registration and its task's start, during
    /// which it cannot be chosen to make room.
    abort: Option<AbortHandle>,
}

/// A connection's place in [`Slots`], given up when its task ends (or is aborted).
pub(super) struct Slot {
    id: u64,
    slots: Arc<Slots>,
}

/// Marks a connection as serving until dropped.
pub(super) struct Serving(Arc<Slot>);

impl Slots {
    /// A table of at most `max` connections (at least one).
    pub(super) fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots { max: max.max(1), table: Mutex::default(), freed: Notify::new() })
    }

    /// Registers a new connection and starts it with `spawn`, making room first if the table
    /// is full; false if shutdown came first.
    pub(super) async fn admit(
        self: &Arc<Self>,
        shutdown: &mut watch::Receiver<bool>,
        spawn: impl FnOnce(Arc<Slot>) -> AbortHandle,
    ) -> bool {
        let slot = loop {
            if let Some(slot) = self.register() {
                break slot;
            }
            tokio::select! {
                _ = self.freed.notified() => {}
                _ = crate::shutdown::stopped(shutdown) => return false,
            }
        };
        let id = slot.id;
        let abort = spawn(slot);
        // The task may already be over (and its entry gone); then there is nothing to set.
        if let Some(entry) = self.table.lock().expect("connection table lock").open.get_mut(&id) {
            entry.abort = Some(abort);
        }
        true
    }

    fn register(self: &Arc<Self>) -> Option<Arc<Slot>> {
        let mut table = self.table.lock().expect("connection table lock");
        if table.open.len() >= self.max {
            let longest_waiting = table
                .open
                .iter()
                .filter(|(_, entry)| !entry.serving && entry.abort.is_some())
                .min_by_key(|(_, entry)| entry.since)
                .map(|(id, _)| *id)?;
            let entry = table.open.remove(&longest_waiting).expect("just found");
            entry.abort.expect("only started connections are chosen").abort();
            debug!(limit = self.max, "connection limit reached: closed the one waiting longest");
        }
        let id = table.next;
        table.next += 1;
        table.open.insert(id, Entry { serving: false, since: Instant::now(), abort: None });
        Some(Arc::new(Slot { id, slots: self.clone() }))
    }

    fn set_serving(&self, id: u64, serving: bool) {
        if let Some(entry) = self.table.lock().expect("connection table lock").open.get_mut(&id) {
            entry.serving = serving;
            entry.since = Instant::now();
        }
        if !serving {
            self.freed.notify_one();
        }
    }
}

impl Slot {
    /// Marks the connection as answering a request, so that it is not closed to make room.
    pub(super) fn serving(self: &Arc<Self>) -> Serving {
        self.slots.set_serving(self.id, true);
        Serving(self.clone())
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.slots.set_serving(self.0.id, false);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.table.lock().expect("connection table lock").open.remove(&self.id);
        self.slots.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use tokio::task::JoinSet;

    use super::*;

    #[tokio::test]
    async fn a_full_table_closes_the_connection_waiting_longest() {
        let slots = Slots::new(2);
        let (_stop, mut shutdown) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut given = None;
            let spawn = |slot: Arc<Slot>| {
                given = Some(slot.clone());
                tasks.spawn(async move {
                    let _slot = slot;
                    std::future::pending::<()>().await
                })
            };
            assert!(slots.admit(&mut shutdown, spawn).await);
            held.push(given.unwrap());
        }
        let open = || slots.table.lock().unwrap().open.keys().copied().collect::<Vec<_>>();
        let _serving = held[1].serving();
        // Full: the first connection, waiting since it was opened, makes room; the second, which
        // is answering a request, stays.
        assert!(slots.admit(&mut shutdown, |slot| tasks.spawn(async move { drop(slot) })).await);
        let open = open();
        assert!(!open.contains(&held[0].id) && open.contains(&held[1].id), "{open:?}");
        let (first, second) = (tasks.join_next().await.unwrap(), tasks.join_next().await.unwrap());
        let cancelled = [first, second].iter().filter(|r| r.as_ref().is_err_and(|e| e.is_cancelled())).count();
        assert_eq!(cancelled, 1, "the newcomer ran, the waiting one was closed");
    }
}
