//! Shared helpers for the integration tests against the real services (Kafka, the
//! MongoDB-wire server): service discovery from the environment, fresh names, corpus
//! loading, `kcat`, the `vex-lens serve` child process and the observations consumer run
//! in-process; also what the embedded tests share (`vex-lens` and `serve --once` runs, an
//! embedded `serve`, record checks).
//!
//! Invariants: when `VEXLENS_KAFKA_BROKERS`/`VEXLENS_MONGODB_URI` are unset a test is
//! skipped (prints "skipped: run scripts/test.sh"), unless `VEXLENS_REQUIRE_SERVICES=1`,
//! which turns a missing or unreachable service into a failure. Every test uses fresh
//! topic and database names.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use vex_lens::domain::consensus::{batch, ConsensusRecord};
use vex_lens::domain::model::{IngestContext, Observation};
use vex_lens::domain::normalise::{normalise_bytes, DEFAULT_MAX_DOCUMENT_BYTES};

/// Endpoints of the real services.
#[derive(Clone, Debug)]
pub struct Services {
    pub brokers: String,
    pub mongo_uri: String,
}

pub fn services_required() -> bool {
    std::env::var("VEXLENS_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// The services from the environment, or `None` (the caller returns: skipped).
pub fn services() -> Option<Services> {
    let brokers = std::env::var("VEXLENS_KAFKA_BROKERS").ok().filter(|s| !s.is_empty());
    let mongo_uri = std::env::var("VEXLENS_MONGODB_URI").ok().filter(|s| !s.is_empty());
    match (brokers, mongo_uri) {
        (Some(brokers), Some(mongo_uri)) => Some(Services { brokers, mongo_uri }),
        _ => {
            assert!(
                !services_required(),
                "VEXLENS_REQUIRE_SERVICES=1 but VEXLENS_KAFKA_BROKERS/VEXLENS_MONGODB_URI are unset"
            );
            eprintln!("skipped: run scripts/test.sh (VEXLENS_KAFKA_BROKERS/VEXLENS_MONGODB_URI unset)");
            None
        }
    }
}

/// `it_<test>_<pid>_<nanos>`: a fresh database/topic name (Mongo-safe, Kafka-safe).
pub fn fresh_name(test: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    // MongoDB database names are limited to 63 bytes.
    let mut name = format!("it_{test}_{}_{}", std::process::id(), nanos % 1_000_000_000_000);
    name.truncate(63);
    name
}

pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn corpus_dir() -> PathBuf {
    repo_dir().join("../shared/corpus")
}

/// Every `*.json` under the given corpus subdirectories, sorted.
pub fn corpus_files(subdirs: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for s in subdirs {
        collect_json(&corpus_dir().join(s), &mut out);
    }
    out.sort();
    out
}

fn collect_json(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_json(&p, out);
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
}

/// Copies the files under `from` into `to` (created), sub-directories included.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// Normalises files in-process (tenant `tenant`) and returns the observations.
pub fn observations_of(files: &[PathBuf], tenant: &str) -> Vec<Observation> {
    let mut out = Vec::new();
    for f in files {
        let bytes = std::fs::read(f).expect("read corpus file");
        let ctx = IngestContext { tenant: Some(tenant.to_string()), ..Default::default() };
        let doc = normalise_bytes(&f.display().to_string(), &bytes, &ctx, DEFAULT_MAX_DOCUMENT_BYTES)
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        out.extend(doc.observations);
    }
    out
}

/// Records with the default policy (the same as `vex-lens consensus` with no flags).
pub fn batch_records(observations: Vec<Observation>) -> Vec<ConsensusRecord> {
    let policy = vex_lens::domain::trust::Policy::new(
        vex_lens::domain::trust::Mode::WeightedVote,
        vex_lens::domain::trust::IssuerDirectory::default(),
        vex_lens::domain::trust::Knobs::default(),
    );
    batch(observations, &policy, false).0
}

/// The records `vex-lens consensus --tenant T FILES...` prints (run in the repo dir, so
/// it uses config/default.toml and config/issuers.toml like `serve` does).
pub fn cli_consensus(files: &[PathBuf], tenant: &str) -> Vec<ConsensusRecord> {
    let out = Command::new(env!("CARGO_BIN_EXE_vex-lens"))
        .current_dir(repo_dir())
        .arg("consensus")
        .arg("--tenant")
        .arg(tenant)
        .args(files)
        .output()
        .expect("run vex-lens consensus");
    assert!(out.status.success(), "vex-lens consensus failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect()
}

// --- Kafka through kcat (an independent producer/consumer we did not write) -------------

pub fn kcat_available() -> bool {
    Command::new("kcat").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Produces one file as one message with the given key and headers (the broker
/// auto-creates the topic with num.partitions = 6).
pub fn kcat_produce_file(brokers: &str, topic: &str, key: &str, headers: &[(&str, &str)], file: &Path) {
    let mut cmd = Command::new("kcat");
    cmd.args(["-P", "-b", brokers, "-t", topic, "-k", key, "-X", "message.max.bytes=16000000"]);
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}={v}"));
    }
    cmd.arg(file);
    let out = cmd.output().expect("run kcat");
    assert!(out.status.success(), "kcat produce {} failed: {}", file.display(), String::from_utf8_lossy(&out.stderr));
}

/// Produces many files, one message each, in a single kcat process (-l would split on
/// lines, so files are passed as arguments: kcat sends each file as one message).
pub fn kcat_produce_files(brokers: &str, topic: &str, headers: &[(&str, &str)], files: &[PathBuf]) {
    for chunk in files.chunks(200) {
        let mut cmd = Command::new("kcat");
        cmd.args(["-P", "-b", brokers, "-t", topic, "-X", "message.max.bytes=16000000"]);
        for (k, v) in headers {
            cmd.arg("-H").arg(format!("{k}={v}"));
        }
        cmd.args(chunk);
        let out = cmd.output().expect("run kcat");
        assert!(out.status.success(), "kcat produce failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Consumes a whole topic from the beginning (exits at its end) with a format string.
pub fn kcat_consume(brokers: &str, topic: &str, format: &str) -> String {
    let out = Command::new("kcat")
        .args(["-C", "-b", brokers, "-t", topic, "-o", "beginning", "-e", "-q", "-f", format])
        .args(["-X", "fetch.message.max.bytes=16000000"])
        .output()
        .expect("run kcat");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Number of messages in a topic (consumes it once, offsets only).
pub fn kcat_count(brokers: &str, topic: &str) -> usize {
    kcat_consume(brokers, topic, "%o\n").lines().filter(|l| !l.is_empty()).count()
}

/// Polls `f` every 250 ms until it holds or `timeout` passes.
pub fn wait_until<F: FnMut() -> bool>(timeout: Duration, mut f: F) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    f()
}

/// Polls `f` every 100 ms until it gives a value; panics (a test failure) naming `what`
/// when `timeout` passes first.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

// --- vex-lens serve ---------------------------------------------------------------------

/// Names and endpoints one serve test uses.
#[derive(Clone, Debug)]
pub struct ServeSetup {
    pub services: Services,
    pub topic: String,
    pub observations_topic: String,
    pub dlq_topic: String,
    pub group_id: String,
    pub db: String,
}

impl ServeSetup {
    pub fn fresh(services: &Services, test: &str) -> ServeSetup {
        let base = fresh_name(test);
        ServeSetup {
            services: services.clone(),
            topic: format!("{base}.documents"),
            observations_topic: format!("{base}.observations"),
            dlq_topic: format!("{base}.documents.dlq"),
            group_id: base.clone(),
            db: base,
        }
    }
}

/// A free 127.0.0.1 port for `--listen`.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// The secret of the observations topic's HMAC tags every test serve runs with
/// (`kafka.observations_hmac_key`; Kafka mode refuses to start without one).
pub const TEST_HMAC_KEY: &str = "vex-lens-integration-tests-hmac-key-0123456789";

/// A running `vex-lens serve` child; killed (SIGKILL) when dropped.
pub struct Serve {
    pub child: Child,
    pub listen: String,
    pub log: PathBuf,
}

impl Serve {
    /// Starts `vex-lens serve` with the setup's names; `extra_env` e.g. a short session
    /// timeout. Its output goes to a log file under target/it-logs/.
    pub fn start(setup: &ServeSetup, name: &str, extra_env: &[(&str, &str)]) -> Serve {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let log_dir = repo_dir().join("target/it-logs");
        std::fs::create_dir_all(&log_dir).expect("log dir");
        let log = log_dir.join(format!("{}-{name}.log", setup.db));
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vex-lens"));
        cmd.current_dir(repo_dir())
            .arg("serve")
            .args(["--kafka-brokers", &setup.services.brokers])
            .args(["--topic", &setup.topic])
            .args(["--observations-topic", &setup.observations_topic])
            .args(["--dlq-topic", &setup.dlq_topic])
            .args(["--group-id", &setup.group_id])
            .args(["--mongo-uri", &setup.services.mongo_uri])
            .args(["--mongo-db", &setup.db])
            .args(["--listen", &listen])
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .env("VEXLENS_KAFKA__OBSERVATIONS_HMAC_KEY", TEST_HMAC_KEY)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn vex-lens serve");
        Serve { child, listen, log }
    }

    /// HTTP GET on the serve's listener: (status code, body), or None if unreachable.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(&self.listen, path)
    }

    /// Waits until `/health/readiness` answers 200 (panics with the log otherwise).
    pub fn wait_ready(&mut self, timeout: Duration) {
        let ok = wait_until(timeout, || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("vex-lens serve exited early ({status}); log:\n{}", self.log_tail());
            }
            self.get("/health/readiness").is_some_and(|(code, _)| code == 200)
        });
        assert!(ok, "vex-lens serve not ready after {timeout:?}; log:\n{}", self.log_tail());
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit; returns whether it exited 0 in time.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill9();
        false
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// How many non-empty partition assignments its log shows so far.
    pub fn partitions_assigned(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("partitions assigned") && !l.contains("partitions=[]") && !l.contains("\"[]\""))
            .count()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Minimal HTTP/1.0 GET (no client dependency needed for health checks).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((code, body))
}

/// Waits (up to 120 s, failing if `serve` exits) until database `db` holds at least `n`
/// current records; returns them as JSON values.
pub fn wait_for_stored_records(serve: &mut Serve, mongo_uri: &str, db: &str, n: usize) -> Vec<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let mut records: Vec<serde_json::Value> = Vec::new();
    let done = wait_until(Duration::from_secs(120), || {
        assert!(serve.is_running(), "serve exited; log:\n{}", serve.log_tail());
        records = rt
            .block_on(stored_records(mongo_uri, db))
            .iter()
            .map(|r| serde_json::to_value(r).expect("record as JSON"))
            .collect();
        records.len() >= n
    });
    assert!(done, "{n} records expected, got {}; log:\n{}", records.len(), serve.log_tail());
    records
}

/// One HTTP/1.0 request (`headers` as given; a non-empty `body` is sent as JSON); the
/// status code and the body. Panics (a test failure) when the connection fails.
pub fn http_request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("read timeout");
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("write request");
    s.write_all(body.as_bytes()).expect("write body");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read response");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

/// Value of a sample line `name{labels} value` (or `name value`) in Prometheus text.
pub fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(sample) && l[sample.len()..].starts_with(' '))?.rsplit(' ').next()?.parse().ok()
}

/// Sum of every series of metric `name` (any labels) in Prometheus text; `None` when it
/// has no series.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(name) && (l[name.len()..].starts_with(' ') || l[name.len()..].starts_with('{')))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Runs `vex-lens args` from the repo dir and returns its output.
pub fn vex_lens(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vex-lens")).args(args).current_dir(repo_dir()).output().expect("run vex-lens")
}

/// Runs `vex-lens serve --once --listen 127.0.0.1:0 ARGS` (embedded) from the repo dir with
/// `env` added, and returns its output.
pub fn serve_once(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vex-lens"))
        .args(["serve", "--once", "--listen", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        .current_dir(repo_dir())
        .output()
        .expect("run vex-lens serve --once")
}

/// The record of `pkg:npm/<pkg>@1.0.0` among `records` (panics naming `pkg` if none).
pub fn npm_record<'a>(records: &'a [serde_json::Value], pkg: &str) -> &'a serde_json::Value {
    records
        .iter()
        .find(|r| r["artifact"] == format!("pkg:npm/{pkg}@1.0.0"))
        .unwrap_or_else(|| panic!("no record for {pkg}: {records:?}"))
}

/// Asserts that the first statement of record `r` (of package `pkg`) failed its signature
/// check for `reason` and is excluded, and that `r` has conflict `missing_provenance`.
pub fn assert_signature_failed(r: &serde_json::Value, pkg: &str, reason: &str) {
    let s = &r["statements"][0];
    assert_eq!((s["signature"].as_str(), s["role"].as_str()), (Some("failed"), Some("excluded")), "{pkg}: {r}");
    assert_eq!(s["reason"], serde_json::json!({"code": "signature_failed", "signature_reason": reason}), "{pkg}: {r}");
    let conflicts: Vec<&str> = r["conflicts"].as_array().unwrap().iter().filter_map(|c| c["reason"].as_str()).collect();
    assert!(conflicts.contains(&"missing_provenance"), "{pkg}: {r}");
}

/// The NDJSON lines of a successful run's stdout (panics with its stderr otherwise).
pub fn ndjson(out: &std::process::Output) -> Vec<serde_json::Value> {
    assert!(out.status.success(), "vex-lens failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("NDJSON line"))
        .collect()
}

/// Every signature verification stored in MongoDB database `db`, as JSON.
pub async fn stored_verifications(uri: &str, db: &str) -> Vec<serde_json::Value> {
    use futures::TryStreamExt;
    let docs: Vec<mongodb::bson::Document> = mongo_client(uri)
        .await
        .database(db)
        .collection::<mongodb::bson::Document>(vex_lens::stores::mongo::DSSE_VERIFICATIONS)
        .find(mongodb::bson::doc! {})
        .await
        .expect("find verifications")
        .try_collect()
        .await
        .expect("read verifications");
    docs.into_iter()
        .map(|d| {
            let r: vex_lens::ports::VerificationRecord = mongodb::bson::from_document(d).expect("a VerificationRecord");
            serde_json::to_value(r).unwrap()
        })
        .collect()
}

/// A child process (e.g. `vex-lens serve`) killed when dropped, so a failing test leaves
/// nothing running.
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// SIGTERM, then the exit status; panics if the process has not exited `within`.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        sigterm(&self.0);
        let start = Instant::now();
        loop {
            if let Some(s) = self.0.try_wait().expect("try_wait") {
                return s;
            }
            assert!(start.elapsed() < within, "serve did not stop within {within:?} of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl KillOnDrop {
    /// The rest of its piped stderr (after it has exited).
    pub fn stderr(&mut self) -> String {
        use std::io::Read;
        let mut stderr = String::new();
        self.0.stderr.take().expect("stderr piped").read_to_string(&mut stderr).unwrap();
        stderr
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `vex-lens serve --ingest-dir INGEST --data-dir DATA` (embedded) from the repo dir
/// on a free loopback port, `env` added, stdout discarded and stderr piped (read it after
/// [`KillOnDrop::terminate`] with [`KillOnDrop::stderr`]). Killed when dropped.
pub fn spawn_serve(ingest: &Path, data: &Path, env: &[(&str, &str)]) -> (KillOnDrop, u16) {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_vex-lens"))
        .args(["serve", "--ingest-dir", ingest.to_str().unwrap(), "--data-dir", data.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .envs(env.iter().copied())
        .current_dir(repo_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    (KillOnDrop(child), port)
}

/// Sends SIGTERM to `child` (the `kill` command; asserts it succeeded).
pub fn sigterm(child: &Child) {
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("run kill").success(), "kill -TERM {pid}");
}

/// Starts an embedded `vex-lens serve` (no Kafka, no MongoDB) from the repo dir on a free
/// loopback port: `serve`, then `args`, then `--listen`; `env` added; output to `log`.
/// Waits (at most `ready`) until `/health/readiness` answers 200. Killed when dropped.
pub fn start_embedded_serve(args: &[&str], env: &[(&str, &str)], log: &Path, ready: Duration) -> (KillOnDrop, u16) {
    let port = free_port();
    let out = std::fs::File::create(log).expect("log file");
    let child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_vex-lens"))
            .arg("serve")
            .args(args)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .envs(env.iter().copied())
            .current_dir(repo_dir())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("spawn serve"),
    );
    wait_for("serve ready", ready, || get(port, "/health/readiness").filter(|(c, _)| *c == 200));
    (child, port)
}

/// [`http_get`] on a loopback port.
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get(&format!("127.0.0.1:{port}"), path)
}

// --- the observations consumer in-process ---------------------------------------------------

/// The configuration an in-process consumer test starts from: the setup's brokers, topics
/// and group, `partitions` partitions per topic created, a 6 s session, `drain_timeout_ms`
/// and the test HMAC key. The caller sets the rest, then validates.
pub fn consumer_config(setup: &ServeSetup, partitions: i32, drain_timeout_ms: u64) -> vex_lens::config::Config {
    let mut cfg = vex_lens::config::Config::default();
    cfg.kafka.brokers = Some(setup.services.brokers.clone());
    cfg.kafka.topic = setup.topic.clone();
    cfg.kafka.observations_topic = setup.observations_topic.clone();
    cfg.kafka.dlq_topic = Some(setup.dlq_topic.clone());
    cfg.kafka.group_id = setup.group_id.clone();
    cfg.kafka.create_partitions = partitions;
    cfg.kafka.session_timeout_ms = 6_000;
    cfg.kafka.drain_timeout_ms = drain_timeout_ms;
    cfg.kafka.observations_hmac_key = Some(vex_lens::config::Secret(TEST_HMAC_KEY.into()));
    cfg
}

/// Pipeline settings for the in-process consumer tests: 2 workers, 2 writers, 2 artifact
/// threads, writer batches of 64 flushed after 20 ms, retries from 20 to 100 ms, a 20 s
/// store timeout (a test changes what it needs with `..`).
pub fn consumer_pipeline_settings() -> vex_lens::actors::PipelineSettings {
    vex_lens::actors::PipelineSettings {
        workers: 2,
        writers: 2,
        artifact_threads: 2,
        writer: vex_lens::actors::writer::WriterSettings {
            batch_max: 64,
            flush_after: Duration::from_millis(20),
            retry_initial: Duration::from_millis(20),
            retry_max: Duration::from_millis(100),
            store_timeout: Duration::from_secs(20),
            mailbox_capacity: 64,
        },
        registry: vex_lens::actors::registry::RegistrySettings {
            max_live: 100,
            max_observations: 50_000,
            idle_evict: Duration::from_secs(60),
            mailbox_capacity: 64,
            max_records_in_flight: 8_192,
        },
    }
}

/// Starts the observations and documents consumers (`sources::kafka::run`, what `serve`
/// runs) for `pipeline` on the current tokio runtime: the sender that stops them, and
/// their task.
pub fn spawn_consumer(
    cfg: &std::sync::Arc<vex_lens::config::Config>,
    pipeline: &vex_lens::actors::Pipeline,
    ledger: std::sync::Arc<dyn vex_lens::ports::DocumentLedger>,
) -> (tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let producer = vex_lens::sources::kafka::create_producer(cfg).unwrap();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(vex_lens::sources::kafka::run(cfg.clone(), pipeline.clone(), ledger, producer, shutdown));
    (stop, run)
}

/// Sum over partitions `0..partitions` of `topic` of the group's committed offset.
pub fn committed_total(brokers: &str, group: &str, topic: &str, partitions: i32) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).expect("committed offsets");
    got.elements()
        .iter()
        .map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => o,
            _ => 0,
        })
        .sum()
}

/// Polls (every 300 ms) the group's committed offsets on the observations topic of `cfg`
/// (`partitions` partitions) until their sum reaches `n` or `timeout` passes; the last sum.
pub async fn wait_committed(cfg: &vex_lens::config::Config, partitions: i32, n: i64, timeout: Duration) -> i64 {
    let (b, g, t) =
        (cfg.kafka.brokers.clone().unwrap(), cfg.kafka.group_id.clone(), cfg.kafka.observations_topic.clone());
    let start = Instant::now();
    loop {
        let (b, g, t) = (b.clone(), g.clone(), t.clone());
        let c = tokio::task::spawn_blocking(move || committed_total(&b, &g, &t, partitions)).await.unwrap();
        if c >= n || start.elapsed() > timeout {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

// --- MongoDB ------------------------------------------------------------------------------

/// A client on the test server; panics (a failure) if it is unreachable.
pub async fn mongo_client(uri: &str) -> mongodb::Client {
    let mut options = mongodb::options::ClientOptions::parse(uri).await.expect("mongo uri");
    options.server_selection_timeout = Some(Duration::from_secs(5));
    let client = mongodb::Client::with_options(options).expect("mongo client");
    client
        .database("admin")
        .run_command(mongodb::bson::doc! { "ping": 1 })
        .await
        .unwrap_or_else(|e| panic!("MongoDB-wire server at {uri} unreachable: {e} (scripts/services.sh up)"));
    client
}

/// The stored records of a database, via the store adapter (checks digests).
pub async fn stored_records(uri: &str, db: &str) -> Vec<ConsensusRecord> {
    use vex_lens::ports::RecordStore;
    let store = vex_lens::stores::mongo::MongoStore::connect(uri, db).await.expect("connect");
    store.list_records(None, None).await.expect("list records")
}

/// Number of documents in a collection.
pub async fn count(uri: &str, db: &str, collection: &str) -> u64 {
    mongo_client(uri)
        .await
        .database(db)
        .collection::<mongodb::bson::Document>(collection)
        .count_documents(mongodb::bson::doc! {})
        .await
        .expect("count")
}

pub async fn drop_db(uri: &str, db: &str) {
    let _ = mongo_client(uri).await.database(db).drop().await;
}

/// Compares records digest for digest (sorted by pair); panics with the first difference.
pub fn assert_same_records(got: &[ConsensusRecord], want: &[ConsensusRecord]) {
    let key = |r: &ConsensusRecord| (r.tenant.clone(), r.artifact.clone(), r.vulnerability.clone());
    let mut g: Vec<_> = got.iter().map(|r| (key(r), r.consensus_digest.clone())).collect();
    let mut w: Vec<_> = want.iter().map(|r| (key(r), r.consensus_digest.clone())).collect();
    g.sort();
    w.sort();
    if g != w {
        let missing: Vec<_> = w.iter().filter(|x| !g.contains(x)).take(5).collect();
        let extra: Vec<_> = g.iter().filter(|x| !w.contains(x)).take(5).collect();
        panic!(
            "records differ: got {}, want {}; first missing/different: {missing:?}; first unexpected: {extra:?}",
            g.len(),
            w.len()
        );
    }
}

/// One item of a Server-Sent Events stream.
#[derive(Clone, Debug, PartialEq)]
pub enum SseItem {
    /// An event: its `id`, `event` and `data` (lines joined by `\n`).
    Event { id: Option<String>, event: Option<String>, data: String },
    /// A block of comment lines only (e.g. `: heartbeat`), and its `retry` if any.
    Comment(String),
}

/// A Server-Sent Events client on a raw socket (HTTP/1.0, so the body is the stream).
pub struct SseClient {
    stream: std::net::TcpStream,
    buf: Vec<u8>,
    pos: usize,
    pub status: u16,
    pub head: String,
}

impl SseClient {
    /// Sends `GET path` with `headers` and reads the status line and headers.
    pub fn connect(addr: &str, path: &str, headers: &[(&str, &str)]) -> SseClient {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let mut req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).expect("write request");
        let mut c = SseClient { stream, buf: Vec::new(), pos: 0, status: 0, head: String::new() };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(end) = c.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                c.head = String::from_utf8_lossy(&c.buf[..end]).into_owned();
                c.pos = end + 4;
                break;
            }
            assert!(c.fill(deadline), "no response head from {addr}{path}");
        }
        c.status = c.head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        c
    }

    /// Reads more bytes (until `deadline`); false on timeout or end of stream.
    fn fill(&mut self, deadline: Instant) -> bool {
        use std::io::Read;
        let mut chunk = [0u8; 8192];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let wait = (deadline - now).min(Duration::from_millis(200)).max(Duration::from_millis(1));
            self.stream.set_read_timeout(Some(wait)).expect("read timeout");
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return true;
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return false,
            }
        }
    }

    /// The rest of the body (for an error answer, which is not a stream).
    pub fn rest(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.fill(deadline) {}
        String::from_utf8_lossy(&self.buf[self.pos..]).into_owned()
    }

    /// The next event or comment block, or `None` when none completes within `timeout`.
    pub fn next_item(&mut self, timeout: Duration) -> Option<SseItem> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(end) = self.buf[self.pos..].windows(2).position(|w| w == b"\n\n") {
                let block = String::from_utf8_lossy(&self.buf[self.pos..self.pos + end]).into_owned();
                self.pos += end + 2;
                let (mut id, mut event, mut data, mut comments) = (None, None, Vec::new(), Vec::new());
                for line in block.lines() {
                    if let Some(c) = line.strip_prefix(':') {
                        comments.push(c.trim().to_string());
                        continue;
                    }
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value).to_string();
                    match field {
                        "id" => id = Some(value),
                        "event" => event = Some(value),
                        "data" => data.push(value),
                        _ => {}
                    }
                }
                return Some(if data.is_empty() {
                    SseItem::Comment(comments.join("\n"))
                } else {
                    SseItem::Event { id, event, data: data.join("\n") }
                });
            }
            if !self.fill(deadline) {
                return None;
            }
        }
    }

    /// The next event as (id, data as JSON), skipping comments; `None` on timeout.
    pub fn next_event(&mut self, timeout: Duration) -> Option<(u64, serde_json::Value)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_item(left)? {
                SseItem::Event { id, event, data } => {
                    assert_eq!(event.as_deref(), Some("consensus"), "event type");
                    let id = id.expect("every event has an id").parse().expect("numeric event id");
                    return Some((id, serde_json::from_str(&data).expect("event data is JSON")));
                }
                SseItem::Comment(_) => continue,
            }
        }
    }

    /// Reads events until every digest of `want` has been seen (panics after 60 s).
    pub fn events_until(&mut self, want: &std::collections::BTreeSet<String>) -> Vec<(u64, serde_json::Value)> {
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let seen: std::collections::BTreeSet<String> = got
                .iter()
                .map(|(_, v): &(u64, serde_json::Value)| v["consensus_digest"].as_str().unwrap().to_string())
                .collect();
            if want.is_subset(&seen) {
                return got;
            }
            assert!(std::time::Instant::now() < deadline, "missing {:?} after events {got:?}", want.difference(&seen));
            if let Some(e) = self.next_event(Duration::from_secs(5)) {
                got.push(e);
            }
        }
    }

    /// Every event until none arrives for `quiet` (comments skipped).
    pub fn events_until_quiet(&mut self, quiet: Duration) -> Vec<(u64, serde_json::Value)> {
        let mut out = Vec::new();
        while let Some(e) = self.next_event(quiet) {
            out.push(e);
        }
        out
    }
}

