//! `vers:` version-range specifiers (package-url/vers-spec), compared by their versioning
//! scheme, enough to test membership.
//!
//! Invariants: pure; an unparsable range, an unknown scheme, or a constraint version the
//! scheme cannot read is an error, never a silent match or a guess; a version outside the
//! scheme's grammar is in no range. Schemes and their order (docs/consensus.md "Versions"):
//!
//! | scheme | order |
//! |---|---|
//! | `semver`, `npm`, `cargo`, `golang` | SemVer 2.0 precedence (`semver` crate): a pre-release sorts before its release (`1.0.0-rc1 < 1.0.0`), build metadata is ignored; a leading `v` (and for npm `=`) is dropped, and a partial version `1` / `1.2` is read as `1.0.0` / `1.2.0` |
//! | `pypi` | PEP 440 (`pep440_rs` crate): `1.0rc1 < 1.0 < 1.0.post1`, epochs, local versions |
//! | `deb` | Debian policy 5.6.12 / dpkg (`debversion` crate): epochs, `~` before anything |
//! | `maven` | Maven's `ComparableVersion` rules ([`maven_cmp`]) |
//! | `rpm` | `rpmvercmp` with epoch and release ([`rpm_cmp`]): `~` before, `^` after the base |
//! | `gem` | RubyGems `Gem::Version` ([`gem_cmp`]): a letter makes a pre-release |
//! | `generic` | segment by segment, numeric segments numerically ([`compare_generic`]) |
//! | `all` | only `vers:all/*` (every version) |
//!
//! Document versions (CSAF tracking versions and the like) are ordered by
//! [`compare_generic`]; they are not package versions.

use std::cmp::Ordering;
use std::str::FromStr;

/// A range or a version could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum VersError {
    #[error("invalid vers range {range:?}: {reason}")]
    Malformed { range: String, reason: &'static str },
    #[error("vers range {range:?}: unknown versioning scheme {scheme:?} (known: {})", SCHEMES.join(", "))]
    UnknownScheme { range: String, scheme: String },
    #[error("{scheme} version {version:?} is not valid: {reason}")]
    BadVersion { scheme: &'static str, version: String, reason: String },
}

/// The versioning schemes this module compares (vers-spec names).
pub const SCHEMES: &[&str] =
    &["semver", "npm", "cargo", "golang", "pypi", "maven", "deb", "rpm", "gem", "generic", "all"];

/// A versioning scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Semver,
    Npm,
    Cargo,
    Golang,
    Pypi,
    Maven,
    Deb,
    Rpm,
    Gem,
    Generic,
    All,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Semver => "semver",
            Scheme::Npm => "npm",
            Scheme::Cargo => "cargo",
            Scheme::Golang => "golang",
            Scheme::Pypi => "pypi",
            Scheme::Maven => "maven",
            Scheme::Deb => "deb",
            Scheme::Rpm => "rpm",
            Scheme::Gem => "gem",
            Scheme::Generic => "generic",
            Scheme::All => "all",
        }
    }

    /// A version of this scheme, parsed for comparison.
    pub fn parse_version(self, v: &str) -> Result<Version, VersError> {
        let bad = |reason: String| VersError::BadVersion { scheme: self.as_str(), version: v.to_string(), reason };
        let t = v.trim();
        if t.is_empty() {
            return Err(bad("empty".into()));
        }
        Ok(match self {
            Scheme::Semver | Scheme::Npm | Scheme::Cargo | Scheme::Golang => {
                let s = match self {
                    Scheme::Npm => t.trim_start_matches('=').trim_start_matches(['v', 'V']),
                    Scheme::Cargo => t,
                    _ => t.strip_prefix(['v', 'V']).unwrap_or(t),
                };
                Version::Semver(parse_semver(s).map_err(bad)?)
            }
            Scheme::Pypi => Version::Pypi(pep440_rs::Version::from_str(t).map_err(|e| bad(e.to_string()))?),
            Scheme::Deb => Version::Deb(debversion::Version::from_str(t).map_err(|e| bad(e.to_string()))?),
            Scheme::Maven => Version::Maven(t.to_string()),
            Scheme::Rpm => {
                rpm_validate(t).map_err(|r| bad(r.into()))?;
                Version::Rpm(t.to_string())
            }
            Scheme::Gem => {
                gem_validate(t).map_err(|r| bad(r.into()))?;
                Version::Gem(t.to_string())
            }
            Scheme::Generic | Scheme::All => Version::Generic(t.to_string()),
        })
    }
}

impl FromStr for Scheme {
    type Err = ();
    fn from_str(s: &str) -> Result<Scheme, ()> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "semver" => Scheme::Semver,
            "npm" => Scheme::Npm,
            "cargo" => Scheme::Cargo,
            "golang" => Scheme::Golang,
            "pypi" => Scheme::Pypi,
            "maven" => Scheme::Maven,
            "deb" | "debian" => Scheme::Deb,
            "rpm" => Scheme::Rpm,
            "gem" => Scheme::Gem,
            "generic" => Scheme::Generic,
            "all" => Scheme::All,
            _ => return Err(()),
        })
    }
}

/// A version parsed by its scheme. Values of one scheme are totally ordered; comparing
/// versions of different schemes is never done (a range holds one scheme).
#[derive(Debug, Clone)]
pub enum Version {
    Semver(semver::Version),
    Pypi(pep440_rs::Version),
    Deb(debversion::Version),
    Maven(String),
    Rpm(String),
    Gem(String),
    Generic(String),
}

