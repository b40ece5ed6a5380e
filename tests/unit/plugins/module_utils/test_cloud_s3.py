# -*- coding: utf-8 -*-
from __future__ import annotations

import datetime
import hashlib
import inspect
import os
import signal
import typing as t

import pytest

from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError

from ansible_collections.osimage.builder.plugins.module_utils import _cancel, _cloud_s3
from ansible_collections.osimage.builder.plugins.module_utils._cloud import (
    Backend, CloudError, CredentialsError, DigestMismatch, Request, Session)
from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput

MIB = 1024 * 1024
CREDS = {'aws_access_key_id': 'AKIDTEST', 'aws_secret_access_key': 'secret', 'aws_region': 'us-east-1'}


def client_error(code: str, status: int = 400, message: str = 'failed') -> ClientError:
    return ClientError({'Error': {'Code': code, 'Message': message}, 'ResponseMetadata': {'HTTPStatusCode': status}},
                       'Operation')


class FakeS3:
    """The S3 calls the backend makes, in memory, with S3's answers and errors; records every call."""

    def __init__(self) -> None:
        self.objects: t.Dict[str, t.Dict[str, t.Any]] = {}
        self.uploads: t.Dict[str, t.Dict[str, t.Any]] = {}
        self.calls: t.List[t.Tuple[str, t.Dict[str, t.Any]]] = []
        self.fail: t.Dict[str, t.List[BaseException]] = {}   # operation -> exceptions raised by its next calls
        self.checksums = True    # False: a store that ignores x-amz-checksum-* (older S3-compatible stores)
        self.page_size = 1000    # parts per ListParts page
        self.clock = 0
        self.complete_then_fail: t.Optional[BaseException] = None

    def _record(self, op: str, kwargs: t.Dict[str, t.Any]) -> None:
        self.calls.append((op, kwargs))
        if self.fail.get(op):
            raise self.fail[op].pop(0)
        if kwargs.get('Bucket', 'images') != 'images':
            raise client_error('NoSuchBucket', 404, 'The specified bucket does not exist')

    def ops(self) -> t.List[str]:
        return [op for op, _unused in self.calls]

    def _store(self, key: str, data: bytes, metadata: t.Dict[str, str], etag: str) -> t.Dict[str, t.Any]:
        self.clock += 1
        self.objects[key] = {'data': data, 'Metadata': dict(metadata), 'ETag': etag,
                             'LastModified': datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc) +
                             datetime.timedelta(minutes=self.clock)}
        return {'ETag': etag, 'VersionId': 'v%d' % self.clock}

    def head_object(self, **kw: t.Any) -> t.Dict[str, t.Any]:
        self._record('HeadObject', kw)
        if kw['Key'] not in self.objects:
            raise client_error('404', 404, 'Not Found')
        obj = self.objects[kw['Key']]
        return {'ContentLength': len(obj['data']), 'Metadata': dict(obj['Metadata']), 'ETag': obj['ETag'],
                'LastModified': obj['LastModified']}

    def get_object(self, **kw: t.Any) -> t.Dict[str, t.Any]:
        self._record('GetObject', kw)
        raise client_error('NoSuchKey', 404, 'The specified key does not exist.')

    def put_object(self, **kw: t.Any) -> t.Dict[str, t.Any]:
        self._record('PutObject', kw)
        assert kw['ContentMD5'] == _cloud_s3.md5_b64(kw['Body'])
        return self._store(kw['Key'], kw['Body'], kw['Metadata'], _cloud_s3.etag_of(kw['Body']))

    def create_multipart_upload(self, **kw: t.Any) -> t.Dict[str, t.Any]:
        self._record('CreateMultipartUpload', kw)
        upload_id = 'upload-%d' % (len(self.uploads) + 1)
        self.uploads[upload_id] = {'Key': kw['Key'], 'Metadata': dict(kw['Metadata']), 'parts': {}}
        return {'UploadId': upload_id}

    def _upload(self, kw: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
        if kw['UploadId'] not in self.uploads:
            raise client_error('NoSuchUpload', 404, 'The specified upload does not exist.')
        return self.uploads[kw['UploadId']]

    def upload_part(self, **kw: t.Any) -> t.Dict[str, t.Any]:
        self._record('UploadPart', kw)
        upload = self._upload(kw)
        etag = _cloud_s3.etag_of(kw['Body'])
        upload['parts'][kw['PartNumber']] = {'data': kw['Body'], 'ETag': etag}
        answer = {'ETag': etag}
        if self.checksums:
            answer['ChecksumCRC32'] = _cloud_s3.crc32_b64(kw['Body'])
        return answer

    def list_parts(self, **kw: t.Any) -> t.Dict[str, t.Any]:
        self._record('ListParts', kw)
        upload = self._upload(kw)
        numbers = [n for n in sorted(upload['parts']) if n > kw.get('PartNumberMarker', 0)]
        page = numbers[:self.page_size]
        return {'Parts': [{'PartNumber': n, 'ETag': upload['parts'][n]['ETag'], 'Size': len(upload['parts'][n]['data'])}
                          for n in page],
                'IsTruncated': len(numbers) > len(page), 'NextPartNumberMarker': page[-1] if page else 0}

    def complete_multipart_upload(self, **kw: t.Any) -> t.Dict[str, t.Any]:
        self._record('CompleteMultipartUpload', kw)
        upload = self._upload(kw)
        listed = kw['MultipartUpload']['Parts']
        assert [p['PartNumber'] for p in listed] == sorted(upload['parts'])
        for part in listed:
            stored = upload['parts'][part['PartNumber']]
            assert part['ETag'] == stored['ETag']
            if self.checksums:
                assert part['ChecksumCRC32'] == _cloud_s3.crc32_b64(stored['data'])
            else:
                assert 'ChecksumCRC32' not in part
        data = b''.join(upload['parts'][n]['data'] for n in sorted(upload['parts']))
        del self.uploads[kw['UploadId']]
        answer = self._store(upload['Key'], data, upload['Metadata'], '"multipart-%d"' % len(listed))
        if self.complete_then_fail is not None:
            exc, self.complete_then_fail = self.complete_then_fail, None
            raise exc  # completed, but the answer was lost on the way
        return answer

    def abort_multipart_upload(self, **kw: t.Any) -> t.Dict[str, t.Any]:
        self._record('AbortMultipartUpload', kw)
        self._upload(kw)
        del self.uploads[kw['UploadId']]
        return {}

    def list_multipart_uploads(self, **kw: t.Any) -> t.Dict[str, t.Any]:
        self._record('ListMultipartUploads', kw)
        return {'Uploads': [{'Key': u['Key'], 'UploadId': i} for i, u in self.uploads.items()
                            if u['Key'].startswith(kw.get('Prefix', ''))], 'IsTruncated': False}

    def list_objects_v2(self, **kw: t.Any) -> t.Dict[str, t.Any]:
        self._record('ListObjectsV2', kw)
        prefix = kw.get('Prefix', '')
        keys = sorted(k for k in self.objects if k.startswith(prefix) and '/' not in k[len(prefix):])
        # two keys a page, to exercise the continuation
        start = int(kw.get('ContinuationToken') or 0)
        page = keys[start:start + 2]
        return {'Contents': [{'Key': k, 'Size': len(self.objects[k]['data']),
                              'LastModified': self.objects[k]['LastModified']} for k in page],
                'IsTruncated': start + 2 < len(keys), 'NextContinuationToken': str(start + 2)}

    def delete_object(self, **kw: t.Any) -> t.Dict[str, t.Any]:
        self._record('DeleteObject', kw)
        self.objects.pop(kw['Key'], None)
        return {}


@pytest.fixture(autouse=True)
def home(tmp_path: t.Any, monkeypatch: t.Any) -> t.Any:
    """State files go to a HOME of the test's own."""
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    return tmp_path / 'home'


def artifact(tmp_path: t.Any, size: int, name: str = 'disk.qcow2') -> t.Tuple[str, str]:
    data = os.urandom(size)
    path = tmp_path / name
    path.write_bytes(data)
    return str(path), hashlib.sha256(data).hexdigest()


def make(fake: FakeS3, src: t.Optional[str] = None, sha256: t.Optional[str] = None, state: str = 'present',
         name: str = 'img/disk-1.qcow2', warnings: t.Optional[t.List[str]] = None, **kwargs: t.Any) -> _cloud_s3.S3Backend:
    s3 = {'bucket': 'images', 'endpoint_url': 'http://127.0.0.1:9000', 'part_size': '5M', 'concurrency': 3}
    s3.update(kwargs.pop('s3', {}))
    request = Request(target='s3', state=state, name=name, src=src, sha256=sha256, options={'s3': s3},
                      credentials=dict(CREDS), **kwargs)

    def session(req: Request, is_retryable: t.Callable[[BaseException], bool]) -> Session:
        return Session(req, is_retryable, sleep=lambda seconds: None)

    backend = _cloud_s3.S3Backend(request, session_factory=session,
                                  warn=(warnings.append if warnings is not None else None))
    backend._client = fake
    return backend


def state_files(home: t.Any) -> t.List[str]:
    folder = home / '.cache' / 'osimage-builder' / 's3-uploads'
    return sorted(os.listdir(folder)) if folder.is_dir() else []


# --- pure logic -------------------------------------------------------------------------------------------


def test_part_plan_covers_the_file_with_a_short_last_part() -> None:
    plan = _cloud_s3.part_plan(12 * MIB, 5 * MIB)
    assert plan == [(1, 0, 5 * MIB), (2, 5 * MIB, 5 * MIB), (3, 10 * MIB, 2 * MIB)]


def test_part_plan_grows_the_part_size_beyond_ten_thousand_parts() -> None:
    size = 100 * 1024 * MIB  # 100 GiB in 8 MiB parts would be 12800 parts
    plan = _cloud_s3.part_plan(size, 8 * MIB)
    assert len(plan) <= _cloud_s3.MAX_PARTS
    assert plan[0][2] == 11 * MIB
    assert sum(length for _n, _o, length in plan) == size
    assert [n for n, _o, _l in plan] == list(range(1, len(plan) + 1))
    assert _cloud_s3.effective_part_size(10000 * 8 * MIB, 8 * MIB) == 8 * MIB


def test_etag_content_md5_and_crc32_are_what_s3_computes() -> None:
    assert _cloud_s3.etag_of(b'') == '"d41d8cd98f00b204e9800998ecf8427e"'
    assert _cloud_s3.md5_b64(b'') == '1B2M2Y8AsgTpgAmY7PhCfg=='
    # x-amz-checksum-crc32 of "hello world", as botocore computes it
    assert _cloud_s3.crc32_b64(b'hello world') == 'DUoRhQ=='


def test_read_range(tmp_path: t.Any) -> None:
    path = tmp_path / 'f'
    path.write_bytes(bytes(range(100)))
    assert _cloud_s3.read_range(str(path), 10, 5) == bytes(range(10, 15))
    assert _cloud_s3.read_range(str(path), 95, 50) == bytes(range(95, 100))


def test_the_helper_functions_keep_the_signatures_aws_ami_codes_against() -> None:
    assert list(inspect.signature(_cloud_s3.put_artifact).parameters) == [
        'backend', 'client', 'bucket', 'key', 'path', 'metadata']
    assert list(inspect.signature(_cloud_s3.s3_client).parameters) == ['request', 'endpoint_url']


def test_s3_client_uses_the_credentials_region_and_endpoint() -> None:
    request = Request(target='s3', name='x', credentials=dict(CREDS, aws_region='eu-west-3'))
    client = _cloud_s3.s3_client(request, 'http://127.0.0.1:9000')
    assert client.meta.endpoint_url == 'http://127.0.0.1:9000'
    assert client.meta.region_name == 'eu-west-3'
    assert client._request_signer._credentials.access_key == 'AKIDTEST'
    assert client.meta.config.s3['addressing_style'] == 'path'
    assert client.meta.config.retries['total_max_attempts'] == 1  # Session.call retries, and counts


# --- option checks ----------------------------------------------------------------------------------------


@pytest.mark.parametrize('options, message', [
    ({'part_size': '1M'}, r's3.part_size: 1M is outside what S3 accepts for a part \(5M to 5G\)'),
    ({'part_size': '6G'}, r's3.part_size: 6G is outside'),
    ({'part_size': 'lots'}, r"s3.part_size: 'lots' is not a size"),
    ({'concurrency': 0}, r's3.concurrency: 0 is not between 1 and 64'),
    ({'bucket': ''}, r's3.bucket: the bucket is required'),
    ({'key': 'dir/'}, r"s3.key: 'dir/' starts or ends with /"),
    ({'key': 'k' * 1025}, r's3.key: the object key is 1025 bytes of UTF-8; S3 allows 1024'),
])
def test_options_are_checked_before_any_call(tmp_path: t.Any, options: t.Dict[str, t.Any], message: str) -> None:
    src, _digest = artifact(tmp_path, 10)
    fake = FakeS3()
    with pytest.raises(InvalidInput, match=message):
        make(fake, src, s3=options).run()
    assert fake.calls == []


@pytest.mark.parametrize('tags, message', [
    ({'owner': 'Zoë'}, "tags: 'owner': S3 user metadata must be printable ASCII"),
    ({'the owner': 'me'}, "tags: 'the owner': S3 user metadata must be printable ASCII, and its names letters"),
    ({'osimage-sha256': 'x'}, 'tags: osimage-sha256 is set by the module itself'),
    ({'big': 'x' * 2000}, 'tags: the object metadata .* would be 2.* bytes; S3 allows 2048'),
])
def test_metadata_is_checked(tmp_path: t.Any, tags: t.Dict[str, str], message: str) -> None:
    src, _digest = artifact(tmp_path, 10)
    with pytest.raises(InvalidInput, match=message):
        make(FakeS3(), src, tags=tags).run()


def test_half_a_key_pair_is_refused(tmp_path: t.Any) -> None:
    src, _digest = artifact(tmp_path, 10)
    backend = make(FakeS3(), src)
    del backend.request.credentials['aws_secret_access_key']
    with pytest.raises(InvalidInput, match='aws_access_key_id, aws_secret_access_key: give both or neither'):
        backend.run()


def test_files_beyond_ten_thousand_parts_of_five_gib_are_refused(tmp_path: t.Any, monkeypatch: t.Any) -> None:
    src, _digest = artifact(tmp_path, 10)
    real = os.path.getsize
    monkeypatch.setattr(_cloud_s3.os.path, 'getsize',
                        lambda path: 10000 * 5 * 1024 * MIB + 1 if path == src else real(path))
    with pytest.raises(InvalidInput, match=r'src: .* more than 10000 parts of 5 GiB'):
        make(FakeS3(), src).run()


def test_a_part_size_too_small_for_the_file_is_raised_with_a_warning(tmp_path: t.Any, monkeypatch: t.Any) -> None:
    src, _digest = artifact(tmp_path, 10)
    real = os.path.getsize
    monkeypatch.setattr(_cloud_s3.os.path, 'getsize', lambda path: 100 * 1024 * MIB if path == src else real(path))
    warnings: t.List[str] = []
    backend = make(FakeS3(), src, warnings=warnings)
    backend.check()
    assert warnings and 's3.part_size: 5M would need more than 10000 parts' in warnings[0]
    assert 'parts of 11 MiB' in warnings[0]


# --- present ----------------------------------------------------------------------------------------------


def test_first_upload_is_a_verified_parallel_multipart_upload(tmp_path: t.Any, home: t.Any) -> None:
    src, digest = artifact(tmp_path, 12 * MIB)
    fake = FakeS3()
    result = make(fake, src, sha256=digest, family='debian-12', tags={'purpose': 'test'}).run()
    assert result['changed'] is True
    assert result['id'] == 'img/disk-1.qcow2'
    assert result['url'] == 'http://127.0.0.1:9000/images/img/disk-1.qcow2'
    assert result['sha256'] == digest
    assert result['resumed'] is False
    assert result['details']['parts'] == 3 and result['details']['part_size'] == 5 * MIB
    assert result['progress']['bytes_sent'] == 12 * MIB and result['progress']['retries'] == 0
    obj = fake.objects['img/disk-1.qcow2']
    assert hashlib.sha256(obj['data']).hexdigest() == digest
    assert obj['Metadata'] == {'osimage-sha256': digest, 'osimage-family': 'debian-12', 'purpose': 'test'}
    created = [kw for op, kw in fake.calls if op == 'CreateMultipartUpload'][0]
    assert created['ChecksumAlgorithm'] == 'CRC32' and created['ContentType'] == 'application/octet-stream'
    assert all(kw['ChecksumAlgorithm'] == 'CRC32' for op, kw in fake.calls if op == 'UploadPart')
    assert fake.uploads == {} and state_files(home) == []


def test_an_object_with_the_digest_makes_the_task_unchanged_without_reading_src(tmp_path: t.Any, monkeypatch: t.Any) -> None:
    src, digest = artifact(tmp_path, 12 * MIB)
    fake = FakeS3()
    make(fake, src, sha256=digest).run()
    fake.calls.clear()

    def no_reading(*args: t.Any, **kwargs: t.Any) -> t.Any:
        raise AssertionError('src was read')

    monkeypatch.setattr(_cloud_s3, 'read_range', no_reading)
    monkeypatch.setattr(_cloud_s3, 'sha256_file', no_reading)
    monkeypatch.setattr(_cloud_s3, 'DigestCheck', no_reading)
    for check_mode in (False, True):
        result = make(fake, src, sha256=digest, check_mode=check_mode).run()
        assert result['changed'] is False
        assert result['progress']['bytes_sent'] == 0
    assert fake.ops() == ['HeadObject', 'HeadObject']


def test_without_sha256_the_digest_is_computed_first(tmp_path: t.Any) -> None:
    src, digest = artifact(tmp_path, 1000)
    fake = FakeS3()
    result = make(fake, src).run()
    assert result['sha256'] == digest
    assert fake.objects['img/disk-1.qcow2']['Metadata']['osimage-sha256'] == digest
    assert make(fake, src).run()['changed'] is False


def test_check_mode_changes_nothing(tmp_path: t.Any, home: t.Any) -> None:
    src, digest = artifact(tmp_path, 12 * MIB)
    fake = FakeS3()
    result = make(fake, src, sha256=digest, check_mode=True).run()
    assert result['changed'] is True
    assert fake.ops() == ['HeadObject']
    assert fake.objects == {} and state_files(home) == []


def test_a_small_file_is_one_put_with_content_md5(tmp_path: t.Any) -> None:
    src, digest = artifact(tmp_path, 5 * MIB)
    fake = FakeS3()
    result = make(fake, src, sha256=digest, family='f', s3={'storage_class': 'STANDARD_IA'}).run()
    assert fake.ops() == ['HeadObject', 'PutObject']
    put = fake.calls[1][1]
    assert put['StorageClass'] == 'STANDARD_IA' and put['Metadata']['osimage-family'] == 'f'
    assert result['details']['parts'] == 1 and result['details']['version_id'] == 'v1'


def test_an_object_with_another_digest_is_replaced(tmp_path: t.Any) -> None:
    old, _old_digest = artifact(tmp_path, 1000, 'old')
    new, new_digest = artifact(tmp_path, 1000, 'new')
    fake = FakeS3()
    make(fake, old).run()
    assert make(fake, new, sha256=new_digest).run()['changed'] is True
    assert fake.objects['img/disk-1.qcow2']['Metadata']['osimage-sha256'] == new_digest


@pytest.mark.parametrize('size', [1000, 12 * MIB])
@pytest.mark.parametrize('keep_partial', [False, True])
def test_a_digest_mismatch_leaves_nothing(tmp_path: t.Any, home: t.Any, size: int, keep_partial: bool) -> None:
    src, _digest = artifact(tmp_path, size)
    fake = FakeS3()
    with pytest.raises(DigestMismatch, match='not the expected ' + 'f' * 64):
        make(fake, src, sha256='f' * 64, keep_partial=keep_partial).run()
    assert fake.objects == {} and fake.uploads == {}
    assert 'CompleteMultipartUpload' not in fake.ops() and 'PutObject' not in fake.ops()
    assert state_files(home) == []


def test_transient_errors_are_retried(tmp_path: t.Any) -> None:
    src, digest = artifact(tmp_path, 12 * MIB)
    fake = FakeS3()
    fake.fail['UploadPart'] = [client_error('SlowDown', 503), client_error('InternalError', 500),
                               EndpointConnectionError(endpoint_url='http://127.0.0.1:9000')]
    result = make(fake, src, sha256=digest).run()
    assert result['progress']['retries'] == 3
    assert result['progress']['bytes_sent'] == 12 * MIB
    assert hashlib.sha256(fake.objects['img/disk-1.qcow2']['data']).hexdigest() == digest


def test_a_failed_upload_is_aborted(tmp_path: t.Any, home: t.Any) -> None:
    src, digest = artifact(tmp_path, 12 * MIB)
    fake = FakeS3()
    fake.fail['UploadPart'] = [ConnectionClosedError(endpoint_url='http://x')] * 3
    with pytest.raises(CloudError, match='UploadPart') as raised:
        make(fake, src, sha256=digest, retries=1).run()
    assert 'was kept' not in raised.value.msg
    assert fake.uploads == {} and fake.objects == {} and state_files(home) == []
    assert 'AbortMultipartUpload' in fake.ops()


@pytest.mark.parametrize('keep_partial', [False, True])
def test_a_cancelled_upload_is_aborted_unless_keep_partial(tmp_path: t.Any, home: t.Any, keep_partial: bool) -> None:
    """SIGTERM as ansible's worker passes it on to its task: cloud_upload's unwind_on_signals makes it SystemExit."""
    src, digest = artifact(tmp_path, 12 * MIB)
    fake = FakeS3()
    real = fake.upload_part

    def term_during_part_two(**kw: t.Any) -> t.Dict[str, t.Any]:
        if kw['PartNumber'] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(**kw)

    fake.upload_part = term_during_part_two  # type: ignore[method-assign]
    saved = {signum: signal.getsignal(signum) for signum in _cancel.CANCEL_SIGNALS}
    try:
        _cancel.unwind_on_signals()
        with pytest.raises(SystemExit) as raised:
            make(fake, src, sha256=digest, keep_partial=keep_partial, s3={'concurrency': 1}).run()
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    assert raised.value.code == 128 + signal.SIGTERM
    assert fake.objects == {}
    if keep_partial:
        assert list(fake.uploads) == ['upload-1'] and len(state_files(home)) == 1
    else:
        assert fake.uploads == {} and state_files(home) == [] and 'AbortMultipartUpload' in fake.ops()


def test_keep_partial_keeps_the_upload_and_the_next_run_resumes_it(tmp_path: t.Any, home: t.Any) -> None:
    src, digest = artifact(tmp_path, 12 * MIB)
    fake = FakeS3()
    backend = make(fake, src, sha256=digest, keep_partial=True, retries=0, s3={'concurrency': 1})
    real = fake.upload_part

    def part_three_fails(**kw: t.Any) -> t.Dict[str, t.Any]:
        if kw['PartNumber'] == 3:
            raise ConnectionClosedError(endpoint_url='http://x')
        return real(**kw)

    fake.upload_part = part_three_fails  # type: ignore[method-assign]
    with pytest.raises(CloudError, match=r'the multipart upload upload-1 was kept \(keep_partial\)'):
        backend.run()
    assert list(fake.uploads) == ['upload-1'] and len(state_files(home)) == 1
    fake.upload_part = real  # type: ignore[method-assign]
    fake.calls.clear()
    result = make(fake, src, sha256=digest).run()
    assert result['resumed'] is True
    assert result['progress']['bytes_skipped'] == 10 * MIB and result['progress']['bytes_sent'] == 2 * MIB
    assert [kw['PartNumber'] for op, kw in fake.calls if op == 'UploadPart'] == [3]
    assert 'CreateMultipartUpload' not in fake.ops()
    assert hashlib.sha256(fake.objects['img/disk-1.qcow2']['data']).hexdigest() == digest
    assert fake.uploads == {} and state_files(home) == []


def kept_upload(fake: FakeS3, src: str, digest: str) -> None:
    """An upload of src with parts 1 and 2 sent, left by a run that was killed."""
    backend = make(fake, src, sha256=digest, retries=0, keep_partial=True, s3={'concurrency': 1})
    real = fake.upload_part

    def killed(**kw: t.Any) -> t.Dict[str, t.Any]:
        if kw['PartNumber'] >= 3:
            raise ConnectionClosedError(endpoint_url='http://x')
        return real(**kw)

    fake.upload_part = killed  # type: ignore[method-assign]
    with pytest.raises(CloudError):
        backend.run()
    fake.upload_part = real  # type: ignore[method-assign]
    fake.calls.clear()


def test_an_upload_recorded_for_other_content_is_aborted_not_resumed(tmp_path: t.Any, home: t.Any) -> None:
    src, digest = artifact(tmp_path, 12 * MIB)
    fake = FakeS3()
    kept_upload(fake, src, digest)
    # The file changed after the killed run (same size, other content): the parts' ETags of the ranges that did
    # not change would still match, but the upload was created with the old digest in its metadata.
    with open(src, 'r+b') as handle:
        handle.seek(11 * MIB)
        handle.write(b'changed')
    with open(src, 'rb') as handle:
        new_digest = hashlib.sha256(handle.read()).hexdigest()
    result = make(fake, src, sha256=new_digest).run()
    assert result['resumed'] is False and result['progress']['bytes_sent'] == 12 * MIB
    assert ('AbortMultipartUpload', {'Bucket': 'images', 'Key': 'img/disk-1.qcow2', 'UploadId': 'upload-1'}) in fake.calls
    assert fake.objects['img/disk-1.qcow2']['Metadata']['osimage-sha256'] == new_digest
    assert fake.uploads == {} and state_files(home) == []


def test_parts_that_are_not_the_local_bytes_are_sent_again(tmp_path: t.Any) -> None:
    src, digest = artifact(tmp_path, 12 * MIB)
    fake = FakeS3()
    kept_upload(fake, src, digest)
    fake.uploads['upload-1']['parts'][2] = {'data': b'x' * 5 * MIB, 'ETag': _cloud_s3.etag_of(b'x' * 5 * MIB)}
    fake.page_size = 1  # ListParts in pages
    result = make(fake, src, sha256=digest).run()
    assert result['resumed'] is True
    assert sorted(kw['PartNumber'] for op, kw in fake.calls if op == 'UploadPart') == [2, 3]
    assert fake.ops().count('ListParts') == 2
    assert hashlib.sha256(fake.objects['img/disk-1.qcow2']['data']).hexdigest() == digest


def test_a_recorded_upload_that_is_gone_starts_over(tmp_path: t.Any, home: t.Any) -> None:
    src, digest = artifact(tmp_path, 12 * MIB)
    fake = FakeS3()
    kept_upload(fake, src, digest)
    fake.uploads.clear()  # a lifecycle rule removed it
    result = make(fake, src, sha256=digest).run()
    assert result['resumed'] is False and result['progress']['bytes_sent'] == 12 * MIB
    assert state_files(home) == []


def test_a_mismatch_on_a_resumed_upload_aborts_it_even_with_keep_partial(tmp_path: t.Any, home: t.Any) -> None:
    src, digest = artifact(tmp_path, 12 * MIB)
    fake = FakeS3()
    kept_upload(fake, src, digest)
    with open(src, 'r+b') as handle:  # changed after the parts were sent, the same record still claims its digest
        handle.seek(11 * MIB)
        handle.write(b'changed')
    with pytest.raises(DigestMismatch):
        make(fake, src, sha256=digest, keep_partial=True).run()
    assert fake.objects == {} and fake.uploads == {} and state_files(home) == []


def test_a_store_without_checksums_gets_parts_without_them(tmp_path: t.Any) -> None:
    src, digest = artifact(tmp_path, 12 * MIB)
    fake = FakeS3()
    fake.checksums = False
    assert make(fake, src, sha256=digest).run()['changed'] is True


def test_a_completion_whose_answer_was_lost_is_not_a_failure(tmp_path: t.Any) -> None:
    src, digest = artifact(tmp_path, 12 * MIB)
    fake = FakeS3()
    fake.complete_then_fail = ConnectionClosedError(endpoint_url='http://x')
    result = make(fake, src, sha256=digest).run()
    assert result['changed'] is True
    assert fake.ops().count('CompleteMultipartUpload') == 2
    assert hashlib.sha256(fake.objects['img/disk-1.qcow2']['data']).hexdigest() == digest


def test_put_artifact_works_for_another_target_s_backend(tmp_path: t.Any) -> None:
    src, digest = artifact(tmp_path, 12 * MIB)
    fake = FakeS3()
    request = Request(target='aws_ami', name='disk', src=src, options={'s3': {'bucket': 'images', 'part_size': '5M'}},
                      credentials=dict(CREDS))
    other = Backend(request)
    result = _cloud_s3.put_artifact(other, fake, 'images', 'staging/disk.raw', src, {'osimage-sha256': digest})
    assert {'changed', 'etag', 'version_id', 'resumed', 'sha256'} <= set(result)
    assert result['changed'] is True and result['sha256'] == digest
    assert other.session.progress.bytes_sent == 12 * MIB
    again = _cloud_s3.put_artifact(other, fake, 'images', 'staging/disk.raw', src, {'osimage-sha256': digest})
    assert again['changed'] is False


# --- errors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize('exc, retryable', [
    (client_error('SlowDown', 503), True),
    (client_error('InternalError', 500), True),
    (client_error('503', 503), True),
    (client_error('RequestTimeout', 400), True),
    (client_error('BadDigest', 400), True),
    (client_error('OperationAborted', 409), True),
    (ConnectionClosedError(endpoint_url='http://x'), True),
    (EndpointConnectionError(endpoint_url='http://x'), True),
    (client_error('InvalidAccessKeyId', 403), False),
    (client_error('SignatureDoesNotMatch', 403), False),
    (client_error('AccessDenied', 403), False),
    (client_error('NoSuchBucket', 404), False),
    (client_error('404', 404), False),
    (client_error('EntityTooSmall', 400), False),
    (ValueError('bug'), False),
])
def test_retry_classification(exc: BaseException, retryable: bool) -> None:
    backend = make(FakeS3())
    assert backend.is_retryable(exc) is retryable


