//! Upgrading stored observations written by an older version (one mechanism for every
//! change of keys or record shape: issue 18 keys from names, issue 17 platform keys,
//! issue 20 lean records each add a [`Step`]).
//!
//! Invariants: pure; a store is at a schema version (the `schema_version` its records
//! carry; a store written by bafbf91 is at 2); upgrading from `v` runs every step whose
//! `to` is above `v`, in order; a step looks at one stored observation and says it is
//! unchanged, re-keyed without loss (new artifact, package and scope; its id recomputed,
//! so a replay of the re-keyed observation is still a duplicate), or changed in a way
//! the stored observation cannot tell (lossy: only re-reading its document gives the new
//! key). An upgrade is applied by the store only when no observation is lossy (then the
//! records are recomputed from the upgraded observations); otherwise start-up refuses and
//! names `vex-lens reindex`, which drops the lossy observations and their pairs.

use super::keys::{parse_key, KeyKind, PlatformTag};
use super::model::Observation;
use super::model::SourceFormat;
use std::sync::Arc;

/// The schema version this code writes (records' `schema_version`; the store's marker).
pub const STORE_SCHEMA_VERSION: u32 = 5;

/// The version of a store that has data but no marker: written by bafbf91 or before.
pub const UNMARKED_STORE_VERSION: u32 = 2;

/// What one step makes of one stored observation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rekey {
    /// The observation is the same under the new version.
    Same,
    /// Re-keyed without loss.
    Changed { artifact: String, package: String, scope: Vec<String> },
    /// The new key cannot be computed from the stored observation: why.
    Lossy(String),
}

/// One upgrade step, from `to - 1` to `to`.
pub struct Step {
    pub to: u32,
    /// What changed (named in logs and in the refusal message).
    pub what: &'static str,
    pub rekey: fn(&Observation) -> Rekey,
}

/// Every step, in order of `to`.
pub const STEPS: &[Step] = &[
    Step {
        to: 3,
        what: "keys from names (issue 18): RPM/Debian names are purls, name keys keep the product's case",
        rekey: rekey_v3,
    },
    Step {
        to: 4,
        what: "platform context is identity (issue 17): a CSAF relationship is the component on its platform",
        rekey: rekey_v4,
    },
    Step {
        to: 5,
        what: "lean records (issue 20): a record names each statement by its observation id; the statement text lives once, in the observation",
        rekey: rekey_v5,
    },
];

/// v3: a `name:` key (artifact or scope) was lower-cased and may hold an RPM NEVRA or a
/// Debian name; the new key keeps the product's case and reads the name in the context of
/// its product tree (architecture branch, platform): neither can be recovered from the
/// stored key, unless it holds no letter at all. Every other key kind is unchanged
/// (opaque `id:` keys and `pkg:oci` keys of image references are new: their products were
/// not stored before).
fn rekey_v3(o: &Observation) -> Rekey {
    let lossy = |k: &str| {
        parse_key(k).map(|p| p.kind == KeyKind::Name).unwrap_or(k.starts_with("name:"))
            && k.strip_prefix("name:").unwrap_or(k).chars().any(|c| c.is_alphabetic())
    };
    match std::iter::once(&o.artifact).chain(o.scope.iter()).find(|k| lossy(k)) {
        Some(k) => Rekey::Lossy(format!("name key {k:?} was lower-cased and is read differently since v3")),
        None => Rekey::Same,
    }
}

/// v4: a CSAF observation with a scope was a relationship stored the old way (the
/// component's key as artifact, the platform's key as scope); now the platform is part of
/// the artifact key (`distro=<platform table value>` when the platform's key is in the
/// table, else `platform=<the platform's key>`) and the scope is empty; the package key
/// is unchanged. Lossless, except that two platforms of one document mapping to one
/// distro value are written `platform=` by the new normaliser (the stored observation
/// cannot tell; docs/consensus.md "Upgrades"). A key that does not parse is lossy.
fn rekey_v4(o: &Observation) -> Rekey {
    if o.format != SourceFormat::Csaf || o.scope.is_empty() {
        return Rekey::Same;
    }
    let platform = &o.scope[0];
    let tag = match parse_key(platform) {
        Ok(k) => match super::platforms::lookup_key(&k) {
            Some(p) => PlatformTag::Distro(p.distro),
            None => PlatformTag::Key(platform.to_string()),
        },
        Err(e) => return Rekey::Lossy(format!("platform key {platform:?} does not parse: {e}")),
    };
    match parse_key(&o.artifact).and_then(|k| k.with_platform(&tag)) {
        Ok(k) => Rekey::Changed { artifact: k.key, package: o.package.to_string(), scope: Vec::new() },
        Err(e) => Rekey::Lossy(format!("artifact {:?} cannot be put on platform {platform:?}: {e}", o.artifact)),
    }
}

