//! The consensus properties hold with OpenPGP-signed documents (issue 23): documents
//! signed by a directory key, by a key no issuer has, over other bytes, with truncated
//! armor, or not at all, judged by the ingest step's own function
//! (`actors::verifier::verify_openpgp`, over the exact bytes) and normalised as ingest does,
//! give byte-identical records in any order, and applied one by one (as a package actor
//! does) the records the batch gives.

use std::collections::BTreeMap;
use std::sync::OnceLock;

#[path = "../integration-tests/common/openpgp.rs"]
mod openpgp;

use openpgp::{certificate, keygen, sign, T0};
use pgp::composed::SignedSecretKey;
use proptest::prelude::*;
use vex_lens::actors::verifier::verify_openpgp;
use vex_lens::crypto::KeyDirectory;
use vex_lens::domain::consensus::{batch, ConsensusRecord, PackageState, PairKey};
use vex_lens::domain::model::{IngestContext, Observation, SignatureStatus};
use vex_lens::domain::normalise::normalise_bytes;
use vex_lens::domain::trust::{IssuerDirectory, Knobs, Mode, Policy};

struct Fixture {
    acme: SignedSecretKey,
    stranger: SignedSecretKey,
    keys: KeyDirectory,
    directory: IssuerDirectory,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let acme = keygen("ACME PSIRT <psirt@acme.example>");
        let stranger = keygen("Someone <x@stranger.example>");
        let cert = certificate(&acme);
        let text = format!(
            "[[issuers]]\nid = \"acme\"\ntier = \"trusted\"\naliases = [\"ACME PSIRT\"]\n\
             keys = [{{ type = \"openpgp\", certificate = \"\"\"\n{cert}\"\"\" }}]\n\n\
             [[issuers]]\nid = \"other\"\ntier = \"known\"\naliases = [\"Other Co\"]\n"
        );
        let directory = IssuerDirectory::from_str("issuers.toml", &text).unwrap();
        let keys = KeyDirectory::from_directory(&directory).unwrap();
        Fixture { acme, stranger, keys, directory }
    })
}

/// How a document travels.
#[derive(Clone, Copy, Debug)]
enum Signed {
    No,
    ByDirectoryKey,
    ByUnknownKey,
    OverOtherBytes,
    TruncatedArmor,
}

#[derive(Clone, Debug)]
struct Doc {
    id: usize,
    version: u32,
    day: u32,
    author: usize,
    statements: Vec<(usize, usize, usize)>,
    signed: Signed,
}

const STATUSES: [&str; 4] = ["not_affected", "affected", "fixed", "under_investigation"];
const VERSIONS: [&str; 3] = ["1.0.0", "1.1.0", "2.0.0"];
const CVES: [&str; 2] = ["CVE-2024-1", "CVE-2024-2"];

fn arb_doc() -> impl Strategy<Value = Doc> {
    (
        0..3usize,
        1..4u32,
        0..30u32,
        0..3usize,
        prop::collection::vec((0..3usize, 0..2usize, 0..4usize), 1..4),
        prop_oneof![
            Just(Signed::No),
            Just(Signed::ByDirectoryKey),
            Just(Signed::ByDirectoryKey),
            Just(Signed::ByUnknownKey),
            Just(Signed::OverOtherBytes),
            Just(Signed::TruncatedArmor),
        ],
    )
        .prop_map(|(id, version, day, author, statements, signed)| Doc {
            id,
            version,
            day,
            author,
            statements,
            signed,
        })
}

fn openvex(d: &Doc) -> Vec<u8> {
    let ts = |day: u32| format!("2024-02-{:02}T00:00:00Z", day % 28 + 1);
    let statements: Vec<serde_json::Value> = d
        .statements
        .iter()
        .map(|&(v, c, s)| {
            let mut st = serde_json::json!({
                "vulnerability": {"name": CVES[c]},
                "products": [{"@id": format!("pkg:npm/widget@{}", VERSIONS[v])}],
                "status": STATUSES[s],
            });
            match STATUSES[s] {
                "not_affected" => st["justification"] = "vulnerable_code_not_present".into(),
                "affected" => st["action_statement"] = "upgrade".into(),
                _ => {}
            }
            st
        })
        .collect();
    let author = ["ACME PSIRT", "Other Co", "Unlisted"][d.author];
    let doc = serde_json::json!({
        "@context": "https://openvex.dev/ns/v0.2.0",
        "@id": format!("https://vex.example/doc-{}", d.id),
        "author": author,
        "timestamp": ts(d.day),
        "version": d.version,
        "statements": statements,
    });
    serde_json::to_vec(&doc).unwrap()
}

