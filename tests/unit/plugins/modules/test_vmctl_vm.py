# -*- coding: utf-8 -*-
from __future__ import annotations

import json
import typing as t

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

from ansible_collections.osimage.builder.plugins.module_utils import _vmctl
from ansible_collections.osimage.builder.plugins.module_utils._errors import (
    InvalidInput, ToolError, VmError, WaitTimeout)
from ansible_collections.osimage.builder.plugins.modules import vmctl_vm

# vmctl status lines laid out with the printf formats of usr.sbin/vmctl/vmctl.c print_vm_info(); start and stop
# messages as vmctl.c vm_start_complete() and terminate_vm_complete() print them (all on stderr).
HEADER = '   ID   PID VCPUS  MAXMEM  CURMEM     TTY        OWNER    STATE NAME'
WEB1_RUNNING = '    1 12345     1    1.0G    246M   ttyp3         root  running web1'
WEB1_STOPPING = '    1 12345     1    1.0G    246M   ttyp3         root stopping web1'
WEB1_PAUSED = '    1 12345     1    1.0G    246M   ttyp3         root   paused web1'
DB1_STOPPED = '    2     -     1    512M       -       -  joe:vmusers  stopped db1'
DB1_RUNNING = '    2 23456     1    512M    201M   ttyp4  joe:vmusers  running db1'
DB1_WAITING = '    2     -     1    512M       -       -  joe:vmusers  waiting db1'
OTHER = '    7 34567     1    2.0G    1.1G   ttyp9         root  running other'
STARTED_WEB1 = 'vmctl: started vm 1 successfully, tty /dev/ttyp3\n'
STARTED_DB1 = 'vmctl: started vm 2 successfully, tty /dev/ttyp4\n'
NO_VMD = 'vmctl: connect: /var/run/vmd.sock: No such file or directory\n'

STATUS = ['vmctl', 'status']
NEW_WEB1 = ['vmctl', 'start', '-m', '1024M', '-L', '-d', 'qcow2:/vm/web1.qcow2', 'web1']
NEW_WEB1_INSTALL = ['vmctl', 'start', '-m', '1024M', '-L', '-d', 'raw:/vm/web1.raw', '-b', '/vm/bsd.rd',
                    '-B', 'net', 'web1']

Reply = t.Tuple[int, str, str]


def listing(*rows: str) -> Reply:
    # With no VM at all vmctl prints the header alone and exits 1.
    return (0 if rows else 1, '\n'.join((HEADER,) + rows) + '\n', '')


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class ScriptedVmctl:
    """Plays vmctl: each call must be the next expected argv; an entry with a count answers that many polls."""

    def __init__(self, script: t.List[t.Tuple[t.List[str], Reply]]) -> None:
        self.script = list(script)
        self.calls: t.List[t.List[str]] = []

    def __call__(self, argv: t.List[str], check_rc: bool = False) -> Reply:
        assert check_rc is False
        self.calls.append(list(argv))
        assert self.script, 'unexpected command %r' % (argv,)
        expected, reply = self.script.pop(0)
        assert list(argv) == expected
        return reply

    def done(self) -> None:
        assert not self.script, 'commands not run: %r' % (self.script,)


def params(**overrides: t.Any) -> t.Dict[str, t.Any]:
    base = dict(name='web1', state='started', memory=None, disks=None, cdrom=None, boot=None, boot_device=None,
                local_interface=False, interfaces=None, switch=None, template=None,
                local_prefix='100.64.0.0/10', wait=True, wait_timeout=300, force=False, await_exit=False,
                vmctl='vmctl')
    base.update(overrides)
    return base


CREATE = dict(memory='1G', local_interface=True, disks=[{'path': '/vm/web1.qcow2', 'format': None}])


def run(script, check_mode=False, exists=lambda path: True, **overrides):
    vmctl = ScriptedVmctl(script)
    clock = Clock()
    machine = _vmctl.VmctlVm(vmctl, 'vmctl', check_mode=check_mode, clock=clock, sleep=clock.sleep, exists=exists)
    result = machine.run(_vmctl.normalise(params(**overrides)))
    vmctl.done()
    return result, vmctl, clock


