# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The build's lease: how background processes learn that their build is gone.

A build keeps a file WORK_DIR/lease whose modification time is a heartbeat. A
small keeper daemon touches it every ttl/6 seconds for as long as the build's
anchor process lives - the ansible-playbook that runs the build (local
connection), or the sshd session the controller's commands arrive through (ssh
connection). Every background process of the build (the qemu supervisor, the
response-file server, the vmd watchdog) polls the file and ends what it looks
after once the heartbeat is older than ttl. A killed ansible-playbook therefore
leaves nothing running for longer than about ttl seconds.

The content is JSON: build_id, ttl, keeper_pid, keeper_start, anchor_pid,
anchor_start, anchor_cmdline and, for a build whose VM is kept for debugging,
"kept": true (such a lease never goes stale; playbooks/cleanup.yml removes it).

Process facts come from /proc on Linux and from ps(1) elsewhere (OpenBSD has no
/proc); both parsers are pure functions for the unit tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import typing as t

from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput

LEASE_FILE = 'lease'
MARKER_FILE = 'osimage-build.json'
PS_ARGV = ['ps', '-o', 'stat=,ppid=,lstart=,command=', '-p']
# ps prints lstart as five words: "Mon Dec  7 03:13:13 2026".
LSTART_WORDS = 5
PLAYBOOK_NAMES = ('ansible-playbook',)
SSHD_PREFIXES = ('sshd:', 'sshd-session:')


class ProcInfo(t.NamedTuple):
    pid: int
    ppid: int
    start: str
    state: str
    cmdline: t.Tuple[str, ...]

    @property
    def zombie(self) -> bool:
        return self.state.startswith('Z')

    def describe(self) -> str:
        return ' '.join(self.cmdline)[:200]


def lease_path(work_dir: str) -> str:
    return os.path.join(work_dir, LEASE_FILE)


# -- the lease file --------------------------------------------------------------------------------


def read(path: str) -> t.Optional[t.Dict[str, t.Any]]:
    try:
        with open(path, 'r', encoding='utf-8') as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write(path: str, data: t.Dict[str, t.Any]) -> None:
    tmp = '%s.tmp%d' % (path, os.getpid())
    with open(tmp, 'w', encoding='utf-8') as handle:
        handle.write(json.dumps(data, indent=2, sort_keys=True) + '\n')
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def refresh(path: str, now: t.Optional[float] = None) -> bool:
    """Touch the lease; False when it is gone (the build removed it)."""
    try:
        if now is None:
            os.utime(path, None)
        else:
            os.utime(path, (now, now))
    except FileNotFoundError:
        return False
    return True


def age(path: str, now: t.Optional[float] = None) -> t.Optional[float]:
    """Seconds since the last heartbeat; None when there is no lease."""
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return None
    return (time.time() if now is None else now) - mtime


def is_stale(path: str, ttl: float, now: t.Optional[float] = None) -> bool:
    """True when the build is gone: no lease, or no heartbeat within ttl seconds (a kept lease never is)."""
    seconds = age(path, now)
    if seconds is None:
        return True
    if seconds <= ttl:
        return False
    return not (read(path) or {}).get('kept', False)


def expired(path: str, ttl: float, now: t.Optional[float] = None, table: t.Optional['ProcessTable'] = None) -> bool:
    """What a build's background processes poll: the lease is stale, or its build is gone already (see gone).

    Either way the build that started them will never come back to them; the second ends them
    within a poll instead of after ttl.
    """
    if is_stale(path, ttl, now):
        return True
    return gone(read(path) or {}, table or ProcessTable())


def require_live(path: str, ttl: float) -> t.Optional[str]:
    """The build id of a live lease; a missing or stale one would end a new process at once: InvalidInput."""
    if ttl <= 0:
        raise InvalidInput('lease_ttl: must be more than 0 seconds')
    if is_stale(path, ttl):
        seconds = age(path)
        raise InvalidInput('lease: %s %s; start the build\'s lease with osimage.builder.build_lease first'
                           % (path, 'does not exist' if seconds is None
                              else 'is stale (last refreshed %d s ago, lease_ttl is %g s)' % (seconds, ttl)))
    return (read(path) or {}).get('build_id')


