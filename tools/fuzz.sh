#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/, libFuzzer through libfuzzer-sys, on the stable toolchain with rustc's
# sanitizer-coverage passes) and runs each for SECONDS (default 40), as many at once as the host has cores
# (FUZZ_JOBS overrides), starting from its seed corpus in fuzz/corpus/TARGET. New inputs go to
# target/fuzz-corpus/TARGET, crashes to target/fuzz-artifacts/TARGET-*; the repository's corpus is only read. Every run appends a line to target/isolation.txt, tab-separated:
#
#     fuzz TARGET <TAB> INPUTS (executions libFuzzer reports) <TAB> ESCAPES <TAB> PANICS
#
# (ESCAPES counts a failed check that something stayed inside guest memory, PANICS any other failure.)
#
#     tools/fuzz.sh [SECONDS] [TARGET...]        (all targets by default; exits non-zero if any failed)
#
# A crash reproduces with: target/fuzz/HOST-TRIPLE/release/TARGET target/fuzz-artifacts/FILE
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
seconds=${1:-40}
shift || true
host=$(rustc -vV | sed -n "s/^host: //p")
bin_dir=$root/target/fuzz/$host/release
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^trapeze-fuzz$')
fi

# Coverage instrumentation on the stable compiler: what cargo-fuzz passes, minus the nightly-only sanitizer.
# The explicit --target keeps the flags off build scripts and proc macros.
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares"
echo "== building fuzz targets: ${targets[*]}"
build_args=()
for target in "${targets[@]}"; do build_args+=(--bin "$target"); done
(cd fuzz && CARGO_TARGET_DIR="$root/target/fuzz" cargo build --release --target "$host" "${build_args[@]}")
unset RUSTFLAGS

mkdir -p target/fuzz-artifacts target/fuzz-status
# One run of TARGET: its figures line, and its status in target/fuzz-status/TARGET.
fuzz_one() {
    local target=$1
    local scratch=target/fuzz-corpus/$target
    local seeds=fuzz/corpus/$target
    local log=target/fuzz-artifacts/$target.log
    mkdir -p "$scratch" "$seeds"
    local status=0
    "$bin_dir/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
        -artifact_prefix="target/fuzz-artifacts/$target-" "$scratch" "$seeds" >"$log" 2>&1 || status=$?
    local runs
    runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -1)
    [ -n "$runs" ] || runs=$(sed -n 's/^#\([0-9]*\).*/\1/p' "$log" | tail -1)
    [ -n "$runs" ] || runs=0
    local escapes=0 panics=0
    if [ "$status" -ne 0 ]; then
        if grep -qiE "outside (guest )?(ram|memory)|escape" "$log"; then escapes=1; else panics=1; fi
        {
            echo "fuzz $target FAILED (exit $status): see $log"
            grep -E "panicked|Test unit written|ERROR" "$log" || tail -20 "$log"
        } >&2
    fi
    echo "fuzz $target: $runs inputs in ${seconds}s, $escapes escapes, $panics panics"
    # One short append per target: whole lines even with runs in parallel.
    printf 'fuzz %s\t%s\t%s\t%s\n' "$target" "$runs" "$escapes" "$panics" >>target/isolation.txt
    echo "$status" >"target/fuzz-status/$target"
}

# As many targets at once as the host has cores (FUZZ_JOBS overrides): nothing else runs meanwhile.
jobs=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}
echo "== fuzzing ${#targets[@]} targets for ${seconds}s each, $jobs at a time"
running=0
for target in "${targets[@]}"; do
    rm -f "target/fuzz-status/$target"
    fuzz_one "$target" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
done
wait || true
failed=0
for target in "${targets[@]}"; do
    [ "$(cat "target/fuzz-status/$target" 2>/dev/null || echo missing)" = 0 ] || failed=1
done
exit "$failed"