def fails(exc_type, script, check_mode=False, exists=lambda path: True, **overrides):
    vmctl = ScriptedVmctl(script)
    clock = Clock()
    machine = _vmctl.VmctlVm(vmctl, 'vmctl', check_mode=check_mode, clock=clock, sleep=clock.sleep, exists=exists)
    with pytest.raises(exc_type) as info:
        machine.run(_vmctl.normalise(params(**overrides)))
    vmctl.done()
    return info.value, vmctl, clock


# --- started ---------------------------------------------------------------------------------------------

def test_started_creates_a_new_vm_and_returns_its_console_and_addresses():
    result, vmctl, _clock = run([
        (STATUS, listing(OTHER)),
        (NEW_WEB1, (0, '', STARTED_WEB1)),
        (STATUS, listing(OTHER, WEB1_RUNNING)),
    ], **CREATE)
    assert result['changed'] is True
    assert result['vm']['id'] == 1 and result['vm']['state'] == 'running' and result['vm']['pid'] == 12345
    assert result['console'] == '/dev/ttyp3'
    assert (result['host_address'], result['guest_address']) == ('100.64.1.2', '100.64.1.3')
    assert result['cmd'] == [STATUS, NEW_WEB1, STATUS]
    assert result['diff'] == {'before': {'state': 'not listed'}, 'after': {'state': 'running'}}


def test_started_for_the_openbsd_installer():
    result, _vmctl_calls, _clock = run([
        (STATUS, listing()),
        (NEW_WEB1_INSTALL, (0, '', STARTED_WEB1)),
        (STATUS, listing(WEB1_RUNNING)),
    ], memory='1G', local_interface=True, disks=[{'path': '/vm/web1.raw', 'format': 'raw'}], boot='/vm/bsd.rd',
        boot_device='net')
    assert result['changed'] and result['guest_address'] == '100.64.1.3'


def test_started_running_vm_is_left_alone():
    result, vmctl, _clock = run([(STATUS, listing(WEB1_RUNNING))], **CREATE)
    assert result['changed'] is False
    assert result['cmd'] == [STATUS]
    assert result['console'] == '/dev/ttyp3' and result['host_address'] == '100.64.1.2'


def test_started_paused_vm_counts_as_started():
    result, _calls, _clock = run([(STATUS, listing(WEB1_PAUSED))])
    assert result['changed'] is False and result['vm']['state'] == 'paused'
    assert result['host_address'] is None and result['guest_address'] is None


def test_started_vm_conf_vm_is_started_without_options():
    result, _calls, _clock = run([
        (STATUS, listing(DB1_STOPPED)),
        (['vmctl', 'start', 'db1'], (0, '', STARTED_DB1)),
        (STATUS, listing(DB1_RUNNING)),
    ], name='db1')
    assert result['changed'] is True
    assert result['vm']['owner'] == 'joe:vmusers' and result['console'] == '/dev/ttyp4'
    assert result['diff'] == {'before': {'state': 'stopped'}, 'after': {'state': 'running'}}


def test_started_vm_conf_vm_takes_a_boot_kernel():
    result, _calls, _clock = run([
        (STATUS, listing(DB1_STOPPED)),
        (['vmctl', 'start', '-b', '/vm/bsd.rd', 'db1'], (0, '', STARTED_DB1)),
        (STATUS, listing(DB1_RUNNING)),
    ], name='db1', boot='/vm/bsd.rd')
    assert result['changed'] is True


def test_started_vm_conf_vm_refuses_creation_options_before_vmctl_start():
    error, vmctl, _clock = fails(InvalidInput, [(STATUS, listing(DB1_STOPPED))], name='db1', **CREATE)
    assert 'db1 is defined in vm.conf' in error.msg
    assert 'memory, disks, local_interface' in error.msg
    assert 'Operation already in progress' in error.msg
    assert vmctl.calls == [STATUS]


