//! `GET /v1/vex/consensus/stream`: Server-Sent Events of every consensus change of the
//! caller's tenant, read from the store's change stream (history entries with dense
//! per-tenant positions, [`RecordStore::changes_after`]), so changes made by any
//! instance are delivered.
//!
//! Invariants: the SSE `id` of an event is its position in the tenant's stream; a stream
//! sends positions in increasing order, each at most once, and skips none (filtered-out
//! changes are passed over, not sent); `Last-Event-ID: n` (header, or the
//! `last_event_id` parameter) resumes with exactly the changes after `n`, without it the
//! stream starts after the changes committed before the request; an idle stream sends a
//! comment line (`: heartbeat`) every `api.stream_heartbeat_secs`; a store failure is
//! retried at the next poll and never ends or skips anything; at most `api.max_streams`
//! streams are open at once (503 above), at most `api.max_streams_per_tenant` of one
//! tenant and `api.max_streams_per_token` of one API token (429 above, so one tenant's
//! clients never take every slot); a stream ends after `api.stream_max_age_secs` (the
//! client resumes with `Last-Event-ID`); a client that has not taken a written frame for
//! `api.stream_stall_secs` (it stopped reading) is dropped: its connection is shut down
//! and its slot freed, whatever the server's write buffers hold.
//!
//! [`RecordStore::changes_after`]: crate::ports::RecordStore::changes_after

use super::auth::{Authorized, Read};
use super::error::{ApiError, ErrorCode};
use super::params;
use super::State;
use crate::ports::{ChangeEvent, RecordStore};
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Most changes read from the store per poll.
const READ_BATCH: usize = 500;

/// The open streams, in all and per tenant and per token (shared by the server's workers).
#[derive(Clone, Default)]
pub struct OpenStreams(Arc<Mutex<Counts>>);

#[derive(Default)]
struct Counts {
    total: usize,
    tenants: HashMap<String, usize>,
    tokens: HashMap<String, usize>,
}

/// The caps a stream is opened under (`api.max_streams*`).
#[derive(Clone, Copy, Debug)]
pub struct StreamCaps {
    pub total: usize,
    pub per_tenant: usize,
    pub per_token: usize,
}

/// Which cap refused a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapReached {
    /// `api.max_streams`: the instance is full (503).
    Total,
    /// `api.max_streams_per_tenant` (429).
    Tenant,
    /// `api.max_streams_per_token` (429).
    Token,
}

impl OpenStreams {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot for `tenant` (and `token`, when the caller has one), or says which cap
    /// is reached.
    pub fn acquire(&self, tenant: &str, token: Option<&str>, caps: StreamCaps) -> Result<StreamSlot, CapReached> {
        let mut c = self.counts();
        if c.total >= caps.total {
            return Err(CapReached::Total);
        }
        if c.tenants.get(tenant).copied().unwrap_or(0) >= caps.per_tenant.min(caps.total) {
            return Err(CapReached::Tenant);
        }
        if let Some(t) = token {
            if c.tokens.get(t).copied().unwrap_or(0) >= caps.per_token {
                return Err(CapReached::Token);
            }
            *c.tokens.entry(t.to_string()).or_default() += 1;
        }
        *c.tenants.entry(tenant.to_string()).or_default() += 1;
        c.total += 1;
        Ok(StreamSlot { open: self.clone(), tenant: tenant.to_string(), token: token.map(str::to_string) })
    }

    /// Streams open now.
    pub fn count(&self) -> usize {
        self.counts().total
    }

    /// Streams of `tenant` open now.
    pub fn count_for_tenant(&self, tenant: &str) -> usize {
        self.counts().tenants.get(tenant).copied().unwrap_or(0)
    }
}

/// One open stream's slot, released when the stream ends (the client went away, the
/// stream reached its age, or the client stalled).
pub struct StreamSlot {
    open: OpenStreams,
    tenant: String,
    token: Option<String>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        fn release(map: &mut HashMap<String, usize>, key: &str) {
            if let Some(n) = map.get_mut(key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
        let mut c = self.open.counts();
        c.total = c.total.saturating_sub(1);
        release(&mut c.tenants, &self.tenant);
        if let Some(t) = &self.token {
            release(&mut c.tokens, t);
        }
    }
}

/// The connection's socket (a duplicate descriptor of it, taken when the connection was
/// accepted: `HttpServer::on_connect`), so that a stalled stream can shut the connection
/// down though the server no longer polls the stream.
#[derive(Clone)]
pub struct ConnSocket(pub Arc<std::net::TcpStream>);

/// Registers the connection's socket ([`ConnSocket`]) in its connection data.
pub fn on_connect(conn: &dyn std::any::Any, ext: &mut actix_web::dev::Extensions) {
    use std::os::fd::AsFd;
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        if let Ok(fd) = tcp.as_fd().try_clone_to_owned() {
            ext.insert(ConnSocket(Arc::new(std::net::TcpStream::from(fd))));
        }
    }
}

