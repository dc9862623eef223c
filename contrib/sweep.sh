#!/usr/bin/env bash
# The simulator sweeps to run before landing a change to the machine, the
# sources or the checkers — far beyond the seeds CI sweeps:
#
#   1. 100,000 seeds of `all` on the memory store (about 14 min on 2 cores),
#   2. 10,000 seeds of `storm`, `commits` and `churn` (30,000 runs, ~7 min:
#      `all` alone has missed bugs these found),
#   3. 300 seeds of `all` on fjall and on SQLite (600 runs, ~1 min),
#
# each from a window of seeds no earlier sweep used (BASE, random by
# default and printed), so every sweep covers new ground. A failing seed is
# printed with the command that replays it; keep it in
# `flashsync-sim/tests/exactness.rs` once fixed.
#
# Usage: contrib/sweep.sh [BASE] [PERCENT]
#   BASE     first seed of every window (default: random, a multiple of 10^6)
#   PERCENT  how much of each sweep to run (default 100; 10 for a quick look)
#
# Exits 1 if any run failed. Reports go to $SWEEP_DIR (default: a new
# temporary directory): one JSON line per run, failures first.
set -euo pipefail
cd "$(dirname "$0")/.."

base=${1:-$(( (RANDOM * 32768 + RANDOM) % 1000 * 1000000 + 1000000000 ))}
percent=${2:-100}
if ! [[ $base =~ ^[0-9]+$ && $percent =~ ^[0-9]+$ && $percent -ge 1 && $percent -le 100 ]]; then
  echo "usage: contrib/sweep.sh [BASE] [PERCENT]   (BASE a seed, PERCENT 1..100)" >&2
  exit 2
fi
dir=${SWEEP_DIR:-$(mktemp -d -t flashsync-sweep-XXXXXX)}
mkdir -p "$dir"
jobs=$(nproc 2>/dev/null || echo 2)

cargo build --release -q -p flashsync-sim
# Its own link to the binary (a copy across file systems): a rebuild while
# the sweep runs writes a new file and must not change what it runs.
sim="$dir/flashsync-sim"
ln -f target/release/flashsync-sim "$sim" 2>/dev/null || cp target/release/flashsync-sim "$sim"

echo "sweeping from seed $base at $percent% on $jobs thread(s); reports in $dir"
failed=0
sweep() {
  local name=$1 count=$2 scenarios=$3 stores=$4
  count=$(( count * percent / 100 ))
  [ "$count" -ge 1 ] || count=1
  local seeds="$base..$(( base + count ))"
  echo "== $name: seeds $seeds, scenarios $scenarios, stores $stores"
  # The simulator exits non-zero when a run fails; the summary says which.
  if ! "$sim" --seeds "$seeds" --scenario "$scenarios" --store "$stores" --jobs "$jobs" -q \
      > "$dir/$name.jsonl" 2> "$dir/$name.log"; then
    failed=1
  fi
  grep -E "run\(s\)|invariant|replay:" "$dir/$name.log" || true
}
sweep all 100000 all memory
sweep named 10000 storm,commits,churn memory
sweep stores 300 all fjall,sqlite

if [ "$failed" -ne 0 ]; then
  echo "FAILED: replay each seed above, fix, and keep it in flashsync-sim/tests/exactness.rs"
  exit 1
fi
echo "every run passed"
