//! `GET /v1/vex/feeds` (`vex:admin`): the CSAF feeds configured for the caller's tenant,
//! each with its settings (name, kind, url, issuer, enabled, interval), its health on
//! this instance, and what its state says: when its last run and its last successful run
//! ended, the last run's feed-level failure, the watermark of each distribution directory,
//! the documents tracked by outcome, those failing and the earliest next retry. `/status`
//! (open) lists only the feeds' names and health.
//!
//! Invariants: a caller sees only the feeds whose tenant is its own (a feed's `tenant`,
//! else `ingest.tenant`), disabled ones included; the state is read through the feed state
//! port and never written (a state kept for another tenant is the state of a feed never
//! run for this one, as the feed's next run takes it); a state that cannot be read is
//! reported on its feed (`state_error`) and the other feeds are answered.

use super::auth::{Admin, Authorized};
use super::State;
use crate::config::{Config, FeedConfig, FeedKind};
use crate::ports::feed_state::{DirectoryState, DocOutcome, FeedFailure, FeedState};
use crate::ports::FeedStateStore;
use actix_web::{web, HttpResponse};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The configured feeds (each with its tenant) and where their states are read.
#[derive(Clone, Default)]
pub struct FeedsView {
    feeds: Vec<(FeedConfig, String)>,
    state: Option<Arc<dyn FeedStateStore>>,
}

impl FeedsView {
    /// Every `[[feeds]]` entry of `cfg`, its state read from `state`.
    pub fn new(cfg: &Config, state: Arc<dyn FeedStateStore>) -> FeedsView {
        let feeds = cfg.feeds.iter().map(|f| (f.clone(), f.tenant_or(&cfg.ingest.tenant).to_string())).collect();
        FeedsView { feeds, state: Some(state) }
    }
}

/// One distribution directory of a feed.
#[derive(Debug, Serialize)]
struct DirectoryView {
    url: String,
    /// Whether a run went through the whole directory once (the first sync is over).
    synced: bool,
    /// Every `changes.csv` row listed at or before this time is settled.
    watermark_ms: Option<i64>,
    documents: usize,
    failing: usize,
    next_retry_ms: Option<i64>,
}

/// One feed as `GET /v1/vex/feeds` shows it.
#[derive(Debug, Serialize)]
struct FeedView {
    name: String,
    kind: FeedKind,
    url: String,
    issuer: String,
    enabled: bool,
    interval: String,
    /// On this instance: `pending`, `ok`, `failing`; `null` when it does not run the feed
    /// (disabled, or `serve --once`).
    health: Option<&'static str>,
    last_attempt_ms: Option<i64>,
    last_success_ms: Option<i64>,
    last_error: Option<FeedFailure>,
    /// The lowest watermark of its directories (`null` until every directory has one).
    watermark_ms: Option<i64>,
    /// Documents tracked in the state (every outcome).
    documents: usize,
    /// Documents by outcome (`emitted`, `dead_lettered`, `skipped`, `rejected`, `failed`).
    outcomes: BTreeMap<&'static str, usize>,
    /// Documents failed and owed a retry.
    failing: usize,
    /// The earliest retry owed.
    next_retry_ms: Option<i64>,
    directories: Vec<DirectoryView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state_error: Option<String>,
}

