# Runs inside the booted image (python3 -c), as root; prints one JSON object.
# argv[1]: {"hostname": ..., "packages": [...], "enabled": [...], "disabled": [...], "build_key": "<base64 key body>"}
import json
import os
import socket
import stat
import subprocess
import sys

want = json.loads(sys.argv[1])


def run(argv, timeout=120):
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                              check=False, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return proc.returncode, proc.stdout.strip()


# cloud-init sets the short name when the blueprint's hostname is fully qualified
found = {'hostname': socket.getfqdn() if '.' in want['hostname'] else socket.gethostname()}
run(['cloud-init', 'status', '--wait'], timeout=600)
try:
    with open('/run/cloud-init/result.json') as handle:
        result = json.load(handle).get('v1', {})
    found['cloud_init'] = {'status': 'done', 'errors': result.get('errors', [])}
except (OSError, ValueError) as exc:
    found['cloud_init'] = {'status': 'not finished (%s)' % exc, 'errors': []}
status = run(['cloud-init', 'status'])[1]
if 'status: done' not in status:
    found['cloud_init']['status'] = status

missing = []
for package in want['packages']:
    rc, out = run(['dpkg-query', '-W', '-f=${Status}', package])
    if rc != 0 or out != 'install ok installed':
        missing.append(package)
found['packages_missing'] = missing

wrong = []
for state in ('enabled', 'disabled'):
    for service in want[state]:
        out = run(['systemctl', 'is-enabled', service])[1].splitlines()
        seen = out[-1] if out else ''
        if seen != state and not (state == 'disabled' and seen == 'masked') and not (
                state == 'enabled' and seen in ('alias', 'static', 'indirect', 'generated')):
            wrong.append('%s is %s, not %s' % (service, seen or 'unknown', state))
found['services_wrong'] = wrong

holders = []
key = want['build_key']
if key:
    for top in ('/root', '/home', '/etc/ssh'):
        for directory, _dirs, files in os.walk(top):
            for name in files:
                path = os.path.join(directory, name)
                try:
                    if not stat.S_ISREG(os.lstat(path).st_mode):
                        continue  # a FIFO would block, a symlink may lead anywhere
                    with open(path, 'rb') as handle:
                        if key.encode() in handle.read(4 * 1024 * 1024):
                            holders.append(path)
                except OSError:
                    pass
found['build_key_in'] = holders
print(json.dumps(found))
