# -*- coding: utf-8 -*-
from __future__ import annotations

import base64
import gzip
import hashlib
import os
import typing as t

import pytest

from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError, NoCredentialsError

from ansible_collections.osimage.builder.plugins.module_utils import _cloud_aws
from ansible_collections.osimage.builder.plugins.module_utils._cloud import (
    CloudError, Conflict, CredentialsError, DigestMismatch, Request, Session)
from ansible_collections.osimage.builder.plugins.module_utils._cloud_aws import (
    BLOCK_SIZE, AwsAmiBackend, not_raw_reason, volume_gib)
from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput

MIB = 1024 * 1024
CREDS = {'aws_access_key_id': 'AKIDTEST', 'aws_secret_access_key': 'secret', 'aws_region': 'eu-central-1'}


def client_error(code: str, status: int = 400, message: str = 'failed') -> ClientError:
    return ClientError({'Error': {'Code': code, 'Message': message}, 'ResponseMetadata': {'HTTPStatusCode': status}},
                       'Operation')


def write_raw(path: str, size: int = 3 * MIB + 100,
              payload: t.Sequence[t.Tuple[int, bytes]] = ((0, b'boot' * 1000), (2 * MIB, b'data'))) -> str:
    with open(path, 'wb') as handle:
        handle.truncate(size)
        for offset, data in payload:
            handle.seek(offset)
            handle.write(data)
    return path


def digest_of(path: str) -> str:
    with open(path, 'rb') as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def tags_of(tags: t.Sequence[t.Dict[str, str]]) -> t.Dict[str, str]:
    return {tag['Key']: tag['Value'] for tag in tags}


