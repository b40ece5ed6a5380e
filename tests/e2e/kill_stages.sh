#!/usr/bin/env bash
# Kill tests of a real build (issue 7, "Cancel and crash"): a small Debian build
# (blueprints/debian-12.yml with the e2e build's packages, one qcow2 output) is killed once in
# each stage - bootstrap (mmdebstrap's disk: loop device and mounts), first_boot (qemu and
# the seed server), provision (the guest over SSH), export (image_export writing),
# image_test (the test VM and its seed server), publish (the upload to a moto S3 server) -
# and the OpenBSD vmm build through the stand-ins (blueprints/openbsd-stand-in.yml, see
# tests/e2e/openbsd_stand_in.sh) in install (the installer's VM in vmd, the server of the
# sets and install.conf, the wait on the installer's console).
# After each kill, within lease ttl + 15 s, nothing of the build may run any more (no
# qemu, response server, lease keeper, ansible worker), nothing may stay mounted under its
# work directory or attached to a loop device, and its output directory may hold no
# file under the final NAME-VERSION name (only the hidden staging directory) - except
# at publish, where the tested export is already in place and must be complete; vmd may
# list no VM of the build.
# The upload cut off at publish must have been aborted (no multipart upload left in the
# bucket). playbooks/cleanup.yml must then remove, at once, the dead build's work
# directory, its staging directory and its key directory on the controller.
#
#   bash tests/e2e/kill_stages.sh      -> one line per stage, then "kill stages: N passed, 0 failed"
#
# Environment: KILL_DIR (default .tmp/kill), KILL_WORK_ROOT (default /var/tmp/osimage-builder-kill;
# each killed build gets a work root of its own below it, so that the cleanup under test
# is the one for that build), KILL_TTL (build_image_lease_ttl, default 10), KILL_JOBS (kill
# builds at a time, default 2), KILL_STAGES (default: all seven), RESULTS (writes
# kill_stages.count). Needs root (the bootstrap makes loop devices and mounts), qemu, moto
# in .venv, and the build host's own Debian mirror; install needs what
# tests/e2e/openbsd_stand_in.sh prepare makes (this script runs it: the stand-in vmd and
# the mirror on port 8078 are one per host, so nothing else may use them meanwhile).
set -euo pipefail
cd "$(dirname "$0")/../.."
top=$PWD
venv=${VENV:-$top/.venv}
py=$venv/bin/python
kill_dir=${KILL_DIR:-$top/.tmp/kill}
work_root=${KILL_WORK_ROOT:-/var/tmp/osimage-builder-kill}
ttl=${KILL_TTL:-10}
jobs=${KILL_JOBS:-2}
# bootstrap first: it makes the root filesystem tarball that the other builds then take from
# debian_bootstrap's cache (they start once it is there); then the longest runs first, so that
# the builds that run side by side finish close together.
stages=${KILL_STAGES:-bootstrap publish image_test export install provision first_boot}
# Everything must be gone this long after the signal: the lease's ttl, the keeper's and
# the background processes' polling, and a margin for a loaded build host.
limit=$((ttl + 15))
name=kill-debian-12
version=1.0.0
export ANSIBLE_FORCE_COLOR=0 ANSIBLE_NOCOLOR=1 PATH=$venv/bin:$PATH

# Only this script's own builds are ever touched: everything lives below these two directories.
if [ "$kill_dir" = / ] || [ "$work_root" = / ]; then echo "refusing to work in /" >&2; exit 2; fi
rm -rf "$kill_dir"
mkdir -p "$kill_dir"
began=$(date +%s)

background="$py tests/integration/targets/cloud_upload/files/background.py"
finish() {
  local pid
  # A failed run must not leave its own builds running: their playbooks are in sessions of
  # their own, found by the directory in their command line.
  for pid in $(pgrep -f -- "$kill_dir/" || true); do
    if [ "$pid" != $$ ]; then kill -KILL "$pid" 2>/dev/null || true; fi
  done
  $background stop-all "$kill_dir/servers" >/dev/null 2>&1 || true
  if [ "$openbsd" = 1 ]; then E2E_DIR=$kill_dir bash tests/e2e/openbsd_stand_in.sh stop || true; fi
}
openbsd=0
trap finish EXIT

