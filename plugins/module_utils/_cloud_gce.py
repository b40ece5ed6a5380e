# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""cloud_upload target gce: the tar.gz of disk.raw into a Cloud Storage bucket, and a Compute Engine image from it.

Compute Engine creates an image from an object in Cloud Storage that is a gzip
compressed tar archive holding one file named ``disk.raw`` (image_export's
``gce`` output is exactly that). The object is sent with a resumable upload
(google-cloud-storage) and carries the artifact's digest as the custom
metadata ``osimage-sha256``; then images.insert (google-cloud-compute, REST
transport) reads it, and the image is waited for until it is READY. The
object is only the way in: it is deleted once the image is READY unless
gce.keep_object.

A label value holds at most 63 characters, one short of a SHA-256 in hex, so
the image carries the digest as two labels, ``osimage-sha256-1`` and
``osimage-sha256-2`` (32 digits each), and the family as ``osimage-family``
(besides the image's own ``family`` field, which Compute Engine uses to find
the newest image of a family).

The data is checked against the expected digest while it is read for the
upload: the last bytes are handed to the upload only after the DigestCheck
passed, so that a mismatch never finishes (never makes visible) the object.
"""

from __future__ import annotations

import datetime
import gzip
import json
import os
import re
import typing as t
import urllib.parse

from ansible_collections.osimage.builder.plugins.module_utils._cloud import (
    CHUNK, DIGEST_KEY, FAMILY_KEY, RETRYABLE_STATUS, Backend, CloudError, Conflict, CredentialsError, DigestCheck,
    DigestMismatch, check_image_name, check_tags, class_names, http_status, load_library, newest_first, sha256_file,
    short_error)
from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput, OsImageError

SCOPES = ['https://www.googleapis.com/auth/cloud-platform']
# Resumable uploads send chunks of a multiple of 256 KiB; Google recommends at least 8 MiB.
UPLOAD_CHUNK = 2 * CHUNK
DIGEST_LABELS = ('osimage-sha256-1', 'osimage-sha256-2')
STORAGE_URL = 'https://storage.googleapis.com/%s/%s'
CALL_TIMEOUT = 120.0
POLL_DELAY = 2.0
# Compute Engine takes at most 64 labels on a resource; this module adds up to three.
MAX_TAGS = 61

BUCKET_RE = re.compile(r'^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$')
GUEST_OS_FEATURE_RE = re.compile(r'^[A-Z][A-Z0-9_]*$')
STORAGE_LOCATION_RE = re.compile(r'^[a-z][a-z0-9-]*$')
GZIP_MAGIC = b'\x1f\x8b'
LOOPBACK = ('127.0.0.1', '::1', 'localhost')
NETWORK_ERRORS = {'ConnectionError', 'Timeout', 'ChunkedEncodingError', 'TransportError', 'ProtocolError',
                  'RemoteDisconnected', 'IncompleteRead'}
KEY_SOURCE = 'gcp_credentials (or GCP_SERVICE_ACCOUNT_CONTENTS)'
ROLES_HINT = ('give the service account roles/compute.storageAdmin in project %s and roles/storage.objectAdmin on '
              'bucket %s')


def check_gce_tar(path: str) -> None:
    """InvalidInput unless path is a gzip tar whose first member is disk.raw (what images.insert reads)."""
    hint = ('; Compute Engine creates images from the tar.gz of disk.raw - add a gce output to the build '
            '(image_export format gce) and publish that artifact')
    with open(path, 'rb') as handle:
        magic = handle.read(2)
    if magic != GZIP_MAGIC:
        raise InvalidInput('src: %s is not gzip compressed%s' % (path, hint))
    try:
        with gzip.open(path, 'rb') as handle:
            header = handle.read(512)
    except (OSError, EOFError) as exc:
        raise InvalidInput('src: %s is not a readable gzip file (%s)%s' % (path, exc, hint)) from None
    if len(header) < 512 or header[257:262] != b'ustar':
        raise InvalidInput('src: %s is gzip compressed but not a tar archive%s' % (path, hint))
    name = header[:100].split(b'\0', 1)[0].decode('utf-8', 'replace')
    if name not in ('disk.raw', './disk.raw'):
        raise InvalidInput('src: the first file in %s is %r, not disk.raw%s' % (path, name, hint))


def digest_labels(digest: str) -> t.Dict[str, str]:
    return {DIGEST_LABELS[0]: digest[:32], DIGEST_LABELS[1]: digest[32:]}


def labels_digest(labels: t.Optional[t.Dict[str, str]]) -> t.Optional[str]:
    """The SHA-256 the two digest labels spell, or None."""
    labels = labels or {}
    first, second = labels.get(DIGEST_LABELS[0]), labels.get(DIGEST_LABELS[1])
    if not first or not second:
        return None
    return first + second


def utc_iso(text: t.Optional[str]) -> str:
    """An RFC 3339 time (creationTimestamp, with its offset) as UTC, so that times sort as strings."""
    if not text:
        return ''
    try:
        moment = datetime.datetime.fromisoformat(text.replace('Z', '+00:00'))
    except ValueError:
        return text
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ')


def object_url(bucket: str, name: str) -> str:
    return STORAGE_URL % (bucket, urllib.parse.quote(name, safe='/'))


def split_object_url(url: t.Optional[str]) -> t.Optional[t.Tuple[str, str]]:
    """(bucket, object) of a gs:// or https://storage.googleapis.com/ URL, else None."""
    if not url:
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == 'gs':
        bucket, path = parts.netloc, parts.path.lstrip('/')
    elif parts.scheme == 'https' and parts.netloc in ('storage.googleapis.com', 'storage.cloud.google.com'):
        bucket, _unused, path = parts.path.lstrip('/').partition('/')
    else:
        return None
    if not bucket or not path:
        return None
    return bucket, urllib.parse.unquote(path)


