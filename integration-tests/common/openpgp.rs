//! OpenPGP keys and detached signatures made by a test with rpgp (Ed25519), for tests
//! that serve or place `.asc` files beside documents.
#![allow(dead_code)]

use pgp::composed::{
    ArmorOptions, DetachedSignature, KeyType, SecretKeyParamsBuilder, SignedSecretKey, SubpacketConfig,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{Subpacket, SubpacketData};
use pgp::types::{KeyDetails, Password, Timestamp};

/// 2024-01-01T00:00:00Z: every key made here is created then.
pub const T0: u32 = 1_704_067_200;

/// A new Ed25519 signing key with user id `uid`, created at [`T0`].
pub fn keygen(uid: &str) -> SignedSecretKey {
    let mut b = SecretKeyParamsBuilder::default();
    b.key_type(KeyType::Ed25519Legacy)
        .can_certify(true)
        .can_sign(true)
        .primary_user_id(uid.into())
        .created_at(Timestamp::from_secs(T0));
    b.build().unwrap().generate(rand::thread_rng()).unwrap()
}

/// The armored public certificate of `key`.
pub fn certificate(key: &SignedSecretKey) -> String {
    key.to_public_key().to_armored_string(ArmorOptions::default()).unwrap()
}

/// An armored detached signature by `key` over `payload`, created at `at` (seconds).
pub fn sign(key: &SignedSecretKey, payload: &[u8], at: u32) -> Vec<u8> {
    let k = &key.primary_key;
    let hashed = vec![
        Subpacket::regular(SubpacketData::SignatureCreationTime(Timestamp::from_secs(at))).unwrap(),
        Subpacket::regular(SubpacketData::IssuerFingerprint(k.fingerprint())).unwrap(),
    ];
    DetachedSignature::sign_binary_data_with_subpackets(
        rand::thread_rng(),
        k,
        &Password::empty(),
        HashAlgorithm::Sha256,
        payload,
        SubpacketConfig::UserDefined { hashed, unhashed: vec![] },
    )
    .unwrap()
    .to_armored_string(ArmorOptions::default())
    .unwrap()
    .into_bytes()
}
