//! Every type that crosses the network between a confhub server and its clients.
//!
//! The server serializes these and the client deserializes them, so the two can
//! never drift apart: change a field here and both sides change with it. The rules
//! that decide what a request may name ([`names`]) and how a key names a value in a
//! config ([`keys`]) cross the network too, and are defined here once for both sides.

pub mod instance;
pub mod keys;
pub mod names;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Body of `GET /v1/config/{service}/{env}` (ARCHITECTURE.md §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigResponse {
    /// The service asked for.
    pub service: String,
    /// The environment(s) asked for, as written in the request (`prod` or `prod,eu`).
    pub env: String,
    /// The label the config was read at (branch, tag or sha).
    pub label: String,
    /// The commit sha (or, for `--dev` directories, the content hash).
    pub version: String,
    /// sha256 of the canonical JSON of `values`; also the HTTP `ETag`.
    pub digest: String,
    /// The resolved, nested configuration.
    pub values: Value,
    /// The files that contributed, highest precedence first.
    pub sources: Vec<String>,
    /// The rollout this config comes from, when the caller is an instance in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<String>,
}

/// One service of `GET /v1/services`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// Service name, as in `{service}.yml`.
    pub name: String,
    /// Environments this service is resolved for in the tracked snapshot.
    pub envs: Vec<String>,
}

/// Body of `GET /v1/services`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicesResponse {
    /// The tracked label (branch) the listing comes from.
    pub label: String,
    /// Commit sha (or content hash) of the snapshot.
    pub version: String,
    /// Known environments: declared in `confhub.yml`, else found as `application-{env}` files.
    pub environments: Vec<String>,
    /// Every service found in the repository, sorted by name.
    pub services: Vec<ServiceInfo>,
}

/// JSON body of every error response: `{"error": code, "message": what and where}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code (`bad_name`, `unknown_service`, `unknown_label`, `unresolvable`, …).
    pub error: String,
    /// Human-readable message naming what was wrong and where.
    pub message: String,
    /// The repository file at fault, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// 1-based line in `file`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// The config key at fault (dotted path), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A pair whose latest resolution failed, as reported by `/readyz` and `/v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairError {
    /// Service of the failing pair.
    pub service: String,
    /// Environment of the failing pair.
    pub env: String,
    /// The commit (or content hash) at which resolution failed.
    pub version: String,
    /// The error, with file, line and key when known.
    #[serde(flatten)]
    pub error: ErrorBody,
}

/// Body of `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyResponse {
    /// `ready` or `starting`.
    pub status: String,
    /// Commit (or content hash) of the loaded snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Pairs that currently fail to resolve (they keep serving their last good config, if any).
    #[serde(default)]
    pub errors: Vec<PairError>,
    /// Why the server is not ready yet (e.g. the remote cannot be fetched and there is no
    /// clone to start from); it keeps retrying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Spring Cloud Config `Environment` (ARCHITECTURE.md §5), as returned by `GET /{name}/{profiles}[/{label}]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpringEnvironment {
    /// Application name.
    pub name: String,
    /// Profiles, in request order.
    pub profiles: Vec<String>,
    /// The label served.
    pub label: Option<String>,
    /// Commit sha.
    pub version: Option<String>,
    /// Always empty for git-backed config.
    pub state: Option<String>,
    /// Property sources, highest precedence first.
    pub property_sources: Vec<SpringPropertySource>,
}

/// One file of a Spring `Environment`: flat keys (`a.b.c`, `a.b[0]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpringPropertySource {
    /// `{repo uri}/{file}`.
    pub name: String,
    /// Flat key → value (or, in the v2 form, `{"value", "origin"}`).
    pub source: Map<String, Value>,
}

/// The `Accept` media type that selects Spring's v2 form (`{value, origin}` per key).
pub const SPRING_V2_MEDIA_TYPE: &str = "application/vnd.spring-cloud.config-server.v2+json";

