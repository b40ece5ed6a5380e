# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a killed build left on this host, for tests/e2e/kill_stages.sh.

    python kill_leftovers.py snapshot PID WORK_DIR          -> the pids to watch, one a line
    python kill_leftovers.py check WORK_DIR PIDFILE MARK... -> JSON {"processes", "mounts", "loops"}

``snapshot`` is taken just before the kill: PID (ansible-playbook) and every process below it
(its workers and their modules, ssh masters), the lease keeper named in WORK_DIR/lease and the
processes of the pidfiles in WORK_DIR (qemu supervisors, response-file servers).

``check`` lists what still runs of those pids (zombies count as gone: they hold nothing), every
other process whose command line holds WORK_DIR or one of the MARKs (the build id, the
directory of the killed build's playbook run), mounts under WORK_DIR and loop devices backed by
a file in it. The checker's own ancestors (the test script) are never listed.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import typing as t


def stat(pid: int) -> t.Optional[t.Tuple[str, int]]:
    """(state, ppid) of pid, None when it is gone."""
    try:
        with open('/proc/%d/stat' % pid, 'r', encoding='utf-8', errors='replace') as handle:
            fields = handle.read().rsplit(')', 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def cmdline(pid: int) -> str:
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            return handle.read().replace(b'\0', b' ').decode('utf-8', 'replace').strip()
    except OSError:
        return ''


def all_pids() -> t.List[int]:
    return [int(name) for name in os.listdir('/proc') if name.isdigit()]


def running(pid: int) -> bool:
    info = stat(pid)
    return info is not None and info[0] != 'Z'


def own_lineage() -> t.Set[int]:
    mine = {os.getpid()}
    pid = os.getpid()
    while pid > 1:
        info = stat(pid)
        if info is None:
            break
        pid = info[1]
        mine.add(pid)
    return mine


def read_int(path: str) -> t.Optional[int]:
    try:
        with open(path, 'r', encoding='ascii', errors='replace') as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def snapshot(top: int, work_dir: str) -> t.List[int]:
    children: t.Dict[int, t.List[int]] = {}
    for pid in all_pids():
        info = stat(pid)
        if info is not None:
            children.setdefault(info[1], []).append(pid)
    found, todo = set(), [top]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    try:
        with open(os.path.join(work_dir, 'lease'), 'r', encoding='utf-8') as handle:
            keeper = json.load(handle).get('keeper_pid')
        if keeper:
            found.add(int(keeper))
    except (OSError, ValueError, TypeError):
        pass
    for path in glob.glob(os.path.join(glob.escape(work_dir), '*.pid')):
        pid = read_int(path)
        if pid:
            found.add(pid)
    return sorted(pid for pid in found if running(pid))


def mounts_under(work_dir: str) -> t.List[str]:
    found = []
    with open('/proc/self/mountinfo', 'r', encoding='utf-8', errors='replace') as handle:
        for line in handle:
            target = line.split()[4].replace('\\040', ' ')
            if target == work_dir or target.startswith(work_dir.rstrip('/') + '/'):
                found.append(target)
    return found


def loops_backed_in(work_dir: str) -> t.List[str]:
    out = subprocess.run(['losetup', '--list', '--noheadings', '--output', 'NAME,BACK-FILE'], check=False,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.decode('utf-8', 'replace')
    return [line.strip() for line in out.splitlines() if work_dir.rstrip('/') + '/' in line]


def check(work_dir: str, pidfile: str, marks: t.List[str]) -> t.Dict[str, t.Any]:
    mine = own_lineage()
    watched = set()
    try:
        with open(pidfile, 'r', encoding='ascii') as handle:
            watched = {int(word) for word in handle.read().split()}
    except OSError:
        pass
    needles = [work_dir] + [mark for mark in marks if mark]
    processes = {}
    for pid in all_pids():
        if pid in mine or not running(pid):
            continue
        line = cmdline(pid)
        if pid in watched or any(needle in line for needle in needles):
            processes[pid] = line[:300]
    return {'processes': processes, 'mounts': mounts_under(work_dir), 'loops': loops_backed_in(work_dir)}


def main() -> None:
    if sys.argv[1] == 'snapshot':
        print('\n'.join(str(pid) for pid in snapshot(int(sys.argv[2]), sys.argv[3])))
    else:
        print(json.dumps(check(sys.argv[2], sys.argv[3], sys.argv[4:]), sort_keys=True))


if __name__ == '__main__':
    main()
