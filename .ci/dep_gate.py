#!/usr/bin/env python3
"""Dependency-graph gate for idem's rule 5 (worker code reaches an external service only through
an adapter).

Reads `cargo metadata` for a workspace and fails when a workspace member that is not an adapter
or core can reach an HTTP client or provider SDK (the `deny` list: reqwest, ureq, hyper's client,
hyper-util's legacy client, isahc, surf, async-stripe, the Twilio crates, octocrab, ...) in the
resolved dependency graph without passing through an allowed package. Direct dependencies count,
and so do indirect ones through third-party crates (a worker depending on `reqwest-retry` or on
an SDK built on hyper's client). Normal, dev and build dependencies all count. A crate listed
with `features` (hyper, hyper-util) counts only when a dependency on the path asks for one of
them, so hyper as a server stays allowed.

The lists come from the `[idem_lint]` table of a dylint.toml: `--config PATH`, else the checked
workspace's own dylint.toml when it has a `deny` list, else the copy built into this script
(equal to idem's dylint.toml; idem's .ci/lint.sh checks that). `allowed` entries there are
crate names (`idem_stripe`) or module paths (`idem::executor`, which allows the package `idem`).

Usage: dep_gate.py [--manifest-path PATH] [--config PATH] [--allow PKG]... [--exempt PKG=REASON]...
       dep_gate.py --print-config      (the lists in effect, as JSON)

--allow adds to the allowed packages; --exempt lets one workspace member through with a reason
that is printed on every run. Exit status: 0 pass, 1 violation, 2 could not run.
"""

import argparse
import fnmatch
import json
import os
import subprocess
import sys

try:
    import tomllib
except ImportError:  # Python < 3.11: the built-in lists still work
    tomllib = None

# Built-in copy of idem's dylint.toml [idem_lint] lists (kept equal by .ci/lint.sh).
BUILTIN = {
    "allowed": ["idem::executor"],
    "deny": [
        {"package": "reqwest"},
        {"package": "reqwest-middleware"},
        {"package": "ureq"},
        {"package": "hyper", "features": ["client"], "modules": ["hyper::client", "hyper::Client"]},
        {"package": "hyper-util", "features": ["client", "client-legacy"], "modules": ["hyper_util::client"]},
        {"package": "isahc"},
        {"package": "surf"},
        {"package": "http-client"},
        {"package": "attohttpc"},
        {"package": "curl"},
        {"package": "awc"},
        {"package": "minreq"},
        {"package": "async-stripe", "lib": "stripe"},
        {"package": "async-stripe-*", "lib": "stripe_*"},
        {"package": "stripe-rust", "lib": "stripe"},
        {"package": "twilio"},
        {"package": "twilio-rs"},
        {"package": "twilio-async"},
        {"package": "twilio-openapi"},
        {"package": "octocrab"},
    ],
    "vetted": [
        {"package": "wiremock", "reason": "mock HTTP server for tests; its API exposes no client"},
        {"package": "fantoccini", "reason": "WebDriver client for browser tests; talks to a local driver, not a provider"},
    ],
}
# The package `idem` is allowed as a whole here (the graph has no modules); the dylint lint
# narrows that to `idem::executor`.
ADAPTERS = (
    "Stripe: idem-stripe, Twilio: idem-twilio, Google Business Profile: idem-gbp, "
    "Meta/Facebook/Instagram: idem-meta; another service: add an adapter crate built on "
    "idem::executor"
)


def norm(name):
    return name.replace("_", "-")


def metadata(manifest_path):
    cmd = ["cargo", "metadata", "--format-version", "1"]
    if manifest_path:
        cmd += ["--manifest-path", manifest_path]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        print(f"dependency gate: `{' '.join(cmd)}` failed (exit {out.returncode})")
        raise SystemExit(2)
    return json.loads(out.stdout)


