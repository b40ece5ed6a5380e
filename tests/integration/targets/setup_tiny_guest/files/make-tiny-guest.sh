#!/bin/sh
# make-tiny-guest.sh OUTDIR
#
# Build a tiny Linux guest for the serial-console integration tests:
#   OUTDIR/vmlinuz     copy of the newest /boot/vmlinuz-*-amd64 of this host
#   OUTDIR/initrd.img  gzip'ed newc cpio built from scratch around busybox-static
#                      (not the host's initramfs) plus the virtio-blk modules
#   OUTDIR/stamp       kernel version + sha256 of this script; when it matches
#                      and both images exist, the script does nothing (cache)
#
# Needs (Debian): linux-image-amd64, busybox-static, cpio (+ gzip, coreutils);
# xz-utils / zstd only if the kernel modules are compressed.
#
# Boot it with e.g.
#   qemu-system-x86_64 -accel tcg -machine q35 -m 256 -nographic -no-reboot \
#     -kernel OUTDIR/vmlinuz -initrd OUTDIR/initrd.img \
#     -append "console=ttyS0 panic=-1 quiet tiny.mode=answer" \
#     -drive file=disk.raw,format=raw,if=virtio
# tiny.mode = answer (default) | panic | silent | poweroff | nospace | aierror
#   -- see /init below.
set -eu

PROG=make-tiny-guest
die() { printf '%s: ERROR: %s\n' "$PROG" "$*" >&2; exit 1; }
need_pkg() { die "$1 is missing - install the Debian package '$2' (apt-get install $2)"; }
have() { command -v "$1" >/dev/null 2>&1; }

