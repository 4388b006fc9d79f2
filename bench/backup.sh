#!/usr/bin/env bash
# Backup and restore at scale: KEYS keys of SIZE bytes loaded into a one-node cluster, backed
# up with `ringkv backup` while a write load runs against it, and restored with
# `ringkv restore` into a fresh 3-node loopback cluster. Reports the rates, and then compares
# every key: each record in a backup of a node of the new cluster must be byte for byte the
# source's (value, causal context and timestamps), and every key's value read through the
# new cluster (Redis protocol MGET, quorum) must be the source's.
#
# Usage: bench/backup.sh   (environment: KEYS (100000), SIZE (100), BASE_PORT (29080))
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS="${KEYS:-100000}"; SIZE="${SIZE:-100}"; BASE_PORT="${BASE_PORT:-29080}"

source bench/common.sh
build_ringkv
with_work_dir

start_node() { # index [--join ADDRESS]
  local i=$1; shift
  "$ringkv" server --node-id "node-$i" --data-dir "$work/node-$i" \
    --http "127.0.0.1:$((BASE_PORT + 10 * i))" --resp "127.0.0.1:$(resp "$i")" \
    --listen "$(listen "$i")" --zone "zone-$i" "$@" >"$work/node-$i.out" 2>&1 &
  pids[i]=$!
  for _ in $(seq 100); do curl -sf "$(http "$i")/healthz" >/dev/null && return 0; sleep 0.1; done
  echo "node-$i did not start" >&2; exit 1
}

echo "== loading $KEYS keys of $SIZE bytes into a one-node cluster"
start_node 9
"$ringkv" bench --target "redis://127.0.0.1:$(resp 9)" --workload set --phase load \
  --records "$KEYS" -c 50 -P 16 -d "$SIZE" >/dev/null

echo "== backup, with a write load running against the node"
"$ringkv" bench --target "redis://127.0.0.1:$(resp 9)" --workload a --records "$KEYS" \
  --duration 600 -c 8 --seed 7 >/dev/null 2>&1 &
load=$!
sleep 1
start=$(now_ms)
"$ringkv" backup --node "$(http 9)" --out "$work/source.backup" --json > "$work/backup.json"
took=$(( $(now_ms) - start ))
kill "$load"; wait "$load" 2>/dev/null || true
# What the source holds once the load has stopped: keys it changed after the backup are left
# out of the comparison of values below.
"$ringkv" backup --node "$(http 9)" --out "$work/source-after.backup" --json >/dev/null
python3 - "$work/backup.json" "$took" <<'EOF'
import json, sys
b = json.load(open(sys.argv[1])); ms = int(sys.argv[2])
print(f"   {b['records']} records, {b['bytes']:,} bytes in {ms} ms: "
      f"{b['records'] / ms * 1000:,.0f} records/s, {b['bytes'] / ms / 1000:,.1f} MB/s")
EOF

echo "== restore into a fresh 3-node cluster"
start_node 0
start_node 1 --join "$(listen 0)"
start_node 2 --join "$(listen 0)"
for _ in $(seq 300); do
  "$ringkv" cluster status --json --node "$(http 0)" | python3 -c '
import json, sys
m = json.load(sys.stdin)["members"]
sys.exit(0 if len(m) == 3 and all(x["liveness"] == "alive" and x["status"] == "normal" for x in m) else 1)' && break
  sleep 0.1
done
start=$(now_ms)
"$ringkv" restore --node "$(http 0)" "$work/source.backup" --json > "$work/restore.json"
took=$(( $(now_ms) - start ))
python3 -c "
import json; r = json.load(open('$work/restore.json')); ms = $took
print(f\"   {r['records']} records in {ms} ms: {r['records'] / ms * 1000:,.0f} records/s (each to 3 replicas, quorum)\")"

echo "== comparing every key"
"$ringkv" backup --node "$(http 2)" --out "$work/restored.backup" --json >/dev/null
python3 - "$work/source.backup" "$work/restored.backup" "$(resp 9)" "$(resp 1)" \
  "$work/source-after.backup" <<'EOF'
import socket, struct, sys

def frames(path):
    data = open(path, "rb").read()
    assert data[:8] == b"RKVBACK1"
    at, out = 8, []
    while at < len(data):
        length = struct.unpack_from("<I", data, at)[0]
        out.append(data[at + 8: at + 8 + length])
        at += 8 + length
    return out

def varint(body, at):
    value = shift = 0
    while True:
        byte = body[at]; at += 1
        value |= (byte & 0x7F) << shift; shift += 7
        if byte < 0x80:
            return value, at

def records(path):
    out = {}
    for body in frames(path):
        if body[:1] != b"R":
            continue
        at, fields = 1, []
        for _ in range(3):
            n, at = varint(body, at)
            fields.append(body[at:at + n]); at += n
        out[(fields[0], fields[1])] = fields[2]
    return out

source, restored = records(sys.argv[1]), records(sys.argv[2])
differ = [k for k in source if restored.get(k) != source[k]]
extra = [k for k in restored if k not in source]
print(f"   records: {len(source)} in the backup, {len(restored)} on a restored node; "
      f"{len(differ)} differ, {len(extra)} extra")

def mget(port, keys):
    s = socket.create_connection(("127.0.0.1", int(port)))
    f = s.makefile("rb")
    values = []
    for i in range(0, len(keys), 1000):
        batch = keys[i:i + 1000]
        cmd = b"*%d\r\n$4\r\nMGET\r\n" % (len(batch) + 1)
        for k in batch:
            cmd += b"$%d\r\n%s\r\n" % (len(k), k)
        s.sendall(cmd)
        assert f.readline().startswith(b"*")
        for _ in batch:
            head = f.readline()
            n = int(head[1:])
            if n < 0:
                values.append(None)
            else:
                values.append(f.read(n)); f.read(2)
    return values

after = records(sys.argv[5])
changed = {k for k in source if after.get(k) != source[k]}
keys = [k for (ks, k) in source if ks == b"default" and (ks, k) not in changed]
a, b = mget(sys.argv[3], keys), mget(sys.argv[4], keys)
wrong = sum(1 for x, y in zip(a, b) if x != y)
print(f"   values: {len(changed)} keys were written by the load after the backup; of the other "
      f"{len(keys)}, read from the source and from the new cluster, {wrong} differ")
sys.exit(1 if differ or extra or wrong else 0)
EOF
