//! The DSSE v1 envelope and its Pre-Authentication Encoding (PAE), and the payloads VEX
//! Lens accepts inside it.
//!
//! Spec: <https://github.com/secure-systems-lab/dsse/blob/master/envelope.md> (envelope)
//! and <https://github.com/secure-systems-lab/dsse/blob/master/protocol.md> (PAE).
//!
//! Invariants: parsing accepts standard and URL-safe base64, padded or not, and ignores
//! unknown fields; serialisation writes standard padded base64 and always writes `keyid`
//! (securesystemslib requires it), with fields in the order securesystemslib writes them.
//! Nothing here panics on hostile input.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// `payloadType` of an in-toto Statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// in-toto Statement `_type` values accepted (v1, and the older v0.1).
pub const IN_TOTO_STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
pub const IN_TOTO_STATEMENT_V01: &str = "https://in-toto.io/Statement/v0.1";
/// The OpenVEX predicate type we write.
pub const OPENVEX_PREDICATE_TYPE: &str = "https://openvex.dev/ns/v0.2.0";
/// Predicate types starting with this are accepted as OpenVEX.
pub const OPENVEX_PREDICATE_PREFIX: &str = "https://openvex.dev/ns";

/// A DSSE envelope could not be parsed, or its payload is not one we accept.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DsseError {
    #[error("malformed DSSE envelope: {0}")]
    Malformed(String),
    #[error("invalid base64")]
    Base64,
    #[error("in-toto payload is not a valid Statement: {0}")]
    BadStatement(String),
    #[error("unsupported in-toto predicate type {0:?} (expected OpenVEX)")]
    UnsupportedPredicate(String),
}

/// A DSSE v1 envelope (JSON form, envelope.md): `payload` and each `sig` are base64 on
/// the wire and raw bytes here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The serialized body (the signed bytes, as sent).
    #[serde(with = "b64")]
    pub payload: Vec<u8>,
    /// How to interpret `payload`; part of what is signed.
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    pub signatures: Vec<EnvelopeSignature>,
}

/// One signature of an envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// Optional, unauthenticated hint naming the key; `""` when absent (or `null`).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub keyid: String,
    /// The signature over `PAE(payloadType, payload)`.
    #[serde(with = "b64")]
    pub sig: Vec<u8>,
}

