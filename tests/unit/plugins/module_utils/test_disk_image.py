# -*- coding: utf-8 -*-
from __future__ import annotations

import json
import os
import struct

import pytest

from ansible_collections.osimage.builder.plugins.module_utils._disk_image import (
    DiskImage, DiskRequest, choose_backend)
from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput


def info_json(fmt, size, backing=None):
    data = {'format': fmt, 'virtual-size': size, 'actual-size': 4096}
    if backing:
        data['full-backing-filename'] = backing
        data['backing-filename-format'] = 'qcow2'
    return json.dumps(data)


def creating(run, path):
    """Like run, but makes the file when qemu-img create is called, as the real tool does."""
    def call(argv, check_rc=False):
        if argv[1] == 'create':
            open(path, 'wb').close()
        return run(argv, check_rc)
    return call


@pytest.fixture(autouse=True)
def qemu_img_on_path(monkeypatch):
    monkeypatch.setattr('shutil.which', lambda name: '/usr/bin/' + name)


def test_create_when_missing(tmp_path, fake_run):
    path = str(tmp_path / 'disk.qcow2')
    run = fake_run([(0, '', ''), (0, info_json('qcow2', 20 * 1024 ** 3), '')])
    result = DiskImage(creating(run, path), 'qemu-img').ensure(DiskRequest(path=path, format='qcow2', size='20G'))
    assert run.calls == [
        ['qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'compat=1.1,lazy_refcounts=on', path, str(20 * 1024 ** 3)],
        ['qemu-img', 'info', '--output=json', '-U', path],
    ]
    assert result['changed'] is True
    assert result['virtual_size'] == 20 * 1024 ** 3
    assert result['diff'] == {'before': {'state': 'absent'},
                              'after': {'state': 'present', 'format': 'qcow2',
                                        'virtual_size': 20 * 1024 ** 3, 'backing_file': None}}


def test_check_mode_creates_nothing(tmp_path, fake_run):
    path = str(tmp_path / 'disk.raw')
    run = fake_run([])
    result = DiskImage(run, 'qemu-img', check_mode=True).ensure(DiskRequest(path=path, size='1G'))
    assert result['changed'] is True and run.calls == [] and not os.path.exists(path)


def test_same_size_is_unchanged(tmp_path, fake_run):
    path = tmp_path / 'disk.raw'
    path.write_bytes(b'')
    run = fake_run([(0, info_json('raw', 1024 ** 3), '')])
    result = DiskImage(run, 'qemu-img').ensure(DiskRequest(path=str(path), format='raw', size='1G'))
    assert result['changed'] is False
    assert len(run.calls) == 1


def test_size_rounded_like_qemu_img(tmp_path, fake_run):
    # qemu-img rounds 1000 bytes up to 1024; asking again for 1000 must not look like a shrink.
    path = tmp_path / 'disk.raw'
    path.write_bytes(b'')
    run = fake_run([(0, info_json('raw', 1024), '')])
    assert DiskImage(run, 'qemu-img').ensure(DiskRequest(path=str(path), size='1000'))['changed'] is False


def test_grow(tmp_path, fake_run):
    path = tmp_path / 'disk.qcow2'
    path.write_bytes(b'')
    run = fake_run([(0, info_json('qcow2', 1024 ** 3), ''), (0, '', ''), (0, info_json('qcow2', 2 * 1024 ** 3), '')])
    result = DiskImage(run, 'qemu-img').ensure(DiskRequest(path=str(path), size='2G'))
    assert run.calls[1] == ['qemu-img', 'resize', '-q', '-f', 'qcow2', str(path), str(2 * 1024 ** 3)]
    assert result['changed'] is True
    assert result['diff']['before']['virtual_size'] == 1024 ** 3
    assert result['diff']['after']['virtual_size'] == 2 * 1024 ** 3


def test_shrink_refused(tmp_path, fake_run):
    path = tmp_path / 'disk.qcow2'
    path.write_bytes(b'')
    run = fake_run([(0, info_json('qcow2', 2 * 1024 ** 3), '')])
    with pytest.raises(InvalidInput, match=r'size: .* is 2 GiB .*shrinking it to 1 GiB .*allow_shrink=true'):
        DiskImage(run, 'qemu-img').ensure(DiskRequest(path=str(path), size='1G'))
    assert len(run.calls) == 1


def test_shrink_allowed(tmp_path, fake_run):
    path = tmp_path / 'disk.qcow2'
    path.write_bytes(b'')
    run = fake_run([(0, info_json('qcow2', 2 * 1024 ** 3), ''), (0, '', ''), (0, info_json('qcow2', 1024 ** 3), '')])
    DiskImage(run, 'qemu-img').ensure(DiskRequest(path=str(path), size='1G', allow_shrink=True))
    assert '--shrink' in run.calls[1]


def test_format_mismatch_names_both(tmp_path, fake_run):
    path = tmp_path / 'disk.img'
    path.write_bytes(b'')
    run = fake_run([(0, info_json('raw', 1024 ** 3), '')])
    with pytest.raises(InvalidInput) as caught:
        DiskImage(run, 'qemu-img').ensure(DiskRequest(path=str(path), format='qcow2', size='1G'))
    assert 'is a raw image but format=qcow2 was requested' in caught.value.msg


def test_create_needs_size(tmp_path, fake_run):
    with pytest.raises(InvalidInput, match='size: creating .* needs a size'):
        DiskImage(fake_run([]), 'qemu-img').ensure(DiskRequest(path=str(tmp_path / 'x.raw')))


def test_missing_directory(tmp_path, fake_run):
    with pytest.raises(InvalidInput, match='path: the directory .* does not exist'):
        DiskImage(fake_run([]), 'qemu-img').ensure(DiskRequest(path=str(tmp_path / 'no' / 'x.raw'), size='1G'))


def test_overlay_takes_backing_size(tmp_path, fake_run):
    base = tmp_path / 'base.qcow2'
    base.write_bytes(b'')
    path = str(tmp_path / 'over.qcow2')
    run = fake_run([(0, info_json('qcow2', 1024 ** 3), ''), (0, '', ''),
                    (0, info_json('qcow2', 1024 ** 3, str(base)), '')])
    result = DiskImage(creating(run, path), 'qemu-img').ensure(DiskRequest(path=path, backing_file=str(base)))
    assert run.calls[1] == ['qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'compat=1.1,lazy_refcounts=on',
                            '-b', str(base), '-F', 'qcow2', path]
    assert result['backing_file'] == str(base)


def test_absent(tmp_path, fake_run):
    path = tmp_path / 'disk.raw'
    path.write_bytes(b'x')
    run = fake_run([(0, info_json('raw', 1), '')])
    assert DiskImage(run, 'qemu-img').ensure(DiskRequest(path=str(path), state='absent'))['changed'] is True
    assert not path.exists()
    assert DiskImage(fake_run([]), 'qemu-img').ensure(DiskRequest(path=str(path), state='absent'))['changed'] is False


def _qcow2_header(size, backing=b''):
    offset = 72 if backing else 0
    header = struct.pack('>4sIQIIQ', b'QFI\xfb', 3, offset, len(backing), 16, size)
    return header.ljust(72, b'\0') + backing


def test_vmctl_backend_reads_headers(tmp_path, fake_run):
    path = tmp_path / 'disk.qcow2'
    path.write_bytes(_qcow2_header(10 * 1024 ** 3, b'base.qcow2'))
    info = DiskImage(fake_run([]), 'vmctl').inspect(str(path))
    assert (info.format, info.virtual_size, info.backing_file) == ('qcow2', 10 * 1024 ** 3, str(tmp_path / 'base.qcow2'))


def test_vmctl_backend_creates_with_vmctl(tmp_path, fake_run, monkeypatch):
    path = tmp_path / 'disk.raw'
    run = fake_run([(0, "vmctl: raw imagefile created\n", '')])

    def create_file(argv, check_rc=False):
        path.write_bytes(b'')
        os.truncate(str(path), 1024 ** 3)
        return run(argv, check_rc)
    result = DiskImage(create_file, 'vmctl').ensure(DiskRequest(path=str(path), format='raw', size='1000M'))
    assert run.calls == [['vmctl', 'create', '-s', '1000M', 'raw:%s' % path]]
    assert result['format'] == 'raw'


def test_vmctl_backend_grows_raw_and_refuses_qcow2(tmp_path, fake_run):
    raw = tmp_path / 'disk.raw'
    raw.write_bytes(b'\0' * 1024)
    DiskImage(fake_run([]), 'vmctl').ensure(DiskRequest(path=str(raw), size='2M'))
    assert raw.stat().st_size == 2 * 1024 ** 2
    qcow = tmp_path / 'disk.qcow2'
    qcow.write_bytes(_qcow2_header(1024 ** 2))
    with pytest.raises(InvalidInput, match='vmctl cannot resize qcow2'):
        DiskImage(fake_run([]), 'vmctl').ensure(DiskRequest(path=str(qcow), size='2M'))


@pytest.mark.parametrize('system, found, expected', [
    ('Linux', {'qemu-img'}, 'qemu-img'),
    ('Darwin', {'qemu-img'}, 'qemu-img'),
    ('OpenBSD', {'vmctl'}, 'vmctl'),
    ('OpenBSD', {'vmctl', 'qemu-img'}, 'vmctl'),
    ('OpenBSD', {'qemu-img'}, 'qemu-img'),
])
def test_choose_backend(system, found, expected):
    assert choose_backend('auto', lambda name: name if name in found else None, system) == expected
    assert choose_backend('vmctl', lambda name: None, system) == 'vmctl'
