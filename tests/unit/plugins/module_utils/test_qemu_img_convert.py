# -*- coding: utf-8 -*-
from __future__ import annotations

import pytest

from ansible_collections.osimage.builder.plugins.module_utils._errors import ToolError
from ansible_collections.osimage.builder.plugins.module_utils._qemu_img import QemuImgTool


def test_convert_argv_qcow2_compressed():
    tool = QemuImgTool(None, binary='/usr/bin/qemu-img')
    assert tool.convert_argv('/w/disk.raw', '/o/.x.qcow2.partial-1', 'qcow2', 'raw', options='compat=1.1',
                             compress=True) == [
        '/usr/bin/qemu-img', 'convert', '-q', '-f', 'raw', '-O', 'qcow2', '-o', 'compat=1.1', '-c',
        '/w/disk.raw', '/o/.x.qcow2.partial-1']


def test_convert_argv_raw_plain():
    tool = QemuImgTool(None)
    assert tool.convert_argv('/w/disk.qcow2', '/o/x.raw', 'raw', 'qcow2') == [
        'qemu-img', 'convert', '-q', '-f', 'qcow2', '-O', 'raw', '/w/disk.qcow2', '/o/x.raw']


def test_convert_argv_lets_qemu_img_probe_only_when_no_format_is_known():
    assert QemuImgTool(None).convert_argv('/w/d', '/o/x', 'raw') == ['qemu-img', 'convert', '-q', '-O', 'raw',
                                                                     '/w/d', '/o/x']


def test_convert_runs_argv_and_quotes_stderr(fake_run):
    run = fake_run([(0, '', ''), (1, '', 'qemu-img: Could not open \'/w/d\': Failed to get shared "write" lock\n'
                                         'Is another process using the image [/w/d]?\n')])
    tool = QemuImgTool(run)
    tool.convert('/w/d', '/o/x', 'qcow2', 'raw', options='compat=1.1')
    assert run.calls == [['qemu-img', 'convert', '-q', '-f', 'raw', '-O', 'qcow2', '-o', 'compat=1.1', '/w/d', '/o/x']]
    with pytest.raises(ToolError) as caught:
        tool.convert('/w/d', '/o/x', 'qcow2', 'raw')
    assert caught.value.msg.startswith('qemu-img convert /w/d to qcow2 failed (rc 1): ')
    assert 'Failed to get shared "write" lock' in caught.value.msg
    assert caught.value.context['cmd'] == ['qemu-img', 'convert', '-q', '-f', 'raw', '-O', 'qcow2', '/w/d', '/o/x']