/// v5: the record's shape changed (lean statements, `reason` an enum), the observations
/// did not: every observation is the same, and the records, recomputed from them by every
/// upgrade, take the new shape.
fn rekey_v5(_: &Observation) -> Rekey {
    Rekey::Same
}

/// A stored observation whose new key the store cannot compute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LossyObservation {
    pub id: Arc<str>,
    pub tenant: Arc<str>,
    pub package: Arc<str>,
    pub why: String,
}

/// What an upgrade from `from` makes of a store's observations.
#[derive(Debug, Default)]
pub struct Plan {
    /// Observations re-keyed without loss, with their old id (to delete) and the new one.
    pub rekeyed: Vec<(Arc<str>, Observation)>,
    /// Observations whose new key the store cannot compute.
    pub lossy: Vec<LossyObservation>,
    /// Observations that stay as they are.
    pub unchanged: usize,
}

impl Plan {
    /// Whether the store can be upgraded in place (nothing is lossy).
    pub fn is_lossless(&self) -> bool {
        self.lossy.is_empty()
    }

    /// The start-up refusal for a lossy plan ([`refusal`]).
    pub fn refusal(&self, from: u32) -> String {
        refusal(from, self.lossy.len(), &self.lossy)
    }
}

/// The start-up refusal for a store at `from` with `count` lossy observations: how many,
/// a sample (at most 3 of `sample`), and the command that resolves it.
pub fn refusal(from: u32, count: usize, sample: &[LossyObservation]) -> String {
    let sample: Vec<&str> = sample.iter().take(3).map(|l| l.why.as_str()).collect();
    format!(
        "the store was written by schema version {from} and {count} stored observation(s) cannot be re-keyed to version {STORE_SCHEMA_VERSION} without their documents (e.g. {}); run `vex-lens reindex` (drops those observations and their pairs, recomputes the rest; then ingest their documents again)",
        sample.join("; ")
    )
}

/// The steps an upgrade from `from` runs.
pub fn steps_from(from: u32) -> impl Iterator<Item = &'static Step> {
    STEPS.iter().filter(move |s| s.to > from)
}

fn lossy(o: &Observation, why: String) -> LossyObservation {
    LossyObservation { id: o.id.clone(), tenant: o.tenant.clone(), package: o.package.clone(), why }
}

