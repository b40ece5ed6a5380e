# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""vmctl(8) wrapper: argv builders, output parsers and the vmctl_vm state machine.

Followed (openbsd/src): vmctl.8 and usr.sbin/vmctl main.c/vmctl.c for the
command lines and every message parsed here; vmd.h, vmd.c and priv.c in
usr.sbin/vmd for VM names, the status table's states and the addresses of
local interfaces; lib/libutil/fmt_scaled.c for the sizes in the status table.

* ``vmctl create [-b base | -i disk] [-s size] disk`` where disk may carry a
  format prefix ``raw:`` or ``qcow2:`` and size is read by scan_scaled(3) and
  rounded to megabytes.
* Sub-command options go before the VM's name: vmctl parses them with
  OpenBSD's getopt, which does not permute arguments.
* ``vmctl status`` prints its table on stdout; start and stop report on
  stderr, and exit 1 on any failure.

vmd owns its VMs, so a killed build cannot take them along; a VM started with
a build's lease gets a small watchdog daemon (see _daemon.watch_lease) that
runs ``vmctl stop -f NAME`` once the lease is stale and ends when the VM does.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import time
import typing as t

from ansible_collections.osimage.builder.plugins.module_utils import _daemon, _lease
from ansible_collections.osimage.builder.plugins.module_utils._errors import (
    InvalidInput, ToolError, ToolMissing, VmError, WaitTimeout)
from ansible_collections.osimage.builder.plugins.module_utils._sizes import parse_size, round_up
from ansible_collections.osimage.builder.plugins.module_utils._tools import Runner, run_checked

MIB = 1024 * 1024

# vmd.h / vmmvar.h limits; a name's buffer holds the terminating NUL too.
VMM_MAX_NAME_LEN = 64
MAX_DISKS = 4
MAX_NICS = 4
MAX_LOCAL_IDX = 0x7f
DEFAULT_LOCAL_PREFIX = '100.64.0.0/10'
SOCKET_PATH = '/var/run/vmd.sock'

STATUS_COLUMNS = ['ID', 'PID', 'VCPUS', 'MAXMEM', 'CURMEM', 'TTY', 'OWNER', 'STATE', 'NAME']
STATUS_HEADER = '   ID   PID VCPUS  MAXMEM  CURMEM     TTY        OWNER    STATE NAME'
STATES = ('running', 'paused', 'stopping', 'waiting', 'stopped', 'unknown')
BOOT_DEVICES = ('disk', 'cdrom', 'net')
DISK_FORMATS = ('raw', 'qcow2')
QCOW2_MAGIC = b'QFI\xfb'

NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]*$')
_SCALED_RE = re.compile(r'^(\d+)(?:\.(\d*))?([BKMGTPE]?)$', re.IGNORECASE)
_UNITS = 'BKMGTPE'
_START_OK_RE = re.compile(r'^vmctl: started vm (\d+) successfully, tty (\S*)\s*$')
_STOP_RE = re.compile(r'^stopping vm(?: (\S+))?: (.*?)\s*$')
_STOP_ID_RE = re.compile(r'^(?:requested to shutdown|terminated|forced to terminate) vm (\d+)$')

POLL_INTERVAL = 0.5
# vmctl start returns once vmd has launched the VM; a VM missing from the list this long after that has ended.
START_GRACE = 5.0
# How long the list may take to drop a VM after "vmctl stop -w" said it terminated.
STOP_SETTLE = 10.0


# --- sizes as fmt_scaled(3) prints them and scan_scaled(3) reads them ---------------------------------------

def parse_scaled(text: str) -> int:
    """'512M' -> 536870912, '1.5G', '0B', '1024' (bytes): powers of 1024, as scan_scaled(3) reads them."""
    match = _SCALED_RE.match(text.strip()) if isinstance(text, str) else None
    if not match:
        raise InvalidInput('%r is not a size as vmctl writes them (a number with B, K, M, G, T, P or E)' % (text,))
    whole, fraction, unit = match.groups()
    factor = 1024 ** _UNITS.index(unit.upper()) if unit else 1
    value = int(whole) * factor
    if fraction:
        # scan_scaled keeps the fraction's share of the unit, truncated to whole bytes.
        value += int(fraction) * factor // 10 ** len(fraction)
    return value


def fmt_scaled(number: int) -> str:
    """Bytes as fmt_scaled(3) prints them: 536870912 -> '512M', 1 GiB -> '1.0G', 100 MiB -> '100M'."""
    if number < 0:
        raise ValueError('fmt_scaled: negative sizes are not used here: %d' % number)
    if number // 1024 >= 1024 ** (len(_UNITS) - 1):
        raise ValueError('fmt_scaled: %d is too large' % number)
    unit = 0
    fract = 0
    for unit in range(len(_UNITS)):
        if number // 1024 < 1024 ** unit:
            if unit:
                fract = (number % 1024 ** unit) // 1024 ** (unit - 1)
            number //= 1024 ** unit
            break
    # One decimal, rounded half up from the remainder's share of 1024.
    fract = (10 * fract + 512) // 1024
    if fract >= 10:
        number += 1
        fract = 0
    if number == 0:
        return '0B'
    if unit == 0 or number >= 100:
        if fract >= 5:
            number += 1
        return '%d%s' % (number, _UNITS[unit])
    return '%d.%d%s' % (number, fract, _UNITS[unit])


