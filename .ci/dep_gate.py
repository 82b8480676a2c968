#!/usr/bin/env python3
"""Dependency-graph gate for idem's rule 5 (worker code reaches an external service only through
an adapter).

Reads `cargo metadata` for a workspace and fails when a workspace member that is not an adapter
or core can reach an HTTP client crate (reqwest, reqwest-middleware) in the resolved dependency
graph without passing through an allowed package. Direct dependencies count, and so do indirect
ones through third-party crates (for example a worker depending on `reqwest-retry` or on a
provider SDK built on reqwest). Normal, dev and build dependencies all count.

Usage: dep_gate.py [--manifest-path PATH] [--allow PKG]... [--exempt PKG=REASON]...

--allow adds to the default allowed packages; --exempt lets one workspace member through with a
reason that is printed on every run. Exit status: 0 pass, 1 violation, 2 could not run.
"""

import argparse
import json
import subprocess
import sys

HTTP_CRATES = ("reqwest", "reqwest-middleware")
ALLOWED = ("idem", "idem-stripe", "idem-twilio", "idem-gbp", "idem-meta")
ADAPTERS = (
    "Stripe: idem-stripe, Twilio: idem-twilio, Google Business Profile: idem-gbp, "
    "Meta/Facebook/Instagram: idem-meta; another service: add an adapter crate built on "
    "idem::executor"
)


def metadata(manifest_path):
    cmd = ["cargo", "metadata", "--format-version", "1"]
    if manifest_path:
        cmd += ["--manifest-path", manifest_path]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"dependency gate: `{' '.join(cmd)}` failed (exit {out.returncode})")
    return json.loads(out.stdout)


def violations(meta, allowed, exempt):
    """Yields (member name, path of package names) for each member that reaches an HTTP crate."""
    names = {p["id"]: p["name"] for p in meta["packages"]}
    edges = {n["id"]: [d["pkg"] for d in n["deps"]] for n in meta["resolve"]["nodes"]}
    for member in meta["workspace_members"]:
        name = names[member]
        if name in allowed or name in exempt or name in HTTP_CRATES:
            continue
        # Breadth-first search that does not enter allowed packages: the first path found is
        # a shortest one, which is the clearest to print.
        parent = {member: None}
        queue = [member]
        hit = None
        while queue and hit is None:
            nxt = []
            for node in queue:
                for dep in edges.get(node, []):
                    if dep in parent or names[dep] in allowed:
                        continue
                    parent[dep] = node
                    if names[dep] in HTTP_CRATES:
                        hit = dep
                        break
                    nxt.append(dep)
                if hit is not None:
                    break
            queue = nxt
        if hit is not None:
            path = []
            node = hit
            while node is not None:
                path.append(names[node])
                node = parent[node]
            yield name, list(reversed(path))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest-path")
    ap.add_argument("--allow", action="append", default=[])
    ap.add_argument("--exempt", action="append", default=[], metavar="PKG=REASON")
    args = ap.parse_args()

    allowed = set(ALLOWED) | set(args.allow)
    exempt = {}
    for item in args.exempt:
        pkg, sep, reason = item.partition("=")
        if not sep or not reason.strip():
            raise SystemExit(f"dependency gate: --exempt needs PKG=REASON, got {item!r}")
        exempt[pkg] = reason.strip()

    meta = metadata(args.manifest_path)
    members = {p["id"]: p["name"] for p in meta["packages"] if p["id"] in meta["workspace_members"]}
    for pkg, reason in sorted(exempt.items()):
        if pkg not in members.values():
            raise SystemExit(f"dependency gate: exempt package `{pkg}` is not a workspace member")
        print(f"dependency gate: `{pkg}` exempt: {reason}")

    found = list(violations(meta, allowed, exempt))
    for name, path in found:
        print(
            f"dependency gate: `{name}` depends on `{path[-1]}` ({' -> '.join(path)}); only the "
            f"idem adapters and core may depend on reqwest or reqwest-middleware. Use the adapter "
            f"for the service ({ADAPTERS})."
        )
    checked = sum(1 for n in members.values() if n not in allowed and n not in exempt)
    if found:
        print(f"dependency gate: FAILED ({len(found)} of {checked} checked packages)")
        return 1
    print(
        f"dependency gate: ok ({checked} worker-side packages checked; "
        f"{len(members)} in the workspace, the others allowed or exempt)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
