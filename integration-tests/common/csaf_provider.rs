//! A CSAF provider for the feed tests: a real HTTPS server (hyper 1 over tokio-rustls with
//! ring, its certificate issued by a test CA made with rcgen) on loopback, serving a
//! provider directory that the test builds from the shared corpus (files named per the
//! spec, year folders, `.sha256`/`.sha512`, `index.txt`, `changes.csv`,
//! `provider-metadata.json`), with conditional answers (ETag, Last-Modified, 304) and
//! faults a test can inject per path. It records every request it sees. [`build`] lays
//! out such a directory from the CIQ corpus; [`Fixture`] does all of it in a fresh
//! temporary directory (the set-up every feed test starts with).
//!
//! Invariants: it binds 127.0.0.1 only; it serves only files under its root (a path with
//! `..` is 400); every request is recorded with its conditional headers and the status
//! answered, before the answer is sent.
#![allow(dead_code)]

use http_body_util::Full;
use hyper::body::Bytes;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// One request as the server saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub path: String,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<String>,
    pub status: u16,
}

impl Seen {
    pub fn conditional(&self) -> bool {
        self.if_none_match.is_some() || self.if_modified_since.is_some()
    }
}

/// A fault served instead of the file, `times` times (then the file again).
#[derive(Clone, Debug)]
pub enum Fault {
    /// This status, empty body.
    Status(u16),
    /// 429 with `Retry-After: <secs>`.
    TooMany(u64),
    /// A 302 to this location.
    Redirect(String),
    /// A 200 announcing the file's whole length, sending half of it, then breaking the
    /// connection.
    Truncated,
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn full(bytes: Vec<u8>) -> Body {
    use http_body_util::BodyExt;
    Full::new(Bytes::from(bytes)).map_err(|never| match never {}).boxed()
}

/// Half a body, then an error: hyper breaks the connection before the announced length.
struct HalfThenBreak {
    half: Option<Bytes>,
    announced: u64,
}

impl hyper::body::Body for HalfThenBreak {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        std::task::Poll::Ready(Some(match self.half.take() {
            Some(h) => Ok(hyper::body::Frame::data(h)),
            None => Err(std::io::Error::other("truncated on purpose")),
        }))
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.announced)
    }
}