# --- vmctl status ------------------------------------------------------------------------------------------

class VmRecord(t.NamedTuple):
    """One row of ``vmctl status``; pid, curmem and tty are None for a VM that is not running."""
    id: int
    pid: t.Optional[int]
    vcpus: int
    maxmem: int
    maxmem_text: str
    curmem: t.Optional[int]
    curmem_text: t.Optional[str]
    tty: t.Optional[str]
    owner: str
    state: str
    name: str

    @property
    def up(self) -> bool:
        """The VM has a process: running, paused or being stopped."""
        return self.pid is not None

    @property
    def console(self) -> t.Optional[str]:
        return '/dev/' + self.tty if self.tty else None

    def to_dict(self) -> t.Dict[str, t.Any]:
        return self._asdict()


def _status_error(line: str, why: str) -> ToolError:
    return ToolError('vmctl status printed a line this module cannot read (%s): %r' % (why, line))


def _parse_row(line: str) -> VmRecord:
    fields = line.split(None, 8)
    if len(fields) != 9:
        raise _status_error(line, 'expected 9 columns, found %d' % len(fields))
    vm_id, pid, vcpus, maxmem, curmem, tty, owner, state, name = fields
    if not vm_id.isdigit() or not vcpus.isdigit():
        raise _status_error(line, 'ID and VCPUS must be numbers')
    if pid != '-' and not pid.isdigit():
        raise _status_error(line, 'PID must be a number or "-"')
    if state not in STATES:
        raise _status_error(line, 'unknown state %r' % state)
    if not NAME_RE.match(name):
        raise _status_error(line, 'invalid VM name %r' % name)
    try:
        maxmem_bytes = parse_scaled(maxmem)
        curmem_bytes = None if curmem == '-' else parse_scaled(curmem)
    except InvalidInput as exc:
        raise _status_error(line, exc.msg)
    return VmRecord(
        id=int(vm_id), pid=None if pid == '-' else int(pid), vcpus=int(vcpus),
        maxmem=maxmem_bytes, maxmem_text=maxmem,
        curmem=curmem_bytes, curmem_text=None if curmem == '-' else curmem,
        tty=None if tty == '-' else tty, owner=owner, state=state, name=name)


