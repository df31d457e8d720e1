//! The DSSE envelope parser and verifier: any bytes give an envelope or an error, and
//! verification of whatever parses returns an outcome, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use vex_lens::crypto::{generate_keypair, verify_envelope_json, vex_payload, Envelope, KeyAlg, PublicKey};

fn keys() -> &'static [PublicKey] {
    static KEYS: OnceLock<Vec<PublicKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        [KeyAlg::Ed25519, KeyAlg::EcdsaP256].iter().map(|a| generate_keypair(*a).expect("keygen").1).collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let (env, _outcome) = verify_envelope_json(data, keys(), 1);
    if let Some(env) = env {
        let _ = vex_payload(&env);
        let _ = env.pae();
        // What parses re-serialises and parses to the same envelope.
        let again = Envelope::from_json(env.to_json().as_bytes()).expect("re-parse");
        assert_eq!(again.to_json(), env.to_json());
    }
});
