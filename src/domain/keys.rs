//! Artifact, package and vulnerability keys (CONSENSUS.md "Keys").
//!
//! Invariants: every key is a normalised identifier (purl > BOM-Link > CPE > hash > name
//! key > opaque `id:` key); two spellings of the same thing give the same key; the package
//! key of an artifact is its key without version and qualifiers, so that every statement
//! about a package meets in one place; an opaque key is its own package and matches only
//! itself; a name key lower-cases its vendor only (product and version keep their case);
//! no id or key longer than [`MAX_KEY_BYTES`] is ever a key (the normalisers report it).

use std::collections::BTreeMap;

/// What kind of identifier an artifact key is; the order is the preference order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyKind {
    Purl,
    BomLink,
    Cpe,
    Hash,
    Name,
    /// `id:<string>`: an OpenVEX product id that is no other key, matched exactly.
    Id,
}

/// Longest vulnerability id, product id or key accepted, in bytes (docs/consensus.md
/// "Limits"); longer ones are a `too_long` diagnostic, never a key.
pub const MAX_KEY_BYTES: usize = 1024;

/// A parsed artifact key, used for matching statements to pairs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactKey {
    pub kind: KeyKind,
    /// The package key (routing): key without version and qualifiers.
    pub package: String,
    /// The version, if any (a concrete version or a `vers:` range).
    pub version: Option<String>,
    /// Sorted qualifiers: a purl's, and for every kind the platform qualifier (`distro` or
    /// `platform`, see [`PlatformTag`]).
    pub qualifiers: BTreeMap<String, String>,
    /// The full normalised key.
    pub key: String,
}

/// The platform an artifact is on (CONSENSUS.md "Platform context is identity"), as the
/// qualifier it adds to a key of any kind: `distro=<value>` (the purl spec's qualifier,
/// from the platform table) or `platform=<the platform's own key>` (lossless). A purl
/// carries it among its qualifiers; any other key as one `?<name>=<value>` suffix, the
/// value percent-encoded as a purl qualifier value is, so every key parses back to itself.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PlatformTag {
    Distro(String),
    Key(String),
}

impl PlatformTag {
    pub const DISTRO: &'static str = "distro";
    pub const PLATFORM: &'static str = "platform";

    fn parts(&self) -> (&'static str, &str) {
        match self {
            PlatformTag::Distro(v) => (Self::DISTRO, v),
            PlatformTag::Key(v) => (Self::PLATFORM, v),
        }
    }
}

/// Characters percent-encoded in the value of a platform suffix (all but unreserved).
const SUFFIX_VALUE: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// An identifier could not be normalised into a key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("invalid package URL {value:?}: {reason}")]
    Purl { value: String, reason: String },
    #[error("invalid CPE {value:?}")]
    Cpe { value: String },
    #[error("unrecognised identifier {value:?}")]
    Unrecognised { value: String },
}

