# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""OpenBSD autoinstall(8) files made from a blueprint.

Followed: autoinstall(8) and distrib/miniroot/install.sub in openbsd/src. The
installer matches a response-file line ``question = answer`` when the question
(lower-cased) contains the key on word boundaries, uses each line once, and
takes the question's default when no line matches (install.sub
_autorespond()). Keys below are the questions' own words, so that a reader can
find each in install.sub; the passwords are bcrypt hashes, which the installer
stores unchanged (install.sub encr_pwd()). disklabel(8) documents the
autopartitioning template, install.site(5) the site set's script.
"""

from __future__ import annotations

import re
import shlex
import typing as t

from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput

# A password that matches no input: login with it is impossible (install.sub encr_pwd(): 13 stars).
NO_PASSWORD = '*' * 13
SHA256_LINE_RE = re.compile(r'^SHA256 \((?P<name>[^()/]+)\) = (?P<digest>[0-9a-f]{64})$')


def nn(release: str) -> str:
    """'7.8' -> '78', as set names and key files spell a release."""
    return release.replace('.', '')


def site_set_name(release: str) -> str:
    return 'site%s.tgz' % nn(release)


def _one_line(value: str, what: str) -> str:
    if '\n' in value or '\r' in value:
        raise InvalidInput('%s: must be one line' % what)
    return value.strip()


def install_conf(bp: t.Dict[str, t.Any], build_key: str, sets_server: str, sets_dir: str,
                 disklabel_url: t.Optional[str]) -> str:
    """The response file for an unattended install of a normalised OpenBSD blueprint.

    build_key: the build's public key for root (removed again by sysprep); sets_server: host[:port] of the
    HTTP server with the sets; sets_dir: its directory holding them; disklabel_url: the template's URL or None
    for the installer's automatic layout.
    """
    release = bp['source']['release']
    users = [user for user in bp['users'] if user['name'] != 'root']
    root = ([user for user in bp['users'] if user['name'] == 'root'] or [{}])[0]
    lines = [
        ('System hostname', bp['hostname'].split('.')[0]),
        ('IPv4 address for vio0', 'autoconf'),
        ('IPv6 address for vio0', 'none'),
        ('Password for root account', root.get('password_hash') or NO_PASSWORD),
        ('Public ssh key for root account', _one_line(build_key, 'build key')),
        ('Start sshd(8) by default', 'yes'),
        ('Change the default console to com0', 'yes'),
        ('Which speed should com0 use', '115200'),
    ]
    if users:
        user = users[0]
        name = user['name']
        lines += [
            ('Setup a user', name),
            ('Full name for user %s' % name, name),
            ('Password for user %s' % name, user['password_hash'] or NO_PASSWORD),
            ('Public ssh key for user %s' % name, user['ssh_keys'][0].strip() if user['ssh_keys'] else 'none'),
        ]
    else:
        lines.append(('Setup a user', 'no'))
    lines += [
        # The build logs in as root with its key; sysprep settles the final sshd setting.
        ('Allow root ssh login', 'prohibit-password'),
        ('What timezone are you in', bp['timezone']),
        ('Which disk is the root disk', 'sd0'),
        ('Encrypt the root disk with a (p)assphrase or (k)eydisk', 'no'),
        ('Use (W)hole disk MBR, whole disk (G)PT or (E)dit', 'whole'),
        ('URL to autopartitioning template for disklabel', disklabel_url or 'none'),
        ('Location of sets', 'http'),
        ('HTTP proxy URL', 'none'),
        ('HTTP Server', sets_server),
        ('Server directory', sets_dir.strip('/')),
        ('Set name(s)', ' '.join(['-all'] + bp['source']['sets'] + [site_set_name(release)])),
        # Only the build's own site set is unsigned: SHA256 has no line for it, so install.sub's
        # install_files() reports its checksum test failed, then lists it as unverified. Both
        # questions name the set, so any other set's failure stays an error.
        ('Checksum test for %s failed. Continue anyway' % site_set_name(release), 'yes'),
        ('Unverified sets: %s. Continue without verification' % site_set_name(release), 'yes'),
        ('Location of sets', 'done'),
    ]
    for key, value in lines:
        if '=' in key:
            raise AssertionError(key)
        _one_line(str(value), key)
    return ''.join('%s = %s\n' % (key, value) for key, value in lines)


def disklabel_template(parts: t.List[t.Dict[str, t.Any]]) -> t.Optional[str]:
    """disklabel(8) AUTOMATIC DISK ALLOCATION lines, or None for the installer's own layout."""
    if not parts:
        return None
    out = []
    for part in parts:
        line = '%-15s %s' % (part['mount'], part['size'])
        if part.get('percent') is not None:
            line += ' %d%%' % part['percent']
        out.append(line)
    return '\n'.join(out) + '\n'


def install_site(bp: t.Dict[str, t.Any], python: bool = True) -> str:
    """install.site(5): runs chrooted in the new system at the end of the install.

    It readies the first boot for Ansible: the package mirror in /etc/installurl, python3 (Ansible's
    modules need it), doas rules, and root's own keys from the blueprint.
    """
    mirror = bp['source']['mirror'].rstrip('/')
    out = [
        '#!/bin/sh',
        '# Written by osimage.builder for the build of %s %s (install.site(5)).' % (bp['name'], bp['version']),
        'set -e',
        'echo %s > /etc/installurl' % shlex.quote(mirror),
    ]
    if python:
        out.append('pkg_add -I python3')
    for user in bp['users']:
        if user['name'] == 'root':
            for key in user['ssh_keys']:
                out.append('echo %s >> /root/.ssh/authorized_keys' % shlex.quote(_one_line(key, 'ssh key')))
        elif user['doas']:
            out.append('echo %s >> /etc/doas.conf' % shlex.quote('permit nopass %s' % user['name']))
        if user['name'] != 'root':
            for key in user['ssh_keys'][1:]:
                line = shlex.quote(_one_line(key, 'ssh key'))
                out.append('echo %s >> /home/%s/.ssh/authorized_keys' % (line, user['name']))
    out.append('exit 0')
    return '\n'.join(out) + '\n'


def parse_sha256(text: str, what: str = 'SHA256') -> t.Dict[str, str]:
    """``SHA256 (name) = hex`` lines (sha256 -b style, as OpenBSD's SHA256 files are written) -> {name: hex}."""
    digests: t.Dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith('untrusted comment:') or number == 2 and not line.startswith('SHA256'):
            continue
        match = SHA256_LINE_RE.match(line.strip())
        if not match:
            if line.startswith(('SHA256 ', 'SHA256(')):
                raise InvalidInput('%s line %d is not "SHA256 (name) = hex": %r' % (what, number, line[:120]))
            continue
        digests[match.group('name')] = match.group('digest')
    return digests


def index_txt(entries: t.List[t.Tuple[str, int]]) -> str:
    """An index.txt like a mirror's (ls -ln lines); the installer takes each line's last word as a file name."""
    return ''.join('-rw-r--r--  1 0  0  %10d Jan  1 00:00:00 1970 %s\n' % (size, name)
                   for name, size in sorted(entries))
