//! What the console's open pages hear of (ARCHITECTURE.md §10): the pairs whose config,
//! error, rollout or instances changed. Sent by the refresh loop once per new version
//! and by sessions when an instance answers; free when no console page is open (no
//! receiver, nothing built). Each page's stream (`/ui/events`) batches what it hears
//! and keeps only the pairs its viewer may read.

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
}

impl Default for ConsoleEvents {
    fn default() -> Self {
        ConsoleEvents {
            tx: broadcast::channel(BACKLOG).0,
        }
    }
}

impl ConsoleEvents {
    /// The pairs `pairs` gives changed; it is called only when a page listens.
    pub(crate) fn changed(&self, pairs: impl FnOnce() -> Vec<PairKey>) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(Arc::new(pairs()));
        }
    }

    /// A page's stream of changes.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Changed> {
        self.tx.subscribe()
    }
}
