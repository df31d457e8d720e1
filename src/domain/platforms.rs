//! The platform table (docs/consensus.md "Platforms"): which distribution a CSAF platform
//! CPE names, as the purl `distro` qualifier value and the purl namespace of its packages.
//!
//! Invariants: pure and static; a row matches a CPE by (vendor, product) and, when the row
//! names them, version and edition; the first matching row wins; the distro value is
//! `<id>-<cpe version>`, followed by `-<edition>` when the CPE names an edition, so two
//! platforms that differ only in edition (Red Hat's `enterprise_linux:8::appstream` and
//! `8::crb`) never get one value; a CPE without a version maps to no distro value. A
//! platform that matches no row has no distro value and no namespace: the caller falls
//! back (`platform=` for the distro, the lower-cased vendor branch for the namespace).

use super::keys::{ArtifactKey, KeyKind};

/// One family of platforms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlatformRow {
    /// CPE vendor and product (lower-case, as in a normalised CPE key).
    pub vendor: &'static str,
    pub product: &'static str,
    /// CPE version to match; `None`: every version.
    pub version: Option<&'static str>,
    /// CPE edition to match; `None`: every edition.
    pub edition: Option<&'static str>,
    /// The distribution id the `distro` value starts with (`rhel`, `rocky`, ...).
    pub distro_id: &'static str,
    /// The purl namespace of the distribution's packages (`redhat`, `rocky`, ...).
    pub namespace: &'static str,
}

/// The rows, one per platform family seen in real feeds (`../shared/corpus/csaf/` and
/// `csaf-ciq/`). Keep docs/consensus.md "Platforms" in step (a test checks it).
pub const TABLE: &[PlatformRow] = &[
    // Red Hat Enterprise Linux, every version and repository (AppStream, BaseOS, CRB, ...).
    PlatformRow {
        vendor: "redhat",
        product: "enterprise_linux",
        version: None,
        edition: None,
        distro_id: "rhel",
        namespace: "redhat",
    },
    // CIQ's Rocky Linux from CIQ (LTS): Rocky Linux packages rebuilt by CIQ.
    PlatformRow {
        vendor: "ciq",
        product: "rocky_linux_from_ciq_lts",
        version: None,
        edition: None,
        distro_id: "rocky",
        namespace: "rocky",
    },
    // CIQ Bridge: CentOS Linux 7 packages maintained by CIQ.
    PlatformRow {
        vendor: "ciq",
        product: "centos_linux_bridge",
        version: None,
        edition: None,
        distro_id: "centos",
        namespace: "centos",
    },
];

/// What the table says about one platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// The purl `distro` qualifier value, e.g. `rhel-8-appstream`, `rocky-8.6`.
    pub distro: String,
    /// The purl namespace of its packages, e.g. `redhat`.
    pub namespace: &'static str,
}

/// The platform a CPE (vendor, product, version, edition; lower-case, `*`/`-`/empty for
/// "any") names, if a row matches.
pub fn lookup(vendor: &str, product: &str, version: &str, edition: &str) -> Option<Platform> {
    let given = |s: &str| !matches!(s, "" | "*" | "-");
    let row = TABLE.iter().find(|r| {
        r.vendor == vendor
            && r.product == product
            && r.version.map_or(true, |v| v == version)
            && r.edition.map_or(true, |e| e == edition)
    })?;
    if !given(version) {
        return None;
    }
    let mut distro = format!("{}-{version}", row.distro_id);
    if given(edition) {
        distro.push('-');
        distro.push_str(edition);
    }
    Some(Platform { distro, namespace: row.namespace })
}

/// The platform a normalised CPE key names (see [`lookup`]); `None` for other keys.
pub fn lookup_key(key: &ArtifactKey) -> Option<Platform> {
    if key.kind != KeyKind::Cpe {
        return None;
    }
    let rest = key.key.strip_prefix("cpe:2.3:")?;
    // Components are separated by unescaped ':' (the key is a normalised CPE 2.3 string).
    let mut parts = Vec::with_capacity(11);
    let mut cur = String::new();
    let mut esc = false;
    for c in rest.chars() {
        if esc {
            cur.push(c);
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else if c == ':' {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    // part:vendor:product:version:update:edition:...
    let get = |i: usize| parts.get(i).map(String::as_str).unwrap_or("*");
    lookup(get(1), get(2), get(3), get(5))
}

/// The namespace the table gives a platform key's packages, if any.
pub fn namespace_of(key: &ArtifactKey) -> Option<&'static str> {
    lookup_key(key).map(|p| p.namespace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::keys::normalise_cpe;

    fn of(cpe: &str) -> Option<Platform> {
        lookup_key(&normalise_cpe(cpe).unwrap())
    }

    #[test]
    fn every_platform_family_of_the_corpus_maps() {
        let p = |d: &str, n: &'static str| Some(Platform { distro: d.to_string(), namespace: n });
        assert_eq!(of("cpe:/a:redhat:enterprise_linux:8::appstream"), p("rhel-8-appstream", "redhat"));
        assert_eq!(of("cpe:/a:redhat:enterprise_linux:8::crb"), p("rhel-8-crb", "redhat"));
        assert_eq!(of("cpe:2.3:o:ciq:rocky_linux_from_ciq_lts:8.6:*:*:*:*:*:*:*"), p("rocky-8.6", "rocky"));
        assert_eq!(of("cpe:2.3:o:ciq:rocky_linux_from_ciq_lts:9.2:*:*:*:*:*:*:*"), p("rocky-9.2", "rocky"));
        assert_eq!(of("cpe:2.3:o:ciq:centos_linux_bridge:7.9:*:*:*:*:*:*:*"), p("centos-7.9", "centos"));
    }

    #[test]
    fn editions_never_share_a_value_and_unknown_platforms_map_to_nothing() {
        assert_ne!(of("cpe:/a:redhat:enterprise_linux:8::appstream"), of("cpe:/a:redhat:enterprise_linux:8::crb"));
        assert_eq!(of("cpe:2.3:o:acme:os:1:*:*:*:*:*:*:*"), None);
        assert_eq!(of("cpe:/a:redhat:enterprise_linux"), None, "no version: no distro value");
        assert_eq!(lookup_key(&crate::domain::keys::parse_key("pkg:rpm/redhat/x").unwrap()), None);
    }

    #[test]
    fn the_table_is_documented() {
        let doc = include_str!("../../docs/consensus.md");
        for r in TABLE {
            let row = format!("| `{}` | `{}` | `{}` | `{}` |", r.vendor, r.product, r.distro_id, r.namespace);
            assert!(doc.contains(&row), "docs/consensus.md lacks the platform row {row}");
        }
    }
}