/// Plans the upgrade of `observations` from schema version `from`.
pub fn plan<'a>(from: u32, observations: impl IntoIterator<Item = &'a Observation>) -> Plan {
    let mut p = Plan::default();
    for o in observations {
        let mut cur: Option<Observation> = None;
        let mut why = None;
        for step in steps_from(from) {
            match (step.rekey)(cur.as_ref().unwrap_or(o)) {
                Rekey::Same => {}
                Rekey::Changed { artifact, package, scope } => {
                    let mut n = cur.take().unwrap_or_else(|| o.clone());
                    n.artifact = artifact.into();
                    n.package = package.into();
                    n.scope = scope.into_iter().map(Arc::from).collect();
                    cur = Some(n);
                }
                Rekey::Lossy(w) => {
                    why = Some(w);
                    break;
                }
            }
        }
        match (why, cur) {
            (Some(why), _) => p.lossy.push(lossy(o, why)),
            (None, Some(mut n)) => match n.compute_id() {
                Ok(id) => {
                    n.id = id.into();
                    p.rekeyed.push((o.id.clone(), n));
                }
                Err(e) => p.lossy.push(lossy(o, e.to_string())),
            },
            (None, None) => p.unchanged += 1,
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::IngestContext;
    use crate::domain::normalise::normalise_bytes;

    fn observations(doc: &str) -> Vec<Observation> {
        normalise_bytes("t.json", doc.as_bytes(), &IngestContext::default(), 1 << 20).unwrap().observations
    }

    #[test]
    fn purl_keyed_observations_upgrade_in_place_and_name_keys_are_lossy() {
        let ov = observations(
            r#"{"@context":"https://openvex.dev/ns/v0.2.0","timestamp":"2023-01-01T00:00:00Z","statements":[{"vulnerability":{"name":"CVE-1"},"products":[{"@id":"pkg:npm/a@1","subcomponents":[{"@id":"pkg:npm/b@2"}]},{"@id":"cpe:2.3:a:x:y:1:*:*:*:*:*:*:*"}],"status":"fixed"}]}"#,
        );
        let p = plan(UNMARKED_STORE_VERSION, &ov);
        assert!(p.is_lossless());
        assert_eq!((p.unchanged, p.rekeyed.len()), (2, 0));
        let mut old = ov[0].clone();
        old.artifact = "name:ciq/firefox-1.0-1.el8.x86_64@firefox-1.0-1.el8.x86_64".into();
        let mut digits = ov[0].clone();
        digits.artifact = "name:/1234@5".into();
        let mut scoped = ov[0].clone();
        scoped.scope = vec!["name:acme/box@1.0".into()];
        let p = plan(UNMARKED_STORE_VERSION, [&old, &digits, &scoped]);
        assert_eq!(p.unchanged, 1, "a name key without letters reads the same");
        assert_eq!(p.lossy.len(), 2);
        assert!(p.refusal(2).contains("vex-lens reindex"), "{}", p.refusal(2));
        // A store already at the current version runs no step.
        assert_eq!(plan(STORE_SCHEMA_VERSION, [&old]).unchanged, 1);
    }

    #[test]
    fn csaf_relationships_get_their_platform_in_the_key() {
        let ov = observations(
            r#"{"@context":"https://openvex.dev/ns/v0.2.0","timestamp":"2023-01-01T00:00:00Z","statements":[{"vulnerability":{"name":"CVE-1"},"products":[{"@id":"pkg:rpm/rocky/openssl@3.0.7-1.el9"}],"status":"fixed"}]}"#,
        );
        let mut old = ov[0].clone();
        old.format = SourceFormat::Csaf;
        old.scope = vec!["cpe:2.3:o:ciq:rocky_linux_from_ciq_lts:9.2:*:*:*:*:*:*:*".into()];
        old.id = old.compute_id().unwrap().into();
        let mut other = old.clone();
        other.scope = vec!["cpe:2.3:o:acme:box:1:*:*:*:*:*:*:*".into()];
        other.id = other.compute_id().unwrap().into();
        let mut bad = old.clone();
        bad.scope = vec!["pkg:".into()];
        let mut openvex = old.clone();
        openvex.format = SourceFormat::Openvex;
        let p = plan(3, [&old, &other, &bad, &openvex, &ov[0]]);
        assert_eq!(p.unchanged, 2, "an OpenVEX subcomponent scope and an unscoped CSAF observation stay");
        assert_eq!(p.lossy.len(), 1, "{:?}", p.lossy);
        assert!(p.lossy[0].why.contains("does not parse"), "{}", p.lossy[0].why);
        assert_eq!(p.rekeyed.len(), 2);
        let (old_id, n) = &p.rekeyed[0];
        assert_eq!(old_id, &old.id);
        assert_eq!(&*n.artifact, "pkg:rpm/rocky/openssl@3.0.7-1.el9?distro=rocky-9.2");
        assert_eq!(n.package, old.package);
        assert!(n.scope.is_empty());
        assert_eq!(n.id, Arc::from(n.compute_id().unwrap()), "the id is recomputed");
        assert_ne!(n.id, old.id);
        let (_, m) = &p.rekeyed[1];
        assert_eq!(&*m.artifact, "pkg:rpm/rocky/openssl@3.0.7-1.el9?platform=cpe:2.3:o:acme:box:1:*:*:*:*:*:*:*");
        assert!(parse_key(&m.artifact).is_ok_and(|k| k.key == *m.artifact), "the new key parses back to itself");
        // A CPE component gets the suffix; a store already at 4 runs no step.
        let mut cpe = old.clone();
        cpe.artifact = "cpe:2.3:a:openssl:openssl:3.0.7:*:*:*:*:*:*:*".into();
        let p = plan(3, [&cpe]);
        assert_eq!(&*p.rekeyed[0].1.artifact, "cpe:2.3:a:openssl:openssl:3.0.7:*:*:*:*:*:*:*?distro=rocky-9.2");
        assert_eq!(plan(4, [&old]).unchanged, 1);
        // From 2, step 3 runs first: a CSAF name key is lossy, whatever its platform.
        let mut named = old.clone();
        named.artifact = "name:acme/box@1".into();
        assert_eq!(plan(2, [&named]).lossy.len(), 1);
    }

    #[test]
    fn steps_are_ordered_and_end_at_the_current_version() {
        assert!(STEPS.windows(2).all(|w| w[0].to < w[1].to));
        assert_eq!(STEPS.last().map(|s| s.to), Some(STORE_SCHEMA_VERSION));
        assert_eq!(
            STORE_SCHEMA_VERSION,
            crate::domain::consensus::RECORD_SCHEMA_VERSION,
            "records and stores share the version"
        );
    }
}
