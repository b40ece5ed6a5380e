# -*- coding: utf-8 -*-
from __future__ import annotations

import json
import os
import subprocess
import time
import typing as t

import pytest

from ansible_collections.osimage.builder.plugins.module_utils import _lease
from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput
from ansible_collections.osimage.builder.plugins.module_utils._lease import ProcInfo, ProcessTable


def make_lease(path, age=0.0, **data):
    content = {'build_id': 'b1', 'ttl': 6}
    content.update(data)
    path.write_text(json.dumps(content))
    when = time.time() - age
    os.utime(str(path), (when, when))
    return str(path)


# -- the lease file ----------------------------------------------------------------------------

def test_a_missing_lease_is_stale(tmp_path):
    assert _lease.is_stale(str(tmp_path / 'lease'), 60)
    assert _lease.age(str(tmp_path / 'lease')) is None


@pytest.mark.parametrize('age, ttl, stale', [(0, 6, False), (5.5, 6, False), (6.5, 6, True), (3600, 60, True)])
def test_staleness_follows_the_heartbeat(tmp_path, age, ttl, stale):
    path = make_lease(tmp_path / 'lease', age)
    assert _lease.is_stale(path, ttl) is stale


def test_staleness_with_a_given_clock(tmp_path):
    path = make_lease(tmp_path / 'lease')
    mtime = os.stat(path).st_mtime
    assert not _lease.is_stale(path, 10, now=mtime + 9)
    assert _lease.is_stale(path, 10, now=mtime + 11)


def test_a_kept_lease_never_goes_stale(tmp_path):
    path = make_lease(tmp_path / 'lease', 3600, kept=True)
    assert not _lease.is_stale(path, 6)


def test_refresh_touches_and_reports_a_removed_lease(tmp_path):
    path = make_lease(tmp_path / 'lease', 100)
    assert _lease.is_stale(path, 6)
    assert _lease.refresh(path)
    assert not _lease.is_stale(path, 6)
    os.unlink(path)
    assert not _lease.refresh(path)


def test_require_live(tmp_path):
    path = make_lease(tmp_path / 'lease', build_id='20250131-ab12')
    assert _lease.require_live(path, 6) == '20250131-ab12'
    with pytest.raises(InvalidInput, match=r'lease: .*/nothing does not exist; start the build'):
        _lease.require_live(str(tmp_path / 'nothing'), 6)
    os.utime(path, (time.time() - 100, time.time() - 100))
    with pytest.raises(InvalidInput, match=r'is stale \(last refreshed 100 s ago, lease_ttl is 6 s\)'):
        _lease.require_live(path, 6)
    with pytest.raises(InvalidInput, match='lease_ttl: must be more than 0'):
        _lease.require_live(path, 0)


# -- processes: /proc and ps ---------------------------------------------------------------------

# /proc/PID/stat of a python whose comm holds a space and a parenthesis (Linux 6.1, procfs).
STAT_ODD_COMM = ('4242 (we ird) x) S 4100 4242 4100 0 -1 4194304 1203 0 0 0 5 2 0 0 20 0 1 0 987654 '
                 '25837568 2551 18446744073709551615 1 1 0 0 0 0 0 16781312 2 0 0 0 17 3 0 0 0 0 0')


def test_parse_proc_stat_counts_from_the_last_parenthesis():
    assert _lease.parse_proc_stat(STAT_ODD_COMM) == ('S', 4100, '987654')


def stat_line(pid, comm, ppid, start, state='S'):
    return '%d (%s) %s %d 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 %s 1000 10' % (pid, comm, state, ppid, start)