def parse_status(stdout: str) -> t.List[VmRecord]:
    """The rows of ``vmctl status`` output: the header first, then one line per VM (running ones first)."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise ToolError('vmctl status printed nothing; expected at least its header %r' % STATUS_HEADER.strip())
    if lines[0].split() != STATUS_COLUMNS:
        raise _status_error(lines[0], 'expected the header %r' % STATUS_HEADER.strip())
    return [_parse_row(line) for line in lines[1:]]


def find_vm(records: t.Iterable[VmRecord], name: str) -> t.Optional[VmRecord]:
    for record in records:
        if record.name == name:
            return record
    return None


# --- messages ----------------------------------------------------------------------------------------------

def parse_start_message(stderr: str) -> t.Optional[t.Tuple[int, t.Optional[str]]]:
    """(vm id, tty path) from ``vmctl: started vm 1 successfully, tty /dev/ttyp3``; None without that line."""
    for line in stderr.splitlines():
        match = _START_OK_RE.match(line.strip())
        if match:
            return int(match.group(1)), match.group(2) or None
    return None


class StopOutcome(t.NamedTuple):
    # requested, terminated, not_found, not_running, in_progress, not_permitted or failed
    kind: str
    vm_id: t.Optional[int]
    text: str


def parse_stop_message(stderr: str) -> t.Optional[StopOutcome]:
    """What ``vmctl stop`` answered after ``stopping vm NAME: ``; None when that line is missing."""
    for line in stderr.splitlines():
        match = _STOP_RE.match(line.strip())
        if not match:
            continue
        text = match.group(2)
        found = _STOP_ID_RE.match(text)
        if found:
            kind = 'terminated' if text.startswith(('terminated', 'forced')) else 'requested'
            return StopOutcome(kind, int(found.group(1)), text)
        if text == 'vm not found':
            return StopOutcome('not_found', None, text)
        if text in ('failed: Invalid argument', 'cannot stop vm that is not running'):
            return StopOutcome('not_running', None, text)
        if text == 'failed: Operation already in progress':
            return StopOutcome('in_progress', None, text)
        if text == 'failed: Operation not permitted':
            return StopOutcome('not_permitted', None, text)
        return StopOutcome('failed', None, text)
    return None


_PERMISSION_HINT = (
    'creating a VM needs root: run the task with become: true and become_method: community.general.doas '
    '(doas.conf: "permit nopass USER as root"); a VM defined in vm.conf with "owner USER" can be started '
    'and stopped by that user')
_SOCKET_PERMISSION_HINT = (
    'this user may not use vmd\'s socket %s: run the task as root (become: true, become_method: '
    'community.general.doas) or give the user\'s group the socket with "socket owner :GROUP" in vm.conf' % SOCKET_PATH)

# (words in vmctl's message, hint); the first match wins.
_HINTS: t.List[t.Tuple[str, str]] = [
    ('connect: %s: No such file or directory' % SOCKET_PATH,
     'vmd is not running; start it with "rcctl enable vmd && rcctl start vmd"'),
    ('connect: %s: Connection refused' % SOCKET_PATH,
     'vmd is not running (its socket is left over); start it with "rcctl enable vmd && rcctl restart vmd"'),
    ('connect: %s: Permission denied' % SOCKET_PATH, _SOCKET_PERMISSION_HINT),
    ('start vm command failed: Operation already in progress',
     'vmd already has a VM of this name: it is running, or it is defined in vm.conf, where vmd refuses '
     'creation options (memory, disks, cdrom, interfaces, switch, template)'),
    ('start vm command failed: Operation not permitted', _PERMISSION_HINT + '; vmd also refuses a VM that '
     'restarted three times within six seconds'),
    ('start vm command failed: Cannot allocate memory',
     'the build host has not enough free memory for the VM; lower memory'),
    ('could not open disk image(s)',
     'a disk image is missing, unreadable for vmd, or in use by another VM (vmd locks the images it opens)'),
    ('invalid disk path', 'a disk image does not exist (disks)'),
    ('memory size', 'check the memory option'),
    ('invalid memory size', 'check the memory option'),
    ('invalid boot image path', 'the boot kernel does not exist (boot)'),
    ('cannot open kernel', 'the boot kernel cannot be read (boot)'),
    ('kernel must be a regular file', 'boot must name a file'),
    ('invalid iso image path', 'the ISO image does not exist (cdrom)'),
    ('could not find specified iso image', 'the ISO image does not exist (cdrom)'),
    ('specified iso image is not a regular file', 'cdrom must name a file'),
    ('vmm bios firmware file not found', 'install the vmm BIOS with "fw_update vmm"'),
    ('invalid template', 'template must name a VM defined in vm.conf that allows instances'),
    ('too many disks', 'vmd takes at most %d disks' % MAX_DISKS),
    ('too many network interfaces', 'vmd takes at most %d network interfaces' % MAX_NICS),
    ('command failed: Operation not permitted', _PERMISSION_HINT),
    ('failed: Operation not permitted',
     'only root and the VM\'s owner (vm.conf "owner") may stop it: run the task with become: true and '
     'become_method: community.general.doas, or as the owner'),
]


def vmctl_words(stderr: str, stdout: str = '') -> str:
    """vmctl's own error line: the last line of stderr (earlier lines are warnings such as
    "starting without disks"), or of stdout when stderr is empty."""
    for text in (stderr, stdout):
        lines = [line.strip() for line in (text or '').splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return ''


def hint_for(words: str) -> t.Optional[str]:
    for needle, hint in _HINTS:
        if needle in words:
            return hint
    return None


def failure_message(what: str, rc: int, stderr: str, stdout: str = '') -> str:
    """'vmctl start web1 failed (rc 1): "vmctl: could not open disk image(s)" - <hint>'."""
    words = vmctl_words(stderr, stdout)
    msg = '%s failed (rc %d): %s' % (what, rc, '"%s"' % words if words else 'no output')
    hint = hint_for(words)
    return '%s - %s' % (msg, hint) if hint else msg


# --- vmd's local interface addresses -----------------------------------------------------------------------

def local_addresses(vm_id: int, idx: int = 0, prefix: str = DEFAULT_LOCAL_PREFIX) -> t.Tuple[str, str]:
    """(host, guest) IPv4 addresses of a VM's local interface (vmctl start -L), as vmd's priv.c assigns them.

    Each VM gets a /24's worth of the prefix at vm_id * 256, each local interface a /31 in it, skipping .0:
    VM 1 -> 100.64.1.2 (host side) and 100.64.1.3 (guest).
    """
    try:
        network = ipaddress.IPv4Network(prefix, strict=False)
    except ValueError as exc:
        raise InvalidInput('local_prefix: %r is not an IPv4 prefix such as 100.64.0.0/10: %s' % (prefix, exc))
    if vm_id < 0 or idx < 0 or idx >= MAX_LOCAL_IDX:
        raise InvalidInput('local interface %d of VM %d: vmd has no address for it' % (idx, vm_id))
    offset = (vm_id << 8) | ((idx + 1) * 2)
    if offset + 1 >= network.num_addresses:
        raise InvalidInput('local_prefix: VM %d interface %d lies outside %s (vmd: "dhcp address range exceeded"); '
                           'use the prefix of vm.conf "local prefix"' % (vm_id, idx, network))
    host = network.network_address + offset
    return str(host), str(host + 1)


# --- the tool ----------------------------------------------------------------------------------------------

def disk_argument(path: str, fmt: str) -> str:
    return '%s:%s' % (fmt, path)


def memory_argument(size: int) -> str:
    return '%dM' % (round_up(size, MIB) // MIB)


class VmctlTool:
    def __init__(self, run: Runner, binary: str = 'vmctl') -> None:
        self.run = run
        self.binary = binary

    def create_argv(self, path: str, fmt: str, size: t.Optional[int],
                    backing_file: t.Optional[str] = None) -> t.List[str]:
        argv = [self.binary, 'create']
        if backing_file:
            argv += ['-b', backing_file]
        if size is not None:
            argv += ['-s', memory_argument(size)]
        argv.append(disk_argument(path, fmt))
        return argv

    def create(self, path: str, fmt: str, size: t.Optional[int],
               backing_file: t.Optional[str] = None) -> None:
        run_checked(self.run, self.create_argv(path, fmt, size, backing_file), 'vmctl create %s' % path)

    def start_argv(self, name: str, memory: t.Optional[int] = None,
                   disks: t.Sequence[t.Tuple[str, str]] = (), cdrom: t.Optional[str] = None,
                   boot: t.Optional[str] = None, boot_device: t.Optional[str] = None,
                   local_interface: bool = False, interfaces: t.Optional[int] = None,
                   switch: t.Optional[str] = None, template: t.Optional[str] = None) -> t.List[str]:
        """disks: (path, format) pairs; memory in bytes, rounded up to whole MiB."""
        argv = [self.binary, 'start']
        if memory is not None:
            argv += ['-m', memory_argument(memory)]
        if local_interface:
            # -L before -n: vmd numbers interfaces in the order given, and the addresses follow the number.
            argv.append('-L')
        if interfaces is not None:
            argv += ['-i', str(interfaces)]
        for path, fmt in disks:
            argv += ['-d', disk_argument(path, fmt)]
        if cdrom:
            argv += ['-r', cdrom]
        if boot:
            argv += ['-b', boot]
        if boot_device:
            argv += ['-B', boot_device]
        if switch:
            argv += ['-n', switch]
        if template:
            argv += ['-t', template]
        argv.append(name)
        return argv

    def stop_argv(self, name: str, force: bool = False, wait: bool = False) -> t.List[str]:
        argv = [self.binary, 'stop']
        if force:
            argv.append('-f')
        if wait:
            argv.append('-w')
        argv.append(name)
        return argv

    def status_argv(self) -> t.List[str]:
        # The whole list: "vmctl status NAME" prints only the header for an unknown name, and exits 0 or 1
        # depending on whether vmd knows other VMs.
        return [self.binary, 'status']

    def status(self) -> t.List[VmRecord]:
        argv = self.status_argv()
        rc, out, err = self.run(argv, check_rc=False)
        context = dict(cmd=argv, rc=rc, stdout=out, stderr=err)
        if rc != 0 and (err or '').strip():
            raise ToolError(failure_message('vmctl status', rc, err, out), **context)
        try:
            # With no VM at all vmctl prints the header and exits 1.
            return parse_status(out or '')
        except ToolError as exc:
            if rc != 0:
                raise ToolError(failure_message('vmctl status', rc, err, out), **context)
            raise ToolError(exc.msg, **context)

    def start(self, argv: t.List[str], name: str) -> t.Tuple[t.Optional[int], t.Optional[str], str]:
        """Run a start argv; (vm id, tty path, stderr) from vmctl's success message."""
        rc, out, err = self.run(argv, check_rc=False)
        if rc != 0:
            raise VmError(failure_message('vmctl start %s' % name, rc, err, out),
                          cmd=argv, rc=rc, stdout=out, stderr=err)
        started = parse_start_message(err or '')
        vm_id, tty = started if started else (None, None)
        return vm_id, tty, err

    def stop(self, name: str, force: bool = False, wait: bool = False) -> StopOutcome:
        argv = self.stop_argv(name, force, wait)
        rc, out, err = self.run(argv, check_rc=False)
        outcome = parse_stop_message(err or '')
        if rc == 0:
            return outcome or StopOutcome('requested', None, vmctl_words(err, out))
        if outcome and outcome.kind in ('not_found', 'not_running', 'in_progress'):
            return outcome
        raise VmError(failure_message('vmctl stop %s' % name, rc, err, out), cmd=argv, rc=rc, stdout=out, stderr=err)