class FakeAws:
    """EC2 and the EBS direct APIs as far as the backend uses them, in memory; records every call."""

    def __init__(self) -> None:
        self.calls: t.List[t.Tuple[str, t.Dict[str, t.Any]]] = []
        self.images: t.Dict[str, t.Dict[str, t.Any]] = {}
        self.snapshots: t.Dict[str, t.Dict[str, t.Any]] = {}
        self.blocks: t.Dict[str, t.Dict[int, bytes]] = {}
        self.perms: t.Dict[str, t.List[t.Dict[str, str]]] = {}
        self.tasks: t.Dict[str, t.Dict[str, t.Any]] = {}
        self.fail: t.Dict[str, BaseException] = {}      # operation -> exception raised (once per entry below)
        self.fail_always: t.Set[str] = set()
        self.snapshot_state = 'completed'
        self.counter = 0

    def _id(self, prefix: str) -> str:
        self.counter += 1
        return '%s-%017x' % (prefix, self.counter)

    def _record(self, op: str, kwargs: t.Dict[str, t.Any]) -> None:
        self.calls.append((op, kwargs))
        if op in self.fail:
            exc = self.fail[op]
            if op not in self.fail_always:
                del self.fail[op]
            raise exc

    def ops(self) -> t.List[str]:
        return [op for op, _unused in self.calls]

    @staticmethod
    def _match(item: t.Dict[str, t.Any], filters: t.Sequence[t.Dict[str, t.Any]], names: t.Dict[str, str]) -> bool:
        for flt in filters:
            name = flt['Name']
            if name.startswith('tag:'):
                value = tags_of(item.get('Tags') or []).get(name[4:])
            else:
                value = item.get(names[name])
            if value not in flt['Values']:
                return False
        return True

    # EBS direct APIs
    def start_snapshot(self, **kw: t.Any) -> t.Dict[str, t.Any]:
        self._record('StartSnapshot', kw)
        snapshot_id = self._id('snap')
        self.snapshots[snapshot_id] = dict(SnapshotId=snapshot_id, State='pending', VolumeSize=kw['VolumeSize'],
                                           Tags=list(kw.get('Tags') or []), StartTime='2024-01-01T00:00:%02d' % self.counter)
        self.blocks[snapshot_id] = {}
        return {'SnapshotId': snapshot_id, 'Status': 'pending'}

    def put_snapshot_block(self, **kw: t.Any) -> t.Dict[str, t.Any]:
        self._record('PutSnapshotBlock', kw)
        assert len(kw['BlockData']) == kw['DataLength'] == BLOCK_SIZE
        assert kw['Checksum'] == base64.b64encode(hashlib.sha256(kw['BlockData']).digest()).decode()
        assert kw['ChecksumAlgorithm'] == 'SHA256'
        self.blocks[kw['SnapshotId']][kw['BlockIndex']] = kw['BlockData']
        return {}

    def complete_snapshot(self, **kw: t.Any) -> t.Dict[str, t.Any]:
        self._record('CompleteSnapshot', kw)
        assert kw['ChangedBlocksCount'] == len(self.blocks[kw['SnapshotId']])
        self.snapshots[kw['SnapshotId']]['State'] = self.snapshot_state
        return {'Status': 'completed'}

    # EC2
    def describe_snapshots(self, **kw: t.Any) -> t.Dict[str, t.Any]:
        self._record('DescribeSnapshots', kw)
        if 'SnapshotIds' in kw:
            if any(sid not in self.snapshots for sid in kw['SnapshotIds']):
                raise client_error('InvalidSnapshot.NotFound')
            return {'Snapshots': [self.snapshots[sid] for sid in kw['SnapshotIds']]}
        return {'Snapshots': [snap for snap in self.snapshots.values()
                              if self._match(snap, kw.get('Filters') or [], {'snapshot-id': 'SnapshotId'})]}

    def delete_snapshot(self, **kw: t.Any) -> t.Dict[str, t.Any]:
        self._record('DeleteSnapshot', kw)
        if kw['SnapshotId'] not in self.snapshots:
            raise client_error('InvalidSnapshot.NotFound')
        del self.snapshots[kw['SnapshotId']]
        return {}

    def describe_images(self, **kw: t.Any) -> t.Dict[str, t.Any]:
        self._record('DescribeImages', kw)
        if 'ImageIds' in kw:
            return {'Images': [self.images[iid] for iid in kw['ImageIds'] if iid in self.images]}
        return {'Images': [image for image in self.images.values()
                           if self._match(image, kw.get('Filters') or [], {'name': 'Name'})]}

    def register_image(self, **kw: t.Any) -> t.Dict[str, t.Any]:
        self._record('RegisterImage', kw)
        if any(image['Name'] == kw['Name'] for image in self.images.values()):
            raise client_error('InvalidAMIName.Duplicate')
        image_id = self._id('ami')
        self.images[image_id] = dict(ImageId=image_id, Name=kw['Name'], State='available',
                                     CreationDate='2024-01-01T00:00:%02d.000Z' % self.counter,
                                     BlockDeviceMappings=kw['BlockDeviceMappings'], RootDeviceName=kw['RootDeviceName'],
                                     Tags=list(kw['TagSpecifications'][0]['Tags']))
        self.perms[image_id] = []
        return {'ImageId': image_id}

    def deregister_image(self, **kw: t.Any) -> t.Dict[str, t.Any]:
        self._record('DeregisterImage', kw)
        del self.images[kw['ImageId']]
        return {}

    def create_tags(self, **kw: t.Any) -> t.Dict[str, t.Any]:
        self._record('CreateTags', kw)
        for resource in kw['Resources']:
            item = self.images.get(resource) or self.snapshots[resource]
            merged = tags_of(item['Tags'])
            merged.update(tags_of(kw['Tags']))
            item['Tags'] = [{'Key': k, 'Value': v} for k, v in merged.items()]
        return {}

    def describe_image_attribute(self, **kw: t.Any) -> t.Dict[str, t.Any]:
        self._record('DescribeImageAttribute', kw)
        return {'LaunchPermissions': list(self.perms[kw['ImageId']])}

    def modify_image_attribute(self, **kw: t.Any) -> t.Dict[str, t.Any]:
        self._record('ModifyImageAttribute', kw)
        perms = self.perms[kw['ImageId']]
        perms.extend(kw['LaunchPermission'].get('Add') or [])
        for perm in kw['LaunchPermission'].get('Remove') or []:
            perms.remove(perm)
        return {}

    def import_snapshot(self, **kw: t.Any) -> t.Dict[str, t.Any]:
        self._record('ImportSnapshot', kw)
        task_id = self._id('import-snap')
        self.tasks[task_id] = dict(ImportTaskId=task_id, SnapshotTaskDetail={'Status': 'active'}, polls=0, kw=kw)
        return {'ImportTaskId': task_id}

    def describe_import_snapshot_tasks(self, **kw: t.Any) -> t.Dict[str, t.Any]:
        self._record('DescribeImportSnapshotTasks', kw)
        task = self.tasks[kw['ImportTaskIds'][0]]
        task['polls'] += 1
        if task['polls'] >= 2 and task['SnapshotTaskDetail']['Status'] == 'active':
            snapshot_id = self._id('snap')
            self.snapshots[snapshot_id] = dict(SnapshotId=snapshot_id, State='completed', VolumeSize=1, Tags=[])
            task['SnapshotTaskDetail'] = {'Status': 'completed', 'SnapshotId': snapshot_id}
        return {'ImportSnapshotTasks': [{'ImportTaskId': task['ImportTaskId'],
                                         'SnapshotTaskDetail': dict(task['SnapshotTaskDetail'])}]}

    def cancel_import_task(self, **kw: t.Any) -> t.Dict[str, t.Any]:
        self._record('CancelImportTask', kw)
        return {}


