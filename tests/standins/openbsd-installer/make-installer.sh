#!/bin/sh
# make-installer.sh OUTDIR [PUBKEY]
#
# Build the OpenBSD installer stand-in (see README.md beside this script):
#   OUTDIR/bsd.rd       copy of the newest /boot/vmlinuz-*-amd64 of this host; it
#                       stands for OpenBSD's bsd.rd (a Linux kernel cannot carry
#                       its ramdisk, so the ramdisk is a separate initrd)
#   OUTDIR/ramdisk.img  gzip'ed newc cpio built from scratch: busybox-static, the
#                       kernel modules for virtio disks and NICs and ext4, helper
#                       programs copied with their shared libraries (sfdisk,
#                       mke2fs, mkswap, extlinux + syslinux's mbr.bin,
#                       signify-openbsd), the public key
#                       /etc/signify/openbsd-78-base.pub (PUBKEY, e.g. the one
#                       make-mirror.sh wrote as MIRROR/openbsd-78-base.pub;
#                       without it SHA256.sig cannot be verified), and the
#                       installer: /init, /dot.profile, /install.sub with the
#                       links /install, /upgrade, /autoinstall (ramdisk/*)
#   OUTDIR/stamp        kernel version + sha256 of the scripts, the key and the
#                       helper packages' versions; when it matches and both
#                       images exist, the script does nothing (cache)
#
# Needs (Debian): linux-image-amd64, busybox-static, cpio, fdisk, e2fsprogs,
# util-linux, extlinux, syslinux-common, signify-openbsd (+ gzip, coreutils,
# libc-bin for ldd); xz-utils / zstd only if the kernel modules are compressed.
#
# Boot it like the vmd stand-in does:
#   qemu-system-x86_64 -accel tcg -machine pc -m 512 -nographic -no-reboot \
#     -kernel OUTDIR/bsd.rd -initrd OUTDIR/ramdisk.img \
#     -append "console=ttyS0,115200 [osimage.bootmac=<mac of the first NIC>]" \
#     -drive file=disk.raw,format=raw,if=virtio -nic user,model=virtio-net-pci
# osimage.bootmac= stands for "netbooted" (vmd -B): the installer then starts
# the autoinstall by itself after 5 seconds, as OpenBSD's dot.profile does.
set -eu

PROG=make-installer
die() { printf '%s: ERROR: %s\n' "$PROG" "$*" >&2; exit 1; }
need_pkg() { die "$1 is missing - install the Debian package '$2' (apt-get install $2)"; }
have() { command -v "$1" >/dev/null 2>&1; }

if [ "$#" -lt 1 ] || [ "$#" -gt 2 ] || [ -z "$1" ]; then
    echo "usage: $0 OUTDIR [PUBKEY]" >&2
    exit 2
fi
OUTDIR=$1
PUBKEY=${2:-}
VERSION=78

# Modules for virtio disks and NICs behind virtio-pci (vmd's vioblk and vio),
# ext4 for the root file system (crc32c is a soft dependency of ext4, not in
# modules.dep); af_packet for udhcpc when it is not built in. Resolved with
# their dependencies from modules.dep; built-in ones are skipped.
WANT_MODULES="virtio_pci virtio_blk virtio_net ext4 crc32c_generic af_packet"

# Helper programs: path and the Debian package that has it.
HELPERS="
/usr/sbin/sfdisk:fdisk
/usr/sbin/mke2fs:e2fsprogs
/usr/sbin/mkswap:util-linux
/usr/bin/extlinux:extlinux
/usr/bin/signify-openbsd:signify-openbsd
"
SYSLINUX_MBR=/usr/lib/syslinux/mbr/mbr.bin