def load_config(path, workspace_root):
    """The [idem_lint] lists: from `path`, else the workspace's dylint.toml, else BUILTIN.

    A list the file does not set keeps its built-in value (a dylint.toml that only sets
    `allowed` still gets the built-in deny list)."""
    candidate = path or os.path.join(workspace_root, "dylint.toml")
    if not os.path.exists(candidate):
        if path:
            print(f"dependency gate: config {path} not found")
            raise SystemExit(2)
        return dict(BUILTIN, source="built-in lists")
    if tomllib is None:
        print("dependency gate: reading a dylint.toml needs Python 3.11 (tomllib)")
        raise SystemExit(2)
    with open(candidate, "rb") as f:
        table = tomllib.load(f).get("idem_lint", {})
    conf = {key: table.get(key, BUILTIN[key]) for key in ("allowed", "deny", "vetted")}
    conf["source"] = candidate if "deny" in table else f"{candidate} + built-in deny list"
    return conf


def allowed_packages(entries):
    """Package names for `allowed` entries (`idem_stripe` -> idem-stripe, `idem::executor` -> idem)."""
    return {norm(e.strip().lstrip(":").split("::")[0].strip()) for e in entries if e.strip(": ")}


class Deny:
    def __init__(self, entries):
        self.entries = []
        for e in entries:
            if "package" not in e:
                print(f"dependency gate: deny entry without `package`: {e!r}")
                raise SystemExit(2)
            self.entries.append((norm(e["package"]), set(e.get("features", []))))

    def match(self, package):
        """The entry's feature set (empty: any use counts) when `package` is denied, else None."""
        for pattern, features in self.entries:
            if fnmatch.fnmatchcase(norm(package), pattern):
                return features
        return None


def feature_closure(package, requested, default):
    """Features of `package` turned on by `requested` (plus its default set when `default`)."""
    table = package.get("features", {})
    todo = list(requested) + (["default"] if default else [])
    on = set()
    while todo:
        f = todo.pop()
        if f in on:
            continue
        on.add(f)
        for item in table.get(f, []):
            if item.startswith("dep:") or "/" in item:
                continue  # another package's feature or an optional dependency
            todo.append(item)
    return on


def edge_features(dependent, active, dep_pkg, kinds):
    """Features of `dep_pkg` that `dependent` turns on, given the dependent's own `active` ones.

    Counted: the features and default set its declarations of `dep_pkg` ask for (of these
    dependency kinds), and `dep_pkg/feature` items of its active features. Not the features
    other packages turn on in the same build (cargo unifies those): reqwest turning on hyper's
    client does not make a worker's server-only hyper a client."""
    on = set()
    for d in dependent.get("dependencies", []):
        if d["name"] != dep_pkg["name"]:
            continue
        if kinds and d.get("kind") not in kinds:
            continue
        on |= feature_closure(dep_pkg, d.get("features", []), d.get("uses_default_features", True))
    for f in active:
        for item in dependent.get("features", {}).get(f, []):
            target, sep, feat = item.partition("/")
            if sep and target.rstrip("?") in (dep_pkg["name"], norm(dep_pkg["name"])):
                on |= feature_closure(dep_pkg, [feat], False)
    return on