class FakeS3:
    def __init__(self) -> None:
        self.objects: t.Dict[str, bytes] = {}
        self.deleted: t.List[str] = []

    def delete_object(self, Bucket: str, Key: str) -> t.Dict[str, t.Any]:  # pylint: disable=invalid-name
        self.deleted.append('%s/%s' % (Bucket, Key))
        self.objects.pop('%s/%s' % (Bucket, Key), None)
        return {}


class Slept:
    def __init__(self) -> None:
        self.pauses: t.List[float] = []

    def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)


def make(fake: t.Optional[FakeAws] = None, warnings: t.Optional[t.List[str]] = None,
         **kwargs: t.Any) -> t.Tuple[AwsAmiBackend, FakeAws]:
    fake = fake or FakeAws()
    options = {'aws_ami': kwargs.pop('aws_ami', None), 's3': kwargs.pop('s3', None)}
    request = Request(target='aws_ami', credentials=dict(CREDS, **kwargs.pop('credentials', {})), options=options,
                      **kwargs)
    slept = Slept()
    backend = AwsAmiBackend(request, session_factory=lambda req, retry: Session(req, retry, sleep=slept),
                            warn=(warnings.append if warnings is not None else None))
    backend._clients = {'ec2': fake, 'ebs': fake}   # pylint: disable=protected-access
    return backend, fake


# --- magic bytes, sizes -----------------------------------------------------------------------------------------

@pytest.mark.parametrize('head, what', [
    (b'QFI\xfb\x00\x00\x00\x03', 'a qcow2 image'),
    (b'conectix\x00\x00\x00\x02', 'a dynamic VHD image'),
    (b'vhdxfile', 'a VHDX image'),
    (b'KDMV\x01\x00\x00\x00', 'a VMDK image'),
    (b'\xfd7zXZ\x00\x00', 'xz-compressed'),
    (b'\x28\xb5\x2f\xfd\x04', 'zstd-compressed'),
    (b'BZh91AY&SY', 'bzip2-compressed'),
    (b'PK\x03\x04', 'a zip archive'),
])
def test_not_raw_by_magic(tmp_path: t.Any, head: bytes, what: str) -> None:
    path = write_raw(str(tmp_path / 'disk'), size=MIB, payload=[(0, head)])
    assert not_raw_reason(path) == what


def test_not_raw_gzip_tar_and_fixed_vhd(tmp_path: t.Any) -> None:
    gz = str(tmp_path / 'disk.raw.gz')
    with gzip.open(gz, 'wb') as handle:
        handle.write(bytes(MIB))
    assert not_raw_reason(gz) == 'gzip-compressed'
    tar = write_raw(str(tmp_path / 'disk.tar'), size=10240, payload=[(257, b'ustar\x0000')])
    assert 'tar archive' in t.cast(str, not_raw_reason(tar))
    vhd = write_raw(str(tmp_path / 'disk.vhd'), size=MIB + 512, payload=[(MIB, b'conectix')])
    assert 'fixed VHD' in t.cast(str, not_raw_reason(vhd))


def test_raw_images_pass(tmp_path: t.Any) -> None:
    assert not_raw_reason(write_raw(str(tmp_path / 'zeros.raw'), size=MIB, payload=[])) is None
    mbr = b'\xeb\x63\x90' + os.urandom(500) + b'\x55\xaa'
    assert not_raw_reason(write_raw(str(tmp_path / 'mbr.raw'), size=MIB, payload=[(0, mbr)])) is None
    # "BZh" alone, without the block magic, is not bzip2
    assert not_raw_reason(write_raw(str(tmp_path / 'bzh.raw'), size=MIB, payload=[(0, b'BZh9 not bzip')])) is None