if [ "$#" -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
OUTDIR=$1

# Modules needed for a virtio-blk disk behind virtio-pci on a q35 machine;
# their dependencies are resolved from modules.dep.
WANT_MODULES="virtio_pci virtio_blk"

# ---------------------------------------------------------------- prerequisites
# newest /boot/vmlinuz-*-amd64 by version order
KERNEL=$(for k in /boot/vmlinuz-*-amd64; do [ -f "$k" ] && echo "$k"; done | sort -V | tail -n 1)
[ -n "$KERNEL" ] || need_pkg "/boot/vmlinuz-*-amd64 (host kernel)" linux-image-amd64
[ -r "$KERNEL" ] || die "$KERNEL is not readable by $(id -un)"
KVER=${KERNEL#/boot/vmlinuz-}
MODDIR=/lib/modules/$KVER
[ -f "$MODDIR/modules.dep" ] || need_pkg "$MODDIR/modules.dep (modules of kernel $KVER)" "linux-image-$KVER"

BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || need_pkg "$BUSYBOX" busybox-static
# The dynamically linked 'busybox' package also ships /bin/busybox, which would
# not run inside an initramfs without libc: insist on a static binary, i.e.
# an ELF file without a PT_INTERP program header.
elf_is_static() {
    # little-endian 64-bit ELF only (amd64)
    [ "$(od -An -N4 -c "$1" | tr -d ' \n')" = '177ELF' ] || return 1
    phoff=$(od -An -j32 -N8 -tu8 "$1" | tr -d ' \n')
    phentsize=$(od -An -j54 -N2 -tu2 "$1" | tr -d ' \n')
    phnum=$(od -An -j56 -N2 -tu2 "$1" | tr -d ' \n')
    i=0
    while [ "$i" -lt "$phnum" ]; do
        ptype=$(od -An -j$((phoff + i * phentsize)) -N4 -tu4 "$1" | tr -d ' \n')
        [ "$ptype" = 3 ] && return 1        # PT_INTERP => dynamically linked
        i=$((i + 1))
    done
    return 0
}
elf_is_static "$BUSYBOX" ||
    die "$BUSYBOX is dynamically linked (package 'busybox'?) - install the Debian package 'busybox-static' (apt-get install busybox-static)"
have cpio || need_pkg "cpio" cpio
have gzip || need_pkg "gzip" gzip
have sha256sum || need_pkg "sha256sum" coreutils

[ -r "$0" ] || die "cannot read the script itself ($0) to hash it"
SELF_HASH=$(sha256sum < "$0" | cut -d' ' -f1)
STAMP_CONTENT="kernel=$KVER
script-sha256=$SELF_HASH"

# ------------------------------------------------------------------------ cache
mkdir -p "$OUTDIR"
if [ -f "$OUTDIR/stamp" ] && [ -s "$OUTDIR/vmlinuz" ] && [ -s "$OUTDIR/initrd.img" ] &&
   [ "$(cat "$OUTDIR/stamp")" = "$STAMP_CONTENT" ]; then
    exit 0
fi

# ------------------------------------------------------------------------ build
TMPD=$(mktemp -d "$OUTDIR/.tiny-guest.XXXXXX")
trap 'rm -rf "$TMPD"' EXIT
trap 'exit 130' INT TERM HUP
ROOT=$TMPD/root
mkdir -p "$ROOT/bin" "$ROOT/dev" "$ROOT/proc" "$ROOT/sys" "$ROOT/tmp" \
         "$ROOT/etc" "$ROOT/root" "$ROOT/lib/modules"
chmod 1777 "$ROOT/tmp"

cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in $("$BUSYBOX" --list); do
    case $applet in busybox|*/*) continue ;; esac
    ln -s busybox "$ROOT/bin/$applet"
done
ln -s bin "$ROOT/sbin"
# The kernel's built-in initramfs already has /dev/console, but add it when we can.
if [ "$(id -u)" = 0 ]; then
    mknod -m 600 "$ROOT/dev/console" c 5 1 2>/dev/null || true
fi

# Resolve module paths (dependencies first) from modules.dep; modules that are
# built into the kernel (modules.builtin) are skipped.
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
        # modprobe loads the listed dependencies last-to-first
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
    # busybox insmod hands the raw buffer to init_module(2): decompress here.
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

cat > "$ROOT/init" <<'INIT_EOF'
#!/bin/sh
# tiny guest /init (busybox sh). tiny.mode= on the kernel command line selects:
#   answer (default)  Hostname/Password/Keys dialogue, answers written to /dev/vda
#   panic             real kernel panic via sysrq
#   silent            print one line, then sleep forever
#   poweroff          print one line, power off
#   nospace           say "failing in 5 s", wait 5 s, print 60 numbered lines, then
#                     fill a 1 MiB tmpfs with dd: the kernel's real ENOSPC, as busybox
#                     dd reports it ("No space left on device"); then sleep forever
#   aierror           the same, ending with the message OpenBSD's install.sub prints
#                     when install.conf lacks an answer (err_exit in install.sub:
#                     'Question has no answer in response file: "..."'); then sleep
export PATH=/bin:/sbin
umask 022

mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc 2>/dev/null
mount -t sysfs sysfs /sys 2>/dev/null
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1

fatal() {
    echo "tiny guest: ERROR: $*"
    sync
    poweroff -f
    sleep 5
    exit 1      # PID 1 exiting panics; panic=-1 + -no-reboot still ends qemu
}

cmdline_mode() {
    mode=answer
    for arg in $(cat /proc/cmdline); do
        case $arg in tiny.mode=*) mode=${arg#tiny.mode=} ;; esac
    done
    echo "$mode"
}

load_modules() {
    while IFS= read -r m; do
        [ -n "$m" ] || continue
        insmod "/lib/modules/$m" 2>/tmp/insmod.err ||
            grep -q 'File exists' /tmp/insmod.err ||
            { echo "tiny guest: WARNING: insmod $m failed: $(cat /tmp/insmod.err)"; }
    done < /etc/modules.order
}

wait_for_disk() {
    i=0
    while [ ! -b /dev/vda ]; do
        [ "$i" -ge 100 ] && return 1
        usleep 100000
        i=$((i + 1))
    done
}

tohex() { od -An -v -tx1 | tr -d ' \n'; }

mode_answer() {
    wait_for_disk || fatal "no /dev/vda after 10 s (attach -drive ...,if=virtio)"
    cr=$(printf '\r')
    saved=$(stty -g)
    echo "tiny guest: booted"

    printf 'Hostname? '
    IFS= read -r host || host=
    host=${host%"$cr"}

    stty -echo                       # before the prompt, so nothing is echoed
    printf 'Password? '
    IFS= read -r pass || pass=
    stty "$saved"
    pass=${pass%"$cr"}
    printf '\n'

    # Keys: no line editing / signals / flow control, so escape sequences and
    # control bytes arrive unchanged; ICRNL stays on, so Enter (\r) ends it.
    stty -icanon -iexten -isig -ixon min 1 time 0
    printf 'Keys? '
    IFS= read -r keys || keys=
    stty "$saved"
    keys_hex=$(printf '%s' "$keys" | tohex)

    printf 'TINYGUEST1\nhostname=%s\npassword=%s\nkeys=%s\nEND\n' \
        "$host" "$pass" "$keys_hex" > /tmp/answers
    dd if=/tmp/answers of=/dev/vda conv=notrunc 2>/dev/null
    sync
    echo "tiny guest: answers saved"
    poweroff -f
}

main() {
    load_modules
    mode=$(cmdline_mode)
    case $mode in
        answer)
            mode_answer ;;
        panic)
            echo "tiny guest: about to panic"
            echo 1 > /proc/sys/kernel/sysrq
            echo c > /proc/sysrq-trigger ;;
        silent)
            echo "tiny guest: silent"
            while :; do sleep 3600; done ;;
        nospace|aierror)
            echo "tiny guest: failing in 5 s"
            sleep 5
            i=1
            while [ "$i" -le 60 ]; do echo "tiny guest: line $i"; i=$((i + 1)); done
            if [ "$mode" = nospace ]; then
                mkdir -p /full
                mount -t tmpfs -o size=1m tmpfs /full
                dd if=/dev/zero of=/full/fill bs=64k count=64 || true
            else
                printf '\nQuestion has no answer in response file: "%s"\n' "what timezone are you in?"
            fi
            while :; do sleep 3600; done ;;
        poweroff)
            echo "tiny guest: powering off"
            sync
            poweroff -f ;;
        *)
            echo "tiny guest: ERROR: unknown tiny.mode=$mode" ;;
    esac
    return 1    # every mode ends in poweroff, panic or sleep
}

# Run in a subshell with errexit so a failing command ends up in fatal()
# instead of PID 1 exiting.
( set -eu; main )
fatal "init failed (status $?)"
INIT_EOF
chmod 755 "$ROOT/init"

# Fixed mtimes and owners make the cpio reproducible.
find "$ROOT" -exec touch -h -d @0 {} + 2>/dev/null || true
( cd "$ROOT" && find . -mindepth 1 | LC_ALL=C sort |
    cpio -o -H newc -R 0:0 --reproducible --quiet ) | gzip -9 -n > "$TMPD/initrd.img"
gzip -t "$TMPD/initrd.img"
cp "$KERNEL" "$TMPD/vmlinuz"
printf '%s\n' "$STAMP_CONTENT" > "$TMPD/stamp"

# Publish atomically; the stamp goes last so an interrupted run never leaves
# a matching stamp next to stale images.
rm -f "$OUTDIR/stamp"
mv -f "$TMPD/vmlinuz" "$OUTDIR/vmlinuz"
mv -f "$TMPD/initrd.img" "$OUTDIR/initrd.img"
mv -f "$TMPD/stamp" "$OUTDIR/stamp"
