#!/bin/sh
# make-mirror.sh OUTDIR [SECKEY]
#
# Build a stand-in OpenBSD 7.8 mirror for the installer stand-in (see
# make-installer.sh and README.md beside this script):
#
#   OUTDIR/pub/OpenBSD/7.8/amd64/
#       bsd            the kernel of the base set (Debian's linux-image-amd64)
#       bsd.rd         this host's newest /boot/vmlinuz-*-amd64, the same kernel
#                      make-installer.sh boots as the installer's bsd.rd
#       base78.tgz     a small Debian 12 root file system (mmdebstrap) standing
#                      for OpenBSD's base set; extracted by the installer with tar
#       INSTALL.amd64  a short text; install.sub install_files() asks
#                      "INSTALL.amd64 not found. Use sets found here anyway?" when
#                      a directory lacks it
#       SHA256         "SHA256 (file) = hex" lines, as OpenBSD's sha256(1) -b writes
#       SHA256.sig     signify(1) embedded signature of SHA256, made with a test key
#                      whose secret key file is named openbsd-78-base.sec, so that
#                      its comment reads "verify with openbsd-78-base.pub"
#       index.txt      ls -l style listing, as OpenBSD mirrors have; the installer
#                      takes each line's last word as a file name (install_http())
#   OUTDIR/openbsd-78-base.pub  the public key (give it to make-installer.sh)
#   OUTDIR/keys/openbsd-78-base.{sec,pub}  the test key pair, made when SECKEY is
#                      not given (SECKEY: an existing signify secret key, no
#                      passphrase, named openbsd-78-base.sec, .pub beside it)
#   OUTDIR/stamp       cache stamp; when it matches, the script does nothing
#
# The base set is Debian 12 ("bookworm", or the host's release) made with
# mmdebstrap from the host's own apt sources (/etc/apt/sources.list and
# /etc/apt/sources.list.d/*), variant minbase plus: linux-image-amd64,
# initramfs-tools (initrd with virtio + ext4 only), systemd-sysv, udev, dbus,
# openssh-server, python3, iproute2, tzdata, opendoas (doas), with
# systemd-networkd enabled for the DHCP the installer configures. No docs, man
# pages or locales (dpkg path-exclude), kernel modules pruned to what a vmd-like
# guest needs, so that it extracts in reasonable time under TCG. Stand-ins of the
# OpenBSD userland that install.site(5) scripts use: /usr/sbin/pkg_add.
#
# Needs (Debian, as root): mmdebstrap, signify-openbsd, linux-image-amd64 (the
# host kernel for bsd.rd), tar, gzip, coreutils, and the Debian mirror the
# host's apt configuration names.
set -eu

PROG=make-mirror
die() { printf '%s: ERROR: %s\n' "$PROG" "$*" >&2; exit 1; }
need_pkg() { die "$1 is missing - install the Debian package '$2' (apt-get install $2)"; }
have() { command -v "$1" >/dev/null 2>&1; }

if [ "$#" -lt 1 ] || [ "$#" -gt 2 ] || [ -z "$1" ]; then
    echo "usage: $0 OUTDIR [SECKEY]" >&2
    exit 2
fi
OUTDIR=$1
SECKEY=${2:-}

VNAME=7.8
VERSION=78
ARCH=amd64
RELDIR=pub/OpenBSD/$VNAME/$ARCH
PACKAGES=linux-image-amd64,initramfs-tools,systemd-sysv,udev,dbus,openssh-server,python3,iproute2,tzdata,opendoas

# ---------------------------------------------------------------- prerequisites
[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap builds the base set as root here)"
have mmdebstrap || need_pkg mmdebstrap mmdebstrap
have signify-openbsd || need_pkg signify-openbsd signify-openbsd
have sha256sum || need_pkg sha256sum coreutils
have tar || need_pkg tar tar
have gzip || need_pkg gzip gzip
KERNEL=$(for k in /boot/vmlinuz-*-amd64; do [ -f "$k" ] && echo "$k"; done | sort -V | tail -n 1)
[ -n "$KERNEL" ] || need_pkg "/boot/vmlinuz-*-amd64 (host kernel)" linux-image-amd64

# The host's apt sources: mmdebstrap pastes each file into the chroot's sources
# (a deb822 .sources file works as is), so no mirror name is written here.
SOURCES=
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    grep -q '^[[:space:]]*[^#[:space:]]' "$f" || continue
    SOURCES="$SOURCES $f"
