#!/usr/bin/env bash
# Fetches Debian's riscv64 Linux kernel (linux-image-riscv64: a flat RISC-V Image with an EFI stub) and
# busybox-static into DIR (default target/guest-images), unless they are already there. With the kernel come the
# modules a busybox initramfs needs for virtio-mmio block and network devices (Debian builds virtio_mmio,
# virtio_blk and virtio_net as modules): DIR/modules holds them decompressed (busybox's insmod loads plain .ko
# files), with their dependencies from the package's modules.dep, and DIR/modules/modules.order names them one
# a line in an order insmod can load them (each after what it needs).
#
#     tools/fetch-debian-riscv64.sh [DIR]
#
# The packages come from the Debian archive this machine's apt already uses (found in /etc/apt/sources.list,
# /etc/apt/sources.list.d/*.list and the deb822 /etc/apt/sources.list.d/*.sources), so no mirror is named here
# and a machine behind its own mirror keeps using it; DEBIAN_ARCHIVE=URI overrides the choice. apt runs on a
# private source list, index and cache in a temporary directory: the machine's apt configuration and state are
# never touched, and no apt lock is held that a parallel apt-get would wait for.
set -euo pipefail
dir=${1:-target/guest-images}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
# The modules wanted, by name; each comes with what it depends on.
wanted_modules=(virtio_mmio virtio_blk virtio_net)
if [ -s "$dir/Image" ] && [ -s "$dir/busybox" ] && [ -s "$dir/modules/modules.order" ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
    echo "error: fetching Debian's riscv64 kernel and busybox needs apt-get and dpkg-deb (a Debian host)" >&2
    exit 1
fi
# Debian compresses its kernel modules (xz in Debian 13; zstd or gzip possibly elsewhere): the tool for each
# format is needed only if the package uses it, and is checked for then.

# Prints "URI SUITE" for every enabled binary (`deb`) source of this machine's apt.
apt_sources() {
    local file
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$file" ] || continue
        # One-line format: deb [options] URI SUITE [COMPONENT...]; the options may hold spaces inside [ ].
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$file" | awk '$1 == "deb" && NF >= 3 { print $2, $3 }'
    done
    for file in /etc/apt/sources.list.d/*.sources; do
        [ -r "$file" ] || continue
        # deb822 format: paragraphs of "Field: value" lines (field names are case-insensitive); a paragraph
        # stands for every combination of its URIs and Suites.
        awk '
            function flush(    i, j, n, m, uri, suite) {
                if (types ~ /(^| )deb( |$)/ && tolower(enabled) != "no") {
                    n = split(uris, uri, " "); m = split(suites, suite, " ")
                    for (i = 1; i <= n; i++) for (j = 1; j <= m; j++) print uri[i], suite[j]
                }
                types = uris = suites = ""; enabled = "yes"; field = ""
            }
            BEGIN { enabled = "yes" }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            /^[ \t]/ { if (field == "uris") uris = uris " " $0; else if (field == "suites") suites = suites " " $0; next }
            {
                split($0, kv, ":"); field = tolower(kv[1]); value = substr($0, length(kv[1]) + 2)
                if (field == "types") types = value
                else if (field == "uris") uris = value
                else if (field == "suites") suites = value
                else if (field == "enabled") { enabled = value; gsub(/[ \t]/, "", enabled) }
            }
            END { flush() }
        ' "$file"
    done
}

# The Debian archive among them: a source of one of Debian's own suites (this release's codename or a suite
# alias; security and updates suites are other archives), preferring one whose downloaded Release file says
# `Origin: Debian`, since third-party repositories also name their suites after Debian releases.
debian_archive() {
    local codename uri suite release first=""
    codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
    while read -r uri suite; do
        case "$suite" in
            "$codename" | stable | testing | unstable | sid | oldstable) ;;
            *) continue ;;
        esac
        uri=${uri%/}
        # apt's list file name for the source: the URI without its scheme, slashes as underscores.
        release=/var/lib/apt/lists/$(echo "${uri#*://}" | tr / _)_dists_${suite}_
        if grep -qsx 'Origin: Debian' "${release}InRelease" "${release}Release"; then
            echo "$uri"
            return
        fi
        first=${first:-$uri}
    done < <(apt_sources)
    echo "$first"
}

archive=${DEBIAN_ARCHIVE:-$(debian_archive)}
if [ -z "$archive" ]; then
    echo "error: no Debian archive in this machine's apt sources (/etc/apt/sources.list," \
        "/etc/apt/sources.list.d/*.list or *.sources); add one or set DEBIAN_ARCHIVE=URI" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# apt downloads as the unprivileged `_apt` user where it can: let it into the private directories.
chmod 755 "$work"
mkdir -p "$work/sources.list.d" "$work/lists/partial" "$work/cache/archives/partial" "$work/download"
# riscv64 is an official Debian architecture from Debian 13 on, hence the `stable` suite.
echo "deb [arch=riscv64] ${archive%/} stable main" > "$work/sources.list"
apt_options=(
    -o "Dir::Etc::SourceList=$work/sources.list"
    -o "Dir::Etc::SourceParts=$work/sources.list.d"
    -o "Dir::State::Lists=$work/lists"
    -o "Dir::Cache=$work/cache"
    -o APT::Architectures::=amd64
    -o APT::Architectures::=riscv64
)
echo "fetching linux-image-riscv64 and busybox-static from $archive"
apt-get update -qq "${apt_options[@]}" 2>&1 | grep -v 'unsandboxed' || true
(
    cd "$work/download"
    apt-get download -qq "${apt_options[@]}" linux-image-riscv64:riscv64 busybox-static:riscv64
    kernel_package=$(dpkg-deb -f linux-image-riscv64_*.deb Depends | sed -n 's/^\(linux-image-[^ ]*\).*/\1/p')
    apt-get download -qq "${apt_options[@]}" "$kernel_package:riscv64"
    mkdir kernel busybox
    dpkg-deb -x "$kernel_package"_*.deb kernel
    dpkg-deb -x busybox-static_*.deb busybox
) 2>&1 | grep -v 'unsandboxed' || true
kernel=$(find "$work/download/kernel/boot" -name 'vmlinu*' 2>/dev/null | head -n 1)
if [ -z "$kernel" ] || [ ! -s "$work/download/busybox/usr/bin/busybox" ]; then
    echo "error: could not download Debian's riscv64 linux-image and busybox-static packages from $archive" >&2
    exit 1
fi
module_root=
for candidate in "$work"/download/kernel/lib/modules/* "$work"/download/kernel/usr/lib/modules/*; do
    if [ -d "$candidate/kernel" ]; then
        module_root=$candidate
        break
    fi
done
if [ -z "$module_root" ]; then
    echo "error: the kernel package has no lib/modules/VERSION/kernel directory" >&2
    exit 1
fi

# Debian's package has no modules.dep (depmod makes it on installation, and need not be on this host): each
# module's dependencies are read from its own .modinfo section (`depends=NAME,NAME`). Module names use _ where
# their file names may use -. The modules go into a fresh directory, moved over the old one only once complete,
# so an interrupted fetch leaves no partial set behind that the check above would take for a complete one.
modules=$dir/modules.new
rm -rf "$modules"
mkdir "$modules"
find "$module_root/kernel" -name '*.ko*' | awk '{
    name = $0; sub(/.*\//, "", name); sub(/\.ko(\.[a-z]+)?$/, "", name); gsub(/-/, "_", name); print name, $0
}' > "$work/module-index"
order=()
# `visit NAME`: decompresses module NAME into $modules and appends its dependencies, then NAME, to `order`, each
# once: an order insmod can follow.
visit() {
    local name=${1//-/_} seen path tool dependency
    for seen in "${order[@]}"; do
        [ "$seen" = "$name" ] && return
    done
    path=$(awk -v name="$name" '$1 == name { print $2; exit }' "$work/module-index")
    if [ -z "$path" ]; then
        # Built into the kernel (modules.builtin lists such "modules"): nothing to load.
        if grep -q "/${name}\.ko\$" "$module_root/modules.builtin" 2>/dev/null \
            || grep -q "/${name//_/-}\.ko\$" "$module_root/modules.builtin" 2>/dev/null; then
            return
        fi
        echo "error: the kernel package has no module $name" >&2
        exit 1
    fi
    case "$path" in
        *.ko.xz) tool=xz ;;
        *.ko.zst) tool=zstd ;;
        *.ko.gz) tool=gzip ;;
        *.ko) tool=cat ;;
        *)
            echo "error: module $path: unknown compression" >&2
            exit 1
            ;;
    esac
    if [ "$tool" != cat ] && ! command -v "$tool" >/dev/null; then
        echo "error: Debian's kernel modules are compressed with $tool: install it (apt-get install" \
            "$( [ "$tool" = xz ] && echo xz-utils || echo "$tool")) and run this again" >&2
        exit 1
    fi
    if [ "$tool" = cat ]; then
        cp "$path" "$modules/$name.ko"
    else
        "$tool" -dc "$path" > "$modules/$name.ko"
    fi
    for dependency in $(tr '\0' '\n' < "$modules/$name.ko" \
        | LC_ALL=C awk -F= '$1 == "depends" && !done { gsub(/,/, " ", $2); print $2; done = 1 }'); do
        visit "$dependency"
    done
    order+=("$name")
}
for name in "${wanted_modules[@]}"; do
    visit "$name"
done
printf '%s.ko\n' "${order[@]}" > "$modules/modules.order"
cp "$kernel" "$dir/Image"
cp "$work/download/busybox/usr/bin/busybox" "$dir/busybox"
rm -rf "$dir/modules"
mv "$modules" "$dir/modules"
echo "fetched $(basename "$kernel"), busybox and the modules $(tr '\n' ' ' < "$dir/modules/modules.order")into $dir"
