# -*- coding: utf-8 -*-
from __future__ import annotations

import pytest

from ansible_collections.osimage.builder.plugins.module_utils import _qemu
from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput


def params(**overrides):
    base = dict(name='deb12', work_dir='/w', binary='qemu-system-x86_64', accel='auto', cpus=2, memory='2G',
                machine='q35', cpu_model=None, firmware='bios', firmware_code=None, firmware_vars=None,
                disks=[{'path': '/w/disk.qcow2', 'format': 'qcow2', 'interface': 'virtio', 'readonly': False,
                        'cache': 'writeback'}],
                cdrom=None, boot_device=None, kernel=None, initrd=None, append=None, smbios=None,
                network='user', nic_model='virtio-net-pci', ssh_forward=True, ssh_host_port=0,
                ssh_bind='127.0.0.1', console='socket', on_reboot='reboot', extra_args=[])
    base.update(overrides)
    return base


def argv(accel='tcg', port=2222, uefi=None, **overrides):
    spec = _qemu.normalise(params(**overrides))
    return _qemu.build_argv(spec, 'deb12', _qemu.vm_paths('/w', 'deb12'), accel, port, uefi)


def test_default_argv():
    assert argv() == [
        'qemu-system-x86_64', '-name', 'guest=deb12', '-nodefaults', '-display', 'none', '-vga', 'std',
        '-machine', 'q35', '-accel', 'tcg,thread=multi', '-cpu', 'max', '-smp', '2', '-m', '2048M',
        '-qmp', 'unix:/w/deb12.qmp,server=on,wait=off',
        '-chardev', 'socket,id=console0,path=/w/deb12.console,server=on,wait=off,logfile=/w/deb12.serial.log',
        '-serial', 'chardev:console0',
        '-drive', 'file=/w/disk.qcow2,format=qcow2,discard=unmap,detect-zeroes=unmap,cache=writeback,if=virtio',
        '-netdev', 'user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22', '-device', 'virtio-net-pci,netdev=net0',
    ]


def test_kvm_uses_host_cpu():
    args = argv(accel='kvm')
    assert args[args.index('-accel') + 1] == 'kvm'
    assert args[args.index('-cpu') + 1] == 'host'


def test_installer_argv():
    args = argv(cdrom='/isos/netinst.iso', boot_device='cdrom', on_reboot='poweroff', console='pty',
                kernel='/k/vmlinuz', initrd='/k/initrd', append='console=ttyS0 auto=true', network='none',
                ssh_forward=False, extra_args=['-rtc', 'base=localtime'])
    assert '-no-reboot' in args
    assert args[args.index('-boot') + 1] == 'order=d'
    assert 'file=/isos/netinst.iso,media=cdrom,readonly=on,if=ide' in args
    assert args[args.index('-chardev') + 1] == 'pty,id=console0,logfile=/w/deb12.serial.log'
    assert args[args.index('-append') + 1] == 'console=ttyS0 auto=true'
    assert '-netdev' not in args
    assert args[-2:] == ['-rtc', 'base=localtime']


def test_commas_are_escaped():
    args = argv(disks=[{'path': '/w/a,b.raw', 'format': 'raw', 'interface': 'virtio', 'readonly': True,
                        'cache': 'none'}],
                smbios=[{'type': 1, 'serial': 'ds=nocloud-net;s=http://10.0.2.2:8000/,x'}])
    assert 'file=/w/a,,b.raw,format=raw,discard=unmap,detect-zeroes=unmap,cache=none,readonly=on,if=virtio' in args
    assert 'type=1,serial=ds=nocloud-net;s=http://10.0.2.2:8000/,,x' in args


def test_scsi_and_nvme_disks():
    disks = [{'path': '/w/a.raw', 'format': 'raw', 'interface': 'scsi', 'readonly': False, 'cache': 'writeback'},
             {'path': '/w/b.raw', 'format': 'raw', 'interface': 'scsi', 'readonly': False, 'cache': 'writeback'},
             {'path': '/w/c.raw', 'format': 'raw', 'interface': 'nvme', 'readonly': False, 'cache': 'writeback'}]
    args = argv(disks=disks)
    assert args.count('virtio-scsi-pci,id=scsi0') == 1
    assert 'scsi-hd,drive=disk1,bus=scsi0.0' in args
    assert 'nvme,drive=disk2,serial=osimage2' in args


def test_uefi_argv():
    args = argv(firmware='uefi', uefi=('/usr/share/OVMF/OVMF_CODE_4M.fd', '/usr/share/OVMF/OVMF_VARS_4M.fd'))
    assert 'if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd' in args
    assert 'if=pflash,format=raw,unit=1,file=/w/deb12.OVMF_VARS.fd' in args


def test_find_uefi():
    present = {'/usr/share/OVMF/OVMF_CODE.fd', '/usr/share/OVMF/OVMF_VARS.fd'}
    spec = _qemu.normalise(params(firmware='uefi'))
    expected = ('/usr/share/OVMF/OVMF_CODE.fd', '/usr/share/OVMF/OVMF_VARS.fd')
    assert _qemu.find_uefi(spec, present.__contains__) == expected
    with pytest.raises(InvalidInput, match='firmware: uefi needs OVMF firmware .* install it \\(Debian: ovmf\\)'):
        _qemu.find_uefi(spec, lambda path: False)


