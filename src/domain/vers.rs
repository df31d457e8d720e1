//! `vers:` version-range specifiers (package-url/vers-spec), enough to test membership.
//!
//! Invariants: pure; an unparsable range is an error, never a silent match. Versions are
//! compared segment by segment (numeric segments numerically, others lexically), which is
//! what semver, generic and most ecosystem schemes agree on for release versions.

use std::cmp::Ordering;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid vers range {0:?}")]
pub struct VersError(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Any,
}

fn parse(range: &str) -> Result<Vec<(Cmp, String)>, VersError> {
    let err = || VersError(range.to_string());
    let rest = range.strip_prefix("vers:").ok_or_else(err)?;
    let (_scheme, constraints) = rest.split_once('/').ok_or_else(err)?;
    let mut out = Vec::new();
    for c in constraints.split('|') {
        let c = c.trim();
        if c.is_empty() {
            return Err(err());
        }
        let (cmp, v) = if c == "*" {
            (Cmp::Any, "")
        } else if let Some(v) = c.strip_prefix(">=") {
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
        if cmp != Cmp::Any && v.is_empty() {
            return Err(err());
        }
        out.push((cmp, percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned()));
    }
    Ok(out)
}

/// Compares two versions segment by segment.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches(['v', 'V']);
    let b = b.trim_start_matches(['v', 'V']);
    let seg = |s: &str| -> Vec<String> { s.split(['.', '-', '+', '_', '~', ':']).map(str::to_string).collect() };
    let (sa, sb) = (seg(a), seg(b));
    for i in 0..sa.len().max(sb.len()) {
        let x = sa.get(i).map(String::as_str).unwrap_or("0");
        let y = sb.get(i).map(String::as_str).unwrap_or("0");
        let o = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(p), Ok(q)) => p.cmp(&q),
            _ => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// Whether `version` is inside `range` (vers-spec evaluation: equalities first, then the
/// intervals formed by consecutive lower and upper bounds).
pub fn contains(range: &str, version: &str) -> Result<bool, VersError> {
    let mut cs = parse(range)?;
    if cs.iter().any(|(c, _)| *c == Cmp::Any) {
        return Ok(true);
    }
    for (c, v) in &cs {
        match c {
            Cmp::Eq if compare_versions(version, v) == Ordering::Equal => return Ok(true),
            Cmp::Ne if compare_versions(version, v) == Ordering::Equal => return Ok(false),
            _ => {}
        }
    }
    cs.retain(|(c, _)| !matches!(c, Cmp::Eq | Cmp::Ne));
    cs.sort_by(|a, b| compare_versions(&a.1, &b.1));
    let test = |c: Cmp, v: &str| {
        let o = compare_versions(version, v);
        match c {
            Cmp::Lt => o == Ordering::Less,
            Cmp::Le => o != Ordering::Greater,
            Cmp::Gt => o == Ordering::Greater,
            Cmp::Ge => o != Ordering::Less,
            _ => false,
        }
    };
    let mut i = 0;
    while i < cs.len() {
        let (c, v) = &cs[i];
        match c {
            Cmp::Lt | Cmp::Le => {
                // An upper bound with no lower bound before it: open below.
                if test(*c, v) {
                    return Ok(true);
                }
                i += 1;
            }
            Cmp::Gt | Cmp::Ge => match cs.get(i + 1) {
                Some((c2, v2)) if matches!(c2, Cmp::Lt | Cmp::Le) => {
                    if test(*c, v) && test(*c2, v2) {
                        return Ok(true);
                    }
                    i += 2;
                }
                _ => {
                    if test(*c, v) && i + 1 == cs.len() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_and_equalities() {
        let r = "vers:semver/>=2.0.0|<=2.7.0";
        assert!(contains(r, "2.0.0").unwrap());
        assert!(contains(r, "2.7.0").unwrap());
        assert!(!contains(r, "2.7.1").unwrap());
        assert!(!contains(r, "1.9").unwrap());
        let r = "vers:generic/<1.0|>=2.0|<3.0|5.9.0";
        assert!(contains(r, "0.5").unwrap());
        assert!(contains(r, "2.5").unwrap());
        assert!(!contains(r, "3.1").unwrap());
        assert!(contains(r, "5.9.0").unwrap());
        assert!(contains("vers:npm/*", "1").unwrap());
        assert!(contains("vers:npm/>=1.0.0", "10.0.0").unwrap());
        assert!(!contains("vers:npm/>=1.0.0|!=1.5.0", "1.5.0").unwrap());
    }

    #[test]
    fn bad_ranges_are_errors() {
        assert!(contains("semver/>=1", "1").is_err());
        assert!(contains("vers:semver", "1").is_err());
        assert!(contains("vers:semver/>=|<2", "1").is_err());
    }

    #[test]
    fn numeric_segments() {
        assert_eq!(compare_versions("1.10", "1.9"), Ordering::Greater);
        assert_eq!(compare_versions("v0.27.0", "0.27.0"), Ordering::Equal);
    }
}
