//! CSAF 2.0 VEX documents (`csaf_vex`, and `csaf_security_advisory` with product status).
//!
//! Invariants: one observation per (vulnerability, status list, product id) in document
//! order, status lists read in the fixed order known_affected, first_affected,
//! last_affected, fixed, first_fixed, known_not_affected, under_investigation
//! (`recommended` is not a status: diagnostic only); a CSAF product id is never a key:
//! it resolves through the product tree to its identification helper (purl > CPE > hash,
//! sha256 preferred) or else to a name key built from the branch path (vendor branch >
//! publisher name, product_name/product_family branch > the product's own name,
//! product_version branch; a product_version_range branch gives its `vers:` range as the
//! version, and a range in the common operator forms (`<2.0`, `>= 1.2, < 1.4`: see
//! `vers::from_loose`) the same range as `vers:generic/...`; a range that is invalid or
//! in any other form leaves the product unmatched with the diagnostic
//! `invalid_version_range`, never a version-less key); a relationship product (every
//! category) is its component (`product_reference`, or the relationship's own helper) ON
//! the containing product (`relates_to_product_reference`): the platform is part of the
//! key (`distro=` from the platform table, else `platform=<its key>`; docs/consensus.md
//! "Platform context is identity"), never only a scope, and the product is unmatched when
//! either does not resolve (a relationship with its own helper and an unresolvable
//! platform keeps the helper's key), so a claim is never widened nor two platforms'
//! claims merged. The timestamp of every statement is the
//! document's: tracking.current_release_date > tracking.initial_release_date > epoch
//! (vulnerability `release_date` is the advisory's date, not the statement's, and is not
//! used). Flags give the justification, `impact` threats the impact statement and
//! remediations the action statement (`<category>: <details>`) of the products (and
//! product groups) they name; the first one in document order wins per product.

use super::fields::{
    array_field, objects, opt_object, opt_str, opt_timestamp, raw_str, required_array, required_object, required_str,
    str_field, string_list, version_string, Bad,
};
use super::{shared_all, Claim, DocumentFacts, NormaliseError, Subject};
use crate::domain::keys::{self, ArtifactKey, PlatformTag};
use crate::domain::model::*;
use crate::domain::names::{self, NamedPackage};
use crate::domain::platforms;
use crate::domain::timestamp::Timestamp;
use crate::domain::vers;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Status lists, in the order observations are emitted.
const STATUS_LISTS: [&str; 7] = [
    "known_affected",
    "first_affected",
    "last_affected",
    "fixed",
    "first_fixed",
    "known_not_affected",
    "under_investigation",
];

/// Deepest branch nesting walked (serde_json already stops at 128 levels of JSON).
const MAX_BRANCH_DEPTH: usize = 64;

/// A product id as defined in the product tree.
enum Product {
    /// Defined in `branches` or `full_product_names`, or a relationship with its own
    /// helper: its key, `None` when nothing resolves (the reason was reported already).
    Plain(Option<ArtifactKey>),
    /// A package named by its RPM NEVRA or Debian name: `key` is in the vendor's
    /// namespace; named through a relationship whose platform the platform table knows,
    /// it is keyed in that platform's namespace instead.
    Package { named: NamedPackage, key: ArtifactKey },
    /// A relationship `component <category> container`: the component on that platform
    /// (CONSENSUS.md "Platform context is identity"). `own`: the relationship's own
    /// identification helper, which names the component in place of `component`'s key.
    Relationship { component: String, container: String, category: String, own: Option<ArtifactKey> },
}

/// The naming context a branch path gives to the products below it.
#[derive(Clone, Copy, Default)]
struct BranchPath<'a> {
    vendor: Option<&'a str>,
    product: Option<&'a str>,
    version: Option<&'a str>,
    /// A product_version_range that is not a `vers:` range (e.g. `<=1.14.0`).
    loose_range: Option<&'a str>,
    /// The `architecture` branch, if any.
    arch: Option<&'a str>,
}

