#!/usr/bin/env bash
# Runs prebuilt riscv-tests binaries (riscv-software-src/riscv-tests, e.g. rv64ui-p-add, rv64ud-p-fadd,
# rv64si-p-csr, rv64mi-p-illegal, or the `v` environment's rv64ui-v-add) under trapeze and prints one line
# per test and a closing `N passed, N failed` line.
#
#   tools/riscv-tests.sh DIR [PATTERN]
#
# DIR holds the built test ELFs; PATTERN (a shell glob, default `rv64*-[pv]-*`: the rv64ui/um/ua/uc/uf/ud
# user suites and the rv64si/mi privileged ones) selects them. The tests' sources are not part of this
# repository: build them with riscv-tests' own Makefile (rv64uc with -march=rv64gc, the others with
# -march=rv64g), or by hand with
#   riscv64-unknown-elf-gcc -march=rv64g -mabi=lp64 -static -mcmodel=medany -fvisibility=hidden \
#     -nostdlib -nostartfiles -I env/p -I isa/macros/scalar -T env/p/link.ld isa/rv64ui/add.S -o rv64ui-p-add
# A test passes when trapeze exits 0 (the test wrote 1 to `tohost`); a failing test's number is taken from
# trapeze's `reported failure (code N)` message, since its exit status can collide with 2 and 3. Environment: TRAPEZE (the binary,
# default target/release/trapeze, built if missing), MAX_INSNS (default 10000000), TIMEOUT (seconds, 60).
set -u

dir=${1:?usage: tools/riscv-tests.sh DIR [PATTERN]}
pattern=${2:-rv64*-[pv]-*}
root=$(cd "$(dirname "$0")/.." && pwd)
trapeze=${TRAPEZE:-$root/target/release/trapeze}
max_insns=${MAX_INSNS:-10000000}
limit=${TIMEOUT:-60}

if [ ! -x "$trapeze" ]; then
    (cd "$root" && cargo build --release -p trapeze-hosted) || exit 2
fi

passed=0
failed=0
failures=()
shopt -s nullglob
for test in "$dir"/$pattern; do
    case "$test" in *.dump | *.S | *.o) continue ;; esac
    [ -f "$test" ] || continue
    name=$(basename "$test")
    err=$(timeout "$limit" "$trapeze" run "$test" --max-insns "$max_insns" </dev/null 2>&1 >/dev/null)
    status=$?
    if [ "$status" -eq 0 ]; then
        passed=$((passed + 1))
        echo "PASS $name"
    else
        failed=$((failed + 1))
        failures+=("$name")
        code=$(printf '%s\n' "$err" | sed -n 's/.*reported failure (code \([0-9]*\)).*/\1/p' | tail -n 1)
        if [ -n "$code" ]; then
            why="failed test $code"
        else
            case "$status" in
                3) why="instruction limit" ;;
                124) why="timeout" ;;
                *) why="host error $status" ;;
            esac
        fi
        echo "FAIL $name ($why)"
    fi
done

if [ $((passed + failed)) -eq 0 ]; then
    echo "no test matching '$pattern' in $dir" >&2
    exit 2
fi
[ "$failed" -eq 0 ] || echo "failed: ${failures[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