/// The running provider.
pub struct Provider {
    pub port: u16,
    pub root: PathBuf,
    /// PEM of the CA that issued the server's certificate (`ca_file`).
    pub ca_pem: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    faults: Arc<Mutex<BTreeMap<String, (Fault, usize)>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Provider {
    /// Starts a provider serving the files under `root` (URL path = path under root).
    pub fn start(root: &Path) -> Provider {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "vex-lens test CSAF provider CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf =
            rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&leaf_key, &ca).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let faults: Arc<Mutex<BTreeMap<String, (Fault, usize)>>> = Arc::default();
        let (s, f, r) = (seen.clone(), faults.clone(), root.to_path_buf());
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (acceptor, s, f, r) = (acceptor.clone(), s.clone(), f.clone(), r.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = hyper::service::service_fn(move |req| {
                        let (s, f, r) = (s.clone(), f.clone(), r.clone());
                        async move { Ok::<_, std::convert::Infallible>(answer(&req, &r, &s, &f)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Provider { port, root: root.to_path_buf(), ca_pem: ca.pem(), seen, faults, _runtime: runtime }
    }

    /// `https://localhost:<port>`.
    pub fn origin(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// The URL of its `provider-metadata.json`.
    pub fn metadata_url(&self) -> String {
        format!("{}/.well-known/csaf/provider-metadata.json", self.origin())
    }

    /// The URL of its WHITE directory (ends with `/`), as a feed's state names it.
    pub fn white_url(&self) -> String {
        format!("{}/.well-known/csaf/white/", self.origin())
    }

    /// How many documents of its WHITE directory a feed's state (`data/feeds/<feed>.json`,
    /// parsed) holds as `emitted`.
    pub fn emitted_in(&self, state: &serde_json::Value) -> usize {
        state["directories"][self.white_url()]["documents"]
            .as_object()
            .map_or(0, |d| d.values().filter(|d| d["outcome"] == "emitted").count())
    }

    /// Every request seen so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Forgets the requests seen.
    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }

    /// Serves `fault` for the URL path `path` the next `times` times.
    pub fn fault(&self, path: &str, fault: Fault, times: usize) {
        self.faults.lock().unwrap().insert(path.to_string(), (fault, times));
    }
}

/// A strong ETag of a body.
fn etag(body: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, body);
    format!("\"{}\"", hex::encode(&d.as_ref()[..12]))
}

/// The file's modification time as an HTTP date.
fn http_date(path: &Path) -> Option<String> {
    let m = std::fs::metadata(path).ok()?.modified().ok()?;
    let t = time::OffsetDateTime::from(m);
    let f = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    t.format(&f).ok()
}

fn answer(
    req: &hyper::Request<hyper::body::Incoming>,
    root: &Path,
    seen: &Mutex<Vec<Seen>>,
    faults: &Mutex<BTreeMap<String, (Fault, usize)>>,
) -> hyper::Response<Body> {
    let path = req.uri().path().to_string();
    let header = |h: &str| req.headers().get(h).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (inm, ims) = (header("if-none-match"), header("if-modified-since"));
    let respond_with = |status: u16, headers: Vec<(&str, String)>, body: Body| {
        seen.lock().unwrap().push(Seen {
            path: path.clone(),
            if_none_match: inm.clone(),
            if_modified_since: ims.clone(),
            status,
        });
        let mut b = hyper::Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(k, v);
        }
        b.body(body).unwrap()
    };
    let respond = |status: u16, headers: Vec<(&str, String)>, body: Vec<u8>| respond_with(status, headers, full(body));
    let fault = {
        let mut f = faults.lock().unwrap();
        match f.get_mut(&path) {
            Some((fault, n)) if *n > 0 => {
                *n -= 1;
                Some(fault.clone())
            }
            _ => None,
        }
    };
    if path.split('/').any(|s| s == "..") {
        return respond(400, vec![], vec![]);
    }
    let file = root.join(path.trim_start_matches('/'));
    match fault {
        Some(Fault::Status(s)) => return respond(s, vec![], vec![]),
        Some(Fault::TooMany(secs)) => return respond(429, vec![("retry-after", secs.to_string())], vec![]),
        Some(Fault::Redirect(to)) => return respond(302, vec![("location", to)], vec![]),
        Some(Fault::Truncated) => {
            let body = std::fs::read(&file).unwrap_or_default();
            let half = Bytes::from(body[..body.len() / 2].to_vec());
            let announced = body.len() as u64;
            return respond_with(200, vec![], Body::new(HalfThenBreak { half: Some(half), announced }));
        }
        None => {}
    }
    let Ok(body) = std::fs::read(&file) else { return respond(404, vec![], vec![]) };
    let tag = etag(&body);
    let modified = http_date(&file);
    let not_modified = match (&inm, &ims) {
        (Some(i), _) => i.split(',').any(|t| t.trim() == tag),
        (None, Some(m)) => modified.as_deref() == Some(m.as_str()),
        (None, None) => false,
    };
    let mut headers = vec![("etag", tag)];
    if let Some(m) = modified {
        headers.push(("last-modified", m));
    }
    if not_modified {
        return respond(304, headers, vec![]);
    }
    respond(200, headers, body)
}

// --- the provider directory a test builds ---------------------------------------------

/// The spec's file name for a tracking id (section 5.1).
pub fn spec_name(id: &str) -> String {
    let base: String = id
        .to_lowercase()
        .chars()
        .map(|c| if c == '+' || c == '-' || c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '_' })
        .collect();
    format!("{base}.json")
}

pub fn sha(alg: &'static ring::digest::Algorithm, b: &[u8]) -> String {
    hex::encode(ring::digest::digest(alg, b))
}

/// A provider directory under `root/.well-known/csaf/white/`.
pub struct Directory {
    pub dir: PathBuf,
    /// (relative path, listed time), newest first.
    pub rows: Vec<(String, String)>,
}

impl Directory {
    /// Writes a document with its hash files (`sha512` replaced when given).
    pub fn put(&self, rel: &str, bytes: &[u8], sha512: Option<&str>) {
        let path = self.dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        let name = rel.rsplit('/').next().unwrap();
        std::fs::write(
            format!("{}.sha256", path.display()),
            format!("{}  {name}\n", sha(&ring::digest::SHA256, bytes)),
        )
        .unwrap();
        let s512 = sha512.map_or_else(|| sha(&ring::digest::SHA512, bytes), str::to_string);
        std::fs::write(format!("{}.sha512", path.display()), format!("{s512}  {name}\n")).unwrap();
    }

    /// Writes `index.txt` and `changes.csv` (`quoted`: CSAF 2.0 rows, else 2.1 rows).
    pub fn write_lists(&mut self, quoted: bool) {
        self.rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut index: Vec<&str> = self.rows.iter().map(|r| r.0.as_str()).collect();
        index.sort();
        std::fs::write(self.dir.join("index.txt"), index.join("\n") + "\n").unwrap();
        let rows: Vec<String> = self
            .rows
            .iter()
            .map(|(p, t)| if quoted { format!("\"{p}\",\"{t}\"") } else { format!("{p},{t}") })
            .collect();
        std::fs::write(self.dir.join("changes.csv"), rows.join("\n") + "\n").unwrap();
    }

    pub fn relist(&mut self, rel: &str, time: &str) {
        self.rows.retain(|r| r.0 != rel);
        self.rows.push((rel.to_string(), time.to_string()));
    }
}

/// Builds the provider from the CIQ corpus: returns the directory and the plain copies of
/// the documents (for `vex-lens consensus`).
pub fn build(provider: &Provider, root: &Path, plain: &Path, take: usize) -> Directory {
    let base = root.join(".well-known/csaf");
    let dir = base.join("white");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(plain).unwrap();
    let metadata = serde_json::json!({
        "canonical_url": format!("{}/.well-known/csaf/provider-metadata.json", provider.origin()),
        "distributions": [{"directory_url": format!("{}/.well-known/csaf/white/", provider.origin())}],
        "last_updated": "2026-08-22T08:00:00Z",
        "list_on_CSAF_aggregators": true,
        "metadata_version": "2.0",
        "mirror_on_CSAF_aggregators": true,
        "public_openpgp_keys": [],
        "publisher": {"category": "vendor", "name": "CIQ", "namespace": "https://www.ciq.com"},
        "role": "csaf_trusted_provider"
    });
    std::fs::write(base.join("provider-metadata.json"), serde_json::to_vec_pretty(&metadata).unwrap()).unwrap();
    let mut d = Directory { dir, rows: Vec::new() };
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/csaf-ciq");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for f in files.into_iter().take(take) {
        let bytes = std::fs::read(&f).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let t = &v["document"]["tracking"];
        let year = &t["initial_release_date"].as_str().unwrap()[..4];
        let rel = format!("{year}/{}", spec_name(t["id"].as_str().unwrap()));
        d.put(&rel, &bytes, None);
        std::fs::write(plain.join(rel.replace('/', "_")), &bytes).unwrap();
        d.rows.push((rel, t["current_release_date"].as_str().unwrap().to_string()));
    }
    d.write_lists(true);
    d
}

/// A running provider over a fresh temporary directory `tmp`: `tmp/www` is served, its
/// directory built by [`build`] from the first `take` CIQ documents, their plain copies in
/// `tmp/plain`. Destructure it and keep `tmp` and `provider` bound for the whole test
/// (dropping `tmp` deletes the files, dropping `provider` stops the server).
pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub plain: PathBuf,
    pub provider: Provider,
    pub dir: Directory,
}

