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
crate names or module paths (`idem::executor`, which allows the package `idem`).

The adapters are not listed: every package in the resolved graph whose Cargo.toml has
`[package.metadata.idem] adapter = true` (with `service`, a string, and `hosts`, a list of
strings; no other key) is allowed, as read from `cargo metadata`. A malformed table is an error
(exit 2), and so is a failing `cargo metadata`: the gate never passes on lists it could not read.
The adapters the messages name are those, plus idem's own (from `cargo metadata --no-deps` on
the repository this script lives in, when it is in one).

A second check: clippy reads only the nearest clippy.toml, so a workspace member with a
clippy.toml of its own that drops the bans of the workspace's clippy.toml (as the adapters' and
core's do) escapes clippy's layer. Only an adapter, core (`idem`), an `--allow`ed or an exempt
package may have one; any other fails the gate. A member that inherits such a file from a parent
directory that is not its own is reported as a warning.

Usage: dep_gate.py [--manifest-path PATH] [--config PATH] [--allow PKG]... [--exempt PKG=REASON]...
       dep_gate.py --print-config      (the lists in effect, as JSON)
       dep_gate.py --self-test         (the adapter metadata rules on throw-away workspaces)

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
# narrows that to `idem::executor`. The adapters come from their manifests' metadata.
ANOTHER = (
    "another service: add an adapter crate built on idem::executor, with "
    "`[package.metadata.idem] adapter = true`"
)
# The repository this script belongs to (idem's), for the names of idem's own adapters.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def norm(name):
    return name.replace("_", "-")


def metadata(manifest_path, no_deps=False):
    cmd = ["cargo", "metadata", "--format-version", "1"] + (["--no-deps"] if no_deps else [])
    if manifest_path:
        cmd += ["--manifest-path", manifest_path]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        print(f"dependency gate: cannot run `{' '.join(cmd)}` ({e}); the adapters and the graph are unknown, so nothing passes")
        raise SystemExit(2)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        print(
            f"dependency gate: `{' '.join(cmd)}` failed (exit {out.returncode}); the adapters and "
            f"the graph are unknown, so nothing passes"
        )
        raise SystemExit(2)
    try:
        return json.loads(out.stdout)
    except ValueError as e:
        print(f"dependency gate: `{' '.join(cmd)}` printed no JSON ({e})")
        raise SystemExit(2)


IDEM_KEYS = {"adapter", "service", "hosts"}


def adapters_of(meta):
    """{package name: (service, hosts)} for the packages of `meta` with
    `[package.metadata.idem] adapter = true`, in the order `meta` lists them.

    Exits 2 on a malformed table (a wrong type, an unknown key, an adapter with no service):
    the same rules as the dylint lint's reader (lint/policy/src/manifest.rs)."""
    found = {}
    problems = []
    for p in meta["packages"]:
        table = ((p.get("metadata") or {}).get("idem"))
        if table is None:
            continue
        where = f"`{p['name']}` ({p.get('manifest_path', '?')}) [package.metadata.idem]"
        if not isinstance(table, dict):
            problems.append(f"{where} is not a table")
            continue
        unknown = sorted(set(table) - IDEM_KEYS)
        if unknown:
            problems.append(f"{where}: unknown key(s) {', '.join(unknown)} (expected adapter, service, hosts)")
            continue
        flag = table.get("adapter", False)
        if not isinstance(flag, bool):
            problems.append(f"{where}: `adapter` must be true or false, not {flag!r}")
            continue
        service = table.get("service")
        if "service" in table and (not isinstance(service, str) or not service.strip()):
            problems.append(f"{where}: `service` must be a non-empty string")
            continue
        hosts = table.get("hosts", [])
        if not isinstance(hosts, list) or not all(isinstance(h, str) and h.strip() for h in hosts):
            problems.append(f"{where}: `hosts` must be a list of non-empty strings")
            continue
        if not flag:
            continue
        if service is None:
            problems.append(f"{where}: an adapter (adapter = true) needs `service`")
            continue
        found[norm(p["name"])] = (service.strip(), [h.strip().lower() for h in hosts])
    if problems:
        for problem in problems:
            print(f"dependency gate: {problem}")
        print("dependency gate: cannot tell which packages are adapters, so nothing passes")
        raise SystemExit(2)
    return found