def fake_proc(root, processes):
    """processes: pid -> (ppid, start, argv[, state])."""
    (root / 'self').mkdir(parents=True)
    (root / 'self' / 'stat').write_text(stat_line(1, 'init', 0, '1'))
    for pid, entry in processes.items():
        ppid, start, argv = entry[:3]
        state = entry[3] if len(entry) > 3 else 'S'
        directory = root / str(pid)
        directory.mkdir()
        (directory / 'stat').write_text(stat_line(pid, os.path.basename(argv[0])[:15], ppid, start, state))
        (directory / 'cmdline').write_bytes(b''.join(arg.encode() + b'\0' for arg in argv))
    return ProcessTable(proc_root=str(root), run_ps=lambda argv: pytest.fail('ps must not run where /proc is'))


# A local-connection build: the module's python under the worker that ansible-playbook forked (it keeps
# the parent's command line) under the ansible-playbook that AWX's ansible-runner started.
LOCAL_BUILD = {
    900: (1, '100', ['/usr/bin/python3', '/usr/bin/ansible-runner', 'worker']),
    1000: (900, '200', ['/usr/bin/python3', '/usr/bin/ansible-playbook', '-i', 'inv', 'build-image.yml']),
    1100: (1000, '300', ['/usr/bin/python3', '/usr/bin/ansible-playbook', '-i', 'inv', 'build-image.yml']),
    1200: (1100, '400', ['/bin/sh', '-c', '/usr/bin/python3 AnsiballZ_build_lease.py && sleep 0']),
    1300: (1200, '500', ['/usr/bin/python3', 'AnsiballZ_build_lease.py']),
}

# An ssh-connection build with become: sshd's session process, the user's shell, sudo, the module.
SSH_BUILD = {
    500: (1, '50', ['sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups']),
    700: (500, '70', ['sshd: builder [priv]']),
    710: (700, '71', ['sshd: builder@notty']),
    720: (710, '72', ['/bin/sh', '-c', 'sudo -H -S -n -u root /bin/sh -c "python3 AnsiballZ.py"']),
    730: (720, '73', ['sudo', '-H', '-S', '-n', '-u', 'root', '/bin/sh', '-c', 'python3 AnsiballZ.py']),
    740: (730, '74', ['python3', 'AnsiballZ.py']),
}


def test_ancestors_from_proc(tmp_path):
    table = fake_proc(tmp_path / 'proc', LOCAL_BUILD)
    assert [info.pid for info in table.ancestors(1300)] == [1200, 1100, 1000, 900]
    assert table.info(1000) == ProcInfo(1000, 900, '200', 'S', tuple(LOCAL_BUILD[1000][2]))


def test_the_anchor_is_the_top_most_ansible_playbook(tmp_path):
    table = fake_proc(tmp_path / 'proc', LOCAL_BUILD)
    anchor = _lease.choose_anchor(table.ancestors(1300))
    assert (anchor.pid, anchor.start) == (1000, '200')


def test_over_ssh_the_anchor_is_the_nearest_sshd_session(tmp_path):
    table = fake_proc(tmp_path / 'proc', SSH_BUILD)
    anchor = _lease.choose_anchor(table.ancestors(740))
    assert anchor.pid == 710
    assert anchor.describe() == 'sshd: builder@notty'


def test_no_anchor_among_unrelated_ancestors(tmp_path):
    table = fake_proc(tmp_path / 'proc', {10: (1, '1', ['/usr/sbin/cron']), 11: (10, '2', ['sh', 'job.sh'])})
    assert _lease.choose_anchor(table.ancestors(11)) is None


def test_pid_reuse_and_zombies_are_not_the_anchor(tmp_path):
    table = fake_proc(tmp_path / 'proc', {1000: LOCAL_BUILD[1000], 2000: (1, '9', ['ansible-playbook'], 'Z')})
    assert table.alive(1000, '200')
    assert not table.alive(1000, '201'), 'a pid reused by a process that started later is not the anchor'
    assert not table.alive(2000, '9'), 'a killed ansible-playbook that nobody reaped is gone'
    assert not table.alive(3000, '1')


