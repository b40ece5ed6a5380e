#!/usr/bin/env bash
# Four builds of different blueprints at once on this host must not collide on names, ports, disks,
# sockets or output paths, and must all succeed (issue 7, "Parallel builds"):
#   A  the e2e Debian build: build-image.yml with the blueprint and variables of tests/e2e/prepare.yml,
#      published to the moto S3 server at E2E_S3_URL; checked afterwards by verify.yml and no_secrets.sh
#   B  the OpenBSD vmm flow through the stand-ins (tests/e2e/openbsd_stand_in.sh build; its mirror,
#      installer, mirror server and vmd are prepared before the builds start, its checks run after)
#   C  one run of build-image.yml over two inventory entries of this host (tests/e2e/parallel-inventory.yml:
#      par-c, a Debian qemu build, and par-d, the OpenBSD vmm flow through the stand-ins beside B's),
#      i.e. two builds with different hypervisors in one playbook run
# All start at once. Afterwards: four different build ids, four output directories that pass
# sha256sum -c and hold nothing but the finished artifacts, no port held by two builds at the same time
# (tests/e2e/parallel_watch.py samples the work directories while they run), and no qemu, response
# server, lease keeper, loop device, mount or work directory of any of them left.
# Each build writes its own log; a failed build's last 60 lines are printed once the others ended.
#   E2E_DIR=... E2E_S3_URL=... AWS_...=... bash tests/e2e/parallel.sh      (the Makefile's e2e target)
# E2E_WORK_ROOT sets the builds' build_image_work_root (default: the role's, /var/tmp/osimage-builder);
# E2E_PARALLEL_RUNS="A C" runs a subset (for trying the test next to a vmd stand-in that is in use).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${E2E_DIR:?}" "${E2E_S3_URL:?}"
par=$E2E_DIR/parallel
work_root=${E2E_WORK_ROOT:-/var/tmp/osimage-builder}
runs=${E2E_PARALLEL_RUNS:-A B C}
playbook=.venv/bin/ansible-playbook
extra=()
if [ -n "${E2E_WORK_ROOT:-}" ]; then extra=(-e "build_image_work_root=$E2E_WORK_ROOT"); fi
rm -rf "$par"
mkdir -p "$par/logs"

wants() { [[ " $runs " == *" $1 "* ]]; }
now() { date +%s.%N; }
seconds() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.0f", b - a}'; }

declare -A pid=() log=() what=()
watcher=
finish() {
  local rc=$? p
  # Only on an early exit (an error of this script) are builds still running: end them, so that
  # nothing of the test outlives it; their leases make their qemu and servers end within a minute.
  for p in "${pid[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  if [ -n "$watcher" ]; then kill -TERM "$watcher" 2>/dev/null || true; fi
  if wants B || wants C; then bash tests/e2e/openbsd_stand_in.sh stop || true; fi
  exit "$rc"
}
trap finish EXIT

# --- preparation, before anything is timed -------------------------------------------------------
prep_start=$(now)
if wants A; then "$playbook" tests/e2e/prepare.yml >"$par/logs/prepare.log" 2>&1 || { tail -60 "$par/logs/prepare.log"; exit 1; }; fi
if wants B || wants C; then bash tests/e2e/openbsd_stand_in.sh prepare >"$par/logs/openbsd-prepare.log" 2>&1 \
  || { tail -60 "$par/logs/openbsd-prepare.log"; exit 1; }; fi
echo "parallel: preparation took $(seconds "$prep_start" "$(now)") s"

# --- the four builds at once -----------------------------------------------------------------------
.venv/bin/python tests/e2e/parallel_watch.py watch "$work_root" "$par/watch.json" &
watcher=$!

# start NAME LOG DESCRIPTION -- ARGV: runs ARGV in the background with its output in LOG; when it ends
# its exit status and wall seconds go to $par/NAME.result.
start() {
  local name=$1
  log[$name]=$2
  what[$name]=$3
  shift 4
  (
    set +e
    t0=$(now)
    "$@" >"${log[$name]}" 2>&1
    rc=$?
    echo "$rc $(seconds "$t0" "$(now)")" >"$par/$name.result"
  ) &
  pid[$name]=$!
}

phase_start=$(now)
if wants A; then
  start A "$E2E_DIR/build-output.log" "Debian e2e (e2e-debian-12, published to S3)" -- \
    "$playbook" build-image.yml -e @"$E2E_DIR/blueprint.yml" -e osimage_output_dir="$E2E_DIR/output" \
    -e build_image_accel=tcg -e @"$E2E_DIR/build-vars.yml" "${extra[@]}"
fi
if wants B; then
  start B "$par/logs/B.log" "OpenBSD stand-in (openbsd-stand-in, vmm)" -- bash tests/e2e/openbsd_stand_in.sh build
fi
if wants C; then
  # par-d's vmctl is the stand-in's, as in run B
  start C "$par/logs/C.log" "one run, two inventory entries (par-c Debian qemu raw.zst, par-d OpenBSD stand-in vmm raw+vhd)" -- \
    env PATH="$PWD/tests/standins:$PATH" \
    "$playbook" -i tests/e2e/parallel-inventory.yml build-image.yml -e osimage_build_hosts=par_builds \
    -e osimage_output_dir="$par/output" -e build_image_accel=tcg "${extra[@]}"