def test_wrong_credentials_name_the_options_and_their_environment_variables(tmp_path: t.Any) -> None:
    src, digest = artifact(tmp_path, 1000)
    fake = FakeS3()
    fake.fail['HeadObject'] = [client_error('403', 403, 'Forbidden')]  # a HEAD answer has no error code
    fake.fail['GetObject'] = [client_error('InvalidAccessKeyId', 403,
                                           'The AWS Access Key Id you provided does not exist in our records.')]
    with pytest.raises(CredentialsError) as raised:
        make(fake, src, sha256=digest).run()
    msg = raised.value.msg
    assert 'the S3 endpoint http://127.0.0.1:9000 did not accept the credentials (InvalidAccessKeyId' in msg
    assert 'aws_access_key_id' in msg and 'AWS_ACCESS_KEY_ID' in msg and 'AWS_SECRET_ACCESS_KEY' in msg
    assert fake.ops() == ['HeadObject', 'GetObject']


def test_a_missing_permission_is_told_apart_from_wrong_keys(tmp_path: t.Any) -> None:
    src, digest = artifact(tmp_path, 1000)
    fake = FakeS3()
    fake.fail['HeadObject'] = [client_error('403', 403, 'Forbidden')]
    fake.fail['GetObject'] = [client_error('AccessDenied', 403, 'Access Denied')]
    with pytest.raises(CredentialsError, match='the credentials are not allowed to do this'):
        make(fake, src, sha256=digest).run()


