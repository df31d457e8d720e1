//! The observations role on redb (`vex_observations`, keyed `tenant \0 package \0 id`,
//! so a package's observations and a tenant's packages are key-range scans; values
//! compressed, `compressed`).
//!
//! Invariant: a value is [`KEYLESS`] and then the compressed observation with its key's
//! three strings left empty (the id, a hash, is what compresses least: ~20 % of a
//! compressed observation); reading it gives them back from the key. A value without
//! [`KEYLESS`] (written before) holds them, and reads as it is. [`KEYLESS`] starts with a
//! NUL byte, so a version of vex-lens from before refuses such a value (a JSON error)
//! rather than reading empty strings.

use super::{err, key_text, EmbeddedStore, OBSERVATIONS};
use crate::domain::model::Observation;
use crate::ports::{ObservationStore, StoreError};
use redb::ReadableTable;

/// The `vex_observations` key of an observation.
pub(super) fn obs_key(tenant: &str, package: &str, id: &str) -> String {
    format!("{tenant}\u{0}{package}\u{0}{id}")
}

/// The tenant, package and id an [`obs_key`] names.
fn key_parts(key: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let mut parts = key.splitn(3, |b| *b == 0);
    (parts.next().unwrap_or_default(), parts.next().unwrap_or_default(), parts.next().unwrap_or_default())
}

/// The tenant and package an [`obs_key`] names.
pub(super) fn tenant_and_package(key: &[u8]) -> (&[u8], &[u8]) {
    let (tenant, package, _) = key_parts(key);
    (tenant, package)
}

/// The first bytes of a value that leaves its key's strings to the key.
const KEYLESS: [u8; 4] = [0, b'V', b'L', b'O'];

/// An observation's `vex_observations` row: its key and its value ([`KEYLESS`], then the
/// observation compressed without what the key holds).
pub(super) fn stored_row(o: &Observation) -> Result<(String, Vec<u8>), StoreError> {
    let empty: std::sync::Arc<str> = std::sync::Arc::from("");
    let keyless = Observation { id: empty.clone(), tenant: empty.clone(), package: empty, ..o.clone() };
    let mut value = KEYLESS.to_vec();
    value.extend_from_slice(&super::compressed::encode(super::compressed::Kind::Observation, &keyless)?);
    Ok((obs_key(&o.tenant, &o.package, &o.id), value))
}

/// The observation a `vex_observations` row holds.
fn read_row(key: &[u8], value: &[u8]) -> Result<Observation, StoreError> {
    let Some(keyless) = value.strip_prefix(&KEYLESS[..]) else { return super::compressed::decode(value) };
    let mut o: Observation = super::compressed::decode(keyless)?;
    let (tenant, package, id) = key_parts(key);
    (o.tenant, o.package, o.id) = (key_text(tenant).into(), key_text(package).into(), key_text(id).into());
    Ok(o)
}

#[async_trait::async_trait]
impl ObservationStore for EmbeddedStore {
    async fn put_observations(&self, observations: &[Observation]) -> Result<(), StoreError> {
        if observations.is_empty() {
            return Ok(());
        }
        let mut rows = Vec::with_capacity(observations.len());
        for o in observations {
            if o.id.is_empty() {
                let mut o = o.clone();
                o.id =
                    o.compute_id().map_err(|e| StoreError::Rejected(format!("observation without an id: {e}")))?.into();
                rows.push(stored_row(&o)?);
            } else {
                rows.push(stored_row(o)?);
            }
        }
        self.write(move |tx, tally| {
            let mut t = tx.open_table(OBSERVATIONS).map_err(err)?;
            for (k, v) in &rows {
                // Keep the first provenance: never overwrite.
                if t.get(k.as_bytes()).map_err(err)?.is_none() {
                    t.insert(k.as_bytes(), v.as_slice()).map_err(err)?;
                    tally.rows(&OBSERVATIONS, 1);
                }
            }
            Ok(())
        })
        .await
    }

    async fn observations_for_package(&self, tenant: &str, package: &str) -> Result<Vec<Observation>, StoreError> {
        let key = [(tenant.to_string(), package.to_string())];
        self.blocking(move |db| read_packages(db, &key)).await.map(|mut each| each.pop().unwrap_or_default())
    }

    /// One read transaction (and one blocking task) for them all.
    async fn observations_for_packages(
        &self,
        packages: &[(String, String)],
    ) -> Result<Vec<Vec<Observation>>, StoreError> {
        let packages = packages.to_vec();
        self.blocking(move |db| read_packages(db, &packages)).await
    }

    /// A scan of the tenant's observation keys (`tenant \0 package \0 id`): no value decoded.
    async fn tenant_packages(&self, tenant: &str) -> Result<Vec<String>, StoreError> {
        let start = format!("{tenant}\u{0}");
        let end = format!("{tenant}\u{1}");
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let t = tx.open_table(OBSERVATIONS).map_err(err)?;
            let mut out: Vec<String> = Vec::new();
            for r in t.range(start.as_bytes()..end.as_bytes()).map_err(err)? {
                let (k, _) = r.map_err(err)?;
                let (_, package) = tenant_and_package(k.value());
                if out.last().map(String::as_bytes) != Some(package) {
                    out.push(key_text(package));
                }
            }
            Ok(out)
        })
        .await
    }
}

/// The stored observations of each (tenant, package) (the range `tenant \0 package \0`),
/// in one read transaction.
fn read_packages(db: &redb::Database, packages: &[(String, String)]) -> Result<Vec<Vec<Observation>>, StoreError> {
    let tx = db.begin_read().map_err(err)?;
    let t = tx.open_table(OBSERVATIONS).map_err(err)?;
    let mut each = Vec::with_capacity(packages.len());
    for (tenant, package) in packages {
        let start = format!("{tenant}\u{0}{package}\u{0}");
        let end = format!("{tenant}\u{0}{package}\u{1}");
        let mut out = Vec::new();
        for r in t.range(start.as_bytes()..end.as_bytes()).map_err(err)? {
            let (k, v) = r.map_err(err)?;
            out.push(read_row(k.value(), v.value())?);
        }
        each.push(out);
    }
    Ok(each)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::Status;
    use crate::stores::contract::sample_observation;

    /// A row's value leaves out its key's strings (the id's text is not in it), is refused
    /// by a reader that does not know [`KEYLESS`], and reads back as the observation; a
    /// value that holds them (written before) reads as it is.
    #[test]
    fn a_row_reads_back_the_observation_its_value_leaves_to_the_key() {
        let mut o = sample_observation("tenant-a", "vendor", "pkg:npm/left@1.0.0", "CVE-2024-1", Status::NotAffected);
        o.id = o.compute_id().unwrap().into();
        let (key, value) = stored_row(&o).unwrap();
        let e = super::super::compressed::decode::<Observation>(&value).unwrap_err();
        assert!(e.to_string().contains("json"), "a reader without KEYLESS refuses the value: {e}");
        let json: serde_json::Value = super::super::compressed::decode(&value[KEYLESS.len()..]).unwrap();
        assert_eq!(
            (json["id"].as_str(), json["tenant"].as_str(), json["package"].as_str()),
            (Some(""), Some(""), Some(""))
        );
        assert_eq!(read_row(key.as_bytes(), &value).unwrap(), o);
        let older = super::super::compressed::encode(super::super::compressed::Kind::Observation, &o).unwrap();
        assert_eq!(read_row(key.as_bytes(), &older).unwrap(), o);
        assert!(value.len() < older.len(), "{} bytes, {} with the key's strings", value.len(), older.len());
    }
}
