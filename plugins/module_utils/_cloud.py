# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every cloud_upload target shares: the request, retries, waits, progress, digests.

A target is a class (see Backend) in its own module_utils file (_cloud_s3.py,
_cloud_aws.py, ...). It imports its cloud SDK lazily through load_library(), so
that a host without that SDK can still run the other targets, and a missing SDK
is one clear error naming the pip package.

The contract every target keeps:

- Idempotent by digest: an object or image that already carries the artifact's
  SHA-256 (in metadata, tags, labels or properties; the key is DIGEST_KEY or a
  spelling the cloud allows) and the same name gives ``changed: False`` and
  nothing is sent.
- The data sent is checked against the expected digest before the object or
  image becomes visible (Request.sha256, when given, is verified by a
  DigestCheck running beside the upload); a mismatch raises DigestMismatch and
  nothing is left behind.
- A failed upload leaves no partial object, snapshot or image behind unless
  Request.keep_partial; what a killed run left is resumed or replaced by the
  next run with the same digest.
- Every call to the cloud goes through Session.call(), which retries throttling
  and network errors with backoff; every wait goes through Session.wait_until().
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import os
import random
import re
import sys
import threading
import time
import typing as t

from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput, OsImageError, WaitTimeout

# The metadata/tag/property key that carries an artifact's SHA-256 where the cloud allows this spelling.
DIGEST_KEY = 'osimage-sha256'
# The key that groups the images one blueprint publishes, for retention (keep_newest).
FAMILY_KEY = 'osimage-family'

TARGETS = ('s3', 'aws_ami', 'azure', 'gce', 'openstack_glance')
# Module options that carry credentials or pick them; they come from the environment (AWX's credential
# types) or from the play, never from a blueprint.
CREDENTIAL_OPTIONS = ('aws_access_key_id', 'aws_secret_access_key', 'aws_session_token', 'aws_profile', 'aws_region',
                      'azure_client_id', 'azure_secret', 'azure_tenant', 'azure_subscription_id', 'azure_storage_key',
                      'gcp_credentials_file', 'gcp_credentials', 'gcp_project',
                      'openstack_cloud', 'openstack_auth', 'openstack_region')
# What each target publishes by default, from the build's outputs (s3 takes the first output).
DEFAULT_FORMATS = {'aws_ami': ['raw'], 'azure': ['vhd'], 'gce': ['gce'], 'openstack_glance': ['qcow2', 'raw']}
# The formats a target can take; None = any. Image services need an uncompressed disk (the gce
# output is the tar.gz of disk.raw that images.insert reads, and is not compressed once more).
TARGET_FORMATS = {'s3': None, 'aws_ami': ['raw'], 'azure': ['vhd'], 'gce': ['gce'],
                  'openstack_glance': ['qcow2', 'raw', 'vmdk', 'vhd', 'vhdx']}
# Glance's disk_format of each output format.
GLANCE_DISK_FORMATS = {'qcow2': 'qcow2', 'raw': 'raw', 'vmdk': 'vmdk', 'vhd': 'vhd', 'vhdx': 'vhdx'}
CHUNK = 4 * 1024 * 1024
# HTTP statuses that every cloud API answers for throttling and passing server trouble.
RETRYABLE_STATUS = (408, 429, 500, 502, 503, 504)