# ps -o stat=,ppid=,lstart=,command= -p PID as OpenBSD 7.6 and procps-ng 4.0 print it.
PS_OPENBSD = 'Ss      9873 Mon Dec  7 03:13:13 2026 sshd-session: builder@notty (sshd-session)\n'
PS_PROCPS = 'S+      4100 Sun Dec  6 23:59:01 2026 /usr/bin/python3 /usr/bin/ansible-playbook build-image.yml\n'


def test_parse_ps():
    assert _lease.parse_ps(710, PS_OPENBSD) == ProcInfo(
        710, 9873, 'Mon Dec 7 03:13:13 2026', 'Ss', ('sshd-session:', 'builder@notty', '(sshd-session)'))
    info = _lease.parse_ps(1000, PS_PROCPS)
    assert (info.ppid, info.start, info.state) == (4100, 'Sun Dec 6 23:59:01 2026', 'S+')
    assert _lease.is_playbook(info.cmdline)
    assert _lease.parse_ps(5, '') is None


def test_ancestors_through_ps_without_proc(tmp_path):
    rows = {
        740: '  S     730 Mon Dec  7 03:20:00 2026 python3 AnsiballZ.py',
        730: '  S     710 Mon Dec  7 03:20:00 2026 doas python3 AnsiballZ.py',
        710: '  S     700 Mon Dec  7 03:13:13 2026 sshd-session: builder@notty',
        700: '  Is      1 Mon Dec  7 03:13:12 2026 sshd-session: builder [priv]',
    }
    calls = []

    def run_ps(argv):
        calls.append(argv)
        return rows.get(int(argv[-1]), '') + '\n'

    table = ProcessTable(proc_root=str(tmp_path / 'noproc'), run_ps=run_ps)
    anchor = _lease.choose_anchor(table.ancestors(740))
    assert (anchor.pid, anchor.start) == (710, 'Mon Dec 7 03:13:13 2026')
    assert calls[0] == ['ps', '-o', 'stat=,ppid=,lstart=,command=', '-p', '740']
    assert table.alive(710, 'Mon Dec 7 03:13:13 2026')
    assert not table.alive(710, 'Mon Dec 7 04:00:00 2026')


def test_the_real_process_table_finds_this_process():
    table = ProcessTable()
    me = table.info(os.getpid())
    assert me is not None and me.ppid == os.getppid()
    assert table.alive(os.getpid(), me.start)


# -- the keeper ----------------------------------------------------------------------------------

class ScriptedTable(ProcessTable):
    def __init__(self, alive_checks: int) -> None:
        super().__init__()
        self.left = alive_checks

    def alive(self, pid: int, start: t.Optional[str]) -> bool:
        self.left -= 1
        return self.left >= 0


def test_the_keeper_refreshes_while_the_anchor_lives_then_stops(tmp_path):
    path = make_lease(tmp_path / 'lease', 100)
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        assert not _lease.is_stale(path, 6), 'refreshed before each sleep'
        os.utime(path, (time.time() - 100, time.time() - 100))

    assert _lease.keep(path, 'b1', 6, 1000, '200', ScriptedTable(3), sleep) == 'anchor gone'
    assert sleeps == [1.0, 1.0, 1.0]
    assert _lease.is_stale(path, 6), 'no heartbeat once the anchor is gone'


def test_after_an_sshd_anchor_ends_the_keeper_refreshes_for_the_grace_then_stops(tmp_path):
    path = make_lease(tmp_path / 'lease', 100)
    now = [0.0]
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        now[0] += 100.0

    # The anchor lives for one check; then 1800 s of grace in steps of 100 s, refreshing all the while.
    assert _lease.keep(path, 'b1', 6, 1000, '200', ScriptedTable(1), sleep, grace=1800,
                       clock=lambda: now[0]) == 'anchor gone'
    assert len(sleeps) == 1 + 18
    assert not _lease.is_stale(path, 6), 'refreshed during the grace'


