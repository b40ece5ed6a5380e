# -*- coding: utf-8 -*-
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
import typing as t

import pytest

from ansible_collections.osimage.builder.plugins.module_utils import _cloud, _cloud_gce
from ansible_collections.osimage.builder.plugins.module_utils._cloud_gce import GceBackend
from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput, WaitTimeout

MIB = 1024 * 1024
KEY = {'type': 'service_account', 'project_id': 'key-project', 'private_key_id': 'kid-1',
       'private_key': '-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n',
       'client_email': 'uploader@key-project.iam.gserviceaccount.com', 'token_uri': 'http://127.0.0.1:9/token'}


def write_tar(path: str, size: int = MIB, seed: bytes = b'one', name: str = 'disk.raw') -> str:
    """A gzip tar of disk.raw as image_export writes it for format gce (random data, so it does not compress)."""
    data = hashlib.sha256(seed).digest() * (size // 32)
    data = os.urandom(size) if seed == b'random' else data
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode='w', format=tarfile.GNU_FORMAT) as archive:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    with open(path, 'wb') as handle:
        handle.write(gzip.compress(buffer.getvalue(), compresslevel=1))
    return path


def digest_of(path: str) -> str:
    with open(path, 'rb') as handle:
        return hashlib.sha256(handle.read()).hexdigest()


# ----- fakes of the SDKs' exceptions (the backend classifies them by class name and code) ----------------------

