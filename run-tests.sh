#!/usr/bin/env bash
# Runs every trapeze test, as CI does: installs the Rust targets it needs, checks formatting and lints, builds
# the core for the bare-metal targets, then runs the whole test suite (which builds the guest programs).
set -euo pipefail
cd "$(dirname "$0")"
# The isolation figures of this run only: the hostile-input tests (and fuzz targets) append to it.
rm -f target/isolation.txt

toolchain=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
if ! command -v rustup >/dev/null; then
    echo "error: rustup is required (the Rust toolchain $toolchain and its bare-metal targets are installed through it)" >&2
    exit 1
fi
rustup target add --toolchain "$toolchain" riscv64gc-unknown-none-elf thumbv7m-none-eabi
rustup component add --toolchain "$toolchain" rustfmt clippy

# Real firmware the suite boots: Debian's OpenSBI and U-Boot for QEMU virt; QEMU itself, which boots the
# native VMM board (boards/qemu-virt-rv64) in the board test; gdb-multiarch, which drives the gdb stub test; and
# xz, for the kernel modules fetched below.
missing=()
for package in opensbi u-boot-qemu; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
command -v qemu-system-riscv64 >/dev/null || missing+=(qemu-system-misc)
command -v gdb-multiarch >/dev/null || missing+=(gdb-multiarch)
command -v xz >/dev/null || missing+=(xz-utils)
# A C++ compiler, for libFuzzer (built by libfuzzer-sys for the fuzz targets, tools/fuzz.sh).
command -v c++ >/dev/null || missing+=(g++)
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]}"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; }; then
        echo "error: the tests need the Debian packages ${missing[*]}: install them with apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi

# Debian's riscv64 kernel, its virtio modules and busybox for the Linux boot tests.
./tools/fetch-debian-riscv64.sh target/guest-images

# The board's defmt log is decoded on the host by defmt-print, installed into target/tools.
if [ ! -x target/tools/bin/defmt-print ]; then
    echo "== installing defmt-print"
    if ! cargo install --locked defmt-print --root target/tools; then
        echo "error: the board test needs defmt-print: cargo install --locked defmt-print --root target/tools" >&2
        exit 1
    fi
fi

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
(cd boards/qemu-virt-rv64 && cargo fmt -- --check && cargo clippy --release -- -D warnings)
(cd guests && cargo fmt --all -- --check && cargo clippy --release --workspace -- -D warnings)
(cd fuzz && cargo fmt -- --check)

echo "== the no_std core on bare-metal targets, and the native VMM board"
cargo build -p trapeze --target riscv64gc-unknown-none-elf
cargo build -p trapeze --target thumbv7m-none-eabi
(cd boards/qemu-virt-rv64 && cargo build --release)

echo "== tests"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
rm -f target/board-bench.txt target/board-linux-bench.txt
cargo test --workspace --release 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# The native board's benchmark figures (its test writes them; cargo captures test output).
for figures in target/board-bench.txt target/board-linux-bench.txt; do
    if [ -f "$figures" ]; then cat "$figures"; fi
done
# Hostile input again, with the checks release drops: the core's unit and property tests (random guests and
# instructions, page tables, virtio chains, SBI calls, bridge, spool, printer) and the containment tests, built
# with overflow checks and debug assertions (the `hardened` profile). Then every fuzz target for a bounded
# time (FUZZ_SECONDS each, default 40, as many at once as there are cores; tools/fuzz.sh appends its figures
# to target/isolation.txt).
echo "== hardened: overflow-checked property and hostile-guest tests"
set +e
# The translator's tests too where it exists (x86-64 hosts).
dbt=()
if [ "$(uname -m)" = x86_64 ]; then dbt=(--features dbt); fi
# The core's own tests, and its integration tests: random guests (`vm`), random words through the decoder
# (`isa_oracle`), random operands through the soft-float (`fpu`).
cargo test -p trapeze --profile hardened "${dbt[@]}" --lib --test vm --test isa_oracle --test fpu 2>&1 | tee -a "$log"
hardened=${PIPESTATUS[0]}
cargo test -p trapeze-hosted --profile hardened --test contain 2>&1 | tee -a "$log"
hardened_contain=${PIPESTATUS[0]}
echo "== fuzzing"
./tools/fuzz.sh "${FUZZ_SECONDS:-40}"
fuzzed=$?
set -e
[ "$hardened" -eq 0 ] && [ "$hardened_contain" -eq 0 ] || status=1
[ "$fuzzed" -eq 0 ] || status=1
# The isolation figures (tests/common/isolation.rs): per kind of hostile input, how many were tried, how many got
# out of what the guest owns, how many panicked the VMM.
if [ -f target/isolation.txt ]; then
    echo "== isolation (target/isolation.txt)"
    LC_ALL=C sort -t "$(printf '\t')" -k1,1 target/isolation.txt | awk -F '\t' '
        NF == 4 { if (!($1 in inputs)) order[n++] = $1; inputs[$1] += $2; escapes[$1] += $3; panics[$1] += $4 }
        END {
            printf "%-40s %12s %8s %8s\n", "kind", "inputs", "escapes", "panics"
            for (i = 0; i < n; i++) {
                k = order[i]
                printf "%-40s %12.0f %8.0f %8.0f\n", k, inputs[k], escapes[k], panics[k]
                e += escapes[k]; p += panics[k]
            }
            printf "%-40s %12s %8.0f %8.0f\n", "all kinds", "", e, p
        }'
fi
# One closing line over every test binary, so the summary is not the last (often empty) doc-test run's.
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "all tests: %d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