def test_the_keeper_ends_when_the_lease_is_removed_or_taken_over(tmp_path):
    path = make_lease(tmp_path / 'lease')
    os.unlink(path)
    assert _lease.keep(path, 'b1', 6, 1, None, ScriptedTable(10), lambda s: None) == 'lease taken over'
    make_lease(tmp_path / 'lease', build_id='other')
    assert _lease.keep(path, 'b1', 6, 1, None, ScriptedTable(10), lambda s: None) == 'lease taken over'
    make_lease(tmp_path / 'lease', keeper_pid=os.getpid() + 1)
    assert _lease.keep(path, 'b1', 6, 1, None, ScriptedTable(10), lambda s: None) == 'lease taken over'


def test_find_leases(tmp_path):
    root = tmp_path / 'work'
    for name, lease in [('live', 0), ('dead', 100), ('kept', 100), ('nolease', None), ('unmarked', 100)]:
        (root / name).mkdir(parents=True)
        if name != 'unmarked':
            (root / name / 'osimage-build.json').write_text(json.dumps({'id': name, 'hypervisor': 'qemu'}))
        if lease is not None:
            make_lease(root / name / 'lease', lease, build_id=name, kept=name == 'kept')
    found = {entry['build_id']: entry for entry in _lease.find_leases(str(root))}
    assert {name: entry['lease'] for name, entry in found.items()} == {
        'live': 'live', 'dead': 'stale', 'kept': 'kept', 'nolease': 'none'}
    assert found['dead']['work_dir'] == str(root / 'dead')
    assert found['dead']['hypervisor'] == 'qemu'
    assert _lease.find_leases(str(tmp_path / 'missing')) == []


@pytest.mark.parametrize('keeper, anchor, kept, state', [
    # both ended: nothing refreshes the lease any more, the build is gone before ttl runs out
    (False, False, False, 'stale'),
    # a keeper that died (OOM) while ansible-playbook runs: the build lives
    (False, True, False, 'live'),
    # a keeper in its grace after an sshd anchor ended: the next stage may come
    (True, False, False, 'live'),
    (True, True, False, 'live'),
    # a VM kept for debugging outlives its build
    (False, False, True, 'kept'),
])
def test_a_fresh_lease_whose_keeper_and_anchor_ended_is_stale_at_once(tmp_path, keeper, anchor, kept, state):
    root = tmp_path / 'work'
    (root / 'b1').mkdir(parents=True)
    (root / 'b1' / 'osimage-build.json').write_text(json.dumps({'id': 'b1'}))
    make_lease(root / 'b1' / 'lease', 0, keeper_pid=5001, keeper_start='k', anchor_pid=1000, anchor_start='200',
               kept=kept)
    processes = {}
    if keeper:
        processes[5001] = ProcInfo(5001, 1, 'k', 'S', ('python3',))
    if anchor:
        processes[1000] = ANCHOR
    [found] = _lease.find_leases(str(root), table=FakeTable(processes))
    assert found['lease'] == state


def test_a_lease_without_keeper_or_anchor_yet_is_not_gone(tmp_path):
    assert not _lease.gone({'keeper_pid': None, 'anchor_pid': 1000}, FakeTable({}))
    assert not _lease.gone({'keeper_pid': 5001}, FakeTable({}))
    # a reused pid is not the keeper or the anchor
    table = FakeTable({5001: ProcInfo(5001, 1, 'other', 'S', ()), 1000: ProcInfo(1000, 1, 'other', 'S', ())})
    assert _lease.gone({'keeper_pid': 5001, 'keeper_start': 'k', 'anchor_pid': 1000, 'anchor_start': '200'}, table)


def test_a_process_whose_facts_cannot_be_read_is_not_taken_for_ended():
    """/proc mounted with hidepid: another user's keeper has no /proc entry, but its pid exists."""
    class Hidden(FakeTable):
        def exists(self, pid):
            return pid in (5001, 1000)
    data = {'keeper_pid': 5001, 'keeper_start': 'k', 'anchor_pid': 1000, 'anchor_start': '200'}
    assert not _lease.gone(data, Hidden({}))
    assert _lease.gone(data, FakeTable({}))