def violations(meta, allowed, exempt, deny, vetted):
    """Yields (member name, path of package names) for each member that reaches a denied crate."""
    pkgs = {p["id"]: p for p in meta["packages"]}
    names = {i: p["name"] for i, p in pkgs.items()}
    resolved = {n["id"]: set(n.get("features", [])) for n in meta["resolve"]["nodes"]}
    edges = {
        n["id"]: [(d["pkg"], {k.get("kind") for k in d.get("dep_kinds", [])}) for d in n["deps"]]
        for n in meta["resolve"]["nodes"]
    }

    for member in meta["workspace_members"]:
        name = names[member]
        if name in allowed or name in exempt or deny.match(name) is not None:
            continue
        # Breadth-first, not entering allowed or vetted packages, carrying the features each
        # package is asked for along the paths from this member (a package is visited again
        # when a path asks for features it had not seen). The first hit is on a shortest path.
        active = {member: resolved.get(member, set())}
        parent = {member: None}
        queue = [member]
        hit = None
        while queue and hit is None:
            nxt = []
            for node in queue:
                for dep, kinds in edges.get(node, []):
                    if names[dep] in allowed or names[dep] in vetted:
                        continue
                    asked = edge_features(pkgs[node], active[node], pkgs[dep], kinds)
                    features = deny.match(names[dep])
                    if features is not None and (not features or features & asked):
                        hit = (node, dep)
                        break
                    if dep in active and asked <= active[dep]:
                        continue
                    active[dep] = active.get(dep, set()) | asked
                    parent.setdefault(dep, node)
                    nxt.append(dep)
                if hit is not None:
                    break
            queue = nxt
        if hit is not None:
            path = [names[hit[1]]]
            node = hit[0]
            seen = set()
            while node is not None and node not in seen:
                seen.add(node)
                path.append(names[node])
                node = parent[node]
            yield name, list(reversed(path))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest-path")
    ap.add_argument("--config", help="a dylint.toml whose [idem_lint] table holds the lists")
    ap.add_argument("--allow", action="append", default=[])
    ap.add_argument("--exempt", action="append", default=[], metavar="PKG=REASON")
    ap.add_argument("--print-config", action="store_true", help="print the lists in effect and exit")
    args = ap.parse_args()

    if args.print_config:
        root = os.path.dirname(os.path.abspath(args.manifest_path)) if args.manifest_path else os.getcwd()
        conf = load_config(args.config, root)
        print(json.dumps({k: conf[k] for k in ("allowed", "deny", "vetted")}, indent=1, sort_keys=True))
        return 0

    meta = metadata(args.manifest_path)
    conf = load_config(args.config, meta["workspace_root"])
    deny = Deny(conf["deny"])
    allowed = allowed_packages(conf["allowed"]) | {"idem"} | {norm(a) for a in args.allow}
    vetted = {norm(v["package"]): v.get("reason", "") for v in conf["vetted"]}
    exempt = {}
    for item in args.exempt:
        pkg, sep, reason = item.partition("=")
        if not sep or not reason.strip():
            print(f"dependency gate: --exempt needs PKG=REASON, got {item!r}")
            return 2
        exempt[pkg] = reason.strip()

    members = {p["id"]: p["name"] for p in meta["packages"] if p["id"] in meta["workspace_members"]}
    for pkg, reason in sorted(exempt.items()):
        if pkg not in members.values():
            print(f"dependency gate: exempt package `{pkg}` is not a workspace member")
            return 2
        print(f"dependency gate: `{pkg}` exempt: {reason}")
    in_graph = {p["name"] for p in meta["packages"]}
    for pkg, reason in sorted(vetted.items()):
        if pkg in in_graph:
            print(f"dependency gate: not following `{pkg}` (vetted: {reason})")

    found = list(violations(meta, allowed, exempt, deny, vetted))
    for name, path in found:
        print(
            f"dependency gate: `{name}` depends on `{path[-1]}` ({' -> '.join(path)}), an HTTP "
            f"client or provider SDK; only the idem adapters and core may depend on one (reqwest, "
            f"ureq, hyper's client, async-stripe, ...: see `deny` in {conf['source']}). "
            f"Use the adapter for the service ({ADAPTERS})."
        )
    checked = sum(1 for n in members.values() if n not in allowed and n not in exempt)
    if found:
        print(f"dependency gate: FAILED ({len(found)} of {checked} checked packages; lists: {conf['source']})")
        return 1
    print(
        f"dependency gate: ok ({checked} worker-side packages checked; "
        f"{len(members)} in the workspace, the others allowed or exempt; lists: {conf['source']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
