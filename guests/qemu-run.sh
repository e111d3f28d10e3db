#!/usr/bin/env bash
# Builds the guest programs and runs each on real QEMU (`qemu-system-riscv64 -M virt -bios none`), the oracle
# the trapeze emulator is held to. Prints each guest's console output and QEMU's exit status (0 = finisher pass).
# Needs QEMU: apt-get install -y qemu-system-misc. Usage: guests/qemu-run.sh [GUEST...]
set -uo pipefail
cd "$(dirname "$0")"
cargo build --release --target riscv64gc-unknown-none-elf || exit 1
bin=target/riscv64gc-unknown-none-elf/release
status=0
for guest in "${@:-hello traps arith amo demo sv39 interrupts fpu idle uart-irq spinlock}"; do
    for g in $guest; do
        echo "== $g"
        timeout 20 qemu-system-riscv64 -M virt -bios none -nographic -kernel "$bin/$g" </dev/null
        rc=$?
        echo "== $g: exit status $rc"
        [ "$rc" -eq 0 ] || status=1
    done
done
exit $status