def test_expired_is_stale_or_gone(tmp_path):
    fresh = make_lease(tmp_path / 'lease', 0, keeper_pid=5001, keeper_start='k', anchor_pid=1000, anchor_start='200')
    assert not _lease.expired(fresh, 6, table=FakeTable({1000: ANCHOR}))
    assert _lease.expired(fresh, 6, table=FakeTable({}))
    old = make_lease(tmp_path / 'old', 100)
    assert _lease.expired(old, 6, table=FakeTable({}))
    assert _lease.expired(str(tmp_path / 'missing'), 6, table=FakeTable({}))


def test_the_real_table_tells_an_ended_process():
    table = ProcessTable()
    me = table.info(os.getpid())
    assert not table.ended(os.getpid(), me.start)
    assert table.ended(os.getpid(), 'not-' + me.start)
    proc = subprocess.Popen(['true'])
    proc.wait()
    assert table.ended(proc.pid, None)


def test_a_restarted_lease_names_the_live_anchor_before_the_old_keeper_ends(tmp_path):
    lease, dummy, killed = machine(tmp_path)
    lease.start('b1', 6, anchor_pid=1000)
    seen = []
    kill = lease.kill

    def watching_kill(pid, signum):
        seen.append(_lease.read(lease.path))
        kill(pid, signum)
    lease.kill = watching_kill
    lease.start('b1', 12, anchor_pid=1000)
    assert seen[0]['keeper_pid'] is None and seen[0]['anchor_pid'] == 1000 and seen[0]['ttl'] == 12
    assert killed == [(5001, 15)]


@pytest.mark.parametrize('marked, expected', [
    # what build_image writes: the hidden staging directory named after the build
    ('/srv/out/.deb-1.0.partial', None),
    ('/srv/out/.deb-1.0.b7.partial', '/srv/out/.deb-1.0.b7.partial'),
    # never the output directory itself, another build's staging, a relative or a roundabout path
    ('/srv/out/deb-1.0', None),
    ('/srv/out/.deb-1.0.b8.partial', None),
    ('out/.deb-1.0.b7.partial', None),
    ('/srv/out/../.deb-1.0.b7.partial', None),
    ('/srv/out/..b7.partial', None),
    ('/', None),
    (42, None),
])
def test_find_leases_names_the_staging_directory_of_the_build(tmp_path, marked, expected):
    work = tmp_path / 'work' / 'b7'
    work.mkdir(parents=True)
    (work / 'osimage-build.json').write_text(json.dumps({'id': 'b7', 'hypervisor': 'qemu', 'staging_dir': marked}))
    make_lease(work / 'lease', 100, build_id='b7')
    [found] = _lease.find_leases(str(tmp_path / 'work'))
    assert found['lease'] == 'stale'
    assert found['staging_dir'] == expected


@pytest.mark.parametrize('marked, expected', [
    ('/home/awx/.cache/osimage-builder/b7', '/home/awx/.cache/osimage-builder/b7'),
    # never the controller root itself, another build's directory, a relative or a roundabout path
    ('/home/awx/.cache/osimage-builder', None),
    ('/home/awx/.cache/osimage-builder/b8', None),
    ('.cache/osimage-builder/b7', None),
    ('/home/awx/.cache/osimage-builder/x/../b7', None),
    ('/home/awx/.cache/osimage-builder/b7/', None),
    ('/', None),
    (None, None),
])
def test_find_leases_names_the_controller_directory_of_the_build(tmp_path, marked, expected):
    work = tmp_path / 'work' / 'b7'
    work.mkdir(parents=True)
    (work / 'osimage-build.json').write_text(json.dumps({'id': 'b7', 'controller_dir': marked}))
    make_lease(work / 'lease', 100, build_id='b7')
    [found] = _lease.find_leases(str(tmp_path / 'work'))
    assert found['controller_dir'] == expected


