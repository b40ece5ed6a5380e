#!/usr/bin/env bash
# Bad input must stop build-image.yml with one message naming the field or the
# resource (path, port, program, URL), with a non-zero exit, leaving no build work
# directory, no output and no VM behind. Whatever can be checked up front (the
# blueprint, the output directory, sizes against the host, ports, mirrors, publish
# credentials) stops the build before its work directory exists; missing programs,
# a vmd that does not answer and bad media stop it in build_host or media, before
# any disk or VM exists.
#   E2E_DIR=... bash tests/e2e/bad_input.sh   -> prints "bad input: N passed, 0 failed"
# Needs root (tmpfs mounts), python3, signify-openbsd, and moto in .venv. No VM boots.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
top=$PWD
dir=${E2E_DIR:?}/bad
for mnt in "$dir/ro" "$dir/small"; do if mountpoint -q "$mnt"; then umount "$mnt"; fi; done
rm -rf "$dir"
mkdir -p "$dir"
passed=0
failed=0

pids=()
mounts=()
finish() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  for mnt in "${mounts[@]}"; do umount "$mnt" 2>/dev/null; done
}
trap finish EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
wait_for_port() {
  python3 - "$1" <<'PY'
import socket, sys, time
for _ in range(100):
    try:
        socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
PY
}

# --- what the cases need ---------------------------------------------------------------------------
# An OpenBSD 7.8 mirror on loopback, signed with a test key, in variants: good, a
# SHA256.sig whose content was changed after signing, bsd.rd missing, bsd.rd corrupt.
signify=$(command -v signify-openbsd || command -v signify)
"$signify" -G -n -p "$dir/test-78.pub" -s "$dir/test-78.sec" -c "bad input test key"
release() {  # release VARIANT
  local d=$dir/mirror/$1/pub/OpenBSD/7.8/amd64
  mkdir -p "$d"
  for f in bsd bsd.rd base78.tgz INSTALL.amd64; do echo "$1 $f" > "$d/$f"; done
  (cd "$d" && sha256sum --tag bsd bsd.rd base78.tgz INSTALL.amd64 > SHA256)
  "$signify" -S -e -s "$dir/test-78.sec" -m "$d/SHA256" -x "$d/SHA256.sig"
  rm "$d/SHA256"
}
for variant in good badsig missing corrupt; do release "$variant"; done
sed -i "s/^SHA256 (bsd) = .*/SHA256 (bsd) = $(printf '%064d' 0)/" "$dir/mirror/badsig/pub/OpenBSD/7.8/amd64/SHA256.sig"
rm "$dir/mirror/missing/pub/OpenBSD/7.8/amd64/bsd.rd"
signed_digest=$(sha256sum < "$dir/mirror/corrupt/pub/OpenBSD/7.8/amd64/bsd.rd" | cut -d' ' -f1)
echo "not what was signed" > "$dir/mirror/corrupt/pub/OpenBSD/7.8/amd64/bsd.rd"
corrupt_digest=$(sha256sum < "$dir/mirror/corrupt/pub/OpenBSD/7.8/amd64/bsd.rd" | cut -d' ' -f1)
mport=$(free_port)
python3 -m http.server --bind 127.0.0.1 --directory "$dir/mirror" "$mport" > "$dir/mirror.log" 2>&1 &
pids+=($!)
mirror=http://127.0.0.1:$mport
# a port nothing listens on
dead=$(free_port)
# a port something listens on
python3 -c 'import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(); print(s.getsockname()[1], flush=True); time.sleep(900)' \
  > "$dir/busy.port" &
pids+=($!)
# the vmd stand-in (tests/standins), on its own socket, for the cases past build_host
vmctl=$top/tests/standins/vmctl
VMD_STANDIN_SOCKET=$dir/vmd.sock VMD_STANDIN_STATEDIR=$dir/vmd-state "$top/tests/standins/vmd" -d -f /dev/null \
  > "$dir/vmd.log" 2>&1 &
