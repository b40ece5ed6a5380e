# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""cloud_upload target azure: a fixed VHD as a page blob, and optionally a managed image from it.

Azure creates VMs only from fixed VHDs whose virtual size is a whole number of
MiB, stored as page blobs; image_export's ``vhd`` output is exactly that, so the
file is sent as it is, without conversion. A page blob is created at its full
size and reads back as zeros where nothing was written, so all-zero 4 MiB
ranges (most of a fresh disk) are never sent.

The digest lives in the blob's metadata as ``osimage_sha256`` (Azure metadata
names must be C# identifiers, so the hyphenated DIGEST_KEY cannot be used) and
is written only after every page is in and the DigestCheck passed: a blob that
carries it is complete. While pages are sent the blob carries
``osimage_partial_sha256`` instead, which lets a later run with the same
digest resume a blob that a failed run kept (keep_partial) or a killed run
left. The managed image carries the usual ``osimage-sha256``,
``osimage-family`` and ``osimage-created`` tags; the last one orders images
for pruning, because older API versions of the Image resource report no
creation time.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import os
import re
import struct
import threading
import typing as t
import urllib.parse

from ansible_collections.osimage.builder.plugins.module_utils._cloud import (
    CHUNK, DIGEST_KEY, FAMILY_KEY, Backend, CloudError, Conflict, CredentialsError, DigestCheck, DigestMismatch,
    RETRYABLE_STATUS, class_names, http_status, load_library, newest_first, sha256_file, short_error)
from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput, OsImageError

MIB = 1024 * 1024
PAGE = 512
# Azure's limits: a page blob holds at most 8 TiB; one Put Page request at most 4 MiB.
MAX_PAGE_BLOB = 8 * 1024 * 1024 * MIB
UPLOAD_THREADS = 4
ZEROS = bytes(CHUNK)

# Blob metadata names (C# identifiers) that stand for DIGEST_KEY and FAMILY_KEY.
BLOB_DIGEST = 'osimage_sha256'
BLOB_FAMILY = 'osimage_family'
BLOB_PARTIAL = 'osimage_partial_sha256'
CREATED_TAG = 'osimage-created'

VHD_COOKIE = b'conectix'
VHD_FIXED = 2

CSHARP_IDENTIFIER_RE = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')
STORAGE_ACCOUNT_RE = re.compile(r'^[a-z0-9]{3,24}$')
CONTAINER_RE = re.compile(r'^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$')
IMAGE_NAME_RE = re.compile(r'^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,78}[A-Za-z0-9_])?$')
RESOURCE_GROUP_RE = re.compile(r'^[-\w._()]{0,89}[-\w_()]$')
TAG_NAME_FORBIDDEN = set('<>%&\\?/')

SECRET_HINT = 'azure_secret (or AZURE_SECRET / AZURE_CLIENT_SECRET)'
PRINCIPAL_HINT = ('azure_client_id, azure_secret and azure_tenant (or AZURE_CLIENT_ID, AZURE_SECRET / '
                  'AZURE_CLIENT_SECRET and AZURE_TENANT / AZURE_TENANT_ID)')
KEY_HINT = 'azure_storage_key (or AZURE_STORAGE_KEY)'


class VhdInfo(t.NamedTuple):
    file_size: int
    virtual_size: int


