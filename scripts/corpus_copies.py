#!/usr/bin/env python3
"""Writes K renamed copies of a corpus folder, so each copy is a new set of packages
(issue 20's store-path benchmark: `scripts/bench.sh`).

  corpus_copies.py SRC DST --copies K [--min-bytes N] [--docs D]

Each JSON document of SRC is written K times into DST (`<stem>.s<k>.json`):
  OpenVEX / CycloneDX   every purl string gets `-s<k>` appended to its name (as
                        scripts/bench_e2e.py renames them), and the document id
                        (`@id` / `serialNumber`) gets `#s<k>`;
  CSAF                  `document.tracking.id` gets `-s<k>`, and every product name of
                        the product tree (branch names, product names, relationship
                        names) has each component name (a `product_version` branch's
                        name) renamed: `<name>-s<k>`, or for an RPM
                        name-version-release `<name>-s<k>-<version>-<release>`, so the
                        keys made from names are new too.
With --docs, only the first D documents of SRC (by name) are copied. With --min-bytes, K is raised until DST holds at least that many bytes. Prints the
number of documents and bytes written. Documents are written compact, as read (no key
reordering), so their digests differ from the originals only by the renaming.
"""
import argparse
import json
import os
import re
import sys

PURL = re.compile(r'^(pkg:[^@?#]+)(.*)$')


def rename_purls(value, suffix):
    """Every purl string in a JSON value gets `suffix` appended to its name."""
    if isinstance(value, dict):
        return {k: rename_purls(v, suffix) for k, v in value.items()}
    if isinstance(value, list):
        return [rename_purls(v, suffix) for v in value]
    if isinstance(value, str):
        m = PURL.match(value)
        if m:
            return m.group(1) + suffix + m.group(2)
    return value


def component_names(node, out):
    """Names of the `product_version` branches of a CSAF product tree."""
    if isinstance(node, dict):
        if node.get("category") == "product_version" and isinstance(node.get("name"), str):
            out.add(node["name"])
        for v in node.values():
            component_names(v, out)
    elif isinstance(node, list):
        for v in node:
            component_names(v, out)
    return out


NEVRA = re.compile(r'^(.+?)(-[0-9][^-]*-[^-]+)$')


def renamed(name, suffix):
    """A component name with `suffix` on its package name: `bluez-5.63-3.el8.x86_64` ->
    `bluez-s1-5.63-3.el8.x86_64` (an RPM name-version-release keeps its shape), `tomcat` ->
    `tomcat-s1`."""
    m = NEVRA.match(name)
    return m.group(1) + suffix + m.group(2) if m else name + suffix


def rename_names(node, pattern, new):
    """Every `name` string under a CSAF product tree with each component name renamed."""
    if isinstance(node, dict):
        return {
            k: pattern.sub(lambda m: new[m.group(0)], v) if k == "name" and isinstance(v, str)
            else rename_names(v, pattern, new)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [rename_names(v, pattern, new) for v in node]
    return node


def copy_csaf(doc, k):
    suffix = f"-s{k}"
    c = rename_purls(doc, suffix)  # a new tree: the edits below leave `doc` as it was
    c["document"]["tracking"]["id"] += suffix
    tree = doc.get("product_tree")
    names = component_names(tree, set())
    if tree is not None and names:
        # Longest first, whole words only, so "bind" does not rename inside "bind-utils".
        alt = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
        pattern = re.compile(r'(?<![\w.-])(?:' + alt + r')(?![\w.-])')
        c["product_tree"] = rename_names(c["product_tree"], pattern, {n: renamed(n, suffix) for n in names})
    return c


def copy_doc(doc, k):
    if isinstance(doc.get("document"), dict) and "tracking" in doc["document"]:
        return copy_csaf(doc, k)
    c = rename_purls(doc, f"-s{k}")
    for id_key in ("@id", "serialNumber"):
        if isinstance(c.get(id_key), str):
            c[id_key] = f"{c[id_key]}#s{k}"
    return c


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--copies", type=int, default=1)
    ap.add_argument("--min-bytes", type=int, default=0)
    ap.add_argument("--docs", type=int, default=None)
    args = ap.parse_args()
    files = sorted(f for f in os.listdir(args.src) if f.endswith(".json"))[: args.docs]
    if not files:
        sys.exit(f"corpus_copies: no .json documents in {args.src}")
    docs = [(f[:-5], json.load(open(os.path.join(args.src, f)))) for f in files]
    os.makedirs(args.dst, exist_ok=True)
    written = count = k = 0
    while k < args.copies or written < args.min_bytes:
        for stem, doc in docs:
            data = json.dumps(copy_doc(doc, k), separators=(",", ":"), ensure_ascii=False).encode()
            with open(os.path.join(args.dst, f"{stem}.s{k}.json"), "wb") as out:
                out.write(data)
            written += len(data)
            count += 1
        k += 1
    print(f"corpus_copies: {count} documents ({k} copies of {len(docs)}), {written} bytes in {args.dst}")


if __name__ == "__main__":
    main()