class GoogleAPICallError(Exception):
    code = 0

    def __init__(self, message: str = 'failed', code: t.Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class NotFound(GoogleAPICallError):
    code = 404


class ServiceUnavailable(GoogleAPICallError):
    code = 503


class TooManyRequests(GoogleAPICallError):
    code = 429


class Unauthorized(GoogleAPICallError):
    code = 401


class Forbidden(GoogleAPICallError):
    code = 403


class PreconditionFailed(GoogleAPICallError):
    code = 412


class RefreshError(Exception):
    """Named like google.auth.exceptions.RefreshError: (message, response data)."""


# requests.exceptions.ConnectionError is an IOError, not the built-in ConnectionError.
RequestsConnectionError = type('ConnectionError', (IOError,), {})


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: t.List[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# ----- Cloud Storage ------------------------------------------------------------------------------------------

class StoredObject:
    def __init__(self, name: str, data: bytes, metadata: t.Dict[str, str], generation: int) -> None:
        self.name, self.data, self.metadata, self.generation = name, data, dict(metadata), generation
        self.size = len(data)


class UploadBlob:
    """bucket.blob(): upload_from_file reads the stream in chunks as the resumable upload does."""

    def __init__(self, bucket: 'FakeBucket', name: str, chunk_size: int) -> None:
        assert chunk_size % (256 * 1024) == 0
        self.bucket, self.name, self.chunk_size = bucket, name, chunk_size
        self.metadata: t.Dict[str, str] = {}

    def upload_from_file(self, stream: t.Any, size: int, content_type: str, retry: t.Any, if_generation_match: int,
                         checksum: str, timeout: float) -> None:
        bucket = self.bucket
        bucket.calls.append('upload %s' % self.name)
        assert retry is None and checksum == 'crc32c' and content_type == 'application/gzip'
        if bucket.fail_upload:
            raise bucket.fail_upload.pop(0)
        current = bucket.objects.get(self.name)
        if (current.generation if current else 0) != if_generation_match:
            raise PreconditionFailed('At least one of the pre-conditions you specified did not hold.')
        data = b''
        while len(data) < size:
            chunk = stream.read(self.chunk_size)
            assert chunk, 'the stream ended early'
            data += chunk
        bucket.generation += 1
        bucket.objects[self.name] = StoredObject(self.name, data, self.metadata, bucket.generation)
        bucket.uploads.append(bucket.objects[self.name])


class FakeBucket:
    def __init__(self, name: str = 'images') -> None:
        self.name = name
        self.objects: t.Dict[str, StoredObject] = {}
        self.uploads: t.List[StoredObject] = []
        self.calls: t.List[str] = []
        self.fail_upload: t.List[BaseException] = []
        self.generation = 100

    def get_blob(self, name: str, retry: t.Any, timeout: float) -> t.Optional[StoredObject]:
        assert retry is None
        self.calls.append('get %s' % name)
        return self.objects.get(name)

    def blob(self, name: str, chunk_size: int) -> UploadBlob:
        return UploadBlob(self, name, chunk_size)

    def delete_blob(self, name: str, retry: t.Any, timeout: float) -> None:
        self.calls.append('delete %s' % name)
        if name not in self.objects:
            raise NotFound('No such object: %s/%s' % (self.name, name))
        del self.objects[name]

    def put(self, name: str, data: bytes, metadata: t.Dict[str, str]) -> StoredObject:
        self.generation += 1
        self.objects[name] = StoredObject(name, data, metadata, self.generation)
        return self.objects[name]


class FakeStorage:
    def __init__(self) -> None:
        self.buckets: t.Dict[str, FakeBucket] = {}

    def bucket(self, name: str) -> FakeBucket:
        return self.buckets.setdefault(name, FakeBucket(name))


# ----- Compute Engine ------------------------------------------------------------------------------------------

class FakeCompute:
    """ImagesClient and GlobalOperationsClient over one store; inserts finish after `polls` gets, deletes after one."""

    def __init__(self) -> None:
        self.images: t.Dict[str, t.Dict[str, t.Any]] = {}
        self.operations: t.Dict[str, t.Dict[str, t.Any]] = {}
        self.calls: t.List[str] = []
        self.polls = 1
        self.outcome = 'READY'                       # what a created image becomes: READY or FAILED
        self.operation_errors: t.Optional[t.List[t.Dict[str, str]]] = None
        self.fail: t.Dict[str, t.List[BaseException]] = {}
        self.counter = 0
        self.requests: t.List[t.Any] = []

    def _maybe_fail(self, call: str) -> None:
        if self.fail.get(call):
            raise self.fail[call].pop(0)

    @staticmethod
    def make(name: str, labels: t.Dict[str, str], status: str = 'READY', created: str = '2024-01-01T00:00:00.000-08:00',
             source: str = 'https://storage.googleapis.com/images/x.tar.gz') -> t.Dict[str, t.Any]:
        return {'name': name, 'id': str(abs(hash(name)) % 10 ** 12), 'labels': labels, 'status': status,
                'creationTimestamp': created, 'rawDisk': {'source': source},
                'selfLink': 'https://compute.example/projects/proj-1/global/images/' + name}

    def _operation(self, kind: str, name: str) -> t.Dict[str, t.Any]:
        self.counter += 1
        op = {'name': 'operation-%d' % self.counter, 'status': 'RUNNING', 'operationType': kind, '_image': name,
              '_polls': 0}
        self.operations[op['name']] = op
        return {k: v for k, v in op.items() if not k.startswith('_')}

    # ImagesClient
    def get(self, project: str, image: t.Optional[str] = None, operation: t.Optional[str] = None, retry: t.Any = None,
            timeout: float = 0) -> t.Dict[str, t.Any]:
        assert retry is None and project == 'proj-1'
        if operation is not None:
            return self._get_operation(operation)
        self.calls.append('get %s' % image)
        self._maybe_fail('get')
        if image not in self.images:
            raise NotFound("The resource 'projects/proj-1/global/images/%s' was not found" % image)
        return dict(self.images[image])

    def insert_unary(self, project: str, image_resource: t.Dict[str, t.Any], retry: t.Any, timeout: float) -> t.Dict[str, t.Any]:
        assert retry is None
        self.calls.append('insert %s' % image_resource['name'])
        self.requests.append(image_resource)
        self._maybe_fail('insert')
        image = dict(image_resource, status='PENDING', id=str(9000 + self.counter),
                     creationTimestamp='2024-05-01T10:00:00.000-07:00',
                     selfLink='https://compute.example/projects/proj-1/global/images/' + image_resource['name'])
        self.images[image['name']] = image
        return self._operation('insert', image['name'])

    def delete_unary(self, project: str, image: str, retry: t.Any, timeout: float) -> t.Dict[str, t.Any]:
        self.calls.append('delete %s' % image)
        if image not in self.images:
            raise NotFound("The resource 'projects/proj-1/global/images/%s' was not found" % image)
        return self._operation('delete', image)

    def list(self, request: t.Dict[str, str], retry: t.Any, timeout: float) -> t.Iterator[t.Dict[str, t.Any]]:
        self.calls.append('list %s' % request['filter'])
        key, _unused, value = request['filter'][len('labels.'):].partition('=')
        for image in list(self.images.values()):
            if (image.get('labels') or {}).get(key) == value:
                yield dict(image)

    # GlobalOperationsClient
    def _get_operation(self, name: str) -> t.Dict[str, t.Any]:
        self.calls.append('operation %s' % name)
        self._maybe_fail('operation')
        op = self.operations[name]
        op['_polls'] += 1
        image = self.images.get(op['_image'])
        if op['operationType'] == 'insert' and image is not None and self.outcome == 'FAILED':
            image['status'] = 'FAILED'   # FAILED shows on the image before the operation ends
        needed = self.polls if op['operationType'] == 'insert' else 1
        if op['_polls'] >= needed and op['status'] != 'DONE':
            op['status'] = 'DONE'
            if op['operationType'] == 'delete':
                self.images.pop(op['_image'], None)
            elif self.operation_errors:
                op['error'] = {'errors': self.operation_errors}
                if image is not None:
                    image['status'] = 'FAILED'
            elif image is not None:
                image['status'] = self.outcome
        return {k: v for k, v in op.items() if not k.startswith('_')}


class FakeComputeV1:
    """What the backend takes from google.cloud.compute_v1 besides the clients: Image.from_json, GuestOsFeature.Type."""

    class Image:
        @staticmethod
        def from_json(text: str) -> t.Dict[str, t.Any]:
            return json.loads(text)

    class GuestOsFeature:
        class Type:
            UNDEFINED_TYPE = 0
            UEFI_COMPATIBLE = 1
            GVNIC = 2
            VIRTIO_SCSI_MULTIQUEUE = 3


def backend(tmp_path: t.Any, src: t.Optional[str] = None, gce: t.Optional[t.Dict[str, t.Any]] = None,
            creds: t.Optional[t.Dict[str, t.Any]] = None, storage: t.Optional[FakeStorage] = None,
            compute: t.Optional[FakeCompute] = None, clock: t.Optional[FakeClock] = None, **kwargs: t.Any) -> GceBackend:
    if src is None and kwargs.get('state', 'present') == 'present':
        src = str(tmp_path / 'img.tar.gz')
        if not os.path.exists(src):
            write_tar(src)
    options = {'bucket': 'images', 'project': 'proj-1', 'architecture': 'X86_64', 'guest_os_features': [],
               'licenses': [], 'storage_locations': [], 'keep_object': False}
    options.update(gce or {})
    kwargs.setdefault('name', 'img-1')
    clock = clock or FakeClock()
    request = _cloud.Request(target='gce', src=src, options={'gce': options}, credentials=dict(creds or {}),
                             retries=2, **kwargs)
    back = GceBackend(request, session_factory=lambda req, retryable: _cloud.Session(
        req, retryable, sleep=clock.sleep, clock=clock))
    back._storage = storage or FakeStorage()
    compute = compute or FakeCompute()
    back._images = back._operations = compute
    back._compute_v1 = FakeComputeV1
    return back


def the_bucket(back: GceBackend) -> FakeBucket:
    return t.cast(FakeStorage, back._storage).bucket('images')


def the_compute(back: GceBackend) -> FakeCompute:
    return t.cast(FakeCompute, back._images)


# ----- the artifact ---------------------------------------------------------------------------------------------

def test_a_gce_tar_is_accepted(tmp_path: t.Any) -> None:
    _cloud_gce.check_gce_tar(write_tar(str(tmp_path / 'a.tar.gz')))


@pytest.mark.parametrize('content, message', [
    (b'QFI\xfb' + bytes(1000), 'is not gzip compressed'),
    (gzip.compress(b'just text, no tar' * 100), 'gzip compressed but not a tar archive'),
    (b'\x1f\x8b' + b'garbage' * 10, 'not a readable gzip file'),
])
def test_src_that_is_not_a_gce_tar_is_refused(tmp_path: t.Any, content: bytes, message: str) -> None:
    path = str(tmp_path / 'a.bin')
    with open(path, 'wb') as handle:
        handle.write(content)
    with pytest.raises(InvalidInput) as exc:
        _cloud_gce.check_gce_tar(path)
    assert exc.value.msg.startswith('src: ') and message in exc.value.msg and 'add a gce output' in exc.value.msg


def test_tar_without_disk_raw_is_refused_before_any_call(tmp_path: t.Any) -> None:
    back = backend(tmp_path, src=write_tar(str(tmp_path / 'b.tar.gz'), name='image.raw'))
    with pytest.raises(InvalidInput, match="the first file in .* is 'image.raw', not disk.raw"):
        back.run()
    assert the_compute(back).calls == [] and the_bucket(back).calls == []


# ----- option, name and label checks ----------------------------------------------------------------------------

@pytest.mark.parametrize('gce, kwargs, message', [
    ({'bucket': None}, {}, 'gce.bucket: the Cloud Storage bucket'),
    ({'bucket': 'My_Bucket'}, {}, "gce.bucket: 'My_Bucket' is not a bucket name"),
    ({'bucket': 'a..b'}, {}, 'gce.bucket: '),
    ({'compute_endpoint': 'ftp://127.0.0.1:1'}, {}, 'gce.compute_endpoint: '),
    ({'storage_endpoint': 'localhost:9023'}, {}, 'gce.storage_endpoint: '),
    ({'guest_os_features': ['uefi_compatible']}, {}, 'gce.guest_os_features: '),
    ({'storage_locations': ['EU']}, {}, 'gce.storage_locations: '),
    ({}, {'name': 'Img_1'}, "name: 'Img_1' is not a Google Compute Engine image name"),
    ({}, {'name': 'img-'}, 'name: '),
    ({}, {'family': 'Debian 12'}, "family: 'Debian 12' is not a Google Compute Engine image name"),
    ({}, {'tags': {'Build': '1'}}, "tags.Build: Google Compute Engine label keys are"),
    ({}, {'tags': {'build': 'Nightly 7'}}, "tags.build: 'Nightly 7' is not a Google Compute Engine label value"),
    ({}, {'tags': {'owner': 'x' * 64}}, 'tags.owner: '),
    ({}, {'tags': {'osimage-sha256-1': 'a'}}, 'tags.osimage-sha256-1: labels starting with osimage- are'),
    ({}, {'tags': {'k%d' % i: 'v' for i in range(62)}}, 'tags: 62 tags'),
])
def test_checks_name_the_option_before_any_call(tmp_path: t.Any, gce: t.Dict[str, t.Any], kwargs: t.Dict[str, t.Any],
                                                message: str) -> None:
    back = backend(tmp_path, gce=gce, **kwargs)
    with pytest.raises(InvalidInput) as exc:
        back.run()
    assert exc.value.msg.startswith(message)
    assert the_compute(back).calls == [] and the_bucket(back).calls == []


def test_plain_http_endpoints_off_loopback_are_warned_about(tmp_path: t.Any) -> None:
    warnings: t.List[str] = []
    back = backend(tmp_path, gce={'compute_endpoint': 'http://compute.internal:8080',
                                  'storage_endpoint': 'http://127.0.0.1:9023'})
    back.session.warn = warnings.append
    back.check()
    assert warnings == ['gce.compute_endpoint: http://compute.internal:8080 is plain http; the access token is sent '
                        'unencrypted']


def test_unknown_guest_os_feature_is_refused_before_anything_is_sent(tmp_path: t.Any) -> None:
    back = backend(tmp_path, gce={'guest_os_features': ['UEFI_COMPATIBLE', 'WARP_DRIVE']})
    with pytest.raises(InvalidInput, match='gce.guest_os_features: WARP_DRIVE is not one of GVNIC, UEFI_COMPATIBLE'):
        back.run()
    assert the_bucket(back).uploads == [] and 'insert img-1' not in the_compute(back).calls


def test_labels_hold_the_digest_in_two_halves() -> None:
    digest = hashlib.sha256(b'x').hexdigest()
    labels = _cloud_gce.digest_labels(digest)
    assert labels == {'osimage-sha256-1': digest[:32], 'osimage-sha256-2': digest[32:]}
    assert all(_cloud.GCE_LABEL_VALUE_RE.match(value) for value in labels.values())
    assert all(_cloud.GCE_LABEL_KEY_RE.match(key) for key in labels)
    assert _cloud_gce.labels_digest(labels) == digest
    assert _cloud_gce.labels_digest({'osimage-sha256-1': digest[:32]}) is None
    assert _cloud_gce.labels_digest(None) is None


@pytest.mark.parametrize('text, expected', [
    ('2024-05-01T10:00:00.123-07:00', '2024-05-01T17:00:00.123000Z'),
    ('2024-05-01T23:30:00.000-07:00', '2024-05-02T06:30:00.000000Z'),
    ('2024-05-01T10:00:00Z', '2024-05-01T10:00:00.000000Z'),
    ('', ''),
    (None, ''),
])
def test_creation_times_become_utc(text: t.Optional[str], expected: str) -> None:
    assert _cloud_gce.utc_iso(text) == expected


def test_object_urls() -> None:
    assert _cloud_gce.object_url('images', 'a b/c.tar.gz') == 'https://storage.googleapis.com/images/a%20b/c.tar.gz'
    assert _cloud_gce.split_object_url('https://storage.googleapis.com/images/a%20b/c.tar.gz') == ('images', 'a b/c.tar.gz')
    assert _cloud_gce.split_object_url('gs://images/x.tar.gz') == ('images', 'x.tar.gz')
    assert _cloud_gce.split_object_url('https://example.org/images/x.tar.gz') is None
    assert _cloud_gce.split_object_url('gs://images/') is None
    assert _cloud_gce.split_object_url(None) is None


# ----- credentials and project ------------------------------------------------------------------------------------

def test_project_comes_from_the_option_then_gcp_project_then_the_key(tmp_path: t.Any) -> None:
    key = json.dumps(KEY)
    back = backend(tmp_path, gce={'project': None}, creds={'gcp_credentials': key, 'gcp_project': 'from-var'})
    back.check()
    assert back.project == 'from-var'
    back = backend(tmp_path, gce={'project': None}, creds={'gcp_credentials': key})
    back.check()
    assert back.project == 'key-project'
    path = str(tmp_path / 'key.json')
    with open(path, 'w', encoding='utf-8') as handle:
        json.dump(dict(KEY, project_id='file-project'), handle)
    back = backend(tmp_path, gce={'project': None}, creds={'gcp_credentials_file': path})
    back.check()
    assert back.project == 'file-project'
    back = backend(tmp_path, gce={'project': 'opt'}, creds={'gcp_credentials': key, 'gcp_project': 'from-var'})
    back.check()
    assert back.project == 'opt'


def test_no_project_is_a_clear_error(tmp_path: t.Any) -> None:
    key = dict(KEY)
    del key['project_id']
    with pytest.raises(InvalidInput, match='^gce.project: no project given; set gce.project or gcp_project'):
        backend(tmp_path, gce={'project': None}, creds={'gcp_credentials': json.dumps(key)}).run()


def test_bad_keys_are_refused_without_showing_them(tmp_path: t.Any) -> None:
    secret = '{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\nTOPSECRET'
    with pytest.raises(InvalidInput) as exc:
        backend(tmp_path, gce={'project': None}, creds={'gcp_credentials': secret}).run()
    assert exc.value.msg.startswith('gcp_credentials: the JSON text is not JSON') and 'TOPSECRET' not in exc.value.msg
    incomplete = dict(KEY)
    del incomplete['client_email']
    with pytest.raises(InvalidInput, match='^gcp_credentials: the service account key .* lacks client_email'):
        backend(tmp_path, gce={'project': None}, creds={'gcp_credentials': json.dumps(incomplete)}).run()
    with pytest.raises(InvalidInput, match='^gcp_credentials_file: .*missing.json cannot be read'):
        backend(tmp_path, gce={'project': None}, creds={'gcp_credentials_file': str(tmp_path / 'missing.json')}).run()


def test_refused_token_names_the_credentials_source_not_the_secret(tmp_path: t.Any) -> None:
    compute = FakeCompute()
    compute.fail['get'] = [RefreshError('invalid_grant: Invalid JWT Signature.', {'error': 'invalid_grant'})]
    back = backend(tmp_path, compute=compute, creds={'gcp_credentials': json.dumps(KEY)})
    with pytest.raises(_cloud.CredentialsError) as exc:
        back.run()
    assert exc.value.msg == ('Images.Get img-1: the token endpoint refused the credentials of gcp_credentials (or '
                             'GCP_SERVICE_ACCOUNT_CONTENTS): invalid_grant: Invalid JWT Signature.')
    assert KEY['private_key'] not in exc.value.msg and compute.calls == ['get img-1']
    path = str(tmp_path / 'key.json')
    back = backend(tmp_path, creds={'gcp_credentials_file': path})
    error = back._error('Objects.Get x', RefreshError('invalid_grant: account not found', {}))
    assert isinstance(error, _cloud.CredentialsError) and 'gcp_credentials_file %s: invalid_grant' % path in error.msg


def test_service_account_credentials_use_the_keys_token_uri(tmp_path: t.Any) -> None:
    pytest.importorskip('google.oauth2.service_account')
    rsa = pytest.importorskip('cryptography.hazmat.primitives.asymmetric.rsa')
    serialization = pytest.importorskip('cryptography.hazmat.primitives.serialization')
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    key = dict(KEY, private_key=pem, token_uri='http://127.0.0.1:4/token')
    back = backend(tmp_path, gce={'project': None}, creds={'gcp_credentials': json.dumps(key)})
    back.check()
    credentials, project = back.credentials_and_project()
    assert project == 'key-project' and credentials.service_account_email == KEY['client_email']
    assert credentials._token_uri == 'http://127.0.0.1:4/token' and credentials.scopes == _cloud_gce.SCOPES


def test_missing_library_names_the_pip_package(tmp_path: t.Any, monkeypatch: t.Any) -> None:
    monkeypatch.setitem(sys.modules, 'google.cloud.compute_v1', None)
    back = backend(tmp_path)
    back._compute_v1 = None
    with pytest.raises(_cloud.LibraryMissing) as exc:
        back.compute_v1()
    assert 'pip install google-cloud-compute' in exc.value.msg and 'target gce' in exc.value.msg


def test_module_imports_without_the_sdk() -> None:
    source = open(_cloud_gce.__file__, encoding='utf-8').read()
    assert 'import google' not in source and 'from google' not in source


# ----- retries and errors -------------------------------------------------------------------------------------------

@pytest.mark.parametrize('exc, retry', [
    (ConnectionError('reset'), True),
    (TimeoutError('slow'), True),
    (RequestsConnectionError('Connection aborted.'), True),
    (ServiceUnavailable('backend error'), True),
    (TooManyRequests('rate limit exceeded'), True),
    (GoogleAPICallError('internal', code=500), True),
    (NotFound('no such image'), False),
    (Unauthorized('bad token'), False),
    (Forbidden('no permission'), False),
    (PreconditionFailed('generation'), False),
    (RefreshError('invalid_grant', {}), False),
    (InvalidInput('x'), False),
    (ValueError('x'), False),
])
def test_retry_classification(tmp_path: t.Any, exc: BaseException, retry: bool) -> None:
    assert backend(tmp_path).is_retryable(exc) is retry


def test_retry_classification_of_the_real_exceptions(tmp_path: t.Any) -> None:
    exceptions = pytest.importorskip('google.api_core.exceptions')
    auth = pytest.importorskip('google.auth.exceptions')
    requests = pytest.importorskip('requests')
    back = backend(tmp_path)
    assert back.is_retryable(exceptions.ServiceUnavailable('x'))
    assert back.is_retryable(exceptions.TooManyRequests('x'))
    assert back.is_retryable(exceptions.BadGateway('x'))
    assert back.is_retryable(requests.exceptions.ConnectionError('x'))
    assert back.is_retryable(auth.TransportError('x'))
    assert not back.is_retryable(exceptions.NotFound('x'))
    assert not back.is_retryable(exceptions.Forbidden('x'))
    assert not back.is_retryable(auth.RefreshError('invalid_grant', {}))
    assert isinstance(back._error('Images.Get x', auth.RefreshError('invalid_grant: bad', {})), _cloud.CredentialsError)

    def gone() -> None:
        raise exceptions.NotFound('gone')

    assert back._get_or_none('Images.Get x', gone) is None


def test_error_mapping(tmp_path: t.Any) -> None:
    back = backend(tmp_path, creds={'gcp_credentials_file': '/keys/sa.json'})
    back.check()
    error = back._error('Images.Get x', Unauthorized('Request had invalid authentication credentials.'))
    assert isinstance(error, _cloud.CredentialsError)
    assert error.msg.startswith('Images.Get x: Compute Engine refused the credentials of gcp_credentials_file /keys/sa.json')
    error = back._error('Objects.Insert x', Forbidden('uploader does not have storage.objects.create access'))
    assert isinstance(error, _cloud.CredentialsError) and 'roles/storage.objectAdmin on bucket images' in error.msg
    error = back._error('Objects.Insert x', NotFound('The specified bucket does not exist.'))
    assert error.__class__ is _cloud.CloudError and error.msg.startswith('gce.bucket: bucket images does not exist')
    error = back._error('Images.Insert x', GoogleAPICallError('Invalid value for field', code=400))
    assert error.__class__ is _cloud.CloudError and error.msg == 'Images.Insert x failed: Invalid value for field'
    assert error.context['status'] == 400
    assert 'application default credentials' in backend(tmp_path).source


# ----- state=present --------------------------------------------------------------------------------------------

def test_first_upload_creates_a_ready_image_and_deletes_the_object(tmp_path: t.Any) -> None:
    src = write_tar(str(tmp_path / 'big.tar.gz'), size=10 * MIB, seed=b'random')
    back = backend(tmp_path, src=src, family='debian-12', tags={'build': '7'}, description='Debian 12',
                   gce={'guest_os_features': ['UEFI_COMPATIBLE', 'GVNIC'], 'architecture': 'ARM64',
                        'licenses': ['projects/debian-cloud/global/licenses/debian-12-bookworm'],
                        'storage_locations': ['eu']})
    result = back.run()
    digest = digest_of(src)
    compute, bucket = the_compute(back), the_bucket(back)
    image = compute.images['img-1']
    assert result['changed'] and result['sha256'] == digest and not result['resumed']
    assert result['id'] == image['id'] and result['url'] == image['selfLink']
    assert result['details']['status'] == 'READY' and result['details']['object_deleted']
    assert result['details']['object_url'] == 'https://storage.googleapis.com/images/img-1.tar.gz'
    assert result['details']['project'] == 'proj-1' and result['details']['family'] == 'debian-12'
    assert compute.requests == [{
        'name': 'img-1', 'family': 'debian-12', 'description': 'Debian 12', 'architecture': 'ARM64',
        'rawDisk': {'source': 'https://storage.googleapis.com/images/img-1.tar.gz'},
        'labels': {'build': '7', 'osimage-sha256-1': digest[:32], 'osimage-sha256-2': digest[32:],
                   'osimage-family': 'debian-12'},
        'guestOsFeatures': [{'type': 'UEFI_COMPATIBLE'}, {'type': 'GVNIC'}],
        'licenses': ['projects/debian-cloud/global/licenses/debian-12-bookworm'], 'storageLocations': ['eu']}]
    uploaded = bucket.uploads[0]
    assert uploaded.data == open(src, 'rb').read() and uploaded.name == 'img-1.tar.gz'
    assert uploaded.metadata == {'osimage-sha256': digest, 'osimage-family': 'debian-12', 'build': '7'}
    assert bucket.objects == {} and bucket.calls[-1] == 'delete img-1.tar.gz'
    assert result['progress']['bytes_sent'] == os.path.getsize(src) and result['progress']['retries'] == 0
    assert compute.calls.index('insert img-1') < compute.calls.index('operation operation-1')


def test_keep_object_and_gce_object(tmp_path: t.Any) -> None:
    back = backend(tmp_path, gce={'keep_object': True, 'object': 'staging/img.tar.gz'})
    result = back.run()
    assert not result['details']['object_deleted']
    assert list(the_bucket(back).objects) == ['staging/img.tar.gz']
    assert the_compute(back).requests[0]['rawDisk']['source'] == 'https://storage.googleapis.com/images/staging/img.tar.gz'


def test_repeat_sends_nothing(tmp_path: t.Any) -> None:
    first = backend(tmp_path)
    first.run()
    compute = the_compute(first)
    compute.calls.clear()
    again = backend(tmp_path, storage=first._storage, compute=compute, sha256=digest_of(first.request.src))
    result = again.run()
    assert not result['changed'] and result['progress']['bytes_sent'] == 0 and compute.calls == ['get img-1']
    assert result['id'] == compute.images['img-1']['id'] and the_bucket(again).calls[-1] == 'delete img-1.tar.gz'
    hashed = backend(tmp_path, storage=first._storage, compute=compute).run()
    assert not hashed['changed'] and hashed['sha256'] == digest_of(first.request.src)


def test_check_mode_sends_nothing(tmp_path: t.Any) -> None:
    back = backend(tmp_path, check_mode=True)
    result = back.run()
    assert result['changed'] and result['details']['would_upload'] and result['details']['would_create_image']
    assert the_compute(back).calls == ['get img-1'] and the_bucket(back).calls == ['get img-1.tar.gz']
    assert the_bucket(back).objects == {}


def test_image_with_another_digest_is_a_conflict_unless_force(tmp_path: t.Any) -> None:
    compute = FakeCompute()
    compute.images['img-1'] = FakeCompute.make('img-1', _cloud_gce.digest_labels('a' * 64))
    back = backend(tmp_path, compute=compute)
    with pytest.raises(_cloud.Conflict, match='^name: image img-1 in project proj-1 has SHA-256 a{64}, not .*force=true'):
        back.run()
    assert the_bucket(back).calls == [] and compute.calls == ['get img-1']
    check = backend(tmp_path, compute=compute, force=True, check_mode=True).run()
    assert check['details']['would_replace_image'] and compute.images['img-1']['labels']['osimage-sha256-1'] == 'a' * 32
    result = backend(tmp_path, compute=compute, force=True, storage=back._storage).run()
    digest = digest_of(back.request.src)
    assert result['changed'] and _cloud_gce.labels_digest(compute.images['img-1']['labels']) == digest
    assert [c for c in compute.calls if not c.startswith(('get', 'operation'))] == ['delete img-1', 'insert img-1']


def test_foreign_image_is_a_conflict(tmp_path: t.Any) -> None:
    compute = FakeCompute()
    compute.images['img-1'] = FakeCompute.make('img-1', {})
    with pytest.raises(_cloud.Conflict, match='has no osimage-sha256 labels .this module did not create it.'):
        backend(tmp_path, compute=compute).run()


def test_object_with_the_digest_is_reused(tmp_path: t.Any) -> None:
    src = write_tar(str(tmp_path / 'img.tar.gz'))
    storage = FakeStorage()
    storage.bucket('images').put('img-1.tar.gz', open(src, 'rb').read(), {'osimage-sha256': digest_of(src)})
    back = backend(tmp_path, src=src, storage=storage)
    result = back.run()
    assert result['changed'] and the_bucket(back).uploads == []
    assert result['progress']['bytes_sent'] == 0 and result['progress']['bytes_skipped'] == os.path.getsize(src)
    assert the_bucket(back).objects == {}


def test_object_of_another_digest_is_replaced_and_a_foreign_one_is_a_conflict(tmp_path: t.Any) -> None:
    storage = FakeStorage()
    old = storage.bucket('images').put('img-1.tar.gz', b'old', {'osimage-sha256': 'f' * 64})
    back = backend(tmp_path, storage=storage, gce={'keep_object': True})
    back.run()
    assert the_bucket(back).objects['img-1.tar.gz'].generation > old.generation
    storage = FakeStorage()
    storage.bucket('images').put('img-1.tar.gz', b'theirs', {})
    with pytest.raises(_cloud.Conflict, match='^gce.object: object .*img-1.tar.gz exists without osimage-sha256'):
        backend(tmp_path, storage=storage).run()
    assert storage.bucket('images').objects['img-1.tar.gz'].data == b'theirs'


def test_digest_mismatch_leaves_nothing_even_with_keep_partial(tmp_path: t.Any) -> None:
    src = write_tar(str(tmp_path / 'big.tar.gz'), size=10 * MIB, seed=b'random')
    back = backend(tmp_path, src=src, sha256='0' * 64, keep_partial=True)
    with pytest.raises(_cloud.DigestMismatch, match='not the expected 0{64}'):
        back.run()
    bucket = the_bucket(back)
    assert bucket.objects == {} and bucket.uploads == []
    assert 'insert img-1' not in the_compute(back).calls
    # the last chunk was held back: fewer bytes than the file went out
    assert back.session.progress.bytes_sent < os.path.getsize(src)


def test_failed_upload_deletes_nothing_it_did_not_make_and_is_reported(tmp_path: t.Any) -> None:
    back = backend(tmp_path)
    the_bucket(back).fail_upload = [Forbidden('uploader does not have storage.objects.create access')]
    with pytest.raises(_cloud.CredentialsError, match='^Objects.Insert img-1.tar.gz: the credentials'):
        back.run()
    assert the_bucket(back).calls[-1] == 'delete img-1.tar.gz' and the_bucket(back).objects == {}
    assert 'insert img-1' not in the_compute(back).calls


def test_transient_errors_are_retried(tmp_path: t.Any) -> None:
    back = backend(tmp_path)
    compute, bucket = the_compute(back), the_bucket(back)
    compute.fail['get'] = [ServiceUnavailable('backend error')]
    compute.fail['operation'] = [RequestsConnectionError('Connection aborted.')]
    bucket.fail_upload = [TooManyRequests('rate limit')]
    result = back.run()
    assert result['changed'] and result['progress']['retries'] == 3
    assert compute.images['img-1']['status'] == 'READY'


def test_retries_end(tmp_path: t.Any) -> None:
    back = backend(tmp_path)
    the_compute(back).fail['get'] = [ServiceUnavailable('backend error')] * 3
    with pytest.raises(_cloud.CloudError, match='^Images.Get img-1 failed: backend error'):
        back.run()


def test_failed_image_ends_the_wait_at_once_and_leaves_nothing(tmp_path: t.Any) -> None:
    compute = FakeCompute()
    compute.polls, compute.outcome = 1000, 'FAILED'
    clock = FakeClock()
    back = backend(tmp_path, compute=compute, clock=clock)
    with pytest.raises(_cloud.CloudError, match='^Images.Insert img-1 failed: image img-1 has status FAILED'):
        back.run()
    assert clock.sleeps == []
    assert 'delete img-1' in compute.calls and the_bucket(back).objects == {}


def test_operation_error_is_reported_and_keep_partial_keeps_image_and_object(tmp_path: t.Any) -> None:
    compute = FakeCompute()
    compute.operation_errors = [{'code': 'INVALID_IMAGE_FILE', 'message': 'The tar archive has no disk.raw.'}]
    back = backend(tmp_path, compute=compute, keep_partial=True)
    with pytest.raises(_cloud.CloudError) as exc:
        back.run()
    assert exc.value.msg == 'Images.Insert img-1 failed: INVALID_IMAGE_FILE: The tar archive has no disk.raw.'
    assert 'img-1' in compute.images and list(the_bucket(back).objects) == ['img-1.tar.gz']
    # the next run finds the image without the READY status it needs, with the same digest: it is made again
    compute.operation_errors = None
    result = backend(tmp_path, compute=compute, storage=back._storage).run()
    assert result['changed'] and compute.images['img-1']['status'] == 'READY'


def test_insert_refused_deletes_the_object_but_not_an_image_it_did_not_make(tmp_path: t.Any) -> None:
    compute = FakeCompute()
    compute.fail['insert'] = [GoogleAPICallError("The resource 'img-1' already exists", code=409)]
    back = backend(tmp_path, compute=compute)
    with pytest.raises(_cloud.CloudError, match='^Images.Insert img-1 failed: The resource'):
        back.run()
    assert 'delete img-1' not in compute.calls and the_bucket(back).objects == {}


def test_wait_timeout_deletes_the_half_made_image(tmp_path: t.Any) -> None:
    compute = FakeCompute()
    compute.polls = 10 ** 6
    clock = FakeClock()
    back = backend(tmp_path, compute=compute, clock=clock, wait_timeout=30)
    with pytest.raises(WaitTimeout, match='image img-1 to be READY did not happen within wait_timeout .30 s.'):
        back.run()
    assert 29 <= sum(clock.sleeps) <= 31
    assert 'delete img-1' in compute.calls and the_bucket(back).objects == {}


def test_wait_false_returns_the_pending_image_and_keeps_the_object(tmp_path: t.Any) -> None:
    back = backend(tmp_path, wait=False)
    result = back.run()
    assert result['changed'] and result['details']['status'] == 'PENDING' and not result['details']['object_deleted']
    assert list(the_bucket(back).objects) == ['img-1.tar.gz']
    assert not [c for c in the_compute(back).calls if c.startswith('operation')]


def test_pending_image_with_the_digest_is_waited_for(tmp_path: t.Any) -> None:
    src = write_tar(str(tmp_path / 'img.tar.gz'))
    compute = FakeCompute()
    compute.images['img-1'] = FakeCompute.make('img-1', _cloud_gce.digest_labels(digest_of(src)), status='PENDING')
    real_get = compute.get

    def get(**kwargs: t.Any) -> t.Dict[str, t.Any]:
        image = real_get(**kwargs)
        compute.images['img-1']['status'] = 'READY'
        return image

    compute.get = get  # type: ignore[method-assign]
    result = backend(tmp_path, src=src, compute=compute).run()
    assert not result['changed'] and result['details']['status'] == 'READY' and compute.calls == ['get img-1'] * 2


def test_real_image_message(tmp_path: t.Any) -> None:
    compute_v1 = pytest.importorskip('google.cloud.compute_v1')
    back = backend(tmp_path, family='fam', gce={'guest_os_features': ['UEFI_COMPATIBLE']})
    back._compute_v1 = compute_v1
    back.check()
    message = back._image_message(back._image_body('ab' * 32, 'https://storage.googleapis.com/images/img-1.tar.gz'))
    assert isinstance(message, compute_v1.Image)
    assert message.raw_disk.source == 'https://storage.googleapis.com/images/img-1.tar.gz'
    assert message.guest_os_features[0].type_ == 'UEFI_COMPATIBLE' and message.family == 'fam'
    assert message.labels['osimage-sha256-2'] == 'ab' * 16 and message.architecture == 'X86_64'
    summary = _cloud_gce.image_summary(message)
    assert summary['sha256'] == 'ab' * 32 and summary['family'] == 'fam'


# ----- state=absent and state=pruned ----------------------------------------------------------------------------

def test_absent_deletes_image_and_object(tmp_path: t.Any) -> None:
    first = backend(tmp_path, gce={'keep_object': True})
    first.run()
    compute = the_compute(first)
    check = backend(tmp_path, state='absent', storage=first._storage, compute=compute, check_mode=True).run()
    assert check['changed'] and [d['type'] for d in check['deleted']] == ['image', 'object']
    assert 'img-1' in compute.images and the_bucket(first).objects
    result = backend(tmp_path, state='absent', storage=first._storage, compute=compute).run()
    assert result['changed'] and compute.images == {} and the_bucket(first).objects == {}
    again = backend(tmp_path, state='absent', storage=first._storage, compute=compute).run()
    assert again == {'changed': False, 'deleted': [], 'target': 'gce'}


def test_absent_deletes_the_object_the_image_was_made_from(tmp_path: t.Any) -> None:
    first = backend(tmp_path, gce={'keep_object': True, 'object': 'staging/img-1.tar.gz'})
    first.run()
    the_bucket(first).put('img-1.tar.gz', b'not ours', {})
    result = backend(tmp_path, state='absent', storage=first._storage, compute=the_compute(first), force=True).run()
    assert [(d['type'], d['name']) for d in result['deleted']] == [
        ('image', 'img-1'), ('object', 'img-1.tar.gz'), ('object', 'staging/img-1.tar.gz')]
    assert the_bucket(first).objects == {}


def test_absent_refuses_what_this_module_did_not_make(tmp_path: t.Any) -> None:
    compute = FakeCompute()
    compute.images['img-1'] = FakeCompute.make('img-1', {})
    with pytest.raises(_cloud.Conflict, match='force=true deletes it anyway'):
        backend(tmp_path, state='absent', compute=compute).run()
    result = backend(tmp_path, state='absent', compute=compute, force=True).run()
    assert result['changed'] and compute.images == {}


def test_pruned_keeps_the_newest_images_of_the_family(tmp_path: t.Any) -> None:
    storage, compute = FakeStorage(), FakeCompute()
    bucket = storage.bucket('images')
    # In UTC: img-0 2024-01-02T04:00, img-1 2024-01-02T01:00, img-2 2024-01-01T00:00 (offsets differ on purpose).
    times = ['2024-01-01T20:00:00.000-08:00', '2024-01-02T01:00:00.000+00:00', '2023-12-31T16:00:00.000-08:00']
    for index, created in enumerate(times):
        digest = str(index) * 64
        labels = dict(_cloud_gce.digest_labels(digest), **{'osimage-family': 'fam'})
        source = 'https://storage.googleapis.com/images/img-%d.tar.gz' % index
        compute.images['img-%d' % index] = FakeCompute.make('img-%d' % index, labels, created=created, source=source)
        bucket.put('img-%d.tar.gz' % index, b'x', {'osimage-sha256': digest})
    compute.images['other'] = FakeCompute.make('other', dict(_cloud_gce.digest_labels('e' * 64),
                                                             **{'osimage-family': 'x'}))
    listed = backend(tmp_path, state='pruned', name='fam', family='fam', keep_newest=2, storage=storage,
                     compute=compute, check_mode=True).run()
    assert [i['name'] for i in listed['kept']] == ['img-0', 'img-1'] and [i['name'] for i in listed['deleted']] == ['img-2']
    assert listed['deleted'][0]['created'] == '2024-01-01T00:00:00.000000Z'
    assert set(listed['deleted'][0]) == {'name', 'id', 'created', 'sha256'}
    assert len(compute.images) == 4 and compute.calls == ['list labels.osimage-family=fam']
    result = backend(tmp_path, state='pruned', name='fam', family='fam', keep_newest=2, storage=storage,
                     compute=compute).run()
    assert result['changed'] and sorted(compute.images) == ['img-0', 'img-1', 'other']
    assert result['deleted'][0]['object_deleted'] and sorted(bucket.objects) == ['img-0.tar.gz', 'img-1.tar.gz']
    again = backend(tmp_path, state='pruned', name='fam', family='fam', keep_newest=2, storage=storage,
                    compute=compute).run()
    assert not again['changed'] and again['deleted'] == []
