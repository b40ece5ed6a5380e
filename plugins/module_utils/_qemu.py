# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""qemu_vm: a qemu-system VM as a declarative resource.

Every file of a VM lives in its work directory under the VM's name, so two
builds with different work directories (or names) never share a pidfile,
socket or log:

  NAME.pid         pid of qemu, written by the supervisor (see _daemon)
  NAME.exit        qemu's exit status, written when it ends
  NAME.json        the requested configuration and what was chosen (accel, ports)
  NAME.qmp         QMP socket (status, ACPI power-down, quit)
  NAME.console     serial console socket (console=socket)
  NAME.serial.log  everything the guest wrote on its serial console
  NAME.log         qemu's own stdout/stderr
  NAME.OVMF_VARS.fd  the VM's UEFI variable store (firmware=uefi)

Started with a build's lease, the supervisor ends qemu once the lease goes stale
(the build was killed); NAME.json names the build and its lease, and NAME.exit
says "lease expired".
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import time
import typing as t

from ansible_collections.osimage.builder.plugins.module_utils import _accel, _daemon, _lease, _qcow2
from ansible_collections.osimage.builder.plugins.module_utils._errors import (
    FailPatternSeen, InvalidInput, ToolMissing, VmError, WaitTimeout)
from ansible_collections.osimage.builder.plugins.module_utils._patterns import (
    LogWatcher, compile_patterns, last_lines)
from ansible_collections.osimage.builder.plugins.module_utils._qmp import QmpClient
from ansible_collections.osimage.builder.plugins.module_utils._sizes import parse_size, round_up

NAME_RE = re.compile(r'^[A-Za-z][A-Za-z0-9_.-]{0,63}$')
# sun_path is 104 bytes on the BSDs and macOS, 108 on Linux; stay within both.
MAX_SOCKET_PATH = 103
USER_NET_HOST = '10.0.2.2'
USER_NET_GUEST = '10.0.2.15'
MIB = 1024 * 1024

# (code, variables template) pairs, as distributions install OVMF / edk2.
OVMF_CANDIDATES = [
    ('/usr/share/OVMF/OVMF_CODE_4M.fd', '/usr/share/OVMF/OVMF_VARS_4M.fd'),
    ('/usr/share/OVMF/OVMF_CODE.fd', '/usr/share/OVMF/OVMF_VARS.fd'),
    ('/usr/share/edk2/ovmf/OVMF_CODE.fd', '/usr/share/edk2/ovmf/OVMF_VARS.fd'),
    ('/usr/share/edk2/x64/OVMF_CODE.4m.fd', '/usr/share/edk2/x64/OVMF_VARS.4m.fd'),
    ('/usr/share/qemu/edk2-x86_64-code.fd', '/usr/share/qemu/edk2-i386-vars.fd'),
    ('/usr/local/share/qemu/edk2-x86_64-code.fd', '/usr/local/share/qemu/edk2-i386-vars.fd'),
    ('/opt/homebrew/share/qemu/edk2-x86_64-code.fd', '/opt/homebrew/share/qemu/edk2-i386-vars.fd'),
]

BOOT_ORDER = {'disk': 'c', 'cdrom': 'd', 'net': 'n'}

# The options that define the VM; a running VM started with other values
# is reported as a mismatch instead of silently kept.
SPEC_KEYS = ('binary', 'accel', 'cpus', 'memory', 'machine', 'cpu_model', 'firmware',
             'firmware_code', 'firmware_vars', 'disks', 'cdrom', 'boot_device', 'kernel',
             'initrd', 'append', 'smbios', 'network', 'nic_model', 'ssh_forward',
             'ssh_host_port', 'ssh_bind', 'console', 'on_reboot', 'extra_args')


class VmPaths(t.NamedTuple):
    pidfile: str
    exitfile: str
    statefile: str
    qmp: str
    console: str
    console_log: str
    log: str
    uefi_vars: str

    def all(self) -> t.List[str]:
        return list(self)


def vm_paths(work_dir: str, name: str) -> VmPaths:
    base = os.path.join(work_dir, name)
    return VmPaths(base + '.pid', base + '.exit', base + '.json', base + '.qmp', base + '.console',
                   base + '.serial.log', base + '.log', base + '.OVMF_VARS.fd')


