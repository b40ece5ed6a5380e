# -*- coding: utf-8 -*-
from __future__ import annotations

from ansible_collections.osimage.builder.plugins.module_utils import _bootstrap


def request(**changes):
    base = dict(path='/w/disk.raw', size=4 * 1024 ** 3, suite='bookworm',
                sources=['deb http://m/debian bookworm main'], apt_options={'Acquire::Check-Valid-Until': 'false'},
                packages=['curl', 'sudo'], hostname='deb', kernel_append='quiet', seed='debian-12-1.0.0',
                cache_dir='/cache')
    base.update(changes)
    return _bootstrap.Request(**base)


def test_mmdebstrap_argv():
    argv = _bootstrap.mmdebstrap_argv(request(), '/cache/rootfs.tar.partial')
    assert argv[:4] == ['mmdebstrap', '--variant=apt', '--mode=root', '--format=tar']
    includes = argv[4].split('=', 1)[1].split(',')
    assert includes[0] == 'linux-image-amd64' and includes[-1] == 'curl'
    assert includes.count('sudo') == 1
    assert '--aptopt=Acquire::Check-Valid-Until "false"' in argv
    assert argv[-3:] == ['bookworm', '/cache/rootfs.tar.partial', 'deb http://m/debian bookworm main']


def test_identity_is_derived_from_the_seed():
    first, again, other = (_bootstrap.identity(s) for s in ('a-1', 'a-1', 'a-2'))
    assert first == again and first.root_uuid != other.root_uuid
    assert len(first.esp_id) == 8 and first.esp_uuid == first.esp_id[:4].upper() + '-' + first.esp_id[4:].upper()


def test_rootfs_key_ignores_what_does_not_change_the_tarball():
    assert _bootstrap.rootfs_key(request()) == _bootstrap.rootfs_key(request(hostname='x', seed='y', size=1))
    assert _bootstrap.rootfs_key(request()) != _bootstrap.rootfs_key(request(packages=['jq']))


def test_disk_layout_and_boot_config():
    ident = _bootstrap.identity('s')
    script = _bootstrap.sfdisk_script(ident)
    assert script.startswith('label: gpt\nlabel-id: %s\n' % ident.disk_guid)
    assert 'type=%s, name=bios' % _bootstrap.BIOS_BOOT in script
    assert 'size=63MiB, type=%s, name=esp' % _bootstrap.ESP in script
    cfg = _bootstrap.grub_cfg(ident, 'quiet')
    assert 'search --no-floppy --fs-uuid --set=root %s' % ident.root_uuid in cfg
    assert 'root=UUID=%s ro console=tty0 console=ttyS0,115200n8 quiet' % ident.root_uuid in cfg
    # The ESP's device gets five minutes, not systemd's 90 s: a guest emulated beside others (TCG) ended
    # in emergency mode waiting for it.
    assert _bootstrap.fstab(ident) == (
        'UUID=%s / ext4 errors=remount-ro 0 1\n'
        'UUID=%s /boot/efi vfat umask=0077,x-systemd.device-timeout=5min 0 1\n') % (ident.root_uuid, ident.esp_uuid)
    assert 'GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200n8 quiet"' in _bootstrap.default_grub('quiet')