# The suboptions of each target, shared by the module's argument spec and the blueprint's
# publish entries (checked when the blueprint is, long before the upload).
TARGET_OPTIONS: t.Dict[str, t.Dict[str, t.Any]] = {
    's3': dict(
        bucket=dict(type='str', required=True),
        key=dict(type='str', no_log=False),
        endpoint_url=dict(type='str'),
        part_size=dict(type='str', default='16M'),
        concurrency=dict(type='int', default=8),
        storage_class=dict(type='str'),
        content_type=dict(type='str', default='application/octet-stream'),
    ),
    'aws_ami': dict(
        method=dict(type='str', default='ebs_direct', choices=['ebs_direct', 'import_snapshot']),
        architecture=dict(type='str', default='x86_64', choices=['x86_64', 'arm64', 'i386']),
        boot_mode=dict(type='str', default='legacy-bios', choices=['legacy-bios', 'uefi', 'uefi-preferred']),
        ena_support=dict(type='bool', default=True),
        imds_support=dict(type='str', choices=['v2.0']),
        root_device_name=dict(type='str', default='/dev/xvda'),
        volume_size=dict(type='int'),
        volume_type=dict(type='str', default='gp3'),
        share_with=dict(type='list', elements='str', default=[]),
        public=dict(type='bool', default=False),
        ec2_endpoint_url=dict(type='str'),
        ebs_endpoint_url=dict(type='str'),
    ),
    'azure': dict(
        storage_account=dict(type='str'),
        container=dict(type='str', required=True),
        blob=dict(type='str'),
        resource_group=dict(type='str'),
        location=dict(type='str'),
        hyper_v_generation=dict(type='str', default='V1', choices=['V1', 'V2']),
        os_type=dict(type='str', default='Linux', choices=['Linux', 'Windows']),
        blob_endpoint=dict(type='str'),
        resource_manager_endpoint=dict(type='str'),
        authority_host=dict(type='str'),
    ),
    'gce': dict(
        bucket=dict(type='str', required=True),
        object=dict(type='str'),
        project=dict(type='str'),
        guest_os_features=dict(type='list', elements='str', default=[]),
        architecture=dict(type='str', default='X86_64', choices=['X86_64', 'ARM64']),
        licenses=dict(type='list', elements='str', default=[]),
        storage_locations=dict(type='list', elements='str', default=[]),
        keep_object=dict(type='bool', default=False),
        storage_endpoint=dict(type='str'),
        compute_endpoint=dict(type='str'),
    ),
    'openstack_glance': dict(
        disk_format=dict(type='str', choices=['qcow2', 'raw', 'vmdk', 'vhd', 'vhdx', 'vdi', 'iso']),
        container_format=dict(type='str', default='bare', choices=['bare', 'ovf', 'ova']),
        visibility=dict(type='str', default='private', choices=['private', 'shared', 'community', 'public']),
        min_disk=dict(type='int'),
        min_ram=dict(type='int'),
        protected=dict(type='bool', default=False),
        properties=dict(type='dict', default={}),
        image_endpoint=dict(type='str'),
    ),
}

# Image names each cloud accepts (checked with the blueprint and again before any call).
GCE_NAME_RE = re.compile(r'^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$')
GCE_LABEL_KEY_RE = re.compile(r'^[a-z][a-z0-9_-]{0,62}$')
GCE_LABEL_VALUE_RE = re.compile(r'^[a-z0-9_-]{0,63}$')


def cloud_name(target: str, text: str) -> str:
    """text in the alphabet of the target's image and family names (GCE: lowercase letters, digits, hyphens)."""
    if target == 'gce':
        text = re.sub(r'[^a-z0-9-]+', '-', text.lower()).strip('-')
        if not text[:1].isalpha():
            text = 'image-' + text
        text = text[:63].rstrip('-')
    return text


def default_image_name(target: str, name: str, version: str) -> str:
    """The image name a blueprint gets when its publish entry names none: NAME-VERSION in the cloud's alphabet."""
    return cloud_name(target, '%s-%s' % (name, version))


def check_image_name(target: str, name: str, where: str = 'name') -> None:
    """InvalidInput when the cloud would refuse name as an image name (or family)."""
    if target == 'gce' and not GCE_NAME_RE.match(name):
        raise InvalidInput('%s: %r is not a Google Compute Engine image name: 1 to 63 lowercase letters, digits '
                           'and hyphens, starting with a letter and not ending with a hyphen' % (where, name))