def idem_adapters(meta):
    """idem's own adapters (this script's repository), to name in messages."""
    if os.path.realpath(meta["workspace_root"]) == os.path.realpath(REPO):
        return adapters_of(meta)
    manifest = os.path.join(REPO, "Cargo.toml")
    if not os.path.exists(manifest):
        return {}  # the script was copied out of idem: name the checked graph's adapters only
    return adapters_of(metadata(manifest, no_deps=True))


def adapter_list(named):
    """`Service: package, ...; another service: ...` for messages."""
    parts = [f"{service}: {name}" for name, (service, _) in named.items()]
    return "; ".join(filter(None, [", ".join(parts), ANOTHER]))


def clippy_bans(path):
    """The paths a clippy.toml bans (disallowed-methods and -types)."""
    with open(path, "rb") as f:
        conf = tomllib.load(f)
    bans = set()
    for key in ("disallowed-methods", "disallowed-types"):
        for entry in conf.get(key, []):
            bans.add(entry["path"] if isinstance(entry, dict) else entry)
    return bans


def nearest_clippy(directory):
    """The clippy.toml clippy uses for a crate in `directory`: the first one found going up."""
    d = os.path.abspath(directory)
    while True:
        for name in ("clippy.toml", ".clippy.toml"):
            candidate = os.path.join(d, name)
            if os.path.isfile(candidate):
                return candidate
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent


def clippy_lifts(meta, may_lift):
    """(errors, warnings) for workspace members whose nearest clippy.toml drops bans of the
    workspace's own clippy.toml (the one a crate at the workspace root gets)."""
    root_conf = nearest_clippy(meta["workspace_root"])
    if root_conf is None:
        return [], []
    if tomllib is None:
        print("dependency gate: reading clippy.toml needs Python 3.11 (tomllib)")
        raise SystemExit(2)
    root_bans = clippy_bans(root_conf)
    if not root_bans:
        return [], []
    errors, warnings = [], []
    members = [p for p in meta["packages"] if p["id"] in meta["workspace_members"]]
    for p in members:
        pkg_dir = os.path.dirname(p["manifest_path"])
        conf = nearest_clippy(pkg_dir)
        if conf is None or os.path.samefile(conf, root_conf):
            continue
        dropped = root_bans - clippy_bans(conf)
        if not dropped or norm(p["name"]) in may_lift:
            continue
        rel = os.path.relpath(conf, meta["workspace_root"])
        text = (
            f"`{p['name']}` gets {rel}, which lifts {len(dropped)} of the {len(root_bans)} HTTP-client "
            f"bans of {os.path.relpath(root_conf, meta['workspace_root'])}"
        )
        if os.path.dirname(os.path.abspath(conf)) == os.path.abspath(pkg_dir):
            errors.append(
                f"{text}, but it is not an adapter: only a package with `[package.metadata.idem] "
                f"adapter = true` (or core) may lift them"
            )
        else:
            warnings.append(f"{text} (inherited from a parent directory; give it a clippy.toml of its own)")
    return errors, warnings


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


SELF_TEST_META = {
    "adapter": '[package.metadata.idem]\nadapter = true\nservice = "Acme"\nhosts = ["acme.example"]\n',
    "none": "",
    "false": '[package.metadata.idem]\nadapter = false\nservice = "Acme"\n',
    "typo": '[package.metadata.idem]\nadapter = true\nservice = "Acme"\nhost = ["acme.example"]\n',
    "no-service": "[package.metadata.idem]\nadapter = true\n",
    "bad-type": '[package.metadata.idem]\nadapter = "yes"\nservice = "Acme"\n',
    "broken": "[package.metadata.idem\n",
}
# (metadata case, expected exit status, text the output must hold)
SELF_TEST_CASES = [
    ("adapter", 0, "adapter = true: acme-adapter (1 in the workspace)"),
    ("none", 1, "`acme-adapter` gets adapter/clippy.toml, which lifts 1 of the 1"),
    ("false", 1, "but it is not an adapter"),
    ("typo", 2, "unknown key(s) host"),
    ("no-service", 2, "needs `service`"),
    ("bad-type", 2, "`adapter` must be true or false"),
    ("broken", 2, "failed (exit"),
]