def test_find_leases_of_a_marker_without_staging_directory(tmp_path):
    work = tmp_path / 'work' / 'b7'
    work.mkdir(parents=True)
    (work / 'osimage-build.json').write_text(json.dumps({'id': 'b7'}))
    [found] = _lease.find_leases(str(tmp_path / 'work'))
    assert found['staging_dir'] is None


# -- build_lease's state machine -----------------------------------------------------------------

class FakeTable(ProcessTable):
    def __init__(self, processes: t.Dict[int, ProcInfo]) -> None:
        super().__init__()
        self.processes = processes

    def info(self, pid: int) -> t.Optional[ProcInfo]:
        return self.processes.get(pid)

    def exists(self, pid: int) -> bool:
        return pid in self.processes


ANCHOR = ProcInfo(1000, 1, '200', 'S', ('python3', '/usr/bin/ansible-playbook', 'build.yml'))


class Spawner:
    def __init__(self, table: FakeTable) -> None:
        self.table = table
        self.spawned: t.List[str] = []
        self.next_pid = 5000

    def __call__(self, target, pidfile):
        self.spawned.append(pidfile)
        self.next_pid += 1
        self.table.processes[self.next_pid] = ProcInfo(self.next_pid, 1, 'k%d' % self.next_pid, 'S', ('python3',))
        return self.next_pid


def machine(tmp_path, check_mode=False):
    table = FakeTable({1000: ANCHOR})
    spawner = Spawner(table)
    killed = []

    def kill(pid, signum):
        killed.append((pid, signum))
        table.processes.pop(pid, None)

    lease = _lease.BuildLease(str(tmp_path / 'w' / 'lease'), spawner, check_mode=check_mode, table=table, kill=kill)
    return lease, spawner, killed


def test_start_is_idempotent_and_stop_ends_the_keeper(tmp_path):
    lease, spawner, killed = machine(tmp_path)
    first = lease.start('b1', 6, anchor_pid=1000)
    assert first['changed'] and first['keeper_pid'] == 5001 and first['anchor_pid'] == 1000
    assert first['stale'] is False
    data = _lease.read(lease.path)
    assert data['build_id'] == 'b1' and data['anchor_start'] == '200' and data['keeper_start'] == 'k5001'
    assert data['grace'] == 0, 'a given anchor, like ansible-playbook, has no grace'
    assert spawner.spawned == [lease.path + '.keeper.pid']
    again = lease.start('b1', 6, anchor_pid=1000)
    assert not again['changed'] and again['keeper_pid'] == 5001
    other = lease.start('b1', 12, anchor_pid=1000)
    assert other['changed'] and other['keeper_pid'] == 5002 and killed == [(5001, 15)]
    stopped = lease.stop()
    assert stopped['changed'] and not os.path.exists(lease.path) and killed[-1] == (5002, 15)
    assert not lease.stop()['changed']


def test_check_mode_starts_nothing(tmp_path):
    lease, spawner, dummy = machine(tmp_path, check_mode=True)
    result = lease.start('b1', 6, anchor_pid=1000)
    assert result['changed'] and result['keeper_pid'] is None
    assert spawner.spawned == [] and not os.path.exists(lease.path)


def test_a_dead_anchor_is_an_error(tmp_path):
    lease, dummy, dummy2 = machine(tmp_path)
    with pytest.raises(InvalidInput, match='anchor_pid: process 4321 does not run'):
        lease.start('b1', 6, anchor_pid=4321)


def test_kept_ends_the_keeper_and_keeps_the_lease_valid(tmp_path):
    lease, dummy, killed = machine(tmp_path)
    lease.start('b1', 6, anchor_pid=1000)
    result = lease.keep_for_debugging()
    assert result['changed'] and result['kept'] and killed == [(5001, 15)]
    os.utime(lease.path, (time.time() - 3600, time.time() - 3600))
    assert not _lease.is_stale(lease.path, 6)
    assert not lease.keep_for_debugging()['changed']


# -- the workers a killed ansible-playbook leaves --------------------------------------------------