def _as_dict(value: t.Any) -> t.Dict[str, t.Any]:
    """A compute_v1 message (proto-plus) or a plain dict, as the REST JSON (camelCase names)."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    to_dict = getattr(type(value), 'to_dict', None)
    if to_dict is not None:
        return to_dict(value, preserving_proto_field_name=False, use_integers_for_enums=False)
    return dict(value)


def image_summary(image: t.Any) -> t.Dict[str, t.Any]:
    """The fields of a Compute Engine Image that the result and the pruning need."""
    data = _as_dict(image)
    labels = data.get('labels') or {}
    return {'name': data.get('name'), 'id': str(data.get('id') or '') or data.get('name'),
            'created': utc_iso(data.get('creationTimestamp')), 'sha256': labels_digest(labels),
            'family': labels.get(FAMILY_KEY) or data.get('family'), 'status': data.get('status'),
            'url': data.get('selfLink'), 'source': (data.get('rawDisk') or {}).get('source')}


def operation_error(operation: t.Any) -> t.Optional[str]:
    """The messages of a finished Operation's errors, or None when it succeeded (or is not done)."""
    data = _as_dict(operation)
    errors = (data.get('error') or {}).get('errors') or []
    if not errors:
        return None
    return '; '.join('%s: %s' % (e.get('code'), e.get('message')) if e.get('code') else str(e.get('message'))
                     for e in errors)


class _CountingReader:
    """The file object the upload reads: counts the bytes in Progress, verifies the digest before the last ones.

    The upload finishes (and the object becomes visible) with the last chunk;
    verifying just before handing it out means a mismatch leaves no object.
    """

    def __init__(self, handle: t.BinaryIO, size: int, check: DigestCheck, sent: t.Callable[[int], None]) -> None:
        self.handle = handle
        self.size = size
        self.check = check
        self.sent = sent

    def read(self, size: int = -1) -> bytes:
        position = self.handle.tell()
        if size is None or size < 0 or position + size >= self.size:
            self.check.verify()
        data = self.handle.read(size)
        self.sent(len(data))
        return data

    def tell(self) -> int:
        return self.handle.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.handle.seek(offset, whence)


