#!/usr/bin/env bash
# Bad blueprints must stop build-image.yml with a message naming the field,
# before any VM, server or work directory exists.
#   E2E_DIR=... bash tests/e2e/bad_input.sh   -> prints "bad input: N passed, 0 failed"
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
dir=${E2E_DIR:?}/bad
mkdir -p "$dir"
work=$dir/work
passed=0
failed=0
check() {  # check NAME MESSAGE YAML
  printf 'blueprint:\n%s\n' "$3" > "$dir/$1.yml"
  .venv/bin/ansible-playbook build-image.yml -e @"$dir/$1.yml" -e build_image_work_root="$work" \
    -e osimage_output_dir="$dir/out" > "$dir/$1.log" 2>&1
  rc=$?
  if [ $rc -ne 0 ] && grep -qF -- "$2" "$dir/$1.log" && [ ! -e "$work" ] && [ ! -e "$dir/out" ]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAILED: $1 (rc $rc) did not stop with: $2" >&2
    tail -5 "$dir/$1.log" >&2
  fi
}
check typo "pacakges: unknown key (did you mean 'packages'?)" '  name: t
  os: debian-12
  pacakges: [curl]'
check size "vm.disk_size: '10XB' has an unknown unit 'XB'" '  name: t
  os: debian-12
  vm: {disk_size: 10XB}'
check type "vm.cpus: expected an integer, got str 'two'" '  name: t
  os: debian-12
  vm: {cpus: two}'
check noname "users[0].name: is required" '  name: t
  os: debian-12
  users: [{groups: [sudo]}]'
check os "os: 'debain-12' is not a supported operating system (did you mean 'debian-12'?)" '  name: t
  os: debain-12'
check output "outputs[0].compress: ova images cannot be compressed with zstd; they can be: none" '  name: t
  os: debian-12
  outputs: [{format: ova, compress: zstd}]'
check format "outputs[0].format: 'vdi' is not an output format" '  name: t
  os: debian-12
  outputs: [{format: vdi}]'
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
echo "bad input: $passed passed, $failed failed"
echo "$passed" > "${RESULTS:-$dir}/bad_input.count"
[ "$failed" -eq 0 ]