# --- the S3 server the publish stage uploads to, as in the e2e target ----------------------------
export AWS_ACCESS_KEY_ID=kill-access-key AWS_SECRET_ACCESS_KEY=kill-Secret-aws-key AWS_DEFAULT_REGION=us-east-1
s3_url=$($background start "$kill_dir/servers" moto --lease 1800 -- "$py" -m moto.server -H 127.0.0.1 -p '{port}' \
  | "$py" -c 'import json, sys; print(json.load(sys.stdin)["url"])')
"$py" -c 'import boto3, sys; boto3.client("s3", endpoint_url=sys.argv[1]).create_bucket(Bucket="kill-images")' "$s3_url"

# --- the blueprint: debian-12 made small; one for all runs, so that the rootfs cache hits ---------
# The publish run exports a zstd-compressed qcow2: nothing the image test can boot, so it skips
# image_test (another VM boot, not needed to reach publish).
"$py" - "$top/blueprints/debian-12.yml" "$kill_dir" "$s3_url" "$name" "$version" <<'PY'
import sys, yaml
src, out, s3_url, name, version = sys.argv[1:]
with open(src, encoding='utf-8') as handle:
    bp = yaml.safe_load(handle)['blueprint']
# the packages of the e2e blueprint (tests/e2e/prepare.yml), as parallel-inventory.yml's par-c: after
# make e2e the root filesystem is in debian_bootstrap's cache already
bp.update(name=name, version=version, packages=['curl', 'jq'],
          vm=dict(bp['vm'], cpus=1, memory='1G', disk_size='2G'),
          outputs=[{'format': 'qcow2', 'qcow2_compression': 'zlib'}],
          publish=[{'target': 's3', 'name': 'images/%s-%s.qcow2' % (name, version),
                    's3': {'bucket': 'kill-images', 'endpoint_url': s3_url, 'part_size': '8M'}}])
with open(out + '/blueprint.yml', 'w', encoding='utf-8') as handle:
    yaml.safe_dump({'blueprint': bp}, handle)
bp['outputs'] = [{'format': 'qcow2', 'compress': 'zstd'}]
bp['publish'][0]['name'] += '.zst'
with open(out + '/blueprint-publish.yml', 'w', encoding='utf-8') as handle:
    yaml.safe_dump({'blueprint': bp}, handle)
PY

# --- one stage --------------------------------------------------------------------------------------
# stage -> the signal, the log line that opens the stage's long task, and how long to wait
# into it. The signals rotate over the stages. How they are sent models the ways a build
# is stopped:
# - INT to the process group: Ctrl-C at a terminal, and AWX's cancel as ansible-playbook
#   sees it first;
# - TERM to ansible-playbook alone: kill PID, a CI job's timeout, systemd;
# - KILL to the process group: ansible-runner's cancel (Runner.handle_termination does
#   os.killpg(os.getpgid(pid), SIGKILL) on the playbook it spawned in a session of its
#   own). ansible's workers call setsid(), so the worker of the current task is not in that
#   group and lives on - the lease keeper must end it.
declare -A signal_of=([bootstrap]=INT [first_boot]=TERM [provision]=KILL [export]=INT [image_test]=TERM [publish]=KILL
                      [install]=KILL)
declare -A banner_of=(
  [bootstrap]='TASK \[osimage.builder.bootstrap : Build the root filesystem'
  [first_boot]='TASK \[osimage.builder.first_boot : Watch the serial console'
  [provision]='TASK \[osimage.builder.provision : Apply the OS-specific settings\]'
  [export]='TASK \[osimage.builder.export : Export the disk'
  [image_test]='TASK \[osimage.builder.image_test : Wait for the login prompt'
  [publish]='TASK \[osimage.builder.publish : Upload the artifact'
  [install]='TASK \[osimage.builder.install : Answer bsd.rd')