def find_binary(binary: str, which: t.Callable[[str], t.Optional[str]] = shutil.which,
                exists: t.Callable[[str], bool] = os.path.isfile) -> str:
    """The vmctl to run: as given, from PATH, or OpenBSD's /usr/sbin/vmctl when PATH lacks /usr/sbin."""
    if '/' in binary:
        if exists(binary):
            return binary
    else:
        found = which(binary)
        if found:
            return binary
        if binary == 'vmctl' and exists('/usr/sbin/vmctl'):
            return '/usr/sbin/vmctl'
    raise ToolMissing('vmctl: %s was not found on the build host; vmctl_vm needs OpenBSD\'s vmctl and a running '
                      'vmd (set the vmctl option to its path)' % binary)


# --- options -----------------------------------------------------------------------------------------------

CREATION_OPTIONS = ('memory', 'disks', 'cdrom', 'local_interface', 'interfaces', 'switch', 'template')


class VmSpec(t.NamedTuple):
    name: str
    state: str = 'started'
    memory: t.Optional[int] = None
    disks: t.Tuple[t.Tuple[str, str], ...] = ()
    cdrom: t.Optional[str] = None
    boot: t.Optional[str] = None
    boot_device: t.Optional[str] = None
    local_interface: bool = False
    interfaces: t.Optional[int] = None
    switch: t.Optional[str] = None
    template: t.Optional[str] = None
    local_prefix: str = DEFAULT_LOCAL_PREFIX
    wait: bool = True
    wait_timeout: float = 300
    force: bool = False
    await_exit: bool = False
    lease: t.Optional[str] = None
    lease_ttl: float = 60.0

    def creation_options(self) -> t.List[str]:
        """Options that only a new VM can take (vmd refuses them for a VM of vm.conf)."""
        given = [key for key in CREATION_OPTIONS if getattr(self, key) not in (None, False, ())]
        if self.boot_device:
            given.append('boot_device')
        return given

    def can_create(self) -> bool:
        return bool(self.boot or self.disks or self.cdrom or self.template)

    def start_kwargs(self) -> t.Dict[str, t.Any]:
        return dict(memory=self.memory, disks=self.disks, cdrom=self.cdrom, boot=self.boot,
                    boot_device=self.boot_device, local_interface=self.local_interface,
                    interfaces=self.interfaces, switch=self.switch, template=self.template)


