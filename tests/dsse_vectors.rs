//! DSSE against the shared test vectors in `../shared/corpus/dsse/`:
//! * `ecdsa-p256-spec-vector.json` — the DSSE protocol.md example (ECDSA P-256, raw r||s);
//! * `ed25519-securesystemslib-vector.json` — produced with securesystemslib 1.6.0.

use std::path::PathBuf;

use serde_json::Value;
use vex_lens::crypto::{
    pae, sign_envelope, verify_envelope, verify_envelope_json, Envelope, FailureReason, PublicKey, SignatureResult,
    SigningKey, UnsignedReason, Verdict,
};

fn vector(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/dsse").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_else(|| panic!("missing {pointer}"))
}

fn ecdsa() -> (Value, Envelope, PublicKey) {
    let v = vector("ecdsa-p256-spec-vector.json");
    let env = Envelope::from_value(&v["envelope"]).unwrap();
    let key = PublicKey::from_hex(str_at(&v, "/key/public_uncompressed_sec1_hex")).unwrap();
    (v, env, key)
}

fn ed25519() -> (Value, SigningKey) {
    let v = vector("ed25519-securesystemslib-vector.json");
    let sk = SigningKey::from_ed25519_seed(&hex::decode(str_at(&v, "/key/seed_hex")).unwrap()).unwrap();
    (v, sk)
}

fn reason(v: &Verdict) -> Option<&'static str> {
    match v {
        Verdict::Verified { .. } => None,
        Verdict::Unsigned { reason } => Some(reason.as_str()),
        Verdict::Failed { reason } => Some(reason.as_str()),
    }
}

#[test]
fn ecdsa_spec_vector_pae_and_key() {
    let (v, env, key) = ecdsa();
    assert_eq!(env.payload, str_at(&v, "/payload_utf8").as_bytes());
    assert_eq!(env.payload_type, str_at(&v, "/payloadType"));
    assert_eq!(env.pae(), str_at(&v, "/pae_utf8").as_bytes());
    assert_eq!(pae(&env.payload_type, &env.payload), str_at(&v, "/pae_utf8").as_bytes());
    // x||y of the vector = the uncompressed point
    let xy = format!("04{}{}", str_at(&v, "/key/x_hex"), str_at(&v, "/key/y_hex"));
    assert_eq!(hex::encode(key.raw_bytes()), xy);
    // the raw signature is 64 bytes (r||s, not DER)
    assert_eq!(env.signatures[0].sig.len(), 64);
    assert_eq!(env.signatures[0].keyid, "");
}

#[test]
fn ecdsa_spec_vector_verifies_raw_rs() {
    let (_, env, key) = ecdsa();
    let out = verify_envelope(&env, std::slice::from_ref(&key), 1);
    assert_eq!(out.verdict, Verdict::Verified { keyids: vec![key.keyid().to_string()] });
    assert_eq!(out.status(), "verified");
    // via every key form
    for form in [key.to_pem(), serde_json::to_string(&key.to_sslib_dict()).unwrap()] {
        let k = PublicKey::parse(&form).unwrap();
        assert!(verify_envelope(&env, &[k], 1).is_verified(), "{form}");
    }
    // and from the JSON text of the envelope
    let (_, out) = verify_envelope_json(serde_json::to_string(&ecdsa().0["envelope"]).unwrap().as_bytes(), &[key], 1);
    assert!(out.is_verified());
}

#[test]
fn ecdsa_spec_vector_in_der_form_verifies() {
    let (_, mut env, key) = ecdsa();
    env.signatures[0].sig = raw_to_der(&env.signatures[0].sig);
    assert!(env.signatures[0].sig.len() > 64 && env.signatures[0].sig[0] == 0x30);
    assert!(verify_envelope(&env, &[key], 1).is_verified());
}

