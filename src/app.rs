//! Composition root of `vex-lens serve`: builds the stores and sources from the configuration,
//! starts the actors and the HTTP server inside an actix system on a multi-thread tokio
//! runtime, runs the sources, and shuts down in order (stop sources, drain, commit,
//! stop HTTP) on SIGTERM/SIGINT or, with `--once`, when the inputs are processed.

use crate::actors::registry::RegistrySettings;
use crate::actors::writer::WriterSettings;
use crate::actors::{Pipeline, PipelineSettings};
use crate::config::{Config, SourceMode};
use crate::domain::trust::{IssuerDirectory, Policy};
use crate::http::{ReadinessCheck, StatusInfo};
use crate::ports::Stores;
use crate::sources::files::{self as sources, SourceSettings};
use crate::sources::kafka;
use crate::stores::embedded::EmbeddedStore;
use anyhow::Context as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Options of `serve` that are not configuration.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Embedded mode: process the inputs present now, drain, exit.
    pub once: bool,
    /// Where the configuration file was found (logged at start and shown by `/status`).
    pub config: Option<crate::config::ConfigLocation>,
}

/// Loads the issuer directory named by the configuration (none when the file is absent).
pub fn load_policy(cfg: &Config) -> anyhow::Result<Policy> {
    Ok(load_policy_found(cfg)?.0)
}

/// [`load_policy`], and whether the directory file was found.
pub fn load_policy_found(cfg: &Config) -> anyhow::Result<(Policy, bool)> {
    let path = &cfg.consensus.issuers_file;
    let (directory, found) = if path.exists() {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let directory = IssuerDirectory::from_str(&path.display().to_string(), &text)?;
        // Every key parses, and no key belongs to two issuers (or start-up stops here).
        crate::crypto::KeyDirectory::from_directory(&directory)?;
        (directory, true)
    } else {
        (IssuerDirectory::default(), false)
    };
    Ok((Policy::new(cfg.consensus.mode, directory, cfg.consensus.knobs.clone()), found))
}

/// Runs the service until shutdown; blocks the calling thread.
pub fn run(cfg: Config, opts: RunOptions) -> anyhow::Result<()> {
    cfg.validate()?;
    let (policy, issuers_found) = load_policy_found(&cfg)?;
    let location = opts
        .config
        .clone()
        .unwrap_or(crate::config::ConfigLocation { file: None, source: crate::config::ConfigSource::BuiltIn });
    let issuers = policy.directory.issuers.len();
    let config_status = crate::http::ConfigStatus {
        file: location.file.as_ref().map(|p| p.display().to_string()),
        source: location.source,
        issuers_file: cfg.consensus.issuers_file.display().to_string(),
        issuers_loaded: issuers_found,
        issuers,
    };
    let issuer_text = if issuers_found {
        format!("{} ({issuers} issuers)", cfg.consensus.issuers_file.display())
    } else {
        format!("none: {} not found, every issuer unknown", cfg.consensus.issuers_file.display())
    };
    tracing::info!(
        event = "configuration",
        config = %location,
        issuers_file = %cfg.consensus.issuers_file.display(),
        issuers_loaded = issuers_found,
        "configuration: {location}; issuer directory: {issuer_text}"
    );
    let opts = RunOptions { config: Some(location), ..opts };
    let policy = (policy, config_status);
    let sys = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("vex-lens-worker")
            .build()
            .expect("tokio runtime")
    });
    let result = sys.block_on(serve(Arc::new(cfg), Arc::new(policy.0), policy.1, opts));
    actix::System::current().stop();
    result
}

fn settings(cfg: &Config) -> PipelineSettings {
    let a = &cfg.actors;
    PipelineSettings {
        workers: cfg.ingest.workers,
        writers: a.writers,
        artifact_threads: a.artifact_threads,
        writer: WriterSettings {
            batch_max: a.writer_batch_max,
            flush_after: Duration::from_millis(a.writer_flush_ms),
            retry_initial: Duration::from_millis(a.retry_initial_ms),
            retry_max: Duration::from_millis(a.retry_max_ms),
            store_timeout: Duration::from_millis(a.store_timeout_ms),
            mailbox_capacity: a.mailbox_capacity,
        },
        registry: RegistrySettings {
            max_live: a.max_live_actors,
            max_observations: a.max_live_observations,
            idle_evict: Duration::from_secs(a.idle_evict_secs),
            mailbox_capacity: a.mailbox_capacity,
            max_records_in_flight: a.max_records_in_flight,
        },
    }
}