def check_tags(target: str, tags: t.Mapping[str, t.Any], where: str = 'tags') -> None:
    """InvalidInput when the cloud would refuse a tag, label or property the user gave."""
    if target != 'gce':
        return
    for key, value in tags.items():
        if not GCE_LABEL_KEY_RE.match(str(key)):
            raise InvalidInput('%s.%s: Google Compute Engine label keys are 1 to 63 lowercase letters, digits, '
                               '"_" and "-", starting with a letter' % (where, key))
        if not GCE_LABEL_VALUE_RE.match(str(value)):
            raise InvalidInput('%s.%s: %r is not a Google Compute Engine label value: up to 63 lowercase letters, '
                               'digits, "_" and "-"' % (where, key, value))
        if str(key).startswith('osimage-'):
            raise InvalidInput('%s.%s: labels starting with osimage- are the ones cloud_upload sets itself'
                               % (where, key))


class CloudError(OsImageError):
    """A cloud API call failed for good (after retries, or a failure that retrying cannot fix)."""


class CredentialsError(CloudError):
    """The cloud refused or could not find the credentials."""


class LibraryMissing(CloudError):
    """The target's SDK is not installed for the Python that runs the module."""


class DigestMismatch(CloudError):
    """The data read from src does not have the expected SHA-256."""


class Conflict(CloudError):
    """An image of that name exists with other content, and force was not given."""


@dataclasses.dataclass
class Request:
    """One cloud_upload call, target-independent; options holds the target's own suboptions."""

    target: str
    state: str = 'present'                 # present, absent or pruned
    name: str = ''
    src: t.Optional[str] = None
    sha256: t.Optional[str] = None         # expected digest of src (e.g. from image_export's artifacts)
    family: t.Optional[str] = None         # groups images for retention
    keep_newest: t.Optional[int] = None    # state=pruned: how many images of the family stay
    description: str = ''
    tags: t.Dict[str, str] = dataclasses.field(default_factory=dict)
    force: bool = False
    keep_partial: bool = False
    wait: bool = True
    wait_timeout: int = 1800
    retries: int = 5
    options: t.Dict[str, t.Any] = dataclasses.field(default_factory=dict)
    credentials: t.Dict[str, t.Any] = dataclasses.field(default_factory=dict)
    check_mode: bool = False

    def marks(self, digest: str) -> t.Dict[str, str]:
        """What every published object or image carries: the user's tags, the digest and the family."""
        marks = dict(self.tags)
        marks[DIGEST_KEY] = digest
        if self.family:
            marks[FAMILY_KEY] = self.family
        return marks


