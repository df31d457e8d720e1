//! `vex-lens feed ...`: the configured CSAF feeds (docs/feeds.md).

use crate::cli::{FeedCommand, FeedRunArgs, FeedStateArgs};
use std::io::Write;
use std::process::ExitCode;
use vex_lens::config::Config;
use vex_lens::ports::FeedStateStore;
use vex_lens::stores::feed_files::FeedFiles;

pub fn run(c: FeedCommand) -> anyhow::Result<ExitCode> {
    match c {
        FeedCommand::Run(a) => run_feeds(a),
        FeedCommand::List(a) => list(a),
        FeedCommand::Status(a) => status(&a.name, a.state),
        FeedCommand::Check(a) => check(&a.name, a.state),
        FeedCommand::Reset(a) => reset(&a.name, a.state),
    }
}

fn load(config: Option<&std::path::Path>, data_dir: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let (mut cfg, _) = Config::load_located(config)?;
    if let Some(d) = data_dir {
        cfg.store.data_dir = d.to_path_buf();
    }
    cfg.validate()?;
    Ok(cfg)
}

fn print(lines: &[serde_json::Value]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for l in lines {
        writeln!(out, "{}", serde_json::to_string(l)?)?;
    }
    out.flush()?;
    Ok(())
}

fn run_feeds(a: FeedRunArgs) -> anyhow::Result<ExitCode> {
    if !a.once {
        anyhow::bail!("feed run: only --once in this version (serve will run the feeds at their intervals)");
    }
    let format = match a.log_format {
        Some(crate::cli::LogFormatArg::Json) => vex_lens::telemetry::LogFormat::Json,
        Some(crate::cli::LogFormatArg::Text) => vex_lens::telemetry::LogFormat::Text,
        None => vex_lens::telemetry::LogFormat::for_terminal(),
    };
    let cfg = load(a.config.as_deref(), a.data_dir.as_deref())?;
    vex_lens::telemetry::init_logging(format);
    let summaries = vex_lens::app::run_feeds_once(cfg, &a.names)?;
    let lines: Vec<serde_json::Value> = summaries.iter().map(serde_json::to_value).collect::<Result<_, _>>()?;
    print(&lines)?;
    Ok(if summaries.iter().all(|s| s.ok) { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(f))
}

/// One line per configured feed: its configuration and a digest of its state.
fn list(a: FeedStateArgs) -> anyhow::Result<ExitCode> {
    let cfg = load(a.config.as_deref(), a.data_dir.as_deref())?;
    let files = FeedFiles::under(&cfg.store.data_dir);
    let mut lines = Vec::new();
    for f in &cfg.feeds {
        let state = block_on(files.load(&f.name))??;
        let mut documents = std::collections::BTreeMap::new();
        for d in state.iter().flat_map(|s| s.directories.values()) {
            for (k, n) in vex_lens::sources::feeds::directory_counts(d) {
                *documents.entry(k).or_insert(0usize) += n;
            }
        }
        lines.push(serde_json::json!({
            "name": f.name,
            "kind": f.kind,
            "url": f.url,
            "tenant": f.tenant_or(&cfg.ingest.tenant),
            "issuer": f.issuer,
            "enabled": f.enabled,
            "interval": f.interval,
            "last_success_ms": state.as_ref().and_then(|s| s.last_success_ms),
            "last_attempt_ms": state.as_ref().and_then(|s| s.last_attempt_ms),
            "last_error": state.as_ref().and_then(|s| s.last_error.as_ref()),
            "documents": documents,
        }));
    }
    print(&lines)?;
    Ok(ExitCode::SUCCESS)
}

fn configured(cfg: &Config, name: &str) -> anyhow::Result<()> {
    vex_lens::app::select_feeds(cfg, &[name.to_string()]).map(|_| ())
}

fn status(name: &str, a: FeedStateArgs) -> anyhow::Result<ExitCode> {
    let cfg = load(a.config.as_deref(), a.data_dir.as_deref())?;
    configured(&cfg, name)?;
    let state = block_on(FeedFiles::under(&cfg.store.data_dir).load(name))??;
    let line = match state {
        Some(s) => serde_json::to_value(s)?,
        None => serde_json::json!({"feed": name, "never_run": true}),
    };
    print(&[line])?;
    Ok(ExitCode::SUCCESS)
}

fn check(name: &str, a: FeedStateArgs) -> anyhow::Result<ExitCode> {
    let cfg = load(a.config.as_deref(), a.data_dir.as_deref())?;
    vex_lens::telemetry::init_logging(vex_lens::telemetry::LogFormat::for_terminal());
    let s = vex_lens::app::check_feed(&cfg, name)?;
    print(&[serde_json::to_value(&s)?])?;
    Ok(if s.ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn reset(name: &str, a: FeedStateArgs) -> anyhow::Result<ExitCode> {
    let cfg = load(a.config.as_deref(), a.data_dir.as_deref())?;
    configured(&cfg, name)?;
    let files = FeedFiles::under(&cfg.store.data_dir);
    block_on(files.remove(name))??;
    eprintln!("feed {name:?}: state {} removed; its next run is a first sync", files.path(name).display());
    Ok(ExitCode::SUCCESS)
}
