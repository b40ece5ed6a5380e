# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Watches the builds of tests/e2e/parallel.sh while they run, and checks afterwards what they left.

Nothing of a build outlives its work directory's record of it: qemu_vm keeps NAME.json (with the forwarded
SSH port) and NAME.pid, autoinstall_serve NAME.json (port, pid, start time), build_lease the lease file
(keeper pid and start time). This samples those files every half second, so that the test knows which
ports each build listened on at the same time as the others, and which processes it had.

  parallel_watch.py watch WORK_ROOT OUT.json      until SIGTERM; writes OUT.json then
  parallel_watch.py check WORK_ROOT OUT.json ID...  the checks, for the build ids given
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time


def proc_start(pid):
    """The start time of pid in clock ticks (field 22 of /proc/PID/stat), or None when it is gone."""
    try:
        with open('/proc/%d/stat' % pid, encoding='utf-8') as handle:
            text = handle.read()
    except (OSError, ValueError):
        return None
    fields = text[text.rindex(')') + 2:].split()
    if fields[0] == 'Z':
        return None
    return fields[19]


def read_json(path):
    try:
        with open(path, encoding='utf-8') as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def read_pid(path):
    try:
        with open(path, encoding='utf-8') as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def snapshot(work_root):
    """{build_id: {'ports': {(what, port)}, 'pids': {(what, pid, start)}}} for the work directories now."""
    now = {}
    for marker in glob.glob(os.path.join(work_root, '*', 'osimage-build.json')):
        work_dir = os.path.dirname(marker)
        build = (read_json(marker) or {}).get('id') or os.path.basename(work_dir)
        ports, pids = set(), set()
        for path in glob.glob(os.path.join(work_dir, '*.json')):
            name = os.path.basename(path)[:-len('.json')]
            data = read_json(path)
            if not isinstance(data, dict) or name == 'osimage-build':
                continue
            if data.get('ssh_port'):                                   # qemu_vm: the forwarded SSH port
                ports.add(('%s ssh' % name, int(data['ssh_port'])))
            if isinstance(data.get('spec'), dict) and data.get('url'):  # autoinstall_serve: the server's port
                ports.add(('%s server' % name, int(data['spec']['port'])))
            if data.get('pid') and data.get('starttime'):
                pids.add(('%s server' % name, int(data['pid']), str(data['starttime'])))
        for path in glob.glob(os.path.join(work_dir, '*.pid')):
            pid = read_pid(path)
            start = proc_start(pid) if pid else None
            if start:
                pids.add((os.path.basename(path), pid, start))
        lease = read_json(os.path.join(work_dir, 'lease')) or {}
        if lease.get('keeper_pid') and lease.get('keeper_start'):
            pids.add(('lease keeper', int(lease['keeper_pid']), str(lease['keeper_start'])))
        now[build] = {'ports': ports, 'pids': pids}
    return now


def loop_devices(work_root):
    """Loop devices whose backing file is under work_root."""
    out = subprocess.run(['losetup', '--list', '--noheadings', '--output', 'NAME,BACK-FILE'],
                         capture_output=True, text=True, check=False).stdout
    return [line for line in out.splitlines() if work_root.rstrip('/') + '/' in line]


def watch(work_root, out):
    builds, clashes, loops = {}, [], set()
    samples = 0
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    while not stop:
        now = snapshot(work_root)
        samples += 1
        holders = {}
        for build, seen in now.items():
            record = builds.setdefault(build, {'ports': set(), 'pids': set()})
            record['ports'] |= seen['ports']
            record['pids'] |= seen['pids']
            for what, port in seen['ports']:
                holders.setdefault(port, set()).add((build, what))
        # Two builds holding the same port at the same moment is the collision this test is about.
        for port, who in holders.items():
            if len({build for build, _what in who}) > 1:
                clashes.append({'port': port, 'holders': sorted(who), 'time': time.time()})
        loops |= set(loop_devices(work_root))
        time.sleep(0.5)
    result = {'samples': samples, 'clashes': clashes, 'loop_devices_seen': sorted(loops),
              'builds': {build: {'ports': sorted(r['ports'], key=lambda p: p[1]), 'pids': sorted(r['pids'])}
                         for build, r in builds.items()}}
    with open(out, 'w', encoding='utf-8') as handle:
        json.dump(result, handle, indent=2, sort_keys=True)


def check(work_root, out, ids):
    with open(out, encoding='utf-8') as handle:
        seen = json.load(handle)
    problems = []
    if seen['clashes']:
        problems.append('two builds listened on the same port at the same time: %s' % seen['clashes'][:5])
    for build in ids:
        record = seen['builds'].get(build)
        # Each build was seen with at least one port of its own: otherwise the sampling proved nothing.
        if not record or not record['ports']:
            problems.append('%s: no port of the build was seen while it ran (%d samples)' % (build, seen['samples']))
            continue
        ports = ', '.join('%s %d' % (what, port) for what, port in record['ports'])
        print('parallel: %s used %s' % (build, ports))
        for what, pid, start in record['pids']:
            if proc_start(pid) == start:
                problems.append('%s: its %s (pid %d) still runs' % (build, what, pid))
        if os.path.exists(os.path.join(work_root, build)):
            problems.append('%s: its work directory %s is left' % (build, os.path.join(work_root, build)))
    all_ports = [port for build in ids for _kind, port in seen['builds'].get(build, {}).get('ports', [])]
    print('parallel: %d ports seen in %d samples, %d held by two builds at once; %d distinct across the builds'
          % (len(all_ports), seen['samples'], len({c['port'] for c in seen['clashes']}), len(set(all_ports))))
    mounts = subprocess.run(['findmnt', '-rn', '-o', 'TARGET'], capture_output=True, text=True, check=False).stdout
    mounted = [m for m in mounts.splitlines() if m.startswith(work_root.rstrip('/') + '/')]
    if mounted:
        problems.append('mounts under the work root are left: %s' % mounted)
    left = loop_devices(work_root)
    if left:
        problems.append('loop devices on files of the work root are left: %s' % left)
    print('parallel: loop devices the builds used: %s; left: %s' % (len(seen['loop_devices_seen']), len(left)))
    for problem in problems:
        print('parallel: ' + problem, file=sys.stderr)
    return 1 if problems else 0


def main(argv):
    if len(argv) >= 3 and argv[0] == 'watch':
        watch(argv[1], argv[2])
        return 0
    if len(argv) >= 4 and argv[0] == 'check':
        return check(argv[1], argv[2], argv[3:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
