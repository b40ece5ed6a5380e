# -*- coding: utf-8 -*-
"""Sizes a blueprint asks for that no build could honour (disklabel against the disk, vmm's memory limit)."""
from __future__ import annotations

import pytest

from ansible_collections.osimage.builder.plugins.module_utils import _blueprint
from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput

OPENBSD = {'name': 't', 'os': 'openbsd-7.8', 'source': {'mirror': 'http://127.0.0.1:9/pub/OpenBSD'}}


def openbsd(**changes):
    raw = dict(OPENBSD)
    raw.update(changes)
    return _blueprint.normalise(raw)


@pytest.mark.parametrize('layout, disk, message', [
    ([{'mount': '/', 'size': '6G-*'}, {'mount': '/home', 'size': '2G'}], '4G',
     'disklabel: the partitions need at least 8G, more than vm.disk_size (4G)'),
    ([{'mount': '/', 'size': '3.5G-8G'}, {'mount': 'swap', 'size': '1G'}], '4G',
     'disklabel: the partitions need at least 4.5G, more than vm.disk_size (4G)'),
    # a bare number is in sectors of 512 bytes, as disklabel(8) reads it
    ([{'mount': '/', 'size': '16777216'}], '4G', 'disklabel: the partitions need at least 8G'),
])
def test_a_disklabel_larger_than_the_disk_is_refused(layout, disk, message):
    with pytest.raises(InvalidInput) as error:
        openbsd(disklabel=layout, vm={'disk_size': disk})
    assert str(error.value).startswith(message)


def test_a_disklabel_that_fits_is_kept():
    bp = openbsd(disklabel=[{'mount': '/', 'size': '2G-*'}, {'mount': 'swap', 'size': '256M'}], vm={'disk_size': '4G'})
    assert [part['mount'] for part in bp['disklabel']] == ['/', 'swap']


def test_more_memory_than_vmm_gives_a_vm_is_refused():
    with pytest.raises(InvalidInput, match=r'^vm\.memory: 200G is more than a vmm VM can have \(128G\)$'):
        openbsd(vm={'memory': '200G'})
    assert openbsd(vm={'memory': '128G'})['vm']['memory'] == 128 * 1024 ** 3


@pytest.mark.parametrize('vm, message', [
    ({'memory': 0}, 'vm.memory: 0 is too small'),
    ({'cpus': 0}, 'vm.cpus: 0 is out of range 1..64'),
    ({'disk_size': '1G'}, 'vm.disk_size: 1073741824 bytes is too small; debian-12 needs at least 2G'),
])
def test_impossible_vm_sizes_name_the_field(vm, message):
    with pytest.raises(InvalidInput) as error:
        _blueprint.normalise({'name': 't', 'os': 'debian-12', 'vm': vm})
    assert str(error.value).startswith(message)