pids+=($!)
# moto's S3, with its authentication switched on after the bucket exists
sport=$(free_port)
.venv/bin/python -m moto.server -H 127.0.0.1 -p "$sport" > "$dir/moto.log" 2>&1 &
pids+=($!)
# output directories: a read-only mount, a full one, one below a regular file
mkdir -p "$dir/ro" "$dir/small"
mount -t tmpfs -o ro,size=1m tmpfs "$dir/ro" && mounts+=("$dir/ro")
mount -t tmpfs -o size=1m tmpfs "$dir/small" && mounts+=("$dir/small")
touch "$dir/regular-file"

wait_for_port "$mport" || echo "the test mirror did not start" >&2
wait_for_port "$sport" || echo "moto did not start" >&2
.venv/bin/python - "http://127.0.0.1:$sport" <<'PY'
import sys, urllib.request
import boto3
url = sys.argv[1]
boto3.client('s3', endpoint_url=url, region_name='us-east-1', aws_access_key_id='testing',
             aws_secret_access_key='testing').create_bucket(Bucket='images')
urllib.request.urlopen(urllib.request.Request(url + '/moto-api/reset-auth', data=b'0', method='POST',
                                              headers={'Content-Type': 'text/plain'})).read()
PY
for _ in $(seq 50); do [ -s "$dir/busy.port" ] && [ -S "$dir/vmd.sock" ] && break; sleep 0.1; done
busy=$(cat "$dir/busy.port")

# --- the check -------------------------------------------------------------------------------------
# Each case runs in the background (BAD_INPUT_JOBS at a time) with its own work root; the
# variables below are taken by the case when check is called.
out=''            # the output directory of the next case; empty: $dir/out-NAME, which must not appear
case_env=()       # extra environment of the next case
vmd_flow=0        # 1: the case gets past the preflight to build_host or media, on the vmd stand-in
jobs_max=${BAD_INPUT_JOBS:-4}
cases=()
case_pids=()
run_case() {  # run_case NAME MESSAGE [ansible-playbook arguments...]; writes NAME.result
  local name=$1 message=$2 rc problem='' work=$dir/work-$1 output=${out:-$dir/out-$1}
  shift 2
  env "${case_env[@]}" .venv/bin/ansible-playbook build-image.yml -e @"$dir/$name.yml" \
    -e build_image_work_root="$work" -e osimage_output_dir="$output" -e media_cache_dir="$dir/cache/$name" "$@" \
    > "$dir/$name.log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then problem="it did not fail"
  elif ! grep -qF -- "$message" "$dir/$name.log"; then problem="no message: $message"
  elif [ "$vmd_flow" -eq 0 ] && [ -e "$work" ]; then problem="it made $work before failing"
  elif [ -n "$(ls -A "$work" 2>/dev/null)" ]; then problem="it left $(ls -A "$work") in $work"
  elif [ -z "$out" ] && [ -e "$output" ]; then problem="it made $output"
  elif [ -d "$output" ] && [ -n "$(ls -A "$output")" ]; then problem="it left $(ls -A "$output") in $output"
  elif [ "$vmd_flow" -eq 1 ] && VMD_STANDIN_SOCKET=$dir/vmd.sock "$vmctl" status 2>&1 | grep -q running; then
    problem="a VM is running"
  fi
  rm -rf "$work"
  if [ -z "$problem" ]; then
    echo pass > "$dir/$name.result"
  else
    { echo "FAILED: $name (rc $rc): $problem"; grep -E '^\[ERROR\]' "$dir/$name.log" | tail -2; } > "$dir/$name.result"
  fi
}
check() {  # check NAME MESSAGE YAML [ansible-playbook arguments...]
  local name=$1 message=$2 running pid
  printf 'blueprint:\n%s\n' "$3" > "$dir/$name.yml"
  shift 3
  while :; do
    running=0
    for pid in "${case_pids[@]}"; do if kill -0 "$pid" 2>/dev/null; then running=$((running + 1)); fi; done
    [ "$running" -lt "$jobs_max" ] && break
    sleep 0.2
  done
  run_case "$name" "$message" "$@" &
  case_pids+=($!)
  cases+=("$name")
}

