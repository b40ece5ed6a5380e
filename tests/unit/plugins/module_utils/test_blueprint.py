# -*- coding: utf-8 -*-
from __future__ import annotations

import copy
import glob

import pytest
import yaml

from ansible_collections.osimage.builder.plugins.module_utils import _blueprint
from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput

MINIMAL = {'name': 'debian-12', 'os': 'debian-12'}
KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsYpQ9k2m3ZxH8sS3TtNfO2K0Jg2a5yv8b8f8c8d8e8 me@laptop'


def fake_hash(password, scheme):
    return '$6$fake$' + scheme


def check(**changes):
    raw = copy.deepcopy(MINIMAL)
    raw.update(changes)
    return _blueprint.normalise(raw, fake_hash)


def test_defaults_are_filled_in():
    bp = check()
    assert bp['version'] == '1.0.0'
    assert bp['source'] == {'type': 'bootstrap', 'mirror': None, 'security_mirror': None, 'components': ['main'],
                            'proxy': None, 'suite': 'bookworm', 'sets': None, 'signify_key': None}
    assert bp['vm'] == {'cpus': 2, 'memory': 2 * 1024 ** 3, 'disk_size': 4 * 1024 ** 3, 'firmware': 'bios'}
    assert bp['outputs'] == [{'format': 'qcow2', 'compress': None, 'qcow2_compression': 'none'}]
    assert bp['hostname'] == 'debian-12'
    assert bp['seed'] == 'debian-12-1.0.0'


def test_shipped_blueprint_is_valid():
    with open('blueprints/debian-12.yml', encoding='utf-8') as handle:
        bp = _blueprint.normalise(yaml.safe_load(handle)['blueprint'], fake_hash)
    assert bp['os'] == 'debian-12'
    assert bp['outputs'][0]['qcow2_compression'] == 'zlib'


def test_plain_password_is_hashed_and_dropped():
    bp = check(users=[{'name': 'admin', 'password': 'hunter2', 'ssh_keys': [KEY], 'sudo': 'yes'}])
    user = bp['users'][0]
    assert 'password' not in user
    assert user['password_hash'] == '$6$fake$sha512_crypt'
    assert user['sudo'] is True
    assert 'hunter2' not in str(bp)
    assert _blueprint.redacted(bp)['users'][0]['password_hash'] == '<redacted>'


def test_redaction_and_relative_paths():
    bp = _blueprint.normalise(dict(MINIMAL, files=[{'path': '/etc/x', 'content': 'secret'}, {'path': '/etc/y', 'src': 'y.txt'}],
                                   provision=[{'tasks': 'extra.yml'}], source={'proxy': 'http://u:pw@proxy:3128/'}),
                              fake_hash, '/home/me/images')
    assert bp['provision'][0]['tasks'] == '/home/me/images/extra.yml'
    assert bp['files'][1]['src'] == '/home/me/images/y.txt'
    shown = _blueprint.redacted(bp)
    assert shown['files'][0]['content'].startswith('sha256:') and 'secret' not in str(shown)
    assert shown['source']['proxy'] == 'http://proxy:3128/'


def test_digest_is_stable():
    assert _blueprint.digest(check()) == _blueprint.digest(check())
    assert _blueprint.digest(check()) != _blueprint.digest(check(hostname='other'))


