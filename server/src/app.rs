//! The running server: the [`Core`] the background tasks and the HTTP surface share,
//! built once from the settings; the background tasks (opening the store and loading the
//! first snapshot, then the refresh loop; metrics upkeep); and the order in which they
//! stop. [`crate::run`] strings these together with the HTTP surface ([`crate::http`]).

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{oneshot, Mutex};
use tokio::task::JoinHandle;

use crate::errors::{ServerError, SourceError};
use crate::live::detect::{start_watching, Trigger};
use crate::live::hub::Hub;
use crate::live::instances::Instances;
use crate::live::refresh::{backoff, RefreshLoop};
use crate::live::status::LiveStatus;
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::store::{Source, Store};

/// What the background tasks and the request handlers share. Nothing is loaded yet:
/// `store` is set by [`load_and_follow`] once the first snapshot is built. The HTTP
/// surface keeps its own state (tokens, webhook budget, rate limits) around an `Arc` of
/// this, so the tasks here never see HTTP types.
#[derive(Debug, Default)]
pub(crate) struct Core {
    /// Set once the first snapshot is loaded.
    pub(crate) store: OnceLock<Arc<Store>>,
    /// WebSocket subscriptions and fan-out.
    pub(crate) hub: Arc<Hub>,
    /// Pokes the refresh loop (webhooks, damage found while reading).
    pub(crate) trigger: Arc<Trigger>,
    /// What the refresh loop last did, for `/v1/status`.
    pub(crate) live_status: Arc<LiveStatus>,
    /// This server's Prometheus metrics (`GET /metrics`, [`crate::metrics`]).
    pub(crate) metrics: Arc<Metrics>,
    /// Which instance holds which config (`GET /v1/instances`).
    pub(crate) instances: Arc<Instances>,
}

impl Core {
    pub(crate) fn new(settings: &Settings) -> Arc<Core> {
        let core = Core {
            hub: Arc::new(Hub::new(settings.live.clone())),
            instances: Arc::new(Instances::new(
                settings.live.instance_ttl,
                settings.live.max_instances,
            )),
            ..Core::default()
        };
        core.live_status
            .init(settings.poll, opens_a_remote(settings));
        Arc::new(core)
    }
}

/// A remote that cannot be reached is not fatal: without a clone to start from, the
/// server stays up (not ready, saying why) and tries again with backoff. A local
/// repository or directory that cannot be opened is a mistake in the settings.
fn opens_a_remote(settings: &Settings) -> bool {
    !settings.dev && crate::source::git::is_remote(&settings.repo)
}

/// Tasks that only keep things tidy, for the life of the server.
pub(crate) fn spawn_upkeep(core: &Arc<Core>) {
    tokio::spawn(core.metrics.clone().run_upkeep(core.hub.shutdown_signal()));
    // Instances last heard of over HTTP longer than the TTL ago leave the listing.
    let core = core.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tokio::select! {
                () = core.hub.shutdown_signal() => break,
                _ = tick.tick() => core.instances.prune(),
            }
        }
    });
}

/// Open the store, then follow the source until shutdown. A fatal error (the source
/// cannot be opened and retrying would not help) goes to `fatal`, which stops the server.
pub(crate) fn spawn_load_and_follow(
    core: Arc<Core>,
    settings: Settings,
    fatal: oneshot::Sender<ServerError>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        match open_store(&core, &settings).await {
            Ok(Some(store)) => follow(core, store, settings).await,
            Ok(None) => {}
            Err(e) => {
                let _ = fatal.send(e);
            }
        }
    })
}

/// Open the store on a blocking thread, retrying a remote with backoff. `None`: the
/// server stopped first.
async fn open_store(core: &Core, settings: &Settings) -> Result<Option<Arc<Store>>, ServerError> {
    let retry = opens_a_remote(settings);
    let mut attempts: u32 = 0;
    loop {
        let open_settings = settings.clone();
        let opened = tokio::select! {
            opened = tokio::task::spawn_blocking(move || Store::open(&open_settings)) => opened,
            () = core.hub.shutdown_signal() => return Ok(None),
        };
        let e = match opened {
            Ok(Ok(store)) => return Ok(Some(Arc::new(store))),
            Ok(Err(e)) if retry => e,
            Ok(Err(e)) => return Err(e.into()),
            Err(e) => return Err(SourceError::Task(e.to_string()).into()),
        };
        attempts = attempts.saturating_add(1);
        let wait = backoff(settings.live.fetch_retry, settings.poll, attempts);
        tracing::warn!(error = %e, attempts, retry_in = ?wait, "cannot open the repository yet; not ready, retrying");
        core.live_status
            .record_start_failed(&e.to_string(), attempts, wait);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = core.hub.shutdown_signal() => return Ok(None),
        }
    }
}

/// Serve `store` (the server is ready from here) and run the refresh loop on it.
async fn follow(core: Arc<Core>, store: Arc<Store>, settings: Settings) {
    if let Source::Git(git) = store.source() {
        let trigger = core.trigger.clone();
        git.on_damage(move || trigger.request_refresh());
    }
    // Watch before declaring readiness, so no change made after `/readyz`
    // answers can be missed; then look once for one made while opening.
    let _watching = start_watching(
        &store,
        &core.trigger,
        &core.live_status,
        settings.live.debounce,
    )
    .await;
    core.trigger.request_refresh();
    let _ = core.store.set(store.clone());
    RefreshLoop::new(
        store,
        core.hub.clone(),
        core.trigger.clone(),
        core.live_status.clone(),
        &settings,
        core.metrics.clone(),
        core.instances.clone(),
    )
    .run()
    .await;
}

/// What stops the accept loop: the caller's `shutdown`, or a fatal error of the
/// background task (kept in the returned slot for [`crate::run`] to return). Either
/// way the hub is shut down first: upgraded WebSocket connections are not tracked by
/// graceful shutdown, so they (and the refresh loop) are closed here.
pub(crate) fn stop_signal(
    shutdown: impl Future<Output = ()> + Send + 'static,
    fatal: oneshot::Receiver<ServerError>,
    hub: Arc<Hub>,
) -> (
    impl Future<Output = ()> + Send + 'static,
    Arc<Mutex<Option<ServerError>>>,
) {
    let slot = Arc::new(Mutex::new(None));
    let fatal_slot = slot.clone();
    let stop = async move {
        tokio::select! {
            () = shutdown => {}
            Ok(e) = fatal => {
                *fatal_slot.lock().await = Some(e);
            }
        }
        hub.shutdown();
    };
    (stop, slot)
}

/// After the accept loop ends: close the WebSockets, and give the background task a
/// moment (it leaves at once on shutdown; only a clone still in progress can hold it).
pub(crate) async fn wind_down(hub: &Hub, background: JoinHandle<()>) {
    hub.shutdown();
    hub.wait_closed(Duration::from_secs(3)).await;
    let _ = tokio::time::timeout(Duration::from_secs(3), background).await;
}