# -- processes -------------------------------------------------------------------------------------


def parse_proc_stat(text: str) -> t.Tuple[str, int, str]:
    """(state, ppid, start time in clock ticks) from the text of /proc/PID/stat.

    The second field (comm) is in parentheses and may hold spaces and ")" itself, so the
    fields are counted from the last ")". Field 22 is the start time.
    """
    fields = text.rsplit(')', 1)[1].split()
    return fields[0], int(fields[1]), fields[19]


def parse_cmdline(raw: bytes) -> t.Tuple[str, ...]:
    return tuple(part.decode('utf-8', 'replace') for part in raw.rstrip(b'\0').split(b'\0') if part)


def parse_ps(pid: int, text: str) -> t.Optional[ProcInfo]:
    """One line of `ps -o stat=,ppid=,lstart=,command= -p PID`; None when ps listed nothing."""
    for line in text.splitlines():
        words = line.split(None, 2 + LSTART_WORDS)
        if len(words) < 2 + LSTART_WORDS:
            continue
        try:
            ppid = int(words[1])
        except ValueError:
            continue
        command = words[2 + LSTART_WORDS] if len(words) > 2 + LSTART_WORDS else ''
        return ProcInfo(pid, ppid, ' '.join(words[2:2 + LSTART_WORDS]), words[0], tuple(command.split()))
    return None


def _run_ps(argv: t.List[str]) -> str:
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              check=False, env=dict(os.environ, LC_ALL='C'))
    except OSError:
        return ''
    return done.stdout.decode('utf-8', 'replace')


class ProcessTable:
    """Reads one process's facts from /proc when there is one (Linux), else from ps."""

    def __init__(self, proc_root: str = '/proc', run_ps: t.Callable[[t.List[str]], str] = _run_ps) -> None:
        self.proc_root = proc_root
        self.run_ps = run_ps

    def has_proc(self) -> bool:
        return os.path.exists(os.path.join(self.proc_root, 'self', 'stat')) or \
            os.path.exists(os.path.join(self.proc_root, '1', 'stat'))

    def info(self, pid: int) -> t.Optional[ProcInfo]:
        if pid <= 0:
            return None
        if self.has_proc():
            base = os.path.join(self.proc_root, str(pid))
            try:
                with open(os.path.join(base, 'stat'), 'r', encoding='utf-8', errors='replace') as handle:
                    state, ppid, start = parse_proc_stat(handle.read())
                with open(os.path.join(base, 'cmdline'), 'rb') as handle:
                    cmdline = parse_cmdline(handle.read())
            except (OSError, IndexError, ValueError):
                return None
            return ProcInfo(pid, ppid, start, state, cmdline)
        return parse_ps(pid, self.run_ps(PS_ARGV + [str(pid)]))

    def exists(self, pid: int) -> bool:
        """Whether any process has this pid (also one whose facts cannot be read: another user's, hidepid)."""
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            return True
        return True

    def ended(self, pid: int, start: t.Optional[str]) -> bool:
        """Whether the process that started at start has certainly ended: no such pid, a zombie or a reused pid.

        Unlike not alive(), a process whose facts cannot be read is not taken for ended.
        """
        info = self.info(pid)
        if info is not None:
            return info.zombie or (start is not None and info.start != start)
        return not self.exists(pid)

    def alive(self, pid: int, start: t.Optional[str]) -> bool:
        """Whether pid is still the process that started at start (a reused pid is not; nor is a zombie)."""
        info = self.info(pid)
        if info is None or info.zombie:
            return False
        return start is None or info.start == start

    def pids(self) -> t.List[int]:
        """Every process id; empty without /proc (the orphans of a playbook are then not looked for)."""
        if not self.has_proc():
            return []
        try:
            return [int(name) for name in os.listdir(self.proc_root) if name.isdigit()]
        except OSError:
            return []

    def ancestors(self, pid: int) -> t.List[ProcInfo]:
        """pid's parent, its parent and so on up to (not including) init."""
        chain: t.List[ProcInfo] = []
        seen = {pid}
        info = self.info(pid)
        while info is not None and info.ppid > 1 and info.ppid not in seen:
            seen.add(info.ppid)
            info = self.info(info.ppid)
            if info is not None:
                chain.append(info)
        return chain


