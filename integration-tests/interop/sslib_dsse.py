#!/usr/bin/env python3
"""securesystemslib side of the DSSE interop test (tests/dsse_interop.rs).

Subcommands (all print one JSON object on stdout; exit 0 on success, 1 on a
verification failure, 2 on a usage/setup error):

  verify --envelope ENV.json --public-key KEY
      Verify a DSSE envelope with securesystemslib's Envelope.verify(keys, 1).
      KEY is a SubjectPublicKeyInfo PEM file or a securesystemslib key-dict JSON file.
      Prints {"ok": true, "keyids": [...], "key_keyid": "..."}.

  sign --alg ed25519|ecdsa --payload-type T --payload FILE --out-envelope ENV.json
       --out-key KEY.json
      Generate a key with CryptoSigner.generate_*, sign, write the envelope and the
      public key dict ({"keyid", "keytype", "scheme", "keyval"}).

  sign-with --private-key KEY.pem --payload-type T --payload FILE --out-envelope ENV.json
      Load a PKCS#8 PEM private key (e.g. written by `vex-lens keygen`) with
      pyca/cryptography and sign with it. Prints {"keyid": "..."} (securesystemslib's id).
"""

import argparse
import hashlib
import json
import sys

from cryptography.hazmat.primitives.serialization import (
    load_pem_private_key,
    load_pem_public_key,
)
from securesystemslib import __version__ as SSLIB_VERSION
from securesystemslib.dsse import Envelope
from securesystemslib.formats import encode_canonical
from securesystemslib.signer import CryptoSigner, SSlibKey


def load_public_key(path):
    """A PEM SubjectPublicKeyInfo (keyid computed by SSlibKey.from_crypto), or a key dict
    (keyid taken from the dict if present, else securesystemslib's default keyid:
    sha256 of encode_canonical({"keytype", "scheme", "keyval"}))."""
    with open(path, "rb") as f:
        data = f.read()
    if data.lstrip().startswith(b"{"):
        d = json.loads(data)
        keyid = d.pop("keyid", None)
        if keyid is None:
            canonical = encode_canonical(
                {"keytype": d["keytype"], "scheme": d["scheme"], "keyval": d["keyval"]}
            )
            keyid = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
        return SSlibKey.from_dict(keyid, d)
    return SSlibKey.from_crypto(load_pem_public_key(data))


def cmd_verify(a):
    key = load_public_key(a.public_key)
    with open(a.envelope, "rb") as f:
        env = Envelope.from_dict(json.load(f))
    try:
        accepted = env.verify([key], 1)
    except Exception as e:  # VerificationError, ValueError, ...
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}", "key_keyid": key.keyid}))
        return 1
    print(json.dumps({"ok": True, "keyids": sorted(accepted), "key_keyid": key.keyid}))
    return 0


def sign_and_write(signer, a):
    with open(a.payload, "rb") as f:
        payload = f.read()
    env = Envelope(payload, a.payload_type, {})
    env.sign(signer)
    with open(a.out_envelope, "w") as f:
        json.dump(env.to_dict(), f)


def cmd_sign(a):
    if a.alg == "ed25519":
        signer = CryptoSigner.generate_ed25519()
    elif a.alg == "ecdsa":
        signer = CryptoSigner.generate_ecdsa()
    else:
        print(json.dumps({"error": f"unknown alg {a.alg}"}))
        return 2
    sign_and_write(signer, a)
    key = signer.public_key
    with open(a.out_key, "w") as f:
        json.dump({"keyid": key.keyid, **key.to_dict()}, f)
    print(json.dumps({"keyid": key.keyid}))
    return 0


def cmd_sign_with(a):
    with open(a.private_key, "rb") as f:
        priv = load_pem_private_key(f.read(), None)
    signer = CryptoSigner(priv)
    sign_and_write(signer, a)
    print(json.dumps({"keyid": signer.public_key.keyid}))
    return 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--version", action="store_true")
    sub = p.add_subparsers(dest="cmd")
    v = sub.add_parser("verify")
    v.add_argument("--envelope", required=True)
    v.add_argument("--public-key", required=True)
    for name in ("sign", "sign-with"):
        s = sub.add_parser(name)
        s.add_argument("--payload-type", required=True)
        s.add_argument("--payload", required=True)
        s.add_argument("--out-envelope", required=True)
        if name == "sign":
            s.add_argument("--alg", required=True)
            s.add_argument("--out-key", required=True)
        else:
            s.add_argument("--private-key", required=True)
    a = p.parse_args()
    if a.version:
        print(json.dumps({"securesystemslib": SSLIB_VERSION}))
        return 0
    if a.cmd == "verify":
        return cmd_verify(a)
    if a.cmd == "sign":
        return cmd_sign(a)
    if a.cmd == "sign-with":
        return cmd_sign_with(a)
    p.print_usage(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