/// When the server last took a frame from a stream, and whether it is waiting for it to
/// take the one handed out (shared with the stream's watchdog).
#[derive(Default)]
struct Progress {
    /// `Some(t)`: a frame was handed out at `t` and the server has not asked for the next.
    handed_out_at: Option<Instant>,
    ended: bool,
}

/// Drops a client that stopped reading: once a frame handed out at `t` is still not taken
/// at `t + stall`, shuts the connection down (the server's write fails, the stream is
/// dropped) and frees the slot at once.
async fn watchdog(
    progress: Arc<Mutex<Progress>>,
    slot: Arc<Mutex<Option<StreamSlot>>>,
    socket: Option<ConnSocket>,
    stall: Duration,
    tenant: String,
) {
    let tick = (stall / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        tokio::time::sleep(tick).await;
        let stalled_for = {
            let p = progress.lock().unwrap_or_else(|e| e.into_inner());
            if p.ended {
                return;
            }
            p.handed_out_at.map(|t| t.elapsed())
        };
        if stalled_for.is_some_and(|d| d >= stall) {
            if let Some(s) = &socket {
                let _ = s.0.shutdown(std::net::Shutdown::Both);
            }
            drop(slot.lock().unwrap_or_else(|e| e.into_inner()).take());
            crate::warn_event!(
                crate::telemetry::events::LogEvent::StreamClientStalled,
                tenant = %tenant,
                stall_secs = stall.as_secs(),
                "change stream: the client took no frame for api.stream_stall_secs; dropped (it resumes with Last-Event-ID)"
            );
            return;
        }
    }
}

/// Which changes a stream sends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Exact (normalised) artifact key.
    pub artifact: Option<String>,
    /// Package key.
    pub package: Option<String>,
}

impl Filter {
    pub fn matches(&self, e: &ChangeEvent) -> bool {
        let r = &e.entry.record;
        self.artifact.as_ref().map_or(true, |a| &r.artifact == a)
            && self.package.as_ref().map_or(true, |p| &r.package == p)
    }
}

/// The SSE frame of one change: `id` (its position), `event: consensus`, and the record
/// with `seq` and `changed_at_ms` as one line of JSON.
pub fn frame(e: &ChangeEvent) -> Result<Bytes, serde_json::Error> {
    let data = serde_json::to_string(e)?;
    Ok(Bytes::from(format!("id: {}\nevent: consensus\ndata: {data}\n\n", e.seq)))
}

/// The parameters of `GET /v1/vex/consensus/stream`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    #[serde(default, deserialize_with = "params::artifact")]
    artifact: Option<String>,
    #[serde(default, deserialize_with = "params::package")]
    package: Option<String>,
    #[serde(default, deserialize_with = "last_event_id_param")]
    last_event_id: Option<u64>,
}

/// An event id, as `Last-Event-ID` or `last_event_id` gives it.
fn event_id(v: &str) -> Result<u64, &'static str> {
    v.trim().parse::<u64>().map_err(|_| "must be an event id this stream sent (an integer)")
}

/// `last_event_id`: see [`event_id`].
fn last_event_id_param<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    params::read(d, "last_event_id", event_id)
}

/// The position to resume after: `Last-Event-ID` (header) or `last_event_id` (query),
/// not both unless equal.
fn last_event_id(req: &HttpRequest, query: Option<u64>) -> Result<Option<u64>, ApiError> {
    let header = match req.headers().get("last-event-id") {
        None => None,
        Some(v) => {
            let v = v.to_str().map_err(|_| ApiError::param("Last-Event-ID", "must be visible ASCII"))?;
            Some(event_id(v).map_err(|e| ApiError::param("Last-Event-ID", e))?)
        }
    };
    match (header, query) {
        (Some(h), Some(q)) if h != q => Err(ApiError::param("last_event_id", "differs from the Last-Event-ID header")),
        (h, q) => Ok(h.or(q)),
    }
}