def read_vhd_footer(path: str) -> VhdInfo:
    """The footer of a fixed VHD (Microsoft's VHD specification, "Hard Disk Footer Format"); InvalidInput otherwise.

    Checked before anything is sent: Azure accepts other files as page blobs and
    fails only when an image or disk is created from them, long after the upload.
    """
    hint = ('; Azure needs a fixed VHD whose size is a whole number of MiB - add a vhd output to the build '
            '(image_export format vhd) and publish that artifact')
    size = os.path.getsize(path)
    if size < PAGE + MIB:
        raise InvalidInput('src: %s is too small (%d bytes) to be a VHD%s' % (path, size, hint))
    with open(path, 'rb') as handle:
        handle.seek(size - PAGE)
        footer = handle.read(PAGE)
    if footer[:8] != VHD_COOKIE:
        raise InvalidInput('src: %s has no VHD footer (no "conectix" cookie in its last 512 bytes)%s' % (path, hint))
    checksum = struct.unpack('>I', footer[64:68])[0]
    if (~sum(footer[:64] + b'\0\0\0\0' + footer[68:])) & 0xffffffff != checksum:
        raise InvalidInput('src: %s has a VHD footer with a wrong checksum; the file is damaged%s' % (path, hint))
    disk_type = struct.unpack('>I', footer[60:64])[0]
    if disk_type != VHD_FIXED:
        kind = {3: 'dynamic', 4: 'differencing'}.get(disk_type, 'type %d' % disk_type)
        raise InvalidInput('src: %s is a %s VHD, not a fixed one%s' % (path, kind, hint))
    virtual_size = struct.unpack('>Q', footer[48:56])[0]
    if virtual_size != size - PAGE:
        raise InvalidInput('src: %s says its disk is %d bytes but holds %d bytes before the footer%s'
                           % (path, virtual_size, size - PAGE, hint))
    if virtual_size % MIB:
        raise InvalidInput('src: the virtual size of %s (%d bytes) is not a whole number of MiB%s' % (path, virtual_size, hint))
    if size > MAX_PAGE_BLOB:
        raise InvalidInput('src: %s (%d bytes) is larger than a page blob can be (8 TiB)' % (path, size))
    return VhdInfo(size, virtual_size)


def covered(ranges: t.Sequence[t.Tuple[int, int]], start: int, end: int) -> bool:
    """Whether [start, end) lies inside the union of ranges (inclusive (first, last) byte pairs)."""
    position = start
    for first, last in sorted(ranges):
        if first > position:
            break
        position = max(position, last + 1)
        if position >= end:
            return True
    return position >= end


def blob_metadata(digest: str, family: t.Optional[str], tags: t.Dict[str, str]) -> t.Dict[str, str]:
    metadata = dict(tags)
    metadata[BLOB_DIGEST] = digest
    if family:
        metadata[BLOB_FAMILY] = family
    return metadata


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def _as_dict(value: t.Any) -> t.Dict[str, t.Any]:
    """A Compute model (MutableMapping of the REST JSON, with as_dict()) or a plain dict, as the REST JSON."""
    if value is None:
        return {}
    if hasattr(value, 'as_dict'):
        return value.as_dict()
    return dict(value)


def image_summary(image: t.Any) -> t.Dict[str, t.Any]:
    """The fields of a Compute Image that the result and the pruning need."""
    data = _as_dict(image)
    props = data.get('properties') or {}
    tags = data.get('tags') or {}
    os_disk = (props.get('storageProfile') or {}).get('osDisk') or {}
    created = tags.get(CREATED_TAG) or (data.get('systemData') or {}).get('createdAt') or ''
    return {'name': data.get('name'), 'id': data.get('id'), 'created': str(created),
            'sha256': tags.get(DIGEST_KEY), 'family': tags.get(FAMILY_KEY),
            'provisioning_state': props.get('provisioningState'), 'blob_url': os_disk.get('blobUri'),
            'location': data.get('location')}


def _error_code(exc: BaseException) -> str:
    code = getattr(exc, 'error_code', None)
    if not code:
        error = getattr(exc, 'error', None)
        code = getattr(error, 'code', None)
    return str(getattr(code, 'value', code) or '')