def test_started_unknown_vm_needs_something_to_boot():
    error, vmctl, _clock = fails(InvalidInput, [(STATUS, listing(OTHER))], memory='1G')
    assert 'web1 is not known to vmd' in error.msg and 'boot, disks, cdrom or template' in error.msg
    assert vmctl.calls == [STATUS]


def test_started_template_instance_needs_no_devices():
    result, _calls, _clock = run([
        (STATUS, listing()),
        (['vmctl', 'start', '-t', 'base', 'web1'], (0, '', STARTED_WEB1)),
        (STATUS, listing(WEB1_RUNNING)),
    ], template='base')
    assert result['changed'] is True


def test_started_missing_disk_is_named_before_vmctl_start():
    error, vmctl, _clock = fails(InvalidInput, [(STATUS, listing())], exists=lambda path: False, **CREATE)
    assert error.msg.startswith('disks[0].path: /vm/web1.qcow2 does not exist')
    assert vmctl.calls == [STATUS]


def test_started_start_failure_quotes_vmctl_and_hints():
    stderr = 'vmctl: could not open disk image(s)\n'
    error, _calls, _clock = fails(VmError, [
        (STATUS, listing()),
        (NEW_WEB1, (1, '', stderr)),
    ], **CREATE)
    assert error.msg.startswith('vmctl start web1 failed (rc 1): "vmctl: could not open disk image(s)" - ')
    assert 'in use by another VM' in error.msg
    assert error.context['cmd'] == NEW_WEB1 and error.context['stderr'] == stderr


def test_started_without_vmd():
    error, vmctl, _clock = fails(ToolError, [(STATUS, (1, '', NO_VMD))], **CREATE)
    assert '"vmctl: connect: /var/run/vmd.sock: No such file or directory"' in error.msg
    assert 'vmd is not running' in error.msg and 'rcctl enable vmd && rcctl start vmd' in error.msg
    assert vmctl.calls == [STATUS]


def test_started_socket_permission():
    error, _calls, _clock = fails(ToolError, [
        (STATUS, (1, '', 'vmctl: connect: /var/run/vmd.sock: Permission denied\n'))], **CREATE)
    assert 'socket owner' in error.msg and 'become' in error.msg


def test_started_waits_until_running():
    result, _calls, clock = run([
        (STATUS, listing()),
        (NEW_WEB1, (0, '', STARTED_WEB1)),
        (STATUS, listing('    1 12345     1    1.0G       0       -         root  running web1')),
        (STATUS, listing(WEB1_RUNNING)),
    ], **CREATE)
    assert result['vm']['tty'] == 'ttyp3' and clock.now == 0.5
    assert result['cmd'] == [STATUS, NEW_WEB1, STATUS]


def test_started_vm_that_ends_at_once_fails_fast():
    polls = [(STATUS, listing())] * 11
    error, _calls, clock = fails(VmError, [(STATUS, listing()), (NEW_WEB1, (0, '', STARTED_WEB1))] + polls, **CREATE)
    assert 'web1 ended right after vmctl started it (vmctl status: not listed)' in error.msg
    assert clock.now == _vmctl.START_GRACE


def test_started_without_wait_reads_the_list_once():
    result, _calls, clock = run([
        (STATUS, listing()),
        (NEW_WEB1, (0, '', STARTED_WEB1)),
        (STATUS, listing()),
    ], wait=False, **CREATE)
    # The list does not show it (yet): the console and addresses come from vmctl's message.
    assert result['vm'] is None and result['console'] == '/dev/ttyp3'
    assert result['guest_address'] == '100.64.1.3' and clock.now == 0


def test_started_waiting_vm_conf_vm_is_left_to_vmd():
    result, _calls, _clock = run([
        (STATUS, listing(DB1_WAITING)),
        (STATUS, listing(DB1_WAITING)),
        (STATUS, listing(DB1_RUNNING)),
    ], name='db1')
    assert result['changed'] is False and result['vm']['state'] == 'running'