/// Normalises a package URL: lower-case type, percent-decoded components, qualifiers
/// sorted (the `packageurl` crate does the parsing and the canonical encoding).
pub fn normalise_purl(s: &str) -> Result<ArtifactKey, KeyError> {
    // A `vers:` range as the version contains '/', which a purl parser would read as a
    // namespace separator: split it off, normalise the rest, and put it back.
    if let Some(idx) = s.find("@vers:").or_else(|| s.find("@vers%3A")) {
        let (head, after) = (&s[..idx], &s[idx + 1..]);
        let end = after.find(['?', '#']).unwrap_or(after.len());
        // Trimmed: whitespace at the end of the range (before `?`/`#`, or spelled `%20`)
        // would end up at the end of the key, which the parser trims, so the key would not
        // parse back to itself (found by fuzz/purl).
        let range = percent_decode(&after[..end]).trim().to_string();
        // A `?` or `#` decoded from `%3F`/`%23` would start the qualifiers or subpath when
        // the key is read back (found by fuzz/purl): no version holds one.
        if range.contains(['?', '#']) {
            return Err(KeyError::Purl { value: s.to_string(), reason: "a vers: range holds '?' or '#'".into() });
        }
        super::vers::validate(&range).map_err(|e| KeyError::Purl { value: s.to_string(), reason: e.to_string() })?;
        let mut k = normalise_purl(&format!("{head}{}", &after[end..]))?;
        if k.version.is_some() {
            return Err(KeyError::Purl { value: s.to_string(), reason: "two versions".into() });
        }
        k.key = format!("{}@{}{}", k.package, range, &k.key[k.package.len()..]);
        k.version = Some(range);
        return Ok(k);
    }
    let p: packageurl::PackageUrl = s
        .trim()
        .parse()
        .map_err(|e: packageurl::Error| KeyError::Purl { value: s.to_string(), reason: e.to_string() })?;
    // A `.` or `..` namespace segment or name (e.g. spelled `%2e`) is written back as a
    // path segment that the parser then drops: the key would not parse back to itself, so
    // two spellings of one purl would give two keys (found by fuzz/purl).
    let dot = |seg: &str| seg == "." || seg == "..";
    if dot(p.name()) || p.namespace().is_some_and(|ns| ns.split('/').any(dot)) {
        return Err(KeyError::Purl { value: s.to_string(), reason: "a namespace segment or name is . or ..".into() });
    }
    let mut base = packageurl::PackageUrl::new(p.ty().to_ascii_lowercase(), p.name().to_string())
        .map_err(|e| KeyError::Purl { value: s.to_string(), reason: e.to_string() })?;
    // Empty namespace segments (e.g. what is left of `pkg:maven/./x`) are dropped: written
    // as `//` they would parse back to another key (found by fuzz/purl).
    let ns: Vec<&str> = p.namespace().unwrap_or("").split('/').filter(|seg| !seg.is_empty()).collect();
    if !ns.is_empty() {
        base.with_namespace(ns.join("/"))
            .map_err(|e| KeyError::Purl { value: s.to_string(), reason: e.to_string() })?;
    }
    let package = base.to_string();
    // Without a namespace (none given, or only empty segments, e.g. `pkg:composer/./x`), a
    // type that requires one does not accept the key when it is read back (found by
    // fuzz/purl): such a purl is invalid.
    if ns.is_empty() {
        package
            .parse::<packageurl::PackageUrl>()
            .map_err(|e| KeyError::Purl { value: s.to_string(), reason: e.to_string() })?;
    }
    let mut full = base.clone();
    if let Some(v) = p.version() {
        full.with_version(v.to_string()).map_err(|e| KeyError::Purl { value: s.to_string(), reason: e.to_string() })?;
    }
    let mut qualifiers = BTreeMap::new();
    for (k, v) in p.qualifiers() {
        if v.is_empty() {
            continue;
        }
        qualifiers.insert(k.to_ascii_lowercase(), v.to_string());
    }
    for (k, v) in &qualifiers {
        full.add_qualifier(k.clone(), v.clone())
            .map_err(|e| KeyError::Purl { value: s.to_string(), reason: e.to_string() })?;
    }
    if let Some(sp) = p.subpath() {
        full.with_subpath(sp.to_string())
            .map_err(|e| KeyError::Purl { value: s.to_string(), reason: e.to_string() })?;
    }
    Ok(ArtifactKey {
        kind: KeyKind::Purl,
        package,
        version: p.version().map(str::to_string),
        qualifiers,
        key: full.to_string(),
    })
}

