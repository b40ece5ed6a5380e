# -*- coding: utf-8 -*-
from __future__ import annotations

import pytest

from ansible_collections.osimage.builder.plugins.module_utils import _vmctl
from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput, ToolError, ToolMissing, VmError
from ansible_collections.osimage.builder.plugins.module_utils._vmctl import (
    VmctlTool, fmt_scaled, local_addresses, parse_scaled, parse_start_message, parse_status, parse_stop_message)

GIB = 1024 ** 3
MIB = 1024 ** 2

# vmctl status output, laid out with the printf formats of usr.sbin/vmctl/vmctl.c print_vm_info() (vmctl.c 1.94):
# header "%5s %5s %5s %7s %7s %7s %12s %8s %s", running rows "%5u %5u %5zd %7s %7s %7s %12s %8s %s", others
# with "-" for PID, CURMEM and TTY. Running VMs come first, then the rest in vmd's order.
HEADER = '   ID   PID VCPUS  MAXMEM  CURMEM     TTY        OWNER    STATE NAME'
RUNNING_WEB1 = '    1 12345     1    1.0G    246M   ttyp3         root  running web1'
STOPPING_BUILD = '    3 40127     1   16.0G    1.0G   ttyp0         1005 stopping build-7.8'
PAUSED_DB = '    5   822     1    512M   64.0M   ttyp1          joe   paused db.test'
STOPPED_DB1 = '    2     -     1    512M       -       -  joe:vmusers  stopped db1'
STOPPED_MIRROR = '    4     -     1    2.0G       -       -   root:staff  stopped mirror'
WAITING = '    6     -     1    1.0G       -       -         root  waiting later_1'
# OWNER is at most 15 characters (char user[16]); a wider one pushes the columns right instead of being cut.
WIDE_OWNER = '    7     -     1    100M       -       - builder:vmusers  stopped x'

STATUS = '\n'.join([HEADER, RUNNING_WEB1, STOPPING_BUILD, PAUSED_DB, STOPPED_DB1, STOPPED_MIRROR, WAITING,
                    WIDE_OWNER]) + '\n'


def test_samples_follow_vmctl_formats():
    # Guards the samples themselves: they must be what vmctl's printf formats make of the values.
    assert HEADER == '%5s %5s %5s %7s %7s %7s %12s %8s %s' % (
        'ID', 'PID', 'VCPUS', 'MAXMEM', 'CURMEM', 'TTY', 'OWNER', 'STATE', 'NAME')
    assert HEADER == _vmctl.STATUS_HEADER
    assert RUNNING_WEB1 == '%5u %5u %5d %7s %7s %7s %12s %8s %s' % (
        1, 12345, 1, '1.0G', '246M', 'ttyp3', 'root', 'running', 'web1')
    assert STOPPED_DB1 == '%5u %5s %5d %7s %7s %7s %12s %8s %s' % (
        2, '-', 1, '512M', '-', '-', 'joe:vmusers', 'stopped', 'db1')


def test_parse_status_rows():
    records = parse_status(STATUS)
    assert [r.name for r in records] == ['web1', 'build-7.8', 'db.test', 'db1', 'mirror', 'later_1', 'x']
    web1 = records[0]
    assert web1.to_dict() == {
        'id': 1, 'pid': 12345, 'vcpus': 1, 'maxmem': GIB, 'maxmem_text': '1.0G', 'curmem': 246 * MIB,
        'curmem_text': '246M', 'tty': 'ttyp3', 'owner': 'root', 'state': 'running', 'name': 'web1'}
    assert web1.up and web1.console == '/dev/ttyp3'
    db1 = records[3]
    assert db1.to_dict() == {
        'id': 2, 'pid': None, 'vcpus': 1, 'maxmem': 512 * MIB, 'maxmem_text': '512M', 'curmem': None,
        'curmem_text': None, 'tty': None, 'owner': 'joe:vmusers', 'state': 'stopped', 'name': 'db1'}
    assert not db1.up and db1.console is None
    assert records[1].state == 'stopping' and records[1].up and records[1].maxmem == 16 * GIB
    assert records[1].owner == '1005'
    assert records[2].state == 'paused' and records[2].curmem == 64 * MIB
    assert records[4].owner == 'root:staff' and records[4].maxmem == 2 * GIB
    assert records[5].state == 'waiting' and not records[5].up
    assert records[6].owner == 'builder:vmusers' and records[6].maxmem == 100 * MIB


