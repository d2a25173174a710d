//! What the console's open pages hear of (ARCHITECTURE.md §10): the pairs whose config,
//! error, rollout or instances changed. Sent by the refresh loop once per new version
//! and by sessions when an instance answers; free when no console page is open (one
//! atomic load, nothing built, no lock). Each page's stream (`/ui/events`) batches
//! what it hears and keeps only the pairs its viewer may read.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::broadcast;

use super::hub::PairKey;

/// Batches queued for slow pages; a page further behind is told that everything changed.
const BACKLOG: usize = 256;

/// The pairs one event is about.
pub(crate) type Changed = Arc<Vec<PairKey>>;

#[derive(Debug)]
pub(crate) struct ConsoleEvents {
    tx: broadcast::Sender<Changed>,
    /// Open pages, counted here: the channel's own count takes its lock, and every
    /// instance's answer asks.
    listening: Arc<AtomicUsize>,
}

impl Default for ConsoleEvents {
    fn default() -> Self {
        ConsoleEvents {
            tx: broadcast::channel(BACKLOG).0,
            listening: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// One open page's stream of changes; it stops being counted when dropped.
#[derive(Debug)]
pub(crate) struct Listener {
    pub(crate) rx: broadcast::Receiver<Changed>,
    listening: Arc<AtomicUsize>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.listening.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConsoleEvents {
    /// The pairs `pairs` gives changed; it is called only when a page listens.
    pub(crate) fn changed(&self, pairs: impl FnOnce() -> Vec<PairKey>) {
        if self.listening.load(Ordering::Relaxed) > 0 {
            let _ = self.tx.send(Arc::new(pairs()));
        }
    }

    /// A page's stream of changes.
    pub(crate) fn subscribe(&self) -> Listener {
        self.listening.fetch_add(1, Ordering::Relaxed);
        Listener {
            rx: self.tx.subscribe(),
            listening: self.listening.clone(),
        }
    }
}
