#!/bin/sh
# Boots the board ELF ($1) under QEMU `virt` (-m 512M, no firmware). The console (the VMM's lines and each VM's
# prefixed output, from the physical UART) goes to this script's stdout; the defmt stream goes to $DEFMT_OUT
# (default: defmt.bin beside the ELF), decoded with `defmt-print -e ELF < FILE`. QEMU writes semihosting stdout,
# which carries defmt, to its own stdout, so that is redirected to the file and the UART gets our stdout (fd 3).
# QEMU's exit status is the board's: 0 when every VM passed.
set -eu
elf="$1"
out="${DEFMT_OUT:-$elf.defmt}"
exec 3>&1
exec qemu-system-riscv64 -M virt -m 512M -bios none -display none -monitor none -no-reboot \
    -chardev file,id=console,path=/dev/fd/3 -serial chardev:console \
    -semihosting-config enable=on,target=native \
    -kernel "$elf" >"$out"