/// `PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, where `LEN` is
/// the byte length as ASCII decimal without leading zeros, `type` is UTF-8 and `SP` is
/// one space (protocol.md, "Signature definition"). Example:
/// `DSSEv1 29 http://example.com/HelloWorld 11 hello world`.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let t = payload_type.as_bytes();
    let mut out = Vec::with_capacity(t.len() + payload.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(t.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(t);
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

impl Envelope {
    /// An envelope with no signatures yet.
    pub fn new(payload_type: impl Into<String>, payload: impl Into<Vec<u8>>) -> Envelope {
        Envelope { payload: payload.into(), payload_type: payload_type.into(), signatures: Vec::new() }
    }

    /// Parses the JSON envelope. `payload`, `payloadType` and `signatures` are required
    /// (an empty `signatures` list is fine); `keyid` is optional; unknown fields are
    /// ignored; any base64 error makes the whole envelope malformed.
    pub fn from_json(bytes: &[u8]) -> Result<Envelope, DsseError> {
        serde_json::from_slice(bytes).map_err(|e| DsseError::Malformed(e.to_string()))
    }

    /// Parses from an already-parsed JSON value.
    pub fn from_value(value: &Value) -> Result<Envelope, DsseError> {
        Envelope::deserialize(value).map_err(|e| DsseError::Malformed(e.to_string()))
    }

    /// Compact JSON: `{"payload":…,"payloadType":…,"signatures":[{"keyid":…,"sig":…}]}`.
    pub fn to_json(&self) -> String {
        // Serialising strings and byte vectors through our own serializers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The bytes every signature signs: `PAE(payloadType, payload)`.
    pub fn pae(&self) -> Vec<u8> {
        pae(&self.payload_type, &self.payload)
    }

    /// Whether a JSON value looks like a DSSE envelope (an object with `payload`,
    /// `payloadType` and `signatures`), for callers sniffing an input.
    pub fn looks_like_envelope(value: &Value) -> bool {
        value.get("payloadType").is_some() && value.get("payload").is_some() && value.get("signatures").is_some()
    }
}

const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);

/// Decodes standard or URL-safe base64 (RFC 4648 §4/§5), padded or not (the DSSE
/// envelope spec allows either alphabet).
pub fn decode_base64(s: &str) -> Result<Vec<u8>, DsseError> {
    STANDARD_LENIENT
        .decode(s.as_bytes())
        .or_else(|_| URL_SAFE_LENIENT.decode(s.as_bytes()))
        .map_err(|_| DsseError::Base64)
}

/// Standard, padded base64 (what securesystemslib and cosign write).
pub fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

mod b64 {
    use super::*;

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode_base64(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        decode_base64(&s).map_err(|_| serde::de::Error::custom("invalid base64"))
    }
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

// ---------------------------------------------------------------------------------------
// Payloads

/// An in-toto subject (ResourceDescriptor); only `name` and `digest` are kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default)]
    pub digest: std::collections::BTreeMap<String, String>,
}

/// The VEX document carried by an envelope.
#[derive(Clone, Debug, PartialEq)]
pub enum VexPayload {
    /// Any `payloadType` other than in-toto: the payload is the VEX document itself
    /// (OpenVEX, CSAF or CycloneDX; the normalisers decide).
    Bare { payload_type: String, document: Vec<u8> },
    /// An in-toto Statement with an OpenVEX predicate; `document` is the predicate.
    InToto { statement_type: String, predicate_type: String, subjects: Vec<Subject>, document: Value },
}

/// Classifies an envelope's payload. `application/vnd.in-toto+json` must be a Statement
/// (`_type` v1 or v0.1) whose `predicateType` starts with `https://openvex.dev/ns` and
/// whose `predicate` is an object; anything else is a bare document.
pub fn vex_payload(env: &Envelope) -> Result<VexPayload, DsseError> {
    if !env.payload_type.eq_ignore_ascii_case(IN_TOTO_PAYLOAD_TYPE) {
        return Ok(VexPayload::Bare { payload_type: env.payload_type.clone(), document: env.payload.clone() });
    }
    let v: Value = serde_json::from_slice(&env.payload).map_err(|e| DsseError::BadStatement(e.to_string()))?;
    let statement_type = v.get("_type").and_then(Value::as_str).unwrap_or_default();
    if statement_type != IN_TOTO_STATEMENT_V1 && statement_type != IN_TOTO_STATEMENT_V01 {
        return Err(DsseError::BadStatement(format!("unsupported _type {statement_type:?}")));
    }
    let predicate_type = v
        .get("predicateType")
        .and_then(Value::as_str)
        .ok_or_else(|| DsseError::BadStatement("missing predicateType".into()))?;
    if !predicate_type.starts_with(OPENVEX_PREDICATE_PREFIX) {
        return Err(DsseError::UnsupportedPredicate(predicate_type.to_string()));
    }
    let subjects: Vec<Subject> = match v.get("subject") {
        None | Some(Value::Null) => Vec::new(),
        Some(s) => serde_json::from_value(s.clone()).map_err(|e| DsseError::BadStatement(format!("subject: {e}")))?,
    };
    let document = match v.get("predicate") {
        Some(p @ Value::Object(_)) => p.clone(),
        _ => return Err(DsseError::BadStatement("predicate is not an object".into())),
    };
    Ok(VexPayload::InToto {
        statement_type: statement_type.to_string(),
        predicate_type: predicate_type.to_string(),
        subjects,
        document,
    })
}

/// An in-toto v1 Statement carrying an OpenVEX document as its predicate
/// (`predicateType` [`OPENVEX_PREDICATE_TYPE`]); sign it with payload type
/// [`IN_TOTO_PAYLOAD_TYPE`].
pub fn openvex_statement(subjects: &[Subject], openvex_document: &Value) -> Vec<u8> {
    let statement = serde_json::json!({
        "_type": IN_TOTO_STATEMENT_V1,
        "subject": subjects,
        "predicateType": OPENVEX_PREDICATE_TYPE,
        "predicate": openvex_document,
    });
    serde_json::to_vec(&statement).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_spec_example() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ");
        // LEN counts bytes, not characters.
        assert_eq!(pae("é", "ü".as_bytes()), "DSSEv1 2 é 2 ü".as_bytes());
    }

    #[test]
    fn parses_both_alphabets_and_ignores_unknown_fields() {
        // 0xfb 0xff encodes as "+/8" (standard) / "-_8" (URL-safe).
        let std_json = r#"{"payload":"+/8=","payloadType":"t","signatures":[{"sig":"+/8","extra":1}],"other":true}"#;
        let url_json = r#"{"payload":"-_8","payloadType":"t","signatures":[{"keyid":null,"sig":"-_8="}]}"#;
        let a = Envelope::from_json(std_json.as_bytes()).unwrap();
        let b = Envelope::from_json(url_json.as_bytes()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.payload, vec![0xfb, 0xff]);
        assert_eq!(a.signatures[0].keyid, "");
        assert_eq!(a.to_json(), r#"{"payload":"+/8=","payloadType":"t","signatures":[{"keyid":"","sig":"+/8="}]}"#);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "[]",
            "{}",
            r#"{"payload":"!!","payloadType":"t","signatures":[]}"#,
            r#"{"payload":"aGk=","payloadType":"t"}"#,
            r#"{"payload":"aGk=","payloadType":"t","signatures":[{"keyid":"k"}]}"#,
            r#"{"payload":"aGk=","payloadType":"t","signatures":[{"sig":"a+_b"}]}"#,
            r#"{"payload":"aGk=","payloadType":7,"signatures":[]}"#,
            r#"{"payload":"aGk=","payload":"aGk=","payloadType":"t","signatures":[]}"#,
        ] {
            assert!(Envelope::from_json(bad.as_bytes()).is_err(), "accepted {bad}");
        }
    }

    #[test]
    fn classifies_payloads() {
        let doc = serde_json::json!({"@context": "https://openvex.dev/ns/v0.2.0", "statements": []});
        let subjects = vec![Subject { name: "pkg".into(), digest: [("sha256".to_string(), "ab".to_string())].into() }];
        let env = Envelope::new(IN_TOTO_PAYLOAD_TYPE, openvex_statement(&subjects, &doc));
        match vex_payload(&env).unwrap() {
            VexPayload::InToto { predicate_type, subjects: s, document, .. } => {
                assert_eq!(predicate_type, OPENVEX_PREDICATE_TYPE);
                assert_eq!(s, subjects);
                assert_eq!(document, doc);
            }
            other => panic!("{other:?}"),
        }
        let bare = Envelope::new("application/vnd.openvex+json", serde_json::to_vec(&doc).unwrap());
        assert!(matches!(vex_payload(&bare).unwrap(), VexPayload::Bare { .. }));
        let slsa = Envelope::new(
            IN_TOTO_PAYLOAD_TYPE,
            br#"{"_type":"https://in-toto.io/Statement/v1","predicateType":"https://slsa.dev/provenance/v1","predicate":{}}"#.to_vec(),
        );
        assert!(matches!(vex_payload(&slsa), Err(DsseError::UnsupportedPredicate(_))));
        let garbage = Envelope::new(IN_TOTO_PAYLOAD_TYPE, b"not json".to_vec());
        assert!(matches!(vex_payload(&garbage), Err(DsseError::BadStatement(_))));
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300), s in ".{0,100}") {
            let _ = Envelope::from_json(&bytes);
            let _ = decode_base64(&s);
            let env = Envelope::new(IN_TOTO_PAYLOAD_TYPE, bytes);
            let _ = vex_payload(&env);
        }

        #[test]
        fn json_round_trip(payload in proptest::collection::vec(proptest::num::u8::ANY, 0..100), t in ".{0,20}", sig in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            let mut env = Envelope::new(t, payload);
            env.signatures.push(EnvelopeSignature { keyid: "k".into(), sig });
            proptest::prop_assert_eq!(Envelope::from_json(env.to_json().as_bytes()).unwrap(), env);
        }
    }
}
