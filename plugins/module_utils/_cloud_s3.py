# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""cloud_upload target s3: an artifact as an object in any S3-compatible bucket.

The object carries the artifact's digest as user metadata (``x-amz-meta-osimage-sha256``),
so a later run with the same digest finds it with one HeadObject and sends nothing.

Files larger than one part go up as a multipart upload, parts in parallel, each
with a CRC32 the store checks on arrival. The object of a multipart upload exists
only once CompleteMultipartUpload is called, and that call is made only after the
DigestCheck has read the whole file and found the expected digest: an object
with the digest metadata is always the complete artifact. A file of one part or
less is read into memory, hashed and sent with one PutObject and its Content-MD5.

Resuming: S3 does not return the metadata of an unfinished upload (ListParts and
ListMultipartUploads show only ids, keys and parts), so an unfinished upload of
the same key cannot tell by itself which content it was started for, and
CompleteMultipartUpload would give the object the metadata of the run that
*started* the upload. Matching the parts' ETags against the local file is not
enough either: parts sent before the file changed would match their ranges of a
file that changed elsewhere, and the object would carry a digest it does not
have. So each run that starts an upload records its id with the digest, part
size, size, bucket and key in a small state file (~/.cache/osimage-builder/s3-uploads/,
named by a hash of endpoint, bucket and key). A later run resumes only an upload
recorded for the same digest, part size and size; it reuses only parts whose
ETag is the MD5 of the same range of the local file (the rest are sent again),
and the DigestCheck still reads the whole file before completing - so the
object is completed only when the file has the digest the upload was created
with. A recorded upload for other content is aborted. A failed or cancelled run
(cloud_upload turns SIGTERM, SIGINT and SIGHUP into SystemExit) aborts its upload
and removes the state file unless keep_partial; a run killed outright (SIGKILL)
leaves both, and the next run with the same artifact resumes. (A run killed in the moment
between CreateMultipartUpload and writing the state file leaves an upload no
run knows of; a bucket lifecycle rule for incomplete multipart uploads removes
such leftovers, as it does for every other S3 client.)
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import os
import re
import typing as t
import zlib

from ansible_collections.osimage.builder.plugins.module_utils._cloud import (
    DIGEST_KEY, FAMILY_KEY, TARGET_OPTIONS, Backend, CloudError, CredentialsError, DigestCheck, DigestMismatch,
    Request, load_library, newest_first, sha256_file)
from ansible_collections.osimage.builder.plugins.module_utils._cloud_aws import AwsAmiBackend, error_info
from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput, OsImageError
from ansible_collections.osimage.builder.plugins.module_utils._sizes import human_size, parse_size

MIB = 1024 * 1024
MIN_PART = 5 * MIB            # S3's smallest part (all but the last)
MAX_PART = 5 * 1024 * MIB     # and its largest
MAX_PARTS = 10000
MAX_KEY_BYTES = 1024
MAX_METADATA_BYTES = 2048     # user metadata, names and values, as S3 counts it
METADATA_NAME_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
STATE_DIR = os.path.join('~', '.cache', 'osimage-builder', 's3-uploads')
# S3's own codes worth another attempt, besides the AWS-wide ones: a part whose checksum did not match what
# arrived was damaged on the way (the bytes sent are the same on the next attempt), and OperationAborted is a
# conflicting operation on the same bucket or key that ends by itself.
S3_RETRY_CODES = frozenset(('BadDigest', 'XAmzContentSHA256Mismatch', 'OperationAborted', 'InternalError',
                            'SlowDown', 'RequestTimeout'))