# ---------------------------------------------------------------- prerequisites
KERNEL=$(for k in /boot/vmlinuz-*-amd64; do [ -f "$k" ] && echo "$k"; done | sort -V | tail -n 1)
[ -n "$KERNEL" ] || need_pkg "/boot/vmlinuz-*-amd64 (host kernel)" linux-image-amd64
[ -r "$KERNEL" ] || die "$KERNEL is not readable by $(id -un)"
KVER=${KERNEL#/boot/vmlinuz-}
MODDIR=/lib/modules/$KVER
[ -f "$MODDIR/modules.dep" ] || need_pkg "$MODDIR/modules.dep (modules of kernel $KVER)" "linux-image-$KVER"

BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || need_pkg "$BUSYBOX" busybox-static
# The dynamically linked 'busybox' package also ships /bin/busybox: insist on
# a static binary, i.e. an ELF file without a PT_INTERP program header.
elf_is_static() {
    [ "$(od -An -N4 -c "$1" | tr -d ' \n')" = '177ELF' ] || return 1
    phoff=$(od -An -j32 -N8 -tu8 "$1" | tr -d ' \n')
    phentsize=$(od -An -j54 -N2 -tu2 "$1" | tr -d ' \n')
    phnum=$(od -An -j56 -N2 -tu2 "$1" | tr -d ' \n')
    i=0
    while [ "$i" -lt "$phnum" ]; do
        ptype=$(od -An -j$((phoff + i * phentsize)) -N4 -tu4 "$1" | tr -d ' \n')
        [ "$ptype" = 3 ] && return 1
        i=$((i + 1))
    done
    return 0
}
elf_is_static "$BUSYBOX" ||
    die "$BUSYBOX is dynamically linked (package 'busybox'?) - install the Debian package 'busybox-static' (apt-get install busybox-static)"
have cpio || need_pkg cpio cpio
have gzip || need_pkg gzip gzip
have sha256sum || need_pkg sha256sum coreutils
have ldd || need_pkg ldd libc-bin
for h in $HELPERS; do
    [ -x "${h%%:*}" ] || need_pkg "${h%%:*}" "${h#*:}"
done
[ -f "$SYSLINUX_MBR" ] || need_pkg "$SYSLINUX_MBR" syslinux-common
if [ -n "$PUBKEY" ]; then
    [ -f "$PUBKEY" ] || die "no public key $PUBKEY"
    head -n 1 "$PUBKEY" | grep -q '^untrusted comment: ' || die "$PUBKEY is not a signify public key"
fi

HERE=$(cd "$(dirname "$0")" && pwd)
RAMDISK_FILES="init dot.profile install.sub udhcpc.script"
for f in $RAMDISK_FILES; do
    [ -r "$HERE/ramdisk/$f" ] || die "missing $HERE/ramdisk/$f"
done
[ -r "$0" ] || die "cannot read the script itself ($0) to hash it"
SELF_HASH=$( (cat "$0"; for f in $RAMDISK_FILES; do cat "$HERE/ramdisk/$f"; done) | sha256sum | cut -d' ' -f1)
KEY_HASH=none
[ -n "$PUBKEY" ] && KEY_HASH=$(sha256sum < "$PUBKEY" | cut -d' ' -f1)
PKG_VERSIONS=$(for p in busybox-static fdisk e2fsprogs util-linux extlinux syslinux-common signify-openbsd libc6; do
    dpkg-query -W -f='${Package}=${Version} ' "$p" 2>/dev/null || true; done)
STAMP_CONTENT="kernel=$KVER
script-sha256=$SELF_HASH
pubkey-sha256=$KEY_HASH
packages=$PKG_VERSIONS"

# ------------------------------------------------------------------------ cache
mkdir -p "$OUTDIR"
if [ -f "$OUTDIR/stamp" ] && [ -s "$OUTDIR/bsd.rd" ] && [ -s "$OUTDIR/ramdisk.img" ] &&
   [ "$(cat "$OUTDIR/stamp")" = "$STAMP_CONTENT" ]; then
    exit 0
fi

# ------------------------------------------------------------------------ build
TMPD=$(mktemp -d "$OUTDIR/.installer.XXXXXX")
trap 'rm -rf "$TMPD"' EXIT
trap 'exit 130' INT TERM HUP
ROOT=$TMPD/root
mkdir -p "$ROOT/bin" "$ROOT/dev" "$ROOT/proc" "$ROOT/sys" "$ROOT/tmp" "$ROOT/mnt" "$ROOT/mnt2" \
         "$ROOT/etc/signify" "$ROOT/root" "$ROOT/lib/modules" "$ROOT/usr/bin" "$ROOT/usr/sbin" \
         "$ROOT/usr/lib/syslinux/mbr" "$ROOT/var/db/dhcpleased" "$ROOT/var/run"
chmod 1777 "$ROOT/tmp"

cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in $("$BUSYBOX" --list); do
    case $applet in busybox|*/*) continue ;; esac
    ln -s busybox "$ROOT/bin/$applet"
done
ln -s bin "$ROOT/sbin"
if [ "$(id -u)" = 0 ]; then
    mknod -m 600 "$ROOT/dev/console" c 5 1 2>/dev/null || true
fi

# Helpers with the shared libraries ldd names (and the dynamic loader).
copy_with_libs() {
    src=$1
    dst=$ROOT$src
    mkdir -p "$(dirname "$dst")"
    cp -L "$src" "$dst"
    ldd "$src" 2>/dev/null | awk '/=> \// { print $3 } /^[ \t]*\// { print $1 }' | while read -r lib; do
        [ -f "$lib" ] || continue
        mkdir -p "$ROOT$(dirname "$lib")"
        [ -f "$ROOT$lib" ] || cp -L "$lib" "$ROOT$lib"
    done
}
for h in $HELPERS; do
    copy_with_libs "${h%%:*}"
done
cp "$SYSLINUX_MBR" "$ROOT/usr/lib/syslinux/mbr/mbr.bin"
[ -f /etc/mke2fs.conf ] && cp /etc/mke2fs.conf "$ROOT/etc/mke2fs.conf"
# busybox-static resolves names through glibc's NSS files/dns modules.
printf 'hosts: files dns\n' > "$ROOT/etc/nsswitch.conf"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost\n' > "$ROOT/etc/hosts"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$ROOT/etc/passwd"
printf 'root:x:0:\n' > "$ROOT/etc/group"
if [ -n "$PUBKEY" ]; then
    cp "$PUBKEY" "$ROOT/etc/signify/openbsd-$VERSION-base.pub"
else
    echo "$PROG: WARNING: no PUBKEY given - the installer cannot verify SHA256.sig" >&2
fi

# Kernel modules (dependencies first).
BUILTIN=/dev/null
[ -f "$MODDIR/modules.builtin" ] && BUILTIN=$MODDIR/modules.builtin
MODLIST=$(awk -v want="$WANT_MODULES" '
    function norm(p,  b) {
        b = p; sub(/.*\//, "", b); sub(/\.ko(\.(xz|zst|gz))?:?$/, "", b)
        gsub(/-/, "_", b); return b
    }
    FNR == 1 { fileno++ }
    fileno == 1 { builtin[norm($1)] = 1; next }
    {
        key = $1; sub(/:$/, "", key); n = norm(key)
        path[n] = key; deps[n] = ""
        for (i = NF; i >= 2; i--) deps[n] = deps[n] " " norm($i)
    }
    function visit(n,   a, k, i) {
        if (n in seen) return
        seen[n] = 1
        if (n in builtin) return
        if (!(n in path)) { missing = missing " " n; return }
        k = split(deps[n], a, " ")
        for (i = 1; i <= k; i++) visit(a[i])
        print path[n]
    }
    END {
        k = split(want, w, " ")
        for (i = 1; i <= k; i++) { gsub(/-/, "_", w[i]); visit(w[i]) }
        if (missing != "") { print "missing kernel modules:" missing > "/dev/stderr"; exit 3 }
    }' "$BUILTIN" "$MODDIR/modules.dep") ||
    die "cannot resolve $WANT_MODULES in $MODDIR/modules.dep"

: > "$ROOT/etc/modules.order"
for rel in $MODLIST; do
    src=$MODDIR/$rel
    [ -f "$src" ] || die "$src listed in modules.dep but missing"
    base=${rel##*/}
    case $base in
        *.ko.xz)  have xz   || need_pkg "xz (for $base)" xz-utils
                  base=${base%.xz};  xz -dc   "$src" > "$ROOT/lib/modules/$base" ;;
        *.ko.zst) have zstd || need_pkg "zstd (for $base)" zstd
                  base=${base%.zst}; zstd -qdc "$src" > "$ROOT/lib/modules/$base" ;;
        *.ko.gz)  base=${base%.gz};  gzip -dc "$src" > "$ROOT/lib/modules/$base" ;;
        *.ko)     cp "$src" "$ROOT/lib/modules/$base" ;;
        *)        die "unexpected module file name $rel" ;;
    esac
    echo "$base" >> "$ROOT/etc/modules.order"