fi

# Wait for all; a failed build is reported as soon as it ended, the others still run to their end
# (each unwinds what it started, so the host is left clean either way).
failed=()
declare -A reported=()
while [ "${#reported[@]}" -lt "${#pid[@]}" ]; do
  for name in "${!pid[@]}"; do
    if [ -n "${reported[$name]:-}" ] || [ ! -s "$par/$name.result" ]; then continue; fi
    reported[$name]=1
    wait "${pid[$name]}" || true
    read -r rc secs <"$par/$name.result"
    if [ "$rc" -eq 0 ]; then
      echo "parallel: build $name, ${what[$name]}: passed in $secs s"
    else
      failed+=("$name")
      echo "parallel: build $name, ${what[$name]}: FAILED (exit $rc) after $secs s; the last 60 lines of ${log[$name]}:" >&2
      tail -60 "${log[$name]}" >&2
    fi
  done
  sleep 2
done
pid=()
phase=$(seconds "$phase_start" "$(now)")
kill -TERM "$watcher"
wait "$watcher" || true
watcher=
echo "parallel: the ${#reported[@]} runs ($(wants C && echo 'C builds two images' || echo 'one image each')) took $phase s together"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "parallel: failed: ${failed[*]}" >&2
  exit 1
fi

# --- checks ----------------------------------------------------------------------------------------
# Each run's own checks first.
if wants A; then
  "$playbook" tests/e2e/verify.yml
  # Nothing the build wrote or printed holds a plaintext secret (after all four ended: a running
  # build's SSH key in the controller's cache is a private key too).
  bash tests/e2e/no_secrets.sh "$E2E_DIR/blueprint.yml" "$E2E_DIR/build-output.log" "$E2E_DIR/output" \
    "$work_root" "$HOME/.cache/osimage-builder"
fi
if wants B; then bash tests/e2e/openbsd_stand_in.sh check; fi
if wants B || wants C; then bash tests/e2e/openbsd_stand_in.sh stop; fi

# Then what the builds must not have shared. The output directories each build wrote, by run:
outputs=()
if wants A; then outputs+=("$E2E_DIR/output/e2e-debian-12-1.0.0"); fi
if wants B; then outputs+=("$E2E_DIR/openbsd/output/openbsd-stand-in-7.8.0"); fi
if wants C; then outputs+=("$par/output/par-c-1.0.0" "$par/output/par-d-2.0.0"); fi
ids=()
for out in "${outputs[@]}"; do
  # The checksums hold for every artifact: no build wrote into another's files.
  ( cd "$out" && sha256sum --strict --quiet -c SHA256SUMS )
  ids+=("$(.venv/bin/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["build_id"])' "$out/manifest.json")")
  # Nothing but the finished artifacts, their checksums and signatures, the manifest, published.json,
  # the console logs and image_export's state file (documented; it must describe these artifacts): no
  # staging directory, no partial file, no file of another build.
  .venv/bin/python - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
manifest = json.load(open(os.path.join(out, 'manifest.json')))
artifacts = {a['path'] for a in manifest['artifacts']}
allowed = artifacts | {
    'manifest.json', 'published.json', 'serial.log', 'serial-install.log', 'serial-first-boot.log',
    'SHA256SUMS', 'SHA256SUMS.sig', 'SHA512SUMS', 'SHA512SUMS.sig', '.image_export.json'}
found = sorted(os.listdir(out))
assert set(found) <= allowed, '%s holds more than its artifacts: %s' % (out, sorted(set(found) - allowed))
assert artifacts <= set(found), '%s lacks artifacts of its manifest' % out
if '.image_export.json' in found:
    state = json.load(open(os.path.join(out, '.image_export.json')))
    assert set(state['artifacts']) == artifacts, '%s: the export state names %s' % (out, sorted(state['artifacts']))
print('parallel: %s: %s' % (manifest['build_id'], ', '.join(found)))
PY
done
# Beside each output directory nothing is left either (staging or replaced exports).
for parent in $(printf '%s\n' "${outputs[@]}" | xargs -n1 dirname | sort -u); do
  left=$(find "$parent" -mindepth 1 -maxdepth 1 | sort)
  expected=$(printf '%s\n' "${outputs[@]}" | grep "^$parent/" | sort)
  if [ "$left" != "$expected" ]; then echo "parallel: $parent holds more than the output directories: $left" >&2; exit 1; fi
done
# Four builds, four ids (and so four work directories and four output directories).
if [ "$(printf '%s\n' "${ids[@]}" | sort -u | wc -l)" -ne "${#outputs[@]}" ] \
  || [ "$(printf '%s\n' "${outputs[@]}" | sort -u | wc -l)" -ne "${#outputs[@]}" ]; then
  echo "parallel: builds shared an id or an output directory: ${ids[*]}" >&2
  exit 1
fi
# No process of any build is left: qemu names its disks and sockets by their paths in the work root.
if pgrep -af -- "${work_root%/}/" >&2; then echo "parallel: processes of the builds are left (above)" >&2; exit 1; fi
# Ports, processes, loop devices, mounts and work directories, from what the watcher saw.
.venv/bin/python tests/e2e/parallel_watch.py check "$work_root" "$par/watch.json" "${ids[@]}"
echo "parallel: ${#ids[@]} builds passed at once: ${ids[*]}"