PLAYBOOK = ['/usr/bin/python3', '/usr/bin/ansible-playbook', 'build-image.yml', '-e', '@bp.yml']
# ansible-playbook 1000 (started at tick 200) was killed; its workers called setsid() and live on.
AFTER_A_KILL = {
    # the worker of the task that ran, reparented to init, and its module
    1100: (1, '300', PLAYBOOK),
    1101: (1100, '301', ['/bin/sh', '-c', 'python3 AnsiballZ_debian_bootstrap.py']),
    # another build with the same command line: its live playbook and that one's worker
    2000: (1, '250', PLAYBOOK),
    2100: (2000, '260', PLAYBOOK),
    # an older process with the same command line, one with another, a zombie worker
    1160: (1, '150', PLAYBOOK),
    1170: (1, '310', ['/usr/bin/python3', '/usr/bin/ansible-playbook', 'other.yml']),
    1180: (1, '320', PLAYBOOK, 'Z'),
}


def test_the_orphaned_workers_of_a_killed_playbook(tmp_path):
    table = fake_proc(tmp_path / 'proc', AFTER_A_KILL)
    found = _lease.orphaned_workers(table, PLAYBOOK, '200', exclude={2000})
    assert [info.pid for info in found] == [1100]
    # without the other build's lease its playbook would look orphaned too: it is why leases are read
    assert sorted(info.pid for info in _lease.orphaned_workers(table, PLAYBOOK, '200')) == [1100, 2000]
    # an anchor that is no ansible-playbook (sshd session, a given anchor_pid) has no workers to end
    assert _lease.orphaned_workers(table, ['sshd: builder@notty'], '200') == []
    assert _lease.orphaned_workers(table, (), '200') == []


def test_ending_the_orphans_terms_then_kills(tmp_path):
    table = fake_proc(tmp_path / 'proc', AFTER_A_KILL)
    signals = []

    def kill(pid, signum):
        signals.append((pid, signum))

    ended = _lease.end_orphans(table, PLAYBOOK, '200', {2000}, kill, lambda s: None, wait=1.0)
    assert ended == [1100]
    assert signals == [(1100, 15), (1100, 9)], 'SIGKILL only for a worker that outlived SIGTERM'

    signals.clear()

    def kill_and_go(pid, signum):
        signals.append((pid, signum))
        (tmp_path / 'proc' / str(pid) / 'stat').unlink()

    assert _lease.end_orphans(table, PLAYBOOK, '200', {2000}, kill_and_go, lambda s: None) == [1100]
    assert signals == [(1100, 15)]


def test_other_anchors_are_read_from_the_other_leases(tmp_path):
    for name, pid in [('b1', 1000), ('b2', 2000), ('b3', None)]:
        (tmp_path / name).mkdir()
        make_lease(tmp_path / name / 'lease', build_id=name, anchor_pid=pid)
    assert _lease.other_anchors(str(tmp_path), str(tmp_path / 'b1' / 'lease')) == {2000}


@pytest.mark.parametrize('kept, ends', [(False, True), (True, False)])
def test_the_keeper_ends_the_orphans_once_the_anchor_is_gone(tmp_path, kept, ends):
    table = fake_proc(tmp_path / 'proc', AFTER_A_KILL)
    root = tmp_path / 'work'
    (root / 'b1').mkdir(parents=True)
    (root / 'b2').mkdir()
    path = make_lease(root / 'b1' / 'lease', build_id='b1', kept=kept)
    make_lease(root / 'b2' / 'lease', build_id='b2', anchor_pid=2000)
    signals = []

    def kill(pid, signum):
        signals.append((pid, signum))
        (tmp_path / 'proc' / str(pid) / 'stat').unlink()

    # the anchor 1000 is not in the table: gone at the first check
    assert _lease.keep(path, 'b1', 6, 1000, '200', table, lambda s: None, anchor_cmdline=PLAYBOOK,
                       kill=kill) == 'anchor gone'
    assert signals == ([(1100, 15)] if ends else [])
