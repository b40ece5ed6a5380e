# -*- coding: utf-8 -*-
from __future__ import annotations

import hashlib
import os
import struct
import threading
import typing as t

import pytest

from ansible_collections.osimage.builder.plugins.module_utils import _cloud, _cloud_azure
from ansible_collections.osimage.builder.plugins.module_utils._cloud_azure import AzureBackend
from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput

MIB = 1024 * 1024
CREDS = {'azure_storage_key': 'a2V5', 'azure_client_id': 'cid', 'azure_secret': 'sec', 'azure_tenant': 'ten',
         'azure_subscription_id': 'sub'}


def footer(size: int, disk_type: int = 2, cookie: bytes = b'conectix', checksum: t.Optional[int] = None) -> bytes:
    data = bytearray(512)
    data[:8] = cookie
    data[16:24] = b'\xff' * 8
    data[40:48] = struct.pack('>Q', size)
    data[48:56] = struct.pack('>Q', size)
    data[60:64] = struct.pack('>I', disk_type)
    data[64:68] = struct.pack('>I', (~sum(data) & 0xffffffff) if checksum is None else checksum)
    return bytes(data)


def write_vhd(path: str, mib: int = 10, payload: t.Sequence[t.Tuple[int, bytes]] = ((MIB, b'x' * 1000),),
              **kwargs: t.Any) -> str:
    size = mib * MIB
    with open(path, 'wb') as handle:
        handle.truncate(size)
        for offset, data in payload:
            handle.seek(offset)
            handle.write(data)
        handle.seek(size)
        handle.write(footer(size, **kwargs))
    return path


def digest_of(path: str) -> str:
    with open(path, 'rb') as handle:
        return hashlib.sha256(handle.read()).hexdigest()


class StatusError(Exception):
    def __init__(self, status: int, code: str = '', message: str = 'failed') -> None:
        super().__init__(message)
        self.status_code = status
        self.error_code = code


class ServiceRequestError(Exception):
    """Named like azure.core's network error; the backend classifies by class name."""


class ClientAuthenticationError(StatusError):
    pass


class Props:
    def __init__(self, size: int, metadata: t.Dict[str, str]) -> None:
        self.size = size
        self.metadata = metadata


class Range:
    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end
        self.cleared = False


class FakeBlob:
    """A page blob: records every call, keeps the pages written; fail_at makes Put Page fail at that offset."""

    def __init__(self, url: str = 'https://acct.example/images/img.vhd') -> None:
        self.url = url
        self.blob_name = url.rsplit('/', 1)[1]
        self.exists = False
        self.size = 0
        self.metadata: t.Dict[str, str] = {}
        self.pages: t.Dict[int, bytes] = {}
        self.calls: t.List[str] = []
        self.fail_at: t.Dict[int, BaseException] = {}
        self.lock = threading.Lock()

    def get_blob_properties(self) -> Props:
        self.calls.append('get')
        if not self.exists:
            raise StatusError(404, 'BlobNotFound')
        return Props(self.size, dict(self.metadata))

    def create_page_blob(self, size: int, metadata: t.Dict[str, str]) -> None:
        self.calls.append('create')
        self.exists, self.size, self.metadata, self.pages = True, size, dict(metadata), {}

    def upload_page(self, data: bytes, offset: int, length: int) -> None:
        assert offset % 512 == 0 and length % 512 == 0 and len(data) == length <= 4 * MIB
        with self.lock:
            self.calls.append('page %d' % offset)
            if offset in self.fail_at:
                raise self.fail_at[offset]
            self.pages[offset] = data

    def set_blob_metadata(self, metadata: t.Dict[str, str]) -> None:
        self.calls.append('metadata')
        assert self.exists
        self.metadata = dict(metadata)

    def delete_blob(self, **kwargs: t.Any) -> None:
        self.calls.append('delete')
        if not self.exists:
            raise StatusError(404, 'BlobNotFound')
        self.exists = False

    def list_page_ranges(self) -> t.List[Range]:
        return [Range(offset, offset + len(data) - 1) for offset, data in sorted(self.pages.items())]

    def content(self) -> bytes:
        data = bytearray(self.size)
        for offset, page in self.pages.items():
            data[offset:offset + len(page)] = page
        return bytes(data)


