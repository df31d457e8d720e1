//! The key parsers (PEM, SPKI, PKCS#8, SEC1, hex, securesystemslib JSON): any input gives
//! a key or an error, never a panic; a loaded public key re-encodes to the same key.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vex_lens::crypto::{PublicKey, SigningKey};

fuzz_target!(|data: &[u8]| {
    let _ = PublicKey::from_spki_der(data);
    let _ = SigningKey::from_pkcs8_der(data);
    let _ = SigningKey::from_sec1_der(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(k) = PublicKey::parse(text) {
            let again = PublicKey::from_spki_der(k.spki_der()).expect("own SPKI loads");
            assert_eq!(again.raw_bytes(), k.raw_bytes());
            let _ = k.verify(b"message", &[0u8; 64]);
        }
        if let Ok(sk) = SigningKey::from_pem(text) {
            let sig = sk.sign(b"message").expect("sign");
            assert!(sk.public_key().verify(b"message", &sig));
        }
    }
});