def is_playbook(cmdline: t.Sequence[str]) -> bool:
    """ansible-playbook itself, or an interpreter running it (python3 /usr/bin/ansible-playbook ...)."""
    for word in cmdline[:2]:
        if os.path.basename(word) in PLAYBOOK_NAMES:
            return True
    return False


def is_sshd_session(cmdline: t.Sequence[str]) -> bool:
    return bool(cmdline) and cmdline[0].startswith(SSHD_PREFIXES)


def choose_anchor(chain: t.Sequence[ProcInfo]) -> t.Optional[ProcInfo]:
    """The top-most ansible-playbook among the ancestors, else the nearest sshd session.

    ansible-playbook forks its workers, which keep its command line; the top-most one is
    the process a cancel (SIGINT) or a kill ends. Over SSH the controller's processes are
    not visible, but its connection is: the sshd session ends when the controller is gone.
    """
    playbooks = [info for info in chain if is_playbook(info.cmdline)]
    if playbooks:
        return playbooks[-1]
    for info in chain:
        if is_sshd_session(info.cmdline):
            return info
    return None


def _started_after(start: str, reference: t.Optional[str]) -> bool:
    """Whether a /proc start time (clock ticks since boot) is not before reference."""
    return bool(reference) and start.isdigit() and str(reference).isdigit() and int(start) >= int(str(reference))


def orphaned_workers(table: ProcessTable, cmdline: t.Sequence[str], start: t.Optional[str],
                     exclude: t.Iterable[int] = ()) -> t.List[ProcInfo]:
    """The task workers a gone ansible-playbook left running.

    ansible's workers call setsid(), so neither the end of ansible-playbook nor a SIGKILL of its
    process group (ansible-runner's cancel) reaches them: the worker of the current task goes on
    until that task ends - a wait for SSH of minutes, a disk being made, an export. Workers are
    forks of ansible-playbook and keep its command line; they started after it, and with it gone
    no ansible-playbook is their parent. Another build's workers with the same command line have
    their live ansible-playbook as parent; the anchors in exclude (those of the other builds'
    leases) are never taken. Only on hosts with /proc, where start times compare.
    """
    wanted = tuple(cmdline)
    if not wanted or not is_playbook(wanted):
        return []
    skip = set(exclude)
    found = []
    for pid in table.pids():
        if pid in skip:
            continue
        info = table.info(pid)
        if info is None or info.zombie or info.cmdline != wanted or not _started_after(info.start, start):
            continue
        parent = table.info(info.ppid)
        if parent is not None and not parent.zombie and is_playbook(parent.cmdline):
            continue
        found.append(info)
    return found


def other_anchors(work_root: str, own: str) -> t.Set[int]:
    """The anchor pids in the leases of the other builds under work_root."""
    pids = set()
    try:
        names = os.listdir(work_root)
    except OSError:
        return pids
    for name in names:
        path = os.path.join(work_root, name, LEASE_FILE)
        if os.path.abspath(path) == os.path.abspath(own):
            continue
        pid = (read(path) or {}).get('anchor_pid')
        if isinstance(pid, int):
            pids.add(pid)
    return pids


def end_orphans(table: ProcessTable, cmdline: t.Sequence[str], start: t.Optional[str], exclude: t.Iterable[int] = (),
                kill: t.Callable[[int, int], None] = os.kill, sleep: t.Callable[[float], None] = time.sleep,
                wait: float = 5.0) -> t.List[int]:
    """SIGTERM the orphaned workers (a worker passes it on to its task's processes, as when ansible-playbook
    itself is interrupted), SIGKILL what is left after wait seconds. Returns the pids signalled."""
    orphans = orphaned_workers(table, cmdline, start, exclude)
    for info in orphans:
        try:
            kill(info.pid, signal.SIGTERM)
        except OSError:
            pass
    waited = 0.0
    while waited < wait and any(table.alive(info.pid, info.start) for info in orphans):
        sleep(0.1)
        waited += 0.1
    for info in orphans:
        if table.alive(info.pid, info.start):
            try:
                kill(info.pid, signal.SIGKILL)
            except OSError:
                pass
    return [info.pid for info in orphans]