pub fn normalise(
    name: &str,
    v: &Value,
    digest: &str,
    ctx: &IngestContext,
) -> Result<NormalisedDocument, NormaliseError> {
    let bad = super::field_error(name, SourceFormat::Csaf);
    let mut diagnostics = Vec::new();
    let document = required_object(v, "document", "", &bad)?;
    let publisher = opt_object(document, "publisher", "document", &bad)?;
    let tracking = opt_object(document, "tracking", "document", &bad)?;
    let doc_id = tracking.and_then(|t| str_field(t, "id"));
    let doc_version = tracking.and_then(|t| version_string(t.get("version")));
    let doc_ts = match tracking {
        Some(t) => opt_timestamp(t, "current_release_date", "document.tracking", &bad)?.or(opt_timestamp(
            t,
            "initial_release_date",
            "document.tracking",
            &bad,
        )?),
        None => None,
    };
    let author = publisher.and_then(|p| str_field(p, "namespace"));
    let facts = DocumentFacts::new(ctx, SourceFormat::Csaf, author, doc_id, doc_version.as_deref(), digest);
    let publisher_name = publisher.and_then(|p| str_field(p, "name")).unwrap_or("");

    // Product tree: product id -> definition; group id -> product ids.
    let mut products: BTreeMap<String, Product> = BTreeMap::new();
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(pt) = opt_object(v, "product_tree", "", &bad)? {
        read_product_tree(pt, publisher_name, &mut products, &mut groups, &mut diagnostics, &bad)?;
    }
    let shared_distros = shared_distros(&products, &mut diagnostics);

    let vulnerabilities = required_array(v, "vulnerabilities", "", &bad)?;
    let mut observations = Vec::new();
    let mut position: u32 = 0;
    for item in objects(vulnerabilities, "vulnerabilities", &bad) {
        let (path, vuln) = item?;
        let ids = vulnerability_ids(vuln, &path, &bad)?;
        let missing = || bad(path.clone(), "names no vulnerability id (cve or ids[].text)");
        let Some((vulnerability, aliases)) = super::statement_vulnerability(ids, &path, &mut diagnostics, missing)?
        else {
            continue;
        };
        let details = ProductDetails::read(vuln, &path, &groups, &mut diagnostics, &bad)?;

        let (timestamp, timestamp_source) = statement_time(doc_ts, &path, &mut diagnostics);
        // Shared by the observations of every product of the vulnerability.
        let subject =
            Subject { vulnerability: vulnerability.into(), aliases: shared_all(aliases), timestamp, timestamp_source };

        let mut named = 0usize;
        if let Some(statuses @ Value::Object(so)) = opt_object(vuln, "product_status", &path, &bad)? {
            check_status_lists(so, &path, &mut diagnostics);
            let spath = format!("{path}.product_status");
            for list in STATUS_LISTS {
                let lpath = format!("{spath}.{list}");
                let ids = array_field(statuses, list, &spath, &bad)?;
                let Some(status) = Status::from_csaf(list) else {
                    continue;
                };
                let status_original: Arc<str> = Arc::from(list);
                for (pi, pid) in ids.iter().enumerate() {
                    let ppath = format!("{lpath}[{pi}]");
                    let pid = pid.as_str().ok_or_else(|| bad(ppath.clone(), "must be a product id string"))?;
                    named += 1;
                    if super::too_long("product id", &ppath, pid, &mut diagnostics) {
                        continue;
                    }
                    let (key, scope) = match resolve(pid, &products, &shared_distros) {
                        Ok(r) => r,
                        Err(reason) => {
                            diagnostics.push(Diagnostic {
                                code: DiagnosticCode::UnmatchedProduct,
                                message: format!("{ppath}: product {pid:?} {reason}"),
                            });
                            continue;
                        }
                    };
                    observations.push(facts.observation(
                        &subject,
                        key,
                        scope,
                        details.claim(pid, status, &status_original),
                        position,
                    ));
                    position = position.saturating_add(1);
                }
            }
        }
        if named == 0 {
            diagnostics.push(Diagnostic {
                code: DiagnosticCode::UnmatchedStatement,
                message: format!(
                    "{path}: product_status for {} names no product; it applies to nothing",
                    subject.vulnerability
                ),
            });
        }
    }
    Ok(facts.document(observations, diagnostics))
}

/// A vulnerability's ids: `cve` plus `ids[].text`; URLs are references, not ids.
fn vulnerability_ids(vuln: &Value, path: &str, bad: &Bad) -> Result<Vec<String>, NormaliseError> {
    let mut ids: Vec<String> = Vec::new();
    match vuln.get("cve") {
        Some(Value::String(s)) => ids.push(s.clone()),
        Some(Value::Null) | None => {}
        Some(_) => return Err(bad(format!("{path}.cve"), "must be a string")),
    }
    for (i, x) in array_field(vuln, "ids", path, bad)?.iter().enumerate() {
        ids.push(raw_str(x, "text", &format!("{path}.ids[{i}]"), bad)?.to_string());
    }
    ids.retain(|s| !s.contains("://"));
    Ok(ids)
}

/// The product-specific details of one vulnerability: flags (justification), `impact`
/// threats (impact statement) and remediations (action statement), each keyed by product
/// id; the first one in document order wins per product.
#[derive(Default)]
struct ProductDetails {
    justifications: BTreeMap<String, String>,
    impacts: BTreeMap<String, String>,
    actions: BTreeMap<String, String>,
}

impl ProductDetails {
    fn read(
        vuln: &Value,
        path: &str,
        groups: &BTreeMap<String, Vec<String>>,
        diagnostics: &mut Vec<Diagnostic>,
        bad: &Bad,
    ) -> Result<ProductDetails, NormaliseError> {
        let mut justifications: BTreeMap<String, String> = BTreeMap::new();
        for (i, flag) in array_field(vuln, "flags", path, bad)?.iter().enumerate() {
            let fpath = format!("{path}.flags[{i}]");
            let Some(label) = opt_str(flag, "label", &fpath, bad)? else {
                continue;
            };
            if Justification::from_openvex(label).is_none() {
                diagnostics.push(Diagnostic {
                    code: DiagnosticCode::UnknownJustification,
                    message: format!("{fpath}: flag label {label:?} is not a VEX justification; kept as original only"),
                });
            }
            for pid in product_refs(flag, &fpath, groups, diagnostics, bad)? {
                justifications.entry(pid).or_insert_with(|| label.to_string());
            }
        }
        let mut impacts: BTreeMap<String, String> = BTreeMap::new();
        for (i, threat) in array_field(vuln, "threats", path, bad)?.iter().enumerate() {
            let tpath = format!("{path}.threats[{i}]");
            if opt_str(threat, "category", &tpath, bad)? != Some("impact") {
                continue;
            }
            let Some(details) = opt_str(threat, "details", &tpath, bad)? else {
                continue;
            };
            for pid in product_refs(threat, &tpath, groups, diagnostics, bad)? {
                impacts.entry(pid).or_insert_with(|| details.to_string());
            }
        }
        let mut actions: BTreeMap<String, String> = BTreeMap::new();
        for (i, rem) in array_field(vuln, "remediations", path, bad)?.iter().enumerate() {
            let rpath = format!("{path}.remediations[{i}]");
            let action = match (opt_str(rem, "category", &rpath, bad)?, opt_str(rem, "details", &rpath, bad)?) {
                (Some(c), Some(d)) => format!("{c}: {d}"),
                (Some(c), None) => c.to_string(),
                (None, Some(d)) => d.to_string(),
                (None, None) => continue,
            };
            for pid in product_refs(rem, &rpath, groups, diagnostics, bad)? {
                actions.entry(pid).or_insert_with(|| action.clone());
            }
        }
        Ok(ProductDetails { justifications, impacts, actions })
    }
}