/// The change stream's path.
pub const STREAM: &str = "/v1/vex/consensus/stream";

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `GET path` as `tenant` (X-Tenant, no token): (status, body as JSON or null).
pub fn get_as(addr: &str, path: &str, tenant: &str) -> (u16, serde_json::Value) {
    let (code, body) = http_request(addr, "GET", path, &[("X-Tenant", tenant)], "");
    (code, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
}

/// (artifact, vulnerability, changed_at_ms, digest) of an event or a history entry.
pub fn change_key(v: &serde_json::Value) -> (String, String, i64, String) {
    (
        v["artifact"].as_str().unwrap().to_string(),
        v["vulnerability"].as_str().unwrap().to_string(),
        v["changed_at_ms"].as_i64().unwrap(),
        v["consensus_digest"].as_str().unwrap().to_string(),
    )
}

/// Every history entry of every current pair of `tenant`.
pub fn all_history(addr: &str, tenant: &str) -> std::collections::BTreeSet<(String, String, i64, String)> {
    let (code, list) = get_as(addr, "/v1/vex/consensus?page_size=1000", tenant);
    assert_eq!(code, 200, "{list}");
    let mut out = std::collections::BTreeSet::new();
    for r in list["items"].as_array().unwrap() {
        let path = format!(
            "/v1/vex/consensus/history?artifact={}&vulnerability={}",
            enc(r["artifact"].as_str().unwrap()),
            enc(r["vulnerability"].as_str().unwrap())
        );
        let (code, h) = get_as(addr, &path, tenant);
        assert_eq!(code, 200, "{h}");
        out.extend(h["items"].as_array().unwrap().iter().map(change_key));
    }
    out
}

/// The digests of the records `vex-lens consensus` computes from the examples `names`.
pub fn example_digests(names: &[&str], tenant: &str) -> std::collections::BTreeSet<String> {
    let files: Vec<PathBuf> = names.iter().map(|n| repo_dir().join("examples").join(n)).collect();
    cli_consensus(&files, tenant).into_iter().map(|r| r.consensus_digest).collect()
}

/// The current digests of `tenant`'s records.
pub fn current(addr: &str, tenant: &str) -> std::collections::BTreeSet<String> {
    let (_, list) = get_as(addr, "/v1/vex/consensus?page_size=1000", tenant);
    list["items"].as_array().map_or_else(std::collections::BTreeSet::new, |items| {
        items.iter().map(|r| r["consensus_digest"].as_str().unwrap().to_string()).collect()
    })
}

/// Opens the change stream of `tenant` (with `Last-Event-ID: last` when given) and
/// reads its opening comment.
pub fn open_stream(addr: &str, tenant: &str, query: &str, last: Option<&str>) -> SseClient {
    let mut h = vec![("X-Tenant", tenant)];
    if let Some(l) = last {
        h.push(("Last-Event-ID", l));
    }
    let mut c = SseClient::connect(addr, &format!("{STREAM}{query}"), &h);
    if c.status != 200 {
        let rest = c.rest();
        panic!("stream answered {}: {rest}", c.head);
    }
    assert!(c.head.to_ascii_lowercase().contains("content-type: text/event-stream"), "{}", c.head);
    // The stream says where it starts before anything else.
    match c.next_item(Duration::from_secs(10)) {
        Some(SseItem::Comment(c)) => assert!(c.starts_with("stream of"), "{c}"),
        other => panic!("expected the opening comment, got {other:?}"),
    }
    c
}

/// Asserts that `events` have the consecutive ids `first..`, each its data's `seq`, all
/// of `tenant`.
pub fn assert_dense(events: &[(u64, serde_json::Value)], first: u64, tenant: &str) {
    let ids: Vec<u64> = events.iter().map(|(i, _)| *i).collect();
    let want: Vec<u64> = (first..first + ids.len() as u64).collect();
    assert_eq!(ids, want, "event ids are consecutive positions");
    for (id, v) in events {
        assert_eq!(v["seq"].as_u64(), Some(*id), "data.seq is the event id");
        assert_eq!(v["tenant"], tenant);
    }
}
