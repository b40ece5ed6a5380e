# -*- coding: utf-8 -*-
from __future__ import annotations

import pytest

from ansible_collections.osimage.builder.plugins.module_utils._errors import ToolError
from ansible_collections.osimage.builder.plugins.module_utils._qemu_img import QemuImgTool, parse_info

# Printed by `qemu-img info --output=json -U over.qcow2`, qemu-img 7.2.22 (Debian 12),
# for an overlay made with `qemu-img create -f qcow2 -b base.qcow2 -F qcow2 over.qcow2`.
QCOW2_OVERLAY = '''{
    "backing-filename-format": "qcow2",
    "virtual-size": 1073741824,
    "filename": "over.qcow2",
    "cluster-size": 65536,
    "format": "qcow2",
    "actual-size": 200704,
    "format-specific": {
        "type": "qcow2",
        "data": {
            "compat": "1.1",
            "compression-type": "zlib",
            "lazy-refcounts": false,
            "refcount-bits": 16,
            "corrupt": false,
            "extended-l2": false
        }
    },
    "full-backing-filename": "base.qcow2",
    "backing-filename": "base.qcow2",
    "dirty-flag": false
}
'''
# Same tool, `qemu-img info --output=json -U d.raw` for a 16 MiB sparse raw image.
RAW = '''{
    "virtual-size": 16777216,
    "filename": "d.raw",
    "format": "raw",
    "actual-size": 4096,
    "dirty-flag": false
}
'''


def test_parse_qcow2_overlay():
    info = parse_info(QCOW2_OVERLAY)
    assert info.format == 'qcow2'
    assert info.virtual_size == 1073741824
    assert info.actual_size == 200704
    assert info.backing_file == 'base.qcow2'
    assert info.backing_format == 'qcow2'


def test_parse_raw():
    info = parse_info(RAW)
    assert (info.format, info.virtual_size, info.actual_size, info.backing_file) == ('raw', 16777216, 4096, None)


def test_parse_backing_chain_takes_first():
    info = parse_info('[%s, %s]' % (QCOW2_OVERLAY, RAW))
    assert info.format == 'qcow2'


@pytest.mark.parametrize('text', ['not json', '{"format": "raw"}'])
def test_parse_garbage(text):
    with pytest.raises(ToolError):
        parse_info(text)


def test_info_resolves_relative_backing_file(fake_run):
    run = fake_run([(0, QCOW2_OVERLAY, '')])
    info = QemuImgTool(run).info('/images/over.qcow2')
    assert run.calls == [['qemu-img', 'info', '--output=json', '-U', '/images/over.qcow2']]
    assert info.backing_file == '/images/base.qcow2'


def test_argv_builders():
    tool = QemuImgTool(None, binary='/usr/bin/qemu-img')
    assert tool.create_argv('/d.raw', 'raw', 1024) == ['/usr/bin/qemu-img', 'create', '-q', '-f', 'raw', '/d.raw', '1024']
    assert tool.create_argv('/o.qcow2', 'qcow2', None, '/b.qcow2', 'qcow2') == [
        '/usr/bin/qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'compat=1.1,lazy_refcounts=on',
        '-b', '/b.qcow2', '-F', 'qcow2', '/o.qcow2']
    assert tool.resize_argv('/d.raw', 'raw', 2048) == ['/usr/bin/qemu-img', 'resize', '-q', '-f', 'raw', '/d.raw', '2048']
    assert tool.resize_argv('/d.raw', 'raw', 512, shrink=True) == [
        '/usr/bin/qemu-img', 'resize', '-q', '-f', 'raw', '--shrink', '/d.raw', '512']


def test_failure_quotes_stderr(fake_run):
    run = fake_run([(1, '', "qemu-img: Could not open 'x': No such file or directory\n")])
    with pytest.raises(ToolError) as caught:
        QemuImgTool(run).info('x')
    assert "Could not open 'x'" in caught.value.msg
    assert caught.value.context['rc'] == 1
    assert caught.value.context['cmd'][:2] == ['qemu-img', 'info']