/// Client → server frames on `GET /v1/watch` (ARCHITECTURE.md §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum ClientFrame {
    /// Start receiving `config` frames for a pair; `digest` is the last one seen, or null.
    Subscribe {
        /// Service name.
        service: String,
        /// Environment name.
        env: String,
        /// Digest of the config the client holds; a `config` frame follows at once if it differs.
        #[serde(default)]
        digest: Option<String>,
        /// Who the client is ([`instance::check_instance_id`]); without it the connection
        /// is an anonymous instance, known by its address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<String>,
        /// The instance's labels (`zone`, `canary`, the app's version), which rollouts
        /// select on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        labels: Option<instance::Labels>,
    },
    /// The client swapped in the config with this digest.
    Applied {
        /// Service name.
        service: String,
        /// Environment name.
        env: String,
        /// Digest of the config now in use.
        digest: String,
    },
    /// The client refused the config with this digest (it did not deserialize, or the
    /// app's validator said no) and keeps the one it had.
    Rejected {
        /// Service name.
        service: String,
        /// Environment name.
        env: String,
        /// Digest of the config refused.
        digest: String,
        /// Why, as the client saw it.
        error: String,
    },
    /// Stop receiving frames for a pair.
    Unsubscribe {
        /// Service name.
        service: String,
        /// Environment name.
        env: String,
    },
}

/// Server → client frames on `GET /v1/watch` (ARCHITECTURE.md §6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum ServerFrame {
    /// The current config of a pair.
    Config {
        /// Service name.
        service: String,
        /// Environment name.
        env: String,
        /// Commit sha (or content hash).
        version: String,
        /// Digest of `values`.
        digest: String,
        /// Resolved nested configuration.
        values: Value,
        /// The rollout this config comes from, when the instance is in one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rollout: Option<String>,
    },
    /// A subscription that cannot be served (forbidden, unknown or broken pair, bad frame).
    Error {
        /// Service name, when the frame named one.
        #[serde(default)]
        service: Option<String>,
        /// Environment name, when the frame named one.
        #[serde(default)]
        env: Option<String>,
        /// Stable machine-readable code.
        error: String,
        /// Human-readable message.
        message: String,
    },
}

/// Body of `GET /v1/status` (ARCHITECTURE.md §4): what the server tracks, how fresh it is, what
/// fails, and who listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    /// The tracked label (branch, or `dev` for `--dev` directories).
    pub label: String,
    /// Commit sha (or content hash) being served.
    pub version: String,
    /// `git` (local repository), `git-remote` (a clone that gets fetched) or `dir` (`--dev`).
    pub source: String,
    /// The repository, without credentials.
    pub uri: String,
    /// Seconds between fetches of a remote (and safety-net checks of local sources).
    pub poll_seconds: u64,
    /// Paths watched for changes (local repositories and `--dev` directories).
    #[serde(default)]
    pub watching: Vec<String>,
    /// Why watching failed, if it did (the poll timer still runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_error: Option<String>,
    /// The last refresh (rebuilding the snapshot when the branch moved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh: Option<RefreshStatus>,
    /// The last fetch of a remote (absent for local sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fetch: Option<FetchStatus>,
    /// Pairs that fail to resolve at `version` (they keep serving their last good config).
    #[serde(default)]
    pub errors: Vec<PairError>,
    /// WebSocket subscribers per pair.
    #[serde(default)]
    pub subscribers: Vec<SubscriberCount>,
    /// Open WebSocket connections.
    pub connections: u64,
    /// Webhook calls accepted (triggered a fetch) and rejected (bad or missing signature).
    pub webhooks: WebhookCounts,
    /// Health of the clone of a remote (absent for local sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone: Option<CloneStatus>,
}

/// The clone of a remote, in [`StatusResponse`]: verifications of its object store and
/// repairs (a fresh clone swapped in for a damaged one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloneStatus {
    /// Verifications run (at start, and after a read hit an unreadable object).
    pub verifications: u64,
    /// When the object store was last found intact (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified: Option<String>,
    /// Set while the clone is damaged and not repaired: what is unreadable, and why the repair failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub damaged: Option<String>,
    /// Successful repairs since start.
    pub repairs: u64,
    /// The last repair attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_repair: Option<RepairStatus>,
}

/// One repair of the clone, in [`CloneStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairStatus {
    /// When it ended (RFC 3339, UTC).
    pub at: String,
    /// Whether the fresh clone was swapped in.
    pub ok: bool,
    /// What was found damaged.
    pub reason: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    pub took_ms: u64,
}