impl ProductDetails {
    /// What the vulnerability claims of product `pid` in status list `status_original`.
    fn claim(&self, pid: &str, status: Status, status_original: &Arc<str>) -> Claim {
        let justification_original = self.justifications.get(pid).map(|j| Arc::<str>::from(j.as_str()));
        Claim {
            status,
            status_original: status_original.clone(),
            justification: justification_original.as_deref().and_then(Justification::from_openvex),
            justification_original,
            impact_statement: self.impacts.get(pid).map(|s| Arc::from(s.as_str())),
            action_statement: self.actions.get(pid).map(|s| Arc::from(s.as_str())),
        }
    }
}

/// Every statement's time: the document's (`doc_ts`), else the Unix epoch (diagnosed).
fn statement_time(
    doc_ts: Option<Timestamp>,
    path: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> (Timestamp, TimestampSource) {
    match doc_ts {
        Some(t) => (t, TimestampSource::Document),
        None => {
            diagnostics.push(Diagnostic {
                code: DiagnosticCode::NoTimestamp,
                message: format!(
                    "{path}: no tracking.current_release_date or initial_release_date; the Unix epoch is used"
                ),
            });
            (Timestamp::EPOCH, TimestampSource::Epoch)
        }
    }
}

/// Diagnostics for the keys of `product_status` that are not status lists.
fn check_status_lists(so: &serde_json::Map<String, Value>, path: &str, diagnostics: &mut Vec<Diagnostic>) {
    for key in so.keys() {
        if key == "recommended" {
            diagnostics.push(Diagnostic {
                code: DiagnosticCode::NotAStatus,
                message: format!("{path}.product_status.recommended: a recommendation, not a status; not counted"),
            });
        } else if !STATUS_LISTS.contains(&key.as_str()) {
            diagnostics.push(Diagnostic {
                code: DiagnosticCode::UnknownStatus,
                message: format!("{path}.product_status.{key}: not a CSAF status list; ignored"),
            });
        }
    }
}

/// The `distro` values the platform table gives to more than one platform of the document
/// (e.g. two platforms whose CPEs differ only in a component the table does not read):
/// those platforms are keyed by their own key instead, each reported once.
fn shared_distros(products: &BTreeMap<String, Product>, diagnostics: &mut Vec<Diagnostic>) -> BTreeSet<String> {
    let mut by_distro: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in products.values() {
        if let Product::Relationship { container, .. } = p {
            let key = match products.get(container) {
                Some(Product::Plain(Some(k)) | Product::Package { key: k, .. }) => k,
                Some(Product::Relationship { own: Some(k), .. }) => k,
                _ => continue,
            };
            if let Some(platform) = platforms::lookup_key(key) {
                by_distro.entry(platform.distro).or_default().insert(key.key.clone());
            }
        }
    }
    let mut shared = BTreeSet::new();
    for (distro, keys) in by_distro {
        if keys.len() > 1 {
            diagnostics.push(Diagnostic {
                code: DiagnosticCode::PlatformAmbiguous,
                message: format!(
                    "platforms {} all map to distro {distro:?}: each is keyed platform=<its own key>",
                    keys.into_iter().collect::<Vec<_>>().join(", ")
                ),
            });
            shared.insert(distro);
        }
    }
    shared
}

/// Resolves a product id to its artifact key and scope, or says why it does not resolve.
fn resolve(
    pid: &str,
    products: &BTreeMap<String, Product>,
    shared_distros: &BTreeSet<String>,
) -> Result<(ArtifactKey, Vec<String>), String> {
    let plain = |id: &str| -> Result<ArtifactKey, &'static str> {
        match products.get(id) {
            Some(Product::Plain(Some(k)) | Product::Package { key: k, .. }) => Ok(k.clone()),
            Some(Product::Plain(None)) => Err("has no package URL, CPE, hash or name"),
            Some(Product::Relationship { own: Some(k), .. }) => Ok(k.clone()),
            Some(Product::Relationship { .. }) => Err("is itself a relationship without an identification helper"),
            None => Err("is not defined in the product tree"),
        }
    };
    match products.get(pid) {
        Some(Product::Relationship { component, container, category, own }) => {
            let k = match own {
                Some(k) => Ok(k.clone()),
                None => plain(component)
                    .map_err(|e| format!("is a {category} relationship whose product_reference {component:?} {e}")),
            }?;
            let c = match plain(container) {
                Ok(c) => c,
                // The relationship's own helper names the artifact even when the platform
                // resolves to nothing: keyed as the publisher named it (no platform).
                Err(_) if own.is_some() => return Ok((k, Vec::new())),
                Err(e) => {
                    return Err(format!(
                        "is a {category} relationship whose relates_to_product_reference {container:?} {e}"
                    ))
                }
            };
            // A package named by its distribution's convention takes the namespace the
            // platform table gives its platform (else it keeps the vendor's).
            let k = match (own, products.get(component.as_str()), platforms::namespace_of(&c)) {
                (None, Some(Product::Package { named, .. }), Some(ns)) => named.key(ns).unwrap_or(k),
                _ => k,
            };
            // The platform is part of the key: `distro=` where the table knows it (and no
            // other platform of the document maps to the same value), else `platform=`.
            let tag = match platforms::lookup_key(&c) {
                Some(p) if !shared_distros.contains(&p.distro) => PlatformTag::Distro(p.distro),
                _ => PlatformTag::Key(c.key.clone()),
            };
            let on = k.with_platform(&tag).map_err(|e| format!("is a {category} relationship on {}: {e}", c.key))?;
            Ok((on, Vec::new()))
        }
        _ => plain(pid).map(|k| (k, Vec::new())).map_err(str::to_string),
    }
}

