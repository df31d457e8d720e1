//! `vex-lens reindex`: brings an embedded store written by an older version to this
//! version when start-up refuses to (`stores::embedded::upgrade`): the lossy observations
//! and every record of their packages are dropped, the rest re-keyed and recomputed under
//! the configuration's policy with the tenants' stored trust changes installed.

use crate::cli::ReindexArgs;
use anyhow::Context;
use std::process::ExitCode;
use vex_lens::config::Config;
use vex_lens::ports::TrustStore;
use vex_lens::stores::embedded::EmbeddedStore;

pub fn run(args: ReindexArgs) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(args.config.as_deref())?;
    let dir = args.data_dir.clone().unwrap_or_else(|| cfg.store.data_dir.clone());
    if !dir.join(vex_lens::stores::embedded::DB_FILE).exists() {
        anyhow::bail!("no embedded store in {}", dir.display());
    }
    let policies = vex_lens::trust::Policies::new(vex_lens::app::load_policy(&cfg)?);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let store = EmbeddedStore::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
        for t in store.trust_policies().await? {
            policies.install(t);
        }
        let r = store.reindex(&|t| policies.for_tenant(t)).await.context("reindexing the store")?;
        eprintln!(
            "reindexed {} from schema version {} to {}: {} observation(s) re-keyed, {} unchanged, {} dropped, {} record(s) recomputed",
            dir.display(),
            r.from,
            vex_lens::domain::upgrade::STORE_SCHEMA_VERSION,
            r.rekeyed,
            r.unchanged,
            r.dropped,
            r.records
        );
        if r.dropped > 0 {
            eprintln!(
                "the {} dropped observation(s) need their documents: ingest those documents again (e.g. `vex-lens serve --ingest-dir <dir> --data-dir {}`)",
                r.dropped,
                dir.display()
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}
