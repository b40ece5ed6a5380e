# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Blueprints: check every field, name the field in every error, normalise.

A blueprint is the ``blueprint`` mapping of a YAML vars file (so it can be given
with ``-e @file`` or as AWX extra vars). Every customisation that the chosen OS
and source cannot honour is an error here, before anything is started - never
silently dropped.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import typing as t

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.osimage.builder.plugins.module_utils._cloud import (
    CREDENTIAL_OPTIONS, DEFAULT_FORMATS, TARGET_FORMATS, TARGET_OPTIONS, TARGETS, check_image_name, check_tags,
    cloud_name, default_image_name)
from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput
from ansible_collections.osimage.builder.plugins.module_utils._formats import (
    COMPRESSIONS, FORMATS, QCOW2_COMPRESSIONS, extension)
from ansible_collections.osimage.builder.plugins.module_utils._sizes import parse_size

# os -> what it is built from and what it can do. Sources and outputs not listed
# for an OS are refused at validation time.
OS_TABLE: t.Dict[str, t.Dict[str, t.Any]] = {
    'debian-12': {
        'family': 'debian', 'suite': 'bookworm', 'sources': ['bootstrap'], 'default_source': 'bootstrap',
        'outputs': ['qcow2', 'raw', 'vmdk', 'vhd', 'vhdx', 'gce', 'box', 'ova'],
        'firmware': ['bios', 'uefi'], 'password_scheme': 'sha512_crypt', 'hypervisors': ['qemu'],
    },
}
# OpenBSD is installed by its own installer (autoinstall(8)) in a vmm VM; vmd's
# BIOS is SeaBIOS and a vmm VM has one vCPU (vmctl(8) always asks for one).
for _release in ('7.6', '7.7', '7.8'):
    OS_TABLE['openbsd-' + _release] = {
        'family': 'openbsd', 'release': _release, 'sources': ['installer'], 'default_source': 'installer',
        'outputs': ['qcow2', 'raw', 'vmdk', 'vhd', 'vhdx', 'ova'],
        'firmware': ['bios'], 'password_scheme': 'bcrypt', 'hypervisors': ['vmm'],
    }
FAMILY_DEFAULTS = {
    'debian': {'shell': '/bin/bash', 'group': 'root', 'cpus': 2},
    'openbsd': {'shell': '/bin/ksh', 'group': 'wheel', 'cpus': 1},
}
# The sets of an OpenBSD release (NN = release without the dot); siteNN.tgz is the build's own.
OPENBSD_SET_RE = re.compile(r'^(bsd|bsd\.mp|bsd\.rd|(base|comp|man|game|xbase|xshare|xfont|xserv)NN\.tgz)$')
OPENBSD_DEFAULT_SETS = ['bsd', 'bsd.mp', 'bsd.rd', 'baseNN.tgz', 'compNN.tgz', 'manNN.tgz']
DISKLABEL_SIZE_RE = re.compile(r'^(\d+(\.\d+)?[KMGT]?)(-(\d+(\.\d+)?[KMGT]?|\*))?$')
DISKLABEL_UNITS = {'K': 1024, 'M': 1024 ** 2, 'G': 1024 ** 3, 'T': 1024 ** 4}
# amd64 vmmvar.h VMM_MAX_VM_MEM_SIZE: what vmd gives one VM at most
VMM_MAX_MEMORY = 128 * 1024 ** 3

NAME_RE = re.compile(r'^[a-z0-9][a-z0-9._-]{0,62}$')
HOSTNAME_RE = re.compile(r'^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$')
USERNAME_RE = re.compile(r'^[a-z_][a-z0-9_-]{0,31}$')
TIMEZONE_RE = re.compile(r'^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$')
LOCALE_RE = re.compile(r'^[A-Za-z]{1,8}(_[A-Za-z]{2})?(\.[A-Za-z0-9-]+)?(@[a-z]+)?$')
PACKAGE_RE = re.compile(r'^[a-z0-9][a-z0-9+.-]*(=[A-Za-z0-9.+~:*-]+)?$')
SERVICE_RE = re.compile(r'^[A-Za-z0-9@_.:-]+$')
SSH_KEY_RE = re.compile(r'^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) [A-Za-z0-9+/=]+( .*)?$')
OUTPUT_FORMATS = list(FORMATS)