def test_started_wait_timeout_names_the_last_state():
    polls = [(STATUS, listing(DB1_WAITING))] * 21
    error, _calls, _clock = fails(WaitTimeout, [(STATUS, listing(DB1_WAITING))] + polls, name='db1', wait_timeout=10)
    assert error.msg == 'db1 was not running within 10 s (last state: waiting)'


def test_started_while_stopping_starts_it_again_once_down():
    result, _calls, _clock = run([
        (STATUS, listing(WEB1_STOPPING)),
        (STATUS, listing(WEB1_STOPPING)),
        (STATUS, listing()),
        (NEW_WEB1, (0, '', STARTED_WEB1)),
        (STATUS, listing(WEB1_RUNNING)),
    ], **CREATE)
    assert result['changed'] is True


def test_started_check_mode_runs_only_status():
    result, vmctl, _clock = run([(STATUS, listing())], check_mode=True, exists=lambda path: False, **CREATE)
    assert result['changed'] is True and result['vm'] is None and vmctl.calls == [STATUS]
    assert result['diff']['after'] == {'state': 'running'}
    result, vmctl, _clock = run([(STATUS, listing(WEB1_RUNNING))], check_mode=True, **CREATE)
    assert result['changed'] is False and vmctl.calls == [STATUS]


# --- stopped / absent --------------------------------------------------------------------------------------

def test_stopped_running_vm():
    result, _calls, _clock = run([
        (STATUS, listing(WEB1_RUNNING)),
        (['vmctl', 'stop', '-w', 'web1'], (0, '', 'stopping vm web1: terminated vm 1\n')),
        (STATUS, listing()),
    ], state='stopped', local_interface=True)
    assert result['changed'] is True and result['vm'] is None
    assert result['console'] is None and result['host_address'] is None
    assert result['diff'] == {'before': {'state': 'running'}, 'after': {'state': 'not listed'}}


def test_stopped_force_without_wait():
    result, _calls, _clock = run([
        (STATUS, listing(DB1_RUNNING)),
        (['vmctl', 'stop', '-f', 'db1'], (0, '', 'stopping vm db1: requested to shutdown vm 2\n')),
        (STATUS, listing(DB1_STOPPED)),
    ], name='db1', state='stopped', force=True, wait=False)
    assert result['changed'] is True and result['vm']['state'] == 'stopped'


@pytest.mark.parametrize('rows', [(), (OTHER,), (DB1_STOPPED,)])
def test_stopped_is_unchanged_when_not_running(rows):
    result, vmctl, _clock = run([(STATUS, listing(*rows))], name='db1', state='stopped')
    assert result['changed'] is False and vmctl.calls == [STATUS]


def test_stopped_when_it_ended_meanwhile():
    result, _calls, _clock = run([
        (STATUS, listing(DB1_RUNNING)),
        (['vmctl', 'stop', '-w', 'db1'], (1, '', 'stopping vm db1: failed: Invalid argument\n')),
        (STATUS, listing(DB1_STOPPED)),
    ], name='db1', state='stopped')
    assert result['changed'] is False


def test_stopped_does_not_stop_twice():
    result, vmctl, _clock = run([
        (STATUS, listing(WEB1_STOPPING)),
        (STATUS, listing(WEB1_STOPPING)),
        (STATUS, listing()),
    ], state='stopped')
    assert result['changed'] is False and ['vmctl', 'stop', '-w', 'web1'] not in vmctl.calls


def test_stopped_not_permitted():
    error, _calls, _clock = fails(VmError, [
        (STATUS, listing(DB1_RUNNING)),
        (['vmctl', 'stop', '-w', 'db1'], (1, '', 'stopping vm db1: failed: Operation not permitted\n')),
    ], name='db1', state='stopped')
    assert '"stopping vm db1: failed: Operation not permitted"' in error.msg and 'owner' in error.msg


def test_stopped_check_mode():
    result, vmctl, _clock = run([(STATUS, listing(WEB1_RUNNING))], check_mode=True, state='stopped')
    assert result['changed'] is True and vmctl.calls == [STATUS]


