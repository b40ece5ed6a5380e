# -*- coding: utf-8 -*-
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ansible_collections.osimage.builder.plugins.module_utils import _daemon


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_watch_lease_ends_the_process_once_the_lease_is_stale():
    clock = Clock()
    expired = []

    def stale(path, ttl, now):
        # The heartbeat stops at 1010: stale from 1010 + ttl on.
        return now > 1010 + ttl

    why = _daemon.watch_lease('/w/lease', 6, lambda: True, lambda: expired.append(clock()), clock, clock.sleep, stale)
    assert why == _daemon.LEASE_EXPIRED
    assert len(expired) == 1
    assert 1016 < expired[0] <= 1016 + _daemon.poll_interval(6)


def test_watch_lease_returns_when_the_process_ends_first():
    clock = Clock()
    alive = iter([True, True, False])
    why = _daemon.watch_lease('/w/lease', 60, lambda: next(alive), lambda: None, clock, clock.sleep,
                              lambda path, ttl, now: False)
    assert why == 'gone'
    assert clock.now == 1000 + 2 * _daemon.poll_interval(60)


def test_poll_interval_stays_between_a_fifth_and_two_seconds():
    assert _daemon.poll_interval(0.6) == 0.2
    assert _daemon.poll_interval(6) == 1.0
    assert _daemon.poll_interval(600) == 2.0


def stale_lease(tmp_path):
    path = tmp_path / 'lease'
    path.write_text('{"build_id": "b1", "ttl": 1}')
    os.utime(str(path), (time.time() - 60, time.time() - 60))
    return str(path)


def test_a_real_child_is_ended_when_its_lease_expires(tmp_path):
    proc = subprocess.Popen(['sleep', '60'])
    started = time.monotonic()
    record = _daemon.supervise_child(proc, stale_lease(tmp_path), 1.0)
    assert time.monotonic() - started < 5
    assert record['reason'] == 'lease expired'
    assert record['returncode'] == -15
    assert 'lease' in record['error']


def test_a_child_that_ignores_sigterm_gets_sigkill(tmp_path):
    proc = subprocess.Popen([sys.executable, '-c', 'import signal, sys, time\n'
                             'signal.signal(signal.SIGTERM, signal.SIG_IGN)\nsys.stdout.write("ready\\n")\n'
                             'sys.stdout.flush()\ntime.sleep(60)\n'], stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b'ready\n'
    record = _daemon.supervise_child(proc, stale_lease(tmp_path), 1.0, grace=0.5)
    proc.stdout.close()
    assert record['returncode'] == -9 and record['reason'] == 'lease expired'


def test_a_live_lease_lets_the_child_end_by_itself(tmp_path):
    path = tmp_path / 'lease'
    path.write_text('{}')
    proc = subprocess.Popen(['sh', '-c', 'sleep 0.3; exit 3'])
    record = _daemon.supervise_child(proc, str(path), 60.0)
    assert record['returncode'] == 3 and 'reason' not in record


def test_without_a_lease_the_supervisor_only_waits(tmp_path):
    proc = subprocess.Popen(['true'])
    assert _daemon.supervise_child(proc, None, 60.0)['returncode'] == 0


def test_the_detached_supervisor_records_the_expiry(tmp_path):
    lease = tmp_path / 'lease'
    lease.write_text('{"build_id": "b1"}')
    pidfile, logfile, exitfile = (str(tmp_path / name) for name in ('x.pid', 'x.log', 'x.exit'))
    assert _daemon.spawn_supervised(['sleep', '60'], pidfile, logfile, exitfile, lease=str(lease), lease_ttl=1.0)
    pid = _daemon.read_pid(pidfile)
    assert pid and _daemon.pid_alive(pid)
    time.sleep(0.5)
    assert not os.path.exists(exitfile), 'a fresh lease keeps it running'
    deadline = time.monotonic() + 10
    while not os.path.exists(exitfile) and time.monotonic() < deadline:
        time.sleep(0.1)
    record = json.loads(open(exitfile, encoding='utf-8').read())
    assert record['reason'] == 'lease expired' and record['returncode'] == -15


def proc_ppid(pid):
    with open('/proc/%d/stat' % pid, encoding='utf-8') as handle:
        return int(handle.read().rsplit(')', 1)[1].split()[1])


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='prctl(PR_SET_PDEATHSIG) is Linux')
def test_the_program_ends_when_its_supervisor_is_killed(tmp_path):
    """A SIGKILLed supervisor cannot end qemu itself: the parent-death signal does."""
    pidfile, logfile, exitfile = (str(tmp_path / name) for name in ('x.pid', 'x.log', 'x.exit'))
    assert _daemon.spawn_supervised(['sleep', '60'], pidfile, logfile, exitfile)
    pid = _daemon.read_pid(pidfile)
    supervisor = proc_ppid(pid)
    assert supervisor != os.getpid()
    os.kill(supervisor, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while os.path.exists('/proc/%d' % pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists('/proc/%d' % pid), 'the supervised program outlived its supervisor'