# -- the keeper ------------------------------------------------------------------------------------


def keep(path: str, build_id: str, ttl: float, anchor_pid: int, anchor_start: t.Optional[str],
         table: t.Optional[ProcessTable] = None, sleep: t.Callable[[float], None] = time.sleep,
         grace: float = 0.0, clock: t.Callable[[], float] = time.monotonic,
         anchor_cmdline: t.Sequence[str] = (), kill: t.Callable[[int, int], None] = os.kill) -> str:
    """The keeper's loop: refresh the lease while the anchor lives. Returns why it stopped.

    It stops when the anchor is gone (the lease then goes stale), and when the lease was
    removed or taken over by another build or keeper (state=stopped, or a new keeper).
    With grace, it goes on refreshing for that many seconds after the anchor is gone: an
    sshd session also ends when the controller merely left the build host idle for longer
    than ControlPersist, and the build's next stage starts a keeper with the new session.
    When the anchor was an ansible-playbook (anchor_cmdline), its workers that live on are
    ended (see orphaned_workers) - unless the lease was taken over or kept meanwhile.
    """
    table = table or ProcessTable()
    me = os.getpid()
    gone_since: t.Optional[float] = None
    while True:
        if not table.alive(anchor_pid, anchor_start):
            if gone_since is None:
                gone_since = clock()
            if clock() - gone_since >= grace:
                data = read(path)
                if data is not None and data.get('build_id') == build_id and data.get('keeper_pid') in (None, me) \
                        and not data.get('kept'):
                    work_root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
                    end_orphans(table, anchor_cmdline, anchor_start, other_anchors(work_root, path) | {me},
                                kill, sleep)
                return 'anchor gone'
        data = read(path)
        if data is None or data.get('build_id') != build_id or data.get('keeper_pid') not in (None, me):
            return 'lease taken over'
        if not refresh(path):
            return 'lease removed'
        sleep(max(0.2, ttl / 6.0))


def gone(data: t.Dict[str, t.Any], table: ProcessTable) -> bool:
    """Whether the build of a lease is gone before its heartbeat is ttl old: its keeper ended and its anchor too.

    Once both have ended nothing refreshes the lease any more, so it is certain to go stale; a
    sweep (playbooks/cleanup.yml, the next build's start) need not wait for that. A lease
    without a recorded keeper and anchor (one being written) is never taken for gone here, nor
    is a keeper in its grace after an sshd anchor ended (it still runs). BuildLease.start
    writes the new anchor before it ends an old keeper, so a restarted lease never names a
    dead keeper and a dead anchor at once.
    """
    keeper, anchor = data.get('keeper_pid'), data.get('anchor_pid')
    if not isinstance(keeper, int) or not isinstance(anchor, int) or keeper <= 0 or anchor <= 0 \
            or data.get('kept'):
        return False
    return table.ended(keeper, data.get('keeper_start')) and table.ended(anchor, data.get('anchor_start'))


def find_leases(work_root: str, now: t.Optional[float] = None,
                table: t.Optional[ProcessTable] = None) -> t.List[t.Dict[str, t.Any]]:
    """The builds under work_root (directories with osimage-build.json) and the state of their leases.

    A lease is stale when its heartbeat is older than its ttl, or at once when its keeper and
    anchor have both ended (see gone).
    """
    table = table or ProcessTable()
    found = []
    try:
        names = sorted(os.listdir(work_root))
    except OSError:
        return []
    for name in names:
        work_dir = os.path.join(work_root, name)
        marker = os.path.join(work_dir, MARKER_FILE)
        if not os.path.isfile(marker):
            continue
        try:
            with open(marker, 'r', encoding='utf-8') as handle:
                build = json.load(handle)
        except (OSError, ValueError):
            build = {}
        path = lease_path(work_dir)
        data = read(path)
        seconds = age(path, now)
        if data is None and seconds is None:
            state = 'none'
        elif data is not None and data.get('kept'):
            state = 'kept'
        elif is_stale(path, float((data or {}).get('ttl') or 60), now) or gone(data or {}, table):
            state = 'stale'
        else:
            state = 'live'
        build_id = (data or {}).get('build_id') or build.get('id') or name
        found.append({
            'work_dir': work_dir,
            'build_id': build_id,
            'hypervisor': build.get('hypervisor'),
            'lease': state,
            'age': None if seconds is None else round(seconds, 1),
            'staging_dir': staging_dir(build, build_id),
            'controller_dir': controller_dir(build, build_id),
        })
    return found


