#!/usr/bin/env bash
# Walks a loopback `ringkv dev-cluster` through what a replicated store must do, printing
# each step and failing loudly at the first that does not hold:
#   1. keys written through node 0 with w=quorum read back through another node with r=quorum;
#   2. each key has exactly N local copies, on the nodes `cluster endpoints` names;
#   3. with the last node killed, quorum writes and reads succeed, and `all` with `pw=all`
#      (every acknowledgement from the key's own replicas, no fallback) fails clearly (HTTP
#      503, RESP -UNAVAILABLE);
#   4. in a `siblings` keyspace two context-free writes through two nodes make two siblings
#      and a write with the returned context resolves them; in `default` the later write wins;
#   5. the killed node, restarted, receives the writes it missed by hinted handoff, with no
#      read of their keys.
#
# Usage: scripts/check-cluster.sh [NODES]      (default 3; environment: KEYS, BASE_PORT)
set -euo pipefail
cd "$(dirname "$0")/.."

NODES="${1:-3}"; KEYS="${KEYS:-100}"; BASE_PORT="${BASE_PORT:-27080}"
(( NODES >= 3 )) || { echo "needs at least 3 nodes" >&2; exit 2; }
cargo build --release --quiet
ringkv="$PWD/target/release/ringkv"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  pkill -f -- "--data-dir $work/" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

http() { echo "http://127.0.0.1:$((BASE_PORT + 10 * $1))"; }
resp_port() { echo $((BASE_PORT + 10 * $1 + 1)); }
fail() { echo "FAILED: $*" >&2; exit 1; }
json='content-type: application/json'
# The HTTP status of a request; the body goes to $work/body.
status() { curl -s -o "$work/body" -w '%{http_code}' "$@"; }

"$ringkv" dev-cluster --nodes "$NODES" --base-port "$BASE_PORT" --data-dir "$work/cluster" \
  >"$work/dev-cluster.out" 2>"$work/dev-cluster.err" &
pids+=($!)
for _ in $(seq 300); do
  [ "$(wc -l <"$work/dev-cluster.out")" -ge "$NODES" ] && break
  sleep 0.1
done
[ "$(wc -l <"$work/dev-cluster.out")" -ge "$NODES" ] || fail "dev-cluster did not start"
# Every node must see every other alive, and done joining, before the ring is complete.
for _ in $(seq 300); do
  alive=$("$ringkv" cluster status --node "$(http 0)" --json |
    grep -o '"status":"normal","liveness":"alive"' | wc -l)
  [ "$alive" -eq "$NODES" ] && break
  sleep 0.1
done
[ "$alive" -eq "$NODES" ] || fail "only $alive of $NODES nodes alive"
echo "== $NODES nodes alive"

last=$((NODES - 1)); reader=$((NODES > 3 ? 3 : 1))
echo "== 1. $KEYS keys PUT through node-0 (w=quorum), read through node-$reader (r=quorum)"
for i in $(seq "$KEYS"); do
  code=$(status -H "$json" -X PUT "$(http 0)/v1/keys/k$i?w=quorum" -d "{\"value\":\"v$i\"}")
  [ "$code" = 200 ] || fail "PUT k$i answered $code: $(cat "$work/body")"
done
for i in $(seq "$KEYS"); do
  code=$(status "$(http "$reader")/v1/keys/k$i?r=quorum")
  [ "$code" = 200 ] && grep -q "\"value\":\"v$i\"" "$work/body" || fail "GET k$i answered $code: $(cat "$work/body")"
done
echo "   $KEYS of $KEYS written and read back"

echo "== 2. each key has exactly N=3 local copies, on the nodes 'cluster endpoints' names"
for i in $(seq "$KEYS"); do
  holders=""
  for node in $(seq 0 "$last"); do
    [ "$(status "$(http "$node")/v1/keys/k$i?local=true")" = 200 ] && holders="$holders node-$node"
  done
  endpoints=$("$ringkv" cluster endpoints "k$i" --node "$(http 0)" | sort | tr '\n' ' ')
  [ "$(echo $holders | tr ' ' '\n' | sort | tr '\n' ' ')" = "$endpoints" ] ||
    fail "k$i is held by [$holders ] but endpoints are [$endpoints]"
done
"$ringkv" cluster status --node "$(http 0)"
echo "   all $KEYS keys: local copies exactly on their endpoints"

echo "== 3. node-$last killed"
kill -9 "$(pgrep -f -- "--node-id node-$last --")"
# Liveness of node-$last as node-0 sees it, waiting up to 20 s for it to become $1.
await_liveness() {
  local started=$SECONDS
  for _ in $(seq 200); do
    "$ringkv" cluster status --node "$(http 0)" --json |
      grep -q "\"id\":\"node-$last\"[^}]*\"status\":\"normal\",\"liveness\":\"$1\"" && {
      echo "   node-0 sees node-$last $1 after ~$((SECONDS - started)) s"
      return 0
    }
    sleep 0.1
  done
  fail "node-0 never saw node-$last $1"
}
await_liveness down
for i in $(seq "$KEYS"); do
  code=$(status -H "$json" -X PUT "$(http 0)/v1/keys/after$i?w=quorum" -d "{\"value\":\"a$i\"}")
  [ "$code" = 200 ] || fail "quorum PUT after$i with a node down answered $code"
  code=$(status "$(http "$reader")/v1/keys/k$i?r=quorum")
  [ "$code" = 200 ] || fail "quorum GET k$i with a node down answered $code"