def test_volume_gib() -> None:
    gib = 1024 ** 3
    assert volume_gib(1, None) == 1
    assert volume_gib(gib, None) == 1
    assert volume_gib(gib + 1, None) == 2
    assert volume_gib(gib + 1, 8) == 8
    with pytest.raises(InvalidInput, match=r'^aws_ami.volume_size: 1 GiB is smaller than src .* give at least 2'):
        volume_gib(gib + 1, 1)


# --- option checks -------------------------------------------------------------------------------------------------

def test_check_refuses_qcow2_with_what_to_do(tmp_path: t.Any) -> None:
    src = write_raw(str(tmp_path / 'disk.qcow2'), payload=[(0, b'QFI\xfb')])
    backend, fake = make(name='img-1', src=src)
    with pytest.raises(InvalidInput, match=r'^src: .*disk.qcow2 is a qcow2 image, not a raw disk image.*add a raw output'):
        backend.run()
    assert not fake.calls


def test_check_region_required(tmp_path: t.Any, monkeypatch: t.Any) -> None:
    for name in ('AWS_REGION', 'AWS_DEFAULT_REGION', 'AWS_PROFILE'):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv('AWS_CONFIG_FILE', str(tmp_path / 'none'))
    backend, _unused = make(name='img-1', src=write_raw(str(tmp_path / 'disk.raw')), credentials={'aws_region': None})
    with pytest.raises(InvalidInput, match=r'^aws_region: .*AWS_REGION'):
        backend.run()


@pytest.mark.parametrize('kwargs, message', [
    (dict(aws_ami={'share_with': ['12345']}), r"^aws_ami.share_with: '12345' is not an AWS account id"),
    (dict(aws_ami={'root_device_name': 'xvda'}), r'^aws_ami.root_device_name: '),
    (dict(aws_ami={'volume_size': 0}), r'^aws_ami.volume_size: 0 GiB is smaller'),
    (dict(aws_ami={'volume_size': 70000}), r'^aws_ami.volume_size: 70000 GiB is more than'),
    (dict(aws_ami={'method': 'import_snapshot'}), r'^s3.bucket: aws_ami.method=import_snapshot'),
    (dict(name='a*b'), r"^name: 'a\*b' is not an AMI name"),
    (dict(name='ab'), r"^name: 'ab' is not an AMI name"),
    (dict(tags={'aws:owner': 'x'}), r"^tags: 'aws:owner' cannot be an EC2 tag"),
    (dict(tags={'osimage-sha256': 'x'}), r'^tags: osimage-sha256 is set by the module'),
    (dict(description='d' * 256), r'^description: '),
    (dict(credentials={'aws_secret_access_key': None}), r'^aws_access_key_id, aws_secret_access_key: give both'),
])
def test_check_options(tmp_path: t.Any, kwargs: t.Dict[str, t.Any], message: str) -> None:
    kwargs.setdefault('name', 'img-1')
    backend, fake = make(src=write_raw(str(tmp_path / 'disk.raw')), **kwargs)
    with pytest.raises(InvalidInput, match=message):
        backend.run()
    assert not fake.calls


def test_options_defaults_and_given() -> None:
    backend, _unused = make(name='img-1', state='absent', aws_ami={'boot_mode': 'uefi', 'volume_size': None})
    assert backend.opts['boot_mode'] == 'uefi'
    assert backend.opts['method'] == 'ebs_direct'
    assert backend.opts['share_with'] == []
    assert backend.opts['volume_size'] is None


# --- retries and errors ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('exc, retry', [
    (client_error('Throttling'), True),
    (client_error('RequestLimitExceeded', 503), True),
    (client_error('InternalServerException', 500), True),
    (client_error('SomethingNew', 502), True),
    (client_error('ThrottlingException', 429), True),
    (client_error('AuthFailure', 401), False),
    (client_error('UnauthorizedOperation', 403), False),
    (client_error('InvalidParameterValue', 400), False),
    (client_error('ValidationException', 400), False),
    (EndpointConnectionError(endpoint_url='http://x'), True),
    (ConnectionClosedError(endpoint_url='http://x'), True),
    (ConnectionResetError(), True),
    (ValueError('no'), False),
])
def test_is_retryable(exc: BaseException, retry: bool) -> None:
    backend, _unused = make(name='img-1', state='absent')
    assert backend.is_retryable(exc) is retry


