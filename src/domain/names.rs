//! Keys from names (CONSENSUS.md "Keys from names"): RPM NEVRAs, Debian
//! `name_version_arch` names and container image references, for products that carry no
//! purl, CPE or hash.
//!
//! Invariants: pure; a name becomes a package only when it parses unambiguously (every
//! part non-empty and of its grammar, the arch a known one or the one its product tree
//! states), otherwise the caller keeps a name key and reports why; every key made here is
//! a purl built and then read back by [`keys::normalise_purl`], so a name and the purl a
//! scanner writes for the same package are one key. The NEVRA split is `rpm-version`'s
//! (RPM's own right-to-left rule), Debian versions are checked by `debversion`, image
//! references are parsed by `oci-spec` (the distribution/reference grammar); this module
//! only checks the parts and writes the purl.

use super::keys::{self, ArtifactKey, KeyError};

/// RPM architectures accepted in a NEVRA that no `architecture` branch confirms.
pub const RPM_ARCHES: &[&str] = &[
    "aarch64",
    "alpha",
    "armv7hl",
    "armv7hnl",
    "armhfp",
    "i386",
    "i486",
    "i586",
    "i686",
    "loongarch64",
    "mips",
    "mips64",
    "mips64el",
    "mipsel",
    "noarch",
    "nosrc",
    "ppc",
    "ppc64",
    "ppc64le",
    "ppc64p7",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "sparcv9",
    "src",
    "x86_64",
    "x86_64_v2",
    "x86_64_v3",
    "x86_64_v4",
];

/// Debian architectures accepted in a `name_version_arch` that no `architecture` branch
/// confirms.
pub const DEB_ARCHES: &[&str] = &[
    "all",
    "amd64",
    "arm64",
    "armel",
    "armhf",
    "hurd-i386",
    "i386",
    "loong64",
    "mips64el",
    "mipsel",
    "powerpc",
    "ppc64",
    "ppc64el",
    "riscv64",
    "s390x",
    "source",
    "sparc64",
    "x32",
];

/// A package named by its distribution's own convention, before a namespace is chosen
/// (the namespace comes from the platform table, else the vendor: see `platforms`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedPackage {
    /// The purl type: `rpm` or `deb`.
    pub ty: &'static str,
    pub name: String,
    /// `<version>-<release>` (rpm) or the Debian version; `None` for a bare source name.
    pub version: Option<String>,
    /// Qualifiers the name states: `arch`, and `epoch` for an RPM epoch other than 0.
    pub qualifiers: Vec<(&'static str, String)>,
}

impl NamedPackage {
    /// The package's purl key in `namespace`.
    pub fn key(&self, namespace: &str) -> Result<ArtifactKey, KeyError> {
        let err = |e: packageurl::Error| KeyError::Purl { value: format!("{self:?}"), reason: e.to_string() };
        let namespace = namespace.trim();
        if namespace.is_empty() {
            return Err(KeyError::Unrecognised {
                value: format!("{} package {:?} has no namespace", self.ty, self.name),
            });
        }
        let mut p = packageurl::PackageUrl::new(self.ty, self.name.as_str()).map_err(err)?;
        p.with_namespace(namespace.to_lowercase()).map_err(err)?;
        if let Some(v) = &self.version {
            p.with_version(v.as_str()).map_err(err)?;
        }
        for (k, v) in &self.qualifiers {
            p.add_qualifier(*k, v.as_str()).map_err(err)?;
        }
        keys::normalise_purl(&p.to_string())
    }
}

fn rpm_part_ok(s: &str, extra: &[char]) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "._+~^".contains(c) || extra.contains(&c))
}

