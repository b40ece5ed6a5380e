#!/usr/bin/env bash
# Runs the default build (blueprints/debian-12.yml) and prints the stage
# durations from its manifest.json as JSON, plus the wall-clock time of the run.
#   bash benchmarks/default_build.sh [extra ansible-playbook arguments]
# Set BENCH_KEEP_CACHE=0 to build the root filesystem from scratch (mmdebstrap).
set -euo pipefail
cd "$(dirname "$0")/.."
make -s setup
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
if [ "${BENCH_KEEP_CACHE:-1}" = 0 ]; then
  rm -f /var/cache/osimage-builder/rootfs-*.tar
fi
start=$(date +%s.%N)
.venv/bin/ansible-playbook build-image.yml -e osimage_output_dir="$out" "$@" > "$out/build.log" 2>&1 || {
  tail -40 "$out/build.log" >&2
  exit 1
}
end=$(date +%s.%N)
.venv/bin/python - "$out"/debian-12-*/manifest.json "$start" "$end" <<'PY'
import json, sys
manifest = json.load(open(sys.argv[1]))
stages = {stage['name']: stage['seconds'] for stage in manifest['stages']}
print(json.dumps({'stages_seconds': stages, 'stages_total_seconds': round(sum(stages.values()), 1),
                  'wall_clock_seconds': round(float(sys.argv[3]) - float(sys.argv[2]), 1),
                  'artifacts': {a['path']: a['size'] for a in manifest['artifacts']}}, indent=2))
PY