def test_translate_credentials_errors() -> None:
    backend, _unused = make(name='img-1', state='absent')
    error = backend.translate('DescribeImages', client_error('AuthFailure', 401, 'AWS was not able to validate'))
    assert isinstance(error, CredentialsError)
    assert error.msg.startswith('DescribeImages: AWS did not accept the credentials (AuthFailure: ')
    assert 'aws_access_key_id' in error.msg and 'AWS_ACCESS_KEY_ID' in error.msg and 'AWS_PROFILE' in error.msg
    # The EBS direct APIs answer an unknown key with a bare 403
    assert isinstance(backend.translate('StartSnapshot', client_error('403', 403)), CredentialsError)
    denied = backend.translate('RegisterImage', client_error('UnauthorizedOperation', 403, 'nope'))
    assert isinstance(denied, CredentialsError) and 'not allowed' in denied.msg
    missing = backend.translate('DescribeImages', NoCredentialsError())
    assert isinstance(missing, CredentialsError) and 'aws_profile (AWS_PROFILE)' in missing.msg
    other = backend.translate('RegisterImage', client_error('InvalidParameterValue', 400, 'bad boot mode'))
    assert type(other) is CloudError  # pylint: disable=unidiomatic-typecheck
    assert other.msg == 'RegisterImage failed: InvalidParameterValue: bad boot mode'
    assert other.context['code'] == 'InvalidParameterValue'


def test_call_retries_then_translates() -> None:
    backend, _unused = make(name='img-1', state='absent', retries=2)
    attempts = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise client_error('RequestLimitExceeded', 503)
        return 'ok'

    assert backend.call('Flaky', flaky) == 'ok'
    assert backend.session.retried == 2

    def denied() -> None:
        attempts.append(1)
        raise client_error('AuthFailure', 401)

    attempts.clear()
    with pytest.raises(CredentialsError):
        backend.call('Denied', denied)
    assert len(attempts) == 1


# --- ebs_direct ----------------------------------------------------------------------------------------------------

def test_first_upload_skips_zero_blocks_and_pads_the_last(tmp_path: t.Any) -> None:
    size = 3 * MIB + 100
    src = write_raw(str(tmp_path / 'disk.raw'), size=size,
                    payload=[(0, b'boot'), (2 * MIB + 5, b'data'), (3 * MIB + 99, b'e')])
    digest = digest_of(src)
    backend, fake = make(name='img-1', src=src, family='fam', description='my image', tags={'team': 'os'},
                         aws_ami={'share_with': ['111122223333'], 'boot_mode': 'uefi', 'imds_support': 'v2.0'})
    result = backend.run()
    assert result['changed'] is True and result['resumed'] is False
    assert result['sha256'] == digest
    snapshot_id = result['details']['snapshot_id']
    assert sorted(fake.blocks[snapshot_id]) == [0, 4, 6]
    assert fake.blocks[snapshot_id][6] == b'\x00' * 99 + b'e' + bytes(BLOCK_SIZE - 100)
    assert result['progress']['bytes_sent'] == 2 * BLOCK_SIZE + 100
    assert result['progress']['bytes_skipped'] == size - (2 * BLOCK_SIZE + 100)
    start = dict(fake.calls)['StartSnapshot']
    assert start['VolumeSize'] == 1 and start['Description'] == 'my image'
    assert tags_of(start['Tags']) == {'osimage-sha256': digest, 'osimage-name': 'img-1', 'osimage-family': 'fam',
                                      'team': 'os'}
    assert len(start['ClientToken']) == 64
    register = dict(fake.calls)['RegisterImage']
    assert register['Name'] == 'img-1' and register['BootMode'] == 'uefi' and register['ImdsSupport'] == 'v2.0'
    assert register['VirtualizationType'] == 'hvm' and register['EnaSupport'] is True
    assert register['BlockDeviceMappings'] == [{'DeviceName': '/dev/xvda', 'Ebs': {
        'SnapshotId': snapshot_id, 'VolumeType': 'gp3', 'DeleteOnTermination': True}}]
    assert tags_of(register['TagSpecifications'][0]['Tags']) == {'osimage-sha256': digest, 'osimage-family': 'fam',
                                                                 'team': 'os'}
    assert fake.perms[result['id']] == [{'UserId': '111122223333'}]
    # the digest is verified before CompleteSnapshot, and the snapshot waited for before RegisterImage
    ops = fake.ops()
    assert ops.index('CompleteSnapshot') < ops.index('RegisterImage')
    assert 'DeleteSnapshot' not in ops