#[test]
fn ecdsa_spec_vector_key_signs_der_that_verifies() {
    let (v, env, key) = ecdsa();
    let sk = SigningKey::from_p256_scalar(
        &hex::decode(str_at(&v, "/key/d_hex")).unwrap(),
        &hex::decode(str_at(&v, "/key/public_uncompressed_sec1_hex")).unwrap(),
    )
    .unwrap();
    assert_eq!(sk.public_key(), &key);
    let ours = sign_envelope(&env.payload_type, &env.payload, &sk).unwrap();
    assert_eq!(ours.signatures[0].keyid, key.keyid());
    assert_eq!(ours.signatures[0].sig[0], 0x30, "ECDSA signatures are emitted as DER");
    assert!(verify_envelope(&ours, &[key], 1).is_verified());
}

#[test]
fn ed25519_vector_reproduced_byte_for_byte() {
    let (v, sk) = ed25519();
    assert_eq!(hex::encode(sk.public_key().raw_bytes()), str_at(&v, "/key/public_hex"));
    assert_eq!(sk.keyid(), str_at(&v, "/key/securesystemslib_keyid"));
    let env = sign_envelope(str_at(&v, "/payloadType"), str_at(&v, "/payload_utf8").as_bytes(), &sk).unwrap();
    let sig_b64 = vex_lens::crypto::encode_base64(&env.signatures[0].sig);
    assert_eq!(sig_b64, str_at(&v, "/sig_b64"));
    // the whole envelope, as securesystemslib's Envelope.to_dict() serialises it
    let expected = format!(
        r#"{{"payload":"{}","payloadType":"{}","signatures":[{{"keyid":"{}","sig":"{}"}}]}}"#,
        vex_lens::crypto::encode_base64(str_at(&v, "/payload_utf8").as_bytes()),
        str_at(&v, "/payloadType"),
        str_at(&v, "/key/securesystemslib_keyid"),
        str_at(&v, "/sig_b64"),
    );
    assert_eq!(env.to_json(), expected);
    // and it verifies with the public key in each form
    for form in [
        str_at(&v, "/key/public_hex").to_string(),
        sk.public_key().to_pem(),
        serde_json::to_string(&sk.public_key().to_sslib_dict()).unwrap(),
    ] {
        let k = PublicKey::parse(&form).unwrap();
        assert_eq!(k.keyid(), str_at(&v, "/key/securesystemslib_keyid"));
        assert!(verify_envelope(&env, &[k], 1).is_verified());
    }
}

#[test]
fn tampered_payload_fails() {
    let (_, mut env, key) = ecdsa();
    env.payload = b"hello world!".to_vec();
    // keyless signature: no trusted key verifies it
    assert_eq!(reason(&verify_envelope(&env, std::slice::from_ref(&key), 1).verdict), Some("wrong_key"));
    // with the keyid named: bad_signature
    env.signatures[0].keyid = key.keyid().to_string();
    let out = verify_envelope(&env, &[key], 1);
    assert_eq!(out.verdict, Verdict::Failed { reason: FailureReason::BadSignature });

    let (v, sk) = ed25519();
    let mut env = sign_envelope(str_at(&v, "/payloadType"), b"{\"a\":1}", &sk).unwrap();
    env.payload = b"{\"a\":2}".to_vec();
    let out = verify_envelope(&env, &[sk.public_key().clone()], 1);
    assert_eq!(out.verdict, Verdict::Failed { reason: FailureReason::BadSignature });
    assert_eq!(out.signatures[0].result, SignatureResult::BadSignature);
    // tampered payloadType too
    let mut env = sign_envelope(str_at(&v, "/payloadType"), b"{\"a\":1}", &sk).unwrap();
    env.payload_type = "application/json".into();
    assert_eq!(reason(&verify_envelope(&env, &[sk.public_key().clone()], 1).verdict), Some("bad_signature"));
}

