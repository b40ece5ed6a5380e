#!/bin/sh
# make-vmd-guest.sh TINY_GUEST_DIR OUTDIR
#
# The vmd stand-in's "installer ramdisk" for the vmctl_vm test: the tiny guest's
# initrd.img (setup_tiny_guest) followed by a second cpio archive (the kernel
# unpacks concatenated archives in order) that adds the virtio-net driver and
# /vmd-guest-init. The shared tiny guest has no network driver, and its /init
# stays untouched: boot with rdinit=/vmd-guest-init to get this one instead.
#   tiny.mode=dhcp         DHCP on eth0 (busybox udhcpc), print the lease, sleep
#   tiny.mode=dhcp-reboot  the same, then reboot (like bsd.rd's autoinstall)
#   tiny.mode=reboot | poweroff | silent
# It also prints what vmd put on the command line (osimage.bootdevice/bootmac).
set -eu

if [ "$#" -ne 2 ]; then
    echo "usage: $0 TINY_GUEST_DIR OUTDIR" >&2
    exit 2
fi
TINY=$1
OUTDIR=$2
KVER=$(sed -n 's/^kernel=//p' "$TINY/stamp")
MODDIR=/lib/modules/$KVER
[ -f "$MODDIR/modules.dep" ] || { echo "$0: no $MODDIR/modules.dep" >&2; exit 1; }

mkdir -p "$OUTDIR"
TMPD=$(mktemp -d "$OUTDIR/.vmd-guest.XXXXXX")
trap 'rm -rf "$TMPD"' EXIT
ROOT=$TMPD/root
mkdir -p "$ROOT/lib/modules" "$ROOT/etc"

# virtio_net and what it needs beyond the tiny guest's virtio modules, in load order
for mod in failover net_failover virtio_net; do
    rel=$(sed -n "s#^\\(.*/$mod\\.ko[.a-z]*\\):.*#\\1#p" "$MODDIR/modules.dep")
    [ -n "$rel" ] || continue                   # built into the kernel
    case $rel in
        *.ko.xz)  xz -dc "$MODDIR/$rel" > "$ROOT/lib/modules/$mod.ko" ;;
        *.ko.zst) zstd -qdc "$MODDIR/$rel" > "$ROOT/lib/modules/$mod.ko" ;;
        *.ko.gz)  gzip -dc "$MODDIR/$rel" > "$ROOT/lib/modules/$mod.ko" ;;
        *)        cp "$MODDIR/$rel" "$ROOT/lib/modules/$mod.ko" ;;
    esac
    echo "$mod.ko" >> "$ROOT/etc/net-modules.order"
done

cat > "$ROOT/etc/udhcpc.script" <<'EOF'
#!/bin/sh
case $1 in
    deconfig)
        ip addr flush dev "$interface" ;;
    bound|renew)
        ip addr add "$ip/${mask:-32}" dev "$interface"
        echo "tiny guest: lease ip=$ip subnet=$subnet router=$router dns=$dns serverid=$serverid" \
            "siaddr=${siaddr:-none} lease=$lease boot_file=${boot_file:-none} hostname=${hostname:-none}" ;;
esac
EOF

cat > "$ROOT/vmd-guest-init" <<'EOF'
#!/bin/sh
export PATH=/bin:/sbin
mkdir -p /proc /sys /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
for m in $(cat /etc/modules.order /etc/net-modules.order 2>/dev/null); do
    insmod "/lib/modules/$m" 2>/dev/null
done
mode=silent bootdevice=none bootmac=none
for arg in $(cat /proc/cmdline); do
    case $arg in
        tiny.mode=*) mode=${arg#*=} ;;
        osimage.bootdevice=*) bootdevice=${arg#*=} ;;
        osimage.bootmac=*) bootmac=${arg#*=} ;;
    esac
done
echo "tiny guest: vmd guest mode=$mode bootdevice=$bootdevice bootmac=$bootmac"

dhcp() {
    i=0
    while [ ! -e /sys/class/net/eth0 ]; do
        [ "$i" -ge 100 ] && { echo "tiny guest: ERROR: no eth0"; return 1; }
        usleep 100000
        i=$((i + 1))
    done
    echo "tiny guest: eth0 lladdr $(cat /sys/class/net/eth0/address)"
    ip link set lo up
    ip link set eth0 up
    udhcpc -i eth0 -f -q -n -t 10 -T 2 -s /etc/udhcpc.script || echo "tiny guest: ERROR: no lease"
}

case $mode in
    dhcp) dhcp ;;
    dhcp-reboot) dhcp; echo "tiny guest: rebooting"; reboot -f ;;
    reboot) echo "tiny guest: rebooting"; reboot -f ;;
    poweroff) echo "tiny guest: powering off"; poweroff -f ;;
esac
echo "tiny guest: silent"
while :; do sleep 3600; done
EOF
chmod 755 "$ROOT/vmd-guest-init" "$ROOT/etc/udhcpc.script"

find "$ROOT" -exec touch -h -d @0 {} +
( cd "$ROOT" && find . -mindepth 1 | LC_ALL=C sort |
    cpio -o -H newc -R 0:0 --reproducible --quiet ) | gzip -9 -n > "$TMPD/overlay.cpio.gz"
cat "$TINY/initrd.img" "$TMPD/overlay.cpio.gz" > "$TMPD/initrd.img"
mv -f "$TMPD/initrd.img" "$OUTDIR/initrd.img"