# --- blueprint typos and wrong types ---------------------------------------------------------------
check typo "pacakges: unknown key (did you mean 'packages'?)" '  name: t
  os: debian-12
  pacakges: [curl]'
check nested_typo "vm.memroy: unknown key (did you mean 'memory'?)" '  name: t
  os: debian-12
  vm: {memroy: 2G}'
check size "vm.disk_size: '10XB' has an unknown unit 'XB'" '  name: t
  os: debian-12
  vm: {disk_size: 10XB}'
check type "vm.cpus: expected an integer, got str 'two'" '  name: t
  os: debian-12
  vm: {cpus: two}'
check list_type "packages: expected a list of strings, got str 'curl'" '  name: t
  os: debian-12
  packages: curl'
check noname "users[0].name: is required" '  name: t
  os: debian-12
  users: [{groups: [sudo]}]'
check ssh_key 'users[0].ssh_keys[0]: not an OpenSSH public key' '  name: t
  os: debian-12
  users: [{name: admin, ssh_keys: ["AAAAC3Nza admin@laptop"]}]'
check publish_typo "publish[0].s3.bucekt: unknown key (did you mean 'bucket'?)" '  name: t
  os: debian-12
  publish: [{target: s3, s3: {bucekt: images}}]'
check publish_secret 'publish[0].aws_secret_access_key: credentials do not belong in a blueprint' '  name: t
  os: debian-12
  publish: [{target: s3, s3: {bucket: images}, aws_secret_access_key: hunter2}]'
check source "source.type: debian-12 cannot be built from 'installer'" '  name: t
  os: debian-12
  source: {type: installer}'
check obsd_mirror "source.mirror: is required for openbsd-7.8" '  name: t
  os: openbsd-7.8'
check obsd_cpus "vm.cpus: vmm VMs have exactly one vCPU (vmctl start cannot ask for more), got 2" '  name: t
  os: openbsd-7.8
  source: {mirror: "http://127.0.0.1:9/pub/OpenBSD"}
  vm: {cpus: 2}'
check obsd_label "disklabel: '/' must be configured" '  name: t
  os: openbsd-7.8
  source: {mirror: "http://127.0.0.1:9/pub/OpenBSD"}
  disklabel: [{mount: /var, size: 1G}]'

# --- unknown OS, output or hypervisor --------------------------------------------------------------
check os "os: 'debain-12' is not a supported operating system (did you mean 'debian-12'?)" '  name: t
  os: debain-12'
check format "outputs[0].format: 'vdi' is not an output format" '  name: t
  os: debian-12
  outputs: [{format: vdi}]'
check output "outputs[0].compress: ova images cannot be compressed with zstd; they can be: none" '  name: t
  os: debian-12
  outputs: [{format: ova, compress: zstd}]'
check obsd_output 'outputs[0].format: openbsd-7.8 images cannot be exported as gce yet' '  name: t
  os: openbsd-7.8
  source: {mirror: "http://127.0.0.1:9/pub/OpenBSD"}
  outputs: [{format: gce}]'
check hypervisor "hypervisor: 'kvm' is not a hypervisor" '  name: t
  os: debian-12
  hypervisor: kvm'

# --- impossible sizes ------------------------------------------------------------------------------
check disk_small 'vm.disk_size: 1073741824 bytes is too small; debian-12 needs at least 2G' '  name: t
  os: debian-12
  vm: {disk_size: 1G}'
check memory_zero 'vm.memory: 0 is too small' '  name: t
  os: debian-12
  vm: {memory: 0}'