impl Version {
    fn compare(&self, other: &Version) -> Ordering {
        match (self, other) {
            (Version::Semver(a), Version::Semver(b)) => a.cmp_precedence(b),
            (Version::Pypi(a), Version::Pypi(b)) => a.cmp(b),
            (Version::Deb(a), Version::Deb(b)) => a.cmp(b),
            (Version::Maven(a), Version::Maven(b)) => maven_cmp(a, b),
            (Version::Rpm(a), Version::Rpm(b)) => rpm_cmp(a, b),
            (Version::Gem(a), Version::Gem(b)) => gem_cmp(a, b),
            (Version::Generic(a), Version::Generic(b)) => compare_generic(a, b),
            // Unreachable by construction (one scheme per range); keep a total order.
            (a, b) => a.rank().cmp(&b.rank()),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Version::Semver(_) => 0,
            Version::Pypi(_) => 1,
            Version::Deb(_) => 2,
            Version::Maven(_) => 3,
            Version::Rpm(_) => 4,
            Version::Gem(_) => 5,
            Version::Generic(_) => 6,
        }
    }
}

/// SemVer 2.0, with the lenient reading of partial versions (`1`, `1.2`, `1.2-rc1`) that
/// CSAF and OSV producers write.
fn parse_semver(s: &str) -> Result<semver::Version, String> {
    match semver::Version::parse(s) {
        Ok(v) => Ok(v),
        Err(e) => {
            let end = s.find(['-', '+']).unwrap_or(s.len());
            let (core, tail) = s.split_at(end);
            let parts: Vec<&str> = core.split('.').collect();
            if parts.len() < 3 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) {
                let mut padded = parts.join(".");
                for _ in parts.len()..3 {
                    padded.push_str(".0");
                }
                semver::Version::parse(&format!("{padded}{tail}")).map_err(|_| e.to_string())
            } else {
                Err(e.to_string())
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A parsed `vers:` range.
#[derive(Debug, Clone)]
pub struct VersRange {
    pub scheme: Scheme,
    /// `None`: the `*` range (every version).
    constraints: Option<Vec<(Cmp, Version)>>,
}

/// Parses a `vers:<scheme>/<constraint>|...` range: the scheme must be known and every
/// constraint's version valid in it.
pub fn parse_range(range: &str) -> Result<VersRange, VersError> {
    let malformed = |reason| VersError::Malformed { range: range.to_string(), reason };
    let rest = range.trim().strip_prefix("vers:").ok_or_else(|| malformed("does not start with vers:"))?;
    let (scheme_name, constraints) = rest.split_once('/').ok_or_else(|| malformed("no / after the scheme"))?;
    let scheme = Scheme::from_str(scheme_name)
        .map_err(|_| VersError::UnknownScheme { range: range.to_string(), scheme: scheme_name.to_string() })?;
    let constraints = constraints.trim();
    if constraints == "*" {
        return Ok(VersRange { scheme, constraints: None });
    }
    if scheme == Scheme::All {
        return Err(malformed("the all scheme takes only *"));
    }
    let mut out = Vec::new();
    for c in constraints.split('|') {
        let c = c.trim();
        if c.is_empty() {
            return Err(malformed("empty constraint"));
        }
        if c == "*" {
            return Err(malformed("* must be the only constraint"));
        }
        let (cmp, v) = if let Some(v) = c.strip_prefix(">=") {
            (Cmp::Ge, v)
        } else if let Some(v) = c.strip_prefix("<=") {
            (Cmp::Le, v)
        } else if let Some(v) = c.strip_prefix("!=") {
            (Cmp::Ne, v)
        } else if let Some(v) = c.strip_prefix('>') {
            (Cmp::Gt, v)
        } else if let Some(v) = c.strip_prefix('<') {
            (Cmp::Lt, v)
        } else if let Some(v) = c.strip_prefix('=') {
            (Cmp::Eq, v)
        } else {
            (Cmp::Eq, c)
        };
        let v = percent_encoding::percent_decode_str(v.trim()).decode_utf8_lossy();
        if v.is_empty() {
            return Err(malformed("constraint without a version"));
        }
        out.push((cmp, scheme.parse_version(&v)?));
    }
    Ok(VersRange { scheme, constraints: Some(out) })
}

/// Checks that `range` is a usable `vers:` range (known scheme, valid versions).
pub fn validate(range: &str) -> Result<(), VersError> {
    parse_range(range).map(|_| ())
}

impl VersRange {
    /// Whether `version` (a version of this range's scheme) is inside the range
    /// (vers-spec evaluation: equalities first, then the intervals formed by consecutive
    /// lower and upper bounds). A version the scheme cannot read is an error.
    pub fn contains(&self, version: &str) -> Result<bool, VersError> {
        let Some(cs) = &self.constraints else {
            return Ok(true);
        };
        let version = self.scheme.parse_version(version)?;
        for (c, v) in cs {
            let same = version.compare(v) == Ordering::Equal;
            match c {
                Cmp::Eq if same => return Ok(true),
                Cmp::Ne if same => return Ok(false),
                _ => {}
            }
        }
        let mut bounds: Vec<&(Cmp, Version)> = cs.iter().filter(|(c, _)| !matches!(c, Cmp::Eq | Cmp::Ne)).collect();
        bounds.sort_by(|a, b| a.1.compare(&b.1));
        let test = |c: Cmp, v: &Version| {
            let o = version.compare(v);
            match c {
                Cmp::Lt => o == Ordering::Less,
                Cmp::Le => o != Ordering::Greater,
                Cmp::Gt => o == Ordering::Greater,
                Cmp::Ge => o != Ordering::Less,
                _ => false,
            }
        };
        let mut i = 0;
        while i < bounds.len() {
            let (c, v) = bounds[i];
            match c {
                Cmp::Lt | Cmp::Le => {
                    // An upper bound with no lower bound before it: open below.
                    if test(*c, v) {
                        return Ok(true);
                    }
                    i += 1;
                }
                Cmp::Gt | Cmp::Ge => match bounds.get(i + 1) {
                    Some((c2, v2)) if matches!(c2, Cmp::Lt | Cmp::Le) => {
                        if test(*c, v) && test(*c2, v2) {
                            return Ok(true);
                        }
                        i += 2;
                    }
                    _ => {
                        if test(*c, v) && i + 1 == bounds.len() {
                            return Ok(true);
                        }
                        i += 1;
                    }
                },
                _ => i += 1,
            }
        }
        Ok(false)
    }
}

/// Whether `version` is inside `range` (see [`VersRange::contains`]).
pub fn contains(range: &str, version: &str) -> Result<bool, VersError> {
    parse_range(range)?.contains(version)
}

/// Reads a version range written the common non-`vers:` ways (CSAF
/// `product_version_range` names such as `<2.0`, `<= 2.0`, `>=1.2 <1.4`, `>= 1.2, < 1.4`,
/// `>=1.2 && <1.4`, `=1.2`) as a `vers:<scheme>/...` range: at most one lower and one
/// upper bound forming a non-empty interval, or one equality. Anything else (unions such
/// as `<1 || >2`, words, wildcards, an empty interval) is an error: the caller reports it
/// and must not widen the claim.
pub fn from_loose(text: &str, scheme: Scheme) -> Result<String, VersError> {
    let malformed = |reason| VersError::Malformed { range: text.to_string(), reason };
    if text.contains("||") {
        return Err(malformed("a union of ranges is not read"));
    }
    let spaced = text.replace("&&", " ").replace(',', " ");
    let mut rest = spaced.trim();
    if rest.is_empty() {
        return Err(malformed("empty range"));
    }
    let mut lower: Option<(Cmp, String)> = None;
    let mut upper: Option<(Cmp, String)> = None;
    let mut exact: Option<String> = None;
    while !rest.is_empty() {
        let (cmp, after) = if let Some(r) = rest.strip_prefix(">=") {
            (Cmp::Ge, r)
        } else if let Some(r) = rest.strip_prefix("<=") {
            (Cmp::Le, r)
        } else if let Some(r) = rest.strip_prefix("==") {
            (Cmp::Eq, r)
        } else if let Some(r) = rest.strip_prefix('>') {
            (Cmp::Gt, r)
        } else if let Some(r) = rest.strip_prefix('<') {
            (Cmp::Lt, r)
        } else if let Some(r) = rest.strip_prefix('=') {
            (Cmp::Eq, r)
        } else {
            return Err(malformed("expected one of < <= > >= = before each version"));
        };
        let after = after.trim_start();
        let end = after.find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '=')).unwrap_or(after.len());
        let version = &after[..end];
        if version.is_empty()
            || !version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '~' | '_' | ':' | '^'))
        {
            return Err(malformed("a bound without a plain version"));
        }
        scheme.parse_version(version)?;
        let slot = match cmp {
            Cmp::Ge | Cmp::Gt => &mut lower,
            Cmp::Le | Cmp::Lt => &mut upper,
            _ => {
                if exact.replace(version.to_string()).is_some() {
                    return Err(malformed("two equalities"));
                }
                rest = after[end..].trim_start();
                continue;
            }
        };
        if slot.replace((cmp, version.to_string())).is_some() {
            return Err(malformed("two lower or two upper bounds"));
        }
        rest = after[end..].trim_start();
    }
    let op = |c: Cmp| match c {
        Cmp::Ge => ">=",
        Cmp::Gt => ">",
        Cmp::Le => "<=",
        Cmp::Lt => "<",
        Cmp::Eq | Cmp::Ne => "",
    };
    let enc = |v: &str| v.replace('%', "%25").replace('|', "%7C");
    let body = match (exact, lower, upper) {
        (Some(v), None, None) => enc(&v),
        (None, Some((c, v)), None) | (None, None, Some((c, v))) => format!("{}{}", op(c), enc(&v)),
        (None, Some((lc, lv)), Some((uc, uv))) => {
            let o = compare(scheme, &lv, &uv)?;
            if o == Ordering::Greater || (o == Ordering::Equal && (lc == Cmp::Gt || uc == Cmp::Lt)) {
                return Err(malformed("the lower bound is above the upper bound"));
            }
            format!("{}{}|{}{}", op(lc), enc(&lv), op(uc), enc(&uv))
        }
        _ => return Err(malformed("an equality mixed with bounds")),
    };
    Ok(format!("vers:{}/{body}", scheme.as_str()))
}