done
[ -n "$SOURCES" ] || die "no apt sources in /etc/apt/sources.list{,.d/} - configure the Debian mirror first"
SUITE=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ -n "$SUITE" ] || die "cannot read VERSION_CODENAME from /etc/os-release"

HERE=$(cd "$(dirname "$0")" && pwd)
[ -r "$0" ] || die "cannot read the script itself ($0) to hash it"
SELF_HASH=$(cat "$0" "$HERE/pkg_add" | sha256sum | cut -d' ' -f1)
# shellcheck disable=SC2086 # $SOURCES is a list of file names without blanks
SRC_HASH=$(cat $SOURCES | sha256sum | cut -d' ' -f1)
if [ -n "$SECKEY" ]; then
    [ -f "$SECKEY" ] || die "no secret key $SECKEY"
    [ "${SECKEY##*/}" = "openbsd-$VERSION-base.sec" ] ||
        die "the secret key must be named openbsd-$VERSION-base.sec (signify names the public key after it)"
    [ -f "${SECKEY%.sec}.pub" ] || die "no ${SECKEY%.sec}.pub beside $SECKEY"
    KEY_HASH=$(sha256sum < "${SECKEY%.sec}.pub" | cut -d' ' -f1)
else
    KEY_HASH=generated
fi
STAMP_CONTENT="script-sha256=$SELF_HASH
suite=$SUITE
sources-sha256=$SRC_HASH
bsd.rd=${KERNEL#/boot/vmlinuz-}
key=$KEY_HASH
packages=$PACKAGES"

# ------------------------------------------------------------------------ cache
mkdir -p "$OUTDIR"
REL=$OUTDIR/$RELDIR
if [ -f "$OUTDIR/stamp" ] && [ "$(cat "$OUTDIR/stamp")" = "$STAMP_CONTENT" ] &&
   [ -s "$REL/base$VERSION.tgz" ] && [ -s "$REL/SHA256.sig" ] && [ -s "$OUTDIR/openbsd-$VERSION-base.pub" ]; then
    exit 0
fi

# ------------------------------------------------------------------------ build
TMPD=$(mktemp -d "$OUTDIR/.mirror.XXXXXX")
cleanup() {
    # mmdebstrap unmounts what it mounted; be sure nothing is left before rm -rf.
    for m in proc sys dev/pts dev; do
        mountpoint -q "$TMPD/root/$m" 2>/dev/null && umount -l "$TMPD/root/$m" 2>/dev/null
    done
    rm -rf "$TMPD"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# The test key (signify(1): the comment of a signature names the public key
# after the secret key's file name, "verify with openbsd-78-base.pub").
if [ -z "$SECKEY" ]; then
    mkdir -p "$OUTDIR/keys"
    if [ ! -s "$OUTDIR/keys/openbsd-$VERSION-base.sec" ] || [ ! -s "$OUTDIR/keys/openbsd-$VERSION-base.pub" ]; then
        rm -f "$OUTDIR/keys/openbsd-$VERSION-base.sec" "$OUTDIR/keys/openbsd-$VERSION-base.pub"
        signify-openbsd -G -n -c "openbsd $VNAME base public key (osimage.builder TEST KEY)" \
            -p "$OUTDIR/keys/openbsd-$VERSION-base.pub" -s "$OUTDIR/keys/openbsd-$VERSION-base.sec"
    fi
    SECKEY=$OUTDIR/keys/openbsd-$VERSION-base.sec
fi

# Hooks for mmdebstrap (it runs an executable hook with the chroot as $1).
mkdir -p "$TMPD/hooks"
cat > "$TMPD/hooks/essential.sh" <<'HOOK_EOF'
#!/bin/sh
# Before linux-image-amd64 is unpacked: a small initrd (virtio + ext4 only),
# gzip for a fast unpack under TCG.
set -eu
R=$1
mkdir -p "$R/etc/initramfs-tools/conf.d" "$R/etc/initramfs-tools/hooks"
cat > "$R/etc/initramfs-tools/conf.d/osimage-standin.conf" <<'EOF'
# osimage.builder OpenBSD stand-in: only the modules a vmd-like guest needs.
MODULES=list
COMPRESS=gzip
EOF
cat > "$R/etc/initramfs-tools/hooks/osimage-standin" <<'EOF'
#!/bin/sh
# osimage.builder OpenBSD stand-in: virtio disks (vioblk, vioscsi) and ext4 root.
case ${1:-} in prereqs) exit 0 ;; esac
. /usr/share/initramfs-tools/hook-functions
for m in virtio_pci virtio_blk virtio_scsi sd_mod ext4 crc32c_generic; do
    manual_add_modules "$m"
    echo "$m" >> "$DESTDIR/conf/modules"
done
EOF
chmod 755 "$R/etc/initramfs-tools/hooks/osimage-standin"
HOOK_EOF

cat > "$TMPD/hooks/customize.sh" <<'HOOK_EOF'
#!/bin/sh
# After all packages: prune, then make the tree look like a fresh set.
set -eu
R=$1
KVER=$(find "$R/lib/modules" -mindepth 1 -maxdepth 1 -exec basename {} \; | sort -V | tail -n 1)

# Kernel modules: keep what a vmd / qemu guest can use (virtio, block, SCSI,
# file systems, networking core, crypto and library modules).
M=$R/lib/modules/$KVER/kernel
for d in "$M"/*; do
    case ${d##*/} in arch|crypto|fs|lib|net|drivers|block|mm|virt) ;; *) rm -rf "$d" ;; esac
