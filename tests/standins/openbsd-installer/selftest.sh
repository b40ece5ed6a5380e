#!/bin/sh
# selftest.sh [-n] [WORKDIR]
#
# Proves the OpenBSD installer stand-in end to end, without the vmd stand-in:
#  1. builds (or reuses, cached) the stand-in mirror and installer in WORKDIR
#     (default: ${TMPDIR:-/tmp}/osimage-openbsd-installer-selftest);
#  2. serves WORKDIR/www with python3 -m http.server on 127.0.0.1: the mirror's
#     release directory plus a site78.tgz whose install.site(5) writes a marker
#     and runs "pkg_add -I python3", an install.conf as the product renders it
#     and a disklabel(8) template;
#  3. boots bsd.rd + ramdisk.img under qemu (TCG, -machine pc, 4G raw virtio
#     disk, user-mode networking: the host is 10.0.2.2 for the guest,
#     -no-reboot). By default it stands for a vmd -B boot: osimage.bootmac= on
#     the kernel command line and slirp's boot file "auto_install", so the
#     installer starts the autoinstall by itself, fails to fetch
#     http://10.0.2.2/<mac>-install.conf etc. (nothing on port 80) and asks
#     "Response file location?", answered with the server's install.conf URL
#     on the serial console. With -n it boots without bootmac and answers "a"
#     at the "(I)nstall, (U)pgrade, (A)utoinstall or (S)hell?" prompt;
#  4. waits for the reboot that ends every autoinstall (qemu exits);
#  5. boots the installed disk (no -kernel), waits for the login prompt on the
#     serial console and logs in over ssh with the key install.conf gave root,
#     then checks what the response file and install.site asked for.
# Logs: WORKDIR/install.log, WORKDIR/boot.log. Exit status 0 when all passed.
#
# Needs (Debian, as root for make-mirror.sh): qemu-system-x86, python3,
# openssh-client, plus what make-mirror.sh and make-installer.sh need.
set -eu

PROG=selftest
die() { printf '%s: ERROR: %s\n' "$PROG" "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

NETBOOT=1
if [ "${1:-}" = -n ]; then
    NETBOOT=0
    shift
fi
[ "$#" -le 1 ] || { echo "usage: $0 [-n] [WORKDIR]" >&2; exit 2; }
WORK=${1:-${TMPDIR:-/tmp}/osimage-openbsd-installer-selftest}
HERE=$(cd "$(dirname "$0")" && pwd)

QEMU=qemu-system-x86_64
have "$QEMU" || die "$QEMU is missing - install the Debian package qemu-system-x86"
have python3 || die "python3 is missing"
have ssh || die "ssh is missing - install the Debian package openssh-client"
have ssh-keygen || die "ssh-keygen is missing - install the Debian package openssh-client"

mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)

t0=$(date +%s)
sh "$HERE/make-mirror.sh" "$WORK/mirror"
sh "$HERE/make-installer.sh" "$WORK/installer" "$WORK/mirror/openbsd-78-base.pub"
echo "$PROG: mirror and installer ready ($(( $(date +%s) - t0 )) s)"

# ------------------------------------------------------------------ the server
REL=pub/OpenBSD/7.8/amd64
WWW=$WORK/www
rm -rf "$WWW"
mkdir -p "$WWW/$REL" "$WORK/site"
for f in "$WORK/mirror/$REL"/*; do
    [ "${f##*/}" = index.txt ] && continue
    ln -s "$f" "$WWW/$REL/${f##*/}"
done

cat > "$WORK/site/install.site" <<'EOF'
#!/bin/sh
# install.site(5) of the installer stand-in's self test.
set -e
echo "install.site ran at $(date -u +%Y-%m-%dT%H:%M:%SZ)" > /etc/osimage-selftest.marker
pkg_add -I python3
if pkg_add -I no-such-package 2>/tmp/pkg_add.err; then
    echo "pkg_add accepted a package that does not exist" >&2
    exit 1