@pytest.mark.parametrize('changes, message', [
    ({'pacakges': ['curl']}, "pacakges: unknown key (did you mean 'packages'?)"),
    ({'vm': {'memroy': '2G'}}, "vm.memroy: unknown key (did you mean 'memory'?)"),
    ({'vm': {'disk_size': '10XB'}}, "vm.disk_size: '10XB' has an unknown unit 'XB'"),
    ({'vm': {'cpus': 'two'}}, "vm.cpus: expected an integer, got str 'two'"),
    ({'vm': {'cpus': 0}}, 'vm.cpus: 0 is out of range'),
    ({'vm': {'memory': '64M'}}, 'vm.memory: 67108864 bytes is too little'),
    ({'vm': {'disk_size': '1G'}}, 'vm.disk_size: 1073741824 bytes is too small'),
    ({'vm': {'firmware': 'coreboot'}}, "vm.firmware: 'coreboot' is not a firmware"),
    ({'os': 'debain-12'}, "os: 'debain-12' is not a supported operating system (did you mean 'debian-12'?)"),
    ({'os': 'windows-11'}, "os: 'windows-11' is not a supported operating system; choose one of debian-12"),
    ({'source': {'type': 'installer'}}, "source.type: debian-12 cannot be built from 'installer'"),
    ({'source': {'mirror': 'ftp.example.org/debian'}}, 'source.mirror: '),
    ({'hypervisor': 'vmm'}, 'hypervisor: debian-12 images are built on qemu, not vmm'),
    ({'disklabel': [{'mount': '/', 'size': '2G'}]}, 'disklabel: is an OpenBSD disklabel(8) template'),
    ({'users': [{'name': 'a', 'doas': True}]}, 'users[0].doas: debian-12 images use sudo'),
    ({'source': {'sets': ['bsd']}}, 'source.sets: only OpenBSD blueprints have install sets'),
    ({'users': [{'groups': ['sudo']}]}, 'users[0].name: is required'),
    ({'users': [{'name': 'Bad Name'}]}, "users[0].name: 'Bad Name' is not a valid user name"),
    ({'users': [{'name': 'a'}, {'name': 'a'}]}, "users[1].name: user 'a' is listed twice"),
    ({'users': [{'name': 'a', 'password': 'x', 'password_hash': '$6$x'}]}, 'users[0]: give password or password_hash'),
    ({'users': [{'name': 'a', 'ssh_keys': ['not a key']}]}, 'users[0].ssh_keys[0]: not an OpenSSH public key'),
    ({'users': 'admin'}, "users: expected a list of mappings, got str 'admin'"),
    ({'packages': 'curl'}, "packages: expected a list of strings"),
    ({'packages': ['Curl Tool']}, "packages[0]: 'Curl Tool' is not a package name"),
    ({'hostname': 'under_score'}, "hostname: 'under_score' is not a valid host name"),
    ({'timezone': 'Mars Base'}, "timezone: 'Mars Base' is not a time zone"),
    ({'locale': 'english'}, None),
    ({'services': {'enabled': ['ssh'], 'disabled': ['ssh']}}, 'services: ssh cannot be both enabled and disabled'),
    ({'files': [{'path': 'etc/motd', 'content': 'x'}]}, "files[0].path: 'etc/motd' must be an absolute path"),
    ({'files': [{'path': '/etc/motd'}]}, 'files[0]: give exactly one of content or src'),
    ({'files': [{'path': '/etc/motd', 'content': 'x', 'mode': 'rw'}]}, "files[0].mode: 'rw' is not an octal mode"),
    ({'provision': [{'vars': {}}]}, 'provision[0]: give exactly one of role or tasks'),
    ({'outputs': [{'format': 'iso'}]}, "outputs[0].format: 'iso' is not an output format"),
    ({'outputs': [{'format': 'raw', 'compress': True}]}, 'outputs[0].compress: expected a string, got bool'),
    ({'outputs': [{'format': 'raw', 'compress': 'bzip2'}]}, "outputs[0].compress: 'bzip2' is not a compression"),
    ({'outputs': [{'format': 'ova', 'compress': 'zstd'}]},
     'outputs[0].compress: ova images cannot be compressed with zstd; they can be: none'),
    ({'outputs': [{'format': 'raw', 'qcow2_compression': 'zlib'}]},
     'outputs[0].qcow2_compression: only qcow2 and box outputs hold a qcow2 disk'),
    ({'outputs': [{'format': 'raw'}, {'format': 'raw', 'compress': 'none'}]},
     'outputs[1]: raw with compress none makes the same file (.raw) as outputs[0]'),
    ({'source_date_epoch': -1}, 'source_date_epoch: -1 is not a number of seconds'),
    ({'outputs': []}, 'outputs: at least one output is needed'),
    ({'name': 'My Image'}, "name: 'My Image' must be lower-case"),
    ({'name': 'n' * 45}, 'name, version: together at most 48 characters'),
    ({'keyboard': 'us; rm -rf /'}, "keyboard: 'us; rm -rf /' is not an XKB layout"),
    ({'kernel_append': 'quiet"; reboot'}, 'kernel_append: '),
    ({'kernel_append': 'a\nb'}, 'kernel_append: '),
    ({'provision': [{'role': 'x', 'vars': {'ansible_port': 1}}]}, "provision[0].vars: 'ansible_port' is not a variable"),
    ({'users': [{'name': 'a', 'password': ['pw1']}]}, 'users[0].password: expected a string, got list (hidden)'),
])
def test_bad_input_names_the_field(changes, message):
    if message is None:  # "english" is a valid-looking locale name; the guest decides
        check(**changes)
        return
    with pytest.raises(InvalidInput) as caught:
        check(**changes)
    assert message in caught.value.msg


