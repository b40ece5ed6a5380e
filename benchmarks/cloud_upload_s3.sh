#!/usr/bin/env bash
# Uploads a 2 GiB artifact to a moto S3 server on loopback with cloud_upload (through
# ansible-playbook, as a build does) and, in the same run, with `aws s3 cp` of the same
# file to the same server; prints both times, throughputs and the ratio as JSON
# (cloud_upload / aws s3 cp; below 1 is faster).
#   bash benchmarks/cloud_upload_s3.sh [SIZE_MIB]   (default 2048)
set -euo pipefail
cd "$(dirname "$0")/.."
make -s setup
size_mib=${1:-2048}
work=$(mktemp -d /var/tmp/osimage-bench-s3.XXXXXX)
py=.venv/bin/python
background="$py tests/integration/targets/cloud_upload/files/background.py"
trap '$background stop-all "$work/servers"; rm -rf "$work"' EXIT
url=$($background start "$work/servers" moto -- "$PWD/$py" -m moto.server -H 127.0.0.1 -p '{port}' \
      | $py -c 'import json, sys; print(json.load(sys.stdin)["url"])')
export AWS_ACCESS_KEY_ID=bench-key AWS_SECRET_ACCESS_KEY=bench-secret AWS_DEFAULT_REGION=us-east-1
# Random data: neither side can skip or compress any of it.
head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$work/artifact.raw"
sha=$(sha256sum "$work/artifact.raw" | cut -d' ' -f1)
.venv/bin/aws --endpoint-url "$url" s3 mb s3://bench > /dev/null
cat > "$work/upload.yml" <<'YAML'
- hosts: localhost
  gather_facts: false
  tasks:
    - osimage.builder.cloud_upload:
        target: s3
        src: "{{ src }}"
        sha256: "{{ sha }}"
        name: module/artifact.raw
        s3: {bucket: bench, endpoint_url: "{{ url }}", part_size: "{{ part_size }}", concurrency: "{{ concurrency }}"}
      register: upload
    - ansible.builtin.copy:
        content: "{{ upload.progress | to_json }}"
        dest: "{{ progress_file }}"
        mode: "0644"
YAML
t0=$(date +%s.%N)
.venv/bin/aws --endpoint-url "$url" s3 cp --only-show-errors "$work/artifact.raw" s3://bench/aws/artifact.raw
t1=$(date +%s.%N)
.venv/bin/ansible-playbook -i localhost, -c local -e ansible_python_interpreter="$PWD/$py" \
  -e part_size="${BENCH_PART_SIZE:-16M}" -e concurrency="${BENCH_CONCURRENCY:-8}" -e src="$work/artifact.raw" -e sha="$sha" -e url="$url" -e progress_file="$work/progress.json" \
  "$work/upload.yml" > "$work/play.log" 2>&1 || { tail -30 "$work/play.log" >&2; exit 1; }
t2=$(date +%s.%N)
$py - "$t0" "$t1" "$t2" "$size_mib" "$work/progress.json" <<'PY'
import json, sys
t0, t1, t2 = (float(x) for x in sys.argv[1:4])
size = int(sys.argv[4]) * 1024 * 1024
progress = json.load(open(sys.argv[5]))
aws, module = t1 - t0, t2 - t1
print(json.dumps({'bytes': size, 'aws_s3_cp_seconds': round(aws, 2), 'cloud_upload_seconds': round(module, 2),
                  'cloud_upload_transfer_seconds': progress['seconds'],
                  'aws_s3_cp_MiB_per_s': round(size / aws / 2 ** 20, 1),
                  'cloud_upload_MiB_per_s': round(size / module / 2 ** 20, 1),
                  'ratio_cloud_upload_to_aws': round(module / aws, 3)}))
PY
