# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run a long-lived program (qemu) detached from the Ansible module.

A module's process ends when the task ends, so the program is started by a
small supervisor that is double-forked into its own session. The supervisor
keeps the program's output in a log file, writes the program's pid, and when
the program ends writes its exit status - which tells "the guest powered
itself off" (0) from "qemu failed" (non-zero) or "killed" (negative signal).

Given a build's lease (see _lease), the supervisor also ends the program once
the lease goes stale - the build that started it is gone - and records that.
On Linux the program also gets SIGTERM when its supervisor ends without
ending it (a supervisor killed with SIGKILL): prctl(PR_SET_PDEATHSIG), which
survives the exec. qemu ends on SIGTERM ("terminating on signal 15").
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
import typing as t

from ansible_collections.osimage.builder.plugins.module_utils import _lease

LEASE_EXPIRED = 'lease expired'
# Seconds between SIGTERM and SIGKILL when a lease expires.
TERM_GRACE = 5.0


def write_atomic(path: str, text: str, mode: int = 0o600) -> None:
    tmp = '%s.tmp%d' % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, text.encode('utf-8'))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_pid(path: str) -> t.Optional[int]:
    try:
        with open(path, 'r', encoding='ascii') as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def read_json(path: str) -> t.Optional[t.Dict[str, t.Any]]:
    try:
        with open(path, 'r', encoding='utf-8') as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def poll_interval(ttl: float) -> float:
    return max(0.2, min(2.0, ttl / 6.0))


def watch_lease(lease: str, ttl: float, alive: t.Callable[[], bool], on_expired: t.Callable[[], None],
                clock: t.Callable[[], float] = time.time, sleep: t.Callable[[float], None] = time.sleep,
                stale: t.Callable[[str, float, float], bool] = _lease.expired) -> str:
    """Wait while alive() holds; call on_expired() once the lease is stale or its build gone (_lease.expired).

    Returns 'gone' or LEASE_EXPIRED."""
    interval = poll_interval(ttl)
    while alive():
        if stale(lease, ttl, clock()):
            on_expired()
            return LEASE_EXPIRED
        sleep(interval)
    return 'gone'


def end_process(proc: 'subprocess.Popen[bytes]', grace: float = TERM_GRACE) -> int:
    """SIGTERM, and SIGKILL when it did not end within grace seconds; returns its exit status."""
    try:
        proc.terminate()
        return proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def supervise_child(proc: 'subprocess.Popen[bytes]', lease: t.Optional[str], lease_ttl: float,
                    grace: float = TERM_GRACE) -> t.Dict[str, t.Any]:
    """Wait for proc; with a lease, end it when the lease expires. Returns the exit record."""
    if lease:
        why = watch_lease(lease, lease_ttl, lambda: proc.poll() is None, lambda: end_process(proc, grace))
        if why == LEASE_EXPIRED:
            return {'returncode': proc.wait(), 'ended': time.time(), 'reason': LEASE_EXPIRED, 'lease': lease,
                    'error': 'the build that started it is gone: its lease %s was not refreshed for %g s'
                             % (lease, lease_ttl)}
    return {'returncode': proc.wait(), 'ended': time.time()}


# linux/prctl.h
PR_SET_PDEATHSIG = 1


def parent_death_signal() -> t.Optional[t.Callable[..., int]]:
    """libc's prctl on Linux (looked up before the fork: nothing is loaded in the child), else None."""
    if not sys.platform.startswith('linux'):
        return None
    try:
        return t.cast(t.Callable[..., int], ctypes.CDLL(None, use_errno=True).prctl)
    except (OSError, AttributeError):
        return None


def child_setup(parent: int, prctl: t.Optional[t.Callable[..., int]]) -> t.Callable[[], None]:
    """What the supervised program's process does between fork and exec.

    SIGINT back to its default (the detached supervisor ignores it); on Linux SIGTERM once
    the supervisor is gone - and at once if it already went between the fork and the prctl.
    """
    def setup() -> None:  # pragma: no cover - runs in the forked child
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if prctl is not None and prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0 \
                and os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
    return setup


def _supervise(argv: t.List[str], pidfile: str, logfile: str, exitfile: str, report_fd: int,
               lease: t.Optional[str] = None, lease_ttl: float = 60.0) -> None:
    _detach([report_fd])
    log = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                close_fds=True, preexec_fn=child_setup(os.getpid(), parent_death_signal()))
    except OSError as exc:
        write_atomic(exitfile, json.dumps({'returncode': 127, 'error': str(exc), 'ended': time.time()}))
        os.write(report_fd, b'E')
        return
    os.close(log)
    write_atomic(pidfile, '%d\n' % proc.pid, 0o644)
    os.write(report_fd, b'S')
    os.close(report_fd)
    write_atomic(exitfile, json.dumps(supervise_child(proc, lease, lease_ttl)))


def spawn_supervised(argv: t.List[str], pidfile: str, logfile: str, exitfile: str,
                     lease: t.Optional[str] = None, lease_ttl: float = 60.0) -> bool:
    """Start argv under a detached supervisor; True once it was spawned, False if exec failed.

    With a lease the supervisor ends argv (SIGTERM, then SIGKILL) once the lease is stale.
    """
    return _double_fork(lambda report_fd: _supervise(argv, pidfile, logfile, exitfile, report_fd,
                                                     lease, lease_ttl)) == b'S'


def _double_fork(child: t.Callable[[int], None]) -> bytes:
    """Run child(report_fd) in a grandchild of its own session; return what it wrote to report_fd.

    The parent waits until the grandchild closes report_fd (or exits), so the caller learns
    whether the daemon got going, while the module's process can end independently of it.
    """
    read_fd, write_fd = os.pipe()
    first = os.fork()
    if first == 0:  # pragma: no cover - runs in the forked children
        try:
            os.close(read_fd)
            os.setsid()
            if os.fork() == 0:
                try:
                    child(write_fd)
                finally:
                    os._exit(0)
        finally:
            os._exit(0)
    os.close(write_fd)
    os.waitpid(first, 0)
    answer = b''
    try:
        while True:
            chunk = os.read(read_fd, 64)
            if not chunk:
                break
            answer += chunk
    finally:
        os.close(read_fd)
    return answer


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _detach(keep_fds: t.Sequence[int]) -> None:
    """Leave the module's world: no terminal, no cwd, no inherited descriptors but keep_fds."""
    os.chdir('/')
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    # The Ansible connection waits for EOF on the module's stdout and stderr; every other
    # inherited copy of them must go too, or the task would hang until the daemon exits.
    low = 3
    for fd in sorted(set(keep_fds)):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, 65536)
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)


def daemonize(target: t.Callable[[], None], pidfile: str, keep_fds: t.Sequence[int] = ()) -> t.Optional[int]:
    """Run target() in a double-forked daemon of its own session that outlives the module.

    The daemon keeps only stdio (on /dev/null) and keep_fds, writes its pid to pidfile
    and then calls target(); it exits when target returns. Returns the daemon's pid once
    the pidfile is written, or None when the daemon failed before that.
    """
    def child(report_fd: int) -> None:  # pragma: no cover - runs in the daemon
        _detach(list(keep_fds) + [report_fd])
        write_atomic(pidfile, '%d\n' % os.getpid())
        os.write(report_fd, ('%d\n' % os.getpid()).encode('ascii'))
        os.close(report_fd)
        target()

    answer = _double_fork(child)
    try:
        return int(answer.decode('ascii').strip())
    except ValueError:
        return None
