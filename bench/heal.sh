#!/usr/bin/env bash
# How fast a 3-node loopback cluster heals, in three measurements:
#   1. refill: a replica's data directory is wiped (kill -9, rm -rf, restart with --join);
#      it rejoins as `joining` and streams its ranges from the other two; the time from its
#      restart until it serves again, holding its copy of every key (then a repair, which
#      should find nothing left);
#   2. anti-entropy traffic: 0.1 % of the keys are written while one replica is down, with
#      hints turned off so only anti-entropy can repair them; the bytes one round exchanges
#      (ringkv_cluster_anti_entropy_bytes), as a share of the data's size;
#   3. hint replay: writes made while a replica is down are delivered as hints once it is
#      back; the rate at which the hints drain;
#   4. a join under load: a fourth node joins while `ringkv bench` (YCSB a, quorum, Redis
#      protocol) runs against the first; the keys copied to it against its ideal share
#      (N/4 of the keys), and throughput and p99 during the join against the same load
#      before it;
#   5. anti-entropy's cost to clients: the same load with every node running a round every
#      5 s (and so keeping its hash trees as writes land), against rounds off (no trees);
#   6. a dead node removed: one of four nodes is killed and `ringkv cluster remove`d; the
#      time until the three left hold every key's three copies again (streamed by the nodes
#      that take over its ranges; anti-entropy off).
# Anti-entropy's schedule is off in steps 1-3 and 6 (anti_entropy_interval_ms = 0), so each figure
# is of the step it names alone; in step 4 it runs as by default, its first round a few
# seconds after the new node starts.
#
# Usage: bench/heal.sh   (environment: KEYS (100000), HINTED (20000), SIZE (100), BASE_PORT,
#        LOAD_SECONDS (15), STEPS (the steps to run: "1 2 3 4 5 6"))
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS="${KEYS:-100000}"; HINTED="${HINTED:-20000}"; SIZE="${SIZE:-100}"
BASE_PORT="${BASE_PORT:-28080}"; LOAD_SECONDS="${LOAD_SECONDS:-15}"

STEPS="${STEPS:-1 2 3 4 5 6}"
step() { [[ " $STEPS " == *" $1 "* ]]; }

source bench/common.sh
build_ringkv

with_work_dir

start_node() { # index extra-config (a line of TOML; anti-entropy is off unless it says)
  local i=$1 config="$work/node-$1.toml"
  if [[ "$2" == *anti_entropy_interval_ms* ]]; then
    printf '%s\n' "$2" > "$config"
  else
    printf 'anti_entropy_interval_ms = 0\n%s\n' "$2" > "$config"
  fi
  local join=()
  [ "$i" -gt 0 ] && join=(--join "$(listen 0)")
  "$ringkv" server --config "$config" --node-id "node-$i" --data-dir "$work/node-$i" \
    --http "127.0.0.1:$((BASE_PORT + 10 * i))" --resp "127.0.0.1:$(resp "$i")" \
    --listen "$(listen "$i")" --zone "zone-$i" "${join[@]}" >"$work/node-$i.out" 2>&1 &
  pids[i]=$!
  for _ in $(seq 100); do curl -sf "$(http "$i")/healthz" >/dev/null && return 0; sleep 0.1; done
  echo "node-$i did not start" >&2; exit 1
}

await_liveness() { # node-index liveness members [member-id]: every member (or that one)
  for _ in $(seq 300); do
    "$ringkv" cluster status --json --node "$(http "$1")" | python3 -c '
import json, sys
members = json.load(sys.stdin)["members"]
wanted = [m for m in members if len(sys.argv) < 4 or m["id"] == sys.argv[3]]
# A live member must also be done joining: until then it does not serve its ranges.
ok = len(members) == int(sys.argv[2]) and all(
    m["liveness"] == sys.argv[1] and (sys.argv[1] != "alive" or m["status"] == "normal")
    for m in wanted)
sys.exit(0 if ok else 1)
' "$2" "$3" ${4:+"$4"} && return 0
    sleep 0.1
  done
  echo "node-$1 never saw ${4:-every member} $2" >&2; exit 1
}