/// The last refresh, in [`StatusResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshStatus {
    /// When it finished (RFC 3339, UTC).
    pub at: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    pub took_ms: u64,
    /// Pairs whose config changed in the last refresh that moved the version.
    pub changed: u64,
    /// Refreshes since start.
    pub count: u64,
}

/// Fetching a remote, in [`StatusResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchStatus {
    /// When the last fetch finished (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// Whether the last fetch succeeded.
    pub ok: bool,
    /// What went wrong in the last fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long the last fetch took, in milliseconds.
    pub took_ms: u64,
    /// When a fetch last succeeded (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
    /// Failed fetches in a row (retried with backoff).
    pub consecutive_failures: u32,
    /// When the next fetch is due (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_at: Option<String>,
    /// Fetches since start.
    pub count: u64,
}

/// Subscribers of one pair, in [`StatusResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriberCount {
    /// Service.
    pub service: String,
    /// Environment(s), as subscribed.
    pub env: String,
    /// Connections subscribed.
    pub subscribers: u64,
}

/// Webhook counters, in [`StatusResponse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WebhookCounts {
    /// Calls with a valid signature (each triggered a fetch).
    pub accepted: u64,
    /// Calls refused with 401.
    pub rejected: u64,
}

/// One commit that changed a pair's resolved config, in `GET /v1/history/{service}/{env}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Full commit sha.
    pub sha: String,
    /// Author name.
    pub author: String,
    /// Author email.
    pub email: String,
    /// Commit time, RFC 3339 in UTC.
    pub time: String,
    /// The commit message's first line.
    pub message: String,
    /// Flat keys (`db.pool`, `features[0]`) whose resolved value the commit added, removed or changed.
    pub changed_keys: Vec<String>,
}

/// Body of `GET /v1/history/{service}/{env}`: newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryResponse {
    /// Service.
    pub service: String,
    /// Environment(s).
    pub env: String,
    /// The branch whose history this is.
    pub label: String,
    /// Commits that changed the resolved config, newest first.
    pub entries: Vec<HistoryEntry>,
}

/// An old and a new value, in [`DiffResponse::changed`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValueChange {
    /// The value at `from`.
    pub old: Value,
    /// The value at `to`.
    pub new: Value,
}

/// Body of `GET /v1/diff/{service}/{env}?from=A&to=B`: the key-level difference of the
/// resolved configs, flat keys, encrypted values masked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffResponse {
    /// Service.
    pub service: String,
    /// Environment(s).
    pub env: String,
    /// The `from` label as asked.
    pub from: String,
    /// The `to` label as asked.
    pub to: String,
    /// Commit of `from`.
    pub from_version: String,
    /// Commit of `to`.
    pub to_version: String,
    /// Keys only in `to`.
    pub added: Map<String, Value>,
    /// Keys only in `from`.
    pub removed: Map<String, Value>,
    /// Keys in both with different values.
    pub changed: std::collections::BTreeMap<String, ValueChange>,
}