def test_absent_removes_a_vmctl_started_vm():
    result, _calls, _clock = run([
        (STATUS, listing(WEB1_RUNNING)),
        (['vmctl', 'stop', '-f', '-w', 'web1'], (0, '', 'stopping vm web1: terminated vm 1\n')),
        (STATUS, listing()),
    ], state='absent', force=True)
    assert result['changed'] is True and result['vm'] is None


def test_absent_is_unchanged_when_not_listed():
    result, _calls, _clock = run([(STATUS, listing())], state='absent')
    assert result['changed'] is False and result['vm'] is None


def test_absent_vm_conf_vm_fails_before_anything():
    error, vmctl, _clock = fails(VmError, [(STATUS, listing(DB1_STOPPED))], name='db1', state='absent')
    assert 'db1 is defined in vm.conf' in error.msg and 'remove it from vm.conf' in error.msg
    assert vmctl.calls == [STATUS]
    fails(VmError, [(STATUS, listing(DB1_STOPPED))], check_mode=True, name='db1', state='absent')


def test_absent_running_vm_conf_vm_is_stopped_then_reported():
    error, _calls, _clock = fails(VmError, [
        (STATUS, listing(DB1_RUNNING)),
        (['vmctl', 'stop', '-w', 'db1'], (0, '', 'stopping vm db1: terminated vm 2\n')),
        (STATUS, listing(DB1_STOPPED)),
    ], name='db1', state='absent')
    assert 'db1 is defined in vm.conf' in error.msg and 'it was stopped but stays listed' in error.msg


# --- await_exit --------------------------------------------------------------------------------------------

def test_await_exit_waits_for_the_installer_reboot():
    result, vmctl, clock = run([(STATUS, listing(WEB1_RUNNING))] * 4 + [(STATUS, listing())],
                               state='stopped', await_exit=True)
    assert result['changed'] is False and result['vm'] is None
    assert clock.now == 1.5
    assert not any('stop' in argv for argv in vmctl.calls)
    assert result['cmd'] == [STATUS]


def test_await_exit_vm_conf_vm_shows_stopped():
    result, _calls, _clock = run([(STATUS, listing(DB1_RUNNING)), (STATUS, listing(DB1_STOPPED))],
                                 name='db1', state='stopped', await_exit=True)
    assert result['vm']['state'] == 'stopped'


def test_await_exit_timeout_says_how_long_and_the_state():
    error, _calls, _clock = fails(WaitTimeout, [(STATUS, listing(WEB1_RUNNING))] * 22,
                                  state='stopped', await_exit=True, wait_timeout=10)
    assert error.msg.startswith('web1 did not end by itself: waited 10 s, and vmctl status still shows it running')
    assert error.context['vm']['state'] == 'running'


def test_await_exit_check_mode_does_not_wait():
    result, _calls, clock = run([(STATUS, listing(WEB1_RUNNING))], check_mode=True, state='stopped', await_exit=True)
    assert result['changed'] is False and clock.now == 0


# --- restarted ---------------------------------------------------------------------------------------------

def test_restarted_vmctl_started_vm_is_created_again():
    result, _calls, _clock = run([
        (STATUS, listing(WEB1_RUNNING)),
        (['vmctl', 'stop', '-w', 'web1'], (0, '', 'stopping vm web1: terminated vm 1\n')),
        (STATUS, listing()),
        (NEW_WEB1, (0, '', STARTED_WEB1)),
        (STATUS, listing(WEB1_RUNNING)),
    ], state='restarted', **CREATE)
    assert result['changed'] is True
    assert result['cmd'] == [STATUS, ['vmctl', 'stop', '-w', 'web1'], STATUS, NEW_WEB1, STATUS]


def test_restarted_vm_conf_vm():
    result, _calls, _clock = run([
        (STATUS, listing(DB1_RUNNING)),
        (['vmctl', 'stop', '-w', 'db1'], (0, '', 'stopping vm db1: terminated vm 2\n')),
        (STATUS, listing(DB1_STOPPED)),
        (['vmctl', 'start', 'db1'], (0, '', STARTED_DB1)),
        (STATUS, listing(DB1_RUNNING)),
    ], name='db1', state='restarted')
    assert result['changed'] is True and result['diff']['before'] == {'state': 'running'}


