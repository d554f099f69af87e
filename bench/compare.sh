#!/usr/bin/env bash
# Flowform side by side with the peer engines, in one run on this machine.
#
#   bench/compare.sh                       # N=10000, 3 runs of everything (about 15 minutes)
#   N=2000 RUNS=1 bench/compare.sh         # a quick look
#
# It builds release, runs the peers' harness (npm and pip packages installed in a
# scratch folder by the harness itself), then our modes on the same workload
# (bench/app), each under /usr/bin/time -v and only when the machine is quiet,
# and prints one table with ratios (bench/table.py). Everything lands in $OUT.
#
# Env: N (10000), RUNS (3), PEERS (the harness's list), CLIENTS (64),
#      PEERS_DIR (the harness; default ../shared/bench/peers beside the repo),
#      OUT (target/bench/compare-<time>), SKIP_PEERS=1 (only our modes).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
N=${N:-10000}
RUNS=${RUNS:-3}
CLIENTS=${CLIENTS:-64}
PEERS=${PEERS:-"xstate-mem py-transitions xstate-sqlite-normal xstate-sqlite bpmn-engine-mem"}
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/bench/peers}
OUT=${OUT:-$ROOT/target/bench/compare-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT/raw"
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (Debian package: time)" >&2; exit 2; }

echo "== build (release)" >&2
cargo build --release --quiet
BIN=$ROOT/target/release/flowform
"$BIN" check --dir bench/app >&2

{ uname -srm; nproc; grep -m1 'model name' /proc/cpuinfo || true; free -g | sed -n 2p; rustc --version; git rev-parse --short HEAD; } > "$OUT/machine.txt" 2>&1

if [ "${SKIP_PEERS:-0}" != 1 ]; then
  [ -f "$PEERS_DIR/run_all.sh" ] || { echo "no peer harness at $PEERS_DIR (set PEERS_DIR)" >&2; exit 2; }
  echo "== peers: $PEERS" >&2
  OUT="$OUT" NS="$N" RUNS="$RUNS" PEERS="$PEERS" PEERS_WORK="${PEERS_WORK:-${TMPDIR:-/tmp}/flowform-peers}" \
    bash "$PEERS_DIR/run_all.sh" > "$OUT/peers.txt"
fi

# Wait until other processes use under a quarter of a core (as the harness does).
CLK=$(getconf CLK_TCK)
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9; exit}' /proc/stat; }
wait_quiet() {
  local waited=0 a b
  # Dirty pages (the build, the last run's store) written back during a run
  # make the log's syncs wait for them: flush them first.
  sync
  while [ "$waited" -lt 600 ]; do
    a=$(busy); sleep 2; b=$(busy)
    [ $(( (b - a) * 100 / (2 * CLK) )) -le 25 ] && return 0
    waited=$((waited + 2))
  done
  echo "WARN: machine still busy, running anyway" >&2
}

ours() {  # name, then the bench arguments
  local name=$1; shift
  for r in $(seq 1 "$RUNS"); do
    wait_quiet
    echo "== $name N=$N run $r/$RUNS" >&2
    local base="$OUT/raw/${name}_${N}_r${r}"
    /usr/bin/time -v -o "$base.time" "$BIN" bench --dir bench/app --n "$N" "$@" > "$base.json"
  done
}
ours flowform-core --workload core
ours flowform-durable-c1 --workload durable --clients 1
ours flowform-durable-c"$CLIENTS" --workload durable --clients "$CLIENTS"
ours flowform-http-c"$CLIENTS" --workload http --clients "$CLIENTS"
# The HTTP latency target is at half the saturating rate: pace to half of what the last run reached.
HALF=$(python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['requests_per_s'] / 2))" "$OUT/raw/flowform-http-c${CLIENTS}_${N}_r${RUNS}.json")
ours "flowform-http-c$CLIENTS-${HALF}rps" --workload http --clients "$CLIENTS" --rate "$HALF"

python3 "$ROOT/bench/table.py" "$OUT" "$PEERS_DIR/aggregate.py" | tee "$OUT/table.md"
echo "== results in $OUT" >&2