# field -> (type, default, children). type: str, int, bool, size, list:<type>, dict, list:dict.
Schema = t.Dict[str, t.Tuple[str, t.Any, t.Optional[t.Dict[str, t.Any]]]]

USER: Schema = {
    'name': ('str', None, None),
    'password': ('str', None, None),
    'password_hash': ('str', None, None),
    'ssh_keys': ('list:str', [], None),
    'groups': ('list:str', [], None),
    'sudo': ('bool', False, None),
    'doas': ('bool', False, None),
    'shell': ('str', None, None),
}
FILE: Schema = {
    'path': ('str', None, None),
    'content': ('str', None, None),
    'src': ('str', None, None),
    'mode': ('str', '0644', None),
    'owner': ('str', 'root', None),
    'group': ('str', None, None),
}
DISKLABEL: Schema = {
    'mount': ('str', None, None),
    'size': ('str', None, None),
    'percent': ('int', None, None),
}
PROVISION: Schema = {
    'role': ('str', None, None),
    'tasks': ('str', None, None),
    'vars': ('dict', {}, None),
}
OUTPUT: Schema = {
    'format': ('str', None, None),
    'compress': ('str', None, None),
    'qcow2_compression': ('str', 'none', None),
}
PUBLISH: Schema = {
    'target': ('str', None, None),
    'name': ('str', None, None),
    'format': ('str', None, None),
    'family': ('str', None, None),
    'keep_newest': ('int', None, None),
    'description': ('str', '', None),
    'tags': ('dict', {}, None),
    'force': ('bool', False, None),
    's3': ('dict', None, None),
    'aws_ami': ('dict', None, None),
    'azure': ('dict', None, None),
    'gce': ('dict', None, None),
    'openstack_glance': ('dict', None, None),
}
SCHEMA: Schema = {
    'name': ('str', None, None),
    'version': ('str', '1.0.0', None),
    'description': ('str', '', None),
    'os': ('str', None, None),
    'source': ('dict', {}, {
        'type': ('str', None, None),
        'mirror': ('str', None, None),
        'security_mirror': ('str', None, None),
        'components': ('list:str', ['main'], None),
        'proxy': ('str', None, None),
        'sets': ('list:str', None, None),
        'signify_key': ('str', None, None),
    }),
    'hypervisor': ('str', 'auto', None),
    'vm': ('dict', {}, {
        'cpus': ('int', None, None),
        'memory': ('size', '2G', None),
        'disk_size': ('size', '4G', None),
        'firmware': ('str', 'bios', None),
    }),
    'packages': ('list:str', [], None),
    'users': ('list:dict', [], USER),
    'hostname': ('str', None, None),
    'timezone': ('str', 'Etc/UTC', None),
    'locale': ('str', 'C.UTF-8', None),
    'keyboard': ('str', 'us', None),
    'services': ('dict', {}, {
        'enabled': ('list:str', [], None),
        'disabled': ('list:str', [], None),
    }),
    'kernel_append': ('str', '', None),
    'files': ('list:dict', [], FILE),
    'disklabel': ('list:dict', [], DISKLABEL),
    'provision': ('list:dict', [], PROVISION),
    'outputs': ('list:dict', [{'format': 'qcow2'}], OUTPUT),
    'publish': ('list:dict', [], PUBLISH),
    'seed': ('str', None, None),
    'source_date_epoch': ('int', None, None),
}
REQUIRED = {'': ['name', 'os'], 'users': ['name'], 'files': ['path'], 'outputs': ['format'], 'publish': ['target'],
            'disklabel': ['mount', 'size']}
TYPE_WORDS = {'str': 'a string', 'int': 'an integer', 'bool': 'true or false', 'size': 'a size such as "4G"',
              'dict': 'a mapping', 'list:str': 'a list of strings', 'list:dict': 'a list of mappings'}