def qemu_escape(value: str) -> str:
    """qemu's option parser splits on commas; a literal comma is written twice."""
    return str(value).replace(',', ',,')


def free_tcp_port(bind: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((bind, 0))
        return sock.getsockname()[1]


def longest_socket_path(work_dir: str, name: str) -> str:
    """The longer of the VM's console and QMP socket paths (a unix address holds MAX_SOCKET_PATH bytes)."""
    paths = vm_paths(os.path.abspath(work_dir), name)
    return max(paths.console, paths.qmp, key=len)


def check_socket_paths(work_dir: str, name: str) -> None:
    longest = longest_socket_path(work_dir, name)
    if len(longest) > MAX_SOCKET_PATH:
        raise InvalidInput('work_dir: %s is too long for unix socket paths (%s is %d bytes, the limit is %d); '
                           'use a shorter work_dir or name' % (work_dir, longest, len(longest), MAX_SOCKET_PATH))


def normalise(params: t.Dict[str, t.Any], sockets: bool = True) -> t.Dict[str, t.Any]:
    """Check the options and bring them into the form stored with a running VM.

    SOCKETS false skips the socket path check: a VM is only stopped or removed, and
    none can have been started in a directory whose socket paths do not fit.
    """
    name = params['name']
    if not NAME_RE.match(name or ''):
        raise InvalidInput('name: %r must start with a letter and hold only letters, digits, ".", "-" '
                           'and "_" (at most 64 characters)' % name)
    work_dir = os.path.abspath(params['work_dir'])
    if sockets:
        check_socket_paths(work_dir, name)
    spec = {key: params.get(key) for key in SPEC_KEYS}
    spec['memory'] = round_up(parse_size(params['memory'], 'memory', minimum=16 * MIB), MIB) // MIB
    if params['cpus'] < 1:
        raise InvalidInput('cpus: must be at least 1, got %d' % params['cpus'])
    disks = []
    for index, disk in enumerate(params.get('disks') or []):
        disk = dict(disk)
        disk['path'] = os.path.abspath(disk['path'])
        if not disk.get('format'):
            # qemu would probe the format itself, and treat a qcow2 as raw if told nothing; read the header.
            disk['format'] = _qcow2.detect(disk['path']).format if os.path.isfile(disk['path']) else 'raw'
        disks.append(disk)
    spec['disks'] = disks
    for key in ('cdrom', 'kernel', 'initrd', 'firmware_code', 'firmware_vars'):
        if spec.get(key):
            spec[key] = os.path.abspath(spec[key])
    if spec['append'] and not spec['kernel']:
        raise InvalidInput('append: a kernel command line needs kernel to be set (qemu passes it to -kernel)')
    if spec['initrd'] and not spec['kernel']:
        raise InvalidInput('initrd: needs kernel to be set')
    if spec['boot_device'] == 'cdrom' and not spec['cdrom']:
        raise InvalidInput('boot_device: cdrom needs the cdrom option')
    if spec['ssh_forward'] and spec['network'] != 'user':
        raise InvalidInput('ssh_forward: forwarding a host port needs network=user')
    for index, entry in enumerate(spec.get('smbios') or []):
        if 'type' not in entry:
            raise InvalidInput('smbios[%d]: each entry needs a type (for example type: 1)' % index)
    return spec


def check_inputs(spec: t.Dict[str, t.Any]) -> None:
    """Files the VM needs must exist before qemu is started."""
    binary = spec['binary']
    if not shutil.which(binary):
        raise ToolMissing('%s was not found on the build host; install qemu (Debian: qemu-system-x86)' % binary)
    for index, disk in enumerate(spec['disks']):
        if not os.path.exists(disk['path']):
            raise InvalidInput('disks[%d].path: %s does not exist; create it first with '
                               'osimage.builder.disk_image' % (index, disk['path']))
    for key in ('cdrom', 'kernel', 'initrd'):
        if spec.get(key) and not os.path.isfile(spec[key]):
            raise InvalidInput('%s: %s does not exist' % (key, spec[key]))


def find_uefi(spec: t.Dict[str, t.Any], exists: t.Callable[[str], bool] = os.path.isfile) -> t.Tuple[str, str]:
    if spec.get('firmware_code'):
        if not exists(spec['firmware_code']):
            raise InvalidInput('firmware_code: %s does not exist' % spec['firmware_code'])
        if not spec.get('firmware_vars') or not exists(spec['firmware_vars']):
            raise InvalidInput('firmware_vars: firmware_code needs the matching variable store template')
        return spec['firmware_code'], spec['firmware_vars']
    for code, variables in OVMF_CANDIDATES:
        if exists(code) and exists(variables):
            return code, variables
    raise InvalidInput('firmware: uefi needs OVMF firmware and none was found (looked for %s); install '
                       'it (Debian: ovmf) or set firmware_code and firmware_vars'
                       % ', '.join(code for code, _vars in OVMF_CANDIDATES))


def _smbios_arg(entry: t.Dict[str, t.Any]) -> str:
    fields = ['type=%s' % entry['type']]
    for key in sorted(entry):
        if key != 'type':
            fields.append('%s=%s' % (key, qemu_escape(entry[key])))
    return ','.join(fields)


def build_argv(spec: t.Dict[str, t.Any], name: str, paths: VmPaths, accel: str,
               ssh_port: t.Optional[int], uefi: t.Optional[t.Tuple[str, str]] = None) -> t.List[str]:
    argv = [spec['binary'], '-name', 'guest=%s' % qemu_escape(name), '-nodefaults', '-display', 'none',
            '-vga', 'std', '-machine', spec['machine']]
    argv += ['-accel', 'tcg,thread=multi' if accel == 'tcg' else accel]
    cpu_model = spec.get('cpu_model') or ('max' if accel == 'tcg' else 'host')
    argv += ['-cpu', cpu_model, '-smp', str(spec['cpus']), '-m', '%dM' % spec['memory']]
    argv += ['-qmp', 'unix:%s,server=on,wait=off' % qemu_escape(paths.qmp)]
    if spec['console'] == 'pty':
        argv += ['-chardev', 'pty,id=console0,logfile=%s' % qemu_escape(paths.console_log)]
    else:
        argv += ['-chardev', 'socket,id=console0,path=%s,server=on,wait=off,logfile=%s'
                 % (qemu_escape(paths.console), qemu_escape(paths.console_log))]
    argv += ['-serial', 'chardev:console0']
    if uefi:
        argv += ['-drive', 'if=pflash,format=raw,unit=0,readonly=on,file=%s' % qemu_escape(uefi[0]),
                 '-drive', 'if=pflash,format=raw,unit=1,file=%s' % qemu_escape(paths.uefi_vars)]
    scsi = False
    for index, disk in enumerate(spec['disks']):
        drive = 'file=%s,format=%s,discard=unmap,detect-zeroes=unmap,cache=%s' % (
            qemu_escape(disk['path']), disk['format'], disk.get('cache') or 'writeback')
        if disk.get('readonly'):
            drive += ',readonly=on'
        interface = disk.get('interface') or 'virtio'
        if interface in ('virtio', 'ide'):
            argv += ['-drive', '%s,if=%s' % (drive, interface)]
        elif interface == 'scsi':
            if not scsi:
                argv += ['-device', 'virtio-scsi-pci,id=scsi0']
                scsi = True
            argv += ['-drive', '%s,if=none,id=disk%d' % (drive, index),
                     '-device', 'scsi-hd,drive=disk%d,bus=scsi0.0' % index]
        else:  # nvme
            argv += ['-drive', '%s,if=none,id=disk%d' % (drive, index),
                     '-device', 'nvme,drive=disk%d,serial=osimage%d' % (index, index)]
    if spec.get('cdrom'):
        argv += ['-drive', 'file=%s,media=cdrom,readonly=on,if=ide' % qemu_escape(spec['cdrom'])]
    if spec.get('boot_device'):
        argv += ['-boot', 'order=%s' % BOOT_ORDER[spec['boot_device']]]
    if spec.get('kernel'):
        argv += ['-kernel', spec['kernel']]
    if spec.get('initrd'):
        argv += ['-initrd', spec['initrd']]
    if spec.get('append'):
        argv += ['-append', spec['append']]
    for entry in spec.get('smbios') or []:
        argv += ['-smbios', _smbios_arg(entry)]
    if spec['network'] == 'user':
        netdev = 'user,id=net0'
        if spec['ssh_forward'] and ssh_port:
            netdev += ',hostfwd=tcp:%s:%d-:22' % (spec['ssh_bind'], ssh_port)
        argv += ['-netdev', netdev, '-device', '%s,netdev=net0' % spec['nic_model']]
    if spec['on_reboot'] == 'poweroff':
        argv.append('-no-reboot')
    argv += list(spec.get('extra_args') or [])
    return argv


class QemuVm:
    def __init__(self, name: str, work_dir: str, spec: t.Dict[str, t.Any], check_mode: bool = False,
                 probe_timeout: float = 8.0, start_timeout: float = 30.0, lease: t.Optional[str] = None,
                 lease_ttl: float = 60.0) -> None:
        self.name = name
        self.lease = os.path.abspath(lease) if lease else None
        self.lease_ttl = float(lease_ttl)
        self.work_dir = os.path.abspath(work_dir)
        self.spec = spec
        self.check_mode = check_mode
        self.paths = vm_paths(self.work_dir, name)
        self.probe_timeout = probe_timeout
        self.start_timeout = start_timeout

    # -- what is there now -------------------------------------------------

    def pid(self) -> t.Optional[int]:
        return _daemon.read_pid(self.paths.pidfile)

    def _is_ours(self, pid: int) -> bool:
        # A pid can be reused after a host reboot; on Linux make sure it is this VM's qemu.
        cmdline = '/proc/%d/cmdline' % pid
        if os.path.exists('/proc/self/cmdline'):
            try:
                with open(cmdline, 'rb') as handle:
                    return self.paths.qmp.encode() in handle.read()
            except OSError:
                return False
        return True

    def running(self) -> bool:
        pid = self.pid()
        if pid is None or os.path.exists(self.paths.exitfile):
            return False
        return _daemon.pid_alive(pid) and self._is_ours(pid)

    def exit_record(self) -> t.Optional[t.Dict[str, t.Any]]:
        return _daemon.read_json(self.paths.exitfile)

    def state_record(self) -> t.Optional[t.Dict[str, t.Any]]:
        return _daemon.read_json(self.paths.statefile)

    def exists(self) -> bool:
        return any(os.path.lexists(path) for path in self.paths.all())

    def qemu_log_tail(self, count: int = 20) -> t.List[str]:
        try:
            with open(self.paths.log, 'r', encoding='utf-8', errors='replace') as handle:
                return last_lines(handle.read()[-65536:], count)
        except OSError:
            return []

    def console_tail(self, count: int = 40) -> t.List[str]:
        watcher = LogWatcher(self.paths.console_log, [])
        watcher.poll()
        return watcher.tail(count)

    def qmp(self) -> QmpClient:
        return QmpClient(self.paths.qmp)

    def status(self) -> str:
        if self.running():
            try:
                with self.qmp() as client:
                    return client.execute('query-status').get('status', 'running')
            except (OSError, ConnectionError, VmError):
                return 'running'
        if self.exit_record() is not None or self.pid() is not None:
            return 'stopped'
        return 'absent'

    # -- actions -------------------------------------------------------------

    def _cleanup_runtime(self) -> None:
        for path in (self.paths.pidfile, self.paths.exitfile, self.paths.qmp, self.paths.console):
            if os.path.lexists(path):
                os.unlink(path)

    def check_lease(self) -> t.Optional[str]:
        return _lease.require_live(self.lease, self.lease_ttl) if self.lease else None

    def start(self) -> t.Dict[str, t.Any]:
        check_inputs(self.spec)
        build_id = self.check_lease()
        if not os.path.isdir(self.work_dir):
            os.makedirs(self.work_dir, mode=0o700)
        accel, reports = _accel.choose(self.spec['accel'], self.spec['binary'], self.probe_timeout,
                                       self.work_dir)
        uefi = None
        if self.spec['firmware'] == 'uefi':
            uefi = find_uefi(self.spec)
            if not os.path.exists(self.paths.uefi_vars):
                shutil.copyfile(uefi[1], self.paths.uefi_vars)
                os.chmod(self.paths.uefi_vars, 0o600)
        want_forward = self.spec['network'] == 'user' and self.spec['ssh_forward']
        fixed_port = self.spec.get('ssh_host_port') or 0
        last_error: t.Optional[VmError] = None
        for _attempt in range(3):
            port = None
            if want_forward:
                port = fixed_port or free_tcp_port(self.spec['ssh_bind'])
            argv = build_argv(self.spec, self.name, self.paths, accel, port, uefi)
            self._cleanup_runtime()
            _daemon.spawn_supervised(argv, self.paths.pidfile, self.paths.log, self.paths.exitfile,
                                     lease=self.lease, lease_ttl=self.lease_ttl)
            try:
                self._wait_started(argv)
            except VmError as exc:
                last_error = exc
                # Another process may have taken the port between our check and qemu's bind.
                if port and not fixed_port and 'hostfwd' in '\n'.join(exc.context.get('qemu_log', [])):
                    continue
                raise
            record = {'spec': self.spec, 'accel': accel, 'accel_probe': reports, 'ssh_port': port,
                      'argv': argv, 'started': time.time(), 'console': self._console_path(),
                      'build_id': build_id, 'lease': self.lease, 'lease_ttl': self.lease_ttl if self.lease else None}
            _daemon.write_atomic(self.paths.statefile, _dumps(record))
            return record
        raise t.cast(VmError, last_error)

    def _wait_started(self, argv: t.List[str]) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            record = self.exit_record()
            if record is not None:
                log = self.qemu_log_tail()
                raise VmError('qemu exited while starting (exit status %s): %s'
                              % (record.get('returncode'), (log[-1] if log else record.get('error', 'no output'))),
                              cmd=argv, qemu_log=log)
            if os.path.exists(self.paths.qmp):
                try:
                    with self.qmp() as client:
                        client.execute('query-status')
                    return
                except (OSError, ConnectionError):
                    pass
            time.sleep(0.1)
        self.kill()
        raise VmError('qemu did not open its QMP socket within %g s' % self.start_timeout,
                      cmd=argv, qemu_log=self.qemu_log_tail())

    def _console_path(self) -> str:
        if self.spec['console'] != 'pty':
            return self.paths.console
        with self.qmp() as client:
            for chardev in client.execute('query-chardev'):
                if chardev.get('label') == 'console0' and chardev.get('filename', '').startswith('pty:'):
                    return chardev['filename'][4:]
        raise VmError('qemu did not report the pty of the serial console')

    def _wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                return True
            time.sleep(0.2)
        return not self.running()

    def kill(self) -> None:
        """Pull the plug: QMP quit, then SIGKILL."""
        if not self.running():
            return
        try:
            with self.qmp() as client:
                client.execute('quit')
        except (OSError, ConnectionError, VmError):
            pass
        if self._wait_gone(10):
            return
        pid = self.pid()
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not self._wait_gone(10):
            raise VmError('qemu (pid %s) did not end after SIGKILL' % pid)

    def powerdown(self, timeout: float) -> str:
        """ACPI power button; after timeout seconds the VM is turned off hard."""
        try:
            with self.qmp() as client:
                client.execute('system_powerdown')
        except (OSError, ConnectionError, VmError):
            pass
        if self._wait_gone(timeout):
            return 'acpi'
        self.kill()
        return 'forced'

    def remove_files(self) -> None:
        for path in self.paths.all():
            if os.path.lexists(path):
                os.unlink(path)

    def wait_stopped(self, timeout: float, fail_on: t.List[t.Pattern[str]]) -> t.Dict[str, t.Any]:
        """Block until the guest powers itself off; fail early on qemu errors or fail patterns."""
        watcher = LogWatcher(self.paths.console_log, fail_on)
        deadline = time.monotonic() + timeout
        while True:
            seen = watcher.poll()
            if seen:
                raise FailPatternSeen('the console of %s showed %r (fail_on pattern %r); the VM is left running '
                                      'for inspection' % (self.name, seen[1], seen[0]),
                                      console_tail=watcher.tail())
            if not self.running():
                watcher.poll()
                return self._check_exit(watcher.tail())
            if time.monotonic() >= deadline:
                raise WaitTimeout('%s did not power off within %g s; it is still running' % (self.name, timeout),
                                  console_tail=watcher.tail())
            time.sleep(0.5)

    def _check_exit(self, console_tail: t.List[str]) -> t.Dict[str, t.Any]:
        # The supervisor writes the record right after it has reaped qemu; between the two the
        # pid is already gone, so give it a moment.
        deadline = time.monotonic() + 5
        record = self.exit_record()
        while record is None and time.monotonic() < deadline:
            time.sleep(0.1)
            record = self.exit_record()
        record = record or {'returncode': None}
        returncode = record.get('returncode')
        if returncode != 0:
            if record.get('reason') == _daemon.LEASE_EXPIRED:
                what = 'was ended because its build is gone (the lease %s expired)' % record.get('lease')
            elif isinstance(returncode, int) and returncode < 0:
                what = 'was killed by signal %d' % -returncode
            elif returncode is None:
                what = 'ended without an exit status (its supervisor was killed?)'
            else:
                what = 'exited with status %s' % returncode
            log = self.qemu_log_tail()
            raise VmError('qemu %s while the guest was running: %s' % (what, log[-1] if log else 'no output'),
                          qemu_log=log, console_tail=console_tail, exit_status=returncode)
        return record


def _dumps(data: t.Any) -> str:
    import json
    return json.dumps(data, indent=2, sort_keys=True) + '\n'


def spec_differences(old: t.Dict[str, t.Any], new: t.Dict[str, t.Any]) -> t.List[str]:
    return sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))