def test_client_token_is_stable_in_a_run_and_new_in_the_next() -> None:
    one, _unused = make(name='img-1', state='absent')
    two, _unused = make(name='img-1', state='absent')
    assert one.token('d' * 64, 'StartSnapshot') == one.token('d' * 64, 'StartSnapshot')
    assert one.token('d' * 64, 'StartSnapshot') != two.token('d' * 64, 'StartSnapshot')
    assert one.token('d' * 64, 'StartSnapshot') != one.token('e' * 64, 'StartSnapshot')


def test_same_digest_is_unchanged_and_sends_nothing(tmp_path: t.Any) -> None:
    src = write_raw(str(tmp_path / 'disk.raw'))
    backend, fake = make(name='img-1', src=src, sha256=digest_of(src))
    first = backend.run()
    fake.calls.clear()
    again, _unused = make(fake, name='img-1', src=src, sha256=digest_of(src))
    result = again.run()
    assert result['changed'] is False and result['id'] == first['id']
    assert result['details']['snapshot_id'] == first['details']['snapshot_id']
    assert result['progress']['bytes_sent'] == 0
    assert not {'StartSnapshot', 'PutSnapshotBlock', 'RegisterImage', 'CreateTags',
                'ModifyImageAttribute'} & set(fake.ops())


def test_same_digest_converges_tags_and_sharing(tmp_path: t.Any) -> None:
    src = write_raw(str(tmp_path / 'disk.raw'))
    # a public image, then runs that want a tag more and the image private
    first, fake = make(name='img-1', src=src, aws_ami={'public': True})
    image_id = first.run()['id']
    assert fake.perms[image_id] == [{'Group': 'all'}]
    fake.calls.clear()
    check, _unused = make(fake, name='img-1', src=src, tags={'stage': 'gold'}, check_mode=True)
    assert check.run()['changed'] is True
    assert not {'CreateTags', 'ModifyImageAttribute'} & set(fake.ops())
    assert {'Group': 'all'} in fake.perms[image_id]
    real, _unused = make(fake, name='img-1', src=src, tags={'stage': 'gold'})
    result = real.run()
    assert result['changed'] is True and result['id'] == image_id
    assert tags_of(fake.images[image_id]['Tags'])['stage'] == 'gold'
    assert fake.perms[image_id] == []
    assert make(fake, name='img-1', src=src, tags={'stage': 'gold'})[0].run()['changed'] is False


def test_other_digest_is_a_conflict_unless_force(tmp_path: t.Any) -> None:
    one = write_raw(str(tmp_path / 'one.raw'))
    two = write_raw(str(tmp_path / 'two.raw'), payload=[(0, b'other')])
    first, fake = make(name='img-1', src=one)
    old = first.run()
    with pytest.raises(Conflict, match=r'^name: the image img-1 \(%s\) exists with osimage-sha256 %s, not %s; '
                       r'set force: true' % (old['id'], digest_of(one), digest_of(two))):
        make(fake, name='img-1', src=two)[0].run()
    checked = make(fake, name='img-1', src=two, force=True, check_mode=True)[0].run()
    assert checked['changed'] is True and checked['details']['replaced'] == [old['id']]
    assert old['id'] in fake.images
    new = make(fake, name='img-1', src=two, force=True)[0].run()
    assert new['details']['replaced'] == [old['id']]
    assert list(fake.images) == [new['id']]
    assert list(fake.snapshots) == [new['details']['snapshot_id']]


def test_check_mode_changes_nothing(tmp_path: t.Any) -> None:
    backend, fake = make(name='img-1', src=write_raw(str(tmp_path / 'disk.raw')), check_mode=True)
    result = backend.run()
    assert result['changed'] is True and result['id'] is None
    assert set(fake.ops()) <= {'DescribeImages', 'DescribeSnapshots'}


def test_digest_mismatch_leaves_nothing_even_with_keep_partial(tmp_path: t.Any) -> None:
    src = write_raw(str(tmp_path / 'disk.raw'))
    backend, fake = make(name='img-1', src=src, sha256='0' * 64, keep_partial=True)
    with pytest.raises(DigestMismatch):
        backend.run()
    assert 'CompleteSnapshot' not in fake.ops() and 'RegisterImage' not in fake.ops()
    assert fake.snapshots == {} and fake.images == {}


