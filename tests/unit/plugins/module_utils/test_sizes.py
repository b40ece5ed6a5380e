# -*- coding: utf-8 -*-
from __future__ import annotations

import pytest

from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput
from ansible_collections.osimage.builder.plugins.module_utils._sizes import human_size, parse_size, round_up


@pytest.mark.parametrize('text, expected', [
    ('20G', 20 * 1024 ** 3),
    ('20g', 20 * 1024 ** 3),
    ('512M', 512 * 1024 ** 2),
    ('1.5GiB', 3 * 1024 ** 3 // 2),
    ('10GB', 10 * 1000 ** 3),
    ('100kB', 100000),
    ('4096', 4096),
    (4096, 4096),
    ('2 T', 2 * 1024 ** 4),
    ('1K', 1024),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize('text, message', [
    ('10XB', "unknown unit 'XB'"),
    ('ten', 'is not a size'),
    ('-5G', 'is not a size'),
    ('', 'is not a size'),
    ('0', 'too small'),
])
def test_parse_size_rejects(text, message):
    with pytest.raises(InvalidInput) as caught:
        parse_size(text, 'vm.disk_size')
    assert caught.value.msg.startswith('vm.disk_size: ')
    assert message in caught.value.msg


def test_parse_size_rejects_boolean():
    with pytest.raises(InvalidInput, match='boolean'):
        parse_size(True)


def test_round_up_and_human():
    assert round_up(1000, 512) == 1024
    assert round_up(1024, 512) == 1024
    assert human_size(20 * 1024 ** 3) == '20 GiB'
    assert human_size(1536) == '1.5 KiB'