done
for d in "$M"/drivers/*; do
    case ${d##*/} in virtio|block|scsi|char|net|md|nvme|input|hid|cdrom|ata) ;; *) rm -rf "$d" ;; esac
done
for d in "$M"/drivers/net/*; do
    case ${d##*/} in virtio_net.ko|net_failover.ko|tun.ko|veth.ko|dummy.ko|macvlan.ko|bonding|team) ;; *) rm -rf "$d" ;; esac
done
for d in "$M"/net/*; do
    case ${d##*/} in wireless|mac80211|bluetooth|sunrpc|ceph|rxrpc|sctp|tipc|nfc|6lowpan|ieee802154|mac802154|can|atm|batman-adv|openvswitch) rm -rf "$d" ;; esac
done
rm -rf "$M"/arch/x86/kvm     # no nested virtualisation (and its ccp dependency is pruned)
rm -rf "$M"/fs/ocfs2 "$M"/fs/gfs2 "$M"/fs/xfs "$M"/fs/btrfs "$M"/fs/nfs "$M"/fs/nfsd "$M"/fs/ceph \
       "$M"/fs/cifs "$M"/fs/smbfs_common "$M"/fs/f2fs "$M"/fs/ntfs3 "$M"/fs/ubifs "$M"/fs/jffs2 "$M"/fs/dlm