check cpus_zero 'vm.cpus: 0 is out of range 1..64' '  name: t
  os: debian-12
  vm: {cpus: 0}'
check memory_host 'vm.memory: 64 TiB is more than the build host has' '  name: t
  os: debian-12
  vm: {memory: 64T}'
check disk_host "vm.disk_size: 64 TiB is more than the whole file system of the work directory $dir/work-disk_host holds" '  name: t
  os: debian-12
  vm: {disk_size: 64T}' -e build_image_check_space=false
check obsd_disklabel 'disklabel: the partitions need at least 8G, more than vm.disk_size (4G)' '  name: t
  os: openbsd-7.8
  source: {mirror: "http://127.0.0.1:9/pub/OpenBSD"}
  vm: {disk_size: 4G}
  disklabel: [{mount: /, size: 6G-*}, {mount: /home, size: 2G}]'
check obsd_memory 'vm.memory: 200G is more than a vmm VM can have (128G)' '  name: t
  os: openbsd-7.8
  source: {mirror: "http://127.0.0.1:9/pub/OpenBSD"}
  vm: {memory: 200G}'

# --- the output directory --------------------------------------------------------------------------
out=$dir/regular-file/out
check out_not_dir "osimage_output_dir: $out cannot be created: $dir/regular-file is not a directory" '  name: t
  os: debian-12'
out=$dir/ro
check out_read_only "osimage_output_dir: $out is on a read-only file system" '  name: t
  os: debian-12'
out=$dir/small
check out_full "osimage_output_dir: $out has 1 MiB free, and the outputs may need about 6 GiB (qcow2 4 GiB, raw.zst 2 GiB, from vm.disk_size 4 GiB)" '  name: t
  os: debian-12
  outputs: [{format: qcow2}, {format: raw, compress: zstd}]'
out=''

# --- ports already in use --------------------------------------------------------------------------
check ssh_port "build_image_ssh_port: port $busy on 127.0.0.1 is already in use" '  name: t
  os: debian-12' -e build_image_ssh_port="$busy"
check server_port "build_image_server_port: port $busy on 127.0.0.1 is already in use" '  name: t
  os: debian-12' -e build_image_server_port="$busy"

# --- a work root too deep for the VM's unix sockets (103 bytes) ------------------------------------
deep=$dir/$(printf 'd%.0s' $(seq 90))
check work_root_too_deep "build_image_work_root: $deep is too long: the VM 'test' would have the socket" '  name: t
  os: debian-12' -e build_image_work_root="$deep"

