//! Dashboards and alert rules name only metrics the code registers
//! (`vex_lens::telemetry::names::ALL`), and `promtool check rules` accepts the rules.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards")
}

/// Every `vex_*` identifier in `text`, without the histogram series suffixes.
fn metric_names(text: &str) -> BTreeSet<String> {
    names_with_prefix(text, "vex_")
}

/// The metrics an expression reads that are not the service's `vex_*`: the standard
/// `process_*` metrics (registered by the service too) and Prometheus' own `up`.
fn other_metric_names(text: &str) -> BTreeSet<String> {
    let mut out = names_with_prefix(text, "process_");
    let bytes = text.as_bytes();
    for (i, _) in text.match_indices("up{") {
        if i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_') {
            out.insert("up".to_string());
        }
    }
    out
}

fn names_with_prefix(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find(prefix) {
        let start = i + pos;
        let boundary = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase() || bytes[end].is_ascii_digit() || bytes[end] == b'_')
        {
            end += 1;
        }
        if boundary {
            let mut name = &text[start..end];
            for suffix in ["_bucket", "_count", "_sum"] {
                if let Some(base) = name.strip_suffix(suffix) {
                    name = base;
                }
            }
            out.insert(name.to_string());
        }
        i = end.max(start + prefix.len());
    }
    out
}

/// PromQL expressions of the dashboard (`targets[].expr`) and of the rules (`expr:`).
fn expressions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dashboards_dir()).expect("dashboards/") {
        let path = entry.expect("entry").path();
        let name = path.display().to_string();
        if path.extension().is_some_and(|e| e == "json") {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("dashboard JSON");
            for p in v["panels"].as_array().expect("panels") {
                for t in p["targets"].as_array().expect("targets") {
                    out.push((format!("{name}: {}", p["title"]), t["expr"].as_str().expect("expr").to_string()));
                }
            }
        } else if path.file_name().is_some_and(|f| f == "alerts.yml") {
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let line = line.trim();
                if let Some(expr) = line.strip_prefix("expr:") {
                    out.push((name.clone(), expr.to_string()));
                }
            }
        }
    }
    out
}

#[test]
fn dashboards_and_rules_name_only_registered_metrics() {
    let registered: BTreeSet<&str> = vex_lens::telemetry::names::ALL.into_iter().collect();
    let exprs = expressions();
    assert!(exprs.len() >= 10, "found only {} expressions", exprs.len());
    let mut used = BTreeSet::new();
    let process: BTreeSet<&str> = vex_lens::telemetry::names::PROCESS.into_iter().collect();
    for (origin, expr) in &exprs {
        let names = metric_names(expr);
        let others = other_metric_names(expr);
        assert!(
            !names.is_empty() || !others.is_empty(),
            "{origin}: {expr} names no vex_ metric, process_ metric or up"
        );
        for n in names {
            assert!(registered.contains(n.as_str()), "{origin}: {n} is not registered (telemetry::names::ALL)");
            used.insert(n);
        }
        for n in others {
            assert!(
                n == "up" || process.contains(n.as_str()),
                "{origin}: {n} is neither Prometheus' up nor registered (telemetry::names::PROCESS)"
            );
            used.insert(n);
        }
    }
    for required in [
        "vex_consensus_latency_seconds",
        "vex_conflict_queue_depth",
        "vex_recompute_duration_seconds",
        "vex_export_duration_seconds",
        "vex_dsse_verification_failures_total",
        "vex_trace_export_errors_total",
        "up",
        "process_start_time_seconds",
    ] {
        assert!(used.contains(required), "{required} has no panel or rule");
    }
}

#[test]
fn metric_name_extraction() {
    let n = metric_names("histogram_quantile(0.9, rate(vex_a_seconds_bucket[5m])) / x_vex_b + vex_c_total");
    assert_eq!(n.into_iter().collect::<Vec<_>>(), vec!["vex_a_seconds", "vex_c_total"]);
    let o = other_metric_names("absent(up{job=\"x\"}) or changes(process_start_time_seconds{a=\"b\"}[5m]) + setup{}");
    assert_eq!(o.into_iter().collect::<Vec<_>>(), vec!["process_start_time_seconds", "up"]);
}