class Poller:
    def __init__(self, result: t.Any = None, error: t.Optional[BaseException] = None) -> None:
        self._result, self._error = result, error

    def done(self) -> bool:
        return True

    def result(self) -> t.Any:
        if self._error:
            raise self._error
        return self._result


class FakeImages:
    def __init__(self) -> None:
        self.images: t.Dict[str, t.Dict[str, t.Any]] = {}
        self.calls: t.List[str] = []
        self.fail_create: t.Optional[BaseException] = None

    @staticmethod
    def make(name: str, tags: t.Dict[str, str], state: str = 'Succeeded', blob: str = 'https://acct.example/images/x.vhd',
             ) -> t.Dict[str, t.Any]:
        return {'id': '/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/images/' + name, 'name': name,
                'location': 'westeurope', 'tags': tags,
                'properties': {'provisioningState': state, 'storageProfile': {'osDisk': {'blobUri': blob}}}}

    def get(self, group: str, name: str) -> t.Dict[str, t.Any]:
        self.calls.append('get %s' % name)
        if name not in self.images:
            raise StatusError(404, 'ResourceNotFound')
        return self.images[name]

    def begin_create_or_update(self, group: str, name: str, body: t.Dict[str, t.Any]) -> Poller:
        self.calls.append('put %s' % name)
        image = dict(body, id='/subscriptions/sub/resourceGroups/%s/providers/Microsoft.Compute/images/%s' % (group, name),
                     name=name)
        image['properties'] = dict(body['properties'], provisioningState='Succeeded')
        if self.fail_create:
            image['properties']['provisioningState'] = 'Failed'
            self.images[name] = image
            return Poller(error=self.fail_create)
        self.images[name] = image
        return Poller(image)

    def begin_delete(self, group: str, name: str) -> Poller:
        self.calls.append('delete %s' % name)
        self.images.pop(name, None)
        return Poller()

    def list_by_resource_group(self, group: str) -> t.List[t.Dict[str, t.Any]]:
        self.calls.append('list')
        return list(self.images.values())


class FakeCompute:
    def __init__(self) -> None:
        self.images = FakeImages()


class FakeService:
    def __init__(self) -> None:
        self.url = 'https://acct.example/'
        self.blobs: t.Dict[t.Tuple[str, str], FakeBlob] = {}

    def get_blob_client(self, container: str, name: str) -> FakeBlob:
        key = (container, name)
        if key not in self.blobs:
            self.blobs[key] = FakeBlob('%s%s/%s' % (self.url, container, name))
        return self.blobs[key]


def backend(tmp_path: t.Any, src: t.Optional[str] = None, azure: t.Optional[t.Dict[str, t.Any]] = None,
            creds: t.Optional[t.Dict[str, t.Any]] = None, service: t.Optional[FakeService] = None,
            compute: t.Optional[FakeCompute] = None, **kwargs: t.Any) -> AzureBackend:
    if src is None and kwargs.get('state', 'present') == 'present':
        src = write_vhd(str(tmp_path / 'img.vhd'))
    options = {'container': 'images', 'storage_account': 'acct'}
    options.update(azure or {})
    kwargs.setdefault('name', 'img')
    request = _cloud.Request(target='azure', src=src, options={'azure': options},
                             credentials=dict(CREDS if creds is None else creds), retries=2, **kwargs)
    sleeps: t.List[float] = []
    back = AzureBackend(request, session_factory=lambda req, retryable: _cloud.Session(
        req, retryable, sleep=sleeps.append))
    back._service = service or FakeService()
    back._compute = compute or FakeCompute()
    return back