/// Normalises a CPE (2.3 formatted string or 2.2 URI) to a lower-case CPE 2.3 string.
/// The package key is `cpe:<vendor>:<product>`; the version is the CPE's version unless
/// it is `*` or `-`.
pub fn normalise_cpe(s: &str) -> Result<ArtifactKey, KeyError> {
    let t = s.trim().to_ascii_lowercase();
    let err = || KeyError::Cpe { value: s.to_string() };
    let mut parts: Vec<String> = if let Some(rest) = t.strip_prefix("cpe:2.3:") {
        split_cpe23(rest)
    } else if let Some(rest) = t.strip_prefix("cpe:/") {
        // Decoded values are lower-cased and `\` and `:` escaped as in a 2.3 string, so the
        // key parses back to itself (`%4e` is `n`, `%3a` stays inside its component; found
        // by fuzz/purl).
        rest.split(':')
            .map(|p| {
                if p.is_empty() {
                    "*".to_string()
                } else {
                    percent_decode(p).to_lowercase().replace('\\', "\\\\").replace(':', "\\:")
                }
            })
            .collect()
    } else {
        return Err(err());
    };
    if parts.len() < 3 || parts[0].is_empty() || parts[1].is_empty() {
        return Err(err());
    }
    // A CPE has no whitespace or control characters; accepting them inside a component
    // would make a key that does not parse back to itself (trimmed; found by fuzz/purl).
    if parts.iter().any(|p| p.chars().any(|c| c.is_whitespace() || c.is_control())) {
        return Err(err());
    }
    parts.resize(11, "*".to_string());
    let version = match parts[3].as_str() {
        "*" | "-" | "" => None,
        v => Some(v.to_string()),
    };
    let key = format!("cpe:2.3:{}", parts.join(":"));
    Ok(ArtifactKey {
        kind: KeyKind::Cpe,
        package: format!("cpe:{}:{}", parts[1], parts[2]),
        version,
        qualifiers: BTreeMap::new(),
        key,
    })
}