@pytest.mark.parametrize('size', [1000, 12 * MIB])
@pytest.mark.parametrize('head_has_a_body', [True, False])
def test_a_missing_bucket_names_the_option(tmp_path: t.Any, size: int, head_has_a_body: bool) -> None:
    src, digest = artifact(tmp_path, size)
    fake = FakeS3()
    if not head_has_a_body:
        fake.fail['HeadObject'] = [client_error('404', 404, 'Not Found')]
    with pytest.raises(CloudError, match='s3.bucket: the bucket nope does not exist at http://127.0.0.1:9000'):
        make(fake, src, sha256=digest, s3={'bucket': 'nope'}).run()


# --- absent and pruned ------------------------------------------------------------------------------------


def test_absent_deletes_the_object_and_aborts_unfinished_uploads(tmp_path: t.Any, home: t.Any) -> None:
    src, digest = artifact(tmp_path, 12 * MIB)
    fake = FakeS3()
    make(fake, src, sha256=digest).run()
    fake.uploads['stray'] = {'Key': 'img/disk-1.qcow2', 'Metadata': {}, 'parts': {}}
    fake.uploads['other'] = {'Key': 'img/disk-1.qcow2.bak', 'Metadata': {}, 'parts': {}}
    check = make(fake, state='absent', check_mode=True).run()
    assert check['changed'] is True and [d['name'] for d in check['deleted']] == ['img/disk-1.qcow2']
    assert 'img/disk-1.qcow2' in fake.objects and 'stray' in fake.uploads
    real = make(fake, state='absent').run()
    assert real['changed'] is True and real['aborted_uploads'] == 1 and real['deleted'][0]['sha256'] == digest
    assert fake.objects == {} and list(fake.uploads) == ['other']
    assert make(fake, state='absent').run() == {'changed': False, 'deleted': [], 'aborted_uploads': 0, 'target': 's3'}