metric() { # node-index name
  curl -s "$(http "$1")/metrics" | awk -v name="$2" '$1 == name { print $2 }'
}

local_keys() { # node-index
  "$ringkv" cluster status --json --node "$(http "$1")" | python3 -c '
import json, sys
view = json.load(sys.stdin)
print(next(m["keys"] for m in view["members"] if m["id"] == view["node_id"]))'
}

cluster() { # extra-config
  pkill -f "ringkv server --config $work" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"/node-*
  for i in 0 1 2; do start_node "$i" "$1"; done
  await_liveness 0 alive 3
}

load() { # records consistency
  "$ringkv" bench --target "redis://127.0.0.1:$(resp 0)" --workload set --phase load \
    --records "$1" -c 50 -P 16 -d "$SIZE" --consistency "$2" >/dev/null
}

if step 1; then
echo "== 1. refilling a wiped replica of $KEYS keys: it rejoins as joining and streams its ranges"
cluster ""
load "$KEYS" all
kill -9 "${pids[2]}"; wait "${pids[2]}" 2>/dev/null || true
rm -rf "$work/node-2"
started=$(now_ms)
start_node 2 ""
await_liveness 2 alive 3
took=$(( $(now_ms) - started ))
echo "   node-2 holds $(local_keys 2) of $KEYS keys when it is normal again: ${took} ms after its restart"
before=$(metric 2 ringkv_cluster_anti_entropy_repaired_here_total)
"$ringkv" cluster repair --node "$(http 2)" >/dev/null
after=$(metric 2 ringkv_cluster_anti_entropy_repaired_here_total)
echo "   a repair after it brought $(( ${after:-0} - ${before:-0} )) more keys"

fi

if step 2; then
echo "== 2. one anti-entropy round with 0.1 % of the keys differing, hints off"
cluster "hints_per_replica_max = 0"
load "$KEYS" all
kill "${pids[2]}"; wait "${pids[2]}" 2>/dev/null || true
await_liveness 0 down 3 node-2
differing=$(( KEYS / 1000 ))
"$ringkv" bench --target "redis://127.0.0.1:$(resp 0)" --workload set --phase load \
  --records "$differing" -c 10 -d "$SIZE" --seed 7 >/dev/null
start_node 2 "hints_per_replica_max = 0"
await_liveness 2 alive 3
before=$(metric 2 ringkv_cluster_anti_entropy_bytes_total)
"$ringkv" cluster repair --node "$(http 2)"
after=$(metric 2 ringkv_cluster_anti_entropy_bytes_total)
data=$(( KEYS * (SIZE + 16) ))
python3 -c "
sent = $after - $before
print(f'   {$differing} keys of {$KEYS} differed: {sent:,.0f} bytes exchanged, '
      f'{100 * sent / $data:.3f} % of the data ({$data:,} bytes of keys and values)')"

fi

if step 3; then
echo "== 3. hint replay rate: $HINTED writes missed by a stopped replica"
cluster ""
kill "${pids[2]}"; wait "${pids[2]}" 2>/dev/null || true
await_liveness 0 down 3 node-2
load "$HINTED" quorum
for _ in $(seq 100); do
  [ "$(metric 0 ringkv_cluster_hints_stored_total)" -ge "$HINTED" ] && break
  sleep 0.1
done
echo "   hints stored on node-0: $(metric 0 ringkv_cluster_hints_stored_total)"
start_node 2 ""
started=$(now_ms)
for _ in $(seq 1200); do
  [ "$(metric 0 ringkv_cluster_hints_pending_all)" = 0 ] && break
  sleep 0.1
done
took=$(( $(now_ms) - started ))
replayed=$(metric 0 ringkv_cluster_hints_replayed_total)
python3 -c "print(f'   {$replayed} hints replayed in {$took} ms from the restart: {1000 * $replayed / $took:,.0f} hints/s')"
echo "   node-2 holds $(local_keys 2) keys"