/// Compares two versions of `scheme`.
pub fn compare(scheme: Scheme, a: &str, b: &str) -> Result<Ordering, VersError> {
    Ok(scheme.parse_version(a)?.compare(&scheme.parse_version(b)?))
}

/// The `generic` order: segments split at `.-+_~:`, numeric segments compared
/// numerically, others lexically, a missing segment counting as `0`; a leading `v` is
/// ignored. Also the order of document versions.
pub fn compare_generic(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let a = a.trim_start_matches(['v', 'V']);
    let b = b.trim_start_matches(['v', 'V']);
    const SEPARATORS: [char; 6] = ['.', '-', '+', '_', '~', ':'];
    let (mut sa, mut sb) = (a.split(SEPARATORS), b.split(SEPARATORS));
    loop {
        let (x, y) = match (sa.next(), sb.next()) {
            (None, None) => return Ordering::Equal,
            (x, y) => (x.unwrap_or("0"), y.unwrap_or("0")),
        };
        let o = if is_digits(x) && is_digits(y) { cmp_digits(x, y) } else { x.cmp(y) };
        if o != Ordering::Equal {
            return o;
        }
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Compares two decimal digit strings of any length by value.
fn cmp_digits(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

// ---------------------------------------------------------------------------------------
// Maven: org.apache.maven.artifact.versioning.ComparableVersion (Maven 3.x)

#[derive(Debug, Clone, PartialEq, Eq)]
enum MvnItem {
    /// Digits without leading zeros (`""` is 0).
    Int(String),
    /// A qualifier, aliases resolved (`ga`, `final`, `release` -> `""`; `cr` -> `rc`).
    Str(String),
    List(Vec<MvnItem>),
}

const MVN_QUALIFIERS: [&str; 7] = ["alpha", "beta", "milestone", "rc", "snapshot", "", "sp"];

fn mvn_qualifier_rank(q: &str) -> String {
    match MVN_QUALIFIERS.iter().position(|x| *x == q) {
        Some(i) => i.to_string(),
        None => format!("{}-{q}", MVN_QUALIFIERS.len()),
    }
}

impl MvnItem {
    fn string(s: &str, followed_by_digit: bool) -> MvnItem {
        let s = if followed_by_digit && s.len() == 1 {
            match s {
                "a" => "alpha",
                "b" => "beta",
                "m" => "milestone",
                other => other,
            }
        } else {
            s
        };
        let s = match s {
            "ga" | "final" | "release" => "",
            "cr" => "rc",
            other => other,
        };
        MvnItem::Str(s.to_string())
    }

    fn int(s: &str) -> MvnItem {
        MvnItem::Int(s.trim_start_matches('0').to_string())
    }

    fn is_null(&self) -> bool {
        match self {
            MvnItem::Int(s) | MvnItem::Str(s) => s.is_empty(),
            MvnItem::List(l) => l.is_empty(),
        }
    }

    /// `self.compareTo(other)`, `None` standing for Java's `null`.
    fn cmp_to(&self, other: Option<&MvnItem>) -> Ordering {
        match (self, other) {
            (MvnItem::Int(a), None) => {
                if a.is_empty() {
                    Ordering::Equal
                } else {
                    Ordering::Greater
                }
            }
            (MvnItem::Int(a), Some(MvnItem::Int(b))) => cmp_digits(a, b),
            (MvnItem::Int(_), Some(_)) => Ordering::Greater,
            (MvnItem::Str(a), None) => mvn_qualifier_rank(a).cmp(&mvn_qualifier_rank("")),
            (MvnItem::Str(_), Some(MvnItem::Int(_))) => Ordering::Less,
            (MvnItem::Str(a), Some(MvnItem::Str(b))) => mvn_qualifier_rank(a).cmp(&mvn_qualifier_rank(b)),
            (MvnItem::Str(_), Some(MvnItem::List(_))) => Ordering::Less,
            (MvnItem::List(l), None) => match l.first() {
                None => Ordering::Equal,
                Some(first) => first.cmp_to(None),
            },
            (MvnItem::List(_), Some(MvnItem::Int(_))) => Ordering::Less,
            (MvnItem::List(_), Some(MvnItem::Str(_))) => Ordering::Greater,
            (MvnItem::List(a), Some(MvnItem::List(b))) => {
                for i in 0..a.len().max(b.len()) {
                    let o = match (a.get(i), b.get(i)) {
                        (None, None) => Ordering::Equal,
                        (None, Some(r)) => r.cmp_to(None).reverse(),
                        (Some(l), r) => l.cmp_to(r),
                    };
                    if o != Ordering::Equal {
                        return o;
                    }
                }
                Ordering::Equal
            }
        }
    }
}

/// Removes trailing null items (`0`, `""`, empty lists) up to the last non-list item.
fn mvn_normalize(list: &mut Vec<MvnItem>) {
    let mut i = list.len();
    while i > 0 {
        i -= 1;
        if list[i].is_null() {
            list.remove(i);
        } else if !matches!(list[i], MvnItem::List(_)) {
            break;
        }
    }
}

/// Parses a Maven version into ComparableVersion's item tree.
fn mvn_parse(version: &str) -> MvnItem {
    let v = version.to_lowercase();
    let chars: Vec<char> = v.chars().collect();
    // A stack of open lists; each closed list is appended to its parent when popped.
    let mut stack: Vec<Vec<MvnItem>> = vec![Vec::new()];
    let sub = |from: usize, to: usize| -> String { chars[from..to].iter().collect() };
    let parse_item = |is_digit: bool, s: &str| if is_digit { MvnItem::int(s) } else { MvnItem::string(s, false) };
    let mut is_digit = false;
    let mut start = 0usize;
    for (i, &c) in chars.iter().enumerate() {
        let top = stack.len() - 1;
        if c == '.' {
            let item = if i == start { MvnItem::Int(String::new()) } else { parse_item(is_digit, &sub(start, i)) };
            stack[top].push(item);
            start = i + 1;
        } else if c == '-' {
            let item = if i == start { MvnItem::Int(String::new()) } else { parse_item(is_digit, &sub(start, i)) };
            stack[top].push(item);
            start = i + 1;
            stack.push(Vec::new());
        } else if c.is_ascii_digit() {
            if !is_digit && i > start {
                stack[top].push(MvnItem::string(&sub(start, i), true));
                start = i;
                stack.push(Vec::new());
            }
            is_digit = true;
        } else {
            if is_digit && i > start {
                stack[top].push(parse_item(true, &sub(start, i)));
                start = i;
                stack.push(Vec::new());
            }
            is_digit = false;
        }
    }
    if chars.len() > start {
        let top = stack.len() - 1;
        stack[top].push(parse_item(is_digit, &sub(start, chars.len())));
    }
    while stack.len() > 1 {
        let mut list = stack.pop().unwrap_or_default();
        mvn_normalize(&mut list);
        if let Some(parent) = stack.last_mut() {
            parent.push(MvnItem::List(list));
        }
    }
    let mut root = stack.pop().unwrap_or_default();
    mvn_normalize(&mut root);
    MvnItem::List(root)
}

/// Maven `ComparableVersion` order (`1-alpha < 1-beta < 1-milestone < 1-rc < 1-snapshot <
/// 1 = 1.0 = 1-ga < 1-sp < 1-abc < 1-1`).
pub fn maven_cmp(a: &str, b: &str) -> Ordering {
    mvn_parse(a).cmp_to(Some(&mvn_parse(b)))
}

// ---------------------------------------------------------------------------------------
// RPM: rpmvercmp (rpmio/rpmvercmp.c) over [epoch:]version[-release]

fn rpm_validate(v: &str) -> Result<(), &'static str> {
    let (epoch, _) = rpm_split(v);
    if let Some(e) = epoch {
        if !is_digits(e) {
            return Err("epoch is not a number");
        }
    }
    if v.chars().any(|c| c.is_whitespace() || !c.is_ascii()) {
        return Err("not printable ASCII");
    }
    Ok(())
}

/// `(epoch, version, release)`.
fn rpm_split(v: &str) -> (Option<&str>, &str) {
    match v.split_once(':') {
        Some((e, rest)) => (Some(e), rest),
        None => (None, v),
    }
}

/// rpm's `rpmvercmp` of one version or release string.
pub fn rpmvercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0usize, 0usize);
    let sep = |c: u8| !c.is_ascii_alphanumeric() && c != b'~' && c != b'^';
    while i < a.len() || j < b.len() {
        while i < a.len() && sep(a[i]) {
            i += 1;
        }
        while j < b.len() && sep(b[j]) {
            j += 1;
        }
        let (ca, cb) = (a.get(i).copied(), b.get(j).copied());
        // A tilde sorts before everything, even the end of the string.
        if ca == Some(b'~') || cb == Some(b'~') {
            if ca != Some(b'~') {
                return Ordering::Greater;
            }
            if cb != Some(b'~') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        // A caret sorts after the end of the string but before anything else.
        if ca == Some(b'^') || cb == Some(b'^') {
            if ca.is_none() {
                return Ordering::Less;
            }
            if cb.is_none() {
                return Ordering::Greater;
            }
            if ca != Some(b'^') {
                return Ordering::Greater;
            }
            if cb != Some(b'^') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        if ca.is_none() || cb.is_none() {
            break;
        }
        let numeric = a[i].is_ascii_digit();
        let run = |s: &[u8], mut k: usize| {
            let start = k;
            while k < s.len() && (if numeric { s[k].is_ascii_digit() } else { s[k].is_ascii_alphabetic() }) {
                k += 1;
            }
            (start, k)
        };
        let (sa, ea) = run(a, i);
        let (sb, eb) = run(b, j);
        if sb == eb {
            // Different segment types: numeric is newer than alpha.
            return if numeric { Ordering::Greater } else { Ordering::Less };
        }
        let (x, y) = (&a[sa..ea], &b[sb..eb]);
        let o = if numeric {
            cmp_digits(std::str::from_utf8(x).unwrap_or(""), std::str::from_utf8(y).unwrap_or(""))
        } else {
            x.cmp(y)
        };
        if o != Ordering::Equal {
            return o;
        }
        i = ea;
        j = eb;
    }
    match (i >= a.len(), j >= b.len()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        _ => Ordering::Greater,
    }
}

/// RPM EVR order: epoch (absent = 0) numerically, then version, then release by
/// [`rpmvercmp`] (a missing release sorts before any release).
pub fn rpm_cmp(a: &str, b: &str) -> Ordering {
    let evr = |v: &str| {
        let (e, rest) = rpm_split(v);
        let (ver, rel) = match rest.rsplit_once('-') {
            Some((x, r)) => (x.to_string(), Some(r.to_string())),
            None => (rest.to_string(), None),
        };
        (e.unwrap_or("0").to_string(), ver, rel)
    };
    let (ea, va, ra) = evr(a);
    let (eb, vb, rb) = evr(b);
    cmp_digits(&ea, &eb).then_with(|| rpmvercmp(&va, &vb)).then_with(|| match (ra, rb) {
        (Some(x), Some(y)) => rpmvercmp(&x, &y),
        (x, y) => x.is_some().cmp(&y.is_some()),
    })
}

// ---------------------------------------------------------------------------------------
// RubyGems: Gem::Version

fn gem_validate(v: &str) -> Result<(), &'static str> {
    // Gem::Version::ANCHORED_VERSION_PATTERN: digits, then .alnum segments, then an
    // optional -pre part.
    let (main, pre) = match v.split_once('-') {
        Some((m, p)) => (m, Some(p)),
        None => (v, None),
    };
    let mut segs = main.split('.');
    if !segs.next().is_some_and(is_digits) {
        return Err("must start with a number");
    }
    if !segs.all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric())) {
        return Err("segments must be letters and digits");
    }
    if let Some(p) = pre {
        if !p.split('.').all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')) {
            return Err("bad pre-release part");
        }
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum GemSeg {
    Num(String),
    Str(String),
}