@pytest.mark.parametrize('overrides, message', [
    ({'name': '1st'}, "name: '1st' must start with a letter"),
    ({'name': 'a b'}, "name: 'a b' must start with a letter"),
    ({'work_dir': '/' + 'x' * 120}, 'work_dir: /xxx'),
    ({'memory': '8X'}, "memory: '8X' has an unknown unit"),
    ({'memory': '1M'}, 'memory: '),
    ({'cpus': 0}, 'cpus: must be at least 1'),
    ({'append': 'quiet'}, 'append: a kernel command line needs kernel'),
    ({'boot_device': 'cdrom'}, 'boot_device: cdrom needs the cdrom option'),
    ({'network': 'none'}, 'ssh_forward: forwarding a host port needs network=user'),
    ({'smbios': [{'serial': 'x'}]}, 'smbios[0]: each entry needs a type'),
])
def test_normalise_errors(overrides, message):
    with pytest.raises(InvalidInput) as caught:
        _qemu.normalise(params(**overrides))
    assert message in caught.value.msg


def test_disk_format_read_from_header(tmp_path):
    disk = tmp_path / 'disk.img'
    disk.write_bytes(b'QFI\xfb' + b'\0' * 100)
    spec = _qemu.normalise(params(disks=[{'path': str(disk), 'format': None, 'interface': 'virtio',
                                          'readonly': False, 'cache': 'writeback'}]))
    assert spec['disks'][0]['format'] == 'qcow2'


def test_spec_differences():
    old = _qemu.normalise(params())
    new = _qemu.normalise(params(memory='4G', cpus=4))
    assert _qemu.spec_differences(old, new) == ['cpus', 'memory']
    assert _qemu.spec_differences(old, _qemu.normalise(params(memory='2048M'))) == []


def test_exit_record_written_just_after_the_pid_is_gone(tmp_path):
    """The supervisor reaps qemu first and writes its exit status a moment later."""
    import json
    import threading
    spec = _qemu.normalise(params(work_dir=str(tmp_path)))
    vm = _qemu.QemuVm('deb12', str(tmp_path), spec)
    timer = threading.Timer(0.3, lambda: (tmp_path / 'deb12.exit').write_text(json.dumps({'returncode': 0})))
    timer.start()
    try:
        assert vm._check_exit([])['returncode'] == 0
    finally:
        timer.cancel()


def test_killed_qemu_is_an_error(tmp_path):
    import json
    spec = _qemu.normalise(params(work_dir=str(tmp_path)))
    vm = _qemu.QemuVm('deb12', str(tmp_path), spec)
    (tmp_path / 'deb12.exit').write_text(json.dumps({'returncode': -9}))
    with pytest.raises(_qemu.VmError, match='qemu was killed by signal 9 while the guest was running'):
        vm._check_exit(['last line'])


def test_qemu_ended_by_an_expired_lease_says_so(tmp_path):
    import json
    spec = _qemu.normalise(params(work_dir=str(tmp_path)))
    vm = _qemu.QemuVm('deb12', str(tmp_path), spec)
    (tmp_path / 'deb12.exit').write_text(json.dumps({'returncode': -15, 'reason': 'lease expired',
                                                     'lease': '/w/b1/lease'}))
    with pytest.raises(_qemu.VmError, match=r'qemu was ended because its build is gone \(the lease /w/b1/lease '
                                            r'expired\) while the guest was running'):
        vm._check_exit([])


def test_a_stale_lease_starts_no_qemu(tmp_path):
    import os
    import time
    lease = tmp_path / 'lease'
    lease.write_text('{"build_id": "b1"}')
    spec = _qemu.normalise(params(work_dir=str(tmp_path)))
    live = _qemu.QemuVm('deb12', str(tmp_path), spec, lease=str(lease), lease_ttl=6)
    assert live.check_lease() == 'b1'
    os.utime(str(lease), (time.time() - 60, time.time() - 60))
    with pytest.raises(_qemu.InvalidInput, match='lease: .*/lease is stale'):
        live.check_lease()
    assert _qemu.QemuVm('deb12', str(tmp_path), spec).check_lease() is None


def test_a_work_dir_too_long_for_the_sockets_is_refused_only_when_a_vm_would_start():
    deep = '/' + 'd' * 100
    with pytest.raises(InvalidInput) as caught:
        _qemu.normalise(params(work_dir=deep))
    assert caught.value.msg == ('work_dir: %s is too long for unix socket paths (%s/deb12.console is 115 bytes, '
                                'the limit is 103); use a shorter work_dir or name' % (deep, deep))
    # Stopping or removing: nothing can have been started there, so nothing to refuse.
    assert _qemu.normalise(params(work_dir=deep), sockets=False)['cpus'] == 2
