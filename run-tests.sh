#!/usr/bin/env bash
# Runs every trapeze test, as CI does: installs the Rust targets it needs, checks formatting and lints, builds
# the core for the bare-metal targets, then runs the whole test suite (which builds the guest programs).
set -euo pipefail
cd "$(dirname "$0")"

toolchain=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
if ! command -v rustup >/dev/null; then
    echo "error: rustup is required (the Rust toolchain $toolchain and its bare-metal targets are installed through it)" >&2
    exit 1
fi
rustup target add --toolchain "$toolchain" riscv64gc-unknown-none-elf thumbv7m-none-eabi
rustup component add --toolchain "$toolchain" rustfmt clippy

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

echo "== the no_std core on bare-metal targets"
cargo build -p trapeze --target riscv64gc-unknown-none-elf
cargo build -p trapeze --target thumbv7m-none-eabi

echo "== tests"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --release 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary, so the summary is not the last (often empty) doc-test run's.
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "all tests: %d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