def test_restarted_check_mode_checks_what_it_can():
    result, vmctl, _clock = run([(STATUS, listing(WEB1_RUNNING))], check_mode=True, state='restarted')
    assert result['changed'] is True and vmctl.calls == [STATUS]
    fails(InvalidInput, [(STATUS, listing())], check_mode=True, state='restarted')
    fails(InvalidInput, [(STATUS, listing(DB1_STOPPED))], check_mode=True, name='db1', state='restarted', **CREATE)


# --- options -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('overrides, message', [
    (dict(name='-web'), "name: '-web' is not a vmd VM name"),
    (dict(name='.web'), 'is not a vmd VM name'),
    (dict(name='_web'), 'is not a vmd VM name'),
    (dict(name='web 1'), 'is not a vmd VM name'),
    (dict(name='web/1'), 'is not a vmd VM name'),
    (dict(name='x' * 64), 'is 64 characters long; vmd takes at most 63'),
    (dict(name='42'), 'vmctl reads as a VM id'),
    (dict(name=''), 'name: a VM name is required'),
    (dict(memory='512K'), "memory: '512K' is too small"),
    (dict(memory='lots'), "memory: 'lots' is not a size"),
    (dict(disks=[{'path': '/d%d.raw' % i} for i in range(5)]), 'disks: vmd takes at most 4 disks, 5 were given'),
    (dict(disks=[{'path': ''}]), 'disks[0]: each disk needs a path'),
    (dict(interfaces=5), 'interfaces: must be 0 to 4, got 5'),
    (dict(interfaces=-1), 'interfaces: must be 0 to 4'),
    (dict(interfaces=1, local_interface=True, switch='uplink'), 'interfaces: 1 is fewer than'),
    (dict(boot_device='cdrom'), 'boot_device: cdrom needs the cdrom option'),
    (dict(boot_device='disk'), 'boot_device: disk needs the disks option'),
    (dict(boot_device='net', local_interface=True), 'boot_device: net needs boot'),
    (dict(boot_device='net', boot='/bsd.rd'), 'boot_device: net needs a network interface'),
    (dict(local_prefix='100.64.0.0/33'), "local_prefix: '100.64.0.0/33' is not an IPv4 prefix"),
    (dict(local_prefix='fd00::/8'), 'local_prefix'),
    (dict(wait_timeout=-1), 'wait_timeout: must not be negative'),
    (dict(await_exit=True), 'await_exit: only works with state=stopped, not state=started'),
    (dict(await_exit=True, state='stopped', force=True), 'cannot be combined with force'),
    (dict(template='-base'), "template: '-base' is not a vmd VM name"),
])
def test_bad_options_are_named(overrides, message):
    with pytest.raises(InvalidInput) as info:
        _vmctl.normalise(params(**overrides))
    assert message in info.value.msg


def test_options_are_normalised(tmp_path):
    qcow2 = tmp_path / 'disk.img'
    qcow2.write_bytes(b'QFI\xfb' + bytes(100))
    raw = tmp_path / 'other.img'
    raw.write_bytes(bytes(512))
    spec = _vmctl.normalise(params(
        memory='1.5G', disks=[{'path': str(qcow2)}, {'path': str(raw)}, {'path': '/vm/new.QCOW2'},
                              {'path': '/vm/new.img', 'format': 'qcow2'}],
        cdrom='/iso/x.iso', local_prefix='10.1.2.3/16'))
    # vmctl's order: the qcow2 magic, then the extension, then raw.
    assert spec.disks == ((str(qcow2), 'qcow2'), (str(raw), 'raw'), ('/vm/new.QCOW2', 'qcow2'),
                          ('/vm/new.img', 'qcow2'))
    assert spec.memory == 1536 * 1024 * 1024 and spec.local_prefix == '10.1.0.0/16'
    assert spec.creation_options() == ['memory', 'disks', 'cdrom']


# --- the module --------------------------------------------------------------------------------------------