rm -rf "$R/lib/firmware"/* 2>/dev/null || true
chroot "$R" depmod -a "$KVER"
chroot "$R" update-initramfs -u -k "$KVER" >/dev/null

# rc(8) makes ssh host keys at first boot on OpenBSD; Debian's postinst made
# them now, so drop them and let the first boot make them (ssh-keygen -A
# before sshd -t).
rm -f "$R"/etc/ssh/ssh_host_*
mkdir -p "$R/etc/systemd/system/ssh.service.d"
cat > "$R/etc/systemd/system/ssh.service.d/osimage-standin-keygen.conf" <<'EOF'
# osimage.builder OpenBSD stand-in: host keys at first boot, as OpenBSD's rc(8) does.
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
EOF

# The network: the installer writes /etc/systemd/network/*.network.
chroot "$R" systemctl enable systemd-networkd.service >/dev/null 2>&1
chroot "$R" systemctl mask systemd-networkd-wait-online.service >/dev/null 2>&1

# OpenBSD's group wheel (install.sub adds the user to it) and skel with .ssh
# (OpenBSD's /etc/skel has .ssh/authorized_keys, root has /root/.ssh).
chroot "$R" groupadd -r wheel 2>/dev/null || true
mkdir -p "$R/etc/skel/.ssh" "$R/root/.ssh"
: > "$R/etc/skel/.ssh/authorized_keys"
: > "$R/root/.ssh/authorized_keys"
chmod 700 "$R/etc/skel/.ssh" "$R/root/.ssh"
chmod 600 "$R/etc/skel/.ssh/authorized_keys" "$R/root/.ssh/authorized_keys"

# Per-system files: the installer writes them (hostname, resolv.conf, fstab),
# systemd makes machine-id at first boot.
rm -f "$R/etc/hostname" "$R/etc/resolv.conf" "$R/var/lib/dbus/machine-id"
: > "$R/etc/machine-id"
printf '# /etc/fstab: written by the installer\n' > "$R/etc/fstab"
rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/*.bin "$R"/var/cache/apt/archives/*.deb \
       "$R"/var/cache/debconf/*-old "$R"/var/log/apt/* "$R"/tmp/* 2>/dev/null || true
: > "$R/var/log/dpkg.log"
HOOK_EOF
chmod 755 "$TMPD/hooks/essential.sh" "$TMPD/hooks/customize.sh"

echo "$PROG: building the base set with mmdebstrap ($SUITE, minbase + $PACKAGES)" >&2
# shellcheck disable=SC2086  # SOURCES is a list of file names without blanks
mmdebstrap --variant=minbase --include="$PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --essential-hook="$TMPD/hooks/essential.sh" \
    --customize-hook="$TMPD/hooks/customize.sh" \
    "$SUITE" "$TMPD/root" $SOURCES >&2

R=$TMPD/root
KVER=$(find "$R/lib/modules" -mindepth 1 -maxdepth 1 -exec basename {} \; | sort -V | tail -n 1)
[ -f "$R/boot/vmlinuz-$KVER" ] || die "no kernel in the base tree"
[ -f "$R/boot/initrd.img-$KVER" ] || die "no initrd in the base tree"

# pkg_add(1) stand-in for install.site(5) scripts.
install -m 755 "$HERE/pkg_add" "$R/usr/sbin/pkg_add"

mkdir -p "$TMPD/rel"
# The base set's kernel is the bsd set (the installer copies it to /bsd and the
# boot loader loads /bsd); the tree keeps Debian's name as a link to it.
cp "$R/boot/vmlinuz-$KVER" "$TMPD/rel/bsd"
ln -sf ../bsd "$R/boot/vmlinuz-$KVER"
cp "$KERNEL" "$TMPD/rel/bsd.rd"

echo "$PROG: packing base$VERSION.tgz" >&2
( cd "$R" && tar --numeric-owner --format=gnu -czf "$TMPD/rel/base$VERSION.tgz" \
    --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' --exclude='./run/*' --exclude='./tmp/*' . )

cat > "$TMPD/rel/INSTALL.$ARCH" <<EOF
OpenBSD $VNAME/$ARCH stand-in release directory (osimage.builder tests).

Not OpenBSD: bsd and base$VERSION.tgz are a Debian kernel and root file system,
bsd.rd is the Linux kernel of the installer stand-in. SHA256.sig is signed with
a test key. See tests/standins/openbsd-installer/README.md in osimage.builder.
EOF

( cd "$TMPD/rel" && sha256sum --tag bsd bsd.rd "base$VERSION.tgz" "INSTALL.$ARCH" > SHA256 )
cp "$SECKEY" "$TMPD/openbsd-$VERSION-base.sec"     # signify names the key after the file
signify-openbsd -S -e -s "$TMPD/openbsd-$VERSION-base.sec" -m "$TMPD/rel/SHA256" -x "$TMPD/rel/SHA256.sig"
rm -f "$TMPD/openbsd-$VERSION-base.sec"
signify-openbsd -V -e -p "${SECKEY%.sec}.pub" -x "$TMPD/rel/SHA256.sig" -m /dev/null >/dev/null ||
    die "the new SHA256.sig does not verify"
( cd "$TMPD/rel" && LC_ALL=C ls -ln bsd bsd.rd "base$VERSION.tgz" "INSTALL.$ARCH" SHA256 SHA256.sig > index.txt )

# Publish; the stamp goes last so an interrupted run never leaves a matching stamp.
rm -f "$OUTDIR/stamp"
rm -rf "$REL"
mkdir -p "$(dirname "$REL")"
mv "$TMPD/rel" "$REL"
cp "${SECKEY%.sec}.pub" "$OUTDIR/openbsd-$VERSION-base.pub"
printf '%s\n' "$STAMP_CONTENT" > "$OUTDIR/stamp"
echo "$PROG: $REL ready ($(du -sh "$REL/base$VERSION.tgz" | cut -f1) base set)" >&2