def check_name(name: object, option: str = 'name') -> str:
    if not isinstance(name, str) or not name:
        raise InvalidInput('%s: a VM name is required' % option)
    if len(name) >= VMM_MAX_NAME_LEN:
        raise InvalidInput('%s: %r is %d characters long; vmd takes at most %d'
                           % (option, name, len(name), VMM_MAX_NAME_LEN - 1))
    if not NAME_RE.match(name):
        raise InvalidInput('%s: %r is not a vmd VM name: use letters, digits, ".", "-" and "_", and do not start '
                           'with ".", "-" or "_"' % (option, name))
    if name.isdigit():
        raise InvalidInput('%s: %r holds only digits, which vmctl reads as a VM id; add a letter' % (option, name))
    return name


def guess_disk_format(path: str) -> str:
    """As vmctl does: the qcow2 magic, else the extension .qcow2 or .raw, else raw."""
    try:
        with open(path, 'rb') as handle:
            if handle.read(4) == QCOW2_MAGIC:
                return 'qcow2'
    except OSError:
        pass
    return 'qcow2' if path.lower().endswith('.qcow2') else 'raw'


def normalise(params: t.Dict[str, t.Any]) -> VmSpec:
    """Check every option, naming it in the error, before vmctl runs."""
    name = check_name(params.get('name'))
    state = params.get('state') or 'started'
    memory = None
    if params.get('memory') not in (None, ''):
        memory = parse_size(params['memory'], 'memory', minimum=MIB)
    disks = []
    for index, disk in enumerate(params.get('disks') or []):
        if not isinstance(disk, dict) or not disk.get('path'):
            raise InvalidInput('disks[%d]: each disk needs a path' % index)
        path = os.path.abspath(disk['path'])
        fmt = disk.get('format') or guess_disk_format(path)
        if fmt not in DISK_FORMATS:
            raise InvalidInput('disks[%d].format: %r is not one of %s' % (index, fmt, ', '.join(DISK_FORMATS)))
        disks.append((path, fmt))
    if len(disks) > MAX_DISKS:
        raise InvalidInput('disks: vmd takes at most %d disks, %d were given' % (MAX_DISKS, len(disks)))
    interfaces = params.get('interfaces')
    if interfaces is not None and not 0 <= interfaces <= MAX_NICS:
        raise InvalidInput('interfaces: must be 0 to %d, got %d' % (MAX_NICS, interfaces))
    local_interface = bool(params.get('local_interface'))
    switch = params.get('switch') or None
    # -L and -n each add an interface; -i sets the total (vmctl main.c ctl_start()).
    attached = int(local_interface) + int(bool(switch))
    if interfaces is not None and interfaces < attached:
        raise InvalidInput('interfaces: %d is fewer than local_interface and switch add (%d); vmctl would use %d'
                           % (interfaces, attached, attached))
    boot_device = params.get('boot_device')
    if boot_device is not None and boot_device not in BOOT_DEVICES:
        raise InvalidInput('boot_device: %r is not one of %s' % (boot_device, ', '.join(BOOT_DEVICES)))
    cdrom = os.path.abspath(params['cdrom']) if params.get('cdrom') else None
    boot = os.path.abspath(params['boot']) if params.get('boot') else None
    if boot_device == 'cdrom' and not cdrom:
        raise InvalidInput('boot_device: cdrom needs the cdrom option')
    if boot_device == 'disk' and not disks:
        raise InvalidInput('boot_device: disk needs the disks option')
    if boot_device == 'net' and not boot:
        raise InvalidInput('boot_device: net needs boot (a kernel such as bsd.rd; vmd\'s BIOS cannot boot from '
                           'the network)')
    if boot_device == 'net' and not (interfaces or attached):
        raise InvalidInput('boot_device: net needs a network interface (local_interface, interfaces or switch)')
    local_prefix = params.get('local_prefix') or DEFAULT_LOCAL_PREFIX
    try:
        prefix = ipaddress.IPv4Network(local_prefix, strict=False)
    except ValueError as exc:
        raise InvalidInput('local_prefix: %r is not an IPv4 prefix such as %s: %s'
                           % (local_prefix, DEFAULT_LOCAL_PREFIX, exc))
    wait_timeout = params.get('wait_timeout')
    wait_timeout = 300 if wait_timeout is None else wait_timeout
    if wait_timeout < 0:
        raise InvalidInput('wait_timeout: must not be negative, got %s' % wait_timeout)
    force = bool(params.get('force'))
    await_exit = bool(params.get('await_exit'))
    if await_exit and state != 'stopped':
        raise InvalidInput('await_exit: only works with state=stopped, not state=%s' % state)
    if await_exit and force:
        raise InvalidInput('await_exit: waits for the VM to end by itself; it cannot be combined with force')
    template = params.get('template') or None
    if template is not None:
        check_name(template, 'template')
    lease = os.path.abspath(params['lease']) if params.get('lease') else None
    lease_ttl = float(params.get('lease_ttl') or 60)
    if lease and lease_ttl <= 0:
        raise InvalidInput('lease_ttl: must be more than 0 seconds')
    return VmSpec(
        name=name, state=state, memory=memory, disks=tuple(disks), cdrom=cdrom, boot=boot, boot_device=boot_device,
        local_interface=local_interface, interfaces=interfaces, switch=switch, template=template,
        local_prefix=str(prefix), wait=params.get('wait') is not False, wait_timeout=float(wait_timeout),
        force=force, await_exit=await_exit, lease=lease, lease_ttl=lease_ttl)


