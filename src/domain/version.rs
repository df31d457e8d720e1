//! Record versions: which of two evaluations of a pair is newer, so a store keeps the
//! newest write of a pair whatever order the writes arrive in.
//!
//! Invariant: a package's state only grows, so every later evaluation of a pair by one
//! actor has an equal or higher [`RecordVersion`]; a store replaces a pair's record only
//! with an equal or higher version (`ports::RecordStore::put_records`).

use crate::domain::consensus::{ConsensusRecord, PairExtent};
use serde::{Deserialize, Serialize};

/// The version of a pair's record, compared field by field in this order: the tenant's
/// policy epoch it was evaluated under (raised by every trust or policy change, 0 = the
/// seed of `config/issuers.toml`), then the highest position in the observation stream
/// among the observations that apply to the pair (`provenance.sequence`: the
/// `vex.observations` offset in Kafka mode, the arrival sequence in embedded mode; -1
/// when none has one), then how many observations apply to it.
///
/// A state only grows, so within one actor every later evaluation of a pair has an equal
/// or higher version; the count breaks the tie between two states with the same highest
/// offset where one lacks an earlier observation (observations of one package may be
/// applied slightly out of order). A recompute after a trust change raises the epoch and
/// wins without a new offset. The stores replace a record only with an equal or higher
/// version (equal: the same observations, so the same record unless the policy changed
/// without an epoch: the later write wins; identical: nothing changes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RecordVersion {
    pub epoch: u64,
    pub offset: i64,
    pub observations: u64,
}

impl Default for RecordVersion {
    fn default() -> Self {
        RecordVersion::LOWEST
    }
}

impl RecordVersion {
    /// Below every version a record can have (a record stored before versions existed).
    pub const LOWEST: RecordVersion = RecordVersion { epoch: 0, offset: i64::MIN, observations: 0 };

    /// The version of a record evaluated under policy epoch `epoch` from a state in which
    /// its pair has `extent` ([`crate::domain::consensus::PackageState::pair_extent`]).
    pub fn from_extent(epoch: u64, (offset, observations): PairExtent) -> RecordVersion {
        RecordVersion { epoch, offset, observations }
    }
}

/// A record to write with its version.
#[derive(Clone, Debug, PartialEq)]
pub struct VersionedRecord {
    pub record: ConsensusRecord,
    pub version: RecordVersion,
}

impl VersionedRecord {
    pub fn new(record: ConsensusRecord, version: RecordVersion) -> Self {
        VersionedRecord { record, version }
    }

    /// A record at the lowest version (tools and tests that write one version at a time:
    /// equal versions replace each other).
    pub fn unversioned(record: ConsensusRecord) -> Self {
        VersionedRecord { record, version: RecordVersion::default() }
    }
}