done

# The installer.
install -m 755 "$HERE/ramdisk/init" "$ROOT/init"
install -m 644 "$HERE/ramdisk/dot.profile" "$ROOT/dot.profile"
install -m 755 "$HERE/ramdisk/install.sub" "$ROOT/install.sub"
install -m 755 "$HERE/ramdisk/udhcpc.script" "$ROOT/etc/udhcpc.script"
for l in install upgrade autoinstall; do
    ln -s install.sub "$ROOT/$l"
done

# Fixed mtimes and owners make the cpio reproducible.
find "$ROOT" -exec touch -h -d @0 {} + 2>/dev/null || true
( cd "$ROOT" && find . -mindepth 1 | LC_ALL=C sort |
    cpio -o -H newc -R 0:0 --reproducible --quiet ) | gzip -9 -n > "$TMPD/ramdisk.img"
gzip -t "$TMPD/ramdisk.img"
cp "$KERNEL" "$TMPD/bsd.rd"
printf '%s\n' "$STAMP_CONTENT" > "$TMPD/stamp"

# Publish atomically; the stamp goes last.
rm -f "$OUTDIR/stamp"
mv -f "$TMPD/bsd.rd" "$OUTDIR/bsd.rd"
mv -f "$TMPD/ramdisk.img" "$OUTDIR/ramdisk.img"
mv -f "$TMPD/stamp" "$OUTDIR/stamp"
