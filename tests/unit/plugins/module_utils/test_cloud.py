# -*- coding: utf-8 -*-
from __future__ import annotations

import hashlib
import typing as t

import pytest

from ansible_collections.osimage.builder.plugins.module_utils import _cloud
from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput, WaitTimeout


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: t.List[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def session(retries: int = 3, retryable: t.Callable[[BaseException], bool] = lambda exc: True,
            clock: t.Optional[FakeClock] = None, **kwargs: t.Any) -> _cloud.Session:
    clock = clock or FakeClock()
    request = _cloud.Request(target='s3', name='x', retries=retries, **kwargs)
    return _cloud.Session(request, retryable, sleep=clock.sleep, clock=clock)


def test_call_retries_retryable_errors_then_succeeds() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError('reset')
        return 'ok'

    warnings: t.List[str] = []
    sess = session()
    sess.warn = warnings.append
    assert sess.call('PutObject', flaky) == 'ok'
    assert len(calls) == 3
    assert sess.retried == 2
    assert all('PutObject failed (reset), retrying' in w for w in warnings)


def test_call_gives_up_after_retries() -> None:
    calls = []

    def broken() -> None:
        calls.append(1)
        raise ConnectionError('down')

    with pytest.raises(ConnectionError):
        session(retries=2).call('x', broken)
    assert len(calls) == 3  # the first try and two retries


def test_call_does_not_retry_what_retrying_cannot_fix() -> None:
    calls = []

    def denied() -> None:
        calls.append(1)
        raise PermissionError('403')

    with pytest.raises(PermissionError):
        session(retryable=lambda exc: not isinstance(exc, PermissionError)).call('x', denied)
    assert len(calls) == 1


def test_backoff_grows_and_is_capped() -> None:
    sess = session()
    sess.base_delay, sess.max_delay = 1.0, 8.0
    for attempt in range(10):
        pauses = [sess.delay(attempt) for _unused in range(50)]
        assert all(0 <= p <= min(8.0, 2 ** attempt) for p in pauses)


def test_wait_until_returns_the_probe_value() -> None:
    answers = iter([None, None, 'ready'])
    clock = FakeClock()
    assert session(clock=clock).wait_until('snapshot', lambda: next(answers), delay=5) == 'ready'
    assert clock.sleeps == [5, 5]


def test_wait_until_times_out_with_the_timeout_in_the_message() -> None:
    clock = FakeClock()
    with pytest.raises(WaitTimeout, match=r'image to become available did not happen within wait_timeout \(30 s\)'):
        session(clock=clock, wait_timeout=30).wait_until('image to become available', lambda: None, delay=10)
    assert sum(clock.sleeps) == pytest.approx(30)


def test_wait_until_ends_at_once_when_the_probe_reports_a_failure() -> None:
    def failed() -> None:
        raise _cloud.CloudError('import task deleted: ClientError')

    clock = FakeClock()
    with pytest.raises(_cloud.CloudError, match='import task deleted'):
        session(clock=clock).wait_until('import', failed)
    assert clock.sleeps == []


def test_progress_reports_throughput() -> None:
    clock = FakeClock()
    progress = _cloud.Progress(clock)
    progress.sent(1000)
    progress.skipped(24)
    clock.now += 2
    assert progress.result() == {'bytes_sent': 1000, 'bytes_skipped': 24, 'seconds': 2.0, 'throughput': 500}


def test_digest_check_passes_and_detects_a_mismatch(tmp_path: t.Any) -> None:
    path = tmp_path / 'a.raw'
    path.write_bytes(b'x' * (5 * 1024 * 1024 + 3))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert _cloud.DigestCheck(str(path), digest.upper()).verify() == digest
    assert _cloud.DigestCheck(str(path), None).verify() == digest
    with pytest.raises(_cloud.DigestMismatch, match='has SHA-256 %s, not the expected %s' % (digest, '0' * 64)):
        _cloud.DigestCheck(str(path), '0' * 64).verify()


def test_digest_check_of_an_unreadable_file(tmp_path: t.Any) -> None:
    with pytest.raises(_cloud.CloudError, match='could not be read'):
        _cloud.DigestCheck(str(tmp_path / 'gone'), None).verify()


@pytest.mark.parametrize('value, expected', [
    ('A' * 64, 'a' * 64),
    ('sha256:' + 'b' * 64, 'b' * 64),
    (' ' + 'c' * 64 + '\n', 'c' * 64),
    (None, None),
])
def test_check_sha256_accepts(value: t.Optional[str], expected: t.Optional[str]) -> None:
    assert _cloud.check_sha256(value) == expected


@pytest.mark.parametrize('value', ['', 'abc', 'g' * 64, 'a' * 63, 'sha512:' + 'a' * 64])
def test_check_sha256_refuses(value: str) -> None:
    with pytest.raises(InvalidInput, match='sha256: .* is not a SHA-256 digest'):
        _cloud.check_sha256(value)


def test_check_request_messages_name_the_option(tmp_path: t.Any) -> None:
    src = tmp_path / 'a.img'
    src.write_bytes(b'1')
    cases = [
        (dict(target='ftp', name='a', src=str(src)), 'target: .ftp. is not one of s3, aws_ami'),
        (dict(target='s3', name='', src=str(src)), 'name: the object or image name is required'),
        (dict(target='s3', name='a'), 'src: the artifact to upload is required'),
        (dict(target='s3', name='a', src=str(tmp_path / 'gone')), 'src: .*gone does not exist'),
        (dict(target='s3', name='a', src=str(tmp_path)), 'is not a regular file'),
        (dict(target='s3', name='a', state='pruned', family='f'), 'keep_newest: state=pruned needs keep_newest'),
        (dict(target='s3', name='a', state='pruned', keep_newest=0, family='f'), 'keep_newest'),
        (dict(target='s3', name='a', state='pruned', keep_newest=2), 'family: state=pruned needs the family'),
        (dict(target='s3', name='a', src=str(src), wait_timeout=0), 'wait_timeout: 0 is not a positive'),
        (dict(target='s3', name='a', src=str(src), retries=-1), 'retries: -1 is negative'),
        (dict(target='s3', name='a', src=str(src), tags={'n': 1}), 'tags: the value of n must be a string'),
    ]
    for kwargs, message in cases:
        with pytest.raises(InvalidInput, match=message):
            _cloud.check_request(_cloud.Request(**kwargs))


def test_newest_first_is_stable_on_ties() -> None:
    images = [{'name': 'a', 'created': '2026-01-01T00:00:00Z'}, {'name': 'c', 'created': '2026-03-01T00:00:00Z'},
              {'name': 'b', 'created': '2026-01-01T00:00:00Z'}, {'name': 'd', 'created': '2025-12-31T23:59:59Z'}]
    kept, pruned = _cloud.newest_first(images, 2)
    assert [i['name'] for i in kept] == ['c', 'b']
    assert [i['name'] for i in pruned] == ['a', 'd']


def test_load_library_names_the_package_to_install() -> None:
    message = r'target azure needs the Python library no_such_sdk_xyz \(pip install no-such-sdk\)'
    with pytest.raises(_cloud.LibraryMissing, match=message):
        _cloud.load_library('azure', 'no_such_sdk_xyz', 'no-such-sdk')
    assert _cloud.load_library('s3', 'hashlib', 'x') is hashlib


class Recorder(_cloud.Backend):
    target = 's3'

    def present(self) -> t.Dict[str, t.Any]:
        self.session.progress.sent(10)
        return {'changed': True, 'id': 'k'}


def test_backend_run_checks_the_request_and_adds_progress(tmp_path: t.Any) -> None:
    src = tmp_path / 'a.img'
    src.write_bytes(b'1')
    result = Recorder(_cloud.Request(target='s3', name='k', src=str(src))).run()
    assert result['target'] == 's3'
    assert result['progress']['bytes_sent'] == 10 and result['progress']['retries'] == 0
    with pytest.raises(InvalidInput, match='state: absent is not supported by target s3'):
        Recorder(_cloud.Request(target='s3', name='k', state='absent')).run()


def test_marks_put_the_digest_and_family_over_the_users_tags() -> None:
    request = _cloud.Request(target='s3', name='x', family='debian-12',
                             tags={'team': 'images', _cloud.DIGEST_KEY: 'forged'})
    assert request.marks('d' * 64) == {'team': 'images', _cloud.DIGEST_KEY: 'd' * 64, _cloud.FAMILY_KEY: 'debian-12'}
    assert _cloud.Request(target='s3', name='x').marks('e' * 64) == {_cloud.DIGEST_KEY: 'e' * 64}


@pytest.mark.parametrize('name, version, expected', [
    ('debian-12', '1.0.0', 'debian-12-1.0.0'),
])
def test_default_image_name_keeps_what_most_clouds_accept(name: str, version: str, expected: str) -> None:
    assert _cloud.default_image_name('aws_ami', name, version) == expected


@pytest.mark.parametrize('name, version, expected', [
    ('debian-12', '1.0.0', 'debian-12-1-0-0'),
    ('Debian_12', '2026.12.07', 'debian-12-2026-12-07'),
    ('12-base', '1', 'image-12-base-1'),
    ('x' * 70, '1', 'x' * 63),
])
def test_default_image_name_of_gce_is_in_its_alphabet(name: str, version: str, expected: str) -> None:
    made = _cloud.default_image_name('gce', name, version)
    assert made == expected
    _cloud.check_image_name('gce', made)


@pytest.mark.parametrize('tags, message', [
    ({'Team': 'ops'}, r'tags.Team: Google Compute Engine label keys'),
    ({'team': 'Ops'}, r"tags.team: 'Ops' is not a Google Compute Engine label value"),
    ({'team': 'x' * 64}, r'tags.team: .* is not a Google Compute Engine label value'),
    ({'osimage-sha256-1': 'a'}, r'tags.osimage-sha256-1: labels starting with osimage- are the ones cloud_upload sets'),
])
def test_gce_labels_are_checked_before_any_call(tags: t.Dict[str, str], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        _cloud.check_tags('gce', tags)
    _cloud.check_tags('s3', tags)


def test_check_request_refuses_a_gce_name_the_api_would_refuse(tmp_path: t.Any) -> None:
    src = tmp_path / 'disk.tar.gz'
    src.write_bytes(b'x')
    with pytest.raises(InvalidInput, match=r"name: 'Debian-12' is not a Google Compute Engine image name"):
        _cloud.check_request(_cloud.Request(target='gce', name='Debian-12', src=str(src)))
    with pytest.raises(InvalidInput, match=r"family: 'debian_12' is not a Google Compute Engine image name"):
        _cloud.check_request(_cloud.Request(target='gce', name='debian-12', family='debian_12', src=str(src)))


def test_http_status_and_short_error_read_each_sdks_attributes() -> None:
    class Response:
        status_code = 503

    class AzureLike(Exception):
        status_code = 429

    class OpenStackLike(Exception):
        http_status = 500

    class GoogleLike(Exception):
        code = 404

    class WithResponse(Exception):
        response = Response()

    assert [_cloud.http_status(e) for e in (AzureLike(), OpenStackLike(), GoogleLike(), WithResponse(), ValueError())] == [
        429, 500, 404, 503, None]
    assert _cloud.short_error(ValueError('first line\nsecond')) == 'first line'
    assert _cloud.short_error(ValueError('refused', {'error': 'invalid_grant'})) == 'refused'
    assert _cloud.short_error(ValueError()) == 'ValueError'
    assert 'ValueError' in _cloud.class_names(ValueError()) and 'Exception' in _cloud.class_names(ValueError())
