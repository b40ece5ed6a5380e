# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""cloud_upload target s3: an artifact as an object in any S3-compatible bucket.

The object carries the artifact's digest as user metadata (``x-amz-meta-osimage-sha256``),
so a later run with the same digest finds it with one HeadObject and sends nothing.

Files larger than one part go up as a multipart upload, parts in parallel. An
object of a multipart upload exists only once CompleteMultipartUpload is called,
and that call is made only after the DigestCheck has read the whole file and
found the expected digest: an object with the digest metadata is always the
complete artifact.

Resuming: S3 does not return the metadata of an unfinished upload (ListParts and
ListMultipartUploads show only ids, keys and parts), so an unfinished upload of
the same key cannot tell by itself which content it was started for. Each run
that starts one records its upload id with the digest, part size and size in a
small state file (~/.cache/osimage-builder/s3-uploads/, keyed by endpoint, bucket
and key). A later run resumes only an upload recorded for the same digest,
part size and size, and reuses only parts whose ETag is the MD5 of the same
range of the local file; the rest is sent again, and the DigestCheck still runs
over the whole file before completing. A failed run aborts its upload and
removes the state file unless keep_partial; a killed run leaves both, and the
next run with the same artifact resumes.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import os
import typing as t
import zlib

from ansible_collections.osimage.builder.plugins.module_utils._cloud import (
    DIGEST_KEY, FAMILY_KEY, TARGET_OPTIONS, Backend, CloudError, DigestCheck, DigestMismatch, Request, load_library,
    newest_first, sha256_file)
from ansible_collections.osimage.builder.plugins.module_utils._cloud_aws import AwsAmiBackend, error_info
from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput, OsImageError
from ansible_collections.osimage.builder.plugins.module_utils._sizes import parse_size

MIB = 1024 * 1024
MIN_PART = 5 * MIB            # S3's smallest part (all but the last)
MAX_PART = 5 * 1024 * MIB     # and its largest
MAX_PARTS = 10000
STATE_DIR = os.path.join('~', '.cache', 'osimage-builder', 's3-uploads')