fn split_cpe23(rest: &str) -> Vec<String> {
    // Components are separated by unescaped ':'.
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut esc = false;
    for c in rest.chars() {
        if esc {
            cur.push('\\');
            cur.push(c);
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else if c == ':' {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Normalises a hash to `<alg>:<lower-case hex>` (e.g. `sha256:...`).
pub fn normalise_hash(alg: &str, value: &str) -> ArtifactKey {
    let alg = alg.to_ascii_lowercase().replace(['-', '_'], "");
    let key = format!("{alg}:{}", value.trim().to_ascii_lowercase());
    ArtifactKey { kind: KeyKind::Hash, package: key.clone(), version: None, qualifiers: BTreeMap::new(), key }
}

/// A CycloneDX BOM-Link `urn:cdx:<serial>/<version>#<bom-ref>`. When the bom-ref is
/// itself a package URL, the purl is the more global key and is returned instead. A
/// BOM-Link key may carry a version or `vers:` range of the component it names (from
/// CycloneDX `affects[].versions`), written `urn:cdx:<serial>/<version>#<bom-ref>@<v>`:
/// in the key, `%` and `@` of the bom-ref are percent-encoded, so the last raw `@` of the
/// fragment always starts the version.
pub fn normalise_bomlink(s: &str) -> Result<ArtifactKey, KeyError> {
    let t = s.trim();
    let rest = t.strip_prefix("urn:cdx:").ok_or_else(|| KeyError::Unrecognised { value: s.to_string() })?;
    let (doc, raw_fragment) = rest.split_once('#').unwrap_or((rest, ""));
    let decoded = percent_decode(raw_fragment);
    if decoded.starts_with("pkg:") {
        if let Ok(k) = normalise_purl(&decoded) {
            return Ok(k);
        }
    }
    let (fragment, version) = match raw_fragment.rsplit_once('@') {
        Some((f, v)) if !f.is_empty() && !v.trim().is_empty() => (percent_decode(f), Some(v.trim().to_string())),
        _ => (decoded, None),
    };
    if let Some(v) = version.as_deref().filter(|v| v.starts_with("vers:")) {
        super::vers::validate(v).map_err(|e| KeyError::Unrecognised { value: format!("{s}: {e}") })?;
    }
    // Trimmed: a decoded `%20` at the end would end the key, which the parser trims, so
    // the key would not parse back to itself (found by fuzz/purl).
    let fragment = fragment.trim_end().replace('%', "%25").replace('@', "%40");
    let doc = doc.to_ascii_lowercase();
    let base = if fragment.is_empty() { format!("urn:cdx:{doc}") } else { format!("urn:cdx:{doc}#{fragment}") };
    let serial = doc.split('/').next().unwrap_or(&doc).to_string();
    Ok(ArtifactKey {
        kind: KeyKind::BomLink,
        package: if fragment.is_empty() { format!("urn:cdx:{serial}") } else { format!("urn:cdx:{serial}#{fragment}") },
        key: match &version {
            Some(v) => format!("{base}@{v}"),
            None => base,
        },
        version,
        qualifiers: BTreeMap::new(),
    })
}

/// A name key `name:<vendor>/<product>[@<version>]`, for products that have no global
/// identifier: the vendor lower-case, product and version as given (trimmed), since a
/// product name may be case-sensitive (an RPM name is).
pub fn name_key(vendor: &str, product: &str, version: Option<&str>) -> ArtifactKey {
    let clean = |s: &str| s.trim().replace('@', "%40").replace('?', "%3F");
    let package = format!("name:{}/{}", clean(vendor).to_lowercase(), clean(product));
    let version = version.map(|v| v.trim().replace('?', "%3F")).filter(|v| !v.is_empty());
    let key = match &version {
        Some(v) => format!("{package}@{v}"),
        None => package.clone(),
    };
    ArtifactKey { kind: KeyKind::Name, package, version, qualifiers: BTreeMap::new(), key }
}

/// The opaque key `id:<string>` of an identifier that is no other key (CONSENSUS.md "Keys
/// from names"): matched exactly, its own package.
pub fn opaque_key(id: &str) -> Result<ArtifactKey, KeyError> {
    let t = id.trim();
    if t.is_empty() {
        return Err(KeyError::Unrecognised { value: id.to_string() });
    }
    let key = format!("id:{t}");
    Ok(ArtifactKey { kind: KeyKind::Id, package: key.clone(), version: None, qualifiers: BTreeMap::new(), key })
}

/// Parses a key that is already normalised (or any identifier string): purl, BOM-Link,
/// CPE, `name:` key, `id:` key or `<alg>:<hex>` hash.
pub fn parse_key(s: &str) -> Result<ArtifactKey, KeyError> {
    let t = s.trim();
    if !t.starts_with("pkg:") && !t.starts_with("id:") {
        if let Some((base, suffix)) = t.rsplit_once('?') {
            let tag = match suffix.split_once('=') {
                Some((PlatformTag::DISTRO, v)) => Some(PlatformTag::Distro(percent_decode(v))),
                Some((PlatformTag::PLATFORM, v)) => Some(PlatformTag::Key(percent_decode(v))),
                _ => None,
            };
            if let Some(tag) = tag {
                return parse_key(base)?.with_platform(&tag);
            }
        }
    }
    if let Some(rest) = t.strip_prefix("id:") {
        opaque_key(rest)
    } else if t.starts_with("pkg:") {
        normalise_purl(t)
    } else if t.starts_with("urn:cdx:") {
        normalise_bomlink(t)
    } else if t.to_ascii_lowercase().starts_with("cpe:") {
        normalise_cpe(t)
    } else if let Some(rest) = t.strip_prefix("name:") {
        // The first `@` ends the package: `name_key` encodes `@` in vendor and product,
        // but a version (e.g. a `vers:` range) may hold one.
        let (vp, version) = match rest.split_once('@') {
            Some((a, v)) => (a, Some(v)),
            None => (rest, None),
        };
        let (vendor, product) = vp.split_once('/').unwrap_or(("", vp));
        Ok(name_key(vendor, product, version))
    } else if let Some((alg, hex)) = t.split_once(':') {
        let a = alg.to_ascii_lowercase().replace(['-', '_'], "");
        if matches!(
            a.as_str(),
            "sha1" | "sha256" | "sha384" | "sha512" | "md5" | "sha3256" | "sha3512" | "blake2b256" | "blake3"
        ) && !hex.is_empty()
            && hex.chars().all(|c| c.is_ascii_hexdigit())
        {
            Ok(normalise_hash(alg, hex))
        } else {
            Err(KeyError::Unrecognised { value: s.to_string() })
        }
    } else {
        Err(KeyError::Unrecognised { value: s.to_string() })
    }
}

impl ArtifactKey {
    /// The same artifact on `platform`: for a purl the qualifier (a purl that names its
    /// `distro` already keeps it, the publisher's own word), for any other key the suffix.
    /// Opaque `id:` keys and BOM-Links (never a CSAF component) take no platform.
    pub fn with_platform(&self, platform: &PlatformTag) -> Result<ArtifactKey, KeyError> {
        let (name, value) = platform.parts();
        if value.trim().is_empty() {
            return Err(KeyError::Unrecognised { value: format!("{}: an empty {name}", self.key) });
        }
        match self.kind {
            KeyKind::Purl => {
                if self.qualifiers.contains_key(PlatformTag::DISTRO) && name == PlatformTag::DISTRO {
                    return Ok(self.clone());
                }
                let mut p: packageurl::PackageUrl = self.key.parse().map_err(|e: packageurl::Error| {
                    KeyError::Purl { value: self.key.clone(), reason: e.to_string() }
                })?;
                p.add_qualifier(name, value.to_string())
                    .map_err(|e| KeyError::Purl { value: self.key.clone(), reason: e.to_string() })?;
                normalise_purl(&p.to_string())
            }
            KeyKind::Id | KeyKind::BomLink => {
                Err(KeyError::Unrecognised { value: format!("{}: this kind of key takes no platform", self.key) })
            }
            KeyKind::Cpe | KeyKind::Hash | KeyKind::Name => {
                if !self.qualifiers.is_empty() {
                    return Err(KeyError::Unrecognised { value: format!("{}: already on a platform", self.key) });
                }
                let encoded = percent_encoding::utf8_percent_encode(value, SUFFIX_VALUE);
                let mut k = self.clone();
                k.key = format!("{}?{name}={encoded}", self.key);
                k.qualifiers.insert(name.to_string(), value.to_string());
                Ok(k)
            }
        }
    }

    /// The platform qualifier of the key, if any.
    pub fn platform(&self) -> Option<PlatformTag> {
        if let Some(v) = self.qualifiers.get(PlatformTag::PLATFORM) {
            return Some(PlatformTag::Key(v.clone()));
        }
        self.qualifiers.get(PlatformTag::DISTRO).map(|v| PlatformTag::Distro(v.clone()))
    }

    /// Whether a statement about `self` applies to the pair whose artifact is `pair`:
    /// same package, `self`'s qualifiers a subset of the pair's, and `self` either
    /// version-less, the same version, or a `vers:` range containing the pair's version.
    pub fn applies_to(&self, pair: &ArtifactKey) -> bool {
        if self.key == pair.key {
            return true;
        }
        if self.package != pair.package || self.kind != pair.kind {
            return false;
        }
        if !self.qualifiers.iter().all(|(k, v)| pair.qualifiers.get(k) == Some(v)) {
            return false;
        }
        match (&self.version, &pair.version) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) if a.starts_with("vers:") => {
                !b.starts_with("vers:") && super::vers::contains(a, b).unwrap_or(false)
            }
            (Some(a), Some(b)) => a == b,
        }
    }

    /// The same key with `version` (a version or a `vers:` range) in place of its own.
    /// Only purl, name and BOM-Link keys carry a version.
    pub fn with_version(&self, version: &str) -> Result<ArtifactKey, KeyError> {
        let version = version.trim();
        match self.kind {
            KeyKind::Purl => {
                let after = &self.key[self.package.len()..];
                let tail = &after[after.find(['?', '#']).unwrap_or(after.len())..];
                let v = if version.starts_with("vers:") {
                    version.to_string()
                } else {
                    percent_encoding::utf8_percent_encode(version, percent_encoding::NON_ALPHANUMERIC).to_string()
                };
                normalise_purl(&format!("{}@{v}{tail}", self.package))
            }
            KeyKind::Name => {
                let rest = self.package.strip_prefix("name:").unwrap_or(&self.package);
                let (vendor, product) = rest.split_once('/').unwrap_or(("", rest));
                let k = name_key(vendor, product, Some(version));
                match self.platform() {
                    Some(p) => k.with_platform(&p),
                    None => Ok(k),
                }
            }
            KeyKind::BomLink => {
                let base = match &self.version {
                    Some(v) => &self.key[..self.key.len() - v.len() - 1],
                    None => &self.key,
                };
                let base = if base.contains('#') { base.to_string() } else { format!("{base}#") };
                normalise_bomlink(&format!("{base}@{version}"))
            }
            _ => Err(KeyError::Unrecognised { value: format!("{} cannot carry version {version:?}", self.key) }),
        }
    }

    /// True when the key names no particular version (version-less or a range).
    pub fn is_broad(&self) -> bool {
        match &self.version {
            None => true,
            Some(v) => v.starts_with("vers:"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_covers_versions_by_its_scheme() {
        let range = parse_key("pkg:npm/acme-widget@vers:npm/<1.0.0").unwrap();
        let rc = parse_key("pkg:npm/acme-widget@1.0.0-rc1").unwrap();
        let release = parse_key("pkg:npm/acme-widget@1.0.0").unwrap();
        assert!(range.applies_to(&rc), "a pre-release is before its release");
        assert!(!range.applies_to(&release));
        let py = parse_key("pkg:pypi/django@vers:pypi/<1.0").unwrap();
        assert!(py.applies_to(&parse_key("pkg:pypi/django@1.0rc1").unwrap()));
        assert!(!py.applies_to(&parse_key("pkg:pypi/django@1.0.post1").unwrap()));
        // A version the scheme cannot read is in no range.
        assert!(!range.applies_to(&parse_key("pkg:npm/acme-widget@latest").unwrap()));
        assert!(normalise_purl("pkg:nuget/Foo@vers:nuget/<1.0").is_err());
    }

    #[test]
    fn purl_normalisation() {
        let k = normalise_purl("pkg:OCI/alpine@sha256%3A124c?tag=3&arch=amd64").unwrap();
        assert_eq!(k.key, "pkg:oci/alpine@sha256:124c?arch=amd64&tag=3");
        assert_eq!(k.package, "pkg:oci/alpine");
        assert_eq!(k.version.as_deref(), Some("sha256:124c"));
        let k = normalise_purl("pkg:golang/github.com/k3s-io/kine").unwrap();
        assert_eq!(k.key, "pkg:golang/github.com/k3s-io/kine");
        assert_eq!(k.package, k.key);
        assert!(normalise_purl("pkg:").is_err());
        assert!(normalise_purl("not a purl").is_err());
    }

    #[test]
    fn versionless_purl_matches_any_version_and_qualifiers_narrow() {
        let any = parse_key("pkg:apk/wolfi/git").unwrap();
        let v = parse_key("pkg:apk/wolfi/git@2.39.0-r1?arch=x86_64").unwrap();
        assert!(any.applies_to(&v));
        assert!(!v.applies_to(&any));
        let arm = parse_key("pkg:apk/wolfi/git?arch=armv7").unwrap();
        assert!(!arm.applies_to(&v));
        let other = parse_key("pkg:apk/wolfi/bash@2.39.0-r1").unwrap();
        assert!(!any.applies_to(&other));
    }

    #[test]
    fn cpe_forms() {
        let a = normalise_cpe("cpe:/a:redhat:enterprise_linux:8::appstream").unwrap();
        assert_eq!(a.key, "cpe:2.3:a:redhat:enterprise_linux:8:*:appstream:*:*:*:*:*");
        assert_eq!(a.package, "cpe:redhat:enterprise_linux");
        let b = normalise_cpe("cpe:2.3:a:Apache:Log4j:2.14.1:*:*:*:*:*:*:*").unwrap();
        assert_eq!(b.package, "cpe:apache:log4j");
        assert_eq!(b.version.as_deref(), Some("2.14.1"));
        assert!(normalise_cpe("cpe:").is_err());
    }

    #[test]
    fn bomlink_with_purl_fragment_is_the_purl() {
        let k = normalise_bomlink(
            "urn:cdx:3e671687-395b-41f5-a30f-a58921a69b79/1#pkg:maven/com.fasterxml.jackson.core/jackson-databind@2.10.0?type=jar",
        )
        .unwrap();
        assert_eq!(k.kind, KeyKind::Purl);
        assert_eq!(k.package, "pkg:maven/com.fasterxml.jackson.core/jackson-databind");
        let k = normalise_bomlink("urn:cdx:cbb2cd68-2857-43b8-a10b-e8c03d277d18/1#product-ABC").unwrap();
        assert_eq!(k.key, "urn:cdx:cbb2cd68-2857-43b8-a10b-e8c03d277d18/1#product-ABC");
        assert_eq!(k.package, "urn:cdx:cbb2cd68-2857-43b8-a10b-e8c03d277d18#product-ABC");
    }

    #[test]
    fn bomlink_keys_carry_versions_and_ranges() {
        let base = normalise_bomlink("urn:cdx:cbb2cd68-2857-43b8-a10b-e8c03d277d18/1#product-ABC").unwrap();
        let range = base.with_version("vers:semver/>=2.0.0|<2.4.0").unwrap();
        assert_eq!(range.kind, KeyKind::BomLink);
        assert_eq!(range.key, "urn:cdx:cbb2cd68-2857-43b8-a10b-e8c03d277d18/1#product-ABC@vers:semver/>=2.0.0|<2.4.0");
        assert_eq!(range.package, base.package);
        assert_eq!(parse_key(&range.key).unwrap(), range);
        let v = base.with_version("2.3.9-rc1").unwrap();
        assert_eq!(parse_key(&v.key).unwrap(), v);
        assert!(range.applies_to(&v));
        assert!(!range.applies_to(&base.with_version("2.4.0").unwrap()));
        assert!(base.applies_to(&v), "the version-less link covers every version");
        assert_eq!(range.with_version("2.0.0").unwrap().key, base.with_version("2.0.0").unwrap().key);
        // An '@' inside a bom-ref is encoded, so it never reads as a version.
        let at = normalise_bomlink("urn:cdx:abc/1#comp%40x").unwrap();
        assert_eq!(at.version, None);
        assert_eq!(parse_key(&at.key).unwrap(), at);
        assert!(base.with_version("vers:nuget/<1").is_err());
    }

    #[test]
    fn name_keys_round_trip() {
        let k = name_key("Example Company", "DEF", Some("1.0-RC1"));
        assert_eq!(k.key, "name:example company/DEF@1.0-RC1", "the product keeps its case");
        assert_eq!(parse_key(&k.key).unwrap(), k);
    }

    #[test]
    fn opaque_keys_match_only_themselves() {
        let k = opaque_key(" nginx ").unwrap();
        assert_eq!((k.key.as_str(), k.package.as_str(), k.kind), ("id:nginx", "id:nginx", KeyKind::Id));
        assert_eq!(parse_key(&k.key).unwrap(), k);
        assert!(k.applies_to(&k));
        assert!(!k.applies_to(&opaque_key("nginx:1").unwrap()));
        assert!(!k.applies_to(&name_key("", "nginx", None)));
        assert!(opaque_key("  ").is_err());
        assert!(k.with_version("1").is_err());
    }

    #[test]
    fn purl_with_a_vers_range_round_trips() {
        let k = normalise_purl("pkg:npm/b@vers:npm/>=1.0.0|<2.0.0?os=linux").unwrap();
        assert_eq!(k.package, "pkg:npm/b");
        assert_eq!(k.key, "pkg:npm/b@vers:npm/>=1.0.0|<2.0.0?os=linux");
        assert_eq!(parse_key(&k.key).unwrap(), k);
        assert!(k.applies_to(&parse_key("pkg:npm/b@1.5.0?os=linux").unwrap()));
        assert!(normalise_purl("pkg:npm/b@vers:npm").is_err());
    }

    #[test]
    fn ranges_apply_to_versions_inside() {
        let r = parse_key("name:acme/acme product@vers:semver/>=2.0.0|<=2.7.0").unwrap();
        assert!(r.applies_to(&parse_key("name:acme/acme product@2.5.1").unwrap()));
        assert!(!r.applies_to(&parse_key("name:acme/acme product@2.8.0").unwrap()));
        assert!(r.is_broad());
    }
}
