#!/usr/bin/env python3
"""Trains the embedded store's zstd dictionaries (src/stores/embedded/dictionaries/).

The store keeps each history entry and each observation as a zstd frame of its JSON
(src/stores/embedded/compressed.rs). A value is one record or one observation, 0.3-3 KB:
too small for zstd to learn the JSON's field names, enum values and id prefixes from the
value alone. A dictionary of what such values share gives it that up front.

Samples are what the store compresses: every record `vex-lens consensus` makes of each
corpus folder, wrapped as a history entry (`{"changed_at_ms", "record", "version"}`), and
every observation `vex-lens normalise` makes of it. Each folder gives at most --per-folder
samples of each kind (every k-th line), so no one feed's names dominate: the dictionary
is about our formats, and a feed it never saw still gains (docs/performance.md has the
figures, with a dictionary trained without the feed it is measured on).

A dictionary, once shipped, never changes: frames name their dictionary's id, and a
stored value must stay readable. A new dictionary gets a new id (--records-id,
--observations-id) and the store keeps the old ones for reading.

Usage: scripts/zstd_dictionaries.py --bin target/release/vex-lens --corpus ../shared/corpus \
         --out src/stores/embedded/dictionaries --records-id N --observations-id M
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile


def folders(corpus):
    """The corpus folders holding *.json documents, in name order."""
    out = []
    for name in sorted(os.listdir(corpus)):
        d = os.path.join(corpus, name)
        if os.path.isdir(d) and any(f.endswith(".json") for f in os.listdir(d)):
            out.append(d)
    return out


def lines(binary, command, folder):
    r = subprocess.run([binary, command, folder], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False)
    return [l for l in r.stdout.splitlines() if l.strip()]


def every_kth(items, limit):
    if len(items) <= limit:
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def history_entry(line, i):
    """A record as the store's history keeps it (`StoredRecord`: time, record, version)."""
    record = json.loads(line)
    entry = {
        "changed_at_ms": 1765000000000 + i,
        "record": record,
        "version": {"epoch": 0, "offset": -1, "observations": len(record.get("statements", []))},
    }
    return json.dumps(entry, separators=(",", ":")).encode()


def train(samples, out, dict_id, size):
    with tempfile.TemporaryDirectory() as d:
        for i, s in enumerate(samples):
            with open(os.path.join(d, f"{i:07}"), "wb") as f:
                f.write(s)
        subprocess.run(["zstd", "--train", "-q", "-f", "-r", d, f"--maxdict={size}", f"--dictID={dict_id}", "-o", out],
                       check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--records-id", type=int, required=True)
    ap.add_argument("--observations-id", type=int, required=True)
    ap.add_argument("--per-folder", type=int, default=4000)
    ap.add_argument("--size", type=int, default=65536)
    a = ap.parse_args()
    records, observations = [], []
    for folder in folders(a.corpus):
        recs = every_kth(lines(a.bin, "consensus", folder), a.per_folder)
        obs = every_kth(lines(a.bin, "normalise", folder), a.per_folder)
        print(f"{os.path.basename(folder)}: {len(recs)} records, {len(obs)} observations", file=sys.stderr)
        records += [history_entry(l, len(records) + i) for i, l in enumerate(recs)]
        observations += obs
    os.makedirs(a.out, exist_ok=True)
    train(records, os.path.join(a.out, f"records-{a.records_id}.zdict"), a.records_id, a.size)
    train(observations, os.path.join(a.out, f"observations-{a.observations_id}.zdict"), a.observations_id, a.size)


if __name__ == "__main__":
    main()