class AzureBackend(Backend):
    target = 'azure'

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self.opts: t.Dict[str, t.Any] = {}
        self.vhd: t.Optional[VhdInfo] = None
        self._credential: t.Any = None
        self._service: t.Any = None
        self._compute: t.Any = None

    # ----- options ---------------------------------------------------------------------------------------

    @property
    def blob_name(self) -> str:
        return self.opts.get('blob') or self.request.name + '.vhd'

    @property
    def resource_group(self) -> t.Optional[str]:
        return self.opts.get('resource_group')

    def check(self) -> None:
        req = self.request
        self.opts = dict((req.options or {}).get('azure') or {})
        opts = self.opts
        creds = req.credentials
        if not opts.get('container'):
            raise InvalidInput('azure.container: the blob container is required')
        if not CONTAINER_RE.match(opts['container']):
            raise InvalidInput('azure.container: %r is not a container name (3 to 63 lowercase letters, digits and '
                               'single hyphens, starting and ending with a letter or digit)' % opts['container'])
        account = opts.get('storage_account')
        if account and not STORAGE_ACCOUNT_RE.match(account):
            raise InvalidInput('azure.storage_account: %r is not a storage account name (3 to 24 lowercase letters '
                               'and digits)' % account)
        if not account and not opts.get('blob_endpoint'):
            raise InvalidInput('azure.storage_account: give the storage account (or azure.blob_endpoint)')
        if not 1 <= len(self.blob_name) <= 1024 or self.blob_name.endswith(('/', '.')):
            raise InvalidInput('azure.blob: %r is not a blob name (1 to 1024 characters, not ending with . or /)'
                               % self.blob_name)
        key = creds.get('azure_storage_key')
        for option in ('blob_endpoint', 'resource_manager_endpoint', 'authority_host'):
            url = opts.get(option)
            if url and urllib.parse.urlparse(url).scheme not in ('http', 'https'):
                raise InvalidInput('azure.%s: %r is not an http(s) URL' % (option, url))
        if (opts.get('blob_endpoint') or '').startswith('http:') and not key:
            raise InvalidInput('azure.blob_endpoint: the service principal\'s token is sent only over https; give '
                               'an https endpoint or %s' % KEY_HINT)
        if self.resource_group:
            self._check_image_options()
        if not key:
            self._principal()   # raises CredentialsError naming what is missing
        for name, value in req.tags.items():
            self._check_tag(name, value)
        if req.family:
            self._check_tag(FAMILY_KEY, req.family, field='family')
        if len(req.tags) > 46:
            raise InvalidInput('tags: %d tags, but an Azure resource takes 50 and this module adds up to 4' % len(req.tags))
        if req.state == 'present':
            self.vhd = read_vhd_footer(t.cast(str, req.src))

    def _check_image_options(self) -> None:
        opts, req = self.opts, self.request
        if not RESOURCE_GROUP_RE.match(self.resource_group or '') or (self.resource_group or '').endswith('.'):
            raise InvalidInput('azure.resource_group: %r is not a resource group name (1 to 90 letters, digits, '
                               '._-() not ending with a period)' % self.resource_group)
        if req.state == 'present' and not IMAGE_NAME_RE.match(req.name):
            raise InvalidInput('name: %r is not an Azure image name (1 to 80 letters, digits, underscores, periods '
                               'and hyphens, starting with a letter or digit, ending with a letter, digit or '
                               'underscore)' % req.name)
        if req.state == 'present' and not opts.get('location'):
            raise InvalidInput('azure.location: the region of the image (for example westeurope) is required with '
                               'azure.resource_group')
        if not req.credentials.get('azure_subscription_id'):
            raise CredentialsError('azure_subscription_id (or AZURE_SUBSCRIPTION_ID): the subscription of the image is '
                                   'required with azure.resource_group')
        url = opts.get('resource_manager_endpoint') or ''
        if url.startswith('http:'):
            raise InvalidInput('azure.resource_manager_endpoint: Azure Resource Manager takes tokens only over https')
        if (opts.get('authority_host') or '').startswith('http:'):
            raise InvalidInput('azure.authority_host: Microsoft Entra ID is reached over https only')
        self._principal()

    def _check_tag(self, name: str, value: str, field: str = 'tags') -> None:
        """Tags become blob metadata (C# identifiers, ASCII values) and image tags (ARM's limits)."""
        if name != FAMILY_KEY and not CSHARP_IDENTIFIER_RE.match(name):
            raise InvalidInput('%s: %r cannot be Azure blob metadata; metadata names are C# identifiers (letters, '
                               'digits and underscores, not starting with a digit), for example %s'
                               % (field, name, re.sub(r'\W', '_', name)))
        if name.lower().startswith('osimage_') and field == 'tags':
            raise InvalidInput('tags: %s is reserved for the digest and family this module records' % name)
        if len(name) > 512 or len(value) > 256 or TAG_NAME_FORBIDDEN & set(name):
            raise InvalidInput('%s: %r does not fit an Azure tag (name up to 512 characters without <>%%&\\?/, value '
                               'up to 256)' % (field, name))
        try:
            value.encode('ascii')
        except UnicodeEncodeError:
            raise InvalidInput('%s: the value of %s must be ASCII, because Azure sends blob metadata as HTTP '
                               'headers' % (field, name)) from None

    def _principal(self) -> t.Tuple[str, str, str]:
        creds = self.request.credentials
        values = (creds.get('azure_tenant'), creds.get('azure_client_id'), creds.get('azure_secret'))
        if not all(values):
            missing = [name for name, value in zip(('azure_tenant', 'azure_client_id', 'azure_secret'), values)
                       if not value]
            need = 'the image' if self.resource_group else 'the blob (or give %s)' % KEY_HINT
            raise CredentialsError('%s: missing; the service principal needs %s for %s'
                                   % (', '.join(missing), PRINCIPAL_HINT, need))
        return t.cast(t.Tuple[str, str, str], values)

    # ----- retries and errors ---------------------------------------------------------------------------

    def is_retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, OsImageError):
            return False
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return True
        names = class_names(exc)
        if 'ClientAuthenticationError' in names:
            return False
        if names & {'ServiceRequestError', 'ServiceResponseError', 'IncompleteReadError'}:
            # "Bearer token authentication is not permitted for non-TLS" is raised as a ServiceRequestError too.
            return 'non-TLS' not in str(exc)
        return http_status(exc) in RETRYABLE_STATUS

    def _error(self, what: str, exc: BaseException) -> OsImageError:
        """The exception an SDK call raised, as the collection's error naming what to fix."""
        if isinstance(exc, OsImageError):
            return exc
        status, code, text = http_status(exc), _error_code(exc), short_error(exc)
        names = class_names(exc)
        blob = not what.startswith(('Images.', 'image '))
        if 'AADSTS' in text or 'invalid_client' in text or 'ClientSecretCredential' in text:
            if 'AADSTS7000215' in text or 'AADSTS7000222' in text:
                hint = SECRET_HINT + ' is wrong or expired'
            elif 'AADSTS700016' in text:
                hint = 'azure_client_id (or AZURE_CLIENT_ID) names no application in the tenant'
            elif 'AADSTS90002' in text or 'AADSTS900023' in text:
                hint = 'azure_tenant (or AZURE_TENANT / AZURE_TENANT_ID) names no tenant'
            else:
                hint = 'check ' + PRINCIPAL_HINT
            return CredentialsError('%s: Microsoft Entra ID refused the service principal: %s; %s'
                                    % (what, text, hint), status=status)
        if blob and (code in ('AuthenticationFailed', 'InvalidAuthenticationInfo') or status == 401 or (
                status == 403 and self.request.credentials.get('azure_storage_key'))):
            if self.request.credentials.get('azure_storage_key'):
                hint = KEY_HINT + ' is not a key of the storage account'
            else:
                hint = 'the token of ' + PRINCIPAL_HINT + ' was refused'
            return CredentialsError('%s: the blob service refused the credentials (%s): %s; %s'
                                    % (what, code or status, text, hint), status=status, code=code)
        if blob and status == 403:
            return CredentialsError('%s: the service principal may not write blobs (%s): %s; give it the role '
                                    'Storage Blob Data Contributor on the account or use %s'
                                    % (what, code or status, text, KEY_HINT), status=status, code=code)
        if not blob and (status == 401 or 'ClientAuthenticationError' in names or code in (
                'InvalidAuthenticationToken', 'AuthenticationFailed', 'ExpiredAuthenticationToken')):
            return CredentialsError('%s: Azure Resource Manager refused the token (%s): %s; check %s'
                                    % (what, code or status, text, PRINCIPAL_HINT), status=status, code=code)
        if not blob and status == 403:
            return CredentialsError('%s: the service principal may not manage images in resource group %s (%s): %s; '
                                    'give it the role Contributor there' % (what, self.resource_group, code, text),
                                    status=status, code=code)
        if code == 'ContainerNotFound':
            return CloudError('azure.container: container %s does not exist in the storage account; create it first'
                              % self.opts.get('container'), code=code)
        if code == 'ResourceGroupNotFound':
            return CloudError('azure.resource_group: resource group %s does not exist; create it first'
                              % self.resource_group, code=code)
        if code in ('SubscriptionNotFound', 'InvalidSubscriptionId'):
            return CredentialsError('azure_subscription_id (or AZURE_SUBSCRIPTION_ID): %s' % text, code=code)
        return CloudError('%s failed: %s' % (what, text), status=status, code=code, error=type(exc).__name__)

    def _call(self, what: str, func: t.Callable[..., t.Any], *args: t.Any, **kwargs: t.Any) -> t.Any:
        try:
            return self.session.call(what, func, *args, **kwargs)
        except Exception as exc:  # pylint: disable=broad-except
            raise self._error(what, exc) from exc

    def _get_or_none(self, what: str, func: t.Callable[..., t.Any], *args: t.Any) -> t.Any:
        """func(*args), or None when the resource does not exist (404)."""
        try:
            return self.session.call(what, func, *args)
        except Exception as exc:  # pylint: disable=broad-except
            missing_parent = _error_code(exc) in ('ContainerNotFound', 'ResourceGroupNotFound', 'SubscriptionNotFound')
            if http_status(exc) == 404 and not missing_parent:
                return None
            raise self._error(what, exc) from exc

    # ----- clients -----------------------------------------------------------------------------------------

    def token_credential(self) -> t.Any:
        if self._credential is None:
            identity = load_library('azure', 'azure.identity', 'azure-identity')
            tenant, client_id, secret = self._principal()
            kwargs: t.Dict[str, t.Any] = {}
            if self.opts.get('authority_host'):
                # A sovereign or private authority: MSAL's instance discovery would ask the public cloud about
                # it, which knows only its own hosts.
                kwargs.update(authority=self.opts['authority_host'], disable_instance_discovery=True)
            try:
                self._credential = identity.ClientSecretCredential(tenant, client_id, secret, **kwargs)
            except ValueError as exc:
                raise InvalidInput('azure_tenant / azure.authority_host: %s' % exc) from None
        return self._credential

    def blob_service(self) -> t.Any:
        """A BlobServiceClient with shared key or token auth; the SDK's own retries are off (Session.call retries)."""
        if self._service is None:
            blob = load_library('azure', 'azure.storage.blob', 'azure-storage-blob')
            key = self.request.credentials.get('azure_storage_key')
            account = self.opts.get('storage_account')
            credential: t.Any
            if key:
                credential = {'account_name': account, 'account_key': key} if account else key
            else:
                credential = self.token_credential()
            endpoint = self.opts.get('blob_endpoint')
            try:
                if endpoint:
                    self._service = blob.BlobServiceClient(endpoint, credential=credential, retry_total=0)
                else:
                    # The SDK builds the account's default endpoint from its name, as from a connection string.
                    self._service = blob.BlobServiceClient.from_connection_string(
                        'AccountName=%s' % account, credential=credential, retry_total=0)
            except ValueError as exc:
                raise InvalidInput('azure.blob_endpoint / azure_storage_key: %s' % exc) from None
        return self._service

    def blob_client(self, container: t.Optional[str] = None, name: t.Optional[str] = None) -> t.Any:
        return self.blob_service().get_blob_client(container or self.opts['container'], name or self.blob_name)

    def compute(self) -> t.Any:
        if self._compute is None:
            mgmt = load_library('azure', 'azure.mgmt.compute', 'azure-mgmt-compute')
            kwargs: t.Dict[str, t.Any] = {'retry_total': 0}
            endpoint = self.opts.get('resource_manager_endpoint')
            if endpoint:
                kwargs['base_url'] = endpoint
                kwargs.update(self._arm_cloud(endpoint))
            self._compute = mgmt.ComputeManagementClient(
                self.token_credential(), self.request.credentials['azure_subscription_id'], **kwargs)
        return self._compute

    @staticmethod
    def _arm_cloud(endpoint: str) -> t.Dict[str, t.Any]:
        """The token scope for an ARM endpoint: a known cloud's own, else the endpoint's (Azure Stack, tests)."""
        try:
            core = load_library('azure', 'azure.core', 'azure-core')
            tools = load_library('azure', 'azure.mgmt.core.tools', 'azure-mgmt-core')
            for cloud in core.AzureClouds:
                if tools.get_arm_endpoints(cloud)['resource_manager'].rstrip('/') == endpoint.rstrip('/'):
                    return {'cloud_setting': cloud}
        except (AttributeError, CloudError):
            pass
        return {'credential_scopes': [endpoint.rstrip('/') + '/.default']}

    # ----- state=present -------------------------------------------------------------------------------------

    def present(self) -> t.Dict[str, t.Any]:
        req = self.request
        vhd = t.cast(VhdInfo, self.vhd)
        digest = req.sha256 or sha256_file(t.cast(str, req.src))
        blob_client = self.blob_client()
        url = blob_client.url
        result: t.Dict[str, t.Any] = {'changed': False, 'id': url, 'url': url, 'sha256': digest, 'resumed': False,
                                      'details': {'blob_url': url, 'container': self.opts['container'],
                                                  'blob': self.blob_name}}
        image = None
        if self.resource_group:
            image = self._get_or_none('Images.Get %s' % req.name, self.compute().images.get, self.resource_group, req.name)
            if image is not None:
                summary = image_summary(image)
                if summary['sha256'] == digest and summary['provisioning_state'] != 'Failed':
                    return self._image_result(result, summary, changed=False)
                if summary['sha256'] != digest and not req.force:
                    raise Conflict('name: image %s in resource group %s has SHA-256 %s, not %s; give another name, or '
                                   'force=true to replace it' % (req.name, self.resource_group, summary['sha256'],
                                                                 digest), id=summary['id'])
        props = self._get_or_none('Get Blob Properties %s' % self.blob_name, blob_client.get_blob_properties)
        metadata = dict(getattr(props, 'metadata', None) or {}) if props is not None else {}
        complete = props is not None and metadata.get(BLOB_DIGEST) == digest and props.size == vhd.file_size
        if props is not None and not complete and not req.force and (
                BLOB_DIGEST in metadata or BLOB_PARTIAL not in metadata):
            raise Conflict('azure.blob: blob %s exists with %s; give another azure.blob or name, or force=true to '
                           'replace it' % (url, 'SHA-256 %s' % metadata[BLOB_DIGEST] if BLOB_DIGEST in metadata
                                           else 'no %s metadata (this module did not write it)' % BLOB_DIGEST))
        if not complete:
            result['changed'] = True
            if req.check_mode:
                result['details']['would_upload'] = True
            else:
                resume = (props is not None and BLOB_DIGEST not in metadata and metadata.get(BLOB_PARTIAL) == digest
                          and props.size == vhd.file_size)
                result['resumed'] = self._upload(blob_client, digest, resume)
        if self.resource_group:
            result['changed'] = True
            if req.check_mode:
                result['details']['would_create_image'] = True
                return result
            if image is not None:
                self._delete_image(req.name)
            return self._image_result(result, self._create_image(url, digest), changed=True)
        return result

    def _image_result(self, result: t.Dict[str, t.Any], summary: t.Dict[str, t.Any], changed: bool) -> t.Dict[str, t.Any]:
        result['changed'] = result['changed'] or changed
        result['id'] = summary['id']
        result['details'].update(image_id=summary['id'], provisioning_state=summary['provisioning_state'],
                                 location=summary['location'], resource_group=self.resource_group)
        if summary.get('blob_url'):
            result['details']['image_blob_url'] = summary['blob_url']
        return result

    def _upload(self, blob_client: t.Any, digest: str, resume: bool) -> bool:
        """Write the page blob; True when pages of an earlier run were kept. The digest metadata comes last."""
        req = self.request
        vhd = t.cast(VhdInfo, self.vhd)
        written: t.List[t.Tuple[int, int]] = []
        if resume:
            written = self._page_ranges(blob_client)
        check = DigestCheck(t.cast(str, req.src), digest)
        try:
            if not resume:
                self._call('Put Blob (page blob) %s' % self.blob_name, blob_client.create_page_blob, vhd.file_size,
                           metadata={BLOB_PARTIAL: digest})
            self._write_pages(blob_client, written)
            check.verify()
            self._call('Set Blob Metadata %s' % self.blob_name, blob_client.set_blob_metadata,
                       blob_metadata(digest, req.family, req.tags))
        except BaseException as exc:
            check.cancel()
            if isinstance(exc, DigestMismatch) or not req.keep_partial:
                self._discard(blob_client, exc)
            raise
        return bool(written)

    def _page_ranges(self, blob_client: t.Any) -> t.List[t.Tuple[int, int]]:
        ranges = self._call('Get Page Ranges %s' % self.blob_name, lambda: list(blob_client.list_page_ranges()))
        return [(r.start, r.end) for r in ranges if not getattr(r, 'cleared', False)]

    def _write_pages(self, blob_client: t.Any, written: t.Sequence[t.Tuple[int, int]]) -> None:
        """Put Page for each 4 MiB range that is not all zeros and not written by an earlier run, in parallel."""
        progress = self.session.progress
        size = t.cast(VhdInfo, self.vhd).file_size
        failed = threading.Event()

        def put(offset: int, data: bytes) -> None:
            if failed.is_set():
                return
            try:
                self._call('Put Page %s at %d' % (self.blob_name, offset), blob_client.upload_page, data, offset, len(data))
            except BaseException:
                failed.set()
                raise
            progress.sent(len(data))

        fd = os.open(t.cast(str, self.request.src), os.O_RDONLY)
        pending: t.Set[concurrent.futures.Future] = set()
        try:
            with concurrent.futures.ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix='put-page') as pool:
                for offset in range(0, size, CHUNK):
                    length = min(CHUNK, size - offset)
                    if written and covered(written, offset, offset + length):
                        progress.skipped(length)
                        continue
                    data = os.pread(fd, length, offset)
                    if len(data) != length:
                        raise CloudError('src: %s became shorter while it was sent' % self.request.src)
                    if data == ZEROS[:length]:
                        progress.skipped(length)
                        continue
                    if failed.is_set():
                        break
                    pending.add(pool.submit(put, offset, data))
                    if len(pending) >= 2 * UPLOAD_THREADS:
                        done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                        for future in done:
                            future.result()
                done, pending = concurrent.futures.wait(pending)
                for future in done:
                    future.result()
        finally:
            os.close(fd)

    def _discard(self, blob_client: t.Any, cause: BaseException) -> None:
        """Delete what a failed upload wrote; a failure to do so is reported with the original error."""
        try:
            self.session.call('Delete Blob %s' % self.blob_name, blob_client.delete_blob)
        except Exception as exc:  # pylint: disable=broad-except
            if http_status(exc) != 404:
                self.session.warn('the partial blob %s could not be deleted after %s: %s; delete it by hand'
                                  % (blob_client.url, short_error(cause), short_error(exc)))

    def _create_image(self, blob_url: str, digest: str) -> t.Dict[str, t.Any]:
        req, opts = self.request, self.opts
        tags = dict(req.marks(digest), **{CREATED_TAG: utc_now()})
        body = {
            'location': opts['location'],
            'tags': tags,
            'properties': {
                'hyperVGeneration': opts.get('hyper_v_generation') or 'V1',
                'storageProfile': {'osDisk': {'osType': opts.get('os_type') or 'Linux', 'osState': 'Generalized',
                                              'blobUri': blob_url, 'caching': 'ReadWrite'}},
            },
        }
        what = 'Images.CreateOrUpdate %s' % req.name
        images = self.compute().images
        poller = self._call(what, images.begin_create_or_update, self.resource_group, req.name, body)
        if not req.wait:
            return image_summary(self._call('Images.Get %s' % req.name, images.get, self.resource_group, req.name))
        try:
            self.session.wait_until('image %s to be created' % req.name, poller.done, delay=2.0)
            image = poller.result()
        except Exception as exc:  # pylint: disable=broad-except
            if not req.keep_partial:
                try:
                    self._delete_image(req.name)
                except OsImageError as cleanup:
                    self.session.warn('image %s could not be deleted after it failed: %s' % (req.name, cleanup.msg))
            if isinstance(exc, OsImageError):
                raise
            raise self._error(what, exc) from exc
        return image_summary(image)

    def _delete_image(self, name: str) -> None:
        what = 'Images.Delete %s' % name
        poller = self._call(what, self.compute().images.begin_delete, self.resource_group, name)
        if self.request.wait or self.request.state == 'present':
            try:
                self.session.wait_until('image %s to be deleted' % name, poller.done, delay=2.0)
                poller.result()
            except Exception as exc:  # pylint: disable=broad-except
                if http_status(exc) != 404:
                    raise self._error(what, exc) from exc

    # ----- state=absent and state=pruned ---------------------------------------------------------------------

    def absent(self) -> t.Dict[str, t.Any]:
        req = self.request
        deleted: t.List[t.Dict[str, t.Any]] = []
        image = None
        if self.resource_group:
            image = self._get_or_none('Images.Get %s' % req.name, self.compute().images.get, self.resource_group, req.name)
        blob_client = self.blob_client()
        props = self._get_or_none('Get Blob Properties %s' % self.blob_name, blob_client.get_blob_properties)
        if image is not None:
            summary = image_summary(image)
            if not summary['sha256'] and not req.force:
                raise Conflict('name: image %s has no %s tag, so this module did not create it; force=true deletes it '
                               'anyway' % (req.name, DIGEST_KEY), id=summary['id'])
            deleted.append({'type': 'image', 'name': req.name, 'id': summary['id'], 'sha256': summary['sha256']})
        if props is not None:
            metadata = dict(props.metadata or {})
            if not (BLOB_DIGEST in metadata or BLOB_PARTIAL in metadata or req.force):
                raise Conflict('azure.blob: blob %s has no %s metadata, so this module did not write it; force=true '
                               'deletes it anyway' % (blob_client.url, BLOB_DIGEST))
            deleted.append({'type': 'blob', 'name': self.blob_name, 'url': blob_client.url,
                            'sha256': metadata.get(BLOB_DIGEST)})
        if not req.check_mode:
            if image is not None:
                self._delete_image(req.name)
            if props is not None:
                self._delete_blob(blob_client)
        return {'changed': bool(deleted), 'deleted': deleted}

    def _delete_blob(self, blob_client: t.Any) -> None:
        try:
            self.session.call('Delete Blob %s' % blob_client.blob_name, blob_client.delete_blob,
                              delete_snapshots='include')
        except Exception as exc:  # pylint: disable=broad-except
            if http_status(exc) != 404:
                raise self._error('Delete Blob %s' % blob_client.blob_name, exc) from exc

    def _own_blob(self, url: t.Optional[str]) -> t.Any:
        """A client for url when it is a blob of the configured account, else None."""
        if not url:
            return None
        base = self.blob_service().url.split('?')[0].rstrip('/') + '/'
        if not url.startswith(base):
            return None
        container, _unused, name = url[len(base):].partition('/')
        if not container or not name:
            return None
        return self.blob_client(urllib.parse.unquote(container), urllib.parse.unquote(name))

    def pruned(self) -> t.Dict[str, t.Any]:
        req = self.request
        family = t.cast(str, req.family)
        if self.resource_group:
            pager = self._call('Images.ListByResourceGroup %s' % self.resource_group,
                               lambda: list(self.compute().images.list_by_resource_group(self.resource_group)))
            images = [image_summary(image) for image in pager]
            images = [image for image in images if image['family'] == family]
        else:
            container = self.blob_service().get_container_client(self.opts['container'])
            blobs = self._call('List Blobs %s' % self.opts['container'],
                               lambda: list(container.list_blobs(include=['metadata'])))
            images = []
            for item in blobs:
                metadata = item.metadata or {}
                if metadata.get(BLOB_FAMILY) == family and BLOB_DIGEST in metadata:
                    created = item.creation_time
                    images.append({'type': 'blob', 'name': item.name, 'sha256': metadata[BLOB_DIGEST],
                                   'url': self.blob_client(name=item.name).url,
                                   'created': created.astimezone(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')
                                   if created else ''})
        kept, gone = newest_first(images, req.keep_newest or 1)
        if not req.check_mode:
            for entry in gone:
                if self.resource_group:
                    self._delete_image(entry['name'])
                    blob = self._own_blob(entry.get('blob_url'))
                    if blob is not None:
                        props = self._get_or_none('Get Blob Properties %s' % blob.blob_name, blob.get_blob_properties)
                        if props is not None and (props.metadata or {}).get(BLOB_DIGEST) == entry['sha256']:
                            self._delete_blob(blob)
                            entry['blob_deleted'] = True
                else:
                    self._delete_blob(self.blob_client(name=entry['name']))
        return {'changed': bool(gone), 'deleted': gone, 'kept': kept}