def the_blob(back: AzureBackend) -> FakeBlob:
    return t.cast(FakeBlob, back._service.get_blob_client('images', back.request.name + '.vhd'))


# ----- the VHD footer -----------------------------------------------------------------------------------------

def test_footer_of_a_fixed_vhd_is_read(tmp_path: t.Any) -> None:
    info = _cloud_azure.read_vhd_footer(write_vhd(str(tmp_path / 'a.vhd'), mib=3))
    assert info == (3 * MIB + 512, 3 * MIB)


@pytest.mark.parametrize('kwargs, message', [
    ({'cookie': b'notavhd!'}, 'no VHD footer'),
    ({'disk_type': 3}, 'is a dynamic VHD, not a fixed one'),
    ({'checksum': 1}, 'wrong checksum'),
])
def test_footer_problems_say_to_add_a_vhd_output(tmp_path: t.Any, kwargs: t.Dict[str, t.Any], message: str) -> None:
    path = write_vhd(str(tmp_path / 'a.vhd'), mib=2, **kwargs)
    with pytest.raises(InvalidInput) as exc:
        _cloud_azure.read_vhd_footer(path)
    assert message in exc.value.msg
    assert exc.value.msg.startswith('src: ') and 'add a vhd output' in exc.value.msg


def test_a_raw_image_is_refused(tmp_path: t.Any) -> None:
    path = str(tmp_path / 'a.raw')
    with open(path, 'wb') as handle:
        handle.truncate(2 * MIB)
    with pytest.raises(InvalidInput, match='no VHD footer'):
        _cloud_azure.read_vhd_footer(path)


def test_virtual_size_must_be_whole_mib(tmp_path: t.Any) -> None:
    path = str(tmp_path / 'a.vhd')
    size = 2 * MIB + 4096
    with open(path, 'wb') as handle:
        handle.truncate(size)
        handle.seek(size)
        handle.write(footer(size))
    with pytest.raises(InvalidInput, match='not a whole number of MiB'):
        _cloud_azure.read_vhd_footer(path)


def test_footer_size_must_match_the_file(tmp_path: t.Any) -> None:
    path = str(tmp_path / 'a.vhd')
    with open(path, 'wb') as handle:
        handle.truncate(3 * MIB)
        handle.seek(3 * MIB)
        handle.write(footer(2 * MIB))
    with pytest.raises(InvalidInput, match='holds 3145728 bytes'):
        _cloud_azure.read_vhd_footer(path)


def test_footer_is_checked_before_any_call(tmp_path: t.Any) -> None:
    back = backend(tmp_path, src=write_vhd(str(tmp_path / 'd.vhd'), disk_type=4))
    with pytest.raises(InvalidInput, match='differencing'):
        back.run()
    assert the_blob(back).calls == []


# ----- option checks ------------------------------------------------------------------------------------------

@pytest.mark.parametrize('azure, creds, message', [
    ({'container': 'Images'}, None, 'azure.container: '),
    ({'container': 'a--b'}, None, 'azure.container: '),
    ({'storage_account': 'My_Account'}, None, 'azure.storage_account: '),
    ({'storage_account': None}, None, 'azure.storage_account: give the storage account'),
    ({'blob_endpoint': 'ftp://x'}, None, 'azure.blob_endpoint: '),
    ({'blob_endpoint': 'http://127.0.0.1:1/acct'}, {'azure_client_id': 'c', 'azure_secret': 's', 'azure_tenant': 't'},
     'azure.blob_endpoint: the service principal'),
    ({'resource_group': 'rg'}, None, 'azure.location: '),
    ({'resource_group': 'rg.', 'location': 'x'}, None, 'azure.resource_group: '),
    ({'resource_group': 'rg', 'location': 'x', 'resource_manager_endpoint': 'http://127.0.0.1:1'}, None,
     'azure.resource_manager_endpoint: '),
])
def test_option_checks_name_the_option(tmp_path: t.Any, azure: t.Dict[str, t.Any], creds: t.Optional[t.Dict[str, t.Any]],
                                       message: str) -> None:
    back = backend(tmp_path, azure=azure, creds=creds)
    with pytest.raises(InvalidInput) as exc:
        back.run()
    assert exc.value.msg.startswith(message)
    assert the_blob(back).calls == []