fi
grep -q "Can't find no-such-package" /tmp/pkg_add.err
rm -f /tmp/pkg_add.err
echo 'permit nopass puffy' > /etc/doas.conf
exit 0
EOF
chmod 755 "$WORK/site/install.site"
tar -C "$WORK/site" --owner=0 --group=0 -czf "$WWW/$REL/site78.tgz" install.site
( cd "$WWW/$REL" && LC_ALL=C ls -lnL > index.txt )

rm -f "$WORK/id_selftest" "$WORK/id_selftest.pub"
ssh-keygen -q -t ed25519 -N '' -C selftest-build -f "$WORK/id_selftest"
BUILD_KEY=$(cat "$WORK/id_selftest.pub")

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
HOST=10.0.2.2:$PORT

# A site set is in no SHA256, so install.sub install_files() asks both
# "Checksum test for site78.tgz failed. Continue anyway?" and then
# "Unverified sets: site78.tgz. Continue without verification?" (both default no).
# The password "standin" as bcrypt ($2b$, cost 10): the installer keeps it.
# shellcheck disable=SC2016 # a bcrypt hash, not an expansion
ROOT_HASH='$2b$10$abcdefghijklmnopqrstuuvNLoaCJFZdzlKl5zsn8M28uh6R6Dk5y'
cat > "$WWW/install.conf" <<EOF
System hostname = standin
Password for root account = $ROOT_HASH
Public ssh key for root account = $BUILD_KEY
Start sshd(8) by default = yes
Change the default console to com0 = yes
Which speed should com0 use = 115200
Setup a user = puffy
Full name for user puffy = Puffy
Password for user puffy = *************
Public ssh key for user puffy = ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsx9EkMM9C+Q0H9BsXxz3Ewq4MPW2OcGAMKaF1aOC6p puffy
Allow root ssh login = prohibit-password
What timezone are you in = Europe/Paris
Which disk is the root disk = sd0
URL to autopartitioning template for disklabel = http://$HOST/disklabel
Location of sets = http
HTTP proxy URL = none
HTTP Server = $HOST
Server directory = $REL
Set name(s) = -all bsd bsd.rd base78.tgz site78.tgz
Checksum test for site78.tgz failed. Continue anyway = yes
Continue without verification = yes
EOF
cat > "$WWW/disklabel" <<'EOF'
/       1G-*    90%
swap    80M-256M 10%
EOF