def check_files(spec: VmSpec, exists: t.Callable[[str], bool] = os.path.exists) -> None:
    """Files a new VM needs must exist before vmctl start runs."""
    for index, (path, _fmt) in enumerate(spec.disks):
        if not exists(path):
            raise InvalidInput('disks[%d].path: %s does not exist; create it first with '
                               'osimage.builder.disk_image' % (index, path))
    for key in ('cdrom', 'boot'):
        path = getattr(spec, key)
        if path and not exists(path):
            raise InvalidInput('%s: %s does not exist' % (key, path))


# --- the state machine -------------------------------------------------------------------------------------

class RecordingRun:
    """Passes commands on and keeps their argvs; repeated polls of one command are kept once."""

    def __init__(self, run: Runner) -> None:
        self.run = run
        self.commands: t.List[t.List[str]] = []

    def __call__(self, argv: t.List[str], check_rc: bool = False) -> t.Tuple[int, str, str]:
        if not self.commands or self.commands[-1] != list(argv):
            self.commands.append(list(argv))
        return self.run(argv, check_rc=check_rc)


def _describe(record: t.Optional[VmRecord]) -> str:
    return record.state if record else 'not listed'


class VmctlVm:
    """started/stopped/absent/restarted for one VM of vmd, read from and driven through vmctl."""

    def __init__(self, run: Runner, binary: str = 'vmctl', check_mode: bool = False,
                 clock: t.Callable[[], float] = time.monotonic,
                 sleep: t.Callable[[float], None] = time.sleep,
                 exists: t.Callable[[str], bool] = os.path.exists,
                 watchdog: t.Optional[t.Callable[[VmSpec], t.Optional[int]]] = None) -> None:
        self.watchdog = watchdog
        self.recorder = RecordingRun(run)
        self.tool = VmctlTool(self.recorder, binary)
        self.check_mode = check_mode
        self.clock = clock
        self.sleep = sleep
        self.exists = exists

    def find(self, name: str) -> t.Optional[VmRecord]:
        return find_vm(self.tool.status(), name)

    def poll(self, name: str, done: t.Callable[[t.Optional[VmRecord]], bool],
             timeout: float) -> t.Tuple[bool, t.Optional[VmRecord]]:
        deadline = self.clock() + timeout
        while True:
            record = self.find(name)
            if done(record):
                return True, record
            if self.clock() >= deadline:
                return False, record
            self.sleep(POLL_INTERVAL)

    # -- results

    def result(self, spec: VmSpec, changed: bool, record: t.Optional[VmRecord], before: t.Optional[VmRecord],
               console: t.Optional[str] = None, vm_id: t.Optional[int] = None) -> t.Dict[str, t.Any]:
        """console and vm_id: what vmctl start said, for when the list does not show the VM (yet)."""
        if record is not None and record.up:
            console = console or record.console
            vm_id = record.id
        elif record is not None:
            console = vm_id = None
        host = guest = None
        if spec.local_interface and vm_id is not None:
            host, guest = local_addresses(vm_id, 0, spec.local_prefix)
        return {
            'changed': changed,
            'vm': record.to_dict() if record else None,
            'console': console,
            'host_address': host,
            'guest_address': guest,
            'cmd': self.recorder.commands,
            'diff': {'before': {'state': _describe(before)}, 'after': {'state': _describe(record)}},
        }

    def planned(self, spec: VmSpec, changed: bool, record: t.Optional[VmRecord],
                after: str) -> t.Dict[str, t.Any]:
        """Check mode: what the status list shows now, and the state a real run would leave."""
        result = self.result(spec, changed, record, record)
        if changed:
            result['diff']['after'] = {'state': after}
        return result

    # -- run

    def run(self, spec: VmSpec) -> t.Dict[str, t.Any]:
        record = self.find(spec.name)
        if spec.state == 'stopped':
            if spec.await_exit:
                return self._await_exit(spec, record)
            return self._stop(spec, record, remove=False)
        if spec.state == 'absent':
            return self._stop(spec, record, remove=True)
        watched = bool(spec.lease) and not self.check_mode
        if watched:
            _lease.require_live(t.cast(str, spec.lease), spec.lease_ttl)
        if spec.state == 'restarted':
            result = self._restart(spec, record)
        else:
            result = self._start(spec, record, before=record, changed=False)
        if watched and self.watchdog is not None:
            result['watchdog_pid'] = self.watchdog(spec)
        return result

    def _stop(self, spec: VmSpec, record: t.Optional[VmRecord], remove: bool) -> t.Dict[str, t.Any]:
        before = record
        if remove and record is not None and not record.up:
            raise VmError(self._in_vm_conf(spec.name, record, 'it cannot be made absent'),
                          vm=record.to_dict())
        if record is None or not record.up:
            return self.result(spec, False, record, before)
        if self.check_mode:
            return self.planned(spec, True, record, 'not listed' if remove else 'stopped')
        changed = self._send_stop(spec, record, wait=spec.wait)
        if spec.wait:
            record = self._wait_down(spec, record)
        else:
            record = self.find(spec.name)
        if remove and record is not None and not record.up:
            raise VmError(self._in_vm_conf(spec.name, record, 'it was stopped but stays listed'),
                          vm=record.to_dict(), cmd=self.recorder.commands)
        return self.result(spec, changed, record, before)

    @staticmethod
    def _in_vm_conf(name: str, record: VmRecord, what: str) -> str:
        return ('%s is defined in vm.conf (vmctl status lists it as %s); %s - remove it from vm.conf and run '
                '"vmctl reload", or use state=stopped' % (name, record.state, what))

    def _send_stop(self, spec: VmSpec, record: VmRecord, wait: bool) -> bool:
        """Ask vmd to stop the VM; False when it was already on its way down (or gone) without us."""
        if record.state == 'stopping' and not spec.force:
            # vmd answers a second graceful stop with EALREADY; the first one is still running its course.
            return False
        outcome = self.tool.stop(spec.name, force=spec.force, wait=wait)
        return outcome.kind in ('requested', 'terminated')

    def _wait_down(self, spec: VmSpec, record: t.Optional[VmRecord]) -> t.Optional[VmRecord]:
        """After a stop: until the VM has no process (vm.conf VMs stay listed as stopped, others vanish)."""
        timeout = max(spec.wait_timeout, STOP_SETTLE)
        ok, record = self.poll(spec.name, lambda r: r is None or not r.up, timeout)
        if not ok:
            raise WaitTimeout('%s was still %s after %d s of waiting for it to stop'
                              % (spec.name, _describe(record), timeout),
                              vm=record.to_dict() if record else None, cmd=self.recorder.commands)
        return record

    def _await_exit(self, spec: VmSpec, record: t.Optional[VmRecord]) -> t.Dict[str, t.Any]:
        before = record
        if record is None or not record.up or self.check_mode:
            return self.result(spec, False, record, before)
        started = self.clock()
        ok, record = self.poll(spec.name, lambda r: r is None or not r.up, spec.wait_timeout)
        if not ok:
            raise WaitTimeout(
                '%s did not end by itself: waited %d s, and vmctl status still shows it %s. vmd ends a VM when '
                'its guest reboots only if it was started with boot_device; stop it with await_exit=false'
                % (spec.name, self.clock() - started, _describe(record)),
                vm=record.to_dict() if record else None, cmd=self.recorder.commands)
        return self.result(spec, False, record, before)

    def _restart(self, spec: VmSpec, record: t.Optional[VmRecord]) -> t.Dict[str, t.Any]:
        before = record
        if self.check_mode:
            # A running VM may be one of vm.conf; the list cannot tell until it is stopped.
            if record is None:
                self._create_argv(spec)
            elif not record.up:
                self._start_configured_argv(spec, record)
            return self.planned(spec, True, record, 'running')
        if record is not None and record.up:
            self._send_stop(spec, record, wait=True)
            record = self._wait_down(spec, record)
        return self._start(spec, record, before=before, changed=True)

    def _start(self, spec: VmSpec, record: t.Optional[VmRecord], before: t.Optional[VmRecord],
               changed: bool) -> t.Dict[str, t.Any]:
        if record is not None and record.state == 'stopping':
            if self.check_mode:
                return self.planned(spec, True, record, 'running')
            # Being stopped by someone else: start it again once it is down.
            record = self._wait_down(spec, record)
        if record is not None and record.up:
            return self.result(spec, changed, record, before)
        if record is not None and record.state == 'waiting':
            # vmd starts VMs of vm.conf one after the other and will start this one by itself.
            if self.check_mode or not spec.wait:
                return self.result(spec, changed, record, before)
            return self._wait_running(spec, before, changed, None, started=False)

        if record is not None:
            argv = self._start_configured_argv(spec, record)
        else:
            argv = self._create_argv(spec)
        if self.check_mode:
            return self.planned(spec, True, record, 'running')
        vm_id, tty, _err = self.tool.start(argv, spec.name)
        if spec.wait:
            return self._wait_running(spec, before, True, tty, started=True)
        return self.result(spec, True, self.find(spec.name), before, console=tty, vm_id=vm_id)

    def _start_configured_argv(self, spec: VmSpec, record: VmRecord) -> t.List[str]:
        given = spec.creation_options()
        if given:
            raise InvalidInput(
                '%s is defined in vm.conf (vmctl status lists it as %s), and vmd refuses creation options for such '
                'a VM ("start vm command failed: Operation already in progress"); remove %s from the task and '
                'configure the VM in vm.conf instead. Only boot may be given.' % (spec.name, record.state, ', '.join(given)))
        return self.tool.start_argv(spec.name, boot=spec.boot)

    def _create_argv(self, spec: VmSpec) -> t.List[str]:
        if not spec.can_create():
            raise InvalidInput('%s is not known to vmd, so starting it creates it, which needs boot, disks, cdrom or '
                               'template (vmctl: "no kernel or disk/cdrom specified")' % spec.name)
        if not self.check_mode:
            check_files(spec, self.exists)
        return self.tool.start_argv(spec.name, **spec.start_kwargs())

    def _wait_running(self, spec: VmSpec, before: t.Optional[VmRecord], changed: bool,
                      tty: t.Optional[str], started: bool) -> t.Dict[str, t.Any]:
        begun = self.clock()
        deadline = begun + spec.wait_timeout
        while True:
            record = self.find(spec.name)
            if record is not None and record.up and record.state == 'running' and record.tty:
                return self.result(spec, changed, record, before, console=tty)
            now = self.clock()
            gone = record is None or (not record.up and record.state != 'waiting')
            if started and gone and now - begun >= START_GRACE:
                raise VmError('%s ended right after vmctl started it (vmctl status: %s); vmd logs why to '
                              '/var/log/daemon' % (spec.name, _describe(record)),
                              vm=record.to_dict() if record else None, cmd=self.recorder.commands)
            if now >= deadline:
                raise WaitTimeout('%s was not running within %d s (last state: %s)'
                                  % (spec.name, spec.wait_timeout, _describe(record)),
                                  vm=record.to_dict() if record else None, cmd=self.recorder.commands)
            self.sleep(POLL_INTERVAL)


