#!/usr/bin/env bash
# Runs prebuilt riscv-tests binaries (riscv-software-src/riscv-tests, e.g. rv64ui-p-add, rv64ud-p-fadd,
# rv64si-p-csr, rv64mi-p-illegal, or the `v` environment's rv64ui-v-add) under trapeze, on each engine, and prints
# one line per test and engine, a `suite-env engine: N/M` line per suite, environment and engine, and a closing
# `N passed, N failed` line over all runs.
#
#   tools/riscv-tests.sh DIR [PATTERN]
#
# DIR holds the built test ELFs; PATTERN (a shell glob, default `rv64*-[pv]-*`: the rv64ui/um/ua/uc/uf/ud
# user suites and the rv64si/mi privileged ones) selects them. The tests' sources are not part of this
# repository: build them with riscv-tests' own Makefile (rv64uc with -march=rv64gc, the others with
# -march=rv64g), or by hand with
#   riscv64-unknown-elf-gcc -march=rv64g -mabi=lp64 -static -mcmodel=medany -fvisibility=hidden \
#     -nostdlib -nostartfiles -I env/p -I isa/macros/scalar -T env/p/link.ld isa/rv64ui/add.S -o rv64ui-p-add
# (the `v` environment also links env/v/entry.S, env/v/vm.c and env/v/string.c, with -DENTROPY=... -std=gnu99 -O2
# and -I env/v instead of env/p). A test passes when trapeze exits 0 (the test wrote 1 to `tohost`); a failing
# test's number is taken from trapeze's `reported failure (code N)` message, since its exit status can collide with
# 2 and 3. Environment: ENGINE (the engines to run, passed as `--engine`, space-separated; default
# `threaded interp`), TRAPEZE (the binary, default target/release/trapeze, built if missing), MAX_INSNS (default
# 10000000), TIMEOUT (seconds, 60).
set -u

dir=${1:?usage: tools/riscv-tests.sh DIR [PATTERN]}
pattern=${2:-rv64*-[pv]-*}
root=$(cd "$(dirname "$0")/.." && pwd)
trapeze=${TRAPEZE:-$root/target/release/trapeze}
max_insns=${MAX_INSNS:-10000000}
limit=${TIMEOUT:-60}
engines=${ENGINE:-threaded interp}

if [ ! -x "$trapeze" ]; then
    (cd "$root" && cargo build --release -p trapeze-hosted) || exit 2
fi

passed=0
failed=0
failures=()
declare -A suite_passed suite_total
shopt -s nullglob
tests=()
for test in "$dir"/$pattern; do
    case "$test" in *.dump | *.S | *.o) continue ;; esac
    [ -f "$test" ] && tests+=("$test")
done
if [ ${#tests[@]} -eq 0 ]; then
    echo "no test matching '$pattern' in $dir" >&2
    exit 2
fi
for engine in $engines; do
    for test in "${tests[@]}"; do
        name=$(basename "$test")
        # rv64ui-p-add -> rv64ui-p
        group="${name%-*} $engine"
        err=$(timeout "$limit" "$trapeze" run "$test" --engine "$engine" --max-insns "$max_insns" </dev/null 2>&1 >/dev/null)
        status=$?
        suite_total[$group]=$((${suite_total[$group]:-0} + 1))
        if [ "$status" -eq 0 ]; then
            passed=$((passed + 1))
            suite_passed[$group]=$((${suite_passed[$group]:-0} + 1))
            echo "PASS $name ($engine)"
        else
            failed=$((failed + 1))
            failures+=("$name($engine)")
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
            echo "FAIL $name ($engine: $why)"
        fi
    done
done

for group in $(printf '%s\n' "${!suite_total[@]}" | tr ' ' '@' | sort); do
    group=${group//@/ }
    echo "${group% *} ${group#* }: ${suite_passed[$group]:-0}/${suite_total[$group]}"
done
[ "$failed" -eq 0 ] || echo "failed: ${failures[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
