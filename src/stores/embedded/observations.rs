//! The observations role on redb (`vex_observations`, keyed `tenant \0 package \0 id`,
//! so a package's observations and a tenant's packages are key-range scans; values
//! compressed, `compressed`).

use super::{err, key_text, EmbeddedStore, OBSERVATIONS};
use crate::domain::model::Observation;
use crate::ports::{ObservationStore, StoreError};
use redb::ReadableTable;

/// The `vex_observations` key of an observation.
pub(super) fn obs_key(tenant: &str, package: &str, id: &str) -> String {
    format!("{tenant}\u{0}{package}\u{0}{id}")
}

/// The tenant and package an [`obs_key`] names.
pub(super) fn tenant_and_package(key: &[u8]) -> (&[u8], &[u8]) {
    let mut parts = key.split(|b| *b == 0);
    (parts.next().unwrap_or_default(), parts.next().unwrap_or_default())
}

/// An observation's `vex_observations` row: its key and its compressed value.
pub(super) fn stored_row(o: &Observation) -> Result<(String, Vec<u8>), StoreError> {
    Ok((obs_key(&o.tenant, &o.package, &o.id), super::compressed::encode(super::compressed::Kind::Observation, o)?))
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
            let (_, v) = r.map_err(err)?;
            out.push(super::compressed::decode(v.value())?);
        }
        each.push(out);
    }
    Ok(each)
}
