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
//! streams are open at once.
//!
//! [`RecordStore::changes_after`]: crate::ports::RecordStore::changes_after

use super::auth::{Authorized, Read};
use super::error::{ApiError, ErrorCode};
use super::params::Params;
use super::State;
use crate::ports::{ChangeEvent, RecordStore};
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Most changes read from the store per poll.
const READ_BATCH: usize = 500;

/// The number of open streams (shared by the server's workers).
#[derive(Clone, Default)]
pub struct OpenStreams(Arc<AtomicUsize>);

impl OpenStreams {
    /// Takes a slot, or `None` when `max` streams are open.
    fn acquire(&self, max: usize) -> Option<StreamSlot> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| StreamSlot(self.0.clone()))
    }

    /// Streams open now.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// One open stream's slot, released when the stream ends (the client went away).
struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
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

/// The position to resume after: `Last-Event-ID` (header) or `last_event_id` (query),
/// not both unless equal.
fn last_event_id(req: &HttpRequest, p: &Params) -> Result<Option<u64>, ApiError> {
    let parse = |name: &str, v: &str| {
        v.trim().parse::<u64>().map_err(|_| ApiError::param(name, "must be an event id this stream sent (an integer)"))
    };
    let header = match req.headers().get("last-event-id") {
        None => None,
        Some(v) => {
            let v = v.to_str().map_err(|_| ApiError::param("Last-Event-ID", "must be visible ASCII"))?;
            Some(parse("Last-Event-ID", v)?)
        }
    };
    let query = p.str("last_event_id")?.map(|v| parse("last_event_id", &v)).transpose()?;
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
) -> Result<HttpResponse, ApiError> {
    let p = Params::parse(req.query_string(), &["artifact", "package", "last_event_id"])?;
    let filter = Filter { artifact: p.artifact("artifact")?, package: p.package("package")? };
    let resume = last_event_id(&req, &p)?;
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
    let slot = state.streams.acquire(state.api.max_streams).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            format!("{} change streams are open (api.max_streams): retry later", state.api.max_streams),
        )
    })?;
    let s = Stream {
        store: state.stores.records.clone(),
        tenant: caller.tenant.clone(),
        filter,
        cursor,
        poll: Duration::from_millis(state.api.stream_poll_ms),
        heartbeat: Duration::from_secs(state.api.stream_heartbeat_secs),
        next_poll: Instant::now(),
        next_heartbeat: Instant::now() + Duration::from_secs(state.api.stream_heartbeat_secs),
        out: VecDeque::from([Bytes::from(format!("retry: 2000\n: stream of {} after {cursor}\n\n", caller.tenant))]),
        _slot: slot,
    };
    let body = futures::stream::unfold(s, |mut s| async move {
        let chunk = s.next_chunk().await;
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
    out: VecDeque<Bytes>,
    _slot: StreamSlot,
}

impl Stream {
    /// The next bytes to send: a queued frame, else a heartbeat when one is due, else
    /// whatever the next polls find.
    async fn next_chunk(&mut self) -> Bytes {
        loop {
            if let Some(b) = self.out.pop_front() {
                self.next_heartbeat = Instant::now() + self.heartbeat;
                return b;
            }
            let now = Instant::now();
            if now >= self.next_heartbeat {
                self.next_heartbeat = now + self.heartbeat;
                return Bytes::from_static(b": heartbeat\n\n");
            }
            if now < self.next_poll {
                tokio::time::sleep_until(self.next_poll.min(self.next_heartbeat)).await;
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
    fn open_streams_are_bounded_and_released() {
        let open = OpenStreams::default();
        let a = open.acquire(2).unwrap();
        let _b = open.acquire(2).unwrap();
        assert!(open.acquire(2).is_none(), "a third stream is refused");
        drop(a);
        assert_eq!(open.count(), 1);
        assert!(open.acquire(2).is_some(), "a closed stream frees its slot");
    }
}