/// Reads an RPM NEVRA `name-[epoch:]version-release.arch` (or, under an `architecture:
/// src` branch, a bare source-package name). `arch_branch` is the arch the product tree
/// states, if any: the suffix must equal it; without one, the suffix must be a known RPM
/// arch. `Err` says why the name is no NEVRA.
pub fn parse_nevra(s: &str, arch_branch: Option<&str>) -> Result<NamedPackage, String> {
    let s = s.trim();
    if arch_branch == Some("src") && rpm_part_ok(s, &['-']) && !s.starts_with('-') && !s.ends_with('-') {
        // A bare name (no version) under `src` is the source package itself; a NEVRA with
        // the arch `src` is read as one below.
        let nevra = rpm_version::Nevra::parse(s);
        if nevra.arch() != "src" {
            return Ok(NamedPackage { ty: "rpm", name: s.to_string(), version: None, qualifiers: Vec::new() });
        }
    }
    let (name, epoch, version, release, arch) = rpm_version::Nevra::parse_values(s);
    if arch.is_empty() || !arch.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("{s:?} has no `.arch` suffix"));
    }
    match arch_branch {
        Some(b) if b != arch => {
            return Err(format!("the arch suffix {arch:?} of {s:?} differs from its architecture branch {b:?}"))
        }
        None if !RPM_ARCHES.contains(&arch) => return Err(format!("{arch:?} (in {s:?}) is not an RPM arch")),
        _ => {}
    }
    if !rpm_part_ok(name, &['-']) || name.starts_with('-') {
        return Err(format!("{s:?} has no valid package name before `-version-release`"));
    }
    if !rpm_part_ok(version, &[]) || !rpm_part_ok(release, &[]) {
        return Err(format!("{s:?} has no valid `version-release`"));
    }
    if !epoch.is_empty() && !epoch.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("the epoch {epoch:?} of {s:?} is not a number"));
    }
    let mut qualifiers = vec![("arch", arch.to_string())];
    // An absent epoch is epoch 0 (RPM's rule): `0:` is dropped, so both spellings are one key.
    let epoch = epoch.trim_start_matches('0');
    if !epoch.is_empty() {
        qualifiers.push(("epoch", epoch.to_string()));
    }
    Ok(NamedPackage { ty: "rpm", name: name.to_string(), version: Some(format!("{version}-{release}")), qualifiers })
}

/// Reads a Debian `name_version_arch` (the `.deb` file name without `.deb`). `arch_branch`
/// as for [`parse_nevra`], against the known Debian arches.
pub fn parse_deb(s: &str, arch_branch: Option<&str>) -> Result<NamedPackage, String> {
    let s = s.trim();
    let parts: Vec<&str> = s.split('_').collect();
    let [name, version, arch] = parts.as_slice() else {
        return Err(format!("{s:?} is not `name_version_arch`"));
    };
    match arch_branch {
        Some(b) if b != *arch => {
            return Err(format!("the arch {arch:?} of {s:?} differs from its architecture branch {b:?}"))
        }
        None if !DEB_ARCHES.contains(arch) => return Err(format!("{arch:?} (in {s:?}) is not a Debian arch")),
        _ => {}
    }
    // Debian policy 5.6.1: lower-case letters, digits, `+ - .`; at least two characters,
    // starting with an alphanumeric.
    let name_ok = name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    if !name_ok {
        return Err(format!("{name:?} (in {s:?}) is not a Debian package name"));
    }
    if !arch.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') || arch.is_empty() {
        return Err(format!("{arch:?} (in {s:?}) is not a Debian arch"));
    }
    if version.is_empty() || version.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{s:?} has no Debian version"));
    }
    version
        .parse::<debversion::Version>()
        .map_err(|e| format!("{version:?} (in {s:?}) is not a Debian version: {e}"))?;
    Ok(NamedPackage {
        ty: "deb",
        name: name.to_string(),
        version: Some(version.to_string()),
        qualifiers: vec![("arch", arch.to_string())],
    })
}

/// Whether `s` is meant as a container image reference: its first path segment is a
/// registry host (holds `.` or `:`, or is `localhost`), or it names a digest. A plain name
/// such as `nginx` is not (it is an opaque id: CONSENSUS.md "Keys from names").
pub fn looks_like_image_reference(s: &str) -> bool {
    let s = s.trim();
    if s.contains("://") || s.starts_with("pkg:") || s.starts_with("urn:") {
        return false;
    }
    if s.contains('@') {
        return true;
    }
    match s.split_once('/') {
        Some((first, _)) => first.contains('.') || first.contains(':') || first == "localhost",
        None => false,
    }
}

