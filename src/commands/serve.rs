//! `vex-lens serve` (the stream processor) and `vex-lens records` (read a store back).

use crate::cli::{RecordsArgs, ServeArgs};
use anyhow::Context;
use std::io::Write;
use std::process::ExitCode;
use vex_lens::app::{self, RunOptions};
use vex_lens::config::Config;
use vex_lens::ports::RecordStore;
use vex_lens::stores::embedded::EmbeddedStore;

/// Applies the command-line flags over the file and environment configuration.
pub fn apply_flags(mut cfg: Config, a: &ServeArgs) -> Config {
    let set = |dst: &mut String, v: &Option<String>| {
        if let Some(v) = v {
            *dst = v.clone();
        }
    };
    if a.kafka_brokers.is_some() {
        cfg.kafka.brokers = a.kafka_brokers.clone();
    }
    set(&mut cfg.kafka.topic, &a.topic);
    set(&mut cfg.kafka.observations_topic, &a.observations_topic);
    if a.dlq_topic.is_some() {
        cfg.kafka.dlq_topic = a.dlq_topic.clone();
    }
    set(&mut cfg.kafka.group_id, &a.group_id);
    if a.mongo_uri.is_some() {
        cfg.mongo.uri = a.mongo_uri.clone();
    }
    set(&mut cfg.mongo.db, &a.mongo_db);
    set(&mut cfg.http.listen, &a.listen);
    if a.ingest_dir.is_some() {
        cfg.ingest.dir = a.ingest_dir.clone();
    }
    if a.stdin {
        cfg.ingest.stdin = true;
    }
    if let Some(d) = &a.data_dir {
        cfg.store.data_dir = d.clone();
    }
    if let Some(n) = a.max_message_bytes {
        cfg.ingest.max_message_bytes = n;
    }
    set(&mut cfg.ingest.tenant, &a.tenant);
    cfg
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let format = match args.log_format {
        Some(crate::cli::LogFormatArg::Json) => vex_lens::telemetry::LogFormat::Json,
        Some(crate::cli::LogFormatArg::Text) => vex_lens::telemetry::LogFormat::Text,
        None => vex_lens::telemetry::LogFormat::for_terminal(),
    };
    let (cfg, location) = Config::load_located(args.config.as_deref())?;
    let cfg = apply_flags(cfg, &args);
    cfg.validate()?;
    // Before any runtime starts (the OTLP exporter's blocking client owns one); the
    // handle flushes the queued spans when the service has stopped.
    let traces = vex_lens::telemetry::init(format, &cfg.telemetry).context("starting the trace export")?;
    if args.once && cfg.source_mode() == vex_lens::config::SourceMode::Kafka {
        anyhow::bail!("--once is for the embedded mode (no --kafka-brokers)");
    }
    let result = app::run(cfg, RunOptions { once: args.once, config: Some(location) });
    if let Some(t) = traces {
        t.shutdown();
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_records(args: RecordsArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        if let Some(uri) = &args.mongo_uri {
            let store = vex_lens::stores::connect_mongo(uri, &args.mongo_db).await?;
            let records = store.records.list_records(args.tenant.as_deref(), None).await?;
            let records = select(records, &args, store.observations.as_ref()).await?;
            crate::commands::consensus::write_records(&mut out, &records, args.format)?;
        } else {
            let dir = match &args.data_dir {
                Some(d) => d.clone(),
                None => Config::load(None)?.store.data_dir,
            };
            if !dir.join(vex_lens::stores::embedded::DB_FILE).exists() {
                anyhow::bail!("no embedded store in {}", dir.display());
            }
            let store = EmbeddedStore::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
            if args.verifications {
                for v in store.verifications().await? {
                    writeln!(out, "{}", serde_json::to_string(&v)?)?;
                }
            } else if args.export_jobs {
                for j in store.export_jobs().await? {
                    writeln!(out, "{}", serde_json::to_string(&j)?)?;
                }
            } else if args.dead_letters {
                for d in store.dead_letters().await? {
                    writeln!(out, "{}", serde_json::to_string(&d)?)?;
                }
            } else {
                let records = store.list_records(args.tenant.as_deref(), None).await?;
                let records = select(records, &args, &store).await?;
                crate::commands::consensus::write_records(&mut out, &records, args.format)?;
            }
        }
        out.flush()?;
        Ok(ExitCode::SUCCESS)
    })
}

/// The records `--artifact`/`--vulnerability` select; a pair no record is stored for gets
/// the record derived from the stored statements that apply to its artifact (issue 17:
/// a scanner's concrete package), announced on stderr.
async fn select(
    records: Vec<vex_lens::domain::consensus::ConsensusRecord>,
    args: &RecordsArgs,
    observations: &dyn vex_lens::ports::ObservationStore,
) -> anyhow::Result<Vec<vex_lens::domain::consensus::ConsensusRecord>> {
    use vex_lens::domain::consensus::{PackageState, PairKey};
    let Some(raw) = &args.artifact else {
        return Ok(match &args.vulnerability {
            Some(v) => records.into_iter().filter(|r| &r.vulnerability == v).collect(),
            None => records,
        });
    };
    let key = vex_lens::domain::keys::parse_key(raw).with_context(|| format!("--artifact {raw:?}"))?;
    let chosen: Vec<_> = records
        .into_iter()
        .filter(|r| r.artifact == key.key && args.vulnerability.as_ref().map_or(true, |v| &r.vulnerability == v))
        .collect();
    let Some(vulnerability) = args.vulnerability.clone().filter(|_| chosen.is_empty()) else {
        return Ok(chosen);
    };
    let tenant = args.tenant.clone().unwrap_or_else(|| "default".to_string());
    let (state, _) = PackageState::rebuild(observations.observations_for_package(&tenant, &key.package).await?);
    let pair = PairKey { tenant, artifact: key.key.clone(), vulnerability };
    // The configuration's policy (as `serve` loads it; a tenant's trust overrides set
    // through the API are not applied here).
    let policy = vex_lens::app::load_policy(&Config::load(None)?)?;
    match state.evaluate(&pair, &policy, false)? {
        Some(r) => {
            eprintln!(
                "derived: no statement names {} exactly; computed from the {} stored statement(s) that apply to it (not stored)",
                pair.artifact,
                r.statements.len()
            );
            Ok(vec![r])
        }
        None => Ok(Vec::new()),
    }
}