/// The observations of one document as ingest makes them, and the signature status ingest
/// gave them.
fn ingest(d: &Doc) -> (Vec<Observation>, Option<SignatureStatus>) {
    let f = fixture();
    let bytes = openvex(d);
    let at = T0 + 86_400 * (d.day + 1);
    let asc = match d.signed {
        Signed::No => None,
        Signed::ByDirectoryKey => Some(sign(&f.acme, &bytes, at)),
        Signed::ByUnknownKey => Some(sign(&f.stranger, &bytes, at)),
        Signed::OverOtherBytes => Some(sign(&f.acme, b"other bytes", at)),
        Signed::TruncatedArmor => {
            let s = sign(&f.acme, &bytes, at);
            Some(s[..s.len() / 2].to_vec())
        }
    };
    let mut ctx = IngestContext { tenant: Some("default".into()), ..Default::default() };
    let mut status = None;
    if let Some(asc) = asc {
        let (signature, signed_issuer, _) = verify_openpgp(&bytes, &asc, &f.keys);
        status = Some(signature.status);
        ctx.signature = signature;
        ctx.signed_issuer = signed_issuer;
    }
    let doc = normalise_bytes(&format!("doc-{}-v{}.json", d.id, d.version), &bytes, &ctx, 1 << 20).unwrap();
    (doc.observations, status)
}

fn canonical(records: &[ConsensusRecord]) -> Vec<String> {
    records.iter().map(|r| r.to_canonical_json().unwrap()).collect()
}

fn policy() -> Policy {
    Policy::new(Mode::WeightedVote, fixture().directory.clone(), Knobs::default())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn signed_documents_keep_order_independence_and_incremental_equals_batch(
        docs in prop::collection::vec(arb_doc(), 1..8),
        seed in any::<u64>(),
    ) {
        let p = policy();
        let mut observations = Vec::new();
        for d in &docs {
            let (obs, status) = ingest(d);
            // What the signature decided is what ingest must decide (so this test can fail).
            let expected = match d.signed {
                Signed::No => None,
                Signed::ByDirectoryKey => Some(SignatureStatus::Verified),
                Signed::ByUnknownKey => Some(SignatureStatus::Unsigned),
                Signed::OverOtherBytes | Signed::TruncatedArmor => Some(SignatureStatus::Failed),
            };
            prop_assert_eq!(status, expected, "{:?}", d.signed);
            for o in &obs {
                if matches!(d.signed, Signed::ByDirectoryKey) {
                    prop_assert_eq!(o.issuer.as_deref(), Some("acme"), "a verified signature names the issuer");
                }
            }
            observations.extend(obs);
        }

        let (a, _) = batch(observations.clone(), &p, true);
        let mut shuffled = observations.clone();
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let (b, _) = batch(shuffled.clone(), &p, true);
        prop_assert_eq!(canonical(&a), canonical(&b));

        // One package (pkg:npm/widget): one state, applied one by one in the shuffled order.
        let mut state = PackageState::new();
        let mut records: BTreeMap<PairKey, ConsensusRecord> = BTreeMap::new();
        for o in shuffled {
            for pair in state.apply(o).unwrap() {
                if let Some(r) = state.evaluate(&pair, &p, false).unwrap() {
                    records.insert(pair, r);
                }
            }
        }
        let (batch_records, _) = batch(observations, &p, false);
        let mut inc: Vec<ConsensusRecord> = records.into_values().collect();
        inc.sort_by(|a, b| a.artifact.cmp(&b.artifact).then(a.vulnerability.cmp(&b.vulnerability)));
        prop_assert_eq!(canonical(&inc), canonical(&batch_records));
    }
}