def test_parse_status_header_only():
    # vmctl.c: the header is printed even when no VM matches or vmd knows none.
    assert parse_status(HEADER + '\n') == []
    assert _vmctl.find_vm(parse_status(STATUS), 'nosuch') is None
    assert _vmctl.find_vm(parse_status(STATUS), 'db1').id == 2


@pytest.mark.parametrize('text, quoted', [
    ('', 'printed nothing'),
    ('ID PID NAME\n', 'ID PID NAME'),
    (HEADER + '\n    1 12345     1    1.0G    246M   ttyp3         root  running\n', 'expected 9 columns'),
    (HEADER + '\n    x 12345     1    1.0G    246M   ttyp3         root  running web1\n', 'ID and VCPUS'),
    (HEADER + '\n    1 12345     1    1.0G    246M   ttyp3         root starting web1\n', "unknown state 'starting'"),
    (HEADER + '\n    1 12345     1    1.0Q    246M   ttyp3         root  running web1\n', '1.0Q'),
    (HEADER + '\n    1     ?     1    1.0G    246M   ttyp3         root  running web1\n', 'PID must be'),
    (HEADER + '\n    1 12345     1    1.0G    246M   ttyp3         root  running web 1\n', "invalid VM name 'web 1'"),
])
def test_parse_status_rejects_unexpected_lines(text, quoted):
    with pytest.raises(ToolError) as info:
        parse_status(text)
    assert quoted in info.value.msg


