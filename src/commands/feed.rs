//! `vex-lens feed ...`: the configured CSAF feeds.

use crate::cli::{FeedCommand, FeedRunArgs};
use std::io::Write;
use std::process::ExitCode;
use vex_lens::config::Config;

pub fn run(c: FeedCommand) -> anyhow::Result<ExitCode> {
    match c {
        FeedCommand::Run(a) => run_feeds(a),
    }
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
    let (mut cfg, _) = Config::load_located(a.config.as_deref())?;
    if let Some(d) = &a.data_dir {
        cfg.store.data_dir = d.clone();
    }
    cfg.validate()?;
    vex_lens::telemetry::init_logging(format);
    let summaries = vex_lens::app::run_feeds_once(cfg, &a.names)?;
    let mut out = std::io::stdout().lock();
    for s in &summaries {
        writeln!(out, "{}", serde_json::to_string(s)?)?;
    }
    out.flush()?;
    Ok(if summaries.iter().all(|s| s.ok) { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
