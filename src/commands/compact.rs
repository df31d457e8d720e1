//! `vex-lens compact`: shortens the embedded store's file to the pages it uses (redb
//! `compact`), and prints what each table holds before and after (one JSON object on
//! stdout). Run it while no `serve` uses the data directory (redb refuses a second open).
//! A store is compacted in place; an interrupted compaction leaves a store redb repairs
//! at its next open.

use crate::cli::CompactArgs;
use anyhow::Context;
use std::process::ExitCode;
use vex_lens::config::Config;
use vex_lens::stores::embedded::{EmbeddedStore, DB_FILE};

pub fn run(args: CompactArgs) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(args.config.as_deref())?;
    let dir = args.data_dir.clone().unwrap_or_else(|| cfg.store.data_dir.clone());
    let file = dir.join(DB_FILE);
    if !file.exists() {
        anyhow::bail!("no embedded store in {}", dir.display());
    }
    let size =
        |f: &std::path::Path| std::fs::metadata(f).map(|m| m.len()).with_context(|| format!("reading {}", f.display()));
    let before = size(&file)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let store = EmbeddedStore::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
    let tables = rt.block_on(store.table_sizes()).context("reading table sizes")?;
    let started = std::time::Instant::now();
    let moved = store.compact().context("compacting")?;
    let after = size(&file)?;
    let records = tables.iter().find(|t| t.table == "vex_consensus").map_or(0, |t| t.rows);
    let summary = serde_json::json!({
        "file": file.display().to_string(),
        "bytes_before": before,
        "bytes_after": after,
        "compacted": moved,
        "records": records,
        "bytes_per_record": after.checked_div(records).unwrap_or(0),
        "tables": tables,
    });
    println!("{summary}");
    eprintln!(
        "compacted {}: {before} -> {after} bytes in {:.1} s ({records} current records)",
        file.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