/// Installs the SIGTERM/SIGINT handlers now (before anything starts) and returns the
/// shutdown flag they raise.
fn shutdown_signal() -> anyhow::Result<watch::Receiver<bool>> {
    let (tx, rx) = watch::channel(false);
    #[cfg(unix)]
    let (mut term, mut int) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        )
    };
    tokio::spawn(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!(event = "shutdown_requested", "shutting down: stop consuming, drain, commit");
        let _ = tx.send(true);
    });
    Ok(rx)
}

async fn connect_store(
    cfg: &Config,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<(Stores, Option<EmbeddedStore>)> {
    let retry = Duration::from_millis(cfg.kafka.connect_retry_ms);
    let (store, embedded): (Stores, Option<EmbeddedStore>) = match &cfg.mongo.uri {
        Some(uri) => {
            let mut attempt = 0u32;
            loop {
                match crate::stores::connect_mongo(uri, &cfg.mongo.db).await {
                    Ok(s) => break (s, None),
                    Err(e) if e.is_retriable() && !*shutdown.borrow() => {
                        attempt += 1;
                        crate::warn_event!(crate::telemetry::events::LogEvent::StoreUnreachable, attempt, error = %e, "MongoDB unreachable; retrying");
                        tokio::time::sleep(retry).await;
                    }
                    Err(e) => return Err(e).context("connecting to MongoDB"),
                }
            }
        }
        None => {
            let s = EmbeddedStore::open_with_cache(&cfg.store.data_dir, cfg.store.cache_bytes())
                .context("opening the embedded store")?;
            tracing::info!(event = "store_opened", path = %s.path().display(), "embedded store opened");
            (Stores::of(Arc::new(s.clone())), Some(s))
        }
    };
    let mut attempt = 0u32;
    loop {
        match store.admin.init().await {
            Ok(()) => break,
            Err(e) if e.is_retriable() && !*shutdown.borrow() => {
                attempt += 1;
                crate::warn_event!(crate::telemetry::events::LogEvent::StoreInitRetry, attempt, error = %e, "store init failed; retrying");
                tokio::time::sleep(retry).await;
            }
            Err(e) => return Err(e).context("initialising the store"),
        }
    }
    Ok((store, embedded))
}

/// Brings the store to the current schema version, or refuses to start
/// (`crate::upgrade`).
async fn upgrade_store(store: &Stores, policies: &crate::trust::Policies) -> anyhow::Result<()> {
    let r = crate::upgrade::upgrade(store.into(), &|t| policies.for_tenant(t)).await.context("upgrading the store")?;
    if r.upgraded() {
        tracing::info!(
            event = "store_upgraded",
            from = r.from,
            to = crate::domain::upgrade::STORE_SCHEMA_VERSION,
            rekeyed = r.rekeyed,
            unchanged = r.unchanged,
            records = r.records,
            "store upgraded"
        );
    }
    Ok(())
}

async fn serve(
    cfg: Arc<Config>,
    policy: Arc<Policy>,
    config_status: crate::http::ConfigStatus,
    opts: RunOptions,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let shutdown = shutdown_signal()?;
    let mode = cfg.source_mode();
    let (store, embedded) = connect_store(&cfg, &shutdown).await?;
    // The depth series exist from start-up: the default tenant at 0, then what the store holds.
    let mut depths = store.conflicts.conflict_queue_depths().await.unwrap_or_default();
    if !depths.iter().any(|(t, _)| *t == cfg.ingest.tenant) {
        depths.push((cfg.ingest.tenant.clone(), 0));
    }
    crate::telemetry::events::ConflictQueueDepth { depths: &depths }.emit();
    // The tenants' stored trust changes win over the configuration's seed: installed
    // before any actor evaluates, then polled so several instances converge.
    let policies = Arc::new(crate::trust::Policies::new((*policy).clone()));
    let pipeline = Pipeline::start_with_policies(&store, policies.clone(), settings(&cfg));
    let trust = Arc::new(crate::trust::TrustService::new(
        store.trust.clone(),
        store.observations.clone(),
        policies.clone(),
        Some(Arc::new(pipeline.clone())),
        cfg.api.admin_changes_per_minute,
    ));
    trust.refresh().await.context("reading the tenants' trust settings")?;
    // A store written by an older version is upgraded (or refused) before anything is
    // ingested: its records are recomputed under the policies just installed.
    upgrade_store(&store, &policies).await?;
    // A trust change whose recompute a crash cut short is finished now (beside ingestion).
    tokio::spawn({
        let trust = trust.clone();
        async move {
            if let Err(e) = trust.finish_pending(None).await {
                crate::warn_event!(
                    crate::telemetry::events::LogEvent::TrustPollFailed,
                    error = %e,
                    "owed trust recompute not finished at start-up; the trust poller retries"
                );
            }
        }
    });
    tokio::spawn(trust.clone().run_poll(Duration::from_millis(cfg.consensus.trust_poll_interval_ms), shutdown.clone()));

    let producer = match mode {
        SourceMode::Kafka => Some(kafka::create_producer(&cfg).context("creating the Kafka producer")?),
        SourceMode::Embedded => None,
    };
    let broker: Option<ReadinessCheck> = producer.clone().map(|p| {
        let check: ReadinessCheck = Arc::new(move || {
            let p = p.clone();
            Box::pin(async move { kafka::broker_metadata(&p).await.map(|_| ()) })
        });
        check
    });
    let status = status_info(mode, embedded.is_some(), opts.once, config_status);
    let feeds_health = status.feeds.clone();
    let export_jobs = start_export_jobs(&cfg, &store, status.store)?;
    let deps = crate::http::ServerDeps {
        stores: store.clone(),
        broker,
        status,
        export: Some(export_jobs),
        export_dir: cfg.export.dir.clone(),
        trust,
        api: cfg.api.clone(),
        workers: cfg.http.workers,
        feeds: crate::http::feeds::FeedsView::new(
            &cfg,
            Arc::new(crate::stores::feed_files::FeedFiles::under(&cfg.store.data_dir)),
        ),
    };
    let (server, addr) =
        crate::http::serve(&cfg.http.listen, deps).with_context(|| format!("binding {}", cfg.http.listen))?;
    let server_handle = server.handle();
    actix::spawn(server);
    tracing::info!(event = "listening", address = %addr, mode = ?mode, "HTTP listening on {addr}");

    match (mode, producer) {
        (SourceMode::Kafka, Some(producer)) => {
            if kafka::wait_for_broker(&producer, Duration::from_millis(cfg.kafka.connect_retry_ms), &shutdown).await {
                let emit = crate::sources::feeds::Emitter::Kafka {
                    producer: producer.clone(),
                    topic: cfg.kafka.topic.clone(),
                    shutdown: shutdown.clone(),
                };
                let feeds = start_feeds(&cfg, &policy, emit, &feeds_health, &shutdown)?;
                kafka::run(cfg.clone(), pipeline.clone(), store.ledger.clone(), producer, shutdown.clone()).await?;
                for f in feeds {
                    let _ = f.await;
                }
            }
        }
        _ => {
            let feeds = |emit| start_feeds(&cfg, &policy, emit, &feeds_health, &shutdown);
            run_embedded(&cfg, &pipeline, store.ledger.clone(), embedded, opts.once, &shutdown, feeds).await?
        }
    }
    pipeline.drain().await.context("draining the store writer")?;
    if let Ok(depths) = store.conflicts.conflict_queue_depths().await {
        crate::telemetry::events::ConflictQueueDepth { depths: &depths }.emit();
    }
    // The run's summary (`crate::progress::Summary`) is the `stopped` line, in the log
    // format (a JSON line among JSON lines), its counts also as fields.
    let summary = run_summary(if opts.once { "serve --once" } else { "serve" }, started.elapsed());
    tracing::info!(
        event = "stopped",
        documents = summary.documents.unwrap_or(0),
        observations = summary.observations.unwrap_or(0),
        records = summary.records.unwrap_or(0),
        dead_letters = summary.dead_letters.unwrap_or(0),
        elapsed_ms = summary.elapsed.as_millis() as u64,
        "{summary}; drained, exiting"
    );
    server_handle.stop(true).await;
    Ok(())
}

/// What `/status` reports about this process (the feeds' health filled in as they run).
fn status_info(mode: SourceMode, embedded: bool, once: bool, config_status: crate::http::ConfigStatus) -> StatusInfo {
    StatusInfo {
        version: env!("CARGO_PKG_VERSION"),
        commit: option_env!("VEXLENS_GIT_COMMIT"),
        mode: match mode {
            SourceMode::Kafka => "kafka",
            SourceMode::Embedded => "embedded",
        },
        store: if embedded { "embedded" } else { "mongodb" },
        feature_flags: [("dsse_verification", true), ("kafka", mode == SourceMode::Kafka), ("once", once)]
            .into_iter()
            .collect(),
        config: Some(config_status),
        feeds: crate::sources::feeds::FeedsHealth::default(),
    }
}

/// The export job actor, with the bundle signing key of `export.sign_key` (read once).
fn start_export_jobs(
    cfg: &Config,
    store: &Stores,
    source: &'static str,
) -> anyhow::Result<actix::Addr<crate::actors::export_job::ExportJobActor>> {
    let signer = match &cfg.export.sign_key {
        Some(p) => {
            let pem = zeroize::Zeroizing::new(
                std::fs::read_to_string(p).with_context(|| format!("export.sign_key: reading {}", p.display()))?,
            );
            let key = crate::crypto::SigningKey::from_pem(&pem)
                .map_err(|e| anyhow::anyhow!("export.sign_key: {}: {e}", p.display()))?;
            Some(Arc::new(key))
        }
        None => None,
    };
    let jobs = {
        let (records, observations, jobs) =
            (store.records.clone(), store.observations.clone(), store.export_jobs.clone());
        let dir = cfg.export.dir.clone();
        let retention = crate::actors::export_job::Retention {
            keep_per_tenant: cfg.export.keep_per_tenant,
            max_age_ms: i64::try_from(cfg.export.max_age_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
        };
        actix::Supervisor::start(move |_| {
            crate::actors::export_job::ExportJobActor::new(records, observations, jobs, dir, signer, source, retention)
        })
    };
    Ok(jobs)
}

/// The embedded mode's intake: the watched directory (or stdin) through the in-process
/// ingest flow, and the enabled feeds (not with `--once`); returns at shutdown, or once
/// the inputs present at start are processed with `--once`.
async fn run_embedded(
    cfg: &Config,
    pipeline: &Pipeline,
    ledger: Arc<dyn crate::ports::DocumentLedger>,
    embedded: Option<EmbeddedStore>,
    once: bool,
    shutdown: &watch::Receiver<bool>,
    start_feeds: impl FnOnce(crate::sources::feeds::Emitter) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>>,
) -> anyhow::Result<()> {
    let s = SourceSettings {
        dir: cfg.ingest.dir.clone(),
        stdin: cfg.ingest.stdin,
        poll: Duration::from_millis(cfg.ingest.poll_interval_ms),
        settle: Duration::from_millis(cfg.ingest.settle_ms),
        follow_symlinks: cfg.ingest.follow_symlinks,
        tenant: cfg.ingest.tenant.clone(),
        max_bytes: cfg.ingest.max_message_bytes,
        max_in_flight: cfg.ingest.max_in_flight_documents,
        max_in_flight_bytes: cfg.ingest.max_in_flight_bytes,
        once,
    };
    if s.dir.is_none() && !s.stdin {
        crate::warn_event!(
            crate::telemetry::events::LogEvent::NoInputs,
            "embedded mode without --ingest-dir or --stdin: serving HTTP only"
        );
    }
    let intake = sources::Intake {
        files: embedded.clone().map(|e| Arc::new(e) as Arc<dyn crate::ports::ProcessedFiles>),
        dead_letters: match &embedded {
            Some(e) => Arc::new(e.clone()),
            None => Arc::new(crate::ports::EventOnly),
        },
    };
    // The in-process observation bus: the pipeline's own artifact actors.
    let ingest = crate::ingest::Ingest::new(
        pipeline.clone(),
        Arc::new(pipeline.clone()),
        ledger,
        Arc::new(crate::ports::SystemClock),
        cfg.ingest.max_message_bytes,
        crate::ingest::RetryPolicy::once(),
        shutdown.clone(),
    );
    // `--once`: a progress bar while the inputs present now are processed (drawn
    // only on a terminal's stderr).
    let progress = if once { Some(once_progress(&s).await) } else { None };
    let feeds = if once {
        Vec::new()
    } else {
        let emit = crate::sources::feeds::Emitter::Ingest {
            ingest: ingest.clone(),
            dead_letters: intake.dead_letters.clone(),
        };
        start_feeds(emit)?
    };
    sources::run(ingest, intake, s, shutdown.clone()).await;
    if let Some((progress, ticker)) = progress {
        // The last documents' records are written by the drain below; the summary
        // counts them.
        ticker.abort();
        progress.finish();
    }
    if !once {
        let mut sd = shutdown.clone();
        while !*sd.borrow() {
            if sd.changed().await.is_err() {
                break;
            }
        }
    }
    // The feeds stop at shutdown; their last documents settle before the drain.
    for f in feeds {
        let _ = f.await;
    }
    Ok(())
}

/// What this process did, from its metrics: documents (ingested and dead-lettered),
/// observations made durable, current records written, diagnostics by code, dead letters.
fn run_summary(command: &'static str, elapsed: Duration) -> crate::progress::Summary {
    let m = crate::telemetry::metrics();
    let outcome = |o: &str| crate::telemetry::OutcomeLabel { outcome: o.to_string() };
    let diagnostics = crate::domain::codes::DiagnosticCode::ALL
        .iter()
        .map(|c| {
            let label = crate::telemetry::CodeLabel { code: c.as_str().to_string() };
            (c.as_str().to_string(), m.diagnostics.get_or_create(&label).get())
        })
        .collect();
    let dead_letters = crate::telemetry::labels::DEAD_LETTER_REASONS
        .iter()
        .map(|r| m.dead_letter.get_or_create(&crate::telemetry::ReasonLabel { reason: r.as_str().to_string() }).get())
        .sum();
    crate::progress::Summary {
        command,
        documents: Some(
            m.documents.get_or_create(&outcome("ingested")).get()
                + m.documents.get_or_create(&outcome("dead_lettered")).get(),
        ),
        observations: Some(m.observations_applied.get()),
        records: Some(m.store_writes_of("document", crate::stores::mongo::CONSENSUS)),
        diagnostics: Some(diagnostics),
        dead_letters: Some(dead_letters),
        elapsed,
    }
}

/// The progress bar of `serve --once` over the files of the watched directory (counted
/// once at start: files an earlier run processed are not read again, so the bar may end
/// short of its length), updated from the metrics every 200 ms; with the task updating it.
async fn once_progress(s: &SourceSettings) -> (Arc<crate::progress::Progress>, tokio::task::JoinHandle<()>) {
    let files = match s.dir.clone() {
        Some(dir) => {
            let follow = s.follow_symlinks;
            tokio::task::spawn_blocking(move || {
                crate::sources::scan::scan(&dir, follow).ok().map(|s| s.files.len() as u64)
            })
            .await
            .ok()
            .flatten()
        }
        None => None,
    };
    let progress = Arc::new(crate::progress::Progress::start(files));
    let p = progress.clone();
    let ticker = tokio::spawn(async move {
        if !p.is_drawn() {
            return;
        }
        loop {
            let now = run_summary("serve --once", Duration::ZERO);
            p.set_documents(now.documents.unwrap_or(0));
            p.set_observations(now.observations.unwrap_or(0));
            p.set_records(now.records.unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    (progress, ticker)
}

/// The issuer names (id, display name, aliases) of each selected feed's configured
/// issuer, which must be an issuer id of the directory.
fn feed_issuer_names(
    cfg: &Config,
    policy: &Policy,
    feeds: &[crate::config::FeedConfig],
) -> anyhow::Result<Vec<Vec<String>>> {
    feeds
        .iter()
        .map(|f| {
            let Some(i) = policy.directory.issuers.iter().find(|i| i.id == f.issuer) else {
                anyhow::bail!(
                    "feed {:?}: issuer {:?} is not an issuer id of {}",
                    f.name,
                    f.issuer,
                    cfg.consensus.issuers_file.display()
                );
            };
            let mut names = vec![i.id.clone()];
            names.extend((!i.display_name.is_empty()).then(|| i.display_name.clone()));
            names.extend(i.aliases.iter().cloned());
            Ok(names)
        })
        .collect()
}

/// The feeds `names` names (each must be configured), or every enabled feed when none.
pub fn select_feeds(cfg: &Config, names: &[String]) -> anyhow::Result<Vec<crate::config::FeedConfig>> {
    if names.is_empty() {
        return Ok(cfg.feeds.iter().filter(|f| f.enabled).cloned().collect());
    }
    names
        .iter()
        .map(|n| {
            cfg.feeds.iter().find(|f| &f.name == n).cloned().ok_or_else(|| {
                let known: Vec<&str> = cfg.feeds.iter().map(|f| f.name.as_str()).collect();
                anyhow::anyhow!("no feed {n:?} is configured (feeds: {known:?})")
            })
        })
        .collect()
}

/// `vex-lens feed run --once`: checks each selected feed once (every failed document
/// retried now), emitting into the embedded pipeline (or the MongoDB store) through the
/// ingest flow, drains, and returns one summary per feed. Blocks the calling thread.
pub fn run_feeds_once(cfg: Config, names: &[String]) -> anyhow::Result<Vec<crate::sources::feeds::Summary>> {
    cfg.validate()?;
    if cfg.source_mode() == SourceMode::Kafka {
        return run_feeds_once_kafka(cfg, names);
    }
    let feeds = select_feeds(&cfg, names)?;
    let policy = load_policy(&cfg)?;
    let issuer_names = feed_issuer_names(&cfg, &policy, &feeds)?;
    let sys = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("vex-lens-worker")
            .build()
            .expect("tokio runtime")
    });
    let cfg = Arc::new(cfg);
    let result = sys.block_on(async move {
        let shutdown = shutdown_signal()?;
        let (store, embedded) = connect_store(&cfg, &shutdown).await?;
        let policies = Arc::new(crate::trust::Policies::new(policy));
        let pipeline = Pipeline::start_with_policies(&store, policies.clone(), settings(&cfg));
        let trust = crate::trust::TrustService::new(
            store.trust.clone(),
            store.observations.clone(),
            policies.clone(),
            Some(Arc::new(pipeline.clone())),
            cfg.api.admin_changes_per_minute,
        );
        trust.refresh().await.context("reading the tenants' trust settings")?;
        upgrade_store(&store, &policies).await?;
        let ingest = crate::ingest::Ingest::new(
            pipeline.clone(),
            Arc::new(pipeline.clone()),
            store.ledger.clone(),
            Arc::new(crate::ports::SystemClock),
            cfg.ingest.max_message_bytes,
            crate::ingest::RetryPolicy::once(),
            shutdown.clone(),
        );
        let deps = crate::sources::feeds::FeedDeps {
            state: Arc::new(crate::stores::feed_files::FeedFiles::under(&cfg.store.data_dir)),
            emit: Some(crate::sources::feeds::Emitter::Ingest {
                ingest,
                dead_letters: match &embedded {
                    Some(e) => Arc::new(e.clone()),
                    None => Arc::new(crate::ports::EventOnly),
                },
            }),
            clock: Arc::new(crate::ports::SystemClock),
        };
        let out = check_each_once(&cfg, feeds, issuer_names, &deps, &shutdown).await?;
        pipeline.drain().await.context("draining the store writer")?;
        Ok(out)
    });
    actix::System::current().stop();
    result
}

/// `vex-lens feed check NAME`: a dry run of one feed (configured, enabled or not): reads
/// its metadata and lists (conditionally, with the state's validators) and reports what
/// `feed run --once` would fetch now; fetches no document, emits nothing, saves no state.
pub fn check_feed(cfg: &Config, name: &str) -> anyhow::Result<crate::sources::feeds::Summary> {
    cfg.validate()?;
    let feeds = select_feeds(cfg, &[name.to_string()])?;
    let policy = load_policy(cfg)?;
    let names = feed_issuer_names(cfg, &policy, &feeds)?.remove(0);
    let f = feeds.into_iter().next().expect("one feed selected");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let deps = crate::sources::feeds::FeedDeps {
            state: Arc::new(crate::stores::feed_files::FeedFiles::under(&cfg.store.data_dir)),
            emit: None,
            clock: Arc::new(crate::ports::SystemClock),
        };
        let tenant = f.tenant_or(&cfg.ingest.tenant).to_string();
        let max = f.max_bytes(cfg.ingest.max_message_bytes);
        let source = crate::sources::feeds::FeedSource::new(f, tenant, names, max, deps)
            .with_context(|| format!("feed {name:?}"))?;
        Ok(source.run_once(true).await)
    })
}

/// Checks each feed once, in order, through `deps` (both modes of [`run_feeds_once`]),
/// until shutdown; a feed that cannot be built stops the run naming it.
async fn check_each_once(
    cfg: &Config,
    feeds: Vec<crate::config::FeedConfig>,
    issuer_names: Vec<Vec<String>>,
    deps: &crate::sources::feeds::FeedDeps,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<crate::sources::feeds::Summary>> {
    let mut out = Vec::new();
    for (f, names) in feeds.into_iter().zip(issuer_names) {
        let tenant = f.tenant_or(&cfg.ingest.tenant).to_string();
        let max = f.max_bytes(cfg.ingest.max_message_bytes);
        let name = f.name.clone();
        let source = crate::sources::feeds::FeedSource::new(f, tenant, names, max, deps.clone())
            .with_context(|| format!("feed {name:?}"))?;
        out.push(source.run_once(true).await);
        if *shutdown.borrow() {
            break;
        }
    }
    Ok(out)
}

/// [`run_feeds_once`] in Kafka mode: the documents go to `kafka.topic`, each acknowledged
/// by the broker (`acks=all`); the service's consumers ingest them.
fn run_feeds_once_kafka(cfg: Config, names: &[String]) -> anyhow::Result<Vec<crate::sources::feeds::Summary>> {
    let feeds = select_feeds(&cfg, names)?;
    let policy = load_policy(&cfg)?;
    let issuer_names = feed_issuer_names(&cfg, &policy, &feeds)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let shutdown = shutdown_signal()?;
        let producer = kafka::create_producer(&cfg).context("creating the Kafka producer")?;
        if !kafka::wait_for_broker(&producer, Duration::from_millis(cfg.kafka.connect_retry_ms), &shutdown).await {
            anyhow::bail!("stopped before the Kafka broker answered");
        }
        if let Err(e) = kafka::ensure_topics(&cfg).await {
            crate::warn_event!(crate::telemetry::events::LogEvent::TopicCreateFailed, error = %e, "topics not created");
        }
        let deps = crate::sources::feeds::FeedDeps {
            state: Arc::new(crate::stores::feed_files::FeedFiles::under(&cfg.store.data_dir)),
            emit: Some(crate::sources::feeds::Emitter::Kafka {
                producer: producer.clone(),
                topic: cfg.kafka.topic.clone(),
                shutdown: shutdown.clone(),
            }),
            clock: Arc::new(crate::ports::SystemClock),
        };
        let out = check_each_once(&cfg, feeds, issuer_names, &deps, &shutdown).await?;
        use rdkafka::producer::Producer;
        let _ = producer.flush(rdkafka::util::Timeout::After(Duration::from_secs(10)));
        Ok(out)
    })
}

/// Starts every enabled feed (`serve`, not `--once`), each checked every `interval`,
/// emitting through `emit`; their health goes to `/status`. A feed whose issuer is not in
/// the directory, or whose client cannot be built, stops the start-up naming it.
fn start_feeds(
    cfg: &Config,
    policy: &Policy,
    emit: crate::sources::feeds::Emitter,
    health: &crate::sources::feeds::FeedsHealth,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let feeds = select_feeds(cfg, &[])?;
    let names = feed_issuer_names(cfg, policy, &feeds)?;
    let deps = crate::sources::feeds::FeedDeps {
        state: Arc::new(crate::stores::feed_files::FeedFiles::under(&cfg.store.data_dir)),
        emit: Some(emit),
        clock: Arc::new(crate::ports::SystemClock),
    };
    let mut tasks = Vec::new();
    for (f, names) in feeds.into_iter().zip(names) {
        let tenant = f.tenant_or(&cfg.ingest.tenant).to_string();
        let max = f.max_bytes(cfg.ingest.max_message_bytes);
        let (name, interval) = (f.name.clone(), f.interval_duration());
        let source = crate::sources::feeds::FeedSource::new(f, tenant, names, max, deps.clone())
            .with_context(|| format!("feed {name:?}"))?;
        tracing::info!(event = "feed_started", feed = %name, interval_ms = interval.as_millis() as u64, "feed started");
        tasks.push(tokio::spawn(crate::sources::feeds::run_every(source, interval, health.clone(), shutdown.clone())));
    }
    Ok(tasks)
}