def test_failed_upload_deletes_the_snapshot(tmp_path: t.Any) -> None:
    src = write_raw(str(tmp_path / 'disk.raw'))
    backend, fake = make(name='img-1', src=src, retries=1)
    fake.fail['PutSnapshotBlock'] = client_error('InternalServerException', 500)
    fake.fail_always.add('PutSnapshotBlock')
    with pytest.raises(CloudError, match=r'^PutSnapshotBlock snap-\w+ block \d+ failed: InternalServerException'):
        backend.run()
    assert 'CompleteSnapshot' not in fake.ops()
    assert fake.snapshots == {}


def test_failed_registration_with_keep_partial_keeps_the_snapshot_for_the_next_run(tmp_path: t.Any) -> None:
    src = write_raw(str(tmp_path / 'disk.raw'))
    backend, fake = make(name='img-1', src=src, keep_partial=True)
    fake.fail['RegisterImage'] = client_error('InvalidParameterValue', 400, 'no')
    with pytest.raises(CloudError, match='^RegisterImage img-1 failed'):
        backend.run()
    [kept] = list(fake.snapshots)
    fake.calls.clear()
    result = make(fake, name='img-1', src=src)[0].run()
    assert result['resumed'] is True and result['details']['snapshot_id'] == kept
    assert result['progress']['bytes_sent'] == 0
    assert 'StartSnapshot' not in fake.ops()


def test_pending_snapshot_of_a_killed_run_is_written_again(tmp_path: t.Any) -> None:
    src = write_raw(str(tmp_path / 'disk.raw'))
    fake = FakeAws()
    fake.snapshot_state = 'pending'
    backend, fake = make(fake, name='img-1', src=src, keep_partial=True, wait_timeout=1)
    backend.session.clock = iter(range(0, 1000, 10)).__next__   # every wait times out at once
    with pytest.raises(Exception, match='did not happen within wait_timeout'):
        backend.run()
    [pending] = list(fake.snapshots)
    fake.snapshot_state = 'completed'
    fake.calls.clear()
    result = make(fake, name='img-1', src=src)[0].run()
    assert result['resumed'] is True and result['details']['snapshot_id'] == pending
    assert 'StartSnapshot' not in fake.ops() and 'PutSnapshotBlock' in fake.ops()


def test_snapshot_error_ends_the_wait_at_once(tmp_path: t.Any) -> None:
    fake = FakeAws()
    fake.snapshot_state = 'error'
    backend, fake = make(fake, name='img-1', src=write_raw(str(tmp_path / 'disk.raw')))
    with pytest.raises(CloudError, match=r'^snapshot snap-\w+ is error, not completed'):
        backend.run()
    assert fake.snapshots == {}


# --- import_snapshot ----------------------------------------------------------------------------------------------

class FakeS3Module:
    def __init__(self, s3: FakeS3) -> None:
        self.s3 = s3
        self.put: t.List[t.Tuple[str, str, str, t.Dict[str, str]]] = []

    def s3_client(self, request: Request, endpoint_url: t.Optional[str]) -> FakeS3:
        assert endpoint_url == 'http://s3.test'
        return self.s3

    def put_artifact(self, backend: t.Any, client: FakeS3, bucket: str, key: str, path: str,
                     metadata: t.Dict[str, str]) -> t.Dict[str, t.Any]:
        self.put.append((bucket, key, path, metadata))
        with open(path, 'rb') as handle:
            client.objects['%s/%s' % (bucket, key)] = handle.read()
        backend.session.progress.sent(os.path.getsize(path))
        return {}


@pytest.fixture
def s3_module(monkeypatch: t.Any) -> FakeS3Module:
    from ansible_collections.osimage.builder.plugins.module_utils import _cloud_s3
    fake = FakeS3Module(FakeS3())
    monkeypatch.setattr(_cloud_s3, 's3_client', fake.s3_client, raising=False)
    monkeypatch.setattr(_cloud_s3, 'put_artifact', fake.put_artifact, raising=False)
    return fake