/// A parsed W3C Trace Context `traceparent` header, sent by clients and parsed by the
/// server to tie their logs together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    /// 2 lower-case hex digits, never `ff`.
    pub version: String,
    /// 32 lower-case hex digits, not all zero.
    pub trace_id: String,
    /// 16 lower-case hex digits, not all zero: the caller's span.
    pub parent_id: String,
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceParent {
    /// Parse `version-traceid-parentid-flags` per W3C Trace Context level 1: version
    /// `00` has exactly these four fields; a later version may append `-…` fields, which
    /// are ignored. `None` for anything invalid.
    pub fn parse(value: &str) -> Option<TraceParent> {
        let value = value.trim_matches(|c| c == ' ' || c == '\t');
        let head = value.get(..55)?;
        let rest = &value[55..];
        let mut parts = head.split('-');
        let (version, trace_id, parent_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some()
            || !is_lower_hex(version, 2)
            || !is_lower_hex(trace_id, 32)
            || !is_lower_hex(parent_id, 16)
            || !is_lower_hex(flags, 2)
            || version == "ff"
            || trace_id.bytes().all(|b| b == b'0')
            || parent_id.bytes().all(|b| b == b'0')
        {
            return None;
        }
        if version == "00" && !rest.is_empty() {
            return None;
        }
        if !rest.is_empty() && !rest.starts_with('-') {
            return None;
        }
        Some(TraceParent {
            version: version.to_string(),
            trace_id: trace_id.to_string(),
            parent_id: parent_id.to_string(),
            flags: u8::from_str_radix(flags, 16).ok()?,
        })
    }
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A fresh random request id: a UUID v4 in its usual text form.
pub fn new_request_id() -> String {
    let mut b = rand::random::<[u8; 16]>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Body of `GET /v1/instances` (ARCHITECTURE.md §6.2): the instances connected now, and
/// those that fetched over HTTP within `instance_ttl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstancesResponse {
    /// Sorted by id.
    pub instances: Vec<InstanceInfo>,
}

/// One instance, in [`InstancesResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// The id it sent, or, for an anonymous one, its address.
    pub id: String,
    /// Whether it sent no id (then `id` is its address).
    pub anonymous: bool,
    /// Its labels.
    pub labels: instance::Labels,
    /// The address it connects from (the last one, over HTTP).
    pub address: String,
    /// `websocket` while connected, else `http`.
    pub transport: String,
    /// When its WebSocket connection opened (RFC 3339), while connected.
    pub connected_since: Option<String>,
    /// When it was last heard from (RFC 3339).
    pub last_seen: String,
    /// What it holds, per pair it reads.
    pub pairs: Vec<InstancePair>,
}

/// What one instance holds of one pair, in [`InstanceInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstancePair {
    /// Service name.
    pub service: String,
    /// Environment(s), as the instance asked.
    pub env: String,
    /// Commit of the newest config sent to it.
    pub version: Option<String>,
    /// Digest of the newest config sent to it.
    pub digest: Option<String>,
    /// `sent` (pushed or served, no answer yet; HTTP fetches stay so), `applied` or
    /// `rejected`.
    pub state: String,
    /// Why it rejected the newest config (truncated).
    pub error: Option<String>,
    /// Since when `state` holds (RFC 3339).
    pub since: String,
    /// The rollout whose candidate it was sent, if any.
    pub rollout: Option<String>,
}

/// Body of `GET /v1/rollouts` (ARCHITECTURE.md §6.3): each rollout the tracked version
/// declares, sorted by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutsResponse {
    /// The declared rollouts.
    pub rollouts: Vec<RolloutInfo>,
}

/// One rollout, in [`RolloutsResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutInfo {
    /// Its name.
    pub name: String,
    /// The service rolled out (empty for a declaration too broken to say).
    pub service: String,
    /// The environments rolled out in.
    pub envs: Vec<String>,
    /// The branch, tag or sha of the candidate.
    pub label: String,
    /// Who gets the candidate.
    pub to: RolloutSelector,
    /// Whether the first rejection halts it.
    pub halt_on_reject: bool,
    /// `active` (served to the instances it picks), `halted` (an instance rejected the
    /// candidate: nobody gets it until a commit changes the rollout) or `broken` (the
    /// candidate or the declaration has an error: nobody gets it).
    pub state: String,
    /// The commit the label names.
    pub candidate_version: Option<String>,
    /// The candidate's digest per env.
    pub candidate_digests: std::collections::BTreeMap<String, String>,
    /// Why it was halted.
    pub halt: Option<RolloutHalt>,
    /// Why it is broken.
    pub errors: Vec<ErrorBody>,
    /// Instances known now (connected, or fetched within the TTL) that it picks.
    pub instances: Vec<String>,
    /// Answers `applied` to the candidate since the rollout was last changed.
    pub applied: u64,
    /// Answers `rejected` to the candidate since the rollout was last changed.
    pub rejected: u64,
}

/// A rollout's selector, in [`RolloutInfo`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RolloutSelector {
    /// Share of the instances, by a stable hash of (rollout name, instance id).
    pub percent: Option<f64>,
    /// Instance ids always in.
    pub instances: Vec<String>,
    /// Labels an instance must carry.
    pub labels: instance::Labels,
}

/// Why a rollout was halted, in [`RolloutInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutHalt {
    /// The instance whose rejection halted it.
    pub instance: String,
    /// What it reported.
    pub error: String,
    /// When (RFC 3339).
    pub at: String,
}