# --- the watchdog of a VM started with a build's lease ------------------------------------------------------

def plain_runner(prefix: t.Sequence[str] = ()) -> Runner:
    """A Runner on subprocess, for the watchdog daemon, which has no AnsibleModule to run commands with."""
    def run(argv: t.List[str], check_rc: bool = False) -> t.Tuple[int, str, str]:  # pylint: disable=unused-argument
        try:
            done = subprocess.run(list(prefix) + list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, check=False)
        except OSError as exc:
            return 127, '', str(exc)
        return done.returncode, done.stdout.decode('utf-8', 'replace'), done.stderr.decode('utf-8', 'replace')
    return run


def watchdog_pidfile(lease: str, name: str) -> str:
    return os.path.join(os.path.dirname(lease), 'vmctl-%s.watchdog.pid' % name)


def watch_vm(tool: VmctlTool, name: str, lease: str, ttl: float,
             clock: t.Callable[[], float] = time.time, sleep: t.Callable[[float], None] = time.sleep,
             stale: t.Callable[[str, float, float], bool] = _lease.expired) -> str:
    """The watchdog's loop: "vmctl stop -f NAME" once the lease expired; returns when the VM is gone."""
    begun = clock()

    def alive() -> bool:
        try:
            record = find_vm(tool.status(), name)
        except (ToolError, VmError):
            return False
        # vmctl start returns before vmd lists the VM; do not take that for its end.
        return (record is not None and record.up) or clock() - begun < START_GRACE

    def expire() -> None:
        try:
            tool.stop(name, force=True)
        except (ToolError, VmError):
            pass

    return _daemon.watch_lease(lease, ttl, alive, expire, clock=clock, sleep=sleep, stale=stale)


def start_watchdog(spec: VmSpec, binary: str, prefix: t.Sequence[str] = ()) -> t.Optional[int]:
    """Start the VM's watchdog unless one runs; its pid."""
    if not spec.lease:
        return None
    pidfile = watchdog_pidfile(spec.lease, spec.name)
    pid = _daemon.read_pid(pidfile)
    if pid is not None and _daemon.pid_alive(pid):
        return pid
    tool = VmctlTool(plain_runner(prefix), binary)
    lease, ttl = spec.lease, spec.lease_ttl
    return _daemon.daemonize(lambda: watch_vm(tool, spec.name, lease, ttl), pidfile)