def test_missing_name_and_blueprint():
    with pytest.raises(InvalidInput, match='^name: is required$'):
        _blueprint.normalise({'os': 'debian-12'})
    with pytest.raises(InvalidInput, match='no blueprint was given'):
        _blueprint.normalise(None)


def test_argument_specs_document_the_same_keys():
    """The blueprint role's argument_specs and the Python schema must name the same fields."""
    with open('roles/blueprint/meta/argument_specs.yml', encoding='utf-8') as handle:
        spec = yaml.safe_load(handle)['argument_specs']['main']['options']['blueprint']['options']

    def keys(schema_spec, python_schema, where=''):
        assert set(schema_spec) == set(python_schema), where
        for key, (kind, _default, children) in python_schema.items():
            if children:
                keys(schema_spec[key]['options'], children, where + '.' + key)
    keys(spec, _blueprint.SCHEMA)


PUBLISH_BASE = {'name': 'debian-12', 'version': '1.0.0', 'os': 'debian-12',
                'outputs': [{'format': 'qcow2'}, {'format': 'raw'}, {'format': 'vhd'}, {'format': 'gce'},
                            {'format': 'vmdk', 'compress': 'zstd'}]}


def _published(entries, **extra):
    return _blueprint.normalise(dict(PUBLISH_BASE, publish=entries, **extra), hash_password=lambda p, s: 'x')['publish']


def test_publish_defaults_pick_the_output_each_target_takes():
    entries = _published([{'target': 's3', 's3': {'bucket': 'b'}}, {'target': 'aws_ami'},
                          {'target': 'azure', 'azure': {'container': 'c'}}, {'target': 'gce', 'gce': {'bucket': 'b'}},
                          {'target': 'openstack_glance'}])
    assert [e['format'] for e in entries] == ['qcow2', 'raw', 'vhd', 'gce', 'qcow2']
    assert [e['name'] for e in entries] == [None, 'debian-12-1.0.0', 'debian-12-1.0.0', 'debian-12-1-0-0',
                                            'debian-12-1.0.0']
    assert all(e['family'] == 'debian-12' for e in entries)


def test_gce_names_and_families_are_made_from_the_blueprint_in_its_alphabet():
    entry = _blueprint.normalise(dict(PUBLISH_BASE, name='debian_12.cloud', version='2.0',
                                      publish=[{'target': 'gce', 'gce': {'bucket': 'b'}}]),
                                 hash_password=lambda p, s: 'x')['publish'][0]
    assert (entry['name'], entry['family']) == ('debian-12-cloud-2-0', 'debian-12-cloud')