done
echo "   $KEYS quorum PUTs and $KEYS quorum GETs succeeded"
down_key=""
for i in $(seq "$KEYS"); do
  "$ringkv" cluster endpoints "after$i" --node "$(http 0)" | grep -q "node-$last" && { down_key="after$i"; break; }
done
[ -n "$down_key" ] || fail "no key has node-$last among its endpoints"
code=$(status -H "$json" -X PUT "$(http 0)/v1/keys/$down_key?consistency=all&pw=all" -d '{"value":"x"}')
[ "$code" = 503 ] || fail "PUT consistency=all&pw=all answered $code"
echo "   REST consistency=all&pw=all: $code $(cat "$work/body")"
reply=$(printf 'RINGKV.CONSISTENCY ALL PW ALL\nGET %s\n' "$down_key" | redis-cli -p "$(resp_port 0)")
echo "$reply" | grep -q UNAVAILABLE || fail "RESP with ALL PW ALL answered: $reply"
echo "   RESP ALL PW ALL: $(echo "$reply" | tail -1)"

echo "== 4. siblings keyspace vs default"
status -H "$json" -X PUT "$(http 0)/v1/ks/carts" -d '{"replication":3,"conflict":"siblings"}' >/dev/null
for _ in $(seq 50); do
  [ "$(status "$(http 1)/v1/ks/carts")" = 200 ] && break
  sleep 0.1
done
status -H "$json" -X PUT "$(http 0)/v1/ks/carts/keys/c1?w=quorum" -d '{"value":"apple"}' >/dev/null
status -H "$json" -X PUT "$(http 1)/v1/ks/carts/keys/c1?w=quorum" -d '{"value":"pear"}' >/dev/null
code=$(curl -s -D "$work/headers" -o "$work/body" -w '%{http_code}' "$(http "$reader")/v1/ks/carts/keys/c1")
[ "$code" = 300 ] && grep -q apple "$work/body" && grep -q pear "$work/body" ||
  fail "two context-free writes gave $code $(cat "$work/body")"
echo "   two writes without context: $code $(cat "$work/body")"
context=$(grep -i '^x-ringkv-context:' "$work/headers" | cut -d' ' -f2 | tr -d '\r')
status -H "$json" -H "x-ringkv-context: $context" -X PUT "$(http "$reader")/v1/ks/carts/keys/c1" \
  -d '{"value":"apple,pear"}' >/dev/null
code=$(status "$(http 0)/v1/ks/carts/keys/c1")
[ "$code" = 200 ] && grep -q '"value":"apple,pear"' "$work/body" || fail "resolving write gave $code $(cat "$work/body")"
echo "   a write with that context resolves them: $code $(cat "$work/body")"
status -H "$json" -X PUT "$(http 0)/v1/keys/d1" -d '{"value":"first"}' >/dev/null
status -H "$json" -X PUT "$(http 1)/v1/keys/d1" -d '{"value":"second"}' >/dev/null
code=$(status "$(http "$reader")/v1/keys/d1")
[ "$code" = 200 ] && grep -q '"value":"second"' "$work/body" || fail "default keyspace gave $code $(cat "$work/body")"
echo "   default (lww): the later write wins: $(cat "$work/body")"

echo "== 5. node-$last restarted: the writes it missed arrive by hinted handoff"
"$ringkv" server --node-id "node-$last" --data-dir "$work/cluster/node-$last" \
  --http "127.0.0.1:$((BASE_PORT + 10 * last))" --resp "127.0.0.1:$(resp_port "$last")" \
  --listen "127.0.0.1:$((BASE_PORT + 10 * last + 2))" --zone "zone-$last" \
  >"$work/restarted.out" 2>"$work/restarted.err" &
pids+=($!)
await_liveness alive
owned=()
for i in $(seq "$KEYS"); do
  "$ringkv" cluster endpoints "after$i" --node "$(http 0)" | grep -q "node-$last" && owned+=("after$i")
done
[ ${#owned[@]} -gt 0 ] || fail "node-$last owns none of the keys written while it was down"
missing=("${owned[@]}")
for _ in $(seq 300); do
  still=()
  for key in "${missing[@]}"; do
    [ "$(status "$(http "$last")/v1/keys/$key?local=true")" = 200 ] || still+=("$key")
  done
  missing=("${still[@]+"${still[@]}"}")
  [ ${#missing[@]} -eq 0 ] && break
  sleep 0.1
done
[ ${#missing[@]} -eq 0 ] || fail "${#missing[@]} missed writes never reached node-$last: ${missing[*]}"
echo "   all ${#owned[@]} writes node-$last missed reached it, with no read of their keys"
echo "== all checks passed on $NODES nodes"