/// Runs `promtool ARGS` in dashboards/; `None` (skipped) when promtool is missing and
/// services are not required (with `VEXLENS_REQUIRE_SERVICES=1` a missing promtool fails).
fn promtool(args: &[&str]) -> Option<(bool, String)> {
    match Command::new("promtool").args(args).current_dir(dashboards_dir()).output() {
        Ok(out) => Some((
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )),
        Err(e) => {
            assert!(
                std::env::var("VEXLENS_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "promtool not found ({e}): run scripts/install-system-deps.sh"
            );
            eprintln!("skipped: promtool not found ({e}); run scripts/install-system-deps.sh");
            None
        }
    }
}

#[test]
fn promtool_accepts_the_rules() {
    if let Some((ok, out)) = promtool(&["check", "rules", "alerts.yml"]) {
        assert!(ok, "promtool check rules failed:\n{out}");
    }
}

/// `promtool test rules alerts.test.yml`: every alert fires on a series that should page
/// and stays quiet on one that should not.
#[test]
fn alert_rule_unit_tests_pass() {
    let rules = std::fs::read_to_string(dashboards_dir().join("alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(dashboards_dir().join("alerts.test.yml")).unwrap();
    let alerts: Vec<&str> = rules.lines().filter_map(|l| l.trim().strip_prefix("- alert:")).map(str::trim).collect();
    assert!(alerts.len() >= 5, "alerts: {alerts:?}");
    for a in &alerts {
        let fires = tests
            .split("alertname: ")
            .skip(1)
            .any(|t| t.starts_with(&format!("{a}\n")) && t.lines().nth(1).is_some_and(|l| l.trim() == "exp_alerts:"));
        let quiet = tests.contains(&format!("alertname: {a}\n        exp_alerts: []"));
        assert!(fires && quiet, "{a}: alerts.test.yml needs a case where it fires and one where it stays quiet");
    }
    if let Some((ok, out)) = promtool(&["test", "rules", "alerts.test.yml"]) {
        assert!(ok, "promtool test rules failed:\n{out}");
    }
}

/// Both dashboards: Grafana's current JSON schema, the data source as the `datasource`
/// variable on every panel and query, and panels that divide or take a quantile show a
/// text ("no jobs", "no writes") instead of NaN.
#[test]
fn dashboards_use_the_current_schema_and_a_datasource_variable() {
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(dashboards_dir()).expect("dashboards/") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let name = path.display().to_string();
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        seen.push(v["uid"].as_str().expect("uid").to_string());
        assert!(v["schemaVersion"].as_i64().unwrap_or(0) >= 41, "{name}: schemaVersion");
        let vars = v["templating"]["list"].as_array().expect("templating.list");
        assert!(
            vars.iter().any(|t| t["name"] == "datasource" && t["type"] == "datasource" && t["query"] == "prometheus"),
            "{name}: no datasource variable"
        );
        let ds = serde_json::json!({"type": "prometheus", "uid": "${datasource}"});
        for p in v["panels"].as_array().expect("panels") {
            let title = &p["title"];
            assert_eq!(p["datasource"], ds, "{name}: {title}");
            for t in p["targets"].as_array().expect("targets") {
                assert_eq!(t["datasource"], ds, "{name}: {title}");
                let expr = t["expr"].as_str().unwrap();
                if expr.contains(" / ") || expr.contains("histogram_quantile") {
                    assert!(
                        p["fieldConfig"]["defaults"]["noValue"].as_str().is_some_and(|s| s.starts_with("no ")),
                        "{name}: {title}: a dividing/quantile panel needs a noValue text"
                    );
                    assert!(expr.contains("> 0)"), "{name}: {title}: {expr} must drop empty windows (… > 0)");
                }
            }
        }
    }
    seen.sort();
    assert_eq!(seen, ["vex-lens-observability", "vex-lens-pipeline"]);
}

/// The newest dashboard `schemaVersion` each Grafana release line writes (and so reads
/// without migrating down): a dashboard newer than the pinned Grafana is not supported.
const GRAFANA_SCHEMA: &[(&str, i64)] =
    &[("11.1", 39), ("11.2", 39), ("11.3", 40), ("11.4", 40), ("11.5", 40), ("11.6", 41), ("12.0", 41), ("12.1", 41)];

/// The Grafana image docker-compose.yml pins (`grafana/grafana:X.Y.Z`) as `X.Y`.
fn pinned_grafana() -> String {
    let compose = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docker-compose.yml")).unwrap();
    let tag = compose
        .lines()
        .find_map(|l| l.trim().strip_prefix("image: grafana/grafana:"))
        .expect("docker-compose.yml pins grafana/grafana:<version>");
    let mut parts = tag.trim().split('.');
    format!("{}.{}", parts.next().unwrap(), parts.next().unwrap_or("0"))
}

/// Both dashboards: `job` and `instance` variables that every `vex_*` selector matches,
/// `$__rate_interval` for every range but a window the panel's title names (`(1h)`),
/// not editable by default, and a `schemaVersion` the pinned Grafana supports.
#[test]
fn dashboards_select_job_and_instance_and_fit_the_pinned_grafana() {
    let grafana = pinned_grafana();
    let max_schema = GRAFANA_SCHEMA
        .iter()
        .find(|(v, _)| *v == grafana)
        .unwrap_or_else(|| panic!("Grafana {grafana}: add its schemaVersion to GRAFANA_SCHEMA"))
        .1;
    for entry in std::fs::read_dir(dashboards_dir()).expect("dashboards/") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let name = path.display().to_string();
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let schema = v["schemaVersion"].as_i64().unwrap_or(0);
        assert!(schema <= max_schema, "{name}: schemaVersion {schema} is newer than Grafana {grafana} ({max_schema})");
        assert_eq!(v["editable"], false, "{name}: editable by default");
        let vars = v["templating"]["list"].as_array().expect("templating.list");
        for var in ["job", "instance"] {
            let t = vars.iter().find(|t| t["name"] == var).unwrap_or_else(|| panic!("{name}: no {var} variable"));
            assert_eq!(t["type"], "query", "{name}: {var}");
            assert!(t["query"]["query"].as_str().is_some_and(|q| q.starts_with("label_values(")), "{name}: {var}");
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{name}: {var}");
        }
        for p in v["panels"].as_array().expect("panels") {
            let title = p["title"].as_str().unwrap_or("");
            for t in p["targets"].as_array().expect("targets") {
                let expr = t["expr"].as_str().unwrap();
                // Every vex_ selector carries both matchers.
                let mut rest = expr;
                while let Some(pos) = rest.find("vex_") {
                    let after = &rest[pos..];
                    let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
                    let sel = &after[end..];
                    assert!(
                        sel.starts_with('{')
                            && sel[..sel.find('}').unwrap()].contains("job=~\"$job\"")
                            && sel[..sel.find('}').unwrap()].contains("instance=~\"$instance\""),
                        "{name}: {title}: {} has no job/instance matchers: {expr}",
                        &after[..end]
                    );
                    rest = &after[end..];
                }
                // Every range is $__rate_interval, or a window the title names.
                let mut rest = expr;
                while let Some(pos) = rest.find("}[") {
                    let window = &rest[pos + 2..pos + 2 + rest[pos + 2..].find(']').unwrap()];
                    assert!(
                        window == "$__rate_interval" || title.contains(&format!("({window})")),
                        "{name}: {title}: range [{window}] is neither $__rate_interval nor named in the title"
                    );
                    rest = &rest[pos + 2..];
                }
            }
        }
    }
}