fn failing(d: &DirectoryState) -> (usize, Option<i64>) {
    let failed = d.documents.values().filter(|doc| doc.outcome == DocOutcome::Failed);
    let (n, next) = failed.fold((0, None::<i64>), |(n, next), doc| {
        (
            n + 1,
            match (next, doc.next_retry_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        )
    });
    (n, next)
}

fn view(f: &FeedConfig, state: Option<FeedState>, health: Option<&'static str>, error: Option<String>) -> FeedView {
    let mut v = FeedView {
        name: f.name.clone(),
        kind: f.kind,
        url: f.url.clone(),
        issuer: f.issuer.clone(),
        enabled: f.enabled,
        interval: f.interval.clone(),
        health,
        last_attempt_ms: None,
        last_success_ms: None,
        last_error: None,
        watermark_ms: None,
        documents: 0,
        outcomes: BTreeMap::new(),
        failing: 0,
        next_retry_ms: None,
        directories: Vec::new(),
        state_error: error,
    };
    let Some(s) = state else { return v };
    v.last_attempt_ms = s.last_attempt_ms;
    v.last_success_ms = s.last_success_ms;
    v.last_error = s.last_error;
    for (url, d) in &s.directories {
        let (n, next) = failing(d);
        v.directories.push(DirectoryView {
            url: url.clone(),
            synced: d.synced,
            watermark_ms: d.watermark_ms,
            documents: d.documents.len(),
            failing: n,
            next_retry_ms: next,
        });
        for (k, c) in crate::sources::feeds::directory_counts(d) {
            *v.outcomes.entry(k).or_default() += c;
        }
    }
    v.documents = v.directories.iter().map(|d| d.documents).sum();
    v.failing = v.directories.iter().map(|d| d.failing).sum();
    v.next_retry_ms = v.directories.iter().filter_map(|d| d.next_retry_ms).min();
    let marks: Option<Vec<i64>> = v.directories.iter().map(|d| d.watermark_ms).collect();
    v.watermark_ms = marks.and_then(|m| m.into_iter().min());
    v
}

/// `GET /v1/vex/feeds`: the caller's tenant's feeds, in configuration order.
pub async fn list(caller: Authorized<Admin>, state: web::Data<State>) -> HttpResponse {
    let feeds = &state.feeds;
    let mut items = Vec::new();
    for (f, tenant) in feeds.feeds.iter().filter(|(_, t)| *t == caller.tenant) {
        let health = state.status.feeds.get(&f.name);
        let loaded = match &feeds.state {
            None => Ok(None),
            Some(store) => store.load(&f.name).await,
        };
        items.push(match loaded {
            Ok(s) => view(f, s.filter(|s| &s.tenant == tenant), health, None),
            Err(e) => view(f, None, health, Some(e.to_string())),
        });
    }
    HttpResponse::Ok().json(serde_json::json!({"tenant": caller.tenant, "items": items}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::feed_state::DocState;

    fn doc(outcome: DocOutcome, retry: Option<i64>) -> DocState {
        DocState { listed: None, outcome, reason: None, digests: None, failures: 0, next_retry_ms: retry }
    }

    /// Counts, the earliest retry and the lowest watermark come from every directory; a
    /// directory without a watermark leaves the feed's unset.
    #[test]
    fn a_feed_view_sums_its_directories() {
        let f: FeedConfig =
            toml::from_str("name = \"p\"\nkind = \"csaf\"\nurl = \"p.example\"\nissuer = \"p\"\n").unwrap();
        let mut s = FeedState::new("p", "default");
        let mut a = DirectoryState { watermark_ms: Some(500), ..Default::default() };
        a.documents.insert("2025/a.json".into(), doc(DocOutcome::Emitted, None));
        a.documents.insert("2025/b.json".into(), doc(DocOutcome::Failed, Some(90)));
        let mut b = DirectoryState { watermark_ms: Some(300), ..Default::default() };
        b.documents.insert("2025/c.json".into(), doc(DocOutcome::Failed, Some(70)));
        b.documents.insert("2025/d.json".into(), doc(DocOutcome::Skipped, None));
        s.directories.insert("https://p.example/white/".into(), a);
        s.directories.insert("https://p.example/green/".into(), b);
        let v = view(&f, Some(s.clone()), Some("ok"), None);
        assert_eq!((v.documents, v.failing, v.next_retry_ms, v.watermark_ms), (4, 2, Some(70), Some(300)));
        assert_eq!(v.outcomes.get("failed"), Some(&2));
        assert_eq!(v.directories.len(), 2);
        s.directories.insert("https://p.example/clear/".into(), DirectoryState::default());
        assert_eq!(view(&f, Some(s), None, None).watermark_ms, None, "a directory not synced yet");
        let never = view(&f, None, None, None);
        assert_eq!((never.documents, never.last_attempt_ms, never.directories.len()), (0, None, 0));
    }
}
