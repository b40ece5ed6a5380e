#!/usr/bin/env bash
# Uploads a 2 GiB artifact to a moto S3 server on loopback with cloud_upload (through
# ansible-playbook, as a build does) and, in the same run, with `aws s3 cp` of the same
# file to the same server, each to its own key; checks both objects, then prints both
# times, throughputs and the ratio as JSON on the last line (cloud_upload / aws s3 cp;
# below 1 is faster).
#   bash benchmarks/cloud_upload_s3.sh [SIZE_MIB]   (default 2048)
# BENCH_PART_SIZE and BENCH_CONCURRENCY set the module's s3.part_size and s3.concurrency
# (default: the module's defaults, 16M and 8). The artifact is written under TMPDIR
# (default /var/tmp, which is on disk where /tmp may be memory).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/ansible-playbook ] || [ ! -x .venv/bin/aws ]; then
  make -s setup
fi
size_mib=${1:-2048}
work=$(mktemp -d "${TMPDIR:-/var/tmp}/osimage-bench-s3.XXXXXX")
py=.venv/bin/python
background="$py tests/integration/targets/cloud_upload/files/background.py"
trap '$background stop-all "$work/servers"; rm -rf "$work"' EXIT
url=$($background start "$work/servers" moto -- "$PWD/$py" -m moto.server -H 127.0.0.1 -p '{port}' \
      | $py -c 'import json, sys; print(json.load(sys.stdin)["url"])')
# Dummy credentials: moto accepts any; nothing here may reach a real account.
export AWS_ACCESS_KEY_ID=bench-key AWS_SECRET_ACCESS_KEY=bench-secret AWS_DEFAULT_REGION=us-east-1
unset AWS_PROFILE AWS_SESSION_TOKEN
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
# Random data: neither side can skip or compress any of it.
head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$work/artifact.raw"
sha=$(sha256sum "$work/artifact.raw" | cut -d' ' -f1)
aws() { .venv/bin/aws --endpoint-url "$url" "$@"; }
aws s3 mb s3://bench > /dev/null
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
        content: "{{ upload | to_json }}"
        dest: "{{ result_file }}"
        mode: "0644"
YAML
t0=$(date +%s.%N)
aws s3 cp --only-show-errors "$work/artifact.raw" s3://bench/aws/artifact.raw
t1=$(date +%s.%N)
.venv/bin/ansible-playbook -i localhost, -c local -e ansible_python_interpreter="$PWD/$py" \
  -e part_size="${BENCH_PART_SIZE:-16M}" -e concurrency="${BENCH_CONCURRENCY:-8}" -e src="$work/artifact.raw" \
  -e sha="$sha" -e url="$url" -e result_file="$work/result.json" \
  "$work/upload.yml" > "$work/play.log" 2>&1 || { tail -30 "$work/play.log" >&2; exit 1; }
t2=$(date +%s.%N)
aws s3api head-object --bucket bench --key aws/artifact.raw > "$work/aws-head.json"
aws s3api head-object --bucket bench --key module/artifact.raw > "$work/module-head.json"
$py - "$t0" "$t1" "$t2" "$size_mib" "$sha" "$work" <<'PY'
import json, os, sys
t0, t1, t2 = (float(x) for x in sys.argv[1:4])
size, sha, work = int(sys.argv[4]) * 1024 * 1024, sys.argv[5], sys.argv[6]
result = json.load(open(os.path.join(work, 'result.json')))
heads = {name: json.load(open(os.path.join(work, name + '-head.json'))) for name in ('aws', 'module')}
assert all(head['ContentLength'] == size for head in heads.values()), heads
assert heads['module']['Metadata']['osimage-sha256'] == sha, heads['module']
assert result['changed'] and result['progress']['bytes_sent'] == size, result
aws, module = t1 - t0, t2 - t1
print(json.dumps({'bytes': size, 'aws_s3_cp_seconds': round(aws, 2), 'cloud_upload_seconds': round(module, 2),
                  'cloud_upload_transfer_seconds': result['progress']['seconds'],
                  'cloud_upload_parts': result['details']['parts'], 'cloud_upload_part_size': result['details']['part_size'],
                  'aws_s3_cp_MiB_per_s': round(size / aws / 2 ** 20, 1),
                  'cloud_upload_MiB_per_s': round(size / module / 2 ** 20, 1),
                  'ratio_cloud_upload_to_aws': round(module / aws, 3)}))
PY