# lib/libutil/fmt_scaled.c: 1024-based units "BKMGTPE", one decimal below 100, half-up rounding of the
# remainder's share of 1024.
@pytest.mark.parametrize('number, text', [
    (0, '0B'), (5, '5B'), (1023, '1023B'), (1024, '1.0K'), (1536, '1.5K'),
    (64 * MIB, '64.0M'), (99 * MIB, '99.0M'), (100 * MIB, '100M'), (512 * MIB, '512M'), (1000 * MIB, '1000M'),
    (GIB, '1.0G'), (3 * GIB // 2, '1.5G'), (2 * GIB, '2.0G'), (4 * GIB, '4.0G'), (16 * GIB, '16.0G'),
    (300 * GIB, '300G'), (258441216, '247M'),
    (1024 ** 4 - 1, '1024G'),          # 1023.999G: the decimal rounds to 10, carrying into the number
    (int(9.96 * MIB), '10.0M'),        # carries: 9.96 -> 10.0
    (int(9.94 * MIB), '9.9M'),
])
def test_fmt_scaled(number, text):
    assert fmt_scaled(number) == text


@pytest.mark.parametrize('text, number', [
    ('0B', 0), ('512M', 512 * MIB), ('1.0G', GIB), ('1.5G', 3 * GIB // 2), ('16.0G', 16 * GIB), ('247M', 247 * MIB),
    ('100M', 100 * MIB), ('64.0M', 64 * MIB), ('1024', 1024), ('2k', 2048), ('1T', 1024 ** 4), ('1.25K', 1280),
])
def test_parse_scaled(text, number):
    assert parse_scaled(text) == number


@pytest.mark.parametrize('text', ['', 'G', '1.0Q', '-1M', '1 G', '1.2.3M'])
def test_parse_scaled_rejects(text):
    with pytest.raises(InvalidInput):
        parse_scaled(text)


def test_fmt_and_parse_scaled_agree_on_whole_units():
    for value in (MIB, 512 * MIB, GIB, 2 * GIB, 16 * GIB, 300 * GIB):
        assert parse_scaled(fmt_scaled(value)) == value


def test_local_addresses_follow_vmd_priv_c():
    # usr.sbin/vmd/priv.c vm_priv_addr(): (vmid << 8) | (idx + 1) * 2 into the prefix; the guest is one above.
    assert local_addresses(1) == ('100.64.1.2', '100.64.1.3')
    assert local_addresses(1, 1) == ('100.64.1.4', '100.64.1.5')
    assert local_addresses(2) == ('100.64.2.2', '100.64.2.3')
    assert local_addresses(255) == ('100.64.255.2', '100.64.255.3')
    assert local_addresses(256) == ('100.65.0.2', '100.65.0.3')
    assert local_addresses(3, 0, '10.77.0.0/16') == ('10.77.3.2', '10.77.3.3')
    assert local_addresses(1, 126) == ('100.64.1.254', '100.64.1.255')


def test_local_addresses_limits():
    with pytest.raises(InvalidInput, match='interface 127'):
        local_addresses(1, 0x7f)
    with pytest.raises(InvalidInput, match='outside 10.77.0.0/24'):
        local_addresses(1, 0, '10.77.0.0/24')
    # A /10 holds VMs up to id 16383.
    assert local_addresses(16383) == ('100.127.255.2', '100.127.255.3')
    with pytest.raises(InvalidInput, match='outside'):
        local_addresses(16384)
    with pytest.raises(InvalidInput, match='local_prefix'):
        local_addresses(1, 0, 'fd00::/8')


def test_create_argv_follows_vmctl_8():
    # vmctl.8: vmctl create [-b base | -i disk] [-s size] disk, with a raw:/qcow2: prefix on disk.
    tool = VmctlTool(None)
    assert tool.create_argv('/vm/disk.qcow2', 'qcow2', 20 * 1024 ** 3) == [
        'vmctl', 'create', '-s', '20480M', 'qcow2:/vm/disk.qcow2']
    assert tool.create_argv('/vm/disk.raw', 'raw', 1) == ['vmctl', 'create', '-s', '1M', 'raw:/vm/disk.raw']
    assert tool.create_argv('/vm/over.qcow2', 'qcow2', None, '/vm/base.qcow2') == [
        'vmctl', 'create', '-b', '/vm/base.qcow2', 'qcow2:/vm/over.qcow2']


def test_start_argv_puts_options_before_the_name():
    # OpenBSD getopt does not permute: "vmctl start web1 -m 1G" is a usage error.
    tool = VmctlTool(None, '/usr/sbin/vmctl')
    assert tool.start_argv('web1') == ['/usr/sbin/vmctl', 'start', 'web1']
    assert tool.start_argv(
        'web1', memory=GIB, disks=[('/vm/web1.qcow2', 'qcow2'), ('/vm/data.raw', 'raw')], cdrom='/iso/install78.iso',
        boot='/vm/bsd.rd', boot_device='net', local_interface=True, interfaces=1, switch='uplink',
        template='base') == [
        '/usr/sbin/vmctl', 'start', '-m', '1024M', '-L', '-i', '1', '-d', 'qcow2:/vm/web1.qcow2',
        '-d', 'raw:/vm/data.raw', '-r', '/iso/install78.iso', '-b', '/vm/bsd.rd', '-B', 'net', '-n', 'uplink',
        '-t', 'base', 'web1']
    # Memory is rounded up to whole MiB, as vmctl itself would round it.
    assert tool.start_argv('web1', memory=MIB + 1, disks=[('/d.raw', 'raw')])[2:4] == ['-m', '2M']
    assert tool.start_argv('web1', interfaces=0, disks=[('/d.raw', 'raw')])[2:4] == ['-i', '0']


def test_stop_and_status_argv():
    tool = VmctlTool(None)
    assert tool.stop_argv('web1') == ['vmctl', 'stop', 'web1']
    assert tool.stop_argv('web1', force=True, wait=True) == ['vmctl', 'stop', '-f', '-w', 'web1']
    assert tool.stop_argv('web1', wait=True) == ['vmctl', 'stop', '-w', 'web1']
    assert tool.status_argv() == ['vmctl', 'status']


def test_parse_start_message():
    # vmctl.c vm_start_complete(): warnx("started vm %d successfully, tty %s") - on stderr, with the full path.
    assert parse_start_message('vmctl: started vm 1 successfully, tty /dev/ttyp3\n') == (1, '/dev/ttyp3')
    assert parse_start_message('vmctl: starting without network interfaces\n'
                               'vmctl: started vm 12 successfully, tty /dev/ttypc\n') == (12, '/dev/ttypc')
    assert parse_start_message('vmctl: could not open disk image(s)\n') is None
    assert parse_start_message('') is None


@pytest.mark.parametrize('stderr, kind, vm_id', [
    ('stopping vm web1: requested to shutdown vm 1\n', 'requested', 1),
    ('stopping vm web1: terminated vm 1\n', 'terminated', 1),
    ('stopping vm: terminated vm 7\n', 'terminated', 7),
    ('stopping vm nosuch: vm not found\n', 'not_found', None),
    ('stopping vm db1: failed: Invalid argument\n', 'not_running', None),
    ('stopping vm db1: cannot stop vm that is not running\n', 'not_running', None),
    ('stopping vm web1: failed: Operation already in progress\n', 'in_progress', None),
    ('stopping vm web1: failed: Operation not permitted\n', 'not_permitted', None),
    ('stopping vm web1: interrupted call\n', 'failed', None),
])
def test_parse_stop_message(stderr, kind, vm_id):
    outcome = parse_stop_message(stderr)
    assert (outcome.kind, outcome.vm_id) == (kind, vm_id)
    assert parse_stop_message('vmctl: connect: /var/run/vmd.sock: No such file or directory\n') is None


@pytest.mark.parametrize('stderr, hint', [
    ('vmctl: connect: /var/run/vmd.sock: No such file or directory\n', 'rcctl enable vmd && rcctl start vmd'),
    ('vmctl: connect: /var/run/vmd.sock: Connection refused\n', 'rcctl restart vmd'),
    ('vmctl: connect: /var/run/vmd.sock: Permission denied\n', 'socket owner'),
    ('vmctl: start vm command failed: Operation already in progress\n', 'defined in vm.conf'),
    ('vmctl: start vm command failed: Operation not permitted\n', 'become: true'),
    ('vmctl: start vm command failed: Cannot allocate memory\n', 'lower memory'),
    ('vmctl: starting without network interfaces\nvmctl: could not open disk image(s)\n', 'in use by another VM'),
    ('vmctl: invalid disk path: /vm/x.qcow2: No such file or directory\n', 'does not exist (disks)'),
    ('vmctl: memory size must be at least 1MB\n', 'memory'),
    ('vmctl: vmm bios firmware file not found.\n', 'fw_update'),
    ('vmctl: invalid template\n', 'allows instances'),
    ('stopping vm web1: failed: Operation not permitted\n', 'owner'),
])
def test_failure_message_quotes_vmctl_and_hints(stderr, hint):
    msg = _vmctl.failure_message('vmctl start web1', 1, stderr)
    last = stderr.strip().splitlines()[-1]
    assert msg.startswith('vmctl start web1 failed (rc 1): "%s" - ' % last)
    assert hint in msg


def test_failure_message_without_a_known_cause():
    assert _vmctl.failure_message('vmctl start web1', 1, 'vmctl: unexpected response received from vmd\n') == (
        'vmctl start web1 failed (rc 1): "vmctl: unexpected response received from vmd"')
    assert _vmctl.failure_message('vmctl stop web1', 1, '') == 'vmctl stop web1 failed (rc 1): no output'


def test_status_tool(fake_run):
    run = fake_run([(0, STATUS, '')])
    assert len(VmctlTool(run).status()) == 7
    # No VM at all: the header and exit 1 (vmctl.c print_vm_info() returns ENOENT).
    assert VmctlTool(fake_run([(1, HEADER + '\n', '')])).status() == []
    with pytest.raises(ToolError) as info:
        VmctlTool(fake_run([(1, '', 'vmctl: connect: /var/run/vmd.sock: No such file or directory\n')])).status()
    assert 'vmd is not running' in info.value.msg and info.value.context['cmd'] == ['vmctl', 'status']
    with pytest.raises(ToolError, match='cannot read') as info:
        VmctlTool(fake_run([(0, 'garbage\n', '')])).status()
    assert info.value.context['stdout'] == 'garbage\n'


def test_stop_tool(fake_run):
    tool = VmctlTool(fake_run([(0, '', 'stopping vm web1: terminated vm 1\n'),
                               (1, '', 'stopping vm web1: vm not found\n'),
                               (1, '', 'stopping vm web1: failed: Operation not permitted\n')]))
    assert tool.stop('web1', wait=True).kind == 'terminated'
    assert tool.stop('web1').kind == 'not_found'
    with pytest.raises(VmError, match='Operation not permitted'):
        tool.stop('web1')


def test_find_binary():
    assert _vmctl.find_binary('vmctl', which=lambda name: '/usr/sbin/vmctl') == 'vmctl'
    assert _vmctl.find_binary('vmctl', which=lambda name: None, exists=lambda path: path == '/usr/sbin/vmctl') == (
        '/usr/sbin/vmctl')
    assert _vmctl.find_binary('/opt/fake/vmctl', exists=lambda path: True) == '/opt/fake/vmctl'
    with pytest.raises(ToolMissing, match='vmctl: /opt/none/vmctl was not found'):
        _vmctl.find_binary('/opt/none/vmctl', exists=lambda path: False)
