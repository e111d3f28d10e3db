#!/bin/sh
# Boots the board ELF ($1) under QEMU `virt` (-smp 4: four real harts, which the board all uses; -m 1G; no
# firmware, so every hart starts at the ELF entry). The console (the VMM's lines and each VM's
# prefixed output, from the physical UART) goes to this script's stdout; the defmt stream goes to $DEFMT_OUT
# (default: defmt.bin beside the ELF), decoded with `defmt-print -e ELF < FILE`. QEMU writes semihosting stdout,
# which carries defmt, to its own stdout, so that is redirected to the file and the UART gets our stdout (fd 3).
# QEMU's exit status is the board's: 0 when every VM passed. Optional: LINUX_BLOCK_FILE (a Linux boot block) and
# DISK_FILE (a raw disk image for U-Boot's partition and the disk-pattern VMs'), DEDICATED_DISK_FILE (a second raw
# image, given whole to one VM), NIC=none (no physical NIC; by default one on QEMU's user-mode network).
# SMP=N: N real harts instead of four (the board brings up those that answer, at most four).
set -eu
elf="$1"
out="${DEFMT_OUT:-$elf.defmt}"
extra=""
# A Linux boot block (header, kernel, initramfs: see LINUX_BLOCK in src/main.rs) makes the board boot Linux.
if [ -n "${LINUX_BLOCK_FILE:-}" ]; then
    extra="-device loader,file=$LINUX_BLOCK_FILE,addr=0xa0000000,force-raw=on"
fi
# A raw disk image becomes the machine's virtio-blk disk (in the last virtio-mmio slot); the board gives its first
# MBR partition to U-Boot, which reads it and writes its sector 1.
if [ -n "${DISK_FILE:-}" ]; then
    extra="$extra -drive file=$DISK_FILE,format=raw,if=none,id=hd0 -device virtio-blk-device,drive=hd0"
fi
# A second raw image becomes a second virtio-blk disk (in the slot below the first's), which the board dedicates to
# one VM whole.
if [ -n "${DEDICATED_DISK_FILE:-}" ]; then
    extra="$extra -drive file=$DEDICATED_DISK_FILE,format=raw,if=none,id=hd1 -device virtio-blk-device,drive=hd1"
fi
# The physical NIC, on QEMU's user-mode network (its DHCP server gives 10.0.2.15): the bridge's uplink, which the
# board drives with virtio-drivers. Last on the command line, so it takes the slot below the disks' and they keep
# theirs (QEMU fills the virtio-mmio slots from the last one down, in command-line order). NIC=none leaves it out.
if [ "${NIC:-user}" != none ]; then
    extra="$extra -netdev user,id=net0 -device virtio-net-device,netdev=net0"
fi
exec 3>&1
# The real hart must implement no instruction the virtual hart lacks, or guest code in U-mode would run it instead
# of trapping (a critical instruction, see `trapeze analyze`): QEMU 7.2's default CPU has the bit-manipulation
# extensions, which the virtual RV64GC hart does not.
cpu="rv64,zba=false,zbb=false,zbc=false,zbs=false"
# shellcheck disable=SC2086
exec qemu-system-riscv64 -M virt -cpu "$cpu" -smp "${SMP:-4}" -m 1G -bios none -display none -monitor none -no-reboot \
    -chardev file,id=console,path=/dev/fd/3 -serial chardev:console \
    -semihosting-config enable=on,target=native \
    $extra -kernel "$elf" >"$out"