def part_plan(size: int, part_size: int) -> t.List[t.Tuple[int, int, int]]:
    """(part number, offset, length) of every part; the part size grows when 10000 parts would not hold size."""
    if size > part_size * MAX_PARTS:
        part_size = -(-size // MAX_PARTS)
        part_size = -(-part_size // MIB) * MIB
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


def s3_client(request: Request, endpoint_url: t.Optional[str]) -> t.Any:
    """A boto3 S3 client for the request's credentials, its own retries off (Session.call retries)."""
    helper = S3Backend(request)
    return helper.client_for(endpoint_url)


class S3Backend(Backend):
    target = 's3'

    # The AWS SDK's error handling and credentials are the aws_ami target's.
    is_retryable = AwsAmiBackend.is_retryable
    translate = AwsAmiBackend.translate
    call = AwsAmiBackend.call
    _boto_session = AwsAmiBackend._boto_session

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._boto: t.Any = None
        self._client: t.Any = None
        self.opts = s3_options(self.request)

    # --- options ------------------------------------------------------------------------------------------

    def check(self) -> None:
        if not self.opts.get('bucket'):
            raise InvalidInput('s3.bucket: the bucket is required for target s3')
        self.part_size = parse_size(self.opts['part_size'], 's3.part_size')
        if not MIN_PART <= self.part_size <= MAX_PART:
            raise InvalidInput('s3.part_size: %s is outside what S3 accepts for a part (5M to 5G)' % self.opts['part_size'])
        if not 1 <= int(self.opts['concurrency']) <= 64:
            raise InvalidInput('s3.concurrency: %s is not between 1 and 64' % self.opts['concurrency'])
        for key, value in self.request.tags.items():
            if not all(32 <= ord(c) < 127 for c in key + value):
                raise InvalidInput('tags: %s: S3 user metadata must be printable ASCII' % key)

    @property
    def key(self) -> str:
        return self.opts.get('key') or self.request.name

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

    def url(self, key: str) -> str:
        endpoint = self.opts.get('endpoint_url')
        if endpoint:
            return '%s/%s/%s' % (endpoint.rstrip('/'), self.opts['bucket'], key)
        return 's3://%s/%s' % (self.opts['bucket'], key)

    def head(self, key: str) -> t.Optional[t.Dict[str, t.Any]]:
        try:
            return self.session.call('HeadObject', self.client.head_object, Bucket=self.opts['bucket'], Key=key)
        except Exception as exc:  # pylint: disable=broad-except
            code, _message, status = error_info(exc)
            if status == 404 or code in ('404', 'NoSuchKey', 'NotFound'):
                return None
            if code == 'NoSuchBucket':
                raise self.no_bucket() from exc
            raise self.translate('HeadObject %s' % key, exc) from exc

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
        metadata = {DIGEST_KEY: digest}
        if req.family:
            metadata[FAMILY_KEY] = req.family
        metadata.update(req.tags)
        result = put_artifact(self, self.client, self.opts['bucket'], self.key, src, metadata)
        return {'changed': result['changed'], 'id': self.key, 'url': self.url(self.key), 'sha256': digest,
                'resumed': result['resumed'],
                'details': {'bucket': self.opts['bucket'], 'key': self.key, 'etag': result['etag'],
                            'version_id': result['version_id'], 'parts': result.get('parts', 0)}}

    # --- absent and pruned ----------------------------------------------------------------------------------

    def absent(self) -> t.Dict[str, t.Any]:
        head = self.head(self.key)
        unfinished = self.unfinished(self.key)
        deleted = [{'name': self.key, 'id': self.key}] if head else []
        if not self.request.check_mode:
            if head:
                self.checked_call('DeleteObject', self.client.delete_object, Bucket=self.opts['bucket'], Key=self.key)
            for upload_id in unfinished:
                self.abort(self.key, upload_id)
            forget(self.state_path(self.key))
        return {'changed': bool(head or unfinished), 'deleted': deleted, 'aborted_uploads': len(unfinished)}

    def pruned(self) -> t.Dict[str, t.Any]:
        prefix = self.key.rsplit('/', 1)[0] + '/' if '/' in self.key else ''
        objects: t.List[t.Dict[str, t.Any]] = []
        token = None
        while True:
            kwargs: t.Dict[str, t.Any] = {'Bucket': self.opts['bucket'], 'Prefix': prefix}
            if token:
                kwargs['ContinuationToken'] = token
            page = self.checked_call('ListObjectsV2', self.client.list_objects_v2, **kwargs)
            for entry in page.get('Contents') or []:
                if '/' in entry['Key'][len(prefix):]:
                    continue  # only this "directory", not those below it
                head = self.head(entry['Key'])
                if head and (head.get('Metadata') or {}).get(FAMILY_KEY) == self.request.family:
                    objects.append({'name': entry['Key'], 'id': entry['Key'],
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
        page = self.checked_call('ListMultipartUploads', self.client.list_multipart_uploads,
                                 Bucket=self.opts['bucket'], Prefix=key)
        return [u['UploadId'] for u in page.get('Uploads') or [] if u.get('Key') == key]

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
    return record if isinstance(record, dict) else None


def put_artifact(backend: Backend, client: t.Any, bucket: str, key: str, path: str,
                 metadata: t.Dict[str, str]) -> t.Dict[str, t.Any]:
    """Upload path to bucket/key with metadata (which holds DIGEST_KEY); idempotent, verified, resumable.

    backend provides the request (check mode, keep_partial, s3 options), the session
    (retries, progress) and the AWS error handling; the aws_ami target calls this
    for its import_snapshot staging with its own backend.
    """
    s3 = backend if isinstance(backend, S3Backend) else S3Backend(backend.request)
    s3.session = backend.session
    s3._client = client
    if not s3.opts.get('bucket'):
        s3.opts['bucket'] = bucket
    if not hasattr(s3, 'part_size'):
        s3.part_size = parse_size(s3.opts['part_size'], 's3.part_size')
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
                'sha256': digest, 'parts': 1}
    return _multipart(s3, client, bucket, key, path, size, digest, extra)


def _multipart(s3: S3Backend, client: t.Any, bucket: str, key: str, path: str, size: int, digest: str,
               extra: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
    req = s3.request
    plan = part_plan(size, s3.part_size)
    state = s3.state_path(key)
    record = recalled(state)
    done: t.Dict[int, t.Dict[str, str]] = {}  # part number -> its ETag and CRC32, as CompleteMultipartUpload lists them
    upload_id = None
    if record and record.get('sha256') == digest and record.get('size') == size and \
            record.get('part_size') == plan[0][2] and record.get('bucket') == bucket:
        try:
            listed = s3.session.call('ListParts', client.list_parts, Bucket=bucket, Key=key,
                                     UploadId=record['upload_id'], MaxParts=MAX_PARTS)
            upload_id = record['upload_id']
            sizes = {number: length for number, _offset, length in plan}
            offsets = {number: offset for number, offset, _length in plan}
            for part in listed.get('Parts') or []:
                number = part['PartNumber']
                if sizes.get(number) != part['Size']:
                    continue
                data = read_range(path, offsets[number], sizes[number])
                if etag_of(data) == part['ETag']:
                    # ListParts of some stores omits the part's checksum; it is the CRC32 of the same bytes.
                    done[number] = {'ETag': part['ETag'], 'ChecksumCRC32': part.get('ChecksumCRC32') or crc32_b64(data)}
        except Exception as exc:  # pylint: disable=broad-except
            if error_info(exc)[0] != 'NoSuchUpload':
                raise s3.translate('ListParts', exc) from exc
            forget(state)
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
            return number, {'ETag': answer['ETag'], 'ChecksumCRC32': answer['ChecksumCRC32']}

        todo = [p for p in plan if p[0] not in done]
        with concurrent.futures.ThreadPoolExecutor(max_workers=int(s3.opts.get('concurrency') or 4)) as pool:
            futures = [pool.submit(send, *p) for p in todo]
            try:
                for future in concurrent.futures.as_completed(futures):
                    number, etag = future.result()
                    done[number] = etag
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        check.verify()
        answer = s3.checked_call('CompleteMultipartUpload', client.complete_multipart_upload, Bucket=bucket, Key=key,
                                 UploadId=upload_id,
                                 MultipartUpload={'Parts': [dict(done[n], PartNumber=n) for n in sorted(done)]})
        completed = True
        forget(state)
        return {'changed': True, 'etag': answer.get('ETag'), 'version_id': answer.get('VersionId'),
                'resumed': resumed, 'sha256': digest, 'parts': len(plan)}
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
        raise
