#!/usr/bin/env bash
# Fetches Debian's riscv64 Linux kernel (linux-image-riscv64: a flat RISC-V Image with an EFI stub) and
# busybox-static into DIR (default target/guest-images), unless they are already there. The packages come from
# Debian's riscv64 archive through a temporary apt source that is removed again afterwards.
set -euo pipefail
dir=${1:-target/guest-images}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [ -s "$dir/Image" ] && [ -s "$dir/busybox" ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
    echo "error: fetching Debian's riscv64 kernel and busybox needs apt-get and dpkg-deb (a Debian host)" >&2
    exit 1
fi
list=/etc/apt/sources.list.d/trapeze-riscv64.list
arch_options=(-o APT::Architectures::=amd64 -o APT::Architectures::=riscv64)
cleanup() {
    rm -f "$list"
    apt-get update -qq >/dev/null 2>&1 || true
}
trap cleanup EXIT
echo 'deb [arch=riscv64] http://deb.debian.org/debian stable main' > "$list"
apt-get update -qq "${arch_options[@]}"
work=$(mktemp -d)
(
    cd "$work"
    apt-get download -qq "${arch_options[@]}" linux-image-riscv64:riscv64 busybox-static:riscv64
    kernel_package=$(dpkg-deb -f linux-image-riscv64_*.deb Depends | sed -n 's/^\(linux-image-[^ ]*\).*/\1/p')
    apt-get download -qq "${arch_options[@]}" "$kernel_package:riscv64"
    mkdir kernel busybox
    dpkg-deb -x "$kernel_package"_*.deb kernel
    dpkg-deb -x busybox-static_*.deb busybox
) 2>&1 | grep -v 'unsandboxed' || true
kernel=$(find "$work/kernel/boot" -name 'vmlinu*' | head -n 1)
if [ -z "$kernel" ] || [ ! -s "$work/busybox/usr/bin/busybox" ]; then
    echo "error: could not download Debian's riscv64 linux-image and busybox-static packages" >&2
    exit 1
fi
cp "$kernel" "$dir/Image"
cp "$work/busybox/usr/bin/busybox" "$dir/busybox"
rm -rf "$work"
echo "fetched $(basename "$kernel") and busybox into $dir"