SERVER_PID=
QEMU_PID=
cleanup() {
    if [ -n "$QEMU_PID" ]; then kill "$QEMU_PID" 2>/dev/null || true; fi
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
( cd "$WWW" && exec python3 -m http.server "$PORT" --bind 127.0.0.1 ) > "$WORK/http.log" 2>&1 &
SERVER_PID=$!
sleep 1
kill -0 "$SERVER_PID" 2>/dev/null || die "the HTTP server did not start (see $WORK/http.log)"

# ------------------------------------------------------------ serial console
# drive.py SOCKET LOG TIMEOUT [expect=send ...] [--ok TEXT] [--fail TEXT ...]:
# connect to qemu's serial socket, log everything, answer prompts, and end
# when qemu closes the socket (exit 0 if --ok text was seen and no --fail
# text), or at the timeout (exit 2). With --stop-at TEXT it ends when TEXT
# shows (exit 0). Prints "T+<s> <what>" milestones.
cat > "$WORK/drive.py" <<'PY'
import os, socket, sys, time
sock_path, log_path, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
rules, ok, fail, stop, marks = [], [], [], [], []
args = sys.argv[4:]
while args:
    a = args.pop(0)
    if a == '--ok': ok.append(args.pop(0))
    elif a == '--fail': fail.append(args.pop(0))
    elif a == '--stop-at': stop.append(args.pop(0))
    elif a == '--mark': marks.append(args.pop(0))
    else:
        k, v = a.split('=', 1)
        rules.append([k, v.replace('\\r', '\r')])
start = time.monotonic()
s = None
while s is None:
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(sock_path)
    except OSError:
        s = None
        if time.monotonic() - start > 30:
            sys.exit('drive: no serial socket ' + sock_path)
        time.sleep(0.2)
s.settimeout(1)
seen = ''
log = open(log_path, 'w')
done_marks = set()
def milestone(what):
    print('  T+%4ds %s' % (time.monotonic() - start, what), flush=True)
while True:
    if time.monotonic() - start > timeout:
        print('drive: timeout after %ds' % timeout, file=sys.stderr)
        sys.exit(2)
    try:
        data = s.recv(65536)
    except socket.timeout:
        continue
    except OSError:
        data = b''
    if not data:
        break
    text = data.decode('utf-8', 'replace')
    log.write(text)
    log.flush()
    seen += text
    for m in marks:
        if m not in done_marks and m in seen:
            done_marks.add(m)
            milestone(m)
    for r in rules:
        if r[0] in seen[-4096:] and r[1] is not None:
            time.sleep(0.5)
            s.sendall(r[1].encode())
            milestone('sent %r after %r' % (r[1], r[0]))
            r[1] = None
    for f in fail:
        if f in seen:
            milestone('FAILED: %r' % f)
            time.sleep(2)
            sys.exit(1)
    for t in stop:
        if t in seen:
            milestone(t)
            sys.exit(0)
milestone('console closed (qemu exited)')
missing = [t for t in ok if t not in seen]
if missing:
    print('drive: never saw %r' % missing, file=sys.stderr)
    sys.exit(1)
sys.exit(0)
PY

MAC=52:54:00:4f:42:53
DISK=$WORK/disk.raw
rm -f "$DISK"
truncate -s 4G "$DISK"

APPEND="console=ttyS0,115200"
NETDEV="user,id=n0"
if [ "$NETBOOT" = 1 ]; then
    APPEND="$APPEND osimage.bootmac=$MAC"
    NETDEV="$NETDEV,bootfile=auto_install"
fi

run_qemu() {   # extra qemu arguments...
    rm -f "$WORK/serial.sock"
    "$QEMU" -accel tcg -machine pc -m 1024 -smp 1 -nodefaults -display none -no-reboot \
        -chardev "socket,id=ser0,path=$WORK/serial.sock,server=on,wait=on" -serial chardev:ser0 \
        -drive "file=$DISK,format=raw,if=virtio" \
        -device "virtio-net-pci,netdev=n0,mac=$MAC,romfile=" "$@" > "$WORK/qemu.log" 2>&1 &
    QEMU_PID=$!
}

echo "$PROG: installing (netboot=$NETBOOT), console in $WORK/install.log"
t1=$(date +%s)
run_qemu -kernel "$WORK/installer/bsd.rd" -initrd "$WORK/installer/ramdisk.img" \
    -append "$APPEND" -netdev "$NETDEV"
if [ "$NETBOOT" = 1 ]; then
    FIRST=
else
    FIRST="(I)nstall, (U)pgrade, (A)utoinstall or (S)hell? =a\\r"
fi
set +e
python3 "$WORK/drive.py" "$WORK/serial.sock" "$WORK/install.log" 2400 \
    ${FIRST:+"$FIRST"} \
    "Response file location?=http://$HOST/install.conf\\r" \
    --mark "Welcome to the OpenBSD/amd64 7.8 installation program." \
    --mark "Performing non-interactive install..." \
    --mark "Let's install the sets!" \
    --mark "Installing base78.tgz" \
    --mark "CONGRATULATIONS!" \
    --ok "CONGRATULATIONS! Your OpenBSD install has been successfully completed!" \
    --fail "failed; check /tmp/ai/ai.log" --fail "No response file found" --fail "Kernel panic"
rc=$?
set -e
[ "$rc" = 0 ] || kill "$QEMU_PID" 2>/dev/null || true
wait "$QEMU_PID" 2>/dev/null || true
QEMU_PID=
t2=$(date +%s)
[ "$rc" = 0 ] || die "the install failed (rc $rc); see $WORK/install.log"
INSTALL_SECS=$((t2 - t1))
echo "$PROG: installed in $INSTALL_SECS s (qemu start to reboot)"

# ----------------------------------------------------------------- first boot
SSHPORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "$PROG: booting the installed disk, console in $WORK/boot.log"
t3=$(date +%s)
run_qemu -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$SSHPORT-:22"
set +e
python3 "$WORK/drive.py" "$WORK/serial.sock" "$WORK/boot.log" 900 \
    --mark "Welcome to Debian" --stop-at "standin login:" --fail "Kernel panic" --fail "emergency mode"
rc=$?
set -e
[ "$rc" = 0 ] || die "the installed system did not reach a login prompt (rc $rc); see $WORK/boot.log"
t4=$(date +%s)
echo "$PROG: login prompt after $((t4 - t3)) s"

SSH="ssh -i $WORK/id_selftest -p $SSHPORT -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=10 -o BatchMode=yes root@127.0.0.1"
n=0
until $SSH true 2>/dev/null; do
    n=$((n + 1))
    [ "$n" -gt 60 ] && die "no ssh login as root with the build key; see $WORK/boot.log"
    sleep 5
done
t5=$(date +%s)
echo "$PROG: ssh login as root after $((t5 - t3)) s"

fails=0
check() {   # description, remote command
    if $SSH "$2" >/dev/null 2>&1; then
        echo "  ok   $1"
    else
        echo "  FAIL $1"
        fails=$((fails + 1))
    fi
}
check "install.site ran (marker)"               'test -s /etc/osimage-selftest.marker'
check "install.site's doas rule"                'grep -qx "permit nopass puffy" /etc/doas.conf'
check "python3 is there"                        'python3 -c "print(1)"'
# shellcheck disable=SC2016 # expanded in the guest
check "hostname standin"                        'test "$(hostname)" = standin'
# shellcheck disable=SC2016 # expanded in the guest
check "timezone Europe/Paris"                   'test "$(readlink /etc/localtime)" = /usr/share/zoneinfo/Europe/Paris'
# shellcheck disable=SC2016 # expanded in the guest
check "root password kept as bcrypt"            'grep -q "^root:\$2b\$10\$abcdefghijklmnopqrstuu" /etc/shadow'
check "user puffy, password disabled"           'grep -q "^puffy:\*\*\*\*\*\*\*\*\*\*\*\*\*:" /etc/shadow && getent passwd puffy | grep -q ":Puffy:/home/puffy:"'
check "puffy in wheel"                          'id -nG puffy | grep -qw wheel'
check "puffy's ssh key"                         'grep -q " puffy$" /home/puffy/.ssh/authorized_keys'
# (Debian's sshd_config already says "#PermitRootLogin prohibit-password", so
# the installer leaves it, as install.sub apply() does with a default answer.)
check "sshd: PermitRootLogin prohibit-password" 'sshd -T 2>/dev/null | grep -Eqx "permitrootlogin (prohibit-password|without-password)"'
check "sshd running"                            'systemctl is-active ssh'
check "root on ext4 from sd0a, swap active"     'findmnt -n -o FSTYPE / | grep -qx ext4 && swapon --show=NAME --noheadings | grep -q vda2'
check "console on ttyS0 at 115200"              'grep -q "console=ttyS0,115200" /proc/cmdline'
check "kernel is the bsd set"                   'grep -q "KERNEL /bsd" /boot/extlinux/extlinux.conf && test -s /bsd'
check "DHCP on the NIC (networkd)"              'ip -4 addr show | grep -q "inet 10.0.2.15/"'
check "installurl"                              'grep -qx "http://'"$HOST"'/pub/OpenBSD" /etc/installurl'
# shellcheck disable=SC2016 # expanded in the guest
check "OpenBSD-style files (myname, hostname.vio0)" 'test "$(cat /etc/myname)" = standin.my.domain && grep -qx "inet autoconf" /etc/hostname.vio0'
$SSH poweroff >/dev/null 2>&1 || true
sleep 5
cleanup
QEMU_PID=
SERVER_PID=

echo "$PROG: timings: install $INSTALL_SECS s, first boot to login prompt $((t4 - t3)) s, to ssh $((t5 - t3)) s"
if [ "$fails" -gt 0 ]; then
    die "$fails check(s) failed"
fi
echo "$PROG: PASS"