# What shows that the stage's processes and files exist, checked after the banner.
declare -A ready_of=(
  [bootstrap]='a mount under the work directory (the root filesystem being unpacked)'
  [first_boot]='qemu and the seed server running, 3 s into the console watch'
  [provision]='the guest being provisioned over SSH, 3 s into the provision role'
  [export]='a partial artifact in the staging directory'
  [image_test]='the test VM and its seed server running, 3 s into the console watch'
  [publish]='the upload running, 2 s into it'
  [install]='the installer VM in vmd and the sets server running, 3 s into the installer dialogue')

fail() { echo "FAIL $stage: $*" | tee -a "$sdir/result" >&2; exit 1; }

# The one work directory the killed build made in its own work root.
build_work_dir() {
  local d
  for d in "$1"/*/; do [ -f "$d/osimage-build.json" ] && { echo "${d%/}"; return 0; }; done
  return 1
}

stage_ready() {  # stage_ready WORK_DIR OUTPUT_DIR SINCE: 0 once the stage's things exist
  local wd=$1 out=$2 since=$3 now
  now=$(date +%s)
  case $stage in
    bootstrap) findmnt -rn -o TARGET | grep -q "^$wd/" ;;
    export) compgen -G "$out/.$bname-$bversion.*.partial/.*partial*" > /dev/null ;;
    publish) [ $((now - since)) -ge 2 ] ;;
    *) [ $((now - since)) -ge 3 ] ;;
  esac
}

run_stage() {
  stage=$1
  sdir=$kill_dir/$stage
  local sig=${signal_of[$stage]} banner=${banner_of[$stage]} root=$work_root/$stage
  local out=$sdir/output log=$sdir/build.log bp=$kill_dir/blueprint.yml bname=$name bversion=$version
  # the vmm build runs vmctl from the stand-ins, as tests/e2e/openbsd_stand_in.sh does
  local path=$PATH
  [ "$stage" = publish ] && bp=$kill_dir/blueprint-publish.yml
  if [ "$stage" = install ]; then
    bp=$top/blueprints/openbsd-stand-in.yml bname=openbsd-stand-in bversion=7.8.0 path=$top/tests/standins:$PATH
  fi
  rm -rf "$root"
  mkdir -p "$sdir" "$out" "$root"
  # Its own session, as a terminal, AWX or a CI runner would start it; $! is ansible-playbook
  # itself (setsid execs it, this script's jobs are no process group leaders).
  PATH=$path setsid ansible-playbook build-image.yml -e @"$bp" -e osimage_output_dir="$out" \
    -e build_image_accel=tcg -e build_image_lease_ttl="$ttl" -e build_image_work_root="$root" \
    -e build_image_controller_root="$sdir/keys" > "$log" 2>&1 < /dev/null &
  local playbook=$! seen=0 since wd
  while :; do
    if ! kill -0 "$playbook" 2>/dev/null; then fail "the build ended before the stage: $(tail -n 20 "$log")"; fi
    if [ "$seen" = 0 ] && grep -q "$banner" "$log" 2>/dev/null; then seen=1; since=$(date +%s); fi
    if [ "$seen" = 1 ]; then
      wd=$(build_work_dir "$root") || fail "no work directory in $root"
      if stage_ready "$wd" "$out" "$since"; then break; fi
      # a cold cache: mmdebstrap makes the root filesystem first, minutes on a loaded host
      [ $(($(date +%s) - since)) -lt "$([ "$stage" = bootstrap ] && echo 900 || echo 120)" ] \
        || fail "not ready in time into the stage: ${ready_of[$stage]}"
    fi
    sleep 0.5
  done
  touch "$sdir/ready"
  local id marks
  id=$(basename "$wd")
  # the build's ansible-playbook and workers carry this directory in their command line
  marks=("$id" "$sdir/")
  "$py" tests/e2e/kill_leftovers.py snapshot "$playbook" "$wd" > "$sdir/pids"
  local killed_at gone_at=
  killed_at=$(date +%s.%N)
  case $sig in
    INT | KILL) kill -s "$sig" -- "-$playbook" ;;
    TERM) kill -s TERM "$playbook" ;;
  esac
  # Poll until nothing of the build runs, is mounted or attached; the process list
  # includes every process the snapshot had, so a worker or a module that lives on counts.
  while :; do
    "$py" tests/e2e/kill_leftovers.py check "$wd" "$sdir/pids" "${marks[@]}" > "$sdir/left.json"
    if "$py" -c 'import json, sys; d = json.load(open(sys.argv[1])); sys.exit(any(d.values()))' "$sdir/left.json"; then
      gone_at=$(date +%s.%N); break
    fi
    if "$py" -c 'import sys; sys.exit(float(sys.argv[2]) - float(sys.argv[1]) <= float(sys.argv[3]))' \
        "$killed_at" "$(date +%s.%N)" "$limit"; then
      fail "still there $limit s after SIG$sig: $(cat "$sdir/left.json")"
    fi
    sleep 0.5
  done
  local seconds
  seconds=$("$py" -c 'import sys; print("%.1f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$killed_at" "$gone_at")
  # vmd lists no VM of the build (its qemu carries the name, so the process check saw it end too)
  if [ "$stage" = install ]; then
    local listed
    # vmctl status exits 1 when it lists no VM at all (vmctl.c); its header tells that it answered
    listed=$(PATH=$path vmctl status 2>&1 || true)
    printf '%s\n' "$listed" | head -n 1 | grep -q 'STATE NAME$' || fail "vmctl status failed: $listed"
    if printf '%s\n' "$listed" | awk -v id="$id" 'NR > 1 && ($NF == id || $NF == "test-" id)' | grep -q .; then
      fail "vmd still lists a VM of the build: $listed"
    fi
  fi

  # Nothing under the final name unless it is complete. Before publish the export has not
  # been moved into place: the output directory holds at most the hidden staging directory.
  local staging entries
  staging=$(cd "$out" && { compgen -G ".$bname-$bversion.$id.partial" || true; })
  entries=$(cd "$out" && ls -A)
  if [ "$stage" = publish ]; then
    # The tested export was renamed into place before the upload: complete, checksums hold.
    [ -f "$out/$bname-$bversion/manifest.json" ] || fail "no manifest in $out/$bname-$bversion"
    (cd "$out/$bname-$bversion" && sha256sum --quiet -c SHA256SUMS) || fail "SHA256SUMS does not hold"
    # An object under the published name is the whole artifact (a multipart upload that was
    # cut off never shows up as an object).
    "$py" - "$s3_url" "$out/$bname-$bversion" <<'PY' || fail "a partial object in the bucket"
import boto3, os, sys
s3 = boto3.client('s3', endpoint_url=sys.argv[1])
for obj in s3.list_objects_v2(Bucket='kill-images').get('Contents', []):
    local = os.path.join(sys.argv[2], os.path.basename(obj['Key']))
    sys.exit(0 if os.path.exists(local) and os.path.getsize(local) == obj['Size'] else 1)
PY
    # The cancelled upload was aborted: cloud_upload got SIGTERM from its worker, which the lease
    # keeper ended (the KILL of the process group does not reach it), and no multipart upload is left.
    "$py" - "$s3_url" <<'PY' || fail "an unfinished multipart upload is left in the bucket"
import boto3, sys
s3 = boto3.client('s3', endpoint_url=sys.argv[1])
uploads = s3.list_multipart_uploads(Bucket='kill-images').get('Uploads', [])
print('\n'.join('%s %s' % (u['Key'], u['UploadId']) for u in uploads), file=sys.stderr)
sys.exit(1 if uploads else 0)
PY
  else
    [ "$entries" = "$staging" ] || fail "the output directory holds more than the staging directory: $entries"
  fi

  # playbooks/cleanup.yml removes the dead build's work directory and staging directory at once.
  PATH=$path ansible-playbook playbooks/cleanup.yml -e build_image_work_root="$root" > "$sdir/cleanup.log" 2>&1 \
    || fail "cleanup.yml failed: $(tail -n 20 "$sdir/cleanup.log")"
  [ ! -e "$wd" ] || fail "cleanup.yml left the work directory $wd"
  # the build's SSH key for its guest, in its directory on the controller
  [ ! -e "$sdir/keys/$id" ] || fail "cleanup.yml left the controller's key directory $sdir/keys/$id"
  [ -z "$(cd "$out" && compgen -G ".$bname-$bversion.*" || true)" ] || fail "cleanup.yml left $(ls -A "$out")"
  "$py" tests/e2e/kill_leftovers.py check "$wd" "$sdir/pids" "${marks[@]}" > "$sdir/left.json"
  "$py" -c 'import json, sys; d = json.load(open(sys.argv[1])); sys.exit(any(d.values()))' "$sdir/left.json" \
    || fail "left after cleanup.yml: $(cat "$sdir/left.json")"
  printf 'PASS %-10s SIG%-4s everything gone %5s s after the kill (at: %s); checked: processes (qemu, servers, keeper, ansible workers and modules), mounts, loop devices, output directory%s, cleanup.yml removed work, staging and key directories\n' \
    "$stage" "$sig" "$seconds" "${ready_of[$stage]}" "$(case $stage in
      publish) echo ' (complete, checksums hold), bucket (no partial object, no multipart upload)' ;;
      install) echo ', vmctl status (no VM of the build)' ;; esac)" > "$sdir/result"
  rm -rf "$root"
}

# --- the OpenBSD stand-ins: the mirror, the installer, vmd --------------------------------------------
case " $stages " in
  *" install "*)
    openbsd=1
    E2E_DIR=$kill_dir bash tests/e2e/openbsd_stand_in.sh prepare > "$kill_dir/openbsd-prepare.log" 2>&1 \
      || { tail -n 30 "$kill_dir/openbsd-prepare.log" >&2; exit 1; }
    ;;
esac

# A build that failed by itself before the stage it is to be killed in tested nothing of the kill
# (seen once in a CI-like run: a first boot whose cloud-init got no seed under load, see the
# session notes): it is started once more, and the result names the first build's log, which is
# kept. A second such failure, and every failure after the kill, fails the stage.
attempt_stage() {
  local stage=$1
  (run_stage "$stage") && return 0
  grep -q '^FAIL [a-z_]*: the build ended before the stage' "$kill_dir/$stage/result" 2>/dev/null || return 1
  rm -rf "$kill_dir/$stage.first"
  mv "$kill_dir/$stage" "$kill_dir/$stage.first"
  local rc=0
  (run_stage "$stage") || rc=$?
  printf '  (second build: the first failed by itself before the stage, %s)\n' \
    "$(grep -m1 -o 'The build failed in .*' "$kill_dir/$stage.first/build.log" | cut -c1-200)" >> "$kill_dir/$stage/result"
  return "$rc"
}

# --- KILL_JOBS builds at a time ---------------------------------------------------------------------
running=0
for stage in $stages; do
  if [ "$running" -ge "$jobs" ]; then wait -n || true; running=$((running - 1)); fi
  attempt_stage "$stage" &
  running=$((running + 1))
  # The first build alone until its disk is being made: the root filesystem is in the cache then.
  if [ "$stage" = "${stages%% *}" ]; then
    while [ ! -e "$kill_dir/$stage/ready" ] && [ ! -e "$kill_dir/$stage/result" ]; do sleep 1; done
  fi
done
wait || true

passed=0
failed=0
for stage in $stages; do
  if grep -q '^PASS' "$kill_dir/$stage/result" 2>/dev/null; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    [ -f "$kill_dir/$stage/result" ] || echo "FAIL $stage: no result" > "$kill_dir/$stage/result"
  fi
  cat "$kill_dir/$stage/result"
done
echo "kill stages: $passed passed, $failed failed in $(($(date +%s) - began)) s"
if [ -n "${RESULTS:-}" ]; then mkdir -p "$RESULTS"; echo "$passed" > "$RESULTS/kill_stages.count"; fi
[ "$failed" = 0 ]
