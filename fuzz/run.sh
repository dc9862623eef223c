#!/usr/bin/env bash
# Runs one cargo-fuzz target for a time budget and reports its throughput.
#
#   fuzz/run.sh TARGET SECONDS [libFuzzer flags...]
#
# TARGET is one of: pgoutput_decode core_machine core_executor selector_parse row_codec predicate.
# Installs cargo-fuzz if it is missing. cargo-fuzz needs nightly flags; on a
# stable toolchain RUSTC_BOOTSTRAP=1 unlocks them. New inputs go to the
# working corpus fuzz/work/TARGET (not committed); the committed seeds in
# fuzz/corpus/TARGET and the crash regressions in fuzz/regressions/TARGET are
# read but never written. A crash leaves its input in
# fuzz/artifacts/TARGET/; minimize it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz tmin --fuzz-dir fuzz -s none -a TARGET fuzz/artifacts/TARGET/crash-...
# and add the result to fuzz/regressions/TARGET/ so `cargo test` replays it.
#
# Environment: FUZZ_SANITIZER (default `none`: the code under test forbids
# `unsafe`, so AddressSanitizer mostly costs speed; use `address` to check
# dependencies too).
set -euo pipefail

usage() { echo "usage: $0 TARGET SECONDS [libFuzzer flags...]" >&2; exit 2; }
[ $# -ge 2 ] || usage
target=$1
seconds=$2
shift 2
case "$target" in
  pgoutput_decode|core_machine|core_executor|selector_parse|row_codec|predicate) ;;
  *) echo "unknown target $target" >&2; usage ;;
esac
[[ "$seconds" =~ ^[0-9]+$ ]] || usage

fuzz_dir=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$fuzz_dir")

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

work="$fuzz_dir/work/$target"
seeds="$fuzz_dir/corpus/$target"
regressions="$fuzz_dir/regressions/$target"
mkdir -p "$work" "$seeds" "$fuzz_dir/artifacts/$target"
inputs=("$work" "$seeds")
if [ -d "$regressions" ] && [ -n "$(ls -A "$regressions")" ]; then
  inputs+=("$regressions")
fi
log="$fuzz_dir/work/$target.log"

cd "$root"
echo "== building $target"
cargo fuzz build --fuzz-dir "$fuzz_dir" -s "${FUZZ_SANITIZER:-none}" -a "$target"
echo "== fuzzing $target for ${seconds}s (log: $log)"
set +e
cargo fuzz run --fuzz-dir "$fuzz_dir" -s "${FUZZ_SANITIZER:-none}" -a "$target" "${inputs[@]}" -- \
  -max_total_time="$seconds" -print_final_stats=1 -timeout=20 -rss_limit_mb=4096 "$@" >"$log" 2>&1
status=$?
set -e
tail -n 25 "$log"

execs=$(awk '/stat::number_of_executed_units/ {n = $2} END {print n + 0}' "$log")
rate=$(awk '/stat::average_exec_per_sec/ {r = $2} END {print r + 0}' "$log")
corpus=$(find "$work" -type f | wc -l)
echo
echo "== $target: ${execs} execs in ${seconds}s, ${rate} execs/s, working corpus ${corpus} inputs, exit ${status}"
if [ "$status" -ne 0 ]; then
  echo "== $target FAILED: see $log and fuzz/artifacts/$target/" >&2
fi
exit "$status"