def test_import_snapshot(tmp_path: t.Any, s3_module: FakeS3Module) -> None:
    src = write_raw(str(tmp_path / 'disk.raw'))
    backend, fake = make(name='img-1', src=src, family='fam', aws_ami={'method': 'import_snapshot'},
                         s3={'bucket': 'stage', 'endpoint_url': 'http://s3.test', 'key': None})
    result = backend.run()
    assert s3_module.put == [('stage', 'img-1.raw', src, {'osimage-sha256': digest_of(src)})]
    imported = dict(fake.calls)['ImportSnapshot']
    assert imported['DiskContainer'] == {'Format': 'RAW', 'UserBucket': {'S3Bucket': 'stage', 'S3Key': 'img-1.raw'},
                                         'Description': 'img-1'}
    snapshot = fake.snapshots[result['details']['snapshot_id']]
    assert tags_of(snapshot['Tags'])['osimage-sha256'] == digest_of(src)
    assert s3_module.s3.deleted == ['stage/img-1.raw'] and s3_module.s3.objects == {}
    assert result['changed'] is True and result['details']['method'] == 'import_snapshot'


def test_import_failure_says_why_and_cleans_up(tmp_path: t.Any, s3_module: FakeS3Module) -> None:
    src = write_raw(str(tmp_path / 'disk.raw'))
    backend, fake = make(name='img-1', src=src, aws_ami={'method': 'import_snapshot'},
                         s3={'bucket': 'stage', 'endpoint_url': 'http://s3.test', 'key': 'k.raw'})
    original = fake.describe_import_snapshot_tasks

    def deleted(**kw: t.Any) -> t.Dict[str, t.Any]:
        original(**kw)
        return {'ImportSnapshotTasks': [{'SnapshotTaskDetail': {
            'Status': 'deleted', 'StatusMessage': 'ClientError: Disk validation failed'}}]}

    fake.describe_import_snapshot_tasks = deleted  # type: ignore[assignment]
    with pytest.raises(CloudError, match=r'^import task import-snap-\w+ ended as deleted: ClientError: Disk validation'):
        backend.run()
    assert fake.ops().count('DescribeImportSnapshotTasks') == 1
    assert 'CancelImportTask' not in fake.ops()
    assert s3_module.s3.deleted == ['stage/k.raw']


# --- absent and pruned --------------------------------------------------------------------------------------------

def test_absent_deletes_only_tagged_snapshots(tmp_path: t.Any) -> None:
    src = write_raw(str(tmp_path / 'disk.raw'))
    first, fake = make(name='img-1', src=src)
    made = first.run()
    # a snapshot of someone else referenced by the image too: not ours, not deleted
    fake.snapshots['snap-foreign'] = dict(SnapshotId='snap-foreign', State='completed', VolumeSize=1, Tags=[])
    fake.images[made['id']]['BlockDeviceMappings'].append({'DeviceName': '/dev/xvdb',
                                                           'Ebs': {'SnapshotId': 'snap-foreign'}})
    checked = make(fake, name='img-1', state='absent', check_mode=True)[0].run()
    assert checked['changed'] is True
    assert checked['deleted'][0]['snapshots'] == [made['details']['snapshot_id']]
    assert made['id'] in fake.images
    gone = make(fake, name='img-1', state='absent')[0].run()
    assert gone['deleted'][0]['id'] == made['id']
    assert fake.images == {} and list(fake.snapshots) == ['snap-foreign']
    assert make(fake, name='img-1', state='absent')[0].run() == {'changed': False, 'deleted': [], 'target': 'aws_ami'}


def test_pruned_keeps_the_newest(tmp_path: t.Any) -> None:
    fake = FakeAws()
    ids = []
    for index in range(3):
        src = write_raw(str(tmp_path / ('%d.raw' % index)), payload=[(0, b'image %d' % index)])
        ids.append(make(fake, name='img-%d' % index, src=src, family='fam')[0].run()['id'])
    make(fake, name='other', src=src, family='other')[0].run()
    checked = make(fake, name='fam', state='pruned', family='fam', keep_newest=2, check_mode=True)[0].run()
    assert [entry['id'] for entry in checked['deleted']] == [ids[0]]
    assert [entry['id'] for entry in checked['kept']] == [ids[2], ids[1]]
    assert len(fake.images) == 4
    pruned = make(fake, name='fam', state='pruned', family='fam', keep_newest=2)[0].run()
    assert pruned['changed'] is True and [entry['id'] for entry in pruned['deleted']] == [ids[0]]
    assert ids[0] not in fake.images and len(fake.images) == 3
    assert not any(tags_of(snap['Tags']).get('osimage-name') == 'img-0' for snap in fake.snapshots.values())


def test_module_imports_without_boto3() -> None:
    # boto3 is loaded by the methods only: the module's import sanity test runs without it
    source = open(_cloud_aws.__file__, encoding='utf-8').read()
    assert 'import boto3' not in source and 'from botocore' not in source