# --- unreachable mirrors ---------------------------------------------------------------------------
check obsd_mirror_down "source.mirror: http://127.0.0.1:$dead/pub/OpenBSD/7.8/amd64/SHA256.sig cannot be reached: Connection refused" "  name: t
  os: openbsd-7.8
  source: {mirror: \"http://127.0.0.1:$dead/pub/OpenBSD\"}"
check debian_mirror_down "source.mirror: http://127.0.0.1:$dead/debian/dists/bookworm/InRelease cannot be reached: Connection refused" "  name: t
  os: debian-12
  source: {mirror: \"http://127.0.0.1:$dead/debian\"}"
check debian_mirror_404 "source.mirror: $mirror/debian/dists/bookworm/InRelease answers HTTP 404" "  name: t
  os: debian-12
  source: {mirror: \"$mirror/debian\"}"
check proxy_down "source.proxy: http://127.0.0.1:$dead cannot be reached: Connection refused" "  name: t
  os: debian-12
  source: {mirror: \"$mirror/debian\", proxy: \"http://127.0.0.1:$dead\"}"

# --- wrong cloud credentials (checked before the build: the target is asked whether the image is there) ---
case_env=(AWS_ACCESS_KEY_ID=AKIAUNKNOWNTESTKEY01 AWS_SECRET_ACCESS_KEY=not-the-secret AWS_REGION=us-east-1)
check s3_credentials "publish[0] (s3): HeadObject t-1.0.0: the S3 endpoint http://127.0.0.1:$sport did not accept the credentials (InvalidAccessKeyId" "  name: t
  os: debian-12
  publish: [{target: s3, name: t-1.0.0, s3: {bucket: images, endpoint_url: \"http://127.0.0.1:$sport\"}}]"
case_env=()

# --- missing programs ------------------------------------------------------------------------------
# build_host looks for each program of build_host_programs; this qemu is not installed anywhere.
vmd_flow=1
check no_qemu 'The build host lacks qemu-system-x86_64-missing; install the packages qemu-system-x86' '  name: t
  os: debian-12' -e build_host_install=false \
  -e '{"build_host_programs": {"qemu-system-x86_64-missing": "qemu-system-x86", "qemu-img": "qemu-utils"}}'

# --- vmm: vmctl missing, vmd not running, bad media (through the stand-ins, tests/standins) ----------
obsd() {  # obsd VARIANT [SETS] -> an OpenBSD blueprint on the test mirror's VARIANT
  printf '  name: t\n  os: openbsd-7.8\n  source:\n    mirror: "%s/%s/pub/OpenBSD"\n    sets: [%s]\n    signify_key: "%s"\n' \
    "$mirror" "$1" "${2:-bsd, bsd.rd, base78.tgz}" "$dir/test-78.pub"
}
check no_vmctl "The build host lacks vmctl: $dir/no-such-vmctl is not there" "$(obsd good)" \
  -e build_image_vmctl="$dir/no-such-vmctl"
case_env=(VMD_STANDIN_SOCKET="$dir/no-vmd.sock")
check vmd_down "vmd does not answer ($vmctl status: vmctl: connect: $dir/no-vmd.sock: No such file or directory)" \
  "$(obsd good)" -e build_image_vmctl="$vmctl"
case_env=(VMD_STANDIN_SOCKET="$dir/vmd.sock")
check obsd_key_missing "source.signify_key: $dir/no-such.pub does not exist on the build host" \
  "$(obsd good | sed "s|$dir/test-78.pub|$dir/no-such.pub|")" -e build_image_vmctl="$vmctl"
check obsd_bad_signature "$mirror/badsig/pub/OpenBSD/7.8/amd64/SHA256.sig does not verify with $dir/test-78.pub" \
  "$(obsd badsig)" -e build_image_vmctl="$vmctl"
check obsd_not_listed "source.sets: comp78.tgz is not listed in $mirror/good/pub/OpenBSD/7.8/amd64/SHA256" \
  "$(obsd good 'bsd, bsd.rd, base78.tgz, comp78.tgz')" -e build_image_vmctl="$vmctl"
check obsd_media_missing "source.sets: $mirror/missing/pub/OpenBSD/7.8/amd64/bsd.rd could not be fetched: HTTP Error 404" \
  "$(obsd missing)" -e build_image_vmctl="$vmctl"
check obsd_checksum "source.sets: $mirror/corrupt/pub/OpenBSD/7.8/amd64/bsd.rd does not match its digest in the signed SHA256 (a corrupt or replaced file, or a mirror in mid-sync): expected sha256 $signed_digest, got $corrupt_digest" \
  "$(obsd corrupt)" -e build_image_vmctl="$vmctl"
case_env=()
vmd_flow=0

for pid in "${case_pids[@]}"; do wait "$pid"; done
for name in "${cases[@]}"; do
  if [ "$(cat "$dir/$name.result" 2>/dev/null)" = pass ]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    cat "$dir/$name.result" >&2 2>/dev/null || echo "FAILED: $name left no result" >&2
  fi
done
echo "bad input: $passed passed, $failed failed"
echo "$passed" > "${RESULTS:-$dir}/bad_input.count"
[ "$failed" -eq 0 ]
