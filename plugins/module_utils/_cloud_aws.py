# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""cloud_upload target aws_ami: an EBS snapshot of a raw disk image, registered as an AMI.

The snapshot is made one of two ways (aws_ami.method):

- ``ebs_direct`` writes it through the EBS direct APIs (StartSnapshot,
  PutSnapshotBlock, CompleteSnapshot). All-zero 512 KiB blocks are not sent -
  a snapshot reads unwritten blocks as zeros - so a mostly empty disk costs
  only its data. No bucket, no vmimport role.
- ``import_snapshot`` stages the image in S3 (through the s3 target's helpers)
  and has EC2 import it (ImportSnapshot), for accounts that may not use the EBS
  direct APIs.

The snapshot carries the artifact's digest (DIGEST_KEY), the image name
(NAME_KEY) and the family as tags from the start. That is how a later run knows
what is its own: an image of that name with that digest is the same artifact
(nothing to do); a completed snapshot with them that no image uses is what a run
that failed after the upload left behind, and is registered instead of being
uploaded again; absent and pruned delete only snapshots that carry the digest
tag, never a snapshot someone else made.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import math
import os
import re
import typing as t
import uuid

from ansible_collections.osimage.builder.plugins.module_utils._cloud import (
    DIGEST_KEY, FAMILY_KEY, TARGET_OPTIONS, Backend, CloudError, Conflict, CredentialsError, DigestCheck,
    DigestMismatch, load_library, newest_first, sha256_file)
from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput, OsImageError

# Tag of the snapshot: the image name it was made for, so that a leftover snapshot is found by name and digest.
NAME_KEY = 'osimage-name'
BLOCK_SIZE = 512 * 1024       # the one block size of the EBS direct APIs
GIB = 1024 ** 3
MAX_VOLUME_GIB = 64 * 1024    # StartSnapshot's largest VolumeSize (64 TiB)
THREADS = 8                   # PutSnapshotBlock calls in flight
ZERO_BLOCK = bytes(BLOCK_SIZE)
# AMI names: 3-128 letters, digits and ( ) [ ] space . / - ' @ _ (EC2 API Reference, RegisterImage, Name).
AMI_NAME_RE = re.compile(r"^[A-Za-z0-9()\[\] ./'@_-]{3,128}$")
ACCOUNT_RE = re.compile(r'^[0-9]{12}$')
DEVICE_RE = re.compile(r'^/dev/[a-z0-9]+$')

# (offset, magic bytes, what the file is) of the formats that are not a raw disk image.
NOT_RAW: t.Tuple[t.Tuple[int, bytes, str], ...] = (
    (0, b'QFI\xfb', 'a qcow2 image'),
    (0, b'conectix', 'a dynamic VHD image'),
    (0, b'vhdxfile', 'a VHDX image'),
    (0, b'KDMV', 'a VMDK image'),
    (0, b'# Disk DescriptorFile', 'a VMDK descriptor'),
    (64, b'\x7f\x10\xda\xbe', 'a VDI image'),
    (0, b'\x1f\x8b\x08', 'gzip-compressed'),
    (0, b'\xfd7zXZ\x00', 'xz-compressed'),
    (0, b'\x28\xb5\x2f\xfd', 'zstd-compressed'),
    (0, b'\x04\x22\x4d\x18', 'lz4-compressed'),
    (0, b'PK\x03\x04', 'a zip archive'),
    (257, b'ustar', 'a tar archive (an OVA or a gce tar.gz unpacked once?)'),
)
BZIP2_RE = re.compile(rb'^BZh[1-9]1AY&SY')

# Error codes of EC2 and the EBS direct APIs.
AUTH_CODES = frozenset(('AuthFailure', 'InvalidClientTokenId', 'UnrecognizedClientException', 'SignatureDoesNotMatch',
                        'InvalidAccessKeyId', 'IncompleteSignature', 'ExpiredToken', 'ExpiredTokenException',
                        'InvalidToken', 'MissingAuthenticationToken'))
DENIED_CODES = frozenset(('UnauthorizedOperation', 'AccessDenied', 'AccessDeniedException', 'OptInRequired'))
RETRY_CODES = frozenset(('Throttling', 'ThrottlingException', 'RequestLimitExceeded', 'RequestThrottled',
                         'RequestThrottledException', 'TooManyRequestsException', 'ConcurrentLimitExceededException',
                         'SlowDown', 'InternalError', 'InternalFailure', 'InternalServerException', 'ServiceUnavailable',
                         'ServiceUnavailableException', 'Unavailable', 'RequestTimeout', 'RequestTimeoutException',
                         'RequestTimeTooSkewed', 'PriorRequestNotComplete'))
CREDENTIAL_HINT = ('check aws_access_key_id and aws_secret_access_key (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), '
                   'aws_session_token (AWS_SESSION_TOKEN) or aws_profile (AWS_PROFILE)')
GONE_IMAGE_STATES = ('deregistered', 'invalid', 'failed', 'error')


def not_raw_reason(path: str) -> t.Optional[str]:
    """What src is when its magic bytes say it is not a raw disk image, else None.

    A fixed VHD is raw data followed by a 512-byte footer, found at the end of the
    file; everything else announces itself in its first bytes.
    """
    with open(path, 'rb') as handle:
        head = handle.read(512)
        size = os.fstat(handle.fileno()).st_size
        tail = b''
        if size >= 1024:
            handle.seek(size - 512)
            tail = handle.read(512)
    for offset, magic, what in NOT_RAW:
        if head[offset:offset + len(magic)] == magic:
            return what
    if BZIP2_RE.match(head):
        return 'bzip2-compressed'
    if tail.startswith(b'conectix'):
        return 'a fixed VHD image (raw data with a VHD footer)'
    return None


def volume_gib(size: int, requested: t.Optional[int]) -> int:
    """The snapshot's size in GiB: aws_ami.volume_size, or the artifact's size rounded up."""
    needed = max(1, math.ceil(size / GIB))
    if requested is None:
        return needed
    if requested < needed:
        raise InvalidInput('aws_ami.volume_size: %d GiB is smaller than src (%d bytes, %d GiB rounded up); give at '
                           'least %d or leave it unset' % (requested, size, needed, needed))
    return requested


def tag_dict(tags: t.Optional[t.Sequence[t.Dict[str, str]]]) -> t.Dict[str, str]:
    return {tag['Key']: tag['Value'] for tag in tags or ()}


def tag_list(tags: t.Dict[str, str]) -> t.List[t.Dict[str, str]]:
    return [{'Key': key, 'Value': value} for key, value in sorted(tags.items())]


def block_checksum(data: bytes) -> str:
    """PutSnapshotBlock's Checksum: the block's SHA-256, base64-encoded."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode('ascii')


def error_info(exc: BaseException) -> t.Tuple[str, str, int]:
    """(code, message, HTTP status) of a botocore ClientError; ('', str(exc), 0) for anything else."""
    response = getattr(exc, 'response', None)
    if not isinstance(response, dict):
        return '', str(exc), 0
    error = response.get('Error') or {}
    status = int((response.get('ResponseMetadata') or {}).get('HTTPStatusCode') or 0)
    return str(error.get('Code') or ''), str(error.get('Message') or exc), status


class AwsAmiBackend(Backend):
    target = 'aws_ami'

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self.opts = self._options()
        # One per run: client tokens are derived from the digest, the name and this, so that a retried
        # StartSnapshot or ImportSnapshot returns what the first attempt started, while a later run - after
        # this one cleaned up - does not get back the snapshot it deleted (AWS keeps tokens for a while).
        self.run_id = uuid.uuid4().hex
        self.region: t.Optional[str] = None
        self._boto: t.Any = None
        self._clients: t.Dict[str, t.Any] = {}
        # What this run created or took over, deleted again when it fails (unless keep_partial).
        self._snapshot_id: t.Optional[str] = None
        self._image_id: t.Optional[str] = None
        self._import_task: t.Optional[str] = None

    # --- options and checks -----------------------------------------------------------------------------

    def _options(self) -> t.Dict[str, t.Any]:
        opts = {key: (list(spec['default']) if isinstance(spec.get('default'), list) else spec.get('default'))
                for key, spec in TARGET_OPTIONS['aws_ami'].items()}
        for key, value in (self.request.options.get('aws_ami') or {}).items():
            if value is not None:
                opts[key] = value
        return opts

    def check(self) -> None:
        req = self.request
        opts = self.opts
        if opts['method'] not in ('ebs_direct', 'import_snapshot'):
            raise InvalidInput('aws_ami.method: %r is not ebs_direct or import_snapshot' % opts['method'])
        for account in opts['share_with']:
            if not ACCOUNT_RE.match(str(account)):
                raise InvalidInput('aws_ami.share_with: %r is not an AWS account id (12 digits)' % account)
        if not DEVICE_RE.match(opts['root_device_name'] or ''):
            raise InvalidInput('aws_ami.root_device_name: %r is not a device name like /dev/xvda or /dev/sda1'
                               % opts['root_device_name'])
        for key, value in req.tags.items():
            if key.lower().startswith('aws:') or not key or len(key) > 128 or len(value) > 256:
                raise InvalidInput('tags: %r cannot be an EC2 tag (keys of 1-128 characters not starting with aws:, '
                                   'values of at most 256)' % key)
            if key in (DIGEST_KEY, FAMILY_KEY, NAME_KEY):
                raise InvalidInput('tags: %s is set by the module itself; remove it from tags' % key)
        if len(req.tags) > 45:
            raise InvalidInput('tags: %d tags, but EC2 allows 50 per resource and the module adds up to 3'
                               % len(req.tags))
        creds = req.credentials
        if bool(creds.get('aws_access_key_id')) != bool(creds.get('aws_secret_access_key')):
            raise InvalidInput('aws_access_key_id, aws_secret_access_key: give both or neither (AWS_ACCESS_KEY_ID, '
                               'AWS_SECRET_ACCESS_KEY)')
        if req.state == 'present':
            self._check_present()
        self.region = self._region()

    def _check_present(self) -> None:
        req = self.request
        opts = self.opts
        if not AMI_NAME_RE.match(req.name):
            raise InvalidInput("name: %r is not an AMI name (3-128 letters, digits, spaces and ( ) [ ] . / - ' @ _)"
                               % req.name)
        if len(req.description) > 255:
            raise InvalidInput('description: an AMI description has at most 255 characters, not %d'
                               % len(req.description))
        src = t.cast(str, req.src)
        size = os.path.getsize(src)
        if size == 0:
            raise InvalidInput('src: %s is empty; aws_ami needs a raw disk image' % src)
        reason = not_raw_reason(src)
        if reason:
            raise InvalidInput('src: %s is %s, not a raw disk image; aws_ami needs an uncompressed raw image - add '
                               'a raw output (outputs: [{format: raw}], compress: none) to the blueprint and publish '
                               'that' % (src, reason))
        gib = volume_gib(size, opts['volume_size'])
        if gib > MAX_VOLUME_GIB:
            raise InvalidInput('aws_ami.volume_size: %d GiB is more than the 64 TiB (65536 GiB) of an EBS snapshot'
                               % gib)
        if opts['method'] == 'import_snapshot' and not (req.options.get('s3') or {}).get('bucket'):
            raise InvalidInput('s3.bucket: aws_ami.method=import_snapshot stages the image in a bucket; give '
                               's3: {bucket: NAME} (and s3.endpoint_url for an S3-compatible store)')

    def _region(self) -> str:
        creds = self.request.credentials
        region = creds.get('aws_region') or self._boto_session().region_name
        if not region:
            raise InvalidInput('aws_region: the AWS region is required; set aws_region or the environment variable '
                               'AWS_REGION (or AWS_DEFAULT_REGION, or a region in the profile of aws_profile)')
        return t.cast(str, region)

    # --- the SDK ----------------------------------------------------------------------------------------

    def _boto_session(self) -> t.Any:
        if self._boto is None:
            boto3 = load_library(self.target, 'boto3', 'boto3')
            exceptions = load_library(self.target, 'botocore.exceptions', 'boto3')
            creds = self.request.credentials
            try:
                self._boto = boto3.session.Session(
                    aws_access_key_id=creds.get('aws_access_key_id') or None,
                    aws_secret_access_key=creds.get('aws_secret_access_key') or None,
                    aws_session_token=creds.get('aws_session_token') or None,
                    profile_name=creds.get('aws_profile') or None,
                    region_name=creds.get('aws_region') or None)
            except exceptions.ProfileNotFound as exc:
                raise CredentialsError('aws_profile: the profile %r is in no AWS config or credentials file; set '
                                       'aws_profile (AWS_PROFILE) to one that exists' % creds.get('aws_profile'),
                                       error=str(exc))
        return self._boto

    def client(self, service: str) -> t.Any:
        """A boto3 client whose own retries are off: Session.call retries, and counts them."""
        if service not in self._clients:
            config = load_library(self.target, 'botocore.config', 'boto3').Config(
                retries={'total_max_attempts': 1, 'mode': 'standard'}, max_pool_connections=THREADS * 2,
                connect_timeout=30, read_timeout=120, user_agent_extra='osimage.builder-cloud_upload')
            endpoint = self.opts.get('%s_endpoint_url' % service)
            self._clients[service] = self._boto_session().client(service, region_name=self.region,
                                                                 endpoint_url=endpoint or None, config=config)
        return self._clients[service]

    def is_retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return True
        exceptions = load_library(self.target, 'botocore.exceptions', 'boto3')
        if isinstance(exc, (exceptions.ConnectionError, exceptions.HTTPClientError, exceptions.IncompleteReadError)):
            return True
        if isinstance(exc, exceptions.ClientError):
            code, _unused, status = error_info(exc)
            if code in AUTH_CODES or code in DENIED_CODES:
                return False
            return code in RETRY_CODES or status >= 500 or status == 429
        return False

    def translate(self, what: str, exc: BaseException) -> OsImageError:
        """The collection's error for an SDK exception, naming the call and what to do."""
        if isinstance(exc, OsImageError):
            return exc
        exceptions = load_library(self.target, 'botocore.exceptions', 'boto3')
        if isinstance(exc, exceptions.NoCredentialsError):
            return CredentialsError('%s: no AWS credentials found; set aws_access_key_id and aws_secret_access_key '
                                    '(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or aws_profile (AWS_PROFILE)' % what)
        code, message, status = error_info(exc)
        if code in AUTH_CODES or status == 401 or (status == 403 and code not in DENIED_CODES):
            return CredentialsError('%s: AWS did not accept the credentials (%s: %s); %s'
                                    % (what, code or status, message, CREDENTIAL_HINT), code=code, status=status)
        if code in DENIED_CODES:
            return CredentialsError('%s: the credentials are not allowed to do this (%s: %s); grant the permission '
                                    'to the user or role of aws_access_key_id / aws_profile' % (what, code, message),
                                    code=code, status=status)
        if isinstance(exc, exceptions.BotoCoreError) or isinstance(exc, (ConnectionError, TimeoutError)):
            return CloudError('%s: %s (after %d retries of this run; see progress.retries)'
                              % (what, exc, self.session.retried), error=type(exc).__name__)
        return CloudError('%s failed: %s: %s' % (what, code or type(exc).__name__, message), code=code, status=status)

    def call(self, what: str, func: t.Callable[..., t.Any], **kwargs: t.Any) -> t.Any:
        """func(**kwargs) through Session.call (retries), its failure as the collection's error."""
        try:
            return self.session.call(what, func, **kwargs)
        except OsImageError:
            raise
        except Exception as exc:  # pylint: disable=broad-except
            raise self.translate(what, exc) from exc

    def pages(self, what: str, func: t.Callable[..., t.Any], key: str, **kwargs: t.Any) -> t.List[t.Any]:
        items: t.List[t.Any] = []
        while True:
            page = self.call(what, func, **kwargs)
            items.extend(page.get(key) or [])
            if not page.get('NextToken'):
                return items
            kwargs['NextToken'] = page['NextToken']

    # --- lookups ----------------------------------------------------------------------------------------

    def images(self, filters: t.List[t.Dict[str, t.Any]]) -> t.List[t.Dict[str, t.Any]]:
        ec2 = self.client('ec2')
        found = self.pages('DescribeImages', ec2.describe_images, 'Images', Owners=['self'], Filters=filters)
        return [image for image in found if image.get('State') != 'deregistered']

    def images_named(self, name: str) -> t.List[t.Dict[str, t.Any]]:
        # The name filter takes * and ? as wildcards; AMI names cannot contain them, but compare exactly anyway.
        return [image for image in self.images([{'Name': 'name', 'Values': [name]}]) if image.get('Name') == name]

    def snapshots(self, filters: t.List[t.Dict[str, t.Any]]) -> t.List[t.Dict[str, t.Any]]:
        ec2 = self.client('ec2')
        return self.pages('DescribeSnapshots', ec2.describe_snapshots, 'Snapshots', OwnerIds=['self'], Filters=filters)

    def image_snapshots(self, image: t.Dict[str, t.Any]) -> t.List[str]:
        """The snapshots of an image that this module made: referenced by it, or tagged with its name and digest.

        Only snapshots that carry the digest tag are returned; a snapshot without it was not made here.
        """
        referenced = {mapping['Ebs']['SnapshotId'] for mapping in image.get('BlockDeviceMappings') or ()
                      if (mapping.get('Ebs') or {}).get('SnapshotId')}
        digest = tag_dict(image.get('Tags')).get(DIGEST_KEY)
        ours: t.Set[str] = set()
        if referenced:
            ours.update(snap['SnapshotId'] for snap in self.snapshots([{'Name': 'snapshot-id',
                                                                        'Values': sorted(referenced)}])
                        if DIGEST_KEY in tag_dict(snap.get('Tags')))
        if digest and image.get('Name'):
            ours.update(snap['SnapshotId'] for snap in self.snapshots([
                {'Name': 'tag:%s' % DIGEST_KEY, 'Values': [digest]},
                {'Name': 'tag:%s' % NAME_KEY, 'Values': [image['Name']]}]))
        return sorted(ours)

    def leftover_snapshot(self, digest: str, gib: int) -> t.Optional[t.Dict[str, t.Any]]:
        """A snapshot an earlier run of the same name and digest left: completed first, else pending."""
        found = [snap for snap in self.snapshots([{'Name': 'tag:%s' % DIGEST_KEY, 'Values': [digest]},
                                                  {'Name': 'tag:%s' % NAME_KEY, 'Values': [self.request.name]}])
                 if snap.get('VolumeSize') == gib and snap.get('State') in ('completed', 'pending')]
        found.sort(key=lambda snap: (snap.get('State') == 'completed', str(snap.get('StartTime') or '')), reverse=True)
        if found and (found[0]['State'] == 'completed' or self.opts['method'] == 'ebs_direct'):
            return found[0]
        return None

    # --- tags and sharing -------------------------------------------------------------------------------

    def snapshot_tags(self, digest: str) -> t.Dict[str, str]:
        return dict(self.request.marks(digest), **{NAME_KEY: self.request.name})

    def image_tags(self, digest: str) -> t.Dict[str, str]:
        return self.request.marks(digest)

    def converge_tags(self, resource: str, current: t.Dict[str, str], wanted: t.Dict[str, str]) -> bool:
        missing = {key: value for key, value in wanted.items() if current.get(key) != value}
        if missing and not self.request.check_mode:
            ec2 = self.client('ec2')
            self.call('CreateTags %s' % resource, ec2.create_tags, Resources=[resource], Tags=tag_list(missing))
        return bool(missing)

    def converge_sharing(self, image_id: str) -> t.Tuple[bool, t.List[str], bool]:
        """Add the accounts of share_with; make the image public or not. Returns (changed, accounts, public).

        share_with only adds (accounts shared with by hand stay); public is kept as given either way.
        """
        ec2 = self.client('ec2')
        current = self.call('DescribeImageAttribute %s' % image_id, ec2.describe_image_attribute, ImageId=image_id,
                            Attribute='launchPermission').get('LaunchPermissions') or []
        users = {perm['UserId'] for perm in current if perm.get('UserId')}
        public = any(perm.get('Group') == 'all' for perm in current)
        add = [{'UserId': account} for account in sorted(set(self.opts['share_with']) - users)]
        remove: t.List[t.Dict[str, str]] = []
        if self.opts['public'] and not public:
            add.append({'Group': 'all'})
        elif public and not self.opts['public']:
            remove.append({'Group': 'all'})
        if (add or remove) and not self.request.check_mode:
            permission: t.Dict[str, t.Any] = {}
            if add:
                permission['Add'] = add
            if remove:
                permission['Remove'] = remove
            self.call('ModifyImageAttribute %s' % image_id, ec2.modify_image_attribute, ImageId=image_id,
                      LaunchPermission=permission)
        return bool(add or remove), sorted(users | set(self.opts['share_with'])), bool(self.opts['public'])

    # --- state=present ----------------------------------------------------------------------------------

    def present(self) -> t.Dict[str, t.Any]:
        req = self.request
        src = t.cast(str, req.src)
        size = os.path.getsize(src)
        gib = volume_gib(size, self.opts['volume_size'])
        digest = req.sha256 or sha256_file(src)
        images = self.images_named(req.name)
        same = [image for image in images
                if tag_dict(image.get('Tags')).get(DIGEST_KEY) == digest and image.get('State') not in GONE_IMAGE_STATES]
        if same:
            return self.existing(same[0], digest)
        others = [image for image in images if image not in same]
        live = [image for image in others if image.get('State') not in GONE_IMAGE_STATES]
        if live and not req.force:
            image = live[0]
            raise Conflict('name: the image %s (%s) exists with %s %s, not %s; set force: true to replace it, or '
                           'publish under another name' % (req.name, image['ImageId'], DIGEST_KEY,
                                                           tag_dict(image.get('Tags')).get(DIGEST_KEY) or '(none)',
                                                           digest), image_id=image['ImageId'])
        if req.check_mode:
            leftover = self.leftover_snapshot(digest, gib)
            return dict(changed=True, id=None, sha256=digest, resumed=bool(leftover),
                        details=dict(snapshot_id=leftover['SnapshotId'] if leftover else None, region=self.region,
                                     method=self.opts['method'], volume_size=gib,
                                     replaced=[image['ImageId'] for image in others]))
        failed = True
        try:
            snapshot_id, resumed = self.make_snapshot(digest, size, gib)
            replaced = [self.delete_image(image)['id'] for image in others]
            image = self.register(snapshot_id, digest)
            _unused, accounts, public = self.converge_sharing(image['ImageId'])
            failed = False
        except DigestMismatch:
            self.cleanup(always=True)
            raise
        finally:
            if failed:
                self.cleanup()
        return dict(changed=True, id=image['ImageId'], sha256=digest, resumed=resumed,
                    details=dict(snapshot_id=snapshot_id, region=self.region, method=self.opts['method'],
                                 state=image.get('State'), volume_size=gib, shared_with=accounts, public=public,
                                 replaced=replaced))

    def existing(self, image: t.Dict[str, t.Any], digest: str) -> t.Dict[str, t.Any]:
        """The image is already there: bring its tags and sharing in line, send nothing."""
        image_id = image['ImageId']
        if image.get('State') == 'pending' and self.request.wait and not self.request.check_mode:
            image = self.wait_image(image_id)
        changed = self.converge_tags(image_id, tag_dict(image.get('Tags')), self.image_tags(digest))
        shared, accounts, public = self.converge_sharing(image_id)
        snapshots = self.image_snapshots(image)
        self.session.progress.skipped(os.path.getsize(t.cast(str, self.request.src)))
        return dict(changed=changed or shared, id=image_id, sha256=digest, resumed=False,
                    details=dict(snapshot_id=snapshots[0] if snapshots else None, region=self.region,
                                 method=self.opts['method'], state=image.get('State'), shared_with=accounts,
                                 public=public, replaced=[]))

    def make_snapshot(self, digest: str, size: int, gib: int) -> t.Tuple[str, bool]:
        """A completed snapshot of src tagged with the digest: (snapshot id, whether an earlier run's was used)."""
        leftover = self.leftover_snapshot(digest, gib)
        if leftover and leftover['State'] == 'completed':
            # Only CompleteSnapshot, or a finished import, completes a snapshot, and both come after the digest
            # was verified: its data is src's.
            self._snapshot_id = leftover['SnapshotId']
            self.session.progress.skipped(size)
            return leftover['SnapshotId'], True
        if self.opts['method'] == 'import_snapshot':
            return self.import_snapshot(digest), False
        return self.ebs_direct(digest, size, gib, leftover['SnapshotId'] if leftover else None)

    def token(self, digest: str, what: str) -> str:
        return hashlib.sha256(('%s %s %s %s' % (what, digest, self.request.name, self.run_id)).encode()).hexdigest()

    def ebs_direct(self, digest: str, size: int, gib: int, pending: t.Optional[str]) -> t.Tuple[str, bool]:
        req = self.request
        ebs = self.client('ebs')
        check = DigestCheck(t.cast(str, req.src), digest)
        try:
            if pending:
                # A run that was killed while sending: the snapshot still takes blocks; send them all again.
                snapshot_id = pending
            else:
                params: t.Dict[str, t.Any] = dict(VolumeSize=gib, Tags=tag_list(self.snapshot_tags(digest)),
                                                  ClientToken=self.token(digest, 'StartSnapshot'))
                if req.description:
                    params['Description'] = req.description
                snapshot_id = self.call('StartSnapshot', ebs.start_snapshot, **params)['SnapshotId']
            self._snapshot_id = snapshot_id
            sent = self.put_blocks(ebs, snapshot_id)
            check.verify()
            self.call('CompleteSnapshot %s' % snapshot_id, ebs.complete_snapshot, SnapshotId=snapshot_id,
                      ChangedBlocksCount=sent)
        finally:
            check.cancel()
        self.wait_snapshot(snapshot_id)
        return snapshot_id, bool(pending)

    def put_blocks(self, ebs: t.Any, snapshot_id: str) -> int:
        """Send every block of src that is not all zeros, THREADS at a time; the number sent."""
        progress = self.session.progress
        sent = 0
        in_flight: t.Set[concurrent.futures.Future] = set()
        with open(t.cast(str, self.request.src), 'rb') as handle, \
                concurrent.futures.ThreadPoolExecutor(THREADS, thread_name_prefix='put-snapshot-block') as pool:
            try:
                index = 0
                while True:
                    data = handle.read(BLOCK_SIZE)
                    if not data:
                        break
                    length = len(data)
                    if data == ZERO_BLOCK[:length]:
                        progress.skipped(length)
                    else:
                        if length < BLOCK_SIZE:
                            data += bytes(BLOCK_SIZE - length)   # the last block, padded: blocks are whole
                        in_flight.add(pool.submit(self.put_block, ebs, snapshot_id, index, data, length))
                        sent += 1
                        if len(in_flight) >= 2 * THREADS:
                            done, in_flight = concurrent.futures.wait(
                                in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
                            for future in done:
                                future.result()
                    index += 1
                done, in_flight = concurrent.futures.wait(in_flight)
                for future in done:
                    future.result()
            finally:
                for future in in_flight:
                    future.cancel()
        return sent

    def put_block(self, ebs: t.Any, snapshot_id: str, index: int, data: bytes, length: int) -> None:
        self.call('PutSnapshotBlock %s block %d' % (snapshot_id, index), ebs.put_snapshot_block,
                  SnapshotId=snapshot_id, BlockIndex=index, BlockData=data, DataLength=BLOCK_SIZE,
                  Checksum=block_checksum(data), ChecksumAlgorithm='SHA256')
        self.session.progress.sent(length)

    def wait_snapshot(self, snapshot_id: str) -> None:
        ec2 = self.client('ec2')

        def probe() -> bool:
            found = self.call('DescribeSnapshots %s' % snapshot_id, ec2.describe_snapshots,
                              SnapshotIds=[snapshot_id]).get('Snapshots') or []
            state = found[0].get('State') if found else 'missing'
            if state == 'completed':
                return True
            if state != 'pending':
                raise CloudError('snapshot %s is %s, not completed: %s' % (
                    snapshot_id, state, (found[0].get('StateMessage') if found else '') or 'no reason given'),
                    snapshot_id=snapshot_id)
            return False

        self.session.wait_until('snapshot %s to be completed' % snapshot_id, probe, delay=5.0)

    def import_snapshot(self, digest: str) -> str:
        req = self.request
        # Imported here: the s3 target's module loads boto3 the same lazy way, and may import this one.
        from ansible_collections.osimage.builder.plugins.module_utils import _cloud_s3 as s3_module
        s3opts = req.options.get('s3') or {}
        bucket = s3opts['bucket']
        key = s3opts.get('key') or req.name + '.raw'
        s3 = s3_module.s3_client(req, s3opts.get('endpoint_url'))
        ec2 = self.client('ec2')
        done = mismatch = False
        check = DigestCheck(t.cast(str, req.src), digest)
        try:
            s3_module.put_artifact(self, s3, bucket, key, req.src, {DIGEST_KEY: digest})
            try:
                check.verify()
            except DigestMismatch:
                mismatch = True
                raise
            container = {'Format': 'RAW', 'UserBucket': {'S3Bucket': bucket, 'S3Key': key}, 'Description': req.name}
            task = self.call('ImportSnapshot', ec2.import_snapshot, DiskContainer=container,
                             Description=req.description or req.name, ClientToken=self.token(digest, 'ImportSnapshot'),
                             TagSpecifications=[{'ResourceType': 'import-snapshot-task',
                                                 'Tags': tag_list(self.snapshot_tags(digest))}])
            self._import_task = task['ImportTaskId']
            snapshot_id = self.wait_import(task['ImportTaskId'])
            self._snapshot_id = snapshot_id
            self._import_task = None
            self.converge_tags(snapshot_id, {}, self.snapshot_tags(digest))
            self.wait_snapshot(snapshot_id)
            done = True
        finally:
            check.cancel()
            # The staged object is only the way in: gone once imported, or when the run failed (kept with
            # keep_partial, for a look at it - but never an object whose digest is not the one it is tagged with).
            if done or mismatch or not req.keep_partial:
                try:
                    self.call('DeleteObject s3://%s/%s' % (bucket, key), s3.delete_object, Bucket=bucket, Key=key)
                except OsImageError as exc:
                    self.session.warn('the staged object s3://%s/%s could not be deleted: %s' % (bucket, key, exc.msg))
        return snapshot_id

    def wait_import(self, task_id: str) -> str:
        ec2 = self.client('ec2')

        def probe() -> t.Optional[str]:
            tasks = self.call('DescribeImportSnapshotTasks %s' % task_id, ec2.describe_import_snapshot_tasks,
                              ImportTaskIds=[task_id]).get('ImportSnapshotTasks') or []
            detail = (tasks[0].get('SnapshotTaskDetail') or {}) if tasks else {}
            status = detail.get('Status') or 'missing'
            if status == 'completed' and detail.get('SnapshotId'):
                return t.cast(str, detail['SnapshotId'])
            if status in ('deleted', 'deleting', 'missing', 'error'):
                self._import_task = None    # over: nothing to cancel
                reason = detail.get('StatusMessage') or 'no reason given'
                raise CloudError('import task %s ended as %s: %s' % (task_id, status, reason),
                                 import_task_id=task_id, status_message=detail.get('StatusMessage'))
            return None

        return t.cast(str, self.session.wait_until('import task %s to complete' % task_id, probe, delay=5.0))

    def register(self, snapshot_id: str, digest: str) -> t.Dict[str, t.Any]:
        req = self.request
        opts = self.opts
        ec2 = self.client('ec2')
        params: t.Dict[str, t.Any] = dict(
            Name=req.name, Architecture=opts['architecture'], BootMode=opts['boot_mode'],
            EnaSupport=opts['ena_support'], RootDeviceName=opts['root_device_name'], VirtualizationType='hvm',
            BlockDeviceMappings=[{'DeviceName': opts['root_device_name'],
                                  'Ebs': {'SnapshotId': snapshot_id, 'VolumeType': opts['volume_type'],
                                          'DeleteOnTermination': True}}],
            TagSpecifications=[{'ResourceType': 'image', 'Tags': tag_list(self.image_tags(digest))}])
        if req.description:
            params['Description'] = req.description
        if opts['imds_support']:
            params['ImdsSupport'] = opts['imds_support']
        try:
            image_id = self.call('RegisterImage %s' % req.name, ec2.register_image, **params)['ImageId']
        except CloudError as exc:
            # RegisterImage has no client token: when a retry finds the name taken, the first attempt may have
            # registered it after all - then it is ours (it carries the digest or uses our snapshot).
            if exc.context.get('code') != 'InvalidAMIName.Duplicate':
                raise
            mine = [image for image in self.images_named(req.name)
                    if tag_dict(image.get('Tags')).get(DIGEST_KEY) == digest or
                    any((mapping.get('Ebs') or {}).get('SnapshotId') == snapshot_id
                        for mapping in image.get('BlockDeviceMappings') or ())]
            if not mine:
                raise
            image_id = mine[0]['ImageId']
        self._image_id = image_id
        image = self.wait_image(image_id) if req.wait else self.describe_image(image_id) or {'ImageId': image_id}
        # Some EC2-compatible endpoints ignore TagSpecifications on RegisterImage; set what is missing.
        self.converge_tags(image_id, tag_dict(image.get('Tags')), self.image_tags(digest))
        return image

    def describe_image(self, image_id: str) -> t.Optional[t.Dict[str, t.Any]]:
        ec2 = self.client('ec2')
        try:
            found = self.call('DescribeImages %s' % image_id, ec2.describe_images, ImageIds=[image_id])['Images']
        except CloudError as exc:
            if exc.context.get('code') == 'InvalidAMIID.NotFound':   # not visible yet (eventual consistency)
                return None
            raise
        return found[0] if found else None

    def wait_image(self, image_id: str) -> t.Dict[str, t.Any]:
        def probe() -> t.Optional[t.Dict[str, t.Any]]:
            image = self.describe_image(image_id)
            state = image.get('State') if image else 'pending'
            if state == 'available':
                return image
            if state != 'pending':
                reason = ((image or {}).get('StateReason') or {}).get('Message') or 'no reason given'
                raise CloudError('image %s is %s, not available: %s' % (image_id, state, reason), image_id=image_id)
            return None

        image = self.session.wait_until('image %s to be available' % image_id, probe, delay=5.0)
        return t.cast(t.Dict[str, t.Any], image)

    def cleanup(self, always: bool = False) -> None:
        """Delete what this failed run created or took over, unless keep_partial (a digest mismatch: always)."""
        if self.request.keep_partial and not always:
            return
        ec2 = self.client('ec2')
        steps: t.List[t.Tuple[str, t.Callable[..., t.Any], t.Dict[str, t.Any]]] = []
        if self._image_id:
            steps.append(('DeregisterImage %s' % self._image_id, ec2.deregister_image, {'ImageId': self._image_id}))
        if self._import_task:
            steps.append(('CancelImportTask %s' % self._import_task, ec2.cancel_import_task,
                          {'ImportTaskId': self._import_task, 'CancelReason': 'cloud_upload failed'}))
        if self._snapshot_id:
            steps.append(('DeleteSnapshot %s' % self._snapshot_id, ec2.delete_snapshot,
                          {'SnapshotId': self._snapshot_id}))
        for what, func, kwargs in steps:
            try:
                self.call(what, func, **kwargs)
            except OsImageError as exc:
                self.session.warn('cleaning up after the failure: %s' % exc.msg)
        self._image_id = self._import_task = self._snapshot_id = None

    # --- state=absent and state=pruned ------------------------------------------------------------------

    def describe_for_delete(self, image: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
        return dict(id=image['ImageId'], name=image.get('Name'), created=image.get('CreationDate'),
                    sha256=tag_dict(image.get('Tags')).get(DIGEST_KEY), snapshots=self.image_snapshots(image))

    def delete_image(self, image: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
        """Deregister an image and delete its snapshots that carry the digest tag (listed only in check mode)."""
        entry = self.describe_for_delete(image)
        if self.request.check_mode:
            return entry
        ec2 = self.client('ec2')
        self.call('DeregisterImage %s' % image['ImageId'], ec2.deregister_image, ImageId=image['ImageId'])
        for snapshot_id in entry['snapshots']:
            self.delete_snapshot(snapshot_id)
        return entry

    def delete_snapshot(self, snapshot_id: str) -> None:
        ec2 = self.client('ec2')

        def probe() -> bool:
            try:
                self.call('DeleteSnapshot %s' % snapshot_id, ec2.delete_snapshot, SnapshotId=snapshot_id)
            except CloudError as exc:
                code = exc.context.get('code')
                if code == 'InvalidSnapshot.NotFound':
                    return True
                if code == 'InvalidSnapshot.InUse':
                    return False    # the image was only just deregistered, or another image still uses it
                raise
            return True

        try:
            self.session.wait_until('snapshot %s to be deletable' % snapshot_id, probe, delay=5.0, timeout=60)
        except OsImageError as exc:
            self.session.warn('snapshot %s was left: %s' % (snapshot_id, exc.msg))

    def absent(self) -> t.Dict[str, t.Any]:
        deleted = [self.delete_image(image) for image in self.images_named(self.request.name)]
        return dict(changed=bool(deleted), deleted=deleted)

    def pruned(self) -> t.Dict[str, t.Any]:
        family = t.cast(str, self.request.family)
        images = [dict(image, created=image.get('CreationDate'), name=image.get('Name'))
                  for image in self.images([{'Name': 'tag:%s' % FAMILY_KEY, 'Values': [family]}])]
        kept, old = newest_first(images, t.cast(int, self.request.keep_newest))
        deleted = [self.delete_image(image) for image in old]
        return dict(changed=bool(deleted), deleted=deleted,
                    kept=[dict(id=image['ImageId'], name=image.get('Name'), created=image.get('CreationDate'),
                               sha256=tag_dict(image.get('Tags')).get(DIGEST_KEY)) for image in kept])