class GceBackend(Backend):
    target = 'gce'

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self.opts: t.Dict[str, t.Any] = {}
        self.project: t.Optional[str] = None
        self._info: t.Optional[t.Dict[str, t.Any]] = None
        self._credentials: t.Any = None
        self._storage: t.Any = None
        self._images: t.Any = None
        self._operations: t.Any = None
        self._compute_v1: t.Any = None
        self._inserted = False   # whether images.insert was accepted, so that a failure deletes only our image

    # ----- options ---------------------------------------------------------------------------------------

    @property
    def object_name(self) -> str:
        return self.opts.get('object') or self.request.name + '.tar.gz'

    @property
    def source(self) -> str:
        """What the credentials came from, for messages (never the key itself)."""
        creds = self.request.credentials
        if creds.get('gcp_credentials'):
            return KEY_SOURCE
        if creds.get('gcp_credentials_file'):
            return 'gcp_credentials_file %s' % creds['gcp_credentials_file']
        return ('the application default credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud auth '
                'application-default login, or the metadata server)')

    def check(self) -> None:
        req = self.request
        self.opts = dict((req.options or {}).get('gce') or {})
        opts = self.opts
        bucket = opts.get('bucket')
        if not bucket:
            raise InvalidInput('gce.bucket: the Cloud Storage bucket the image is staged in is required')
        if not BUCKET_RE.match(bucket) or '..' in bucket or (len(bucket) > 63 and '.' not in bucket):
            raise InvalidInput('gce.bucket: %r is not a bucket name (3 to 63 lowercase letters, digits, hyphens, '
                               'underscores and dots, starting and ending with a letter or digit)' % bucket)
        name = self.object_name
        if not 1 <= len(name.encode('utf-8')) <= 1024 or name in ('.', '..') or '\n' in name or '\r' in name:
            raise InvalidInput('gce.object: %r is not an object name (1 to 1024 bytes of UTF-8, no line breaks)' % name)
        for option in ('storage_endpoint', 'compute_endpoint'):
            url = opts.get(option)
            if not url:
                continue
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in ('http', 'https') or not parts.netloc:
                raise InvalidInput('gce.%s: %r is not an http(s) URL' % (option, url))
            if parts.scheme == 'http' and parts.hostname not in LOOPBACK:
                self.session.warn('gce.%s: %s is plain http; the access token is sent unencrypted' % (option, url))
        if req.state != 'pruned':
            check_image_name('gce', req.name)
        if req.family:
            check_image_name('gce', req.family, where='family')
        features = opts.get('guest_os_features') or []
        for feature in features:
            if not GUEST_OS_FEATURE_RE.match(str(feature)):
                raise InvalidInput('gce.guest_os_features: %r is not a guest OS feature (upper case, for example '
                                   'UEFI_COMPATIBLE or GVNIC)' % feature)
        for location in opts.get('storage_locations') or []:
            if not STORAGE_LOCATION_RE.match(str(location)):
                raise InvalidInput('gce.storage_locations: %r is not a Cloud Storage location (for example eu or '
                                   'us-central1)' % location)
        self._check_labels()
        self.project = self._project()
        if req.state == 'present':
            check_gce_tar(t.cast(str, req.src))

    def _check_labels(self) -> None:
        """Tags become image labels (check_request checked their alphabet); three more are this module's."""
        tags = self.request.tags
        check_tags('gce', tags)
        if len(tags) > MAX_TAGS:
            raise InvalidInput('tags: %d tags, but a Compute Engine image takes 64 labels and this module adds up '
                               'to 3' % len(tags))

    def _key_info(self) -> t.Optional[t.Dict[str, t.Any]]:
        """The parsed key of gcp_credentials or gcp_credentials_file; None for the default credentials."""
        if self._info is None:
            creds = self.request.credentials
            text, path = creds.get('gcp_credentials'), creds.get('gcp_credentials_file')
            if text:
                where, what = 'gcp_credentials', 'the JSON text'
            elif path:
                where, what = 'gcp_credentials_file', path
                try:
                    with open(path, encoding='utf-8') as handle:
                        text = handle.read()
                except OSError as exc:
                    raise InvalidInput('gcp_credentials_file: %s cannot be read: %s' % (path, exc.strerror)) from None
            else:
                return None
            try:
                info = json.loads(text)
            except ValueError as exc:
                # The error names a position, never the text, which holds a private key.
                raise InvalidInput('%s: %s is not JSON (%s at line %d); give the JSON key of a service account'
                                   % (where, what, exc.__class__.__name__, getattr(exc, 'lineno', 0))) from None
            if not isinstance(info, dict) or not info.get('type'):
                raise InvalidInput('%s: %s is not a Google credentials file (no "type" field); give the JSON key '
                                   'of a service account' % (where, what))
            if info['type'] == 'service_account':
                missing = [field for field in ('client_email', 'private_key', 'token_uri') if not info.get(field)]
                if missing:
                    raise InvalidInput('%s: the service account key %s lacks %s' % (where, what, ', '.join(missing)))
            self._info = info
        return self._info

    def _project(self) -> str:
        opts, creds = self.opts, self.request.credentials
        project = opts.get('project') or creds.get('gcp_project')
        if not project:
            info = self._key_info()
            if info is not None:
                project = info.get('project_id') or info.get('quota_project_id')
            else:
                project = self.credentials_and_project()[1]
        if not project:
            raise InvalidInput('gce.project: no project given; set gce.project or gcp_project (or GOOGLE_CLOUD_PROJECT), '
                               'or use a service account key that names its project_id')
        return str(project)

    # ----- retries and errors ---------------------------------------------------------------------------

    def is_retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, OsImageError):
            return False
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return True
        names = class_names(exc)
        if names & {'RefreshError', 'DefaultCredentialsError', 'DataCorruption'}:
            return False
        if names & NETWORK_ERRORS:
            return True
        if 'GoogleAPICallError' in names or 'InvalidResponse' in names:
            return http_status(exc) in RETRYABLE_STATUS
        return False

    def _error(self, what: str, exc: BaseException) -> OsImageError:
        """The exception an SDK call raised, as the collection's error naming what to fix."""
        if isinstance(exc, OsImageError):
            return exc
        names = class_names(exc)
        status, text = http_status(exc), short_error(exc)
        storage = not what.startswith(('Images.', 'GlobalOperations.', 'image '))
        if 'RefreshError' in names:
            return CredentialsError('%s: the token endpoint refused the credentials of %s: %s'
                                    % (what, self.source, text), error=type(exc).__name__)
        if 'DefaultCredentialsError' in names:
            return CredentialsError('gcp_credentials_file: no credentials given (gcp_credentials_file or %s) and no '
                                    'application default credentials found: %s' % (KEY_SOURCE, text))
        if status == 401:
            service = 'Cloud Storage' if storage else 'Compute Engine'
            return CredentialsError('%s: %s refused the credentials of %s (401): %s'
                                    % (what, service, self.source, text), status=status)
        if status == 403:
            return CredentialsError('%s: the credentials of %s may not do this (403): %s; %s'
                                    % (what, self.source, text, ROLES_HINT % (self.project, self.opts.get('bucket'))),
                                    status=status)
        if storage and status == 404 and 'bucket' in text.lower():
            return CloudError('gce.bucket: bucket %s does not exist (or is not visible to %s); create it first'
                              % (self.opts.get('bucket'), self.source), status=status)
        if 'DataCorruption' in names:
            return CloudError('%s: the object Cloud Storage stored has another checksum than the data sent: %s'
                              % (what, text))
        return CloudError('%s failed: %s' % (what, text), status=status, error=type(exc).__name__)

    def _call(self, what: str, func: t.Callable[..., t.Any], *args: t.Any, **kwargs: t.Any) -> t.Any:
        try:
            return self.session.call(what, func, *args, **kwargs)
        except Exception as exc:  # pylint: disable=broad-except
            raise self._error(what, exc) from exc

    def _get_or_none(self, what: str, func: t.Callable[..., t.Any], *args: t.Any, **kwargs: t.Any) -> t.Any:
        """func(...), or None when the resource does not exist (404)."""
        try:
            return self.session.call(what, func, *args, **kwargs)
        except Exception as exc:  # pylint: disable=broad-except
            if http_status(exc) == 404 and not isinstance(exc, OsImageError):
                return None
            raise self._error(what, exc) from exc

    # ----- clients -----------------------------------------------------------------------------------------

    def credentials_and_project(self) -> t.Tuple[t.Any, t.Optional[str]]:
        """google-auth credentials with the cloud-platform scope, and the project they name (if any)."""
        if self._credentials is None:
            info = self._key_info()
            project: t.Optional[str] = None
            if info is not None and info.get('type') == 'service_account':
                service_account = load_library('gce', 'google.oauth2.service_account', 'google-auth')
                try:
                    credentials = service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
                except (ValueError, KeyError) as exc:
                    raise InvalidInput('%s: the service account key is not usable: %s'
                                       % (self.source.split(' ', 1)[0], exc.__class__.__name__)) from None
                project = info.get('project_id')
            else:
                auth = load_library('gce', 'google.auth', 'google-auth')
                try:
                    if info is not None:
                        credentials, project = auth.load_credentials_from_dict(info, scopes=SCOPES)
                    else:
                        credentials, project = auth.default(scopes=SCOPES)
                except Exception as exc:  # pylint: disable=broad-except
                    if 'DefaultCredentialsError' in class_names(exc) or isinstance(exc, ValueError):
                        raise self._error('credentials', exc) from None
                    raise
            self._credentials = (credentials, project)
        return self._credentials

    def _client_options(self, option: str) -> t.Optional[t.Dict[str, str]]:
        endpoint = self.opts.get(option)
        return {'api_endpoint': endpoint.rstrip('/')} if endpoint else None

    def compute_v1(self) -> t.Any:
        if self._compute_v1 is None:
            self._compute_v1 = load_library('gce', 'google.cloud.compute_v1', 'google-cloud-compute')
        return self._compute_v1

    def storage(self) -> t.Any:
        if self._storage is None:
            storage = load_library('gce', 'google.cloud.storage', 'google-cloud-storage')
            self._storage = storage.Client(project=self.project, credentials=self.credentials_and_project()[0],
                                           client_options=self._client_options('storage_endpoint'))
        return self._storage

    def images(self) -> t.Any:
        if self._images is None:
            self._images = self.compute_v1().ImagesClient(
                credentials=self.credentials_and_project()[0], transport='rest',
                client_options=self._client_options('compute_endpoint'))
        return self._images

    def operations(self) -> t.Any:
        if self._operations is None:
            self._operations = self.compute_v1().GlobalOperationsClient(
                credentials=self.credentials_and_project()[0], transport='rest',
                client_options=self._client_options('compute_endpoint'))
        return self._operations

    def bucket(self) -> t.Any:
        return self.storage().bucket(self.opts['bucket'])

    # ----- images and operations ---------------------------------------------------------------------------

    def _get_image(self, name: str) -> t.Optional[t.Dict[str, t.Any]]:
        image = self._get_or_none('Images.Get %s' % name, self.images().get, project=self.project, image=name,
                                  retry=None, timeout=CALL_TIMEOUT)
        return None if image is None else image_summary(image)

    def _operation(self, name: str) -> t.Dict[str, t.Any]:
        return _as_dict(self._call('GlobalOperations.Get %s' % name, self.operations().get, project=self.project,
                                   operation=name, retry=None, timeout=CALL_TIMEOUT))

    def _wait_operation(self, what: str, operation: t.Any) -> None:
        """Wait until a global operation is DONE; CloudError with its errors when it failed."""
        data = _as_dict(operation)
        name = data.get('name')

        def probe() -> bool:
            nonlocal data
            if data.get('status') != 'DONE':
                data = self._operation(t.cast(str, name))
            if data.get('status') != 'DONE':
                return False
            error = operation_error(data)
            if error:
                raise CloudError('%s failed: %s' % (what, error), operation=name)
            return True

        self.session.wait_until('%s (operation %s)' % (what, name), probe, delay=POLL_DELAY)

    def _delete_image(self, name: str, wait: bool = True) -> None:
        what = 'Images.Delete %s' % name
        operation = self._get_or_none(what, self.images().delete_unary, project=self.project, image=name,
                                      retry=None, timeout=CALL_TIMEOUT)
        if operation is not None and wait:
            self._wait_operation(what, operation)

    def _image_body(self, digest: str, source: str) -> t.Dict[str, t.Any]:
        """The Image resource of images.insert, as the REST JSON."""
        req, opts = self.request, self.opts
        labels = dict(req.tags)
        labels.update(digest_labels(digest))
        body: t.Dict[str, t.Any] = {'name': req.name, 'labels': labels, 'rawDisk': {'source': source},
                                    'architecture': opts.get('architecture') or 'X86_64'}
        if req.family:
            body['family'] = req.family
            labels[FAMILY_KEY] = req.family
        if req.description:
            body['description'] = req.description
        if opts.get('guest_os_features'):
            body['guestOsFeatures'] = [{'type': feature} for feature in opts['guest_os_features']]
        if opts.get('licenses'):
            body['licenses'] = list(opts['licenses'])
        if opts.get('storage_locations'):
            body['storageLocations'] = list(opts['storage_locations'])
        return body

    def _image_message(self, body: t.Dict[str, t.Any]) -> t.Any:
        compute_v1 = self.compute_v1()
        known = {name for name in dir(compute_v1.GuestOsFeature.Type) if name.isupper()}
        for feature in body.get('guestOsFeatures') or []:
            if feature['type'] not in known:
                raise InvalidInput('gce.guest_os_features: %s is not one of %s'
                                   % (feature['type'], ', '.join(sorted(known - {'UNDEFINED_TYPE'}))))
        return compute_v1.Image.from_json(json.dumps(body))

    def _create_image(self, message: t.Any, source: str) -> t.Dict[str, t.Any]:
        """images.insert, then wait until the image is READY; FAILED ends the wait at once."""
        req = self.request
        what = 'Images.Insert %s' % req.name
        operation = _as_dict(self._call(what, self.images().insert_unary, project=self.project,
                                        image_resource=message, retry=None, timeout=CALL_TIMEOUT))
        self._inserted = True
        if not req.wait:
            return self._get_image(req.name) or {'name': req.name, 'id': req.name, 'status': 'PENDING'}
        name = operation.get('name')

        def probe() -> t.Optional[t.Dict[str, t.Any]]:
            nonlocal operation
            if operation.get('status') != 'DONE':
                operation = self._operation(t.cast(str, name))
            error = operation_error(operation) if operation.get('status') == 'DONE' else None
            if error:
                raise CloudError('%s failed: %s' % (what, error), operation=name)
            image = self._get_image(req.name)
            if image is not None and image['status'] == 'READY':
                return image
            if image is not None and image['status'] == 'FAILED':
                raise CloudError('%s failed: image %s has status FAILED; Compute Engine could not read a disk from '
                                 '%s' % (what, req.name, source), operation=name)
            if image is None and operation.get('status') == 'DONE':
                raise CloudError('%s failed: the operation is done, but image %s does not exist' % (what, req.name),
                                 operation=name)
            return None

        return self.session.wait_until('image %s to be READY' % req.name, probe, delay=POLL_DELAY)

    # ----- objects -------------------------------------------------------------------------------------------

    def _get_object(self, bucket: t.Any, name: str) -> t.Any:
        return self._call('Objects.Get %s' % name, bucket.get_blob, name, retry=None, timeout=CALL_TIMEOUT)

    def _upload(self, bucket: t.Any, digest: str, generation: int) -> t.Any:
        """The resumable upload of src; the object exists only when the digest was right."""
        req = self.request
        src = t.cast(str, req.src)
        size = os.path.getsize(src)
        blob = bucket.blob(self.object_name, chunk_size=UPLOAD_CHUNK)
        blob.metadata = dict(req.marks(digest))
        check = DigestCheck(src, digest)
        progress = self.session.progress

        def send() -> None:
            with open(src, 'rb') as handle:
                reader = _CountingReader(handle, size, check, progress.sent)
                blob.upload_from_file(reader, size=size, content_type='application/gzip', retry=None,
                                      if_generation_match=generation, checksum='crc32c', timeout=CALL_TIMEOUT)

        try:
            self._call('Objects.Insert %s' % self.object_name, send)
            check.verify()
        except BaseException as exc:
            check.cancel()
            if isinstance(exc, DigestMismatch) or not req.keep_partial:
                self._discard_object(bucket, exc)
            raise
        return blob

    def _discard_object(self, bucket: t.Any, cause: BaseException) -> None:
        """Delete the object after a failure; a failure to do so is a warning beside the original error."""
        try:
            self.session.call('Objects.Delete %s' % self.object_name, bucket.delete_blob, self.object_name,
                              retry=None, timeout=CALL_TIMEOUT)
        except Exception as exc:  # pylint: disable=broad-except
            if http_status(exc) != 404:
                self.session.warn('the object %s could not be deleted after %s: %s; delete it by hand'
                                  % (object_url(self.opts['bucket'], self.object_name), short_error(cause), short_error(exc)))

    def _delete_object(self, bucket: t.Any, name: str) -> None:
        try:
            self.session.call('Objects.Delete %s' % name, bucket.delete_blob, name, retry=None, timeout=CALL_TIMEOUT)
        except Exception as exc:  # pylint: disable=broad-except
            if http_status(exc) != 404:
                raise self._error('Objects.Delete %s' % name, exc) from exc

    # ----- state=present -------------------------------------------------------------------------------------

    def present(self) -> t.Dict[str, t.Any]:
        req, opts = self.request, self.opts
        src = t.cast(str, req.src)
        digest = req.sha256 or sha256_file(src)
        url = object_url(opts['bucket'], self.object_name)
        result: t.Dict[str, t.Any] = {'changed': False, 'id': req.name, 'url': None, 'sha256': digest,
                                      'resumed': False,
                                      'details': {'object_url': url, 'bucket': opts['bucket'],
                                                  'object': self.object_name, 'project': self.project,
                                                  'family': req.family, 'image_name': req.name}}
        image = self._get_image(req.name)
        if image is not None:
            if image['sha256'] == digest and image['status'] != 'FAILED':
                if image['status'] != 'READY' and req.wait and not req.check_mode:
                    image = self._wait_ready(image)
                return self._image_result(result, image)
            if image['sha256'] != digest and not req.force:
                raise Conflict('name: image %s in project %s has %s, not %s; give another name, or force=true to '
                               'replace it' % (req.name, self.project, 'SHA-256 %s' % image['sha256'] if image['sha256']
                                               else 'no %s labels (this module did not create it)' % DIGEST_KEY,
                                               digest), id=image['id'])
        bucket = self.bucket()
        existing = self._get_object(bucket, self.object_name)
        metadata = dict(getattr(existing, 'metadata', None) or {}) if existing is not None else {}
        reuse = existing is not None and metadata.get(DIGEST_KEY) == digest and existing.size == os.path.getsize(src)
        if existing is not None and not reuse and DIGEST_KEY not in metadata and not req.force:
            raise Conflict('gce.object: object %s exists without %s metadata (this module did not write it); give '
                           'another gce.object or name, or force=true to replace it' % (url, DIGEST_KEY))
        # Built (and its guest OS features checked) before anything is deleted or sent.
        message = self._image_message(self._image_body(digest, url))
        result['changed'] = True
        if req.check_mode:
            result['details'].update(would_upload=not reuse, would_create_image=True,
                                     would_replace_image=image is not None)
            return result
        if reuse:
            self.session.progress.skipped(os.path.getsize(src))
        else:
            generation = int(getattr(existing, 'generation', 0) or 0) if existing is not None else 0
            self._upload(bucket, digest, generation)
        # Image names are unique: the image that force replaces goes only once the new data is in the bucket.
        if image is not None:
            self._delete_image(req.name)
        try:
            created = self._create_image(message, url)
        except BaseException as exc:
            if not req.keep_partial:
                if self._inserted:
                    self._discard_image(req.name)
                self._discard_object(bucket, exc)
            raise
        result['details']['object_deleted'] = False
        if created.get('status') == 'READY' and not opts.get('keep_object'):
            self._delete_object(bucket, self.object_name)
            result['details']['object_deleted'] = True
        return self._image_result(result, created)

    def _wait_ready(self, image: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
        def probe() -> t.Optional[t.Dict[str, t.Any]]:
            current = self._get_image(image['name'])
            if current is None:
                raise CloudError('image %s disappeared while it was waited for' % image['name'])
            if current['status'] == 'FAILED':
                raise CloudError('image %s has status FAILED' % image['name'])
            return current if current['status'] == 'READY' else None

        return self.session.wait_until('image %s to be READY' % image['name'], probe, delay=POLL_DELAY)

    def _discard_image(self, name: str) -> None:
        """Delete an image that failed (or that a failed wait left); a failure to do so is a warning."""
        try:
            self._delete_image(name)
        except OsImageError as exc:
            self.session.warn('image %s could not be deleted after it failed: %s; delete it by hand' % (name, exc.msg))

    @staticmethod
    def _image_result(result: t.Dict[str, t.Any], image: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
        result['id'] = image.get('id') or image.get('name')
        result['url'] = image.get('url')
        result['details'].update(status=image.get('status'), image_id=image.get('id'))
        return result

    # ----- state=absent and state=pruned ---------------------------------------------------------------------

    def absent(self) -> t.Dict[str, t.Any]:
        req = self.request
        deleted: t.List[t.Dict[str, t.Any]] = []
        image = self._get_image(req.name)
        if image is not None:
            if not image['sha256'] and not req.force:
                raise Conflict('name: image %s has no %s labels, so this module did not create it; force=true '
                               'deletes it anyway' % (req.name, DIGEST_KEY), id=image['id'])
            deleted.append({'type': 'image', 'name': req.name, 'id': image['id'], 'url': image['url'],
                            'sha256': image['sha256']})
        bucket = self.bucket()
        names = [self.object_name]
        # The object the image was made from, when it is another one of this bucket (an earlier gce.object).
        where = split_object_url(image['source']) if image is not None else None
        if where is not None and where[0] == self.opts['bucket'] and where[1] != self.object_name:
            names.append(where[1])
        objects = []
        for name in names:
            existing = self._get_object(bucket, name)
            if existing is None:
                continue
            metadata = dict(existing.metadata or {})
            if DIGEST_KEY not in metadata:
                if name != self.object_name:
                    continue
                if not req.force:
                    raise Conflict('gce.object: object %s has no %s metadata, so this module did not write it; '
                                   'force=true deletes it anyway' % (object_url(self.opts['bucket'], name), DIGEST_KEY))
            objects.append(name)
            deleted.append({'type': 'object', 'name': name, 'url': object_url(self.opts['bucket'], name),
                            'sha256': metadata.get(DIGEST_KEY)})
        if not req.check_mode:
            if image is not None:
                self._delete_image(req.name, wait=req.wait)
            for name in objects:
                self._delete_object(bucket, name)
        return {'changed': bool(deleted), 'deleted': deleted}

    def pruned(self) -> t.Dict[str, t.Any]:
        req = self.request
        family = t.cast(str, req.family)
        what = 'Images.List %s' % self.project
        pages = self._call(what, lambda: list(self.images().list(
            request={'project': self.project, 'filter': 'labels.%s=%s' % (FAMILY_KEY, family)},
            retry=None, timeout=CALL_TIMEOUT)))
        images = [image_summary(image) for image in pages]
        # The filter is the server's; the check here keeps a fake or an older API from widening it.
        images = [image for image in images if image['family'] == family and image['sha256']]
        kept, gone = newest_first(images, req.keep_newest or 1)
        if not req.check_mode:
            bucket = None
            for entry in gone:
                self._delete_image(entry['name'], wait=req.wait)
                where = split_object_url(entry.get('source'))
                if where is None or where[0] != self.opts['bucket']:
                    continue
                bucket = bucket or self.bucket()
                existing = self._get_object(bucket, where[1])
                if existing is not None and (existing.metadata or {}).get(DIGEST_KEY) == entry['sha256']:
                    self._delete_object(bucket, where[1])
                    entry['object_deleted'] = True

        def public(entry: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
            fields = ('name', 'id', 'created', 'sha256', 'object_deleted')
            return {key: entry[key] for key in fields if key in entry}

        return {'changed': bool(gone), 'deleted': [public(e) for e in gone], 'kept': [public(e) for e in kept]}