def effective_part_size(size: int, part_size: int) -> int:
    """part_size, or the smallest whole MiB above it with which size fits into MAX_PARTS parts."""
    if size <= part_size * MAX_PARTS:
        return part_size
    needed = -(-size // MAX_PARTS)
    return -(-needed // MIB) * MIB


def part_plan(size: int, part_size: int) -> t.List[t.Tuple[int, int, int]]:
    """(part number, offset, length) of every part; the part size grows when 10000 parts would not hold size."""
    part_size = effective_part_size(size, part_size)
    return [(index + 1, offset, min(part_size, size - offset))
            for index, offset in enumerate(range(0, max(size, 1), part_size))]


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode('ascii')  # nosec - S3's Content-MD5, not security


def crc32_b64(data: bytes) -> str:
    """A part's x-amz-checksum-crc32: the big-endian CRC32, base64-encoded."""
    return base64.b64encode(zlib.crc32(data).to_bytes(4, 'big')).decode('ascii')


def etag_of(data: bytes) -> str:
    return '"%s"' % hashlib.md5(data).hexdigest()  # nosec - S3's part ETag


def read_range(path: str, offset: int, length: int) -> bytes:
    with open(path, 'rb') as handle:
        handle.seek(offset)
        return handle.read(length)


def s3_options(request: Request) -> t.Dict[str, t.Any]:
    opts = {key: spec.get('default') for key, spec in TARGET_OPTIONS['s3'].items()}
    opts.update({k: v for k, v in (request.options.get('s3') or {}).items() if v is not None})
    return opts


def check_part_size(value: t.Any) -> int:
    """s3.part_size in bytes, or InvalidInput when S3 would refuse parts of that size."""
    size = parse_size(value, 's3.part_size')
    if not MIN_PART <= size <= MAX_PART:
        raise InvalidInput('s3.part_size: %s is outside what S3 accepts for a part (5M to 5G); give a size in that '
                           'range, e.g. 16M or 64M' % value)
    return size


def metadata_bytes(metadata: t.Dict[str, str]) -> int:
    """The size of user metadata as S3 counts it against its 2 KB: the UTF-8 bytes of every name and value."""
    return sum(len(key.encode('utf-8')) + len(value.encode('utf-8')) for key, value in metadata.items())


def s3_client(request: Request, endpoint_url: t.Optional[str]) -> t.Any:
    """A boto3 S3 client for the request's credentials, its own retries off (Session.call retries)."""
    helper = S3Backend(request)
    return helper.client_for(endpoint_url)


class S3Backend(Backend):
    target = 's3'

    # The AWS SDK's credentials and error handling are the aws_ami target's.
    call = AwsAmiBackend.call
    _boto_session = AwsAmiBackend._boto_session

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._boto: t.Any = None
        self._client: t.Any = None
        self.opts = s3_options(self.request)
        self.part_size = 0  # set by check(); put_artifact sets it for other targets' backends

    # --- options ------------------------------------------------------------------------------------------

    def check(self) -> None:
        req = self.request
        if not self.opts.get('bucket'):
            raise InvalidInput('s3.bucket: the bucket is required for target s3')
        key = self.key
        if len(key.encode('utf-8')) > MAX_KEY_BYTES:
            raise InvalidInput('s3.key: the object key is %d bytes of UTF-8; S3 allows %d - give a shorter s3.key (or '
                               'name, the default key)' % (len(key.encode('utf-8')), MAX_KEY_BYTES))
        if key.endswith('/') or key.startswith('/'):
            raise InvalidInput('s3.key: %r starts or ends with /, which would make an empty path segment or a '
                               '"directory" object; give s3.key (or name, the default key) without it' % key)
        self.part_size = check_part_size(self.opts['part_size'])
        if not 1 <= int(self.opts['concurrency']) <= 64:
            raise InvalidInput('s3.concurrency: %s is not between 1 and 64' % self.opts['concurrency'])
        for name, value in req.tags.items():
            # Each tag is an x-amz-meta-NAME header: the name an HTTP token, the value printable ASCII.
            if not METADATA_NAME_RE.match(name) or not all(32 <= ord(c) < 127 for c in value):
                raise InvalidInput('tags: %r: S3 user metadata must be printable ASCII, and its names letters, digits '
                                   "and !#$%%&'*+-.^_`|~ (S3 stores names in lower case)" % name)
            if name.lower() in (DIGEST_KEY, FAMILY_KEY):
                raise InvalidInput('tags: %s is set by the module itself; remove it from tags' % name)
        if metadata_bytes(self.metadata('0' * 64)) > MAX_METADATA_BYTES:
            raise InvalidInput('tags: the object metadata (tags, family and digest) would be %d bytes; S3 allows %d'
                               % (metadata_bytes(self.metadata('0' * 64)), MAX_METADATA_BYTES))
        creds = req.credentials
        if bool(creds.get('aws_access_key_id')) != bool(creds.get('aws_secret_access_key')):
            raise InvalidInput('aws_access_key_id, aws_secret_access_key: give both or neither (AWS_ACCESS_KEY_ID, '
                               'AWS_SECRET_ACCESS_KEY)')
        if req.state == 'present':
            size = os.path.getsize(t.cast(str, req.src))
            if size > MAX_PART * MAX_PARTS:
                raise InvalidInput('src: %s is %s, more than 10000 parts of 5 GiB - the most one S3 object can be '
                                   'made of' % (req.src, human_size(size)))
            if effective_part_size(size, self.part_size) != self.part_size:
                self.session.warn('s3.part_size: %s would need more than 10000 parts for %s; parts of %s are sent '
                                  'instead' % (self.opts['part_size'], human_size(size),
                                               human_size(effective_part_size(size, self.part_size))))

    @property
    def key(self) -> str:
        return self.opts.get('key') or self.request.name

    def metadata(self, digest: str) -> t.Dict[str, str]:
        return self.request.marks(digest)

    # --- the SDK ------------------------------------------------------------------------------------------

    def client_for(self, endpoint_url: t.Optional[str]) -> t.Any:
        botocore_config = load_library(self.target, 'botocore.config', 'boto3')
        concurrency = int(self.opts.get('concurrency') or 4)
        settings = dict(retries={'total_max_attempts': 1, 'mode': 'standard'}, max_pool_connections=concurrency + 4,
                        connect_timeout=30, read_timeout=300, user_agent_extra='osimage.builder-cloud_upload')
        if endpoint_url:
            settings['s3'] = {'addressing_style': 'path'}  # S3-compatible stores rarely have bucket host names
        session = self._boto_session()
        region = self.request.credentials.get('aws_region') or session.region_name or 'us-east-1'
        return session.client('s3', region_name=region, endpoint_url=endpoint_url or None,
                              config=botocore_config.Config(**settings))

    @property
    def client(self) -> t.Any:
        if self._client is None:
            self._client = self.client_for(self.opts.get('endpoint_url'))
        return self._client

    def is_retryable(self, exc: BaseException) -> bool:
        if error_info(exc)[0] in S3_RETRY_CODES:
            return True
        exceptions = load_library(self.target, 'botocore.exceptions', 'boto3')
        if isinstance(exc, getattr(exceptions, 'ChecksumError', ())):
            return True  # a response whose checksum did not match: damaged on the way
        return AwsAmiBackend.is_retryable(t.cast(AwsAmiBackend, self), exc)

    def translate(self, what: str, exc: BaseException) -> OsImageError:
        error = AwsAmiBackend.translate(t.cast(AwsAmiBackend, self), what, exc)
        endpoint = self.opts.get('endpoint_url')
        if endpoint and isinstance(error, CredentialsError):
            error.msg = error.msg.replace('AWS did not accept', 'the S3 endpoint %s did not accept' % endpoint, 1)
        return error

    def url(self, key: str) -> str:
        endpoint = self.opts.get('endpoint_url')
        if endpoint:
            return '%s/%s/%s' % (endpoint.rstrip('/'), self.opts['bucket'], key)
        return 's3://%s/%s' % (self.opts['bucket'], key)

    def head(self, key: str) -> t.Optional[t.Dict[str, t.Any]]:
        """HeadObject, or None when there is no such object."""
        try:
            return self.session.call('HeadObject', self.client.head_object, Bucket=self.opts['bucket'], Key=key)
        except Exception as exc:  # pylint: disable=broad-except
            code, _message, status = error_info(exc)
            if code == 'NoSuchBucket':
                raise self.no_bucket() from exc
            if status == 404 or code in ('404', 'NoSuchKey', 'NotFound'):
                return None  # (or no such bucket: a HEAD answer has no body; the upload's first call tells)
            if status == 403:
                # A HEAD answer has no body, so no error code: wrong keys and a missing permission look the same.
                # A GET of one byte (the same permission) says which it is.
                exc = self.why_forbidden(key) or exc
            raise self.translate('HeadObject %s' % key, exc) from exc

    def why_forbidden(self, key: str) -> t.Optional[BaseException]:
        try:
            answer = self.client.get_object(Bucket=self.opts['bucket'], Key=key, Range='bytes=0-0')
        except Exception as exc:  # pylint: disable=broad-except
            return exc if error_info(exc)[0] not in ('', '403') else None
        answer['Body'].close()
        return None

    def no_bucket(self) -> CloudError:
        return CloudError('s3.bucket: the bucket %s does not exist at %s; create it first'
                          % (self.opts['bucket'], self.opts.get('endpoint_url') or 'AWS'))

    def checked_call(self, what: str, func: t.Callable[..., t.Any], **kwargs: t.Any) -> t.Any:
        try:
            return self.call(what, func, **kwargs)
        except CloudError as exc:
            if exc.context.get('code') == 'NoSuchBucket':
                raise self.no_bucket() from exc
            raise

    # --- present ------------------------------------------------------------------------------------------

    def present(self) -> t.Dict[str, t.Any]:
        req = self.request
        src = t.cast(str, req.src)
        digest = req.sha256 or sha256_file(src)
        result = put_artifact(self, self.client, self.opts['bucket'], self.key, src, self.metadata(digest))
        return {'changed': result['changed'], 'id': self.key, 'url': self.url(self.key), 'sha256': digest,
                'resumed': result['resumed'],
                'details': {'bucket': self.opts['bucket'], 'key': self.key, 'etag': result['etag'],
                            'version_id': result['version_id'], 'parts': result.get('parts', 0),
                            'part_size': result.get('part_size', 0)}}

    # --- absent and pruned --------------------------------------------------------------------------------

    def absent(self) -> t.Dict[str, t.Any]:
        head = self.head(self.key)
        unfinished = self.unfinished(self.key)
        deleted = [{'name': self.key, 'id': self.key, 'sha256': (head.get('Metadata') or {}).get(DIGEST_KEY)}] \
            if head else []
        if not self.request.check_mode:
            if head:
                self.checked_call('DeleteObject', self.client.delete_object, Bucket=self.opts['bucket'], Key=self.key)
            for upload_id in unfinished:
                self.abort(self.key, upload_id)
            forget(self.state_path(self.key))
        return {'changed': bool(head or unfinished), 'deleted': deleted, 'aborted_uploads': len(unfinished)}

    def pruned(self) -> t.Dict[str, t.Any]:
        """The objects of the family in the key's "directory" (not below it), all but the newest deleted."""
        prefix = self.key.rsplit('/', 1)[0] + '/' if '/' in self.key else ''
        objects: t.List[t.Dict[str, t.Any]] = []
        token = None
        while True:
            kwargs: t.Dict[str, t.Any] = {'Bucket': self.opts['bucket'], 'Prefix': prefix, 'Delimiter': '/'}
            if token:
                kwargs['ContinuationToken'] = token
            page = self.checked_call('ListObjectsV2', self.client.list_objects_v2, **kwargs)
            for entry in page.get('Contents') or []:
                if '/' in entry['Key'][len(prefix):]:
                    continue  # a store that ignores Delimiter
                # ListObjectsV2 does not return user metadata: one HeadObject each.
                head = self.head(entry['Key'])
                metadata = (head or {}).get('Metadata') or {}
                if metadata.get(FAMILY_KEY) == self.request.family:
                    objects.append({'name': entry['Key'], 'id': entry['Key'], 'sha256': metadata.get(DIGEST_KEY),
                                    'created': entry['LastModified'].isoformat(), 'size': entry['Size']})
            if not page.get('IsTruncated'):
                break
            token = page.get('NextContinuationToken')
        kept, pruned = newest_first(objects, t.cast(int, self.request.keep_newest))
        if not self.request.check_mode:
            for entry in pruned:
                self.checked_call('DeleteObject', self.client.delete_object, Bucket=self.opts['bucket'],
                                  Key=entry['name'])
        return {'changed': bool(pruned), 'deleted': pruned, 'kept': kept}

    # --- multipart bookkeeping ----------------------------------------------------------------------------

    def state_path(self, key: str) -> str:
        ident = json.dumps([self.opts.get('endpoint_url') or '', self.opts['bucket'], key])
        name = hashlib.sha256(ident.encode('utf-8')).hexdigest()[:32] + '.json'
        return os.path.join(os.path.expanduser(STATE_DIR), name)

    def unfinished(self, key: str) -> t.List[str]:
        """The ids of the unfinished multipart uploads of key."""
        ids: t.List[str] = []
        kwargs: t.Dict[str, t.Any] = {'Bucket': self.opts['bucket'], 'Prefix': key}
        while True:
            page = self.checked_call('ListMultipartUploads', self.client.list_multipart_uploads, **kwargs)
            ids.extend(u['UploadId'] for u in page.get('Uploads') or [] if u.get('Key') == key)
            if not page.get('IsTruncated'):
                return ids
            kwargs.update(KeyMarker=page.get('NextKeyMarker'), UploadIdMarker=page.get('NextUploadIdMarker'))

    def parts(self, key: str, upload_id: str) -> t.List[t.Dict[str, t.Any]]:
        """ListParts, all pages (a page has at most 1000 parts)."""
        found: t.List[t.Dict[str, t.Any]] = []
        kwargs: t.Dict[str, t.Any] = {'Bucket': self.opts['bucket'], 'Key': key, 'UploadId': upload_id}
        while True:
            page = self.session.call('ListParts', self.client.list_parts, **kwargs)
            found.extend(page.get('Parts') or [])
            if not page.get('IsTruncated'):
                return found
            kwargs['PartNumberMarker'] = page.get('NextPartNumberMarker')

    def abort(self, key: str, upload_id: str) -> None:
        try:
            self.session.call('AbortMultipartUpload', self.client.abort_multipart_upload, Bucket=self.opts['bucket'],
                              Key=key, UploadId=upload_id)
        except Exception as exc:  # pylint: disable=broad-except
            if error_info(exc)[0] != 'NoSuchUpload':
                raise self.translate('AbortMultipartUpload', exc) from exc


def forget(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def remember(path: str, record: t.Dict[str, t.Any]) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as handle:
        json.dump(record, handle)
    os.replace(tmp, path)


def recalled(path: str) -> t.Optional[t.Dict[str, t.Any]]:
    try:
        with open(path, encoding='utf-8') as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get('upload_id'), str) else None


def put_artifact(backend: Backend, client: t.Any, bucket: str, key: str, path: str,
                 metadata: t.Dict[str, str]) -> t.Dict[str, t.Any]:
    """Upload path to bucket/key with metadata (which holds DIGEST_KEY); idempotent, verified, resumable.

    backend provides the request (check mode, keep_partial, s3 options), the session
    (retries, progress) and the AWS error handling; the aws_ami target calls this
    for its import_snapshot staging with its own backend. Returns changed, etag,
    version_id, resumed and sha256 (and parts, part_size).
    """
    s3 = backend if isinstance(backend, S3Backend) else S3Backend(backend.request)
    s3.session = backend.session
    s3._client = client
    s3.opts['bucket'] = bucket
    if not s3.part_size:
        s3.part_size = check_part_size(s3.opts['part_size'])
    req = backend.request
    digest = metadata[DIGEST_KEY]
    size = os.path.getsize(path)
    head = s3.head(key)
    if head and (head.get('Metadata') or {}).get(DIGEST_KEY) == digest and head.get('ContentLength') == size:
        return {'changed': False, 'etag': head.get('ETag'), 'version_id': head.get('VersionId'), 'resumed': False,
                'sha256': digest}
    if req.check_mode:
        return {'changed': True, 'etag': None, 'version_id': None, 'resumed': False, 'sha256': digest}
    extra: t.Dict[str, t.Any] = {'Metadata': metadata, 'ContentType': s3.opts.get('content_type') or
                                 'application/octet-stream'}
    if s3.opts.get('storage_class'):
        extra['StorageClass'] = s3.opts['storage_class']
    if size <= s3.part_size:
        # Held in memory (at most one part): the bytes hashed are the bytes sent.
        data = read_range(path, 0, size)
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise DigestMismatch('src %s has SHA-256 %s, not the expected %s: the file changed or is not the artifact '
                                 'that was exported; nothing was published' % (path, actual, digest),
                                 expected=digest, actual=actual)
        answer = s3.checked_call('PutObject', client.put_object, Bucket=bucket, Key=key, Body=data,
                                 ContentMD5=md5_b64(data), **extra)
        backend.session.progress.sent(size)
        return {'changed': True, 'etag': answer.get('ETag'), 'version_id': answer.get('VersionId'), 'resumed': False,
                'sha256': digest, 'parts': 1, 'part_size': size}
    return _multipart(s3, client, bucket, key, path, size, digest, extra)


def _resumable(s3: S3Backend, client: t.Any, bucket: str, key: str, path: str, size: int, digest: str,
               plan: t.List[t.Tuple[int, int, int]]) -> t.Tuple[t.Optional[str], t.Dict[int, t.Dict[str, str]]]:
    """(upload id, parts already there) of an upload an earlier run recorded for this content; (None, {}) if none."""
    state = s3.state_path(key)
    record = recalled(state)
    if record is None:
        return None, {}
    wanted = {'sha256': digest, 'size': size, 'part_size': plan[0][2], 'bucket': bucket, 'key': key}
    if any(record.get(name) != value for name, value in wanted.items()):
        # Started for other content (or another part size): it can never become this artifact.
        try:
            s3.abort(key, record['upload_id'])
        except OsImageError as exc:
            s3.session.warn('the multipart upload %s of an earlier run (for other content) could not be aborted: %s'
                            % (record['upload_id'], exc.msg))
        forget(state)
        return None, {}
    try:
        listed = s3.parts(key, record['upload_id'])
    except Exception as exc:  # pylint: disable=broad-except
        if error_info(exc)[0] != 'NoSuchUpload':
            raise s3.translate('ListParts', exc) from exc
        forget(state)  # completed or aborted meanwhile (or removed by a lifecycle rule)
        return None, {}
    ranges = {number: (offset, length) for number, offset, length in plan}

    def verified(part: t.Dict[str, t.Any]) -> t.Optional[t.Tuple[int, t.Dict[str, str]]]:
        number = part.get('PartNumber')
        if number not in ranges or ranges[number][1] != part.get('Size'):
            return None
        data = read_range(path, *ranges[number])
        if etag_of(data) != part.get('ETag'):
            return None  # other bytes (or a store whose ETags are not MD5s): sent again
        # ListParts of some stores omits the part's checksum; it is the CRC32 of the same bytes.
        return number, {'ETag': part['ETag'], 'ChecksumCRC32': part.get('ChecksumCRC32') or crc32_b64(data)}

    with concurrent.futures.ThreadPoolExecutor(max_workers=int(s3.opts.get('concurrency') or 4)) as pool:
        done = dict(found for found in pool.map(verified, listed) if found)
    return record['upload_id'], done


def _multipart(s3: S3Backend, client: t.Any, bucket: str, key: str, path: str, size: int, digest: str,
               extra: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
    req = s3.request
    plan = part_plan(size, s3.part_size)
    state = s3.state_path(key)
    upload_id, done = _resumable(s3, client, bucket, key, path, size, digest, plan)
    resumed = bool(done)
    if upload_id is None:
        # Each part carries a CRC32 that the store checks on arrival (what the AWS CLI sends, too).
        started = s3.checked_call('CreateMultipartUpload', client.create_multipart_upload, Bucket=bucket, Key=key,
                                  ChecksumAlgorithm='CRC32', **extra)
        upload_id = started['UploadId']
        remember(state, {'upload_id': upload_id, 'sha256': digest, 'size': size, 'part_size': plan[0][2],
                         'bucket': bucket, 'key': key})
    check = DigestCheck(path, digest)
    completed = False
    try:
        for number, _offset, length in plan:
            if number in done:
                s3.session.progress.skipped(length)

        def send(number: int, offset: int, length: int) -> t.Tuple[int, t.Dict[str, str]]:
            data = read_range(path, offset, length)
            answer = s3.call('UploadPart %d' % number, client.upload_part, Bucket=bucket, Key=key,
                             UploadId=upload_id, PartNumber=number, Body=data, ChecksumAlgorithm='CRC32')
            s3.session.progress.sent(length)
            part = {'ETag': answer['ETag']}
            if answer.get('ChecksumCRC32'):  # stores without checksum support answer without it
                part['ChecksumCRC32'] = answer['ChecksumCRC32']
            return number, part

        todo = [p for p in plan if p[0] not in done]
        with concurrent.futures.ThreadPoolExecutor(max_workers=int(s3.opts.get('concurrency') or 4)) as pool:
            futures = [pool.submit(send, *p) for p in todo]
            try:
                for future in concurrent.futures.as_completed(futures):
                    number, part = future.result()
                    done[number] = part
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        check.verify()
        answer = _complete(s3, client, bucket, key, upload_id, done, digest, size)
        completed = True
        forget(state)
        return {'changed': True, 'etag': answer.get('ETag'), 'version_id': answer.get('VersionId'),
                'resumed': resumed, 'sha256': digest, 'parts': len(plan), 'part_size': plan[0][2]}
    except BaseException as exc:
        check.cancel()
        if not completed and (not req.keep_partial or isinstance(exc, DigestMismatch)):
            try:
                s3.abort(key, upload_id)
            except OsImageError:
                pass  # the first failure is the one to report
            forget(state)
        elif not completed and isinstance(exc, OsImageError):
            exc.msg += ('; the multipart upload %s was kept (keep_partial) and the next run with the same artifact '
                        'resumes it' % upload_id)
            exc.args = (exc.msg,)
        raise


def _complete(s3: S3Backend, client: t.Any, bucket: str, key: str, upload_id: str,
              done: t.Dict[int, t.Dict[str, str]], digest: str, size: int) -> t.Dict[str, t.Any]:
    """CompleteMultipartUpload; a retry that finds the upload gone because the first attempt completed it is fine."""
    parts = [dict(done[n], PartNumber=n) for n in sorted(done)]
    attempts = []

    def complete() -> t.Dict[str, t.Any]:
        attempts.append(True)
        return t.cast(t.Dict[str, t.Any], client.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={'Parts': parts}))

    try:
        return t.cast(t.Dict[str, t.Any], s3.session.call('CompleteMultipartUpload', complete))
    except Exception as exc:  # pylint: disable=broad-except
        if error_info(exc)[0] == 'NoSuchUpload' and len(attempts) > 1:
            head = s3.head(key)
            if head and (head.get('Metadata') or {}).get(DIGEST_KEY) == digest and head.get('ContentLength') == size:
                return head
        if error_info(exc)[0] == 'NoSuchBucket':
            raise s3.no_bucket() from exc
        raise s3.translate('CompleteMultipartUpload', exc) from exc