/// The `pkg:oci` purl of an image reference (purl spec, type `oci`): the last path segment
/// as the name, the digest as the version, `repository_url` (registry and repository) and
/// `tag` as qualifiers. A reference without a tag gets none (the reference grammar's
/// default `latest` is not applied: a tag-less claim is about every tag).
pub fn image_reference_key(s: &str) -> Result<ArtifactKey, KeyError> {
    let s = s.trim();
    let err = |reason: String| KeyError::Unrecognised { value: format!("{s} (image reference: {reason})") };
    if !looks_like_image_reference(s) {
        return Err(err("no registry host and no digest".into()));
    }
    let r: oci_spec::distribution::Reference =
        s.parse().map_err(|e: oci_spec::distribution::ParseError| err(e.to_string()))?;
    // The tag the reference spells, if any: after the last `/`, before any `@`.
    let before_digest = s.split('@').next().unwrap_or(s);
    let last = before_digest.rsplit('/').next().unwrap_or(before_digest);
    let tag = if last.contains(':') { r.tag() } else { None };
    let repository = r.repository();
    let name = repository.rsplit('/').next().unwrap_or(repository);
    let perr = |e: packageurl::Error| err(e.to_string());
    let mut p = packageurl::PackageUrl::new("oci", name).map_err(perr)?;
    if let Some(d) = r.digest() {
        p.with_version(d).map_err(perr)?;
    }
    p.add_qualifier("repository_url", format!("{}/{}", r.registry(), repository)).map_err(perr)?;
    if let Some(t) = tag {
        p.add_qualifier("tag", t).map_err(perr)?;
    }
    keys::normalise_purl(&p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nevras_become_rpm_purls() {
        let p = parse_nevra("firefox-115.13.0-3.el8_6.86ciq_lts.aarch64", Some("aarch64")).unwrap();
        assert_eq!(p.key("rocky").unwrap().key, "pkg:rpm/rocky/firefox@115.13.0-3.el8_6.86ciq_lts?arch=aarch64");
        let p = parse_nevra("hivex-0:1.3.15-7.module+el8.1.0+4066+0f1aadab.src", Some("src")).unwrap();
        assert_eq!(
            p.key("redhat").unwrap().key,
            "pkg:rpm/redhat/hivex@1.3.15-7.module%2Bel8.1.0%2B4066%2B0f1aadab?arch=src"
        );
        let p = parse_nevra("glibc-2:2.40-1.fc42.x86_64", None).unwrap();
        let k = p.key("Fedora").unwrap();
        assert_eq!(k.key, "pkg:rpm/fedora/glibc@2.40-1.fc42?arch=x86_64&epoch=2");
        assert_eq!(k.package, "pkg:rpm/fedora/glibc");
        // The name keeps its case (rpm is case-sensitive); the namespace is lower-cased.
        let k = parse_nevra("OpenEXR-libs-2.2.0-11.el8.x86_64", Some("x86_64")).unwrap().key("CIQ").unwrap();
        assert_eq!(k.package, "pkg:rpm/ciq/OpenEXR-libs");
        // A scanner's spelling of the same package is the same key.
        assert_eq!(
            keys::parse_key("pkg:rpm/fedora/glibc@2.40-1.fc42?epoch=2&arch=x86_64").unwrap(),
            parse_nevra("glibc-2:2.40-1.fc42.x86_64", None).unwrap().key("fedora").unwrap()
        );
    }

    #[test]
    fn bare_source_names_are_versionless() {
        let p = parse_nevra("pki-servlet-engine", Some("src")).unwrap();
        assert_eq!(p.key("rocky").unwrap().key, "pkg:rpm/rocky/pki-servlet-engine");
        let bin =
            parse_nevra("pki-servlet-engine-9.0.30-3.module+el8.5.0+697+f586bec0.noarch", Some("noarch")).unwrap();
        assert!(p.key("rocky").unwrap().applies_to(&bin.key("rocky").unwrap()));
        assert!(parse_nevra("bind", Some("x86_64")).is_err(), "a bare name under a binary arch is ambiguous");
        assert!(parse_nevra("bind", None).is_err());
    }

    #[test]
    fn what_is_not_a_nevra_says_why() {
        for (s, arch) in [
            ("firefox-115.13.0-3.el8.aarch64", Some("x86_64")),
            ("firefox-115.13.0-3.el8.aarch65", None),
            ("firefox-115.13.0.x86_64", None),
            ("-1.0-1.x86_64", None),
            ("foo-x:1.0-1.x86_64", None),
            ("foo bar-1.0-1.x86_64", None),
            ("Example Company ABC 4.2", None),
            ("", None),
        ] {
            assert!(parse_nevra(s, arch).is_err(), "{s:?}");
        }
    }

    #[test]
    fn debian_names_become_deb_purls() {
        let p = parse_deb("openssl_3.0.11-1~deb12u2_amd64", None).unwrap();
        assert_eq!(p.key("debian").unwrap().key, "pkg:deb/debian/openssl@3.0.11-1~deb12u2?arch=amd64");
        let p = parse_deb("libc6_2.36-9+deb12u4_arm64", Some("arm64")).unwrap();
        assert_eq!(p.key("Debian").unwrap().package, "pkg:deb/debian/libc6");
        for (s, arch) in [
            ("openssl_3.0.11_amd64", Some("arm64")),
            ("openssl_3.0.11_amd65", None),
            ("OpenSSL_3.0.11_amd64", None),
            ("openssl_3.0.11", None),
            ("a_b_c_d", None),
            ("openssl__amd64", None),
            ("mod_http2-1.15.7-8.el8.x86_64", None),
        ] {
            assert!(parse_deb(s, arch).is_err(), "{s:?}");
        }
    }

    #[test]
    fn image_references_are_oci_purls() {
        let k = image_reference_key("registry.k8s.io/kube-apiserver:v1.26.0").unwrap();
        assert_eq!(k.package, "pkg:oci/kube-apiserver");
        assert_eq!(k.version, None);
        assert_eq!(k.qualifiers.get("tag").map(String::as_str), Some("v1.26.0"));
        assert_eq!(k.qualifiers.get("repository_url").map(String::as_str), Some("registry.k8s.io/kube-apiserver"));
        // The reference and its purl spelling are one key.
        assert_eq!(
            keys::parse_key("pkg:oci/kube-apiserver?tag=v1.26.0&repository_url=registry.k8s.io%2Fkube-apiserver")
                .unwrap(),
            k
        );
        assert_eq!(keys::parse_key(&k.key).unwrap(), k);
        let d = "sha256:".to_string() + &"ab".repeat(32);
        let k = image_reference_key(&format!("ghcr.io/acme/app:1.0@{d}")).unwrap();
        assert_eq!(k.version.as_deref(), Some(d.as_str()));
        assert_eq!(k.qualifiers.get("tag").map(String::as_str), Some("1.0"));
        let k2 = image_reference_key(&format!("alpine@{d}")).unwrap();
        assert_eq!(k2.qualifiers.get("repository_url").map(String::as_str), Some("docker.io/library/alpine"));
        // A tag-less reference gets no tag and applies to every tag; a tag never to another.
        let any = image_reference_key("localhost:5000/app").unwrap();
        let v1 = image_reference_key("localhost:5000/app:1").unwrap();
        let v2 = image_reference_key("localhost:5000/app:2").unwrap();
        assert_eq!(any.qualifiers.get("tag"), None);
        assert!(any.applies_to(&v1) && !v1.applies_to(&v2));
        for s in
            ["nginx", "nginx:1.25", "https://example.com/x", "pkg:oci/x", "Registry.io/UPPER:1", "reg.io/x@sha256:12"]
        {
            assert!(image_reference_key(s).is_err(), "{s:?}");
        }
    }

    /// The fuzz target's properties (fuzz/fuzz_targets/names.rs) over deterministic
    /// mutations of real spellings: no panic, every key parses back to itself and its
    /// version-less package covers it.
    #[test]
    fn mutated_names_never_panic_and_keys_round_trip() {
        let seeds = [
            "firefox-115.13.0-3.el8_6.86ciq_lts.aarch64",
            "hivex-0:1.3.15-7.module+el8.1.0+4066+0f1aadab.src",
            "pki-servlet-engine",
            "openssl_3.0.11-1~deb12u2_amd64",
            "registry.k8s.io/kube-apiserver:v1.26.0",
            "ghcr.io/test/image:canary@sha256:74634d9736a45ca9f6e1187e783492199e020f4a5c19d0b1abc2b604f894ac99",
        ];
        let alphabet: Vec<char> = "-_.:@/%+~^ 0aZ\u{e9}#?&=".chars().collect();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut keys_made = 0usize;
        let mut check = |input: &str, k: &ArtifactKey| {
            keys_made += 1;
            let again = keys::parse_key(&k.key).unwrap_or_else(|e| panic!("{input:?} -> {:?}: {e}", k.key));
            assert_eq!(&again, k, "{input:?}");
            assert!(k.key.starts_with(&k.package), "{input:?}");
            let bare = keys::parse_key(&k.package).unwrap_or_else(|e| panic!("{input:?}: {:?}: {e}", k.package));
            assert!(bare.applies_to(k), "{input:?}");
        };
        for _ in 0..20_000 {
            let mut c: Vec<char> = seeds[(next() % seeds.len() as u64) as usize].chars().collect();
            for _ in 0..(1 + next() % 3) {
                let at = (next() % (c.len() as u64 + 1)) as usize;
                let ch = alphabet[(next() % alphabet.len() as u64) as usize];
                match next() % 3 {
                    0 => c.insert(at, ch),
                    1 if at < c.len() => {
                        c.remove(at);
                    }
                    _ if at < c.len() => c[at] = ch,
                    _ => {}
                }
            }
            let s: String = c.into_iter().collect();
            for arch in [None, Some("x86_64"), Some("src"), Some("amd64")] {
                for r in [parse_nevra(&s, arch), parse_deb(&s, arch)].into_iter().flatten() {
                    if let Ok(k) = r.key("rocky") {
                        check(&s, &k);
                    }
                }
            }
            if let Ok(k) = image_reference_key(&s) {
                check(&s, &k);
            }
        }
        assert!(keys_made > 5_000, "only {keys_made} mutations gave a key");
    }
}