fn gem_canonical(v: &str) -> Vec<GemSeg> {
    let v = v.replace('-', ".pre.");
    let mut segs = Vec::new();
    let b = v.as_bytes();
    let mut k = 0;
    while k < b.len() {
        let start = k;
        if b[k].is_ascii_digit() {
            while k < b.len() && b[k].is_ascii_digit() {
                k += 1;
            }
            segs.push(GemSeg::Num(v[start..k].trim_start_matches('0').to_string()));
        } else if b[k].is_ascii_alphabetic() {
            while k < b.len() && b[k].is_ascii_alphabetic() {
                k += 1;
            }
            segs.push(GemSeg::Str(v[start..k].to_string()));
        } else {
            k += 1;
        }
    }
    // canonical_segments: trailing zeros dropped from the release part and from the
    // pre-release part (which starts at the first letter segment).
    let split = segs.iter().position(|s| matches!(s, GemSeg::Str(_))).unwrap_or(segs.len());
    let mut pre = segs.split_off(split);
    let zero = GemSeg::Num(String::new());
    while segs.last() == Some(&zero) {
        segs.pop();
    }
    while pre.last() == Some(&zero) {
        pre.pop();
    }
    segs.extend(pre);
    segs
}

/// RubyGems `Gem::Version#<=>`: a letter segment makes a pre-release (`1.0.a < 1.0`),
/// `-` reads as `.pre.`, trailing zeros do not count.
pub fn gem_cmp(a: &str, b: &str) -> Ordering {
    let (x, y) = (gem_canonical(a), gem_canonical(b));
    let zero = GemSeg::Num(String::new());
    for i in 0..x.len().max(y.len()) {
        let l = x.get(i).unwrap_or(&zero);
        let r = y.get(i).unwrap_or(&zero);
        let o = match (l, r) {
            (GemSeg::Num(p), GemSeg::Num(q)) => cmp_digits(p, q),
            (GemSeg::Str(p), GemSeg::Str(q)) => p.cmp(q),
            (GemSeg::Str(_), GemSeg::Num(_)) => Ordering::Less,
            (GemSeg::Num(_), GemSeg::Str(_)) => Ordering::Greater,
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn increasing(scheme: Scheme, versions: &[&str]) {
        for (i, a) in versions.iter().enumerate() {
            for (j, b) in versions.iter().enumerate() {
                assert_eq!(compare(scheme, a, b).unwrap(), i.cmp(&j), "{scheme:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn intervals_and_equalities() {
        let r = "vers:semver/>=2.0.0|<=2.7.0";
        assert!(contains(r, "2.0.0").unwrap());
        assert!(contains(r, "2.7.0").unwrap());
        assert!(!contains(r, "2.7.1").unwrap());
        assert!(!contains(r, "1.9.0").unwrap());
        let r = "vers:generic/<1.0|>=2.0|<3.0|5.9.0";
        assert!(contains(r, "0.5").unwrap());
        assert!(contains(r, "2.5").unwrap());
        assert!(!contains(r, "3.1").unwrap());
        assert!(contains(r, "5.9.0").unwrap());
        assert!(contains("vers:npm/*", "1.0.0").unwrap());
        assert!(contains("vers:all/*", "anything").unwrap());
        assert!(contains("vers:npm/>=1.0.0", "10.0.0").unwrap());
        assert!(!contains("vers:npm/>=1.0.0|!=1.5.0", "1.5.0").unwrap());
    }

    #[test]
    fn bad_ranges_are_errors() {
        assert!(contains("semver/>=1", "1").is_err());
        assert!(contains("vers:semver", "1").is_err());
        assert!(contains("vers:semver/>=|<2", "1").is_err());
        assert!(contains("vers:npm/>=1.0.0||<2", "1.0.0").is_err());
        assert!(contains("vers:all/<1", "1").is_err());
        assert!(matches!(validate("vers:npm/>=not-a-version"), Err(VersError::BadVersion { .. })));
        assert!(matches!(validate("vers:pypi/<1.0-what-is-this"), Err(VersError::BadVersion { .. })));
    }

    #[test]
    fn unknown_scheme_is_an_error_never_a_guess() {
        let e = validate("vers:nuget/<1.0").unwrap_err();
        assert!(matches!(&e, VersError::UnknownScheme { scheme, .. } if scheme == "nuget"));
        assert!(e.to_string().contains("unknown versioning scheme \"nuget\""), "{e}");
        assert!(contains("vers:x/*", "1").is_err());
    }

    #[test]
    fn semver_prerelease_sorts_before_its_release() {
        // The bug this module fixes: 1.0.0-rc1 sorted after 1.0.0, so a not_affected
        // range `<1.0.0` missed the release candidate.
        assert!(contains("vers:npm/<1.0.0", "1.0.0-rc1").unwrap());
        assert!(!contains("vers:npm/<1.0.0", "1.0.0").unwrap());
        assert!(!contains("vers:npm/>=1.0.0", "1.0.0-rc1").unwrap());
        assert!(contains("vers:cargo/>=1.0.0-alpha|<1.0.0", "1.0.0-beta.2").unwrap());
        assert!(contains("vers:golang/<v1.2.0", "v1.2.0-20240101000000-abcdef123456").unwrap());
        assert!(contains("vers:golang/>=v2.0.0", "v2.0.0+incompatible").unwrap());
        increasing(
            Scheme::Semver,
            &[
                "1.0.0-alpha",
                "1.0.0-alpha.1",
                "1.0.0-alpha.beta",
                "1.0.0-beta",
                "1.0.0-beta.2",
                "1.0.0-beta.11",
                "1.0.0-rc.1",
                "1.0.0",
                "1.0.1",
                "1.10.0",
            ],
        );
        assert_eq!(compare(Scheme::Semver, "1.0.0+build.1", "1.0.0+build.2").unwrap(), Ordering::Equal);
        assert_eq!(compare(Scheme::Semver, "1.2", "1.2.0").unwrap(), Ordering::Equal);
        assert_eq!(compare(Scheme::Npm, "v1.2.3", "=1.2.3").unwrap(), Ordering::Equal);
        assert!(contains("vers:semver/<1.0", "1.0-rc1").unwrap());
    }

    #[test]
    fn pypi_follows_pep440() {
        assert!(contains("vers:pypi/<1.0", "1.0rc1").unwrap());
        assert!(!contains("vers:pypi/<1.0", "1.0.post1").unwrap());
        increasing(
            Scheme::Pypi,
            &[
                "1.0.dev1",
                "1.0a1",
                "1.0a2.dev1",
                "1.0a2",
                "1.0b1",
                "1.0rc1",
                "1.0",
                "1.0+local.1",
                "1.0.post1",
                "1.1",
                "1!0.5",
            ],
        );
        assert_eq!(compare(Scheme::Pypi, "1.0", "1.0.0").unwrap(), Ordering::Equal);
        assert_eq!(compare(Scheme::Pypi, "1.0RC1", "1.0rc1").unwrap(), Ordering::Equal);
    }

    #[test]
    fn deb_epochs_and_tilde() {
        increasing(Scheme::Deb, &["1.0~~", "1.0~rc1", "1.0", "1.0-1", "1.0+b1", "1.1", "9.9", "1:0.1"]);
        assert!(contains("vers:deb/<1:1.0", "2.0").unwrap());
        assert!(contains("vers:deb/<1.0", "1.0~beta1-1").unwrap());
        assert_eq!(compare(Scheme::Deb, "1.0-0", "1.0").unwrap(), Ordering::Equal);
    }

    #[test]
    fn rpm_tilde_caret_epoch_release() {
        increasing(Scheme::Rpm, &["1.0~rc1", "1.0", "1.0^git1", "1.0a", "1.0.1", "2.0", "1:0.1"]);
        assert!(contains("vers:rpm/<1.0", "1.0~rc1").unwrap());
        assert!(!contains("vers:rpm/<1.0", "1.0^20240101").unwrap());
        assert_eq!(rpm_cmp("1.0-1", "1.0-2"), Ordering::Less);
        assert_eq!(rpm_cmp("1.0", "1.0-1"), Ordering::Less);
        assert_eq!(rpm_cmp("0:1.0-1", "1.0-1"), Ordering::Equal);
        // rpm's own test vectors (tests/rpmvercmp.at)
        for (a, b, want) in [
            ("1.0", "1.0", 0),
            ("2.0.1a", "2.0.1", 1),
            ("5.5p1", "5.5p10", -1),
            ("10xyz", "10.1xyz", -1),
            ("xyz.4", "8", -1),
            ("6.0.rc1", "6.0", 1),
            ("10b2", "10a1", 1),
            ("1.0aa", "1.0a", 1),
            ("10.0001", "10.1", 0),
            ("4.999.9", "5.0", -1),
            ("2_0", "2_0", 0),
            ("2.0", "2_0", 0),
            ("a", "a", 0),
            ("a+", "a_", 0),
            ("+a", "_a", 0),
            ("1.0~rc1", "1.0~rc2", -1),
            ("1.0~rc1~git123", "1.0~rc1", -1),
            ("1.0^", "1.0", 1),
            ("1.0^git1", "1.0^git1~pre", 1),
            ("1.0^git1", "1.01", -1),
            ("1.0^git1~pre", "1.0^git1", -1),
        ] {
            assert_eq!(rpmvercmp(a, b) as i32, want, "rpmvercmp({a}, {b})");
        }
    }

    #[test]
    fn maven_comparable_version() {
        // From Maven's ComparableVersionTest (VERSIONS_QUALIFIER), in increasing order.
        increasing(
            Scheme::Maven,
            &[
                "1-alpha2snapshot",
                "1-alpha2",
                "1-alpha-123",
                "1-beta-2",
                "1-beta123",
                "1-m2",
                "1-m11",
                "1-rc",
                "1-cr2",
                "1-rc123",
                "1-SNAPSHOT",
                "1",
                "1-sp",
                "1-sp2",
                "1-sp123",
                "1-abc",
                "1-def",
                "1-pom-1",
                "1-1-snapshot",
                "1-1",
                "1-2",
                "1-123",
            ],
        );
        for (a, b) in [
            ("1", "1.0"),
            ("1", "1.0.0"),
            ("1.0", "1.0.0"),
            ("1-ga", "1"),
            ("1-final", "1"),
            ("1-cr", "1-rc"),
            ("1a1", "1-alpha-1"),
            ("1.0-RC1", "1.0-rc1"),
        ] {
            assert_eq!(maven_cmp(a, b), Ordering::Equal, "{a} == {b}");
        }
        assert!(contains("vers:maven/>=2.10.0|<2.10.5", "2.10.5-rc1").unwrap());
        assert!(!contains("vers:maven/<2.10.5", "2.10.5.Final").unwrap());
    }

    #[test]
    fn gem_version() {
        increasing(Scheme::Gem, &["1.0.a", "1.0.a.1", "1.0.b1", "1.0.rc1", "1.0", "1.0.1", "1.1", "1.10"]);
        assert_eq!(gem_cmp("1.0", "1"), Ordering::Equal);
        assert_eq!(gem_cmp("1.0.0-rc1", "1.0.0.pre.rc1"), Ordering::Equal);
        assert!(contains("vers:gem/<1.0", "1.0.rc1").unwrap());
        assert!(validate("vers:gem/<not valid").is_err());
    }

    #[test]
    fn numeric_segments() {
        assert_eq!(compare_generic("1.10", "1.9"), Ordering::Greater);
        assert_eq!(compare_generic("v0.27.0", "0.27.0"), Ordering::Equal);
        assert_eq!(compare_generic("99999999999999999999999", "1"), Ordering::Greater);
    }

    /// `compare_generic` walks the segments without collecting them; the same order as
    /// collecting them first (the implementation it replaced).
    #[test]
    fn generic_order_equals_the_collected_segments_order() {
        fn reference(a: &str, b: &str) -> Ordering {
            let a = a.trim_start_matches(['v', 'V']);
            let b = b.trim_start_matches(['v', 'V']);
            let seg =
                |s: &str| -> Vec<String> { s.split(['.', '-', '+', '_', '~', ':']).map(str::to_string).collect() };
            let (sa, sb) = (seg(a), seg(b));
            for i in 0..sa.len().max(sb.len()) {
                let x = sa.get(i).map(String::as_str).unwrap_or("0");
                let y = sb.get(i).map(String::as_str).unwrap_or("0");
                let o = if is_digits(x) && is_digits(y) { cmp_digits(x, y) } else { x.cmp(y) };
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        }
        let vs = [
            "",
            "0",
            "1",
            "1.0",
            "1.0.0",
            "v1",
            "V1.0",
            "vv1",
            "1.9",
            "1.10",
            "01.10",
            "1.10.0-rc1",
            "1.10.0~rc1",
            "1-0",
            "1..0",
            "1.",
            ".1",
            "a",
            "1.a",
            "1.0.a",
            "2024-05-01",
            "2024-5-1",
            "1:2",
            "1_2",
            "1+2",
            "v",
            "0.0.0.0.1",
            "99999999999999999999999",
            "10",
            "9",
        ];
        for a in vs {
            for b in vs {
                assert_eq!(compare_generic(a, b), reference(a, b), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn loose_ranges_read_as_vers() {
        for (loose, want) in [
            ("<2.0", "vers:generic/<2.0"),
            ("<= 2.0", "vers:generic/<=2.0"),
            (">=1.2 <1.4", "vers:generic/>=1.2|<1.4"),
            (">= 1.2, < 1.4", "vers:generic/>=1.2|<1.4"),
            (">=1.2,<1.4", "vers:generic/>=1.2|<1.4"),
            ("<1.4 >=1.2", "vers:generic/>=1.2|<1.4"),
            (">1.0 && <=2.0.1-rc1", "vers:generic/>1.0|<=2.0.1-rc1"),
            ("=1.2", "vers:generic/1.2"),
            ("== 1.2", "vers:generic/1.2"),
        ] {
            assert_eq!(from_loose(loose, Scheme::Generic).unwrap(), want, "{loose}");
            validate(want).unwrap();
        }
        assert!(contains(&from_loose(">= 1.2, < 1.4", Scheme::Generic).unwrap(), "1.3.9").unwrap());
        for bad in [
            "",
            "all",
            "1.2",
            "<1.0 || >2.0",
            "<1 <2",
            ">2.0 <1.0",
            ">1.0 <1.0",
            "1.x",
            "<",
            "< 1.0 beta",
            "=1 >0",
            "*",
        ] {
            assert!(from_loose(bad, Scheme::Generic).is_err(), "accepted {bad:?}");
        }
        assert!(from_loose("<1.0", Scheme::Npm).is_ok());
        assert!(from_loose("<not-semver", Scheme::Npm).is_err());
    }

    #[test]
    fn a_version_outside_the_scheme_is_in_no_range() {
        assert!(contains("vers:npm/<2.0.0", "latest").is_err());
        assert!(contains("vers:pypi/<2.0", "not a version").is_err());
    }
}
