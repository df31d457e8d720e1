//! The docker-compose stack as Compose resolves it: the output of `docker-compose config`
//! (Debian's `docker-compose` package resolves the file without an engine) with a test env
//! file. Checked: every published port is bound to 127.0.0.1 (MongoDB has no auth, Kafka is
//! PLAINTEXT), Grafana's admin password comes from the environment and anonymous access is
//! off, export bundles live on a named volume, the API token provisioned from the env file
//! is one the service accepts (so the README's `/v1` examples work against the stack, and
//! the service may listen on 0.0.0.0 in its container), every service has a health check
//! and every dependency a condition; without the env file Compose refuses the stack.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `docker-compose [--env-file F] config` in the repository: `Some((ok, stdout, stderr))`,
/// `None` (skipped) when docker-compose is missing and services are not required.
fn compose_config(env_file: Option<&Path>) -> Option<(bool, String, String)> {
    let mut cmd = Command::new("docker-compose");
    if let Some(f) = env_file {
        cmd.arg("--env-file").arg(f);
    }
    // A user's COMPOSE_* or secret variables must not leak into the resolution.
    for v in ["VEXLENS_API_TOKEN_SHA256", "GRAFANA_ADMIN_PASSWORD", "VEXLENS_OBSERVATIONS_HMAC_KEY", "COMPOSE_FILE"] {
        cmd.env_remove(v);
    }
    match cmd.args(["-f", "docker-compose.yml", "config"]).current_dir(repo()).output() {
        Ok(o) => Some((
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )),
        Err(e) => {
            assert!(
                std::env::var("VEXLENS_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "docker-compose not found ({e}): run scripts/install-system-deps.sh"
            );
            eprintln!("skipped: docker-compose not found ({e}); run scripts/install-system-deps.sh");
            None
        }
    }
}

/// YAML to JSON with the PyYAML that Debian's docker-compose depends on.
fn yaml_to_json(yaml: &str) -> Value {
    use std::io::Write;
    let mut child = Command::new("python3")
        .args(["-c", "import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python3 yaml -> json failed");
    serde_json::from_slice(&out.stdout).expect("JSON")
}

const TOKEN: &str = "compose-test-token";
const PASSWORD: &str = "grafana-password-from-env";

#[test]
fn compose_stack_is_loopback_only_with_secrets_from_the_env_file() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("test.env");
    let token_hash = vex_lens::domain::canonical::sha256_hex(TOKEN.as_bytes());
    std::fs::write(
        &env_file,
        format!(
            "VEXLENS_API_TOKEN_SHA256={token_hash}\nGRAFANA_ADMIN_PASSWORD={PASSWORD}\n\
             VEXLENS_OBSERVATIONS_HMAC_KEY={}\n",
            "h".repeat(40)
        ),
    )
    .unwrap();
    let Some((ok, out, err)) = compose_config(Some(&env_file)) else { return };
    assert!(ok, "docker-compose config failed:\n{err}");
    let doc = yaml_to_json(&out);
    let services = doc["services"].as_object().expect("services");
    for name in ["kafka", "mongo", "vex-lens", "prometheus", "grafana", "jaeger", "otel-collector"] {
        assert!(services.contains_key(name), "service {name} missing");
    }

    // Every published port on 127.0.0.1 (short or long syntax).
    let mut published = 0;
    for (name, s) in services {
        for p in s["ports"].as_array().into_iter().flatten() {
            let host_ip = match p {
                Value::String(text) => text.split(':').next().unwrap_or("").to_string(),
                Value::Object(o) => o.get("host_ip").and_then(Value::as_str).unwrap_or("").to_string(),
                other => panic!("{name}: port {other}"),
            };
            assert_eq!(host_ip, "127.0.0.1", "{name} publishes {p} beyond loopback");
            published += 1;
        }
        assert!(s["healthcheck"]["test"].is_array(), "{name}: no healthcheck");
        if let Some(deps) = s.get("depends_on") {
            for (dep, cond) in deps.as_object().unwrap_or_else(|| panic!("{name}: depends_on without conditions")) {
                let c = cond["condition"].as_str().unwrap_or("");
                assert!(c.starts_with("service_"), "{name} -> {dep}: no condition");
            }
        }
    }
    assert!(published >= 7, "{published} ports");
    assert_eq!(services["kafka"]["ports"].as_array().unwrap().len(), 1);
    assert_eq!(services["vex-lens"]["depends_on"]["kafka"]["condition"], "service_healthy");
    assert_eq!(services["vex-lens"]["depends_on"]["mongo"]["condition"], "service_healthy");
    assert_eq!(services["grafana"]["depends_on"]["prometheus"]["condition"], "service_healthy");

    // Grafana: the password from the env file, no anonymous access.
    let g = &services["grafana"]["environment"];
    assert_eq!(g["GF_SECURITY_ADMIN_PASSWORD"], PASSWORD);
    assert_eq!(g["GF_AUTH_ANONYMOUS_ENABLED"], "false");
    assert!(g.get("GF_AUTH_ANONYMOUS_ORG_ROLE").is_none());

    // Exports on a named volume.
    let v = &services["vex-lens"];
    let vols: Vec<String> = v["volumes"]
        .as_array()
        .expect("vex-lens volumes")
        .iter()
        .map(|x| x.as_str().unwrap_or("").to_string())
        .collect();
    assert!(vols.iter().any(|x| x.starts_with("exports:/app/exports")), "{vols:?}");
    assert!(doc["volumes"].get("exports").is_some(), "top-level volume exports");

    // The provisioned token: the service's configuration parser reads it from the variable,
    // it validates, and the token of the env file authenticates a remote client.
    let env = &v["environment"];
    assert_eq!(env["VEXLENS_KAFKA__OBSERVATIONS_HMAC_KEY"], "h".repeat(40));
    let tokens = env["VEXLENS_API__TOKENS"].as_str().expect("VEXLENS_API__TOKENS");
    std::env::set_var("VEXLENS_API__TOKENS", tokens);
    let cfg = vex_lens::config::Config::from_figment(figment::Figment::new().merge(vex_lens::config::Config::env()));
    std::env::remove_var("VEXLENS_API__TOKENS");
    let cfg = cfg.expect("VEXLENS_API__TOKENS parses");
    cfg.validate().expect("valid");
    assert_eq!(cfg.api.tokens.len(), 1);
    assert_eq!(cfg.api.tokens[0].sha256, token_hash);
    let auth = vex_lens::http::auth::Auth::new(&cfg.api);
    let bearer = format!("Bearer {TOKEN}");
    let caller = auth
        .authenticate(Some(bearer.as_bytes()), None, vex_lens::http::auth::Peer::REMOTE)
        .expect("the env file's token is accepted from outside the container");
    assert_eq!(caller.tenant, "default");
    let cmd: Vec<&str> = v["command"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(cmd.contains(&"--listen=0.0.0.0:8080"), "{cmd:?}");
}

#[test]
fn compose_refuses_the_stack_without_the_env_file() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.env");
    std::fs::write(&empty, "").unwrap();
    let Some((ok, _, err)) = compose_config(Some(&empty)) else { return };
    assert!(!ok, "docker-compose config resolved the stack without its secrets");
    assert!(
        ["VEXLENS_API_TOKEN_SHA256", "GRAFANA_ADMIN_PASSWORD", "VEXLENS_OBSERVATIONS_HMAC_KEY"]
            .iter()
            .any(|v| err.contains(v)),
        "the error names no missing variable: {err}"
    );
}