#[test]
fn wrong_key_fails() {
    let (_, env, _) = ecdsa();
    let (_, sk) = ed25519();
    let other_p256 =
        PublicKey::parse(&vex_lens::crypto::generate_keypair(vex_lens::crypto::KeyAlg::EcdsaP256).unwrap().1.to_pem())
            .unwrap();
    for wrong in [other_p256, sk.public_key().clone()] {
        let out = verify_envelope(&env, &[wrong], 1);
        assert_eq!(out.verdict, Verdict::Failed { reason: FailureReason::WrongKey });
        assert_eq!(out.status(), "failed");
        assert_eq!(out.reason(), Some("wrong_key"));
    }
}

#[test]
fn truncated_signature_fails() {
    let (_, env, key) = ecdsa();
    for n in [0, 1, 32, 63] {
        let mut t = env.clone();
        t.signatures[0].sig.truncate(n);
        assert_eq!(reason(&verify_envelope(&t, std::slice::from_ref(&key), 1).verdict), Some("wrong_key"));
        t.signatures[0].keyid = key.keyid().to_string();
        assert_eq!(reason(&verify_envelope(&t, std::slice::from_ref(&key), 1).verdict), Some("bad_signature"));
    }
    let (v, sk) = ed25519();
    let env = sign_envelope(str_at(&v, "/payloadType"), b"{\"a\":1}", &sk).unwrap();
    for n in [0, 1, 32, 63] {
        let mut t = env.clone();
        t.signatures[0].sig.truncate(n);
        assert_eq!(reason(&verify_envelope(&t, &[sk.public_key().clone()], 1).verdict), Some("bad_signature"));
    }
    // a truncated base64 text is a malformed envelope, not a panic
    let json = env.to_json();
    let cut =
        json.replace(&vex_lens::crypto::encode_base64(&env.signatures[0].sig), "9JQymjJqlnmj/ErsvMYOuLDVoLANiO+d=");
    let (_, out) = verify_envelope_json(cut.as_bytes(), &[sk.public_key().clone()], 1);
    assert_eq!(out.reason(), Some("malformed_envelope"));
}

#[test]
fn unknown_key_is_unsigned() {
    let (v, sk) = ed25519();
    let env = sign_envelope(str_at(&v, "/payloadType"), b"{\"a\":1}", &sk).unwrap();
    let (_, _, p256) = ecdsa();
    let out = verify_envelope(&env, &[p256], 1);
    assert_eq!(out.verdict, Verdict::Unsigned { reason: UnsignedReason::UnknownKey });
    assert_eq!(out.status(), "unsigned");
    assert_eq!(out.reason(), Some("unknown_key"));
    assert_eq!(out.keyid(), Some(sk.keyid()));
    // and with an empty trust store
    assert_eq!(out.verdict, verify_envelope(&env, &[], 1).verdict);
}

#[test]
fn url_safe_unpadded_envelope_verifies() {
    let (v, _, key) = ecdsa();
    let mut e = v["envelope"].clone();
    let std_sig = str_at(&v, "/envelope/signatures/0/sig").to_string();
    let url = std_sig.replace('+', "-").replace('/', "_").trim_end_matches('=').to_string();
    e["signatures"][0]["sig"] = Value::String(url);
    e["payload"] = Value::String("aGVsbG8gd29ybGQ".into());
    e["unknown"] = Value::Bool(true);
    let (_, out) = verify_envelope_json(serde_json::to_string(&e).unwrap().as_bytes(), &[key], 1);
    assert!(out.is_verified());
}

/// Encodes a raw 64-byte `r||s` ECDSA signature as ASN.1 DER `SEQUENCE { INTEGER r, INTEGER s }`.
fn raw_to_der(raw: &[u8]) -> Vec<u8> {
    fn int(x: &[u8]) -> Vec<u8> {
        let mut x: Vec<u8> = x.iter().copied().skip_while(|&b| b == 0).collect();
        if x.is_empty() || x[0] & 0x80 != 0 {
            x.insert(0, 0);
        }
        let mut out = vec![0x02, x.len() as u8];
        out.extend(x);
        out
    }
    let body = [int(&raw[..32]), int(&raw[32..])].concat();
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}