impl Fixture {
    pub fn start(take: usize) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("www");
        std::fs::create_dir_all(&root).unwrap();
        let provider = Provider::start(&root);
        let plain = tmp.path().join("plain");
        let dir = build(&provider, &root, &plain, take);
        Fixture { tmp, root, plain, provider, dir }
    }
}

/// Puts the detached signature `asc` beside the served document `rel` of `dir` and beside
/// its plain copy in `plain` (as `consensus` reads it).
pub fn put_asc(dir: &Directory, plain: &Path, rel: &str, asc: &[u8]) {
    std::fs::write(format!("{}.asc", dir.dir.join(rel).display()), asc).unwrap();
    std::fs::write(plain.join(format!("{}.asc", rel.replace('/', "_"))), asc).unwrap();
}

/// Writes the provider's CA certificate to `tmp/ca.pem` (a feed's `ca_file`); its path.
pub fn write_ca(tmp: &Path, provider: &Provider) -> PathBuf {
    let ca = tmp.join("ca.pem");
    std::fs::write(&ca, &provider.ca_pem).unwrap();
    ca
}

/// Parses a feed's state file `data_dir/feeds/<feed>.json`.
pub fn feed_state(data_dir: &Path, feed: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(data_dir.join(format!("feeds/{feed}.json"))).unwrap()).unwrap()
}
