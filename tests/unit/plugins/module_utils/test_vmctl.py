# -*- coding: utf-8 -*-
from __future__ import annotations

from ansible_collections.osimage.builder.plugins.module_utils._vmctl import VmctlTool


def test_create_argv_follows_vmctl_8():
    # vmctl.8: vmctl create [-b base | -i disk] [-s size] disk, with a raw:/qcow2: prefix on disk.
    tool = VmctlTool(None)
    assert tool.create_argv('/vm/disk.qcow2', 'qcow2', 20 * 1024 ** 3) == [
        'vmctl', 'create', '-s', '20480M', 'qcow2:/vm/disk.qcow2']
    assert tool.create_argv('/vm/disk.raw', 'raw', 1) == ['vmctl', 'create', '-s', '1M', 'raw:/vm/disk.raw']
    assert tool.create_argv('/vm/over.qcow2', 'qcow2', None, '/vm/base.qcow2') == [
        'vmctl', 'create', '-b', '/vm/base.qcow2', 'qcow2:/vm/over.qcow2']
