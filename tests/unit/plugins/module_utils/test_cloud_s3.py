# -*- coding: utf-8 -*-
from __future__ import annotations

import hashlib
import typing as t

import pytest

from ansible_collections.osimage.builder.plugins.module_utils import _cloud_s3
from ansible_collections.osimage.builder.plugins.module_utils._cloud import Request
from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput

MIB = 1024 * 1024


def test_part_plan_covers_the_file_with_a_short_last_part() -> None:
    plan = _cloud_s3.part_plan(12 * MIB, 5 * MIB)
    assert plan == [(1, 0, 5 * MIB), (2, 5 * MIB, 5 * MIB), (3, 10 * MIB, 2 * MIB)]


def test_part_plan_grows_the_part_size_beyond_ten_thousand_parts() -> None:
    size = 100 * 1024 * MIB  # 100 GiB in 8 MiB parts would be 12800 parts
    plan = _cloud_s3.part_plan(size, 8 * MIB)
    assert len(plan) <= _cloud_s3.MAX_PARTS
    assert plan[0][2] % MIB == 0 and plan[0][2] > 8 * MIB
    assert sum(length for _n, _o, length in plan) == size
    assert [n for n, _o, _l in plan] == list(range(1, len(plan) + 1))


def test_etag_and_content_md5_are_what_s3_computes() -> None:
    assert _cloud_s3.etag_of(b'') == '"d41d8cd98f00b204e9800998ecf8427e"'
    assert _cloud_s3.md5_b64(b'') == '1B2M2Y8AsgTpgAmY7PhCfg=='


def backend(tmp_path: t.Any, **s3: t.Any) -> _cloud_s3.S3Backend:
    src = tmp_path / 'a.img'
    src.write_bytes(b'x')
    options = {'bucket': 'b'}
    options.update(s3)
    return _cloud_s3.S3Backend(Request(target='s3', name='a.img', src=str(src), options={'s3': options}))


@pytest.mark.parametrize('options, message', [
    ({'part_size': '1M'}, r's3.part_size: 1M is outside what S3 accepts for a part \(5M to 5G\)'),
    ({'part_size': '6G'}, r's3.part_size: 6G is outside'),
    ({'part_size': 'lots'}, r"s3.part_size: 'lots' is not a size"),
    ({'concurrency': 0}, r's3.concurrency: 0 is not between 1 and 64'),
    ({'bucket': ''}, r's3.bucket: the bucket is required'),
])
def test_options_are_checked_before_any_call(tmp_path: t.Any, options: t.Dict[str, t.Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        backend(tmp_path, **options).check()


def test_metadata_must_be_ascii(tmp_path: t.Any) -> None:
    back = backend(tmp_path)
    back.request.tags = {'owner': 'Zoë'}
    with pytest.raises(InvalidInput, match='tags: owner: S3 user metadata must be printable ASCII'):
        back.check()


def test_state_files_are_private_and_keyed_by_endpoint_bucket_and_key(tmp_path: t.Any, monkeypatch: t.Any) -> None:
    monkeypatch.setenv('HOME', str(tmp_path))
    one = backend(tmp_path, endpoint_url='http://a')
    two = backend(tmp_path, endpoint_url='http://b')
    assert one.state_path('k') != two.state_path('k') != one.state_path('j')
    path = one.state_path('k')
    assert path.startswith(str(tmp_path / '.cache' / 'osimage-builder' / 's3-uploads'))
    _cloud_s3.remember(path, {'upload_id': 'u', 'sha256': 'd'})
    assert _cloud_s3.recalled(path) == {'upload_id': 'u', 'sha256': 'd'}
    assert (tmp_path / '.cache' / 'osimage-builder' / 's3-uploads').stat().st_mode & 0o077 == 0
    _cloud_s3.forget(path)
    _cloud_s3.forget(path)
    assert _cloud_s3.recalled(path) is None


def test_read_range(tmp_path: t.Any) -> None:
    path = tmp_path / 'f'
    path.write_bytes(bytes(range(100)))
    assert _cloud_s3.read_range(str(path), 10, 5) == bytes(range(10, 15))
    assert hashlib.sha256(_cloud_s3.read_range(str(path), 95, 50)).hexdigest() == \
        hashlib.sha256(bytes(range(95, 100))).hexdigest()


def test_crc32_is_the_checksum_s3_sends_for_a_part() -> None:
    # x-amz-checksum-crc32 of "hello world", as S3's documentation and botocore compute it
    assert _cloud_s3.crc32_b64(b'hello world') == 'DUoRhQ=='