def _did_you_mean(word: str, choices: t.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return ' (did you mean %r?)' % close[0] if close else ''


def _plain(value: t.Any) -> t.Any:
    """Ansible hands in its own str/dict/list subclasses; messages should show plain values."""
    for base in (bool, str, int, float, dict, list):
        if isinstance(value, base):
            return base(value)
    return value


def _check_type(field: str, kind: str, value: t.Any) -> t.Any:
    plain = _plain(value)
    shown = '(hidden)' if 'password' in field else repr(plain)
    bad = InvalidInput('%s: expected %s, got %s %s' % (field, TYPE_WORDS[kind], type(plain).__name__, shown))
    if kind == 'str':
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise bad
        return str(value)
    if kind == 'int':
        if isinstance(value, bool):
            raise bad
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        if not isinstance(value, int):
            raise bad
        return value
    if kind == 'bool':
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ('yes', 'no', 'true', 'false'):
            return value.lower() in ('yes', 'true')
        raise bad
    if kind == 'size':
        return parse_size(value, field)
    if kind == 'dict':
        if not isinstance(value, dict):
            raise bad
        return value
    if kind in ('list:str', 'list:dict'):
        if not isinstance(value, list):
            raise bad
        return value
    raise AssertionError(kind)


def _walk(field: str, schema: Schema, raw: t.Any, required: t.List[str]) -> t.Dict[str, t.Any]:
    if not isinstance(raw, dict):
        raise InvalidInput('%s: expected a mapping, got %r' % (field or 'blueprint', _plain(raw)))
    for key in raw:
        if schema is PUBLISH and key in CREDENTIAL_OPTIONS:
            raise InvalidInput('%s.%s: credentials do not belong in a blueprint, which is kept in a repository and '
                               'copied into the manifest; give them as environment variables (what AWX credentials '
                               'set) or in the publish role\'s publish_credentials' % (field, key))
        if key not in schema:
            where = '%s.%s' % (field, key) if field else str(key)
            raise InvalidInput('%s: unknown key%s; known keys here: %s'
                               % (where, _did_you_mean(str(key), schema), ', '.join(sorted(schema))))
    out: t.Dict[str, t.Any] = {}
    for key, (kind, default, children) in schema.items():
        where = '%s.%s' % (field, key) if field else key
        if key not in raw or raw[key] is None:
            if key in required:
                raise InvalidInput('%s: is required' % where)
            value = json.loads(json.dumps(default))
            if kind == 'size' and value is not None:
                value = parse_size(value, where)
            if kind == 'dict' and children:
                value = _walk(where, children, value or {}, [])
            elif kind == 'list:dict' and children:
                value = [_walk('%s[%d]' % (where, i), children, item, REQUIRED.get(key, []))
                         for i, item in enumerate(value)]
            out[key] = value
            continue
        value = _check_type(where, kind, raw[key])
        if kind == 'dict' and children:
            value = _walk(where, children, value, [])
        elif kind == 'list:dict':
            value = [_walk('%s[%d]' % (where, i), children or {}, item, REQUIRED.get(key, []))
                     for i, item in enumerate(value)]
        elif kind == 'list:str':
            value = [_check_type('%s[%d]' % (where, i), 'str', item) for i, item in enumerate(value)]
        out[key] = value
    return out


def _one_of(field: str, value: str, choices: t.Iterable[str], what: str) -> None:
    choices = list(choices)
    if value not in choices:
        raise InvalidInput('%s: %r is not %s%s; choose one of %s'
                           % (field, str(value), what, _did_you_mean(value, choices), ', '.join(choices)))


def _check_semantics(bp: t.Dict[str, t.Any]) -> None:
    if not NAME_RE.match(bp['name']):
        raise InvalidInput('name: %r must be lower-case letters, digits, ".", "_" or "-", starting with a letter '
                           'or digit' % bp['name'])
    if not re.match(r'^[A-Za-z0-9][A-Za-z0-9._+-]*$', bp['version']):
        raise InvalidInput('version: %r must be letters, digits, ".", "_", "+" or "-"' % bp['version'])
    if len(bp['name']) + len(bp['version']) > 48:
        raise InvalidInput('name, version: together at most 48 characters (they name the build\'s directories '
                           'and sockets), got %d' % (len(bp['name']) + len(bp['version'])))
    _one_of('os', bp['os'], OS_TABLE, 'a supported operating system')
    osinfo = OS_TABLE[bp['os']]
    source = bp['source']
    source['type'] = source['type'] or osinfo['default_source']
    _one_of('source.type', source['type'], ['installer', 'cloud_image', 'bootstrap'], 'a source type')
    if source['type'] not in osinfo['sources']:
        raise InvalidInput('source.type: %s cannot be built from %r; %s supports %s'
                           % (bp['os'], source['type'], bp['os'], ', '.join(osinfo['sources'])))
    for key in ('mirror', 'security_mirror', 'proxy'):
        if source[key] and not re.match(r'^(https?|file)://\S+$', source[key]):
            raise InvalidInput('source.%s: %r is not an http(s):// or file:// URL' % (key, source[key]))
    _one_of('hypervisor', bp['hypervisor'], ['auto', 'qemu', 'vmm'], 'a hypervisor')
    if bp['hypervisor'] == 'auto':
        bp['hypervisor'] = osinfo['hypervisors'][0]
    if bp['hypervisor'] not in osinfo['hypervisors']:
        raise InvalidInput('hypervisor: %s images are built on %s, not %s'
                           % (bp['os'], ' or '.join(osinfo['hypervisors']), bp['hypervisor']))
    vm = bp['vm']
    defaults = FAMILY_DEFAULTS[osinfo['family']]
    vm['cpus'] = defaults['cpus'] if vm['cpus'] is None else vm['cpus']
    if vm['cpus'] < 1 or vm['cpus'] > 64:
        raise InvalidInput('vm.cpus: %d is out of range 1..64' % vm['cpus'])
    if bp['hypervisor'] == 'vmm' and vm['cpus'] != 1:
        raise InvalidInput('vm.cpus: vmm VMs have exactly one vCPU (vmctl start cannot ask for more), got %d'
                           % vm['cpus'])
    if vm['memory'] < 256 * 1024 ** 2:
        raise InvalidInput('vm.memory: %d bytes is too little; a build VM needs at least 256M' % vm['memory'])
    if vm['disk_size'] < 2 * 1024 ** 3:
        raise InvalidInput('vm.disk_size: %d bytes is too small; %s needs at least 2G' % (vm['disk_size'], bp['os']))
    _one_of('vm.firmware', vm['firmware'], osinfo['firmware'], 'a firmware %s supports' % bp['os'])
    for index, package in enumerate(bp['packages']):
        if not PACKAGE_RE.match(package):
            raise InvalidInput('packages[%d]: %r is not a package name (optionally =version, * allowed)'
                               % (index, package))
    names = set()
    for index, user in enumerate(bp['users']):
        where = 'users[%d]' % index
        if not USERNAME_RE.match(user['name']):
            raise InvalidInput('%s.name: %r is not a valid user name' % (where, user['name']))
        if user['name'] in names:
            raise InvalidInput('%s.name: user %r is listed twice' % (where, user['name']))
        names.add(user['name'])
        if user['password'] is not None and user['password_hash'] is not None:
            raise InvalidInput('%s: give password or password_hash, not both' % where)
        if user['password_hash'] is not None and not user['password_hash'].startswith('$'):
            raise InvalidInput('%s.password_hash: expected a crypt(3) hash such as $6$...' % where)
        for k, key in enumerate(user['ssh_keys']):
            if not SSH_KEY_RE.match(key.strip()):
                raise InvalidInput('%s.ssh_keys[%d]: not an OpenSSH public key ("ssh-ed25519 AAAA... comment")'
                                   % (where, k))
    if bp['hostname'] is not None and not HOSTNAME_RE.match(bp['hostname']):
        raise InvalidInput('hostname: %r is not a valid host name' % bp['hostname'])
    if not TIMEZONE_RE.match(bp['timezone']):
        raise InvalidInput('timezone: %r is not a time zone name such as Europe/Berlin' % bp['timezone'])
    if not re.match(r'^[a-z]{2,3}$', bp['keyboard']):
        raise InvalidInput('keyboard: %r is not an XKB layout name such as us or de' % bp['keyboard'])
    if re.search(r'["\'`$\\\n\r;&|<>]', bp['kernel_append']):
        raise InvalidInput('kernel_append: %r holds quotes, $, backslashes, separators or line breaks; give only '
                           'kernel arguments such as "net.ifnames=0 quiet"' % bp['kernel_append'])
    if not LOCALE_RE.match(bp['locale']):
        raise InvalidInput('locale: %r is not a locale such as en_US.UTF-8' % bp['locale'])
    for state in ('enabled', 'disabled'):
        for index, service in enumerate(bp['services'][state]):
            if not SERVICE_RE.match(service):
                raise InvalidInput('services.%s[%d]: %r is not a service name' % (state, index, service))
    both = set(bp['services']['enabled']) & set(bp['services']['disabled'])
    if both:
        raise InvalidInput('services: %s cannot be both enabled and disabled' % ', '.join(sorted(both)))
    for index, entry in enumerate(bp['files']):
        where = 'files[%d]' % index
        if not entry['path'].startswith('/'):
            raise InvalidInput('%s.path: %r must be an absolute path in the guest' % (where, entry['path']))
        if (entry['content'] is None) == (entry['src'] is None):
            raise InvalidInput('%s: give exactly one of content or src' % where)
        if not re.match(r'^0?[0-7]{3,4}$', entry['mode']):
            raise InvalidInput('%s.mode: %r is not an octal mode such as "0644"' % (where, entry['mode']))
    for index, step in enumerate(bp['provision']):
        if (step['role'] is None) == (step['tasks'] is None):
            raise InvalidInput('provision[%d]: give exactly one of role or tasks' % index)
        for name in step['vars']:
            if not re.match(r'^[A-Za-z_][A-Za-z0-9_]*$', str(name)) or str(name).startswith('ansible_'):
                raise InvalidInput('provision[%d].vars: %r is not a variable name a step may set (letters, digits, '
                                   '"_", and not ansible_*)' % (index, str(name)))
    if not bp['outputs']:
        raise InvalidInput('outputs: at least one output is needed')
    seen: t.Dict[str, int] = {}
    for index, output in enumerate(bp['outputs']):
        where = 'outputs[%d]' % index
        _one_of(where + '.format', output['format'], OUTPUT_FORMATS, 'an output format')
        if output['format'] not in osinfo['outputs']:
            raise InvalidInput('%s.format: %s images cannot be exported as %s yet; supported: %s'
                               % (where, bp['os'], output['format'], ', '.join(osinfo['outputs'])))
        spec = FORMATS[output['format']]
        if output['compress'] is not None:
            _one_of(where + '.compress', output['compress'], COMPRESSIONS, 'a compression')
            if output['compress'] not in spec.compressions:
                raise InvalidInput('%s.compress: %s images cannot be compressed with %s; they can be: %s'
                                   % (where, output['format'], output['compress'], ', '.join(spec.compressions)))
        _one_of(where + '.qcow2_compression', output['qcow2_compression'], QCOW2_COMPRESSIONS,
                'a qcow2 cluster compression')
        if output['qcow2_compression'] != 'none' and not spec.uses_qcow2_compression:
            raise InvalidInput('%s.qcow2_compression: only qcow2 and box outputs hold a qcow2 disk' % where)
        key = extension(output['format'], output['compress'] or spec.compressions[0])
        if key in seen:
            raise InvalidInput('%s: %s with compress %s makes the same file (.%s) as outputs[%d]'
                               % (where, output['format'], output['compress'] or spec.compressions[0], key, seen[key]))
        seen[key] = index
    for index, entry in enumerate(bp['publish']):
        _check_publish('publish[%d]' % index, entry, bp)
    if osinfo['family'] == 'openbsd':
        _check_openbsd(bp, osinfo)
    else:
        _check_linux(bp)
    epoch = bp['source_date_epoch']
    if epoch is not None and not 0 <= epoch < 2 ** 32:
        raise InvalidInput('source_date_epoch: %d is not a number of seconds since 1970 (0 to 4294967295)' % epoch)


def _check_publish(where: str, entry: t.Dict[str, t.Any], bp: t.Dict[str, t.Any]) -> None:
    """A publish entry: its target's options as cloud_upload checks them, and an output it can take."""
    target = entry['target']
    _one_of(where + '.target', target, TARGETS, 'a publish target')
    for other in TARGETS:
        if entry[other] is None:
            continue
        if other != target and not (target == 'aws_ami' and other == 's3'):
            raise InvalidInput('%s.%s: options of target %s in an entry whose target is %s' % (where, other, other, target))
        for key in entry[other]:
            if key not in TARGET_OPTIONS[other]:
                raise InvalidInput('%s.%s.%s: unknown key%s; known keys here: %s'
                                   % (where, other, key, _did_you_mean(str(key), TARGET_OPTIONS[other]),
                                      ', '.join(sorted(TARGET_OPTIONS[other]))))
        checked = ArgumentSpecValidator(TARGET_OPTIONS[other]).validate(entry[other])
        if checked.error_messages:
            raise InvalidInput('%s.%s: %s' % (where, other, '; '.join(checked.error_messages)))
    needs = {'s3': ('s3', 'bucket'), 'azure': ('azure', 'container'), 'gce': ('gce', 'bucket')}
    aws = entry['aws_ami'] or {}
    if target == 'aws_ami' and aws.get('method') == 'import_snapshot':
        needs['aws_ami'] = ('s3', 'bucket')
    if target in needs and not (entry[needs[target][0]] or {}).get(needs[target][1]):
        raise InvalidInput('%s.%s.%s: is required for target %s%s'
                           % (where, needs[target][0], needs[target][1], target,
                              ' with method import_snapshot' if target == 'aws_ami' else ''))
    outputs = [(o['format'], o['compress']) for o in bp['outputs']]
    allowed = TARGET_FORMATS[target]
    if entry['format'] is None:
        candidates = [f for f, compress in outputs if f in DEFAULT_FORMATS.get(target, [f])
                      and (allowed is None or compress in (None, 'none'))]
        if not candidates:
            raise InvalidInput('%s: target %s publishes a %s output, and outputs has none; add {format: %s} to '
                               'outputs or set %s.format' % (where, target, ' or '.join(DEFAULT_FORMATS[target]),
                                                             DEFAULT_FORMATS[target][0], where))
        entry['format'] = candidates[0]
    else:
        _one_of(where + '.format', entry['format'], OUTPUT_FORMATS, 'an output format')
        if allowed is not None and entry['format'] not in allowed:
            raise InvalidInput('%s.format: target %s cannot take a %s image; it takes %s'
                               % (where, target, entry['format'], ', '.join(allowed)))
        if entry['format'] not in [f for f, _c in outputs]:
            raise InvalidInput('%s.format: the build has no %s output to publish; add {format: %s} to outputs'
                               % (where, entry['format'], entry['format']))
        if allowed is not None and all(c not in (None, 'none') for f, c in outputs if f == entry['format']):
            raise InvalidInput('%s.format: target %s needs the %s output uncompressed; an image service cannot '
                               'boot a compressed file' % (where, target, entry['format']))
    if entry['keep_newest'] is not None and entry['keep_newest'] < 1:
        raise InvalidInput('%s.keep_newest: %d keeps nothing; the newest image always stays (1 or more)'
                           % (where, entry['keep_newest']))
    for key, value in entry['tags'].items():
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise InvalidInput('%s.tags.%s: expected a string, got %r' % (where, key, _plain(value)))
    entry['tags'] = {str(k): str(v) for k, v in entry['tags'].items()}
    check_tags(target, entry['tags'], where + '.tags')
    if entry['family'] is None:
        entry['family'] = cloud_name(target, bp['name'])
    else:
        check_image_name(target, entry['family'], where + '.family')
    if target != 's3':  # an s3 object is named after its artifact file when no name is given
        if entry['name'] is None:
            entry['name'] = default_image_name(target, bp['name'], bp['version'])
        else:
            check_image_name(target, entry['name'], where + '.name')


def _check_linux(bp: t.Dict[str, t.Any]) -> None:
    for key in ('sets', 'signify_key'):
        if bp['source'][key] is not None:
            raise InvalidInput('source.%s: only OpenBSD blueprints have install sets; %s is built from %s'
                               % (key, bp['os'], bp['source']['type']))
    if bp['disklabel']:
        raise InvalidInput('disklabel: is an OpenBSD disklabel(8) template; %s images get one root partition '
                           'sized by vm.disk_size' % bp['os'])
    for index, user in enumerate(bp['users']):
        if user['doas']:
            raise InvalidInput('users[%d].doas: %s images use sudo; set sudo: true instead' % (index, bp['os']))


def _check_openbsd(bp: t.Dict[str, t.Any], osinfo: t.Dict[str, t.Any]) -> None:
    """What the OpenBSD installer and a vmm VM can honour; everything else is refused by name."""
    nn = osinfo['release'].replace('.', '')
    source = bp['source']
    if source['mirror'] is None:
        raise InvalidInput('source.mirror: is required for %s: the URL of an OpenBSD mirror\'s pub/OpenBSD '
                           'directory (bsd.rd and the sets are fetched from MIRROR/%s/amd64, packages for '
                           'install.site from MIRROR/%s/packages/amd64)' % (bp['os'], osinfo['release'], osinfo['release']))
    for key in ('security_mirror', 'proxy'):
        if source[key] is not None:
            raise InvalidInput('source.%s: is a Debian setting; %s has none' % (key, bp['os']))
    if source['components'] != ['main']:
        raise InvalidInput('source.components: is a Debian setting; %s has none' % bp['os'])
    sets = source['sets'] if source['sets'] is not None else list(OPENBSD_DEFAULT_SETS)
    normal = []
    for index, name in enumerate(sets):
        generic = name.replace(nn, 'NN') if name.endswith(nn + '.tgz') else name
        if not OPENBSD_SET_RE.match(generic):
            raise InvalidInput('source.sets[%d]: %r is not a set of OpenBSD %s; sets are bsd, bsd.mp, bsd.rd and '
                               'base%s.tgz, comp%s.tgz, man%s.tgz, game%s.tgz, xbase%s.tgz, xshare%s.tgz, '
                               'xfont%s.tgz, xserv%s.tgz' % ((index, name, osinfo['release']) + (nn,) * 8))
        normal.append(generic.replace('NN', nn))
    for needed in ('bsd', 'bsd.rd', 'base%s.tgz' % nn):
        if needed not in normal:
            raise InvalidInput('source.sets: %s is missing; an install needs bsd, bsd.rd and base%s.tgz' % (needed, nn))
    source['sets'] = normal
    source['signify_key'] = source['signify_key'] or '/etc/signify/openbsd-%s-base.pub' % nn
    if not source['signify_key'].startswith('/'):
        raise InvalidInput('source.signify_key: %r must be an absolute path on the build host' % source['signify_key'])
    source['release'] = osinfo['release']
    source['arch'] = 'amd64'
    for key, default, why in (('locale', 'C.UTF-8', 'OpenBSD has no system locale setting'),
                              ('keyboard', 'us', 'a serial-console install keeps the us layout'),
                              ('kernel_append', '', 'OpenBSD\'s kernel takes no command line')):
        if bp[key] != default:
            raise InvalidInput('%s: cannot be set for %s (%s)' % (key, bp['os'], why))
    users = [user for user in bp['users'] if user['name'] != 'root']
    for index, user in enumerate(bp['users']):
        if user['sudo']:
            raise InvalidInput('users[%d].sudo: %s images use doas; set doas: true instead' % (index, bp['os']))
        if user['password_hash'] is not None and not user['password_hash'].startswith(('$2a$', '$2b$')):
            raise InvalidInput('users[%d].password_hash: OpenBSD takes bcrypt hashes ($2b$...); give password '
                               'to have it hashed' % index)
        if user['name'] == 'root' and (user['groups'] or user['doas'] or user['shell']):
            raise InvalidInput('users[%d]: root takes only password, password_hash and ssh_keys' % index)
    if len(users) > 1:
        raise InvalidInput('users: the OpenBSD installer sets up one user (besides root), got %d: %s'
                           % (len(users), ', '.join(user['name'] for user in users)))
    mounts = set()
    for index, part in enumerate(bp['disklabel']):
        where = 'disklabel[%d]' % index
        if part['mount'] != 'swap' and not part['mount'].startswith('/'):
            raise InvalidInput('%s.mount: %r must be a mount point such as /var, or swap' % (where, part['mount']))
        if part['mount'] in mounts:
            raise InvalidInput('%s.mount: %s is listed twice' % (where, part['mount']))
        mounts.add(part['mount'])
        if not DISKLABEL_SIZE_RE.match(part['size']):
            raise InvalidInput('%s.size: %r is not a disklabel(8) size such as 2G, 1G-4G or 2G-*'
                               % (where, part['size']))
        if part['percent'] is not None and not 1 <= part['percent'] <= 100:
            raise InvalidInput('%s.percent: %d is not a percentage 1..100' % (where, part['percent']))
    if bp['disklabel'] and '/' not in mounts:
        raise InvalidInput("disklabel: '/' must be configured (the installer refuses a layout without it)")
    least = sum(_disklabel_min_bytes(part['size']) for part in bp['disklabel'])
    if least > bp['vm']['disk_size']:
        raise InvalidInput('disklabel: the partitions need at least %s, more than vm.disk_size (%s)'
                           % (_size_text(least), _size_text(bp['vm']['disk_size'])))
    if bp['vm']['memory'] > VMM_MAX_MEMORY:
        raise InvalidInput('vm.memory: %s is more than a vmm VM can have (%s)'
                           % (_size_text(bp['vm']['memory']), _size_text(VMM_MAX_MEMORY)))


def _disklabel_min_bytes(size: str) -> int:
    """The least bytes a disklabel(8) template size asks for: 2G-* and 2G-4G are at least 2G; a bare number is sectors."""
    match = DISKLABEL_SIZE_RE.match(size)
    least = match.group(1) if match else '0'
    if least[-1] in DISKLABEL_UNITS:
        return int(float(least[:-1]) * DISKLABEL_UNITS[least[-1]])
    return int(float(least) * 512)


def _size_text(value: int) -> str:
    for unit, factor in (('T', 1024 ** 4), ('G', 1024 ** 3), ('M', 1024 ** 2), ('K', 1024)):
        if value >= factor:
            return ('%.1f' % (value / factor)).rstrip('0').rstrip('.') + unit
    return '%d bytes' % value


def normalise(raw: t.Any, hash_password: t.Optional[t.Callable[[str, str], str]] = None,
              base_dir: t.Optional[str] = None) -> t.Dict[str, t.Any]:
    """Return the checked blueprint with defaults filled in and plain passwords replaced by hashes.

    Relative ``provision[].tasks`` and ``files[].src`` paths are made absolute against base_dir (the
    directory ansible-playbook was started in), where the user wrote them from.
    """
    if raw is None:
        raise InvalidInput('blueprint: no blueprint was given; pass one with -e @blueprints/NAME.yml')
    bp = _walk('', SCHEMA, raw, REQUIRED[''])
    _check_semantics(bp)
    osinfo = OS_TABLE[bp['os']]
    bp['family'] = osinfo['family']
    bp['source']['suite'] = osinfo.get('suite')
    bp['hostname'] = bp['hostname'] or bp['name'].split('.')[0].replace('_', '-')
    bp['seed'] = bp['seed'] or '%s-%s' % (bp['name'], bp['version'])
    defaults = FAMILY_DEFAULTS[osinfo['family']]
    for user in bp['users']:
        if user['name'] != 'root' or osinfo['family'] != 'openbsd':
            user['shell'] = user['shell'] or defaults['shell']
    for entry in bp['files']:
        entry['group'] = entry['group'] or defaults['group']
    if base_dir:
        for step in bp['provision']:
            if step['tasks'] and not step['tasks'].startswith('/'):
                step['tasks'] = '%s/%s' % (base_dir.rstrip('/'), step['tasks'])
        for entry in bp['files']:
            if entry['src'] and not entry['src'].startswith('/'):
                entry['src'] = '%s/%s' % (base_dir.rstrip('/'), entry['src'])
    for user in bp['users']:
        if user['password'] is not None:
            if hash_password is None:
                raise InvalidInput('users: a plain password needs passlib on the controller to be hashed')
            user['password_hash'] = hash_password(user['password'], osinfo['password_scheme'])
        user.pop('password')
    return bp


def digest(bp: t.Dict[str, t.Any]) -> str:
    return hashlib.sha256(json.dumps(bp, sort_keys=True).encode('utf-8')).hexdigest()


def redacted(bp: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
    """The blueprint as it may be written into a manifest: no password hashes."""
    copy = json.loads(json.dumps(bp))
    for user in copy.get('users', []):
        if user.get('password_hash'):
            user['password_hash'] = '<redacted>'
    for entry in copy.get('files', []):  # contents may be secrets; their digest names them well enough
        if entry.get('content') is not None:
            entry['content'] = 'sha256:' + hashlib.sha256(entry['content'].encode('utf-8')).hexdigest()
    source = copy.get('source', {})
    for key in ('mirror', 'security_mirror', 'proxy'):
        if source.get(key):
            source[key] = re.sub(r'^(\w+://)[^@/]*@', r'\1', source[key])
    return copy