def load_library(target: str, module: str, pip_name: str) -> t.Any:
    """Import an SDK module, or raise LibraryMissing naming what to install and where."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise LibraryMissing(
            'cloud_upload target %s needs the Python library %s (pip install %s) for the Python that runs the '
            'module, %s; run the task where the cloud SDKs are installed (for example delegate_to: localhost) '
            'or install it there' % (target, module, pip_name, sys.executable), error=str(exc))


class Progress:
    """Bytes sent and time taken, reported in the task result."""

    def __init__(self, clock: t.Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        self.bytes_sent = 0
        self.bytes_skipped = 0   # all-zero blocks not sent, or parts a previous run already sent
        self._lock = threading.Lock()

    def sent(self, count: int) -> None:
        with self._lock:
            self.bytes_sent += count

    def skipped(self, count: int) -> None:
        with self._lock:
            self.bytes_skipped += count

    def result(self) -> t.Dict[str, t.Any]:
        seconds = max(self.clock() - self.started, 1e-6)
        return {'bytes_sent': self.bytes_sent, 'bytes_skipped': self.bytes_skipped,
                'seconds': round(seconds, 3), 'throughput': int(self.bytes_sent / seconds)}


class Session:
    """Retries, waits and progress for one target run; tests pass a fake clock and sleep."""

    def __init__(self, request: Request, is_retryable: t.Callable[[BaseException], bool],
                 sleep: t.Callable[[float], None] = time.sleep, clock: t.Callable[[], float] = time.monotonic,
                 base_delay: float = 1.0, max_delay: float = 30.0,
                 warn: t.Optional[t.Callable[[str], None]] = None) -> None:
        self.request = request
        self.is_retryable = is_retryable
        self.sleep = sleep
        self.clock = clock
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.warn = warn or (lambda msg: None)
        self.progress = Progress(clock)
        self.retried = 0
        self._retried_lock = threading.Lock()  # parts and pages are sent from several threads

    def delay(self, attempt: int) -> float:
        """Full-jitter exponential backoff (the AWS architecture blog's recommendation)."""
        return random.uniform(0, min(self.max_delay, self.base_delay * (2 ** attempt)))

    def call(self, what: str, func: t.Callable[..., t.Any], *args: t.Any, **kwargs: t.Any) -> t.Any:
        """func(*args, **kwargs), retried on throttling and network errors; what names it in errors."""
        attempt = 0
        while True:
            try:
                return func(*args, **kwargs)
            except Exception as exc:  # pylint: disable=broad-except
                if attempt >= self.request.retries or not self.is_retryable(exc):
                    raise
                pause = self.delay(attempt)
                with self._retried_lock:
                    self.retried += 1
                self.warn('%s failed (%s), retrying in %.1f s' % (what, exc, pause))
                self.sleep(pause)
                attempt += 1

    def wait_until(self, what: str, probe: t.Callable[[], t.Any], delay: float = 5.0,
                   timeout: t.Optional[float] = None) -> t.Any:
        """Call probe until it returns something truthy; WaitTimeout after wait_timeout seconds.

        probe raises CloudError itself when the thing waited for failed, so that a
        failure ends the wait at once instead of after the timeout.
        """
        limit = self.request.wait_timeout if timeout is None else timeout
        deadline = self.clock() + limit
        while True:
            value = probe()
            if value:
                return value
            if self.clock() >= deadline:
                raise WaitTimeout('%s did not happen within wait_timeout (%d s)' % (what, limit))
            self.sleep(min(delay, max(deadline - self.clock(), 0.1)))


def class_names(exc: BaseException) -> t.Set[str]:
    """The names of exc's classes: SDK errors are told apart by name, without importing the SDK."""
    return {cls.__name__ for cls in type(exc).__mro__}


def http_status(exc: BaseException) -> t.Optional[int]:
    """The HTTP status an SDK's error carries, under whichever attribute that SDK uses."""
    for name in ('status_code', 'http_status', 'code'):
        status = getattr(exc, name, None)
        if isinstance(status, int) and not isinstance(status, bool):
            return status
    status = getattr(getattr(exc, 'response', None), 'status_code', None)
    return status if isinstance(status, int) else None


def short_error(exc: BaseException) -> str:
    """The first line of an SDK error's message, for error messages and warnings."""
    text = getattr(exc, 'message', None)
    if not text and exc.args and isinstance(exc.args[0], str):
        text = exc.args[0]   # e.g. google-auth's RefreshError carries (message, response data)
    text = str(text or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def sha256_file(path: str, chunk_size: int = CHUNK,
                stop: t.Optional[threading.Event] = None) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        while True:
            if stop is not None and stop.is_set():
                return ''
            chunk = handle.read(chunk_size)
            if not chunk:
                return digest.hexdigest()
            digest.update(chunk)


class DigestCheck:
    """Hashes src in a thread while the upload runs; verify() before the object or image is committed.

    Uploads send parts out of order and in parallel; reading the file once more
    beside them, in order, costs one core while the network is the bottleneck,
    and the page cache serves the second read.
    """

    def __init__(self, path: str, expected: t.Optional[str]) -> None:
        self.path = path
        self.expected = expected.lower() if expected else None
        self.actual: t.Optional[str] = None
        self.error: t.Optional[BaseException] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name='digest-check', daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.actual = sha256_file(self.path, stop=self._stop)
        except OSError as exc:
            self.error = exc

    def cancel(self) -> None:
        self._stop.set()

    def verify(self) -> str:
        """The actual digest; DigestMismatch when it is not the expected one."""
        self._thread.join()
        if self.error is not None:
            raise CloudError('src %s could not be read: %s' % (self.path, self.error))
        actual = t.cast(str, self.actual)
        if self.expected and actual != self.expected:
            raise DigestMismatch(
                'src %s has SHA-256 %s, not the expected %s: the file changed or is not the artifact that was '
                'exported; nothing was published' % (self.path, actual, self.expected),
                expected=self.expected, actual=actual)
        return actual


def check_sha256(value: t.Optional[str]) -> t.Optional[str]:
    if value is None:
        return None
    text = value.strip().lower()
    if text.startswith('sha256:'):
        text = text[len('sha256:'):]
    if len(text) != 64 or any(c not in '0123456789abcdef' for c in text):
        raise InvalidInput('sha256: %r is not a SHA-256 digest (64 hexadecimal digits)' % value)
    return text


def check_request(req: Request) -> Request:
    """Checks every target shares, before anything is read or sent."""
    if req.target not in TARGETS:
        raise InvalidInput('target: %r is not one of %s' % (req.target, ', '.join(TARGETS)))
    if not req.name:
        raise InvalidInput('name: the object or image name is required')
    req.sha256 = check_sha256(req.sha256)
    if req.state == 'present':
        if not req.src:
            raise InvalidInput('src: the artifact to upload is required with state=present')
        if not os.path.isfile(req.src):
            raise InvalidInput('src: %s does not exist or is not a regular file' % req.src)
        if not os.access(req.src, os.R_OK):
            raise InvalidInput('src: %s is not readable by the user running the module' % req.src)
    if req.state == 'pruned':
        if req.keep_newest is None or req.keep_newest < 1:
            raise InvalidInput('keep_newest: state=pruned needs keep_newest of 1 or more (the newest image of '
                               'the family always stays)')
        if not req.family:
            raise InvalidInput('family: state=pruned needs the family whose older images are deleted')
    if req.wait_timeout < 1:
        raise InvalidInput('wait_timeout: %d is not a positive number of seconds' % req.wait_timeout)
    if req.retries < 0:
        raise InvalidInput('retries: %d is negative' % req.retries)
    for key, value in req.tags.items():
        if not isinstance(value, str):
            raise InvalidInput('tags: the value of %s must be a string, not %s' % (key, type(value).__name__))
    check_tags(req.target, req.tags)
    if req.state != 'pruned':
        check_image_name(req.target, req.name)
    if req.family:
        check_image_name(req.target, req.family, 'family')
    return req


Images = t.List[t.Dict[str, t.Any]]


def newest_first(images: t.Sequence[t.Dict[str, t.Any]], keep: int) -> t.Tuple[Images, Images]:
    """Split images (dicts with 'created', an ISO 8601 UTC time, and 'name') into (kept, pruned).

    Ties on the creation time are broken by name, so that the choice is the same on every run.
    """
    ordered = sorted(images, key=lambda image: (str(image.get('created') or ''), str(image.get('name') or '')),
                     reverse=True)
    return list(ordered[:keep]), list(ordered[keep:])


class Backend:
    """Base of a target. Subclasses implement present(); absent() and pruned() where the target has them.

    Each returns the fields of the task result: at least ``changed``; ``id`` and
    ``url`` (or ``location``) of what was published; ``sha256``.
    """

    target = ''

    def __init__(self, request: Request, session_factory: t.Callable[..., Session] = Session,
                 warn: t.Optional[t.Callable[[str], None]] = None) -> None:
        self.request = request
        self.session = session_factory(request, self.is_retryable)
        if warn is not None:
            self.session.warn = warn

    def is_retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, (ConnectionError, TimeoutError))

    def check(self) -> None:
        """Target-specific checks of request.options, before any call to the cloud."""

    def present(self) -> t.Dict[str, t.Any]:
        raise NotImplementedError

    def absent(self) -> t.Dict[str, t.Any]:
        raise InvalidInput('state: absent is not supported by target %s' % self.target)

    def pruned(self) -> t.Dict[str, t.Any]:
        raise InvalidInput('state: pruned is not supported by target %s' % self.target)

    def run(self) -> t.Dict[str, t.Any]:
        check_request(self.request)
        self.check()
        result = getattr(self, self.request.state)()
        result.setdefault('target', self.target)
        if self.request.state == 'present':
            result.setdefault('progress', self.session.progress.result())
            result['progress']['retries'] = self.session.retried
        return result