class Exit(Exception):
    pass


def run_module(monkeypatch, args, script):
    vmctl = ScriptedVmctl(script)
    outcome: t.Dict[str, t.Any] = {}

    def exit_json(self, **kwargs):
        outcome.update(kwargs, failed=False)
        raise Exit()

    def fail_json(self, msg, **kwargs):
        outcome.update(kwargs, msg=msg, failed=True)
        raise Exit()

    monkeypatch.setattr(basic.AnsibleModule, 'exit_json', exit_json)
    monkeypatch.setattr(basic.AnsibleModule, 'fail_json', fail_json)
    monkeypatch.setattr(basic.AnsibleModule, 'run_command', lambda self, argv, check_rc=False: vmctl(argv, check_rc))
    with patch_module_args(args):
        with pytest.raises(Exit):
            vmctl_vm.main()
    vmctl.done()
    return json.loads(json.dumps(outcome)), vmctl


@pytest.fixture
def fake_binary(tmp_path):
    path = tmp_path / 'vmctl'
    path.write_text('#!/bin/sh\nexit 1\n')
    path.chmod(0o755)
    return str(path)


def test_module_starts_a_vm(monkeypatch, fake_binary, tmp_path):
    disk = tmp_path / 'web1.qcow2'
    disk.write_bytes(b'QFI\xfb' + bytes(100))
    status = [fake_binary, 'status']
    start = [fake_binary, 'start', '-m', '1024M', '-L', '-d', 'qcow2:%s' % disk, 'web1']
    result, _calls = run_module(monkeypatch, dict(
        name='web1', memory='1G', local_interface=True, disks=[{'path': str(disk)}], vmctl=fake_binary), [
        (status, listing()),
        (start, (0, '', STARTED_WEB1)),
        (status, listing(WEB1_RUNNING)),
    ])
    assert result['failed'] is False and result['changed'] is True
    assert result['console'] == '/dev/ttyp3'
    assert (result['host_address'], result['guest_address']) == ('100.64.1.2', '100.64.1.3')
    assert result['vm']['maxmem'] == 1024 ** 3 and result['cmd'] == [status, start, status]
    assert 'diff' not in result


def test_module_rejects_bad_input_before_vmctl_runs(monkeypatch, fake_binary):
    result, vmctl = run_module(monkeypatch, dict(name='web 1', vmctl=fake_binary), [])
    assert result['failed'] is True and "name: 'web 1' is not a vmd VM name" in result['msg']
    assert vmctl.calls == []


def test_module_missing_vmctl(monkeypatch, tmp_path):
    result, vmctl = run_module(monkeypatch, dict(name='web1', vmctl=str(tmp_path / 'nope')), [])
    assert result['failed'] is True and 'was not found on the build host' in result['msg']


def test_module_failure_carries_vmctl_output(monkeypatch, fake_binary):
    status = [fake_binary, 'status']
    result, _calls = run_module(monkeypatch, dict(name='web1', state='stopped', vmctl=fake_binary),
                                [(status, (1, '', NO_VMD))])
    assert result['failed'] is True
    assert result['msg'].startswith('vmctl status failed (rc 1): "%s"' % NO_VMD.strip())
    assert result['stderr'] == NO_VMD and result['cmd'] == status and result['rc'] == 1


def test_documentation_matches_the_argument_spec():
    import yaml
    doc = yaml.safe_load(vmctl_vm.DOCUMENTATION)
    assert set(doc['options']) == {
        'name', 'state', 'memory', 'disks', 'cdrom', 'boot', 'boot_device', 'local_interface', 'interfaces',
        'switch', 'template', 'local_prefix', 'wait', 'wait_timeout', 'force', 'await_exit', 'vmctl', 'doas',
        'lease', 'lease_ttl'}
    assert set(yaml.safe_load(vmctl_vm.RETURN)) == {
        'vm', 'console', 'host_address', 'guest_address', 'cmd', 'watchdog_pid'}


