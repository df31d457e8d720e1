//! `vex-lens reindex`: brings a store written by an older version to this version when
//! start-up refuses to (`crate::upgrade`): the lossy observations and every record of
//! their packages are dropped, the rest re-keyed and every record recomputed under the
//! configuration's policy with the tenants' stored trust changes installed. The embedded
//! store under `--data-dir`, or MongoDB with `--mongo-uri` (stop every instance first:
//! an instance running meanwhile would write records the reindex then replaces).

use crate::cli::ReindexArgs;
use anyhow::Context;
use std::process::ExitCode;
use vex_lens::config::Config;
use vex_lens::ports::Stores;

pub fn run(args: ReindexArgs) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(args.config.as_deref())?;
    let policies = vex_lens::trust::Policies::new(vex_lens::app::load_policy(&cfg)?);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let (store, name, again): (Stores, String, String) = match &args.mongo_uri {
            Some(uri) => {
                let s = vex_lens::stores::connect_mongo(uri, &args.mongo_db).await.context("connecting to MongoDB")?;
                s.admin.init().await.context("initialising the MongoDB store")?;
                (s, format!("MongoDB database {}", args.mongo_db), "e.g. re-publish them to the documents topic".into())
            }
            None => {
                let dir = args.data_dir.clone().unwrap_or_else(|| cfg.store.data_dir.clone());
                if !dir.join(vex_lens::stores::embedded::DB_FILE).exists() {
                    anyhow::bail!("no embedded store in {}", dir.display());
                }
                let s = vex_lens::stores::embedded::EmbeddedStore::open(&dir)
                    .with_context(|| format!("opening {}", dir.display()))?;
                let again = format!("e.g. `vex-lens serve --ingest-dir <dir> --data-dir {}`", dir.display());
                (Stores::of(std::sync::Arc::new(s)), dir.display().to_string(), again)
            }
        };
        for t in store.trust.trust_policies().await? {
            policies.install(t);
        }
        let r = vex_lens::upgrade::reindex((&store).into(), &|t| policies.for_tenant(t))
            .await
            .context("reindexing the store")?;
        eprintln!(
            "reindexed {name} from schema version {} to {}: {} observation(s) re-keyed, {} unchanged, {} dropped, {} record(s) recomputed",
            r.from,
            vex_lens::domain::upgrade::STORE_SCHEMA_VERSION,
            r.rekeyed,
            r.unchanged,
            r.dropped,
            r.records
        );
        if r.dropped > 0 {
            eprintln!("the {} dropped observation(s) need their documents: ingest those documents again ({again})", r.dropped);
        }
        Ok(ExitCode::SUCCESS)
    })
}