def test_image_name_rules(tmp_path: t.Any) -> None:
    with pytest.raises(InvalidInput, match='not an Azure image name'):
        backend(tmp_path, name='-bad', azure={'resource_group': 'rg', 'location': 'x'}).run()
    with pytest.raises(InvalidInput, match='not an Azure image name'):
        backend(tmp_path, name='a' * 81, azure={'resource_group': 'rg', 'location': 'x'}).run()


@pytest.mark.parametrize('tags, message', [
    ({'build-id': '1'}, "tags: 'build-id' cannot be Azure blob metadata"),
    ({'1st': '1'}, 'C# identifiers'),
    ({'osimage_sha256': 'x'}, 'reserved'),
    ({'owner': 'J\u00f6rg'}, 'must be ASCII'),
])
def test_tags_must_fit_blob_metadata(tmp_path: t.Any, tags: t.Dict[str, str], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        backend(tmp_path, tags=tags).run()


def test_missing_credentials_name_options_and_variables(tmp_path: t.Any) -> None:
    with pytest.raises(_cloud.CredentialsError) as exc:
        backend(tmp_path, creds={'azure_client_id': 'c'}).run()
    assert 'azure_tenant, azure_secret: missing' in exc.value.msg and 'AZURE_CLIENT_SECRET' in exc.value.msg
    assert 'azure_storage_key (or AZURE_STORAGE_KEY)' in exc.value.msg
    with pytest.raises(_cloud.CredentialsError, match='azure_subscription_id .or AZURE_SUBSCRIPTION_ID'):
        backend(tmp_path, creds={'azure_storage_key': 'k', 'azure_client_id': 'c', 'azure_secret': 's',
                                 'azure_tenant': 't'}, azure={'resource_group': 'rg', 'location': 'x'}).run()


# ----- small pieces -----------------------------------------------------------------------------------------------

def test_covered() -> None:
    ranges = [(0, 511), (512, 4095), (8192, 9215)]
    assert _cloud_azure.covered(ranges, 0, 4096)
    assert not _cloud_azure.covered(ranges, 0, 4097)
    assert not _cloud_azure.covered(ranges, 4096, 8192)
    assert _cloud_azure.covered(ranges, 8192, 9216)
    assert not _cloud_azure.covered([], 0, 512)


def test_image_summary_prefers_the_recorded_creation_time() -> None:
    image = FakeImages.make('a', {'osimage-created': '2024-05-01T00:00:00Z', 'osimage-sha256': 'd'})
    image['systemData'] = {'createdAt': '2020-01-01T00:00:00Z'}
    summary = _cloud_azure.image_summary(image)
    assert summary['created'] == '2024-05-01T00:00:00Z' and summary['sha256'] == 'd'
    del image['tags']['osimage-created']
    assert _cloud_azure.image_summary(image)['created'] == '2020-01-01T00:00:00Z'


@pytest.mark.parametrize('exc, retry', [
    (ConnectionError('reset'), True),
    (ServiceRequestError('connection refused'), True),
    (ServiceRequestError('Bearer token authentication is not permitted for non-TLS protected URLs.'), False),
    (StatusError(503, 'ServerBusy'), True),
    (StatusError(429), True),
    (StatusError(500, 'InternalError'), True),
    (StatusError(403, 'AuthenticationFailed'), False),
    (StatusError(404, 'BlobNotFound'), False),
    (StatusError(409, 'Conflict'), False),
    (ClientAuthenticationError(401), False),
    (InvalidInput('x'), False),
])
def test_retry_classification(tmp_path: t.Any, exc: BaseException, retry: bool) -> None:
    assert backend(tmp_path).is_retryable(exc) is retry


def test_error_mapping(tmp_path: t.Any) -> None:
    back = backend(tmp_path, azure={'resource_group': 'rg', 'location': 'x'})
    back.check()
    error = back._error('Images.Get x', ClientAuthenticationError(
        401, message='ClientSecretCredential.get_token failed: AADSTS7000215: Invalid client secret provided.'))
    assert isinstance(error, _cloud.CredentialsError) and 'azure_secret (or AZURE_SECRET' in error.msg
    error = back._error('Images.Get x', StatusError(401, 'InvalidAuthenticationToken'))
    assert isinstance(error, _cloud.CredentialsError) and 'AZURE_CLIENT_ID' in error.msg
    error = back._error('Get Blob Properties x', StatusError(403, 'AuthenticationFailed'))
    assert isinstance(error, _cloud.CredentialsError) and 'azure_storage_key (or AZURE_STORAGE_KEY)' in error.msg
    error = back._error('Put Page x at 0', StatusError(404, 'ContainerNotFound'))
    assert error.__class__ is _cloud.CloudError and error.msg.startswith('azure.container: ')
    error = back._error('Images.CreateOrUpdate x', StatusError(404, 'ResourceGroupNotFound'))
    assert error.msg.startswith('azure.resource_group: ')
    error = back._error('Images.Get x', StatusError(400, 'InvalidParameter', 'bad'))
    assert error.__class__ is _cloud.CloudError and error.msg == 'Images.Get x failed: bad'


# ----- state=present, blob only ---------------------------------------------------------------------------------

def test_first_upload_skips_zero_ranges_and_writes_the_digest_last(tmp_path: t.Any) -> None:
    src = write_vhd(str(tmp_path / 'a.vhd'), mib=12, payload=((MIB, b'a' * 100), (9 * MIB, b'b' * 100)))
    back = backend(tmp_path, src=src, family='fam', tags={'build': '7'})
    result = back.run()
    blob = the_blob(back)
    digest = digest_of(src)
    assert result['changed'] and result['sha256'] == digest and not result['resumed']
    assert result['id'] == result['url'] == blob.url == result['details']['blob_url']
    assert sorted(blob.pages) == [0, 8 * MIB, 12 * MIB]   # 4-8 MiB is all zeros; the footer is the last page
    assert blob.calls[-1] == 'metadata' and blob.calls.index('create') < blob.calls.index('metadata')
    assert blob.metadata == {'osimage_sha256': digest, 'osimage_family': 'fam', 'build': '7'}
    assert blob.content() == open(src, 'rb').read()
    assert result['progress']['bytes_sent'] == 8 * MIB + 512 and result['progress']['bytes_skipped'] == 4 * MIB


def test_partial_blob_carries_only_the_partial_marker(tmp_path: t.Any) -> None:
    back = backend(tmp_path, keep_partial=True)
    blob = the_blob(back)
    blob.fail_at[8 * MIB] = StatusError(400, 'InvalidHeaderValue')
    with pytest.raises(_cloud.CloudError, match='Put Page img.vhd at 8388608 failed'):
        back.run()
    assert blob.exists and 'osimage_sha256' not in blob.metadata and 'osimage_partial_sha256' in blob.metadata


def test_repeat_sends_nothing(tmp_path: t.Any) -> None:
    first = backend(tmp_path)
    first.run()
    again = backend(tmp_path, service=first._service, sha256=digest_of(first.request.src))
    blob = the_blob(again)
    blob.calls.clear()
    result = again.run()
    assert not result['changed'] and result['progress']['bytes_sent'] == 0 and blob.calls == ['get']


def test_check_mode_changes_nothing(tmp_path: t.Any) -> None:
    back = backend(tmp_path, check_mode=True)
    result = back.run()
    assert result['changed'] and result['details']['would_upload']
    assert the_blob(back).calls == ['get'] and not the_blob(back).exists


def test_failed_upload_deletes_the_blob(tmp_path: t.Any) -> None:
    back = backend(tmp_path)
    blob = the_blob(back)
    blob.fail_at[0] = StatusError(403, 'AuthorizationPermissionMismatch')
    with pytest.raises(_cloud.CredentialsError):
        back.run()
    assert not blob.exists and blob.calls[-1] == 'delete'


def test_transient_errors_are_retried(tmp_path: t.Any) -> None:
    back = backend(tmp_path)
    blob = the_blob(back)
    real = blob.upload_page
    failures = [StatusError(503, 'ServerBusy'), ConnectionError('reset')]

    def flaky(data: bytes, offset: int, length: int) -> None:
        if offset == 0 and failures:
            raise failures.pop(0)
        real(data, offset, length)

    blob.upload_page = flaky  # type: ignore[method-assign]
    result = back.run()
    assert result['progress']['retries'] == 2 and blob.content() == open(back.request.src, 'rb').read()


def test_digest_mismatch_leaves_nothing_even_with_keep_partial(tmp_path: t.Any) -> None:
    back = backend(tmp_path, sha256='0' * 64, keep_partial=True)
    with pytest.raises(_cloud.DigestMismatch):
        back.run()
    blob = the_blob(back)
    assert not blob.exists and 'metadata' not in blob.calls


def test_resume_skips_pages_an_earlier_run_wrote(tmp_path: t.Any) -> None:
    src = write_vhd(str(tmp_path / 'a.vhd'), mib=12, payload=((MIB, b'a' * 100), (5 * MIB, b'c' * 10), (9 * MIB, b'b')))
    digest = digest_of(src)
    service = FakeService()
    blob = service.get_blob_client('images', 'img.vhd')
    data = open(src, 'rb').read()
    blob.create_page_blob(len(data), metadata={'osimage_partial_sha256': digest})
    blob.upload_page(data[:4 * MIB], 0, 4 * MIB)
    blob.upload_page(data[8 * MIB:12 * MIB], 8 * MIB, 4 * MIB)
    blob.upload_page(data[12 * MIB:], 12 * MIB, 512)
    blob.calls.clear()
    result = backend(tmp_path, src=src, service=service).run()
    assert result['resumed'] and result['changed']
    assert [c for c in blob.calls if c.startswith('page')] == ['page %d' % (4 * MIB)]
    assert 'create' not in blob.calls and blob.metadata['osimage_sha256'] == digest
    assert blob.content() == data
    assert result['progress']['bytes_sent'] == 4 * MIB


def test_partial_blob_of_another_digest_is_replaced(tmp_path: t.Any) -> None:
    service = FakeService()
    blob = service.get_blob_client('images', 'img.vhd')
    blob.create_page_blob(512, metadata={'osimage_partial_sha256': 'f' * 64})
    result = backend(tmp_path, service=service).run()
    assert result['changed'] and not result['resumed'] and 'create' in blob.calls


def test_blob_with_other_digest_is_a_conflict_unless_force(tmp_path: t.Any) -> None:
    service = FakeService()
    blob = service.get_blob_client('images', 'img.vhd')
    blob.create_page_blob(512, metadata={'osimage_sha256': 'f' * 64})
    with pytest.raises(_cloud.Conflict, match='SHA-256 f{64}; give another azure.blob'):
        backend(tmp_path, service=service).run()
    assert blob.metadata == {'osimage_sha256': 'f' * 64}
    assert backend(tmp_path, service=service, force=True).run()['changed']
    assert blob.metadata['osimage_sha256'] != 'f' * 64


def test_foreign_blob_is_a_conflict(tmp_path: t.Any) -> None:
    service = FakeService()
    service.get_blob_client('images', 'img.vhd').create_page_blob(512, metadata={})
    with pytest.raises(_cloud.Conflict, match='this module did not write it'):
        backend(tmp_path, service=service).run()


# ----- state=present with an image -------------------------------------------------------------------------------

IMAGE = {'resource_group': 'rg', 'location': 'westeurope', 'hyper_v_generation': 'V2', 'os_type': 'Linux'}


def test_image_is_created_from_the_blob(tmp_path: t.Any) -> None:
    back = backend(tmp_path, azure=IMAGE, family='fam', tags={'build': '7'})
    result = back.run()
    images = t.cast(FakeCompute, back._compute).images
    image = images.images['img']
    digest = digest_of(back.request.src)
    assert result['changed'] and result['id'] == image['id'] and result['details']['provisioning_state'] == 'Succeeded'
    assert image['properties']['storageProfile']['osDisk'] == {'osType': 'Linux', 'osState': 'Generalized',
                                                               'blobUri': the_blob(back).url, 'caching': 'ReadWrite'}
    assert image['properties']['hyperVGeneration'] == 'V2' and image['location'] == 'westeurope'
    assert image['tags']['osimage-sha256'] == digest and image['tags']['osimage-family'] == 'fam'
    assert image['tags']['build'] == '7' and image['tags']['osimage-created'].endswith('Z')


def test_image_with_the_digest_is_unchanged_without_reading_src(tmp_path: t.Any) -> None:
    compute = FakeCompute()
    compute.images.images['img'] = FakeImages.make('img', {'osimage-sha256': 'a' * 64})
    back = backend(tmp_path, azure=IMAGE, compute=compute, sha256='a' * 64)
    result = back.run()
    assert not result['changed'] and compute.images.calls == ['get img'] and the_blob(back).calls == []


def test_image_with_another_digest_is_a_conflict_before_any_upload(tmp_path: t.Any) -> None:
    compute = FakeCompute()
    compute.images.images['img'] = FakeImages.make('img', {'osimage-sha256': 'a' * 64})
    back = backend(tmp_path, azure=IMAGE, compute=compute)
    with pytest.raises(_cloud.Conflict, match='force=true'):
        back.run()
    assert the_blob(back).calls == []
    forced = backend(tmp_path, azure=IMAGE, compute=compute, service=back._service, force=True)
    assert forced.run()['changed']
    assert compute.images.calls[-3:] == ['get img', 'delete img', 'put img']
    assert compute.images.images['img']['tags']['osimage-sha256'] == digest_of(back.request.src)


def test_failed_image_is_deleted_and_the_blob_stays(tmp_path: t.Any) -> None:
    compute = FakeCompute()
    compute.images.fail_create = StatusError(400, 'InvalidParameter', 'not a fixed VHD')
    back = backend(tmp_path, azure=IMAGE, compute=compute)
    with pytest.raises(_cloud.CloudError, match='Images.CreateOrUpdate img failed: not a fixed VHD'):
        back.run()
    assert 'img' not in compute.images.images
    assert the_blob(back).metadata['osimage_sha256'] == digest_of(back.request.src)


def test_check_mode_with_image(tmp_path: t.Any) -> None:
    back = backend(tmp_path, azure=IMAGE, check_mode=True)
    result = back.run()
    assert result['changed'] and result['details']['would_create_image']
    assert t.cast(FakeCompute, back._compute).images.calls == ['get img'] and not the_blob(back).exists


# ----- state=absent and state=pruned ----------------------------------------------------------------------------

def test_absent_deletes_image_and_blob(tmp_path: t.Any) -> None:
    first = backend(tmp_path, azure=IMAGE)
    first.run()
    check = backend(tmp_path, azure=IMAGE, state='absent', service=first._service, compute=first._compute,
                    check_mode=True).run()
    assert check['changed'] and [d['type'] for d in check['deleted']] == ['image', 'blob']
    assert the_blob(first).exists
    result = backend(tmp_path, azure=IMAGE, state='absent', service=first._service, compute=first._compute).run()
    assert result['changed'] and not the_blob(first).exists
    assert t.cast(FakeCompute, first._compute).images.images == {}
    again = backend(tmp_path, azure=IMAGE, state='absent', service=first._service, compute=first._compute).run()
    assert again == {'changed': False, 'deleted': [], 'target': 'azure'}


def test_pruned_keeps_the_newest_images_of_the_family(tmp_path: t.Any) -> None:
    service, compute = FakeService(), FakeCompute()
    for index, created in enumerate(['2024-01-01T00:00:00Z', '2024-03-01T00:00:00Z', '2024-02-01T00:00:00Z']):
        name = 'img-%d' % index
        blob = service.get_blob_client('images', name + '.vhd')
        blob.create_page_blob(512, metadata={'osimage_sha256': str(index) * 64})
        compute.images.images[name] = FakeImages.make(
            name, {'osimage-family': 'fam', 'osimage-sha256': str(index) * 64, 'osimage-created': created},
            blob=blob.url)
    compute.images.images['other'] = FakeImages.make('other', {'osimage-family': 'x', 'osimage-sha256': 'e' * 64})
    listed = backend(tmp_path, azure=IMAGE, state='pruned', family='fam', keep_newest=2, service=service,
                     compute=compute, check_mode=True).run()
    assert [i['name'] for i in listed['kept']] == ['img-1', 'img-2'] and [i['name'] for i in listed['deleted']] == ['img-0']
    assert len(compute.images.images) == 4
    result = backend(tmp_path, azure=IMAGE, state='pruned', family='fam', keep_newest=2, service=service,
                     compute=compute).run()
    assert result['changed'] and sorted(compute.images.images) == ['img-1', 'img-2', 'other']
    assert not service.blobs[('images', 'img-0.vhd')].exists and service.blobs[('images', 'img-1.vhd')].exists
    assert result['deleted'][0]['blob_deleted']


def test_pruned_blobs_without_resource_group(tmp_path: t.Any) -> None:
    class Item:
        def __init__(self, name: str, metadata: t.Dict[str, str], day: int) -> None:
            import datetime
            self.name, self.metadata = name, metadata
            self.creation_time = datetime.datetime(2024, 1, day, tzinfo=datetime.timezone.utc)

    service = FakeService()
    items = [Item('a.vhd', {'osimage_family': 'fam', 'osimage_sha256': '1'}, 1),
             Item('b.vhd', {'osimage_family': 'fam', 'osimage_sha256': '2'}, 2),
             Item('c.vhd', {'osimage_family': 'other', 'osimage_sha256': '3'}, 3)]
    for item in items:
        service.get_blob_client('images', item.name).create_page_blob(512, metadata=item.metadata)

    class Container:
        def list_blobs(self, include: t.List[str]) -> t.List[Item]:
            assert include == ['metadata']
            return items

    service.get_container_client = lambda name: Container()  # type: ignore[attr-defined]
    result = backend(tmp_path, state='pruned', family='fam', keep_newest=1, service=service).run()
    assert [d['name'] for d in result['deleted']] == ['a.vhd'] and [k['name'] for k in result['kept']] == ['b.vhd']
    assert result['deleted'][0]['created'] == '2024-01-01T00:00:00Z'
    assert not service.blobs[('images', 'a.vhd')].exists and service.blobs[('images', 'c.vhd')].exists


def test_module_imports_without_the_sdk() -> None:
    source = open(_cloud_azure.__file__, encoding='utf-8').read()
    assert 'import azure' not in source and 'from azure' not in source
    assert os.path.basename(_cloud_azure.__file__) == '_cloud_azure.py'


def test_token_scope_follows_the_resource_manager_endpoint() -> None:
    assert AzureBackend._arm_cloud('https://127.0.0.1:5/') == {'credential_scopes': ['https://127.0.0.1:5/.default']}
    tools = pytest.importorskip('azure.mgmt.core.tools')
    core = pytest.importorskip('azure.core')
    for cloud in core.AzureClouds:
        endpoint = tools.get_arm_endpoints(cloud)['resource_manager']
        assert AzureBackend._arm_cloud(endpoint) == {'cloud_setting': cloud}