class QemuVmModule:
    """The state machine behind the module: started/stopped/absent/restarted."""

    def __init__(self, vm: QemuVm, fail_on: t.List[t.Pattern[str]]) -> None:
        self.vm = vm
        self.fail_on = fail_on

    def result(self, changed: bool, record: t.Optional[t.Dict[str, t.Any]] = None,
               exit_record: t.Optional[t.Dict[str, t.Any]] = None) -> t.Dict[str, t.Any]:
        vm = self.vm
        record = record or vm.state_record() or {}
        status = 'absent' if vm.check_mode and not vm.exists() else vm.status()
        network_user = vm.spec['network'] == 'user'
        exit_record = exit_record or vm.exit_record()
        return {
            'changed': changed,
            'name': vm.name,
            'status': status,
            'pid': vm.pid() if status not in ('absent', 'stopped') else None,
            'console': record.get('console') or (vm.paths.console if vm.spec['console'] == 'socket' else None),
            'console_log': vm.paths.console_log,
            'qmp': vm.paths.qmp,
            'log': vm.paths.log,
            'ssh_port': record.get('ssh_port'),
            'accel': record.get('accel'),
            'accel_probe': record.get('accel_probe', []),
            'host_address': USER_NET_HOST if network_user else None,
            'guest_address': USER_NET_GUEST if network_user else None,
            'argv': record.get('argv'),
            'exit_status': exit_record.get('returncode') if exit_record else None,
            'build_id': record.get('build_id'),
        }

    def run(self, state: str, wait: str, wait_timeout: float, stop_timeout: float) -> t.Dict[str, t.Any]:
        vm = self.vm
        if state == 'absent':
            changed = vm.exists()
            if changed and not vm.check_mode:
                vm.kill()
                vm.remove_files()
            result = self.result(changed, record={})
            result.update(status='absent', pid=None)
            return result
        if state == 'stopped':
            if not vm.running():
                return self.result(False)
            if vm.check_mode:
                return self.result(True)
            how = vm.powerdown(stop_timeout)
            result = self.result(True)
            result['stopped_by'] = how
            return result

        changed = False
        record = None
        if state == 'restarted' and vm.running():
            if vm.check_mode:
                return self.result(True)
            vm.powerdown(stop_timeout)
        if vm.running():
            previous = (vm.state_record() or {}).get('spec', {})
            differs = spec_differences(previous, vm.spec)
            if differs:
                raise InvalidInput('%s is running with a different configuration (%s differ); use '
                                   'state=restarted to apply it' % (vm.name, ', '.join(differs)))
        else:
            previous = vm.state_record()
            finished = (wait == 'stopped' and state == 'started' and previous is not None
                        and vm.exit_record() is not None and not spec_differences(previous.get('spec', {}), vm.spec))
            if finished:
                # This VM already ran to its power-off: the install step is done.
                vm._check_exit(vm.console_tail())
                return self.result(False)
            if vm.check_mode:
                return self.result(True)
            record = vm.start()
            changed = True
        if wait == 'stopped' and not vm.check_mode:
            exit_record = vm.wait_stopped(wait_timeout, self.fail_on)
            return self.result(changed, record, exit_record)
        return self.result(changed, record)


def make_fail_on(patterns: t.Iterable[str]) -> t.List[t.Pattern[str]]:
    return compile_patterns(patterns, 'fail_on')