fn read_product_tree(
    pt: &Value,
    publisher_name: &str,
    products: &mut BTreeMap<String, Product>,
    groups: &mut BTreeMap<String, Vec<String>>,
    diagnostics: &mut Vec<Diagnostic>,
    bad: &Bad,
) -> Result<(), NormaliseError> {
    let branches = array_field(pt, "branches", "product_tree", bad)?;
    walk_branches(
        branches,
        "product_tree.branches",
        BranchPath::default(),
        0,
        publisher_name,
        products,
        diagnostics,
        bad,
    )?;
    for (i, fpn) in array_field(pt, "full_product_names", "product_tree", bad)?.iter().enumerate() {
        let path = format!("product_tree.full_product_names[{i}]");
        define_product(fpn, &path, BranchPath::default(), publisher_name, products, diagnostics, bad)?;
    }
    for item in objects(array_field(pt, "relationships", "product_tree", bad)?, "product_tree.relationships", bad) {
        let (path, rel) = item?;
        let fpn = match rel.get("full_product_name") {
            Some(f @ Value::Object(_)) => f,
            _ => return Err(bad(format!("{path}.full_product_name"), "is required and must be an object")),
        };
        let fpath = format!("{path}.full_product_name");
        let pid = required_str(fpn, "product_id", &fpath, bad)?;
        let own = helper_key(fpn, &fpath, diagnostics, bad)?;
        let component = opt_str(rel, "product_reference", &path, bad)?;
        let container = opt_str(rel, "relates_to_product_reference", &path, bad)?;
        let def = match (component, container, own) {
            (Some(component), Some(container), own) => Product::Relationship {
                component: component.to_string(),
                container: container.to_string(),
                category: opt_str(rel, "category", &path, bad)?.unwrap_or("relationship").to_string(),
                own,
            },
            (_, _, Some(k)) => Product::Plain(Some(k)),
            (None, _, None) => return Err(bad(format!("{path}.product_reference"), "is required")),
            (_, None, None) => return Err(bad(format!("{path}.relates_to_product_reference"), "is required")),
        };
        insert_product(pid, def, &fpath, products, diagnostics);
    }
    for (i, g) in array_field(pt, "product_groups", "product_tree", bad)?.iter().enumerate() {
        let path = format!("product_tree.product_groups[{i}]");
        let gid = required_str(g, "group_id", &path, bad)?;
        let ids = string_list(g, "product_ids", &path, bad)?;
        groups.entry(gid.to_string()).or_default().extend(ids.into_iter().map(str::to_string));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn walk_branches<'a>(
    branches: &'a [Value],
    path: &str,
    parent: BranchPath<'a>,
    depth: usize,
    publisher_name: &str,
    products: &mut BTreeMap<String, Product>,
    diagnostics: &mut Vec<Diagnostic>,
    bad: &Bad,
) -> Result<(), NormaliseError> {
    if depth >= MAX_BRANCH_DEPTH && !branches.is_empty() {
        return Err(bad(path.to_string(), &format!("branches nested deeper than {MAX_BRANCH_DEPTH} levels")));
    }
    for item in objects(branches, path, bad) {
        let (bpath, b) = item?;
        let category = opt_str(b, "category", &bpath, bad)?.unwrap_or("");
        let bname = opt_str(b, "name", &bpath, bad)?;
        let mut here = parent;
        match (category, bname) {
            ("vendor", Some(n)) => here.vendor = Some(n),
            ("architecture", Some(n)) => here.arch = Some(n),
            ("product_name" | "product_family", Some(n)) => here.product = Some(n),
            ("product_version", Some(n)) => {
                here.version = Some(n);
                here.loose_range = None;
            }
            ("product_version_range", Some(n)) if n.starts_with("vers:") => {
                here.version = Some(n);
                here.loose_range = None;
            }
            ("product_version_range", Some(n)) => {
                here.version = None;
                here.loose_range = Some(n);
            }
            _ => {}
        }
        if let Some(p) = opt_object(b, "product", &bpath, bad)? {
            define_product(p, &format!("{bpath}.product"), here, publisher_name, products, diagnostics, bad)?;
        }
        let children = array_field(b, "branches", &bpath, bad)?;
        walk_branches(
            children,
            &format!("{bpath}.branches"),
            here,
            depth + 1,
            publisher_name,
            products,
            diagnostics,
            bad,
        )?;
    }
    Ok(())
}

/// Defines a full product name found at `path` with the naming context of its branch path.
fn define_product(
    p: &Value,
    path: &str,
    at: BranchPath,
    publisher_name: &str,
    products: &mut BTreeMap<String, Product>,
    diagnostics: &mut Vec<Diagnostic>,
    bad: &Bad,
) -> Result<(), NormaliseError> {
    if !p.is_object() {
        return Err(bad(path.to_string(), "must be an object"));
    }
    let pid = required_str(p, "product_id", path, bad)?;
    let own_name = opt_str(p, "name", path, bad)?;
    let helper = helper_key(p, path, diagnostics, bad)?;
    if helper.is_none() {
        if let Some(n) = own_name.or(at.version) {
            let vendor = at.vendor.unwrap_or(publisher_name);
            match package_from_name(n, at.arch).and_then(|named| match named.key(vendor) {
                Ok(key) => Ok((named, key)),
                Err(e) => Err(e.to_string()),
            }) {
                Ok((named, key)) => {
                    insert_product(pid, Product::Package { named, key }, path, products, diagnostics);
                    return Ok(());
                }
                Err(why) if at.arch.is_some() => {
                    diagnostics.push(Diagnostic {
                        code: DiagnosticCode::UnparsedPackageName,
                        message: format!(
                            "{path}: product {pid:?} under architecture {:?} is no RPM NEVRA or Debian name ({why}); keyed by name, version and arch outside the package",
                            at.arch.unwrap_or_default()
                        ),
                    });
                    insert_product(
                        pid,
                        Product::Plain(Some(unparsed_name_key(vendor, n))),
                        path,
                        products,
                        diagnostics,
                    );
                    return Ok(());
                }
                Err(_) => {}
            }
        }
    }
    let key = match helper {
        Some(k) => Some(k),
        None => match at.product.or(own_name) {
            Some(product) => {
                // A range that cannot be read never widens the claim to every version:
                // the product then resolves to nothing (and is reported unmatched).
                let version = match (at.version, at.loose_range) {
                    (Some(v), _) if v.starts_with("vers:") => match vers::validate(v) {
                        Ok(()) => Some(v.to_string()),
                        Err(e) => {
                            diagnostics.push(Diagnostic {
                                code: DiagnosticCode::InvalidVersionRange,
                                message: format!("{path}: product {pid:?}: {e}; the product is not matched"),
                            });
                            insert_product(pid, Product::Plain(None), path, products, diagnostics);
                            return Ok(());
                        }
                    },
                    (Some(v), _) => Some(v.to_string()),
                    (None, Some(r)) => match vers::from_loose(r, vers::Scheme::Generic) {
                        Ok(range) => Some(range),
                        Err(e) => {
                            diagnostics.push(Diagnostic {
                                code: DiagnosticCode::InvalidVersionRange,
                                message: format!(
                                    "{path}: product {pid:?} has the version range {r:?}, which cannot be read ({e}); the product is not matched"
                                ),
                            });
                            insert_product(pid, Product::Plain(None), path, products, diagnostics);
                            return Ok(());
                        }
                    },
                    (None, None) => None,
                };
                Some(keys::name_key(at.vendor.unwrap_or(publisher_name), product, version.as_deref()))
            }
            None => None,
        },
    };
    insert_product(pid, Product::Plain(key), path, products, diagnostics);
    Ok(())
}

/// The RPM (NEVRA, or a bare name under `src`) or Debian package a product name states.
fn package_from_name(n: &str, arch: Option<&str>) -> Result<NamedPackage, String> {
    names::parse_nevra(n, arch)
        .or_else(|rpm| names::parse_deb(n, arch).map_err(|deb| format!("RPM: {rpm}; Debian: {deb}")))
}

/// The name key of a package name that does not parse unambiguously: the package is the
/// name as far as it can be split off (`name_version_arch`, else RPM's right-to-left
/// `name-version-release.arch` split), the rest is the version, so version and arch stay
/// outside the package key.
fn unparsed_name_key(vendor: &str, n: &str) -> ArtifactKey {
    let deb: Vec<&str> = n.split('_').collect();
    let name = match deb.as_slice() {
        [name, v, a] if !name.is_empty() && !v.is_empty() && !a.is_empty() => *name,
        _ => rpm_version::Nevra::parse_values(n).0,
    };
    if name.is_empty() || name.len() >= n.len() {
        return keys::name_key(vendor, n, None);
    }
    keys::name_key(vendor, name, Some(&n[name.len() + 1..]))
}

fn insert_product(
    pid: &str,
    def: Product,
    path: &str,
    products: &mut BTreeMap<String, Product>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    if products.contains_key(pid) {
        diagnostics.push(Diagnostic {
            code: DiagnosticCode::DuplicateProductId,
            message: format!("{path}: product id {pid:?} is defined more than once; the first definition is used"),
        });
    } else {
        products.insert(pid.to_string(), def);
    }
}

/// The key a `product_identification_helper` gives: purl > CPE > hash (sha256 preferred).
/// Identifiers that do not parse are reported and skipped.
fn helper_key(
    p: &Value,
    path: &str,
    diagnostics: &mut Vec<Diagnostic>,
    bad: &Bad,
) -> Result<Option<ArtifactKey>, NormaliseError> {
    let hpath = format!("{path}.product_identification_helper");
    let Some(h) = opt_object(p, "product_identification_helper", path, bad)? else {
        return Ok(None);
    };
    let mut invalid = |what: String, e: String| {
        diagnostics.push(Diagnostic {
            code: DiagnosticCode::InvalidIdentifier,
            message: format!("{hpath}.{what}: {e}; ignored"),
        });
    };
    let mut purls: Vec<&str> = opt_str(h, "purl", &hpath, bad)?.into_iter().collect();
    // CSAF 2.1 writes a list of purls.
    purls.extend(string_list(h, "purls", &hpath, bad)?);
    for s in purls {
        match keys::normalise_purl(s) {
            Ok(k) => return Ok(Some(k)),
            Err(e) => invalid("purl".into(), e.to_string()),
        }
    }
    if let Some(s) = opt_str(h, "cpe", &hpath, bad)? {
        match keys::normalise_cpe(s) {
            Ok(k) => return Ok(Some(k)),
            Err(e) => invalid("cpe".into(), e.to_string()),
        }
    }
    let mut hashes: Vec<(&str, &str)> = Vec::new();
    for (i, entry) in array_field(h, "hashes", &hpath, bad)?.iter().enumerate() {
        let epath = format!("{hpath}.hashes[{i}]");
        for (j, fh) in array_field(entry, "file_hashes", &epath, bad)?.iter().enumerate() {
            let fpath = format!("{epath}.file_hashes[{j}]");
            let (Some(alg), Some(value)) = (opt_str(fh, "algorithm", &fpath, bad)?, opt_str(fh, "value", &fpath, bad)?)
            else {
                return Err(bad(fpath, "needs algorithm and value strings"));
            };
            if value.chars().all(|c| c.is_ascii_hexdigit()) {
                hashes.push((alg, value));
            } else {
                invalid(format!("hashes[{i}].file_hashes[{j}]"), format!("hash value {value:?} is not hexadecimal"));
            }
        }
    }
    let pick =
        hashes.iter().find(|(a, _)| a.to_ascii_lowercase().replace(['-', '_'], "") == "sha256").or(hashes.first());
    Ok(pick.map(|(a, v)| keys::normalise_hash(a, v)))
}

/// Product ids named by a flag, threat or remediation: `product_ids` plus the members of
/// its `group_ids`. Unknown groups are reported.
fn product_refs(
    item: &Value,
    path: &str,
    groups: &BTreeMap<String, Vec<String>>,
    diagnostics: &mut Vec<Diagnostic>,
    bad: &Bad,
) -> Result<Vec<String>, NormaliseError> {
    if !item.is_object() {
        return Err(bad(path.to_string(), "must be an object"));
    }
    let mut ids: Vec<String> = string_list(item, "product_ids", path, bad)?.into_iter().map(str::to_string).collect();
    for g in string_list(item, "group_ids", path, bad)? {
        match groups.get(g) {
            Some(members) => ids.extend(members.iter().cloned()),
            None => diagnostics.push(Diagnostic {
                code: DiagnosticCode::UnknownGroup,
                message: format!("{path}.group_ids: group {g:?} is not defined in product_tree.product_groups"),
            }),
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::super::{normalise_bytes, normalise_value};
    use super::*;

    fn norm(s: &str) -> Result<NormalisedDocument, NormaliseError> {
        normalise_bytes("t.json", s.as_bytes(), &IngestContext::default(), 1 << 20)
    }

    const TREE_DOC: &str = r#"{
      "document": {"category": "csaf_vex", "csaf_version": "2.0",
        "publisher": {"name": "Acme PSIRT", "namespace": "https://acme.example"},
        "tracking": {"id": "ACME-1", "version": "2", "initial_release_date": "2024-01-01T00:00:00Z",
                     "current_release_date": "2024-02-01T00:00:00Z"}},
      "product_tree": {
        "branches": [{"category": "vendor", "name": "Acme", "branches": [
          {"category": "product_name", "name": "Box", "branches": [
            {"category": "product_version", "name": "1.0", "product": {"name": "Acme Box 1.0", "product_id": "BOX-1"}},
            {"category": "product_version_range", "name": "vers:semver/<1.0", "product": {"name": "Acme Box old", "product_id": "BOX-OLD"}}]},
          {"category": "product_name", "name": "libfoo", "product": {"name": "libfoo 2.1", "product_id": "FOO",
            "product_identification_helper": {"purl": "pkg:npm/foo@2.1.0"}}}]}],
        "full_product_names": [
          {"name": "Firmware", "product_id": "FW", "product_identification_helper":
            {"hashes": [{"filename": "fw.bin", "file_hashes": [
              {"algorithm": "sha512", "value": "AB"}, {"algorithm": "sha256", "value": "CDEF"}]}]}},
          {"name": "Nameless gadget", "product_id": "GADGET"}],
        "relationships": [
          {"category": "default_component_of", "product_reference": "FOO", "relates_to_product_reference": "BOX-1",
           "full_product_name": {"name": "libfoo in Box 1.0", "product_id": "BOX-1:FOO"}},
          {"category": "default_component_of", "product_reference": "FOO", "relates_to_product_reference": "NOPE",
           "full_product_name": {"name": "libfoo in ?", "product_id": "NOPE:FOO"}},
          {"category": "installed_on", "product_reference": "FOO", "relates_to_product_reference": "NOPE",
           "full_product_name": {"name": "libfoo on host", "product_id": "HOST:FOO",
             "product_identification_helper": {"cpe": "cpe:2.3:a:acme:foo_host:2.1:*:*:*:*:*:*:*"}}}],
        "product_groups": [{"group_id": "G-ALL", "product_ids": ["BOX-1", "BOX-1:FOO"]}]
      },
      "vulnerabilities": [{
        "cve": "cve-2024-0001", "ids": [{"system_name": "GHSA", "text": "GHSA-xxxx"}, {"system_name": "bz", "text": "https://bugs.example/1"}],
        "product_status": {"known_not_affected": ["BOX-1", "BOX-1:FOO"], "fixed": ["FW", "HOST:FOO"],
                           "known_affected": ["BOX-OLD", "NOPE:FOO", "UNDEFINED", "GADGET"], "recommended": ["FW"]},
        "flags": [{"label": "vulnerable_code_not_in_execute_path", "group_ids": ["G-ALL"]},
                  {"label": "component_not_present", "product_ids": ["BOX-1"]}],
        "threats": [{"category": "impact", "details": "Not reachable.", "group_ids": ["G-ALL"]},
                    {"category": "impact", "details": "Applies to none."},
                    {"category": "exploit_status", "details": "none", "product_ids": ["FW"]}],
        "remediations": [{"category": "vendor_fix", "details": "Upgrade to 1.1.", "product_ids": ["BOX-OLD"]},
                         {"category": "workaround", "details": "Unplug it.", "product_ids": ["BOX-OLD"]}]
      }]
    }"#;

    #[test]
    fn version_ranges_in_common_forms_are_read_and_the_rest_never_widens() {
        let doc = r#"{
          "document": {"category": "csaf_vex", "csaf_version": "2.0",
            "publisher": {"name": "Acme PSIRT", "namespace": "https://acme.example"},
            "tracking": {"id": "ACME-2", "version": "1", "initial_release_date": "2024-01-01T00:00:00Z",
                         "current_release_date": "2024-01-01T00:00:00Z"}},
          "product_tree": {"branches": [{"category": "vendor", "name": "Acme", "branches": [
            {"category": "product_name", "name": "Box", "branches": [
              {"category": "product_version_range", "name": ">= 1.2, < 1.4", "product": {"name": "a", "product_id": "A"}},
              {"category": "product_version_range", "name": "<2.0", "product": {"name": "b", "product_id": "B"}},
              {"category": "product_version_range", "name": "all versions before the fix", "product": {"name": "c", "product_id": "C"}},
              {"category": "product_version_range", "name": "vers:nuget/<1.0", "product": {"name": "d", "product_id": "D"}}]}]}]},
          "vulnerabilities": [{"cve": "CVE-2024-0002", "product_status": {"known_affected": ["A", "B", "C", "D"]}}]
        }"#;
        let d = norm(doc).unwrap();
        let arts: Vec<&str> = d.observations.iter().map(|o| &*o.artifact).collect();
        assert_eq!(arts, vec!["name:acme/Box@vers:generic/>=1.2|<1.4", "name:acme/Box@vers:generic/<2.0"]);
        let a = keys::parse_key(arts[0]).unwrap();
        assert!(a.applies_to(&keys::name_key("Acme", "Box", Some("1.3.5"))));
        assert!(!a.applies_to(&keys::name_key("Acme", "Box", Some("1.4"))));
        let codes: Vec<&str> = d.diagnostics.iter().map(|x| x.code.as_str()).collect();
        assert_eq!(codes.iter().filter(|c| **c == "invalid_version_range").count(), 2, "{:?}", d.diagnostics);
        assert!(d.diagnostics.iter().any(|x| x.message.contains("all versions before the fix")));
        assert!(d.diagnostics.iter().any(|x| x.message.contains("unknown versioning scheme \"nuget\"")));
        assert!(codes.contains(&"unmatched_product"), "C and D resolve to nothing: {codes:?}");
    }

    #[test]
    fn resolves_tree_relationships_groups_flags_threats_and_remediations() {
        let d = norm(TREE_DOC).unwrap();
        let by: Vec<(&str, &str, &[std::sync::Arc<str>])> =
            d.observations.iter().map(|o| (&*o.artifact, &*o.status_original, o.scope.as_slice())).collect();
        assert_eq!(
            by,
            vec![
                ("name:acme/Box@vers:semver/<1.0", "known_affected", &[][..]),
                ("name:acme psirt/Nameless gadget", "known_affected", &[][..]),
                ("sha256:cdef", "fixed", &[][..]),
                ("cpe:2.3:a:acme:foo_host:2.1:*:*:*:*:*:*:*", "fixed", &[][..]),
                ("name:acme/Box@1.0", "known_not_affected", &[][..]),
                // A relationship is the component on its platform: the platform in the key
                // (`platform=`, the table knows no `acme` CPE), not a scope.
                ("pkg:npm/foo@2.1.0?platform=name:acme%2FBox%401.0", "known_not_affected", &[][..]),
            ]
        );
        let positions: Vec<u32> = d.observations.iter().map(|o| o.position).collect();
        assert_eq!(positions, vec![0, 1, 2, 3, 4, 5]);
        let o = &d.observations[4];
        assert_eq!(&*o.vulnerability, "CVE-2024-0001");
        assert_eq!(o.aliases.iter().map(|a| &**a).collect::<Vec<_>>(), vec!["GHSA-xxxx", "cve-2024-0001"]);
        assert_eq!(o.status, Status::NotAffected);
        // The group flag comes first in document order and wins over the product flag.
        assert_eq!(o.justification, Some(Justification::VulnerableCodeNotInExecutePath));
        assert_eq!(o.justification_original.as_deref(), Some("vulnerable_code_not_in_execute_path"));
        assert_eq!(o.impact_statement.as_deref(), Some("Not reachable."));
        assert_eq!(o.issuer.as_deref(), Some("https://acme.example"));
        assert_eq!(o.issuer_source, IssuerSource::Document);
        assert_eq!(o.timestamp.to_string(), "2024-02-01T00:00:00Z");
        assert_eq!(o.timestamp_source, TimestampSource::Document);
        assert_eq!(o.document_id.as_deref(), Some("ACME-1"));
        assert_eq!(o.document_version.as_deref(), Some("2"));
        assert_eq!(o.format, SourceFormat::Csaf);
        assert_eq!(d.observations[5].justification, Some(Justification::VulnerableCodeNotInExecutePath));
        assert_eq!(d.observations[0].action_statement.as_deref(), Some("vendor_fix: Upgrade to 1.1."));
        assert_eq!(d.observations[2].impact_statement, None);
        let codes: Vec<&str> = d.diagnostics.iter().map(|x| x.code.as_str()).collect();
        assert_eq!(codes, vec!["not_a_status", "unmatched_product", "unmatched_product"]);
        assert!(d.diagnostics[1].message.contains("known_affected[1]") && d.diagnostics[1].message.contains("NOPE"));
        assert!(
            d.diagnostics[2].message.contains("known_affected[2]") && d.diagnostics[2].message.contains("not defined")
        );
    }

    #[test]
    fn timestamps_fall_back_to_initial_then_epoch() {
        let d = norm(
            r#"{"document":{"category":"csaf_vex","tracking":{"initial_release_date":"2023-05-01T10:00:00Z"}},
            "product_tree":{"full_product_names":[{"name":"P","product_id":"P1"}]},
            "vulnerabilities":[{"cve":"CVE-1","product_status":{"under_investigation":["P1"]}}]}"#,
        )
        .unwrap();
        assert_eq!(d.observations[0].timestamp.to_string(), "2023-05-01T10:00:00Z");
        assert_eq!(&*d.observations[0].artifact, "name:/P");
        assert_eq!(d.observations[0].issuer, None);
        let d = norm(r#"{"document":{"category":"csaf_vex"},
            "product_tree":{"full_product_names":[{"name":"P","product_id":"P1","product_identification_helper":{"purl":"pkg:npm/p@1"}}]},
            "vulnerabilities":[{"cve":"CVE-1","product_status":{"fixed":["P1"]}},{"cve":"CVE-2"}]}"#)
        .unwrap();
        assert_eq!(d.observations[0].timestamp_source, TimestampSource::Epoch);
        assert_eq!(d.observations[0].timestamp, Timestamp::EPOCH);
        let codes: Vec<&str> = d.diagnostics.iter().map(|x| x.code.as_str()).collect();
        assert_eq!(codes, vec!["no_timestamp", "no_timestamp", "unmatched_statement"]);
    }

    #[test]
    fn typed_errors_name_the_field() {
        let field = |s: &str| match norm(s) {
            Err(NormaliseError::InvalidField { field, format: SourceFormat::Csaf, .. }) => field,
            other => panic!("expected InvalidField, got {other:?}"),
        };
        let doc = |vulns: &str| format!(r#"{{"document":{{"category":"csaf_vex"}},"vulnerabilities":{vulns}}}"#);
        assert_eq!(
            field(&doc(r#"[{"cve":"CVE-1"},{"cve":"CVE-2"},{"cve":"CVE-3","product_status":{"fixed":[7]}}]"#)),
            "vulnerabilities[2].product_status.fixed[0]"
        );
        assert_eq!(field(&doc(r#"[{"product_status":{"fixed":["A"]}}]"#)), "vulnerabilities[0]");
        assert_eq!(field(&doc(r#"[{"cve":5}]"#)), "vulnerabilities[0].cve");
        assert_eq!(field(&doc(r#"[{"cve":"CVE-1","product_status":[]}]"#)), "vulnerabilities[0].product_status");
        assert_eq!(
            field(&doc(r#"[{"cve":"CVE-1","flags":[{"label":"x","product_ids":"A"}]}]"#)),
            "vulnerabilities[0].flags[0].product_ids"
        );
        assert_eq!(field(&doc(r#"{}"#)), "vulnerabilities");
        assert_eq!(field(&doc(r#"[7]"#)), "vulnerabilities[0]");
        assert_eq!(
            field(
                r#"{"document":{"category":"csaf_vex","tracking":{"current_release_date":"yesterday"}},"vulnerabilities":[]}"#
            ),
            "document.tracking.current_release_date"
        );
        assert_eq!(
            field(
                r#"{"document":{"category":"csaf_vex"},"product_tree":{"branches":[{"branches":[{"product":{"name":"x"}}]}]},"vulnerabilities":[]}"#
            ),
            "product_tree.branches[0].branches[0].product.product_id"
        );
        assert_eq!(
            field(
                r#"{"document":{"category":"csaf_vex"},"product_tree":{"relationships":[{"full_product_name":{"product_id":"R"}}]},"vulnerabilities":[]}"#
            ),
            "product_tree.relationships[0].product_reference"
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        // Built in memory (not parsed), so serde_json's own depth limit does not apply.
        let mut branch = serde_json::json!({"category": "product_version", "name": "1", "product": {"name": "x", "product_id": "X"}});
        for _ in 0..200 {
            branch = serde_json::json!({"category": "vendor", "name": "v", "branches": [branch]});
        }
        let doc = serde_json::json!({"document": {"category": "csaf_vex"}, "product_tree": {"branches": [branch]}, "vulnerabilities": []});
        let e = normalise_value("t.json", &doc, "sha256:00", &IngestContext::default()).unwrap_err();
        assert!(matches!(e, NormaliseError::InvalidField { .. }), "{e}");
        // Parsed: serde_json refuses the nesting itself.
        let deep = format!(
            r#"{{"document":{{"category":"csaf_vex"}},"vulnerabilities":[{}{}]}}"#,
            "[".repeat(500),
            "]".repeat(500)
        );
        assert!(matches!(norm(&deep), Err(NormaliseError::NotJson { .. })));
    }

    /// Replaces every node of a valid document, one at a time, by hostile values: the
    /// normaliser must answer (a document or a typed error), never panic.
    #[test]
    fn hostile_values_anywhere_never_panic() {
        let base: Value = serde_json::from_str(TREE_DOC).unwrap();
        let hostile = [
            Value::Null,
            serde_json::json!(-1),
            serde_json::json!("\u{0}💥"),
            serde_json::json!([]),
            serde_json::json!({}),
            serde_json::json!([[[[{}]]]]),
            serde_json::json!({"product_id": 1, "branches": {}}),
        ];
        super::super::tests::normalise_each_node_replaced(&base, &hostile, |p| !p.is_empty());
        for garbage in ["", "null", "[]", "{}", "7", r#"{"document":null}"#, r#"{"document":{"csaf_version":"2.0"}}"#] {
            assert!(norm(garbage).is_err(), "{garbage}");
        }
    }
}