/// `GET /v1/vex/consensus/stream[?artifact=|package=][&last_event_id=]`.
pub async fn stream(
    caller: Authorized<Read>,
    state: web::Data<State>,
    req: HttpRequest,
    query: web::Query<StreamQuery>,
) -> Result<HttpResponse, ApiError> {
    let StreamQuery { artifact, package, last_event_id: resume } = query.into_inner();
    let filter = Filter { artifact, package };
    let resume = last_event_id(&req, resume)?;
    let tail = state.stores.records.change_tail(&caller.tenant).await?;
    let cursor = match resume {
        Some(n) if n > tail => {
            return Err(ApiError::param(
                "Last-Event-ID",
                format!("{n} is ahead of the stream (last event {tail}): not an id this stream sent"),
            ))
        }
        Some(n) => n,
        None => tail,
    };
    let caps = StreamCaps {
        total: state.api.max_streams,
        per_tenant: state.api.max_streams_per_tenant,
        per_token: state.api.max_streams_per_token,
    };
    let token = (!state.auth.is_open()).then_some(caller.name.as_str());
    let slot = state.streams.acquire(&caller.tenant, token, caps).map_err(|cap| match cap {
        CapReached::Total => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            format!("{} change streams are open (api.max_streams): retry later", caps.total),
        ),
        CapReached::Tenant => ApiError::rate_limited(
            format!(
                "tenant {} has {} change streams open (api.max_streams_per_tenant): close one or retry later",
                caller.tenant,
                caps.per_tenant.min(caps.total)
            ),
            state.api.stream_heartbeat_secs,
        ),
        CapReached::Token => ApiError::rate_limited(
            format!(
                "token {} has {} change streams open (api.max_streams_per_token): close one or retry later",
                caller.name, caps.per_token
            ),
            state.api.stream_heartbeat_secs,
        ),
    })?;
    let slot = Arc::new(Mutex::new(Some(slot)));
    let progress = Arc::new(Mutex::new(Progress::default()));
    let socket = req.conn_data::<ConnSocket>().cloned();
    tokio::spawn(watchdog(
        progress.clone(),
        slot.clone(),
        socket,
        Duration::from_secs(state.api.stream_stall_secs),
        caller.tenant.clone(),
    ));
    let now = Instant::now();
    let s = Stream {
        store: state.stores.records.clone(),
        tenant: caller.tenant.clone(),
        filter,
        cursor,
        poll: Duration::from_millis(state.api.stream_poll_ms),
        heartbeat: Duration::from_secs(state.api.stream_heartbeat_secs),
        next_poll: now,
        next_heartbeat: now + Duration::from_secs(state.api.stream_heartbeat_secs),
        ends_at: now + Duration::from_secs(state.api.stream_max_age_secs),
        ended: false,
        out: VecDeque::from([Bytes::from(format!("retry: 2000\n: stream of {} after {cursor}\n\n", caller.tenant))]),
        progress,
        slot,
    };
    let body = futures::stream::unfold(s, |mut s| async move {
        let chunk = s.next_chunk().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), s))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

/// One open stream.
struct Stream {
    store: Arc<dyn RecordStore>,
    tenant: String,
    filter: Filter,
    /// The last position read (sent or filtered out).
    cursor: u64,
    poll: Duration,
    heartbeat: Duration,
    next_poll: Instant,
    next_heartbeat: Instant,
    /// `api.stream_max_age_secs` after the start: the stream ends.
    ends_at: Instant,
    /// The closing comment was sent: the next call ends the stream.
    ended: bool,
    out: VecDeque<Bytes>,
    progress: Arc<Mutex<Progress>>,
    /// Taken (freed) by the watchdog when the client stalls.
    slot: Arc<Mutex<Option<StreamSlot>>>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.progress.lock().unwrap_or_else(|e| e.into_inner()).ended = true;
        drop(self.slot.lock().unwrap_or_else(|e| e.into_inner()).take());
    }
}