def self_test():
    """Runs the gate on a throw-away workspace (an adapter with a ban-lifting clippy.toml and a
    worker that depends on it) once per [package.metadata.idem] variant. No network: the
    packages have no registry dependencies."""
    import tempfile

    failures = 0
    for case, want_rc, want_text in SELF_TEST_CASES:
        with tempfile.TemporaryDirectory(prefix="dep_gate-") as tmp:
            files = {
                "Cargo.toml": '[workspace]\nresolver = "3"\nmembers = ["adapter", "worker"]\n',
                "clippy.toml": 'disallowed-methods = [{ path = "reqwest::get", reason = "use an adapter" }]\n',
                "adapter/Cargo.toml": '[package]\nname = "acme-adapter"\nversion = "0.0.0"\nedition = "2021"\n\n'
                + SELF_TEST_META[case],
                "adapter/clippy.toml": "disallowed-methods = []\n",
                "adapter/src/lib.rs": "",
                "worker/Cargo.toml": '[package]\nname = "acme-worker"\nversion = "0.0.0"\nedition = "2021"\n\n'
                '[dependencies]\nacme-adapter = { path = "../adapter" }\n',
                "worker/src/lib.rs": "",
            }
            for rel, text in files.items():
                path = os.path.join(tmp, rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as f:
                    f.write(text)
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--manifest-path", os.path.join(tmp, "Cargo.toml")],
                capture_output=True, text=True,
            )
            text = out.stdout + out.stderr
            good = out.returncode == want_rc and want_text in text
            failures += not good
            print(f"dependency gate self-test: {case}: exit {out.returncode}" + ("" if good else f", FAILED (want exit {want_rc} and {want_text!r})"))
            if not good:
                print("    | " + text.replace("\n", "\n    | "))
    print(f"dependency gate self-test: {len(SELF_TEST_CASES) - failures} of {len(SELF_TEST_CASES)} cases as expected")
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest-path")
    ap.add_argument("--config", help="a dylint.toml whose [idem_lint] table holds the lists")
    ap.add_argument("--allow", action="append", default=[])
    ap.add_argument("--exempt", action="append", default=[], metavar="PKG=REASON")
    ap.add_argument("--print-config", action="store_true", help="print the lists in effect and exit")
    ap.add_argument("--self-test", action="store_true", help="check the adapter metadata rules on throw-away workspaces")
    args = ap.parse_args()

    if args.self_test:
        return self_test()

    if args.print_config:
        root = os.path.dirname(os.path.abspath(args.manifest_path)) if args.manifest_path else os.getcwd()
        conf = load_config(args.config, root)
        print(json.dumps({k: conf[k] for k in ("allowed", "deny", "vetted")}, indent=1, sort_keys=True))
        return 0

    meta = metadata(args.manifest_path)
    conf = load_config(args.config, meta["workspace_root"])
    deny = Deny(conf["deny"])
    adapters = adapters_of(meta)
    named = dict(idem_adapters(meta))
    named.update({k: v for k, v in adapters.items() if k not in named})
    allowed = allowed_packages(conf["allowed"]) | set(adapters) | {"idem"} | {norm(a) for a in args.allow}
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

    member_adapters = sorted(n for n in members.values() if norm(n) in adapters)
    print(
        f"dependency gate: adapters by [package.metadata.idem] adapter = true: "
        f"{', '.join(sorted(adapters)) or 'none'}"
        + (f" ({len(member_adapters)} in the workspace)" if adapters else "")
    )

    found = list(violations(meta, allowed, exempt, deny, vetted))
    for name, path in found:
        print(
            f"dependency gate: `{name}` depends on `{path[-1]}` ({' -> '.join(path)}), an HTTP "
            f"client or provider SDK; only the idem adapters and core may depend on one (reqwest, "
            f"ureq, hyper's client, async-stripe, ...: see `deny` in {conf['source']}). "
            f"Use the adapter for the service ({adapter_list(named)})."
        )
    lift_errors, lift_warnings = clippy_lifts(meta, allowed | {norm(e) for e in exempt})
    for w in lift_warnings:
        print(f"dependency gate: warning: {w}")
    for e in lift_errors:
        print(f"dependency gate: {e}")
    checked = sum(1 for n in members.values() if n not in allowed and n not in exempt)
    if found or lift_errors:
        print(
            f"dependency gate: FAILED ({len(found)} of {checked} checked packages reach a client, "
            f"{len(lift_errors)} lift clippy's bans; lists: {conf['source']})"
        )
        return 1
    print(
        f"dependency gate: ok ({checked} worker-side packages checked; "
        f"{len(members)} in the workspace, the others allowed or exempt; lists: {conf['source']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