@pytest.mark.parametrize('entry, message', [
    ({'target': 's4'}, r"publish\[0\].target: 's4' is not a publish target"),
    ({'target': 's3'}, r'publish\[0\].s3.bucket: is required for target s3'),
    ({'target': 's3', 's3': {'bucket': 'b', 'concurency': 2}},
     r"publish\[0\].s3.concurency: unknown key \(did you mean 'concurrency'\?\)"),
    ({'target': 's3', 's3': {'bucket': 'b', 'concurrency': 'many'}}, r"publish\[0\].s3: argument 'concurrency'"),
    ({'target': 'aws_ami', 'aws_secret_access_key': 'x'},
     r'publish\[0\].aws_secret_access_key: credentials do not belong in a blueprint'),
    ({'target': 'aws_ami', 'aws_ami': {'method': 'import_snapshot'}},
     r'publish\[0\].s3.bucket: is required for target aws_ami with method import_snapshot'),
    ({'target': 'aws_ami', 'azure': {'container': 'c'}}, r'publish\[0\].azure: options of target azure in an entry'),
    ({'target': 'azure', 'azure': {'container': 'c'}, 'format': 'qcow2'},
     r'publish\[0\].format: target azure cannot take a qcow2 image; it takes vhd'),
    ({'target': 'aws_ami', 'format': 'vmdk'}, r'publish\[0\].format: target aws_ami cannot take a vmdk image'),
    ({'target': 'gce2'}, r"publish\[0\].target: 'gce2' is not a publish target"),
    ({'target': 'gce'}, r'publish\[0\].gce.bucket: is required for target gce'),
    ({'target': 'gce', 'gce': {'bucket': 'b'}, 'name': 'Debian-12'},
     r"publish\[0\].name: 'Debian-12' is not a Google Compute Engine image name"),
    ({'target': 'gce', 'gce': {'bucket': 'b'}, 'family': 'debian_12'},
     r"publish\[0\].family: 'debian_12' is not a Google Compute Engine image name"),
    ({'target': 'gce', 'gce': {'bucket': 'b'}, 'tags': {'Team': 'x'}},
     r'publish\[0\].tags.Team: Google Compute Engine label keys are'),
    ({'target': 'gce', 'gce': {'bucket': 'b'}, 'tags': {'team': 'Ops Team'}},
     r"publish\[0\].tags.team: 'Ops Team' is not a Google Compute Engine label value"),
    ({'target': 'gce', 'gce': {'bucket': 'b', 'architecture': 'arm'}}, r"publish\[0\].gce: value of architecture"),
    ({'target': 'gce', 'gce': {'bucket': 'b'}, 'format': 'raw'},
     r'publish\[0\].format: target gce cannot take a raw image; it takes gce'),
    ({'target': 'openstack_glance', 'format': 'vmdk'},
     r'publish\[0\].format: target openstack_glance needs the vmdk output uncompressed'),
    ({'target': 'openstack_glance', 'openstack_glance': {'visibilty': 'public'}},
     r"publish\[0\].openstack_glance.visibilty: unknown key \(did you mean 'visibility'\?\)"),
    ({'target': 'openstack_glance', 'openstack_auth': {'password': 'x'}},
     r'publish\[0\].openstack_auth: credentials do not belong in a blueprint'),
    ({'target': 's3', 's3': {'bucket': 'b'}, 'format': 'ova'}, r'publish\[0\].format: the build has no ova output'),
    ({'target': 'aws_ami', 'keep_newest': 0}, r'publish\[0\].keep_newest: 0 keeps nothing'),
    ({'target': 's3', 's3': {'bucket': 'b'}, 'tags': {'a': [1]}}, r'publish\[0\].tags.a: expected a string'),
    ({'target': 's3', 's3': {'bucket': 'b'}, 'bucket': 'b'}, r'publish\[0\].bucket: unknown key'),
])
def test_publish_entries_are_checked_with_the_blueprint(entry, message):
    with pytest.raises(InvalidInput, match=message):
        _published([entry])


def test_publish_needs_an_output_the_target_takes():
    with pytest.raises(InvalidInput, match=r'publish\[0\]: target aws_ami publishes a raw output, and outputs has '
                                           r'none; add \{format: raw\} to outputs'):
        _blueprint.normalise(dict(PUBLISH_BASE, outputs=[{'format': 'qcow2'}], publish=[{'target': 'aws_ami'}]),
                             hash_password=lambda p, s: 'x')


@pytest.mark.parametrize('path', sorted(glob.glob('blueprints/*.yml')))
def test_every_shipped_blueprint_is_valid(path):
    with open(path, encoding='utf-8') as handle:
        _blueprint.normalise(yaml.safe_load(handle)['blueprint'], fake_hash)


def test_cloud_blueprint_publishes_each_target_from_its_output():
    with open('blueprints/debian-12-cloud.yml', encoding='utf-8') as handle:
        bp = _blueprint.normalise(yaml.safe_load(handle)['blueprint'], fake_hash)
    assert [(e['target'], e['format'], e['name']) for e in bp['publish']] == [
        ('s3', 'qcow2', 'images/debian-12/debian-12-1.0.0.qcow2'), ('aws_ami', 'raw', 'debian-12-1.0.0'),
        ('azure', 'vhd', 'debian-12-1.0.0'), ('gce', 'gce', 'debian-12-1-0-0'),
        ('openstack_glance', 'qcow2', 'debian-12-1.0.0')]
