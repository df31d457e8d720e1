#!/usr/bin/env python3
"""Independent recomputation of VEX Lens consensus digests (tests/jcs_interop.rs).

Reads JSON records, one per line (any formatting VEX Lens chose is irrelevant: each line
is parsed into Python objects first), drops `consensus_digest` and what explain adds
(`explain`, each statement's joined `observation`: the stored record remains), and prints
for each record one line: `sha256:<hex of SHA-256 of the RFC 8785 bytes> <base64 of the
bytes>`. `--version` prints the rfc8785 version (readiness check).
"""
import base64
import hashlib
import json
import sys

import rfc8785


def main() -> int:
    if sys.argv[1:] == ["--version"]:
        from importlib.metadata import version

        print(version("rfc8785"))
        return 0
    for line in sys.stdin:
        if not line.strip():
            continue
        record = json.loads(line)
        record.pop("consensus_digest", None)
        record.pop("explain", None)
        for statement in record.get("statements", []):
            statement.pop("observation", None)
        data = rfc8785.dumps(record)
        print("sha256:" + hashlib.sha256(data).hexdigest(), base64.b64encode(data).decode("ascii"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