def staging_dir(build: t.Dict[str, t.Any], build_id: str) -> t.Optional[str]:
    """The hidden directory in the output directory that the build's export went to, from its marker.

    A killed build leaves its unfinished export there (.NAME-VERSION.ID.partial); only a path
    of that form, naming this very build, is returned - whatever else a marker says is never
    taken for something to remove.
    """
    path = build.get('staging_dir')
    if not isinstance(path, str) or not os.path.isabs(path) or not build_id:
        return None
    base = os.path.basename(path)
    if os.path.normpath(path) != path or not (base.startswith('.') and base.endswith('.%s.partial' % build_id)) \
            or len(base) <= len('..%s.partial' % build_id):
        return None
    return path


def controller_dir(build: t.Dict[str, t.Any], build_id: str) -> t.Optional[str]:
    """The build's directory on the controller (its SSH key for the guest), from its marker.

    Only an absolute, plain path whose last component is the build's own id is returned.
    """
    path = build.get('controller_dir')
    if not isinstance(path, str) or not os.path.isabs(path) or not build_id or os.path.normpath(path) != path:
        return None
    if os.path.basename(path) != build_id or build_id in ('.', '..'):
        return None
    return path


# -- the build_lease module's state machine ------------------------------------------------------------

Daemonize = t.Callable[[t.Callable[[], None], str], t.Optional[int]]


class LeaseError(InvalidInput):
    """The keeper could not be started or stopped."""