fi

if step 4; then
echo "== 4. a fourth node joins under load"
cluster "anti_entropy_interval_ms = 30000"
load "$KEYS" all
run_load() { # seconds -> one JSON line
  "$ringkv" bench --target "redis://127.0.0.1:$(resp 0)" --workload a --records "$KEYS" \
    --phase run --duration "$1" -c 20 -d "$SIZE" --consistency quorum --json
}
steady=$(run_load "$LOAD_SECONDS")
run_load "$LOAD_SECONDS" > "$work/joining.json" &
loader=$!
sleep 1
start_node 3 "anti_entropy_interval_ms = 30000"
wait "$loader"
for _ in $(seq 600); do
  copies=$(local_keys 3)
  [ "$copies" -ge $(( KEYS * 3 / 4 * 99 / 100 )) ] && break
  sleep 0.1
done
share=$("$ringkv" cluster status --json --node "$(http 0)" | python3 -c '
import json, sys
print(next(m["ownership"] for m in json.load(sys.stdin)["members"] if m["id"] == "node-3"))')
python3 - "$steady" "$(cat "$work/joining.json")" "$(local_keys 3)" "$share" <<PY
import json, sys
steady, joining = json.loads(sys.argv[1]), json.loads(sys.argv[2])
copies, share = int(sys.argv[3]), float(sys.argv[4])
ideal = $KEYS * 3 / 4
def p99(run):
    return max(op["p99_us"] for op in run["operations"].values()) / 1000
print(f"   node-3 holds {copies} keys; ideal {ideal:.0f} (each key on 3 of 4 nodes): "
      f"{copies / ideal:.2f} of the ideal (its ring share as first replica: {share:.1%})")
print(f"   steady: {steady['ops_per_second']:,.0f} ops/s, p99 {p99(steady):.2f} ms; "
      f"during the join: {joining['ops_per_second']:,.0f} ops/s, p99 {p99(joining):.2f} ms "
      f"({joining['ops_per_second'] / steady['ops_per_second']:.2f}x throughput, "
      f"{p99(joining) / p99(steady):.2f}x p99)")
PY

fi

if step 5; then
echo "== 5. the same load with anti-entropy rounds every 5 s, against rounds off"
cluster ""
load "$KEYS" all
off=$(run_load "$LOAD_SECONDS")
cluster "anti_entropy_interval_ms = 5000"
load "$KEYS" all
on=$(run_load "$LOAD_SECONDS")
rounds=$(metric 0 ringkv_cluster_anti_entropy_exchanges_total)
python3 - "$off" "$on" "$rounds" <<PY
import json, sys
off, on, rounds = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
def p99(run):
    return max(op["p99_us"] for op in run["operations"].values()) / 1000
print(f"   rounds off: {off['ops_per_second']:,.0f} ops/s, p99 {p99(off):.2f} ms; every 5 s "
      f"({rounds} exchanges on node-0): {on['ops_per_second']:,.0f} ops/s, p99 {p99(on):.2f} ms "
      f"({on['ops_per_second'] / off['ops_per_second']:.2f}x throughput, {p99(on) / p99(off):.2f}x p99)")
PY

fi

if step 6; then
echo "== 6. a dead node is removed: the others restore its copies"
cluster ""
start_node 3 ""
await_liveness 0 alive 4
load "$KEYS" all
kill -9 "${pids[3]}"; wait "${pids[3]}" 2>/dev/null || true
await_liveness 0 down 4 node-3
started=$(now_ms)
"$ringkv" cluster remove node-3 --node "$(http 0)" >/dev/null
copies=0
for _ in $(seq 1200); do
  copies=$(( $(local_keys 0) + $(local_keys 1) + $(local_keys 2) ))
  [ "$copies" -ge $(( KEYS * 3 )) ] && break
  sleep 0.1
done
took=$(( $(now_ms) - started ))
echo "   the three left hold $copies of $(( KEYS * 3 )) copies ${took} ms after the removal"
fi
