//! Where a long run is, and what it did: the progress bar and the one-line summary of
//! `serve --once`, `consensus`, `normalise` and `export` (and the `stopped` line of
//! `serve`).
//!
//! Invariants:
//! - Nothing here writes to stdout (it carries the records and observations).
//! - The bar is drawn on stderr only when stderr is a terminal; otherwise it is hidden and
//!   not one byte of it (no escape code) reaches a file or a pipe. It is cleared before
//!   the summary.
//! - Log lines written while a bar is drawn go through [`suspend`] (the bar is cleared,
//!   the line written, the bar redrawn), so the two never garble each other.
//! - The summary is one line, written at the end of every run that completes, whether or
//!   not stderr is a terminal; its fields are `key=value` words ([`Summary`]).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The bar drawn now, if any (log lines are written around it: [`suspend`]).
static DRAWN: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Runs `f` (which writes to stderr) with the drawn bar, if any, cleared and redrawn after.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    let bar = DRAWN.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match bar {
        Some(bar) => bar.suspend(f),
        None => f(),
    }
}

/// stderr for the log lines: each line is written with the bar cleared ([`suspend`]).
/// `tracing_subscriber` formats a whole event and writes it with one `write_all`.
pub struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        suspend(|| std::io::stderr().lock().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[derive(Default)]
struct Counts {
    observations: AtomicU64,
    records: AtomicU64,
}

/// The progress of one run: documents read (the bar's position; its length when the
/// number of inputs is known, which gives the rate an ETA), observations and records.
pub struct Progress {
    bar: ProgressBar,
    counts: Arc<Counts>,
    started: Instant,
}

/// The bar's look: with a known length, a bar with the ETA; else counts and the rate.
fn style(known_length: bool, counts: &Arc<Counts>) -> ProgressStyle {
    let template = if known_length {
        "{spinner} {elapsed_precise} [{bar:24}] {pos}/{len} documents, {counts}, {rate}, ETA {eta}"
    } else {
        "{spinner} {elapsed_precise} {pos} documents, {counts}, {rate}"
    };
    let c = counts.clone();
    ProgressStyle::with_template(template)
        .expect("a valid template")
        .progress_chars("=> ")
        .with_key("counts", move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(
                w,
                "{} observations, {} records",
                c.observations.load(Ordering::Relaxed),
                c.records.load(Ordering::Relaxed)
            );
        })
        .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.0} documents/s", s.per_sec());
        })
}

impl Progress {
    /// A progress bar over `documents` inputs (when known: [`Progress::set_length`] may
    /// say it later), drawn on stderr if it is a terminal.
    pub fn start(documents: Option<u64>) -> Progress {
        Progress::new(documents, std::io::stderr().is_terminal())
    }

    /// [`Progress::start`] with `terminal` saying whether to draw.
    pub fn new(documents: Option<u64>, terminal: bool) -> Progress {
        let counts = Arc::new(Counts::default());
        let bar = if terminal {
            let bar = ProgressBar::with_draw_target(documents, ProgressDrawTarget::stderr());
            bar.set_style(style(documents.is_some(), &counts));
            bar.enable_steady_tick(Duration::from_millis(200));
            *DRAWN.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
            bar
        } else {
            ProgressBar::hidden()
        };
        Progress { bar, counts, started: Instant::now() }
    }

    /// The number of input documents, once known (the bar gets its ETA).
    pub fn set_length(&self, documents: u64) {
        if self.is_drawn() {
            self.bar.set_length(documents);
            self.bar.set_style(style(true, &self.counts));
        }
    }

    /// Whether the bar is drawn (stderr is a terminal).
    pub fn is_drawn(&self) -> bool {
        !self.bar.is_hidden()
    }

    /// `n` more documents read.
    pub fn documents_read(&self, n: u64) {
        self.bar.inc(n);
    }

    /// `n` documents read in all.
    pub fn set_documents(&self, n: u64) {
        self.bar.set_position(n);
    }

    /// `n` more observations.
    pub fn observations(&self, n: u64) {
        self.counts.observations.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` observations in all.
    pub fn set_observations(&self, n: u64) {
        self.counts.observations.store(n, Ordering::Relaxed);
    }

    /// `n` more records written.
    pub fn records(&self, n: u64) {
        self.counts.records.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` records written in all.
    pub fn set_records(&self, n: u64) {
        self.counts.records.store(n, Ordering::Relaxed);
    }

    /// Time since the run started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Clears the bar (before the summary is written).
    pub fn finish(&self) {
        if self.is_drawn() {
            self.bar.finish_and_clear();
            // One bar is drawn at a time (one run per process).
            *DRAWN.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// What a run did, as one line: `vex-lens <command>: summary: documents=N
/// observations=N records=N diagnostics=<code>:N,...|none dead_letters=N elapsed=S.SSSs`.
/// A count the run has no notion of (records of `normalise`, documents of an export from
/// a store) is left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub command: &'static str,
    /// Input documents read (those that failed included).
    pub documents: Option<u64>,
    pub observations: Option<u64>,
    /// Records written (to stdout, a bundle or the store).
    pub records: Option<u64>,
    /// Normaliser diagnostics by code.
    pub diagnostics: Option<BTreeMap<String, u64>>,
    /// Documents that could not be processed: dead-lettered by the service, skipped by
    /// the CLI's `--keep-going`.
    pub dead_letters: Option<u64>,
    pub elapsed: Duration,
}

impl Summary {
    /// Writes the line on stderr (around a drawn bar, if any).
    pub fn print(&self) {
        suspend(|| eprintln!("{self}"));
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "vex-lens {}: summary:", self.command)?;
        let counts = [("documents", self.documents), ("observations", self.observations), ("records", self.records)];
        for (name, n) in counts {
            if let Some(n) = n {
                write!(f, " {name}={n}")?;
            }
        }
        if let Some(d) = &self.diagnostics {
            let mut text = String::new();
            for (code, n) in d.iter().filter(|(_, n)| **n > 0) {
                let _ = write!(text, "{}{code}:{n}", if text.is_empty() { "" } else { "," });
            }
            write!(f, " diagnostics={}", if text.is_empty() { "none" } else { &text })?;
        }
        if let Some(n) = self.dead_letters {
            write!(f, " dead_letters={n}")?;
        }
        write!(f, " elapsed={:.3}s", self.elapsed.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_is_one_line_of_key_value_words() {
        let s = Summary {
            command: "consensus",
            documents: Some(3),
            observations: Some(10),
            records: Some(7),
            diagnostics: Some(BTreeMap::from([("opaque_key".into(), 2), ("no_timestamp".into(), 1)])),
            dead_letters: Some(1),
            elapsed: Duration::from_millis(1234),
        };
        assert_eq!(
            s.to_string(),
            "vex-lens consensus: summary: documents=3 observations=10 records=7 \
             diagnostics=no_timestamp:1,opaque_key:2 dead_letters=1 elapsed=1.234s"
        );
        let s = Summary {
            command: "export",
            documents: None,
            observations: None,
            records: Some(4),
            diagnostics: Some(BTreeMap::new()),
            ..s
        };
        assert_eq!(s.to_string(), "vex-lens export: summary: records=4 diagnostics=none dead_letters=1 elapsed=1.234s");
    }

    #[test]
    fn a_bar_not_drawn_counts_and_writes_nothing() {
        let p = Progress::new(Some(2), false);
        assert!(!p.is_drawn());
        p.documents_read(2);
        p.observations(5);
        p.records(3);
        assert_eq!(p.counts.observations.load(Ordering::Relaxed), 5);
        assert!(DRAWN.lock().unwrap().is_none());
    }
}
