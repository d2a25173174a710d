//! `/ui/events`: server-sent events telling an open page which of the pairs its viewer
//! may read changed (config, error, rollout, an instance's answer), so the page fetches
//! itself again: one stream per page, no polling. What the hub hears
//! ([`crate::live::events`]) is batched for [`BATCH`], so a fleet answering a push
//! costs a page one reload, and the stream ends when the server stops.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use tokio::sync::broadcast::error::RecvError;

use super::Viewer;
use crate::http::AppState;
use crate::live::events::Listener;
use crate::live::hub::PairKey;

/// How long changes are gathered before a page is told.
const BATCH: Duration = Duration::from_millis(250);

/// What a page is told: the pairs (visible to its viewer) that changed, or that it
/// fell behind and should assume everything did.
#[derive(serde::Serialize)]
struct Change<'a> {
    pairs: Vec<[&'a str; 2]>,
    all: bool,
}

pub(super) async fn events(State(state): State<Arc<AppState>>, viewer: Viewer) -> Response {
    let listener = state.core.hub.console().subscribe();
    let shutdown = Box::pin(state.core.hub.shutdown_signal());
    let stream = changes(state, viewer, listener, shutdown);
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn changes(
    state: Arc<AppState>,
    viewer: Viewer,
    listener: Listener,
    shutdown: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(
        (state, viewer, listener, shutdown),
        |(state, viewer, mut listener, mut shutdown)| async move {
            // Wait for the first change, then gather until BATCH after it.
            let mut seen: BTreeSet<PairKey> = BTreeSet::new();
            let mut all = false;
            let mut until: Option<tokio::time::Instant> = None;
            loop {
                let sleep =
                    tokio::time::sleep_until(until.unwrap_or_else(tokio::time::Instant::now));
                tokio::select! {
                    () = &mut shutdown => return None,
                    () = sleep, if until.is_some() => break,
                    got = listener.rx.recv() => {
                        match got {
                            Ok(pairs) => seen.extend(pairs.iter().cloned()),
                            Err(RecvError::Lagged(_)) => all = true,
                            Err(RecvError::Closed) => return None,
                        }
                        until.get_or_insert_with(|| tokio::time::Instant::now() + BATCH);
                    }
                }
            }
            let event = state.core.store.get().and_then(|store| {
                let snap = store.snapshot();
                let pairs: Vec<[&str; 2]> = seen
                    .iter()
                    .filter(|(s, e)| snap.may_read(&viewer.principal, s, e).is_ok())
                    .map(|(s, e)| [s.as_str(), e.as_str()])
                    .collect();
                if pairs.is_empty() && !all {
                    return None;
                }
                let data = serde_json::to_string(&Change { pairs, all }).ok()?;
                Some(Event::default().event("change").data(data))
            });
            // Nothing this viewer may see: a keep-alive comment instead of an event.
            let event = event.unwrap_or_else(|| Event::default().comment(""));
            Some((Ok(event), (state, viewer, listener, shutdown)))
        },
    )
}
