# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""cloud_upload target openstack_glance: an image in OpenStack's Image service (Glance API v2).

openstacksdk makes the connection: it authenticates with Keystone (openstack_auth,
a cloud of clouds.yaml named by openstack_cloud, or the OS_* environment variables
that AWX's OpenStack credential sets when neither is given), finds the image
endpoint in the service catalog (or takes openstack_glance.image_endpoint) and
discovers the API version. The calls themselves are the documented REST calls of
the Image API v2 (create, upload the data, show, list, update, delete) made
through the SDK's image proxy, so that the upload is one streamed request whose
body this module controls.

Glance takes any property name up to 255 characters except its own (``id``,
``status``, ``os_glance_*``, ...), so the image carries the usual hyphenated
``osimage-sha256`` and ``osimage-family`` properties, beside the user's tags and
openstack_glance.properties. The data is streamed from src with a
Content-Length; the stream hashes what it sends and holds back the last piece
until the DigestCheck has confirmed the expected digest and the bytes sent have
it too, so Glance never receives a complete body that is not the artifact: on a
mismatch the request is cut short, the image stays ``queued`` and is deleted.
The image is created unprotected and made protected only once it is active, so
that a failed upload never leaves an image that cannot be deleted.
"""

from __future__ import annotations

import hashlib
import json
import re
import typing as t
import urllib.parse

from ansible_collections.osimage.builder.plugins.module_utils._cloud import (
    CHUNK, DIGEST_KEY, FAMILY_KEY, GLANCE_DISK_FORMATS, Backend, CloudError, Conflict, CredentialsError, DigestCheck,
    DigestMismatch, RETRYABLE_STATUS, class_names, http_status, load_library, newest_first, sha256_file, short_error)
from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput, OsImageError

# Status names of an image whose data never arrived completely (Glance API v2, "Image statuses").
INCOMPLETE = ('queued', 'saving', 'uploading', 'importing', 'killed')
FAILED = ('killed', 'deleted', 'pending_delete', 'deactivated')
LIST_LIMIT = 200
PATCH_TYPE = 'application/openstack-images-v2.1-json-patch'
# Image attributes of the API (and names it reserves), which cannot be properties.
GLANCE_ATTRIBUTES = frozenset((
    'checksum', 'container_format', 'created_at', 'deleted', 'deleted_at', 'direct_url', 'disk_format', 'file', 'id',
    'location', 'locations', 'min_disk', 'min_ram', 'name', 'os_hash_algo', 'os_hash_value', 'os_hidden', 'owner',
    'protected', 'schema', 'self', 'size', 'status', 'stores', 'tags', 'updated_at', 'virtual_size', 'visibility'))
RESERVED_PREFIX = 'os_glance'
CREDENTIALS_HINT = ('openstack_auth (auth_url, username, password, project_name, user_domain_name, '
                    'project_domain_name, or an application credential), openstack_cloud (a cloud of clouds.yaml, or '
                    'OS_CLOUD) or the OS_* environment variables (OS_AUTH_URL, OS_USERNAME, OS_PASSWORD, ...)')
AUTHENTICATE = 'Authenticate with Keystone'
HTML_TAG_RE = re.compile(r'<[^>]+>')


class GlanceHttpError(Exception):
    """A Glance answer with an error status, with the message of its body."""

    def __init__(self, status: int, message: str, request_id: str = '') -> None:
        super().__init__('HTTP %d: %s' % (status, message))
        self.status_code = status
        self.message = message
        self.request_id = request_id


def response_message(response: t.Any) -> str:
    """The message of an error answer: Glance's JSON ``message``/``error`` or the text of its HTML or plain body."""
    text = ''
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for value in [body] + [v for v in body.values() if isinstance(v, dict)]:
            for key in ('message', 'detail', 'title'):
                if isinstance(value.get(key), str) and value[key].strip():
                    text = value[key]
                    break
            if text:
                break
    if not text:
        text = HTML_TAG_RE.sub(' ', getattr(response, 'text', '') or '')
    text = ' '.join(text.split())
    reason = '%d %s' % (response.status_code, getattr(response, 'reason', '') or '')
    if reason.strip() and text.startswith(reason.strip()):
        text = text[len(reason.strip()):].strip(' :')
    return text[:500] or 'HTTP %d' % response.status_code


def property_value(where: str, key: str, value: t.Any) -> str:
    """A property value as Glance stores it: a string (booleans as true/false, numbers as written)."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (str, int, float)):
        return str(value)
    raise InvalidInput('%s: the value of %s must be a string, number or boolean, not %s'
                       % (where, key, type(value).__name__))


def image_summary(image: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
    """The fields of a Glance image that results and pruning need."""
    return {'name': image.get('name'), 'id': image.get('id'), 'created': str(image.get('created_at') or ''),
            'status': image.get('status'), 'sha256': image.get(DIGEST_KEY), 'family': image.get(FAMILY_KEY),
            'protected': bool(image.get('protected'))}


class UploadStream:
    """The body of the upload: src read in CHUNK pieces, counted in Progress, hashed as it is sent.

    The last piece is handed over only after the DigestCheck confirmed the
    expected digest and the bytes read here have it too; otherwise read() raises
    DigestMismatch, which ends the request before Glance has the whole body.
    """

    def __init__(self, path: str, size: int, check: DigestCheck, digest: str, progress: t.Any) -> None:
        self.path = path
        self.size = size
        self.check = check
        self.digest = digest
        self.progress = progress
        self.hash = hashlib.sha256()
        self.done = 0
        self.buffer = b''
        self.handle: t.Optional[t.BinaryIO] = None

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> t.Iterator[bytes]:
        while True:
            data = self.read(CHUNK)
            if not data:
                return
            yield data

    def _fill(self) -> None:
        if self.handle is None:
            self.handle = open(self.path, 'rb')  # pylint: disable=consider-using-with
        want = min(CHUNK, self.size - self.done)
        chunk = self.handle.read(want)
        if len(chunk) != want:
            raise CloudError('src: %s became shorter while it was sent' % self.path)
        self.hash.update(chunk)
        self.done += len(chunk)
        if self.done >= self.size:
            self.check.verify()
            if self.handle.read(1) or self.hash.hexdigest() != self.digest:
                raise DigestMismatch('src: %s changed while it was sent; nothing was published' % self.path,
                                     expected=self.digest)
        self.buffer = chunk

    def read(self, size: int = -1) -> bytes:
        if not self.buffer:
            if self.done >= self.size:
                self.close()
                return b''
            self._fill()
        if size is None or size < 0:
            size = len(self.buffer)
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        self.progress.sent(len(data))
        return data

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


class GlanceBackend(Backend):
    target = 'openstack_glance'

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self.opts: t.Dict[str, t.Any] = {}
        self.properties: t.Dict[str, str] = {}
        self.disk_format = ''
        self._conn: t.Any = None

    # ----- options ---------------------------------------------------------------------------------------

    def check(self) -> None:
        req = self.request
        self.opts = dict((req.options or {}).get('openstack_glance') or {})
        opts = self.opts
        if len(req.name) > 255:
            raise InvalidInput('name: a Glance image name has at most 255 characters, not %d' % len(req.name))
        endpoint = opts.get('image_endpoint')
        if endpoint and urllib.parse.urlparse(endpoint).scheme not in ('http', 'https'):
            raise InvalidInput('openstack_glance.image_endpoint: %r is not an http(s) URL' % endpoint)
        for option in ('min_disk', 'min_ram'):
            if opts.get(option) is not None and opts[option] < 0:
                raise InvalidInput('openstack_glance.%s: %d is negative' % (option, opts[option]))
        auth = req.credentials.get('openstack_auth')
        if auth is not None and not isinstance(auth, dict):
            raise InvalidInput('openstack_auth: a dict of authentication options is expected')
        properties: t.Dict[str, str] = {}
        for where, values in (('tags', req.tags), ('openstack_glance.properties', opts.get('properties') or {})):
            for key, value in values.items():
                self._check_property(where, key)
                properties[key] = property_value(where, key, value)
        self.properties = properties
        if req.state == 'present':
            self.disk_format = opts.get('disk_format') or ''
            if not self.disk_format:
                extension = t.cast(str, req.src).rsplit('/', 1)[-1].rpartition('.')[2].lower()
                self.disk_format = GLANCE_DISK_FORMATS.get(extension, '')
                if not self.disk_format:
                    raise InvalidInput('openstack_glance.disk_format: cannot tell the disk format of src %s from its '
                                       'extension (known: %s); give openstack_glance.disk_format'
                                       % (req.src, ', '.join(sorted(GLANCE_DISK_FORMATS))))

    @staticmethod
    def _check_property(where: str, key: str) -> None:
        if not key or len(key) > 255:
            raise InvalidInput('%s: %r is not a Glance property name (1 to 255 characters)' % (where, key))
        if key in GLANCE_ATTRIBUTES or key.startswith(RESERVED_PREFIX):
            raise InvalidInput('%s: %s is an attribute of Glance images or a name Glance reserves, not a property; '
                               'use the options of openstack_glance for the image\'s attributes' % (where, key))
        if key in (DIGEST_KEY, FAMILY_KEY):
            raise InvalidInput('%s: %s is reserved for the digest and family this module records' % (where, key))

    # ----- retries and errors ---------------------------------------------------------------------------

    def is_retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, OsImageError):
            return False
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return True
        names = class_names(exc)
        if names & {'ConnectFailure', 'ConnectTimeout', 'RetriableConnectionFailure', 'UnknownConnectionError'}:
            return True
        if names & {'SSLError', 'Unauthorized', 'MissingRequiredOptions', 'ConfigException', 'EndpointNotFound'}:
            return False
        return http_status(exc) in RETRYABLE_STATUS

    def _error(self, what: str, exc: BaseException) -> OsImageError:
        """The exception an SDK or API call raised, as the collection's error naming what to fix."""
        if isinstance(exc, OsImageError):
            return exc
        names = class_names(exc)
        status, text = http_status(exc), short_error(exc)
        creds = self.request.credentials
        if 'ConfigException' in names:
            return CredentialsError('openstack_cloud: %s; name a cloud of clouds.yaml (OS_CLIENT_CONFIG_FILE or '
                                    'the usual places) or give openstack_auth' % text.rstrip('.'))
        if names & {'MissingRequiredOptions', 'MissingAuthPlugin', 'NoMatchingPlugin'}:
            return CredentialsError('openstack_auth: %s; give %s' % (text, CREDENTIALS_HINT))
        if status == 401 or 'Unauthorized' in names or 'AuthorizationFailure' in names:
            if creds.get('openstack_auth'):
                source = 'openstack_auth'
            elif creds.get('openstack_cloud'):
                source = 'openstack_cloud (cloud %s of clouds.yaml)' % creds['openstack_cloud']
            else:
                source = 'openstack_auth: none given, and the OS_* environment variables'
            service = 'Keystone' if what == AUTHENTICATE else 'Glance'
            return CredentialsError('%s: %s refused the credentials (HTTP 401) at %s: %s; check the user name and '
                                    'password (or application credential), their domains and the project'
                                    % (source, service, what, text), status=status)
        if 'EndpointNotFound' in names:
            return CloudError('openstack_glance.image_endpoint: the service catalog has no image endpoint%s (%s); '
                              'give openstack_region or openstack_glance.image_endpoint'
                              % (' in region %s' % creds['openstack_region'] if creds.get('openstack_region') else '',
                                 text))
        if 'DiscoveryFailure' in names:
            return CloudError('openstack_glance.image_endpoint: no Image API v2 found: %s' % text)
        if status == 403:
            hint = ''
            if self.opts.get('visibility') in ('public', 'community') and what.startswith('Create image'):
                hint = ('; openstack_glance.visibility %s may need a role the user does not have'
                        % self.opts['visibility'])
            return CloudError('%s: Glance forbade it (HTTP 403): %s%s' % (what, text, hint), status=status)
        if status == 413:
            return CloudError('%s: Glance refused it for a quota or size limit (HTTP 413): %s' % (what, text),
                              status=status)
        if status is not None:
            return CloudError('%s failed (HTTP %d): %s' % (what, status, text), status=status)
        return CloudError('%s failed: %s' % (what, text), error=type(exc).__name__)

    # ----- calls -------------------------------------------------------------------------------------------

    def conn(self) -> t.Any:
        """The openstacksdk connection (openstack.connect reads clouds.yaml and OS_* itself when nothing is given)."""
        if self._conn is None:
            openstack = load_library(self.target, 'openstack', 'openstacksdk')
            creds = self.request.credentials
            kwargs: t.Dict[str, t.Any] = {'app_name': 'osimage.builder'}
            auth = dict(creds.get('openstack_auth') or {})
            if auth:
                auth_type = auth.pop('auth_type', None)
                if not auth_type and auth.get('application_credential_secret'):
                    auth_type = 'v3applicationcredential'
                elif not auth_type and auth.get('token') and not auth.get('password'):
                    auth_type = 'token'
                kwargs['auth'] = auth
                if auth_type:
                    kwargs['auth_type'] = auth_type
            if creds.get('openstack_region'):
                kwargs['region_name'] = creds['openstack_region']
            if self.opts.get('image_endpoint'):
                kwargs['image_endpoint_override'] = self.opts['image_endpoint']
            try:
                self._conn = openstack.connect(cloud=creds.get('openstack_cloud') or None, **kwargs)
            except Exception as exc:  # pylint: disable=broad-except
                raise self._error('connect', exc) from None
        return self._conn

    def _request(self, what: str, method: str, url: str, **kwargs: t.Any) -> t.Any:
        """One Image API call, retried by Session.call only; the collection's error on an error status."""
        def send() -> t.Any:
            response = self.conn().image.request(url, method, connect_retries=0, status_code_retries=0, **kwargs)
            if response.status_code >= 400:
                raise GlanceHttpError(response.status_code, response_message(response),
                                      response.headers.get('x-openstack-request-id', ''))
            return response

        try:
            return self.session.call(what, send)
        except Exception as exc:  # pylint: disable=broad-except
            raise self._error(what, exc) from None

    def _json(self, what: str, method: str, url: str, **kwargs: t.Any) -> t.Dict[str, t.Any]:
        return self._request(what, method, url, **kwargs).json()

    def _get(self, image_id: str) -> t.Optional[t.Dict[str, t.Any]]:
        try:
            return self._json('Show image %s' % image_id, 'GET', '/images/%s' % image_id)
        except CloudError as exc:
            if exc.context.get('status') == 404:
                return None
            raise

    def _list(self, **query: str) -> t.List[t.Dict[str, t.Any]]:
        """Every image of the project (owner) that matches query, following the pages' next links."""
        project = self._project_id()
        if project:
            query['owner'] = project
        params = dict(query, limit=str(LIST_LIMIT))
        url: t.Optional[str] = '/images?' + urllib.parse.urlencode(sorted(params.items()))
        images: t.List[t.Dict[str, t.Any]] = []
        while url:
            body = self._json('List images', 'GET', url)
            images.extend(body.get('images') or [])
            following = body.get('next')
            url = '/images?' + urllib.parse.urlsplit(following).query if following else None
        if project:
            images = [image for image in images if image.get('owner') in (None, project)]
        return images

    def _project_id(self) -> t.Optional[str]:
        try:
            return self.session.call(AUTHENTICATE, lambda: self.conn().current_project_id)
        except Exception as exc:  # pylint: disable=broad-except
            raise self._error(AUTHENTICATE, exc) from None

    def _url(self, image: t.Dict[str, t.Any]) -> str:
        endpoint = ''
        try:
            endpoint = str(self.conn().image.get_endpoint() or '').rstrip('/')
        except Exception:  # pylint: disable=broad-except
            endpoint = (self.opts.get('image_endpoint') or '').rstrip('/')
        link = image.get('self') or '/v2/images/%s' % image.get('id')
        if endpoint.endswith('/v2') and link.startswith('/v2/'):
            endpoint = endpoint[:-len('/v2')]
        return endpoint + link

    def _delete(self, image: t.Dict[str, t.Any]) -> bool:
        """Delete an image (unprotecting it first); False when it was gone already."""
        image_id = image['id']
        if image.get('protected'):
            try:
                self._request('Unprotect image %s' % image_id, 'PATCH', '/images/%s' % image_id,
                              data=json.dumps([{'op': 'replace', 'path': '/protected', 'value': False}]),
                              headers={'Content-Type': PATCH_TYPE})
            except CloudError as exc:
                if exc.context.get('status') == 404:
                    return False
                raise
        try:
            self._request('Delete image %s' % image_id, 'DELETE', '/images/%s' % image_id)
        except CloudError as exc:
            if exc.context.get('status') == 404:
                return False
            raise
        return True

    def _discard(self, image_id: str, cause: BaseException) -> None:
        """Delete what a failed upload created; a failure to do so is reported with the original error."""
        try:
            self._delete({'id': image_id})
        except OsImageError as exc:
            self.session.warn('image %s could not be deleted after %s: %s; delete it by hand'
                              % (image_id, short_error(cause), exc.msg))

    # ----- state=present -------------------------------------------------------------------------------------

    def present(self) -> t.Dict[str, t.Any]:
        req = self.request
        digest = req.sha256 or sha256_file(t.cast(str, req.src))
        images = self._list(name=req.name)
        result: t.Dict[str, t.Any] = {'changed': False, 'id': None, 'url': None, 'sha256': digest, 'resumed': False,
                                      'details': {}}
        if len(images) > 1:
            raise Conflict('name: %d images are named %s in the project (%s); delete the ones that are not wanted '
                           '(state=absent with force=true deletes them all)'
                           % (len(images), req.name, ', '.join(sorted(str(image.get('id')) for image in images))),
                           ids=sorted(str(image.get('id')) for image in images))
        old = images[0] if images else None
        replace = None
        if old is not None:
            summary = image_summary(old)
            if summary['sha256'] == digest and summary['status'] not in INCOMPLETE:
                return self._result(result, old)
            if summary['sha256'] and summary['status'] in INCOMPLETE:
                self.session.warn('image %s (%s) is %s, left by an upload that did not finish; it is replaced'
                                  % (req.name, summary['id'], summary['status']))
            elif not req.force:
                raise Conflict('name: image %s (%s) has %s; give another name, or force=true to replace it'
                               % (req.name, summary['id'], 'SHA-256 %s, not %s' % (summary['sha256'], digest)
                                  if summary['sha256'] else 'no %s property (this module did not create it)'
                                  % DIGEST_KEY), id=summary['id'])
            replace = old
        result['changed'] = True
        if req.check_mode:
            result['details']['would_upload'] = True
            if replace is not None:
                result['details']['would_replace'] = replace['id']
            return result
        if replace is not None and replace.get('status') in INCOMPLETE:
            # A leftover goes first: it holds the name but no data.
            self._delete(replace)
            replace = None
        image = self._upload(digest)
        if replace is not None:
            self._delete(replace)
            result['details']['replaced'] = replace['id']
        return self._result(result, image)

    def _result(self, result: t.Dict[str, t.Any], image: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
        result['id'] = image['id']
        result['url'] = self._url(image)
        result['details'].update({key: image.get(key) for key in (
            'name', 'status', 'disk_format', 'container_format', 'visibility', 'protected', 'min_disk', 'min_ram',
            'size', 'checksum', 'os_hash_algo', 'os_hash_value', 'created_at', 'owner')})
        return result

    def _create_body(self, digest: str) -> t.Dict[str, t.Any]:
        req, opts = self.request, self.opts
        body: t.Dict[str, t.Any] = dict(req.marks(digest))
        body.update(self.properties)
        body.update(name=req.name, disk_format=self.disk_format,
                    container_format=opts.get('container_format') or 'bare',
                    visibility=opts.get('visibility') or 'private')
        for key in ('min_disk', 'min_ram'):
            if opts.get(key) is not None:
                body[key] = opts[key]
        if req.description and 'description' not in body:
            body['description'] = req.description
        return body

    def _upload(self, digest: str) -> t.Dict[str, t.Any]:
        """Create the image, send the data and wait until it is active; on failure the image is deleted."""
        req = self.request
        src = t.cast(str, req.src)
        image = self._json('Create image %s' % req.name, 'POST', '/images', json=self._create_body(digest))
        image_id = image['id']
        check = DigestCheck(src, digest)
        size = _file_size(src)
        try:
            def put() -> t.Any:
                stream = UploadStream(src, size, check, digest, self.session.progress)
                try:
                    # No reauthentication and no retries inside keystoneauth (openstacksdk asks it to retry the
                    # image service's 503s): each would send the stream again from where it stopped, with the
                    # whole length announced. Session.call retries with a new stream.
                    return self.conn().image.request('/images/%s/file' % image_id, 'PUT', data=stream,
                                                     headers={'Content-Type': 'application/octet-stream'},
                                                     connect_retries=0, status_code_retries=0, allow_reauth=False)
                finally:
                    stream.close()

            what = 'Upload image data %s' % image_id

            def send() -> t.Any:
                response = put()
                if response.status_code >= 400:
                    raise GlanceHttpError(response.status_code, response_message(response))
                return response

            try:
                self.session.call(what, send)
            except Exception as exc:  # pylint: disable=broad-except
                raise self._error(what, exc) from exc
            check.verify()
            if req.wait:
                image = self.session.wait_until('image %s to become active' % req.name,
                                                lambda: self._active(image_id), delay=2.0)
            else:
                image = self._get(image_id) or image
            if self.opts.get('protected'):
                image = self._json('Protect image %s' % image_id, 'PATCH', '/images/%s' % image_id,
                                   data=json.dumps([{'op': 'replace', 'path': '/protected', 'value': True}]),
                                   headers={'Content-Type': PATCH_TYPE})
        except BaseException as exc:
            check.cancel()
            if isinstance(exc, DigestMismatch) or not req.keep_partial:
                self._discard(image_id, exc)
            raise
        return image

    def _active(self, image_id: str) -> t.Optional[t.Dict[str, t.Any]]:
        image = self._get(image_id)
        if image is None:
            raise CloudError('image %s disappeared while its data was processed' % image_id, id=image_id)
        status = image.get('status')
        if status == 'active':
            return image
        if status in FAILED:
            raise CloudError('image %s became %s instead of active: Glance could not store its data'
                             % (image_id, status), id=image_id, status_name=status)
        return None

    # ----- state=absent and state=pruned ---------------------------------------------------------------------

    def absent(self) -> t.Dict[str, t.Any]:
        req = self.request
        images = self._list(name=req.name)
        foreign = [image['id'] for image in images if not image.get(DIGEST_KEY)]
        if foreign and not req.force:
            raise Conflict('name: image %s (%s) has no %s property, so this module did not create it; force=true '
                           'deletes it anyway' % (req.name, ', '.join(foreign), DIGEST_KEY), ids=foreign)
        deleted = []
        for image in sorted(images, key=lambda item: str(item.get('created_at') or '')):
            entry = image_summary(image)
            if not req.check_mode:
                self._delete(image)
            deleted.append(entry)
        return {'changed': bool(deleted), 'deleted': deleted}

    def pruned(self) -> t.Dict[str, t.Any]:
        req = self.request
        images = [image_summary(image) for image in self._list()
                  if image.get(FAMILY_KEY) == req.family and image.get(DIGEST_KEY)]
        kept, gone = newest_first(images, req.keep_newest or 1)
        if not req.check_mode:
            for entry in gone:
                self._delete(entry)
        return {'changed': bool(gone), 'deleted': gone, 'kept': kept}


def _file_size(path: str) -> int:
    with open(path, 'rb') as handle:
        return handle.seek(0, 2)