def test_doas_prefixes_every_vmctl_call(monkeypatch):
    """doas: true runs doas -n vmctl ..., which a 'permit nopass USER as root cmd vmctl' rule admits."""
    import json
    from ansible.module_utils import basic
    calls = []

    def fake_run(self, argv, check_rc=False, **kwargs):
        calls.append(list(argv))
        return 1, '   ID   PID VCPUS  MAXMEM  CURMEM     TTY        OWNER    STATE NAME\n', ''
    monkeypatch.setattr(basic.AnsibleModule, 'run_command', fake_run)
    monkeypatch.setattr(basic.AnsibleModule, 'get_bin_path', lambda self, name, *a, **k: '/usr/bin/' + name)
    monkeypatch.setattr(vmctl_vm, 'find_binary', lambda binary: '/usr/sbin/vmctl')
    monkeypatch.setattr(basic, '_ANSIBLE_ARGS', json.dumps({'ANSIBLE_MODULE_ARGS': {
        'name': 'web1', 'state': 'stopped', 'doas': True}}).encode())
    monkeypatch.setattr(basic, '_ANSIBLE_PROFILE', 'legacy', raising=False)
    with pytest.raises(SystemExit):
        vmctl_vm.main()
    assert calls and all(call[:3] == ['/usr/bin/doas', '-n', '/usr/sbin/vmctl'] for call in calls)


# -- the watchdog of a VM started with a build's lease --------------------------------------------------

def test_watchdog_forces_the_vm_off_once_the_lease_is_stale():
    clock = Clock()
    vmctl = ScriptedVmctl([(STATUS, listing(WEB1_RUNNING))] * 3 + [
        (['vmctl', 'stop', '-f', 'web1'], (0, '', 'stopping vm web1: forced to terminate vm 1\n'))])
    stale_after = clock.now + 1.5
    why = _vmctl.watch_vm(_vmctl.VmctlTool(vmctl, 'vmctl'), 'web1', '/w/lease', 6, clock=clock, sleep=clock.sleep,
                          stale=lambda path, ttl, now: now >= stale_after)
    assert why == 'lease expired'
    vmctl.done()


def test_watchdog_ends_with_the_vm():
    clock = Clock()
    clock.now = 100.0
    # vmctl start returns before vmd lists the VM, so a missing VM counts as gone only after START_GRACE.
    vmctl = ScriptedVmctl([(STATUS, listing(WEB1_RUNNING))] + [(STATUS, listing(OTHER))] * 5)
    why = _vmctl.watch_vm(_vmctl.VmctlTool(vmctl, 'vmctl'), 'web1', '/w/lease', 6, clock=clock, sleep=clock.sleep,
                          stale=lambda path, ttl, now: False)
    assert why == 'gone'
    assert clock.now == 100.0 + _vmctl.START_GRACE
    vmctl.done()


def test_a_vm_started_with_a_lease_gets_a_watchdog(tmp_path):
    lease = tmp_path / 'lease'
    lease.write_text('{"build_id": "b1"}')
    watched = []
    vmctl = ScriptedVmctl([(STATUS, listing(WEB1_RUNNING))])
    clock = Clock()
    machine = _vmctl.VmctlVm(vmctl, 'vmctl', clock=clock, sleep=clock.sleep,
                             watchdog=lambda spec: watched.append(spec) or 4321)
    result = machine.run(_vmctl.normalise(params(lease=str(lease), lease_ttl=6)))
    assert result['watchdog_pid'] == 4321
    assert [(spec.name, spec.lease, spec.lease_ttl) for spec in watched] == [('web1', str(lease), 6.0)]
    assert _vmctl.watchdog_pidfile(str(lease), 'web1') == str(tmp_path / 'vmctl-web1.watchdog.pid')


def test_a_stale_lease_starts_no_vm(tmp_path):
    import os
    import time
    lease = tmp_path / 'lease'
    lease.write_text('{"build_id": "b1"}')
    os.utime(str(lease), (time.time() - 100, time.time() - 100))
    fails(InvalidInput, [(STATUS, listing())], lease=str(lease), lease_ttl=6, **CREATE)
