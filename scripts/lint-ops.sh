#!/usr/bin/env bash
# Checks the operations files without a Docker daemon or a booted systemd (CI has neither):
#   - ops/systemd/ringkv.service passes `systemd-analyze verify` (run against the built
#     binary) and keeps its hardening;
#   - docker-compose.yml is valid YAML describing three nodes, each with a health check and a
#     volume, the second and third joining the first;
#   - the Dockerfile is multi-stage, runs as a non-root user and has a health check;
#   - every RINGKV_* variable those files set is one `ringkv server` reads;
#   - ops/grafana/ringkv.json is a dashboard whose every metric is in docs/metrics.md.
# Usage: scripts/lint-ops.sh [RINGKV_BINARY]   (default: target/debug/ringkv, built if absent)
set -euo pipefail
cd "$(dirname "$0")/.."

binary="${1:-target/debug/ringkv}"
[ -x "$binary" ] || cargo build --quiet -p ringkv
binary="$(realpath "$binary")"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "systemd unit"
sed "s|/usr/local/bin/ringkv|$binary|" ops/systemd/ringkv.service >"$work/ringkv.service"
systemd-analyze verify "$work/ringkv.service"
for setting in NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes \
  CapabilityBoundingSet= StateDirectory=ringkv User=ringkv; do
  grep -qx "$setting" ops/systemd/ringkv.service || { echo "the unit lacks $setting" >&2; exit 1; }
done

echo "Dockerfile, docker-compose.yml, Grafana dashboard"
python3 - "$binary" <<'PY'
import json, re, subprocess, sys
import yaml

def fail(message):
    sys.exit(f"lint-ops: {message}")

# The variables `ringkv server` reads: those its --help names.
help_text = subprocess.run([sys.argv[1], "server", "--help"], capture_output=True,
                           text=True, check=True).stdout
known = set(re.findall(r"env: (RINGKV_[A-Z_]+)=", help_text)) | {"RINGKV_LOG"}

docker = open("Dockerfile").read()
if len(re.findall(r"^FROM ", docker, re.M)) < 2:
    fail("the Dockerfile is not multi-stage")
users = re.findall(r"^USER (\S+)", docker, re.M)
if not users or users[-1] in ("root", "0"):
    fail("the image does not run as a non-root user")
if "HEALTHCHECK" not in docker:
    fail("the image has no health check")
for name in re.findall(r"\b(RINGKV_[A-Z_]+)=", docker):
    if name not in known and name != "RINGKV_GIT_COMMIT":
        fail(f"the Dockerfile sets {name}, which ringkv does not read")

compose = yaml.safe_load(open("docker-compose.yml"))
services = compose.get("services", {})
if len(services) != 3:
    fail(f"docker-compose.yml has {len(services)} services, not 3")
seeds = set()
for name, service in services.items():
    for key in ("healthcheck", "volumes", "environment"):
        if key not in service:
            fail(f"service {name} has no {key}")
    env = service["environment"]
    for variable in env:
        if variable not in known:
            fail(f"service {name} sets {variable}, which ringkv does not read")
    if "RINGKV_JOIN" in env:
        seeds.add(env["RINGKV_JOIN"].split(":")[0])
if len(seeds) != 1 or not seeds <= set(services):
    fail(f"the nodes do not join through one of them: {seeds}")

dashboard = json.load(open("ops/grafana/ringkv.json"))
documented = open("docs/metrics.md").read()
queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
if len(queries) < 10:
    fail("the dashboard has fewer than 10 queries")
for query in queries:
    for metric in re.findall(r"\bringkv_[a-z_]+", query):
        base = re.sub(r"_(total|bucket|sum|count)$", "", metric)
        if f"| `{base}` |" not in documented:
            fail(f"the dashboard queries {metric}, which docs/metrics.md does not list")
print(f"ok: {len(services)} services, {len(queries)} dashboard queries")
PY
