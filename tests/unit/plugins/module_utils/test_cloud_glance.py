# -*- coding: utf-8 -*-
from __future__ import annotations

import hashlib
import json
import os
import sys
import types
import typing as t
import urllib.parse

import pytest

from ansible_collections.osimage.builder.plugins.module_utils import _cloud, _cloud_glance
from ansible_collections.osimage.builder.plugins.module_utils._cloud_glance import GlanceBackend
from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput, WaitTimeout

MIB = 1024 * 1024
PROJECT = 'p-1'
AUTH = {'auth_url': 'http://127.0.0.1:1/v3', 'username': 'demo', 'password': 's3cret-pw', 'project_name': 'osimage',
        'user_domain_name': 'Default', 'project_domain_name': 'Default'}


def write_file(path: str, size: int = 5 * MIB + 123, seed: bytes = b'osimage') -> str:
    with open(path, 'wb') as handle:
        handle.write((seed * (size // len(seed) + 1))[:size])
    return path


def digest_of(path: str) -> str:
    with open(path, 'rb') as handle:
        return hashlib.sha256(handle.read()).hexdigest()


class Response:
    def __init__(self, status: int, body: t.Any = None, text: str = '', reason: str = '') -> None:
        self.status_code = status
        self._body = body
        self.text = text if body is None else json.dumps(body)
        self.reason = reason
        self.headers = {'x-openstack-request-id': 'req-1'}

    def json(self) -> t.Any:
        if self._body is None:
            raise ValueError('no JSON')
        return self._body


class HttpException(Exception):
    """Named and shaped like openstacksdk's; the backend classifies by status_code."""

    def __init__(self, status: int) -> None:
        super().__init__('HTTP %d' % status)
        self.status_code = status


class Unauthorized(Exception):
    """Named and shaped like keystoneauth1.exceptions.http.Unauthorized."""

    http_status = 401


class ConnectFailure(Exception):
    """Named like keystoneauth1's connection failure."""


class FakeGlance:
    """The Image API v2 as the SDK's image proxy reaches it: request(url, method, **kwargs) -> response.

    Records every call as 'METHOD path'; faults maps such a string to a list of answers (a Response or an
    exception) given before the real one; after_upload sets the status an image takes once its data arrived.
    """

    def __init__(self) -> None:
        self.images: t.Dict[str, t.Dict[str, t.Any]] = {}
        self.data: t.Dict[str, bytes] = {}
        self.calls: t.List[str] = []
        self.faults: t.Dict[str, t.List[t.Any]] = {}
        self.after_upload = 'active'
        self.page_size = 2
        self.counter = 0
        self.clock = 0

    def get_endpoint(self) -> str:
        return 'http://glance.example:9292/v2/'

    def add(self, name: str, status: str = 'active', owner: str = PROJECT, **props: t.Any) -> t.Dict[str, t.Any]:
        self.counter += 1
        self.clock += 1
        image_id = 'id-%d' % self.counter
        image = {'id': image_id, 'name': name, 'status': status, 'owner': owner, 'visibility': 'private',
                 'protected': False, 'disk_format': 'raw', 'container_format': 'bare', 'min_disk': 0, 'min_ram': 0,
                 'created_at': '2024-01-01T00:00:%02dZ' % self.clock, 'self': '/v2/images/' + image_id,
                 'checksum': None, 'os_hash_algo': None, 'os_hash_value': None, 'size': None}
        image.update(props)
        self.images[image_id] = image
        return image

    def request(self, url: str, method: str, **kwargs: t.Any) -> Response:
        parts = urllib.parse.urlsplit(url)
        key = '%s %s' % (method, parts.path)
        self.calls.append(key)
        assert kwargs.pop('connect_retries') == 0 and kwargs.pop('status_code_retries') == 0
        for pattern in (key, method):
            if self.faults.get(pattern):
                fault = self.faults[pattern].pop(0)
                if isinstance(fault, BaseException):
                    raise fault
                return fault
        segments = parts.path.strip('/').split('/')
        if segments == ['images'] and method == 'GET':
            return self._list(dict(urllib.parse.parse_qsl(parts.query)))
        if segments == ['images'] and method == 'POST':
            body = dict(kwargs['json'])
            assert all(isinstance(value, (str, int)) for value in body.values())
            image = self.add(body.pop('name'), status='queued', **body)
            return Response(201, dict(image))
        image = self.images.get(segments[1]) if len(segments) > 1 else None
        if image is None:
            return Response(404, text='404 Not Found\n\nNo image found with ID %s\n\n' % segments[-1],
                            reason='Not Found')
        if len(segments) == 3 and segments[2] == 'file' and method == 'PUT':
            return self._upload(image, kwargs)
        if method == 'GET':
            return Response(200, dict(image))
        if method == 'PATCH':
            assert kwargs['headers']['Content-Type'] == 'application/openstack-images-v2.1-json-patch'
            for change in json.loads(kwargs['data']):
                image[change['path'].strip('/')] = change['value']
            return Response(200, dict(image))
        if method == 'DELETE':
            if image['protected']:
                return Response(403, text='<html><body><h1>403 Forbidden</h1>Image %s is protected</body></html>'
                                % image['id'], reason='Forbidden')
            del self.images[image['id']]
            return Response(204)
        raise AssertionError('unexpected %s' % key)

    def _list(self, query: t.Dict[str, str]) -> Response:
        assert int(query.pop('limit')) > 0
        marker = query.pop('marker', None)
        matching = [image for image in self.images.values()
                    if all(str(image.get(key)) == value for key, value in query.items())]
        if marker:
            ids = [image['id'] for image in matching]
            matching = matching[ids.index(marker) + 1:]
        page = matching[:self.page_size]
        body: t.Dict[str, t.Any] = {'images': [dict(image) for image in page], 'first': '/v2/images'}
        if len(matching) > self.page_size:
            body['next'] = '/v2/images?' + urllib.parse.urlencode(dict(query, marker=page[-1]['id'], limit='2'))
        return Response(200, body)

    def _upload(self, image: t.Dict[str, t.Any], kwargs: t.Dict[str, t.Any]) -> Response:
        assert kwargs['headers']['Content-Type'] == 'application/octet-stream'
        assert kwargs['allow_reauth'] is False
        if image['status'] != 'queued':
            return Response(409, text='409 Conflict\n\nImage status transition from %s to saving is not allowed\n\n'
                            % image['status'], reason='Conflict')
        stream = kwargs['data']
        length = len(stream)
        image['status'] = 'saving'
        received = b''
        try:
            while True:
                piece = stream.read(65536)    # http.client reads file-like bodies in blocks
                if not piece:
                    break
                received += piece
        except BaseException:
            image['status'] = 'queued'      # Glance restores the status when the body breaks off
            raise
        assert len(received) == length
        self.data[image['id']] = received
        image.update(status=self.after_upload, size=length, checksum=hashlib.md5(received).hexdigest(),
                     os_hash_algo='sha512', os_hash_value=hashlib.sha512(received).hexdigest())
        return Response(204)


class FakeConn:
    def __init__(self, glance: FakeGlance, project: t.Any = PROJECT) -> None:
        self.image = glance
        self._project = project

    @property
    def current_project_id(self) -> str:
        if isinstance(self._project, BaseException):
            raise self._project
        return self._project


def backend(tmp_path: t.Any, src: t.Optional[str] = None, glance: t.Optional[FakeGlance] = None,
            options: t.Optional[t.Dict[str, t.Any]] = None, conn: t.Any = None,
            warnings: t.Optional[t.List[str]] = None, **kwargs: t.Any) -> GlanceBackend:
    if src is None and kwargs.get('state', 'present') == 'present':
        src = str(tmp_path / 'disk.qcow2')
        if not os.path.exists(src):
            write_file(src)
    kwargs.setdefault('name', 'img')
    request = _cloud.Request(target='openstack_glance', src=src, options={'openstack_glance': dict(options or {})},
                             credentials={'openstack_auth': dict(AUTH)}, retries=2, **kwargs)
    sleeps: t.List[float] = []
    back = GlanceBackend(request, session_factory=lambda req, retryable: _cloud.Session(
        req, retryable, sleep=sleeps.append), warn=(warnings.append if warnings is not None else None))
    back._conn = conn or FakeConn(glance or FakeGlance())
    back.sleeps = sleeps  # type: ignore[attr-defined]
    return back


def glance_of(back: GlanceBackend) -> FakeGlance:
    return t.cast(FakeGlance, back._conn.image)


def changes(glance: FakeGlance) -> t.List[str]:
    return [call for call in glance.calls if not call.startswith('GET ')]


# ----- option checks --------------------------------------------------------------------------------------

def test_disk_format_comes_from_the_extension(tmp_path: t.Any) -> None:
    back = backend(tmp_path, src=write_file(str(tmp_path / 'a.vmdk'), 1000))
    back.run()
    assert next(iter(glance_of(back).images.values()))['disk_format'] == 'vmdk'
    back = backend(tmp_path, src=write_file(str(tmp_path / 'b.raw'), 1000), options={'disk_format': 'iso'})
    back.run()
    assert [image['disk_format'] for image in glance_of(back).images.values()] == ['iso']


def test_unknown_extension_asks_for_disk_format(tmp_path: t.Any) -> None:
    back = backend(tmp_path, src=write_file(str(tmp_path / 'disk.img'), 1000))
    with pytest.raises(InvalidInput) as exc:
        back.run()
    assert exc.value.msg.startswith('openstack_glance.disk_format: ') and 'give openstack_glance.disk_format' in exc.value.msg
    assert glance_of(back).calls == []


@pytest.mark.parametrize('tags, options, message', [
    ({'status': 'x'}, {}, 'tags: status is an attribute of Glance images'),
    ({}, {'properties': {'os_glance_import_task': 'x'}}, 'openstack_glance.properties: os_glance_import_task is'),
    ({}, {'properties': {'osimage-sha256': 'x'}}, 'openstack_glance.properties: osimage-sha256 is reserved'),
    ({}, {'properties': {'x' * 256: 'x'}}, 'openstack_glance.properties: '),
    ({}, {'properties': {'hw_disk_bus': ['virtio']}}, 'openstack_glance.properties: the value of hw_disk_bus must be'),
    ({}, {'image_endpoint': 'ftp://x'}, 'openstack_glance.image_endpoint: '),
    ({}, {'min_ram': -1}, 'openstack_glance.min_ram: -1 is negative'),
])
def test_option_checks_name_the_option(tmp_path: t.Any, tags: t.Dict[str, str], options: t.Dict[str, t.Any],
                                       message: str) -> None:
    back = backend(tmp_path, tags=tags, options=options)
    with pytest.raises(InvalidInput) as exc:
        back.run()
    assert exc.value.msg.startswith(message)
    assert glance_of(back).calls == []


def test_response_message_of_glance_errors() -> None:
    assert _cloud_glance.response_message(Response(409, text='409 Conflict\n\nImage status transition from active to '
                                                   'saving is not allowed\n\n', reason='Conflict')) == \
        'Image status transition from active to saving is not allowed'
    html = '<html>\n <head>\n  <title>403 Forbidden</title>\n </head>\n <body>\n  <h1>403 Forbidden</h1>\n  ' \
           'You are not authorized to complete publicize_image action.<br /><br />\n\n\n\n </body>\n</html>'
    assert 'You are not authorized to complete publicize_image action.' in _cloud_glance.response_message(
        Response(403, text=html, reason='Forbidden'))
    assert _cloud_glance.response_message(Response(400, {'error': {'message': 'bad'}})) == 'bad'
    assert _cloud_glance.response_message(Response(500, text='')) == 'HTTP 500'


# ----- state=present ----------------------------------------------------------------------------------------

def test_first_upload_creates_sends_and_waits(tmp_path: t.Any) -> None:
    back = backend(tmp_path, family='fam', tags={'build': '7'}, description='nightly',
                   options={'visibility': 'community', 'min_disk': 2, 'min_ram': 512, 'protected': True,
                            'properties': {'hw_qemu_guest_agent': True, 'os_distro': 'debian', 'build': 'props-win'}})
    result = back.run()
    glance = glance_of(back)
    digest = digest_of(back.request.src)
    (image,) = glance.images.values()
    assert result['changed'] and result['sha256'] == digest and result['resumed'] is False
    assert result['id'] == image['id'] and result['url'] == 'http://glance.example:9292/v2/images/' + image['id']
    assert image['status'] == 'active' and image['protected'] is True
    assert image['osimage-sha256'] == digest and image['osimage-family'] == 'fam'
    assert image['build'] == 'props-win' and image['hw_qemu_guest_agent'] == 'true' and image['os_distro'] == 'debian'
    assert image['description'] == 'nightly'
    assert (image['disk_format'], image['container_format'], image['visibility']) == ('qcow2', 'bare', 'community')
    assert (image['min_disk'], image['min_ram']) == (2, 512)
    assert glance.data[image['id']] == open(back.request.src, 'rb').read()
    details = result['details']
    assert details['os_hash_algo'] == 'sha512' and details['os_hash_value'] == image['os_hash_value']
    assert details['checksum'] == image['checksum'] and details['status'] == 'active' and details['protected']
    assert changes(glance) == ['POST /images', 'PUT /images/%s/file' % image['id'], 'PATCH /images/%s' % image['id']]
    assert result['progress']['bytes_sent'] == os.path.getsize(back.request.src)


def test_repeat_sends_nothing(tmp_path: t.Any) -> None:
    first = backend(tmp_path)
    first.run()
    glance = glance_of(first)
    glance.calls.clear()
    again = backend(tmp_path, glance=glance, sha256=digest_of(first.request.src))
    result = again.run()
    assert not result['changed'] and result['progress']['bytes_sent'] == 0 and result['id'] == 'id-1'
    assert glance.calls == ['GET /images'] and result['details']['status'] == 'active'


def test_images_of_other_projects_do_not_count(tmp_path: t.Any) -> None:
    glance = FakeGlance()
    glance.add('img', owner='p-other', visibility='public')
    result = backend(tmp_path, glance=glance).run()
    assert result['changed'] and result['id'] == 'id-2' and len(glance.images) == 2


def test_listing_follows_next_links(tmp_path: t.Any) -> None:
    glance = FakeGlance()
    for index in range(5):
        glance.add('other-%d' % index, **{'osimage-sha256': 'a' * 64, 'osimage-family': 'fam'})
    result = backend(tmp_path, glance=glance, state='pruned', family='fam', keep_newest=1, check_mode=True).run()
    assert len(result['deleted']) == 4 and glance.calls.count('GET /images') == 3


def test_check_mode_sends_nothing(tmp_path: t.Any) -> None:
    back = backend(tmp_path, check_mode=True)
    result = back.run()
    assert result['changed'] and result['details']['would_upload'] and result['progress']['bytes_sent'] == 0
    assert glance_of(back).calls == ['GET /images'] and glance_of(back).images == {}


def test_other_digest_is_a_conflict_unless_force(tmp_path: t.Any) -> None:
    glance = FakeGlance()
    glance.add('img', **{'osimage-sha256': 'f' * 64})
    with pytest.raises(_cloud.Conflict, match='^name: image img .id-1. has SHA-256 f{64}, not .*force=true'):
        backend(tmp_path, glance=glance).run()
    assert changes(glance) == []
    check = backend(tmp_path, glance=glance, force=True, check_mode=True).run()
    assert check['details']['would_replace'] == 'id-1' and changes(glance) == []
    result = backend(tmp_path, glance=glance, force=True).run()
    assert result['changed'] and result['id'] == 'id-2' and result['details']['replaced'] == 'id-1'
    # the new image is complete before the old one goes
    assert changes(glance) == ['POST /images', 'PUT /images/id-2/file', 'DELETE /images/id-1']
    assert list(glance.images) == ['id-2']


def test_foreign_image_is_a_conflict(tmp_path: t.Any) -> None:
    glance = FakeGlance()
    glance.add('img')
    with pytest.raises(_cloud.Conflict, match='this module did not create it'):
        backend(tmp_path, glance=glance).run()


def test_several_images_of_the_name_are_an_error_naming_them(tmp_path: t.Any) -> None:
    glance = FakeGlance()
    glance.add('img', **{'osimage-sha256': 'f' * 64})
    glance.add('img')
    with pytest.raises(_cloud.Conflict, match=r'^name: 2 images are named img in the project \(id-1, id-2\)'):
        backend(tmp_path, glance=glance, force=True).run()
    assert changes(glance) == []


@pytest.mark.parametrize('status', ['queued', 'saving', 'killed'])
def test_image_stuck_from_a_killed_run_is_replaced(tmp_path: t.Any, status: str) -> None:
    glance = FakeGlance()
    warnings: t.List[str] = []
    src = write_file(str(tmp_path / 'disk.qcow2'))
    glance.add('img', status=status, **{'osimage-sha256': digest_of(src)})
    result = backend(tmp_path, glance=glance, warnings=warnings).run()
    assert result['changed'] and result['id'] == 'id-2' and list(glance.images) == ['id-2']
    assert changes(glance) == ['DELETE /images/id-1', 'POST /images', 'PUT /images/id-2/file']
    assert 'left by an upload that did not finish' in warnings[0]


def test_digest_mismatch_leaves_nothing_even_with_keep_partial(tmp_path: t.Any) -> None:
    back = backend(tmp_path, sha256='0' * 64, keep_partial=True)
    with pytest.raises(_cloud.DigestMismatch):
        back.run()
    glance = glance_of(back)
    assert glance.images == {} and glance.data == {}
    assert changes(glance) == ['POST /images', 'PUT /images/id-1/file', 'DELETE /images/id-1']


def test_stream_holds_the_last_piece_until_the_digest_is_verified(tmp_path: t.Any) -> None:
    src = write_file(str(tmp_path / 'a.raw'), 2 * _cloud.CHUNK + 10)
    progress = _cloud.Progress()
    check = _cloud.DigestCheck(src, '1' * 64)
    stream = _cloud_glance.UploadStream(src, os.path.getsize(src), check, '1' * 64, progress)
    received = stream.read(_cloud.CHUNK) + stream.read(_cloud.CHUNK)
    with pytest.raises(_cloud.DigestMismatch):
        stream.read(_cloud.CHUNK)
    assert len(received) == 2 * _cloud.CHUNK and progress.bytes_sent == 2 * _cloud.CHUNK
    stream.close()


def test_file_changed_while_it_was_sent_is_a_mismatch(tmp_path: t.Any) -> None:
    src = write_file(str(tmp_path / 'a.raw'), 1000)
    digest = digest_of(src)
    check = _cloud.DigestCheck(src, digest)
    check.verify()
    with open(src, 'ab') as handle:
        handle.write(b'more')
    stream = _cloud_glance.UploadStream(src, 1000, check, digest, _cloud.Progress())
    with pytest.raises(_cloud.DigestMismatch, match='changed while it was sent'):
        stream.read()


def test_failed_upload_deletes_the_image(tmp_path: t.Any) -> None:
    glance = FakeGlance()
    glance.faults['PUT'] = [Response(400, text='400 Bad Request\n\nbad data\n\n', reason='Bad Request')]
    with pytest.raises(_cloud.CloudError, match=r'^Upload image data id-1 failed \(HTTP 400\): bad data'):
        backend(tmp_path, glance=glance).run()
    assert glance.images == {} and changes(glance)[-1] == 'DELETE /images/id-1'


def test_keep_partial_keeps_the_queued_image(tmp_path: t.Any) -> None:
    glance = FakeGlance()
    glance.faults['PUT'] = [ConnectionError('reset')] * 3
    back = backend(tmp_path, glance=glance, keep_partial=True)
    with pytest.raises(_cloud.CloudError, match='Upload image data id-1 failed: reset'):
        back.run()
    assert glance.images['id-1']['status'] == 'queued' and 'DELETE /images/id-1' not in glance.calls
    assert len(back.sleeps) == 2      # type: ignore[attr-defined]
    # the next run replaces what was kept
    result = backend(tmp_path, glance=glance).run()
    assert result['changed'] and list(glance.images) == ['id-2']


def test_killed_image_ends_the_wait_at_once(tmp_path: t.Any) -> None:
    glance = FakeGlance()
    glance.after_upload = 'killed'
    back = backend(tmp_path, glance=glance)
    with pytest.raises(_cloud.CloudError, match='became killed instead of active'):
        back.run()
    assert back.sleeps == [] and glance.images == {}  # type: ignore[attr-defined]


def test_saving_image_is_waited_for(tmp_path: t.Any) -> None:
    glance = FakeGlance()
    glance.after_upload = 'saving'
    back = backend(tmp_path, glance=glance, wait_timeout=5)
    with pytest.raises(WaitTimeout, match='image img to become active did not happen within wait_timeout'):
        back.run()
    assert back.sleeps and glance.images == {}  # type: ignore[attr-defined]


def test_transient_errors_are_retried(tmp_path: t.Any) -> None:
    glance = FakeGlance()
    glance.faults['PUT'] = [Response(503, text='503 Service Unavailable'), ConnectFailure('refused')]
    glance.faults['GET /images'] = [Response(429, text='slow down')]
    back = backend(tmp_path, glance=glance)
    result = back.run()
    assert result['progress']['retries'] == 3
    assert glance.data['id-1'] == open(back.request.src, 'rb').read()
    # the bytes of the attempt that failed are not counted: it never read the stream
    assert result['progress']['bytes_sent'] == os.path.getsize(back.request.src)


@pytest.mark.parametrize('exc, retry', [
    (ConnectionError('reset'), True),
    (TimeoutError(), True),
    (ConnectFailure('refused'), True),
    (HttpException(503), True),
    (HttpException(500), True),
    (HttpException(429), True),
    (_cloud_glance.GlanceHttpError(502, 'bad gateway'), True),
    (HttpException(404), False),
    (HttpException(409), False),
    (Unauthorized('nope'), False),
    (_cloud.DigestMismatch('x'), False),
    (InvalidInput('x'), False),
])
def test_retry_classification(tmp_path: t.Any, exc: BaseException, retry: bool) -> None:
    assert backend(tmp_path).is_retryable(exc) is retry


def test_refused_credentials(tmp_path: t.Any) -> None:
    conn = FakeConn(FakeGlance(), project=Unauthorized('The request you have made requires authentication. (HTTP 401)'))
    back = backend(tmp_path, conn=conn)
    with pytest.raises(_cloud.CredentialsError) as exc:
        back.run()
    assert exc.value.msg.startswith('openstack_auth: Keystone refused the credentials (HTTP 401)')
    assert AUTH['password'] not in exc.value.msg and 'check the user name and password' in exc.value.msg
    assert back.sleeps == [] and glance_of(back).calls == []  # type: ignore[attr-defined]


def test_missing_auth_options_name_the_options(tmp_path: t.Any) -> None:
    class MissingRequiredOptions(Exception):
        pass

    conn = FakeConn(FakeGlance(), project=MissingRequiredOptions('Auth plugin requires parameters which were not '
                                                                 'given: auth_url'))
    with pytest.raises(_cloud.CredentialsError, match='^openstack_auth: Auth plugin requires .*OS_AUTH_URL'):
        backend(tmp_path, conn=conn).run()


def test_forbidden_visibility_says_what_to_change(tmp_path: t.Any) -> None:
    glance = FakeGlance()
    glance.faults['POST /images'] = [Response(403, text='403 Forbidden\n\nYou are not authorized to complete '
                                              'publicize_image action.\n\n', reason='Forbidden')]
    with pytest.raises(_cloud.CloudError, match='publicize_image action.; openstack_glance.visibility public'):
        backend(tmp_path, glance=glance, options={'visibility': 'public'}).run()


# ----- the connection -------------------------------------------------------------------------------------------

def fake_openstack(monkeypatch: t.Any) -> t.List[t.Dict[str, t.Any]]:
    calls: t.List[t.Dict[str, t.Any]] = []
    module = types.ModuleType('openstack')

    def connect(**kwargs: t.Any) -> str:
        calls.append(kwargs)
        return 'connection'

    module.connect = connect  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, 'openstack', module)
    return calls


def test_connection_options(tmp_path: t.Any, monkeypatch: t.Any) -> None:
    calls = fake_openstack(monkeypatch)
    back = backend(tmp_path, options={'image_endpoint': 'http://127.0.0.1:9/'})
    back.request.credentials.update(openstack_region='RegionTwo', openstack_cloud='mycloud')
    back._conn = None
    back.check()
    assert back.conn() == 'connection'
    assert calls == [{'cloud': 'mycloud', 'app_name': 'osimage.builder', 'auth': AUTH, 'region_name': 'RegionTwo',
                      'image_endpoint_override': 'http://127.0.0.1:9/'}]


def test_connection_from_the_environment_and_application_credentials(tmp_path: t.Any, monkeypatch: t.Any) -> None:
    calls = fake_openstack(monkeypatch)
    back = backend(tmp_path)
    back.request.credentials = {'openstack_auth': None, 'openstack_cloud': None, 'openstack_region': None}
    back._conn = None
    back.conn()
    # openstack.connect reads OS_CLOUD / OS_* / clouds.yaml itself, as AWX's credential sets them
    assert calls == [{'cloud': None, 'app_name': 'osimage.builder'}]
    back.request.credentials = {'openstack_auth': {'auth_url': 'u', 'application_credential_id': 'i',
                                                   'application_credential_secret': 's'}}
    back._conn = None
    back.conn()
    assert calls[-1]['auth_type'] == 'v3applicationcredential'


def test_missing_library(tmp_path: t.Any, monkeypatch: t.Any) -> None:
    monkeypatch.setitem(sys.modules, 'openstack', None)
    back = backend(tmp_path)
    back._conn = None
    with pytest.raises(_cloud.LibraryMissing, match=r'pip install openstacksdk'):
        back.run()


def test_cloud_not_in_clouds_yaml(tmp_path: t.Any, monkeypatch: t.Any) -> None:
    class ConfigException(Exception):
        pass

    module = types.ModuleType('openstack')

    def connect(**kwargs: t.Any) -> None:
        raise ConfigException('Cloud nope was not found.')

    module.connect = connect  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, 'openstack', module)
    back = backend(tmp_path)
    back._conn = None
    with pytest.raises(_cloud.CredentialsError, match='^openstack_cloud: Cloud nope was not found; name a cloud'):
        back.run()


def test_module_imports_without_the_sdk() -> None:
    source = open(_cloud_glance.__file__, encoding='utf-8').read()
    assert 'import openstack' not in source and 'from openstack' not in source and 'keystoneauth1' not in source


# ----- state=absent and state=pruned ----------------------------------------------------------------------------

def test_absent_deletes_and_unprotects(tmp_path: t.Any) -> None:
    first = backend(tmp_path, options={'protected': True})
    first.run()
    glance = glance_of(first)
    glance.calls.clear()
    check = backend(tmp_path, glance=glance, state='absent', check_mode=True).run()
    assert check['changed'] and [d['id'] for d in check['deleted']] == ['id-1'] and changes(glance) == []
    result = backend(tmp_path, glance=glance, state='absent').run()
    assert result['changed'] and glance.images == {}
    assert changes(glance) == ['PATCH /images/id-1', 'DELETE /images/id-1']
    again = backend(tmp_path, glance=glance, state='absent').run()
    assert again == {'changed': False, 'deleted': [], 'target': 'openstack_glance'}


def test_absent_refuses_a_foreign_image_without_force(tmp_path: t.Any) -> None:
    glance = FakeGlance()
    glance.add('img')
    with pytest.raises(_cloud.Conflict, match='force=true deletes it anyway'):
        backend(tmp_path, glance=glance, state='absent').run()
    assert backend(tmp_path, glance=glance, state='absent', force=True).run()['changed'] and glance.images == {}


def test_pruned_keeps_the_newest_of_the_family(tmp_path: t.Any) -> None:
    glance = FakeGlance()
    for name, created in (('img-0', '2024-01-01T00:00:00Z'), ('img-1', '2024-03-01T00:00:00Z'),
                          ('img-2', '2024-02-01T00:00:00Z')):
        glance.add(name, created_at=created, **{'osimage-family': 'fam', 'osimage-sha256': 'a' * 64})
    glance.add('other', **{'osimage-family': 'x', 'osimage-sha256': 'b' * 64})
    glance.add('foreign', **{'osimage-family': 'fam'})
    glance.add('elsewhere', owner='p-2', **{'osimage-family': 'fam', 'osimage-sha256': 'c' * 64})
    listed = backend(tmp_path, glance=glance, state='pruned', family='fam', keep_newest=2, check_mode=True).run()
    assert [i['name'] for i in listed['kept']] == ['img-1', 'img-2'] and [i['name'] for i in listed['deleted']] == ['img-0']
    assert listed['changed'] and len(glance.images) == 6 and changes(glance) == []
    result = backend(tmp_path, glance=glance, state='pruned', family='fam', keep_newest=2).run()
    assert result['changed'] and changes(glance) == ['DELETE /images/id-1']
    assert sorted(image['name'] for image in glance.images.values()) == ['elsewhere', 'foreign', 'img-1', 'img-2', 'other']
    again = backend(tmp_path, glance=glance, state='pruned', family='fam', keep_newest=2).run()
    assert not again['changed'] and again['deleted'] == []