impl Stream {
    /// The next bytes to send ([`Self::next_frame`]), the hand-out noted for the
    /// watchdog; `None` ends the stream (its age is reached, or the watchdog dropped it).
    async fn next_chunk(&mut self) -> Option<Bytes> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner()).handed_out_at = None;
        if self.slot.lock().unwrap_or_else(|e| e.into_inner()).is_none() {
            return None;
        }
        let chunk = self.next_frame().await?;
        self.progress.lock().unwrap_or_else(|e| e.into_inner()).handed_out_at = Some(Instant::now());
        Some(chunk)
    }

    /// A queued frame, else a heartbeat when one is due, else whatever the next polls
    /// find; at the stream's age a last comment, then the end.
    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            if let Some(b) = self.out.pop_front() {
                self.next_heartbeat = Instant::now() + self.heartbeat;
                return Some(b);
            }
            let now = Instant::now();
            if now >= self.ends_at {
                if self.ended {
                    return None;
                }
                self.ended = true;
                return Some(Bytes::from_static(
                    b": stream reached api.stream_max_age_secs; reconnect with Last-Event-ID\n\n",
                ));
            }
            if now >= self.next_heartbeat {
                self.next_heartbeat = now + self.heartbeat;
                return Some(Bytes::from_static(b": heartbeat\n\n"));
            }
            if now < self.next_poll {
                tokio::time::sleep_until(self.next_poll.min(self.next_heartbeat).min(self.ends_at)).await;
                continue;
            }
            self.read().await;
        }
    }

    /// Reads the changes after the cursor into the queue (a full batch polls again at
    /// once, anything less waits `poll`).
    async fn read(&mut self) {
        match self.store.changes_after(&self.tenant, self.cursor, READ_BATCH).await {
            Ok(events) => {
                let full = events.len() == READ_BATCH;
                for e in events {
                    if e.seq != self.cursor + 1 {
                        break;
                    }
                    if self.filter.matches(&e) {
                        match frame(&e) {
                            Ok(b) => self.out.push_back(b),
                            Err(err) => {
                                crate::warn_event!(crate::telemetry::events::LogEvent::StreamReadFailed, tenant = %self.tenant, seq = e.seq, error = %err, "change stream: cannot encode a change; retrying");
                                break;
                            }
                        }
                    }
                    self.cursor = e.seq;
                }
                self.next_poll = if full { Instant::now() } else { Instant::now() + self.poll };
            }
            Err(err) => {
                crate::warn_event!(crate::telemetry::events::LogEvent::StreamReadFailed, tenant = %self.tenant, error = %err, "change stream: reading the store failed; retrying at the next poll");
                self.next_poll = Instant::now() + self.poll;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::consensus::{PackageState, PairKey};
    use crate::domain::model::Status;
    use crate::domain::trust::Policy;
    use crate::ports::TimedRecord;
    use crate::stores::contract::sample_observation;

    fn event(seq: u64, artifact: &str) -> ChangeEvent {
        let o = sample_observation("t", "vendor", artifact, "CVE-2024-0001", Status::Affected);
        let pair = PairKey {
            tenant: "t".into(),
            artifact: o.artifact.to_string(),
            vulnerability: o.vulnerability.to_string(),
        };
        let mut st = PackageState::new();
        st.apply(o).unwrap();
        let record = st.evaluate(&pair, &Policy::default(), false).unwrap().unwrap();
        ChangeEvent { seq, entry: TimedRecord { record, changed_at_ms: 5 } }
    }

    #[test]
    fn a_frame_is_one_event_with_its_position_as_id() {
        let e = event(42, "pkg:npm/a@1");
        let text = String::from_utf8(frame(&e).unwrap().to_vec()).unwrap();
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines[0], "id: 42");
        assert_eq!(lines[1], "event: consensus");
        let data: serde_json::Value = serde_json::from_str(lines[2].strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!((data["seq"].as_u64(), data["changed_at_ms"].as_i64()), (Some(42), Some(5)));
        assert_eq!(data["artifact"], "pkg:npm/a@1");
        assert_eq!(&lines[3..], ["", ""], "one blank line ends the event: {text:?}");
    }

    #[test]
    fn filters_match_artifact_and_package() {
        let e = event(1, "pkg:npm/a@1");
        assert!(Filter::default().matches(&e));
        assert!(Filter { artifact: Some("pkg:npm/a@1".into()), package: None }.matches(&e));
        assert!(!Filter { artifact: Some("pkg:npm/a@2".into()), package: None }.matches(&e));
        assert!(Filter { artifact: None, package: Some("pkg:npm/a".into()) }.matches(&e));
        assert!(!Filter { artifact: None, package: Some("pkg:npm/b".into()) }.matches(&e));
    }

    #[test]
    fn open_streams_are_bounded_per_instance_tenant_and_token_and_released() {
        let open = OpenStreams::default();
        let caps = StreamCaps { total: 4, per_tenant: 2, per_token: 1 };
        let a = open.acquire("acme", None, caps).unwrap();
        let _b = open.acquire("acme", None, caps).unwrap();
        assert_eq!(open.acquire("acme", None, caps).err(), Some(CapReached::Tenant), "acme holds its cap");
        let g = open.acquire("globex", Some("ci"), caps).unwrap();
        assert_eq!(open.acquire("globex", Some("ci"), caps).err(), Some(CapReached::Token), "the token holds its cap");
        let _h = open.acquire("globex", Some("other"), caps).unwrap();
        assert_eq!(open.acquire("initech", None, caps).err(), Some(CapReached::Total), "the instance is full");
        assert_eq!((open.count(), open.count_for_tenant("acme")), (4, 2));
        drop(a);
        drop(g);
        assert_eq!((open.count(), open.count_for_tenant("acme")), (2, 1));
        assert!(open.acquire("acme", None, caps).is_ok(), "a closed stream frees its tenant's slot");
        assert!(open.acquire("globex", Some("ci"), caps).is_ok(), "and its token's");
        // A tenant cap above the instance's is the instance's.
        let open = OpenStreams::default();
        let caps = StreamCaps { total: 1, per_tenant: 16, per_token: 8 };
        let _x = open.acquire("acme", None, caps).unwrap();
        assert_eq!(open.acquire("acme", None, caps).err(), Some(CapReached::Total));
    }
}