def test_pruned_keeps_the_newest_of_the_family_in_the_key_s_directory(tmp_path: t.Any) -> None:
    fake = FakeS3()
    for number, (key, family) in enumerate([('img/deb-1.qcow2', 'deb'), ('img/deb-2.qcow2', 'deb'),
                                            ('img/other-1.qcow2', 'other'), ('img/deb-3.qcow2', 'deb'),
                                            ('img/sub/deb-0.qcow2', 'deb'), ('deb-0.qcow2', 'deb'),
                                            ('img/deb-4.qcow2', 'deb')]):
        fake._store(key, b'x' * number, {'osimage-family': family, 'osimage-sha256': '%064d' % number}, '"e"')
    check = make(fake, state='pruned', name='img/deb-4.qcow2', family='deb', keep_newest=2, check_mode=True).run()
    assert check['changed'] is True
    assert [d['name'] for d in check['deleted']] == ['img/deb-2.qcow2', 'img/deb-1.qcow2']
    assert [k['name'] for k in check['kept']] == ['img/deb-4.qcow2', 'img/deb-3.qcow2']
    assert check['deleted'][0]['sha256'] == '%064d' % 1
    assert 'DeleteObject' not in fake.ops() and len(fake.objects) == 7
    real = make(fake, state='pruned', name='img/deb-4.qcow2', family='deb', keep_newest=2).run()
    assert real['deleted'] == check['deleted']
    assert sorted(fake.objects) == ['deb-0.qcow2', 'img/deb-3.qcow2', 'img/deb-4.qcow2', 'img/other-1.qcow2',
                                    'img/sub/deb-0.qcow2']
    again = make(fake, state='pruned', name='img/deb-4.qcow2', family='deb', keep_newest=2).run()
    assert again['changed'] is False and again['deleted'] == []