class BuildLease:
    """started / stopped / kept for one lease file and its keeper daemon.

    daemonize is _daemon.daemonize (injected, so that the pure parts need no fork in the tests).
    """

    def __init__(self, path: str, daemonize: Daemonize, check_mode: bool = False,
                 table: t.Optional[ProcessTable] = None, stop_timeout: float = 5.0,
                 kill: t.Callable[[int, int], None] = os.kill) -> None:
        self.kill = kill
        self.path = os.path.abspath(path)
        self.daemonize = daemonize
        self.check_mode = check_mode
        self.table = table or ProcessTable()
        self.stop_timeout = stop_timeout

    @property
    def keeper_pidfile(self) -> str:
        return self.path + '.keeper.pid'

    def keeper_alive(self, data: t.Optional[t.Dict[str, t.Any]]) -> bool:
        if not data or not data.get('keeper_pid'):
            return False
        return self.table.alive(int(data['keeper_pid']), data.get('keeper_start'))

    def find_anchor(self, anchor_pid: t.Optional[int]) -> ProcInfo:
        if anchor_pid:
            info = self.table.info(anchor_pid)
            if info is None or info.zombie:
                raise LeaseError('anchor_pid: process %d does not run' % anchor_pid)
            return info
        chain = self.table.ancestors(os.getpid())
        anchor = choose_anchor(chain)
        if anchor is None:
            raise LeaseError('anchor_pid: neither ansible-playbook nor an sshd session is among the ancestors of this '
                             'task (%s), so nothing tells when the build is gone; give anchor_pid'
                             % ' <- '.join('%d %s' % (info.pid, (info.cmdline or ('?',))[0]) for info in chain[:8]))
        return anchor

    def result(self, changed: bool, data: t.Optional[t.Dict[str, t.Any]], running: bool) -> t.Dict[str, t.Any]:
        data = data or {}
        seconds = age(self.path)
        return {
            'changed': changed,
            'path': self.path,
            'build_id': data.get('build_id'),
            'ttl': data.get('ttl'),
            'keeper_pid': data.get('keeper_pid') if running else None,
            'anchor_pid': data.get('anchor_pid'),
            'anchor_cmdline': data.get('anchor_cmdline'),
            'kept': bool(data.get('kept')),
            'stale': None if seconds is None else is_stale(self.path, float(data.get('ttl') or 60)),
        }

    def start(self, build_id: str, ttl: float, anchor_pid: t.Optional[int] = None,
              remote_grace: float = 1800.0) -> t.Dict[str, t.Any]:
        if ttl <= 0:
            raise LeaseError('ttl: must be more than 0 seconds')
        anchor = self.find_anchor(anchor_pid)
        data = read(self.path)
        running = self.keeper_alive(data)
        same = (running and data is not None and data.get('build_id') == build_id and float(data.get('ttl') or 0) == ttl
                and data.get('anchor_pid') == anchor.pid and data.get('anchor_start') == anchor.start
                and not data.get('kept'))
        if same:
            return self.result(False, data, True)
        if self.check_mode:
            planned = {'build_id': build_id, 'ttl': ttl, 'anchor_pid': anchor.pid, 'anchor_cmdline': anchor.describe()}
            return self.result(True, planned, False)
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=0o700)
        # ansible-playbook itself ends only with the build; an sshd session also ends when the connection idles.
        grace = 0.0 if anchor_pid or is_playbook(anchor.cmdline) else max(remote_grace, 0.0)
        fresh = {'build_id': build_id, 'ttl': ttl, 'keeper_pid': None, 'keeper_start': None,
                 'anchor_pid': anchor.pid, 'anchor_start': anchor.start, 'anchor_cmdline': anchor.describe(),
                 'started': time.time(), 'grace': grace}
        # The live anchor first, then the old keeper ends (it goes on refreshing a lease without a
        # keeper until then): a sweep never sees a dead keeper next to a dead anchor of a build that runs.
        write(self.path, fresh)
        if running:
            self._end_keeper(t.cast(t.Dict[str, t.Any], data))
        table = self.table
        path = self.path
        # A given anchor_pid is whatever the caller chose; only an ansible-playbook found above the task
        # has workers to end.
        workers_of = anchor.cmdline if not anchor_pid and is_playbook(anchor.cmdline) else ()
        pid = self.daemonize(lambda: keep(path, build_id, ttl, anchor.pid, anchor.start, table, grace=grace,
                                          anchor_cmdline=workers_of),
                             self.keeper_pidfile)
        keeper = self.table.info(pid) if pid else None
        if keeper is None:
            raise LeaseError('the keeper of %s did not start' % self.path)
        fresh.update(keeper_pid=pid, keeper_start=keeper.start)
        write(self.path, fresh)
        return self.result(True, fresh, True)

    def _end_keeper(self, data: t.Dict[str, t.Any]) -> None:
        pid = int(data['keeper_pid'])
        try:
            self.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + self.stop_timeout
        while self.keeper_alive(data):
            if time.monotonic() >= deadline:
                try:
                    self.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                break
            time.sleep(0.05)

    def stop(self) -> t.Dict[str, t.Any]:
        data = read(self.path)
        running = self.keeper_alive(data)
        exists = os.path.lexists(self.path) or os.path.lexists(self.keeper_pidfile)
        if not (running or exists):
            return self.result(False, None, False)
        if not self.check_mode:
            if running:
                self._end_keeper(t.cast(t.Dict[str, t.Any], data))
            for name in (self.path, self.keeper_pidfile):
                if os.path.lexists(name):
                    os.unlink(name)
        result = self.result(True, data, False)
        result['stale'] = None
        return result

    def keep_for_debugging(self) -> t.Dict[str, t.Any]:
        """End the keeper but mark the lease kept: a VM kept after a failure must outlive the build."""
        data = read(self.path)
        if data is None:
            # The build failed before its lease was started: nothing it started depends on one.
            return self.result(False, None, False)
        running = self.keeper_alive(data)
        if data.get('kept') and not running:
            return self.result(False, data, False)
        if not self.check_mode:
            if running:
                self._end_keeper(data)
            data = dict(data, kept=True, keeper_pid=None, keeper_start=None)
            write(self.path, data)
        else:
            data = dict(data, kept=True)
        return self.result(True, data, False)
