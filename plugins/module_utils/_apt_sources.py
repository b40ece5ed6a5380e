# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Find the Debian mirror and apt options the build host itself uses.

Reads deb822 ``*.sources`` files and one-line ``sources.list`` entries (see
sources.list(5)), and the options of ``apt-config dump`` that a bootstrap must
share with the host: its proxy and whether it checks Release file dates.
"""

from __future__ import annotations

import glob
import os
import re
import typing as t

from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput

Entry = t.Dict[str, t.List[str]]

# apt options a bootstrap inherits from the host when they are set there.
INHERITED_OPTIONS = ('Acquire::http::Proxy', 'Acquire::https::Proxy', 'Acquire::Check-Valid-Until',
                     'Acquire::Check-Date')


def parse_deb822(text: str) -> t.List[Entry]:
    entries = []
    for stanza in re.split(r'\n\s*\n', text):
        fields: t.Dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if not line.strip() or line.lstrip().startswith('#'):
                continue
            if line[0] in ' \t' and key:
                fields[key] += ' ' + line.strip()
                continue
            if ':' in line:
                key, value = line.split(':', 1)
                key = key.strip().lower()
                fields[key] = value.strip()
        if not fields or fields.get('enabled', 'yes').lower() == 'no':
            continue
        entries.append({name: fields.get(name, '').split() for name in ('types', 'uris', 'suites', 'components')})
    return entries


def parse_one_line(text: str) -> t.List[Entry]:
    entries = []
    for line in text.splitlines():
        line = line.split('#', 1)[0].strip()
        if not line:
            continue
        words = line.split()
        kind = words.pop(0)
        if words and words[0].startswith('['):  # options such as [arch=amd64 signed-by=...]
            while words and not words[0].endswith(']'):
                words.pop(0)
            if not words:
                continue
            words.pop(0)
        if len(words) < 2:
            continue
        entries.append({'types': [kind], 'uris': [words[0]], 'suites': [words[1]], 'components': words[2:]})
    return entries


def read_host_sources(etc_apt: str = '/etc/apt') -> t.List[Entry]:
    entries: t.List[Entry] = []
    one_line = [os.path.join(etc_apt, 'sources.list')] + sorted(glob.glob(os.path.join(etc_apt, 'sources.list.d', '*.list')))
    for path in one_line:
        if os.path.isfile(path):
            with open(path, 'r', encoding='utf-8', errors='replace') as handle:
                entries += parse_one_line(handle.read())
    for path in sorted(glob.glob(os.path.join(etc_apt, 'sources.list.d', '*.sources'))):
        with open(path, 'r', encoding='utf-8', errors='replace') as handle:
            entries += parse_deb822(handle.read())
    return entries


def find_mirrors(entries: t.List[Entry], suite: str) -> t.Tuple[t.Optional[str], t.Optional[str]]:
    """The URI that serves SUITE (main archive) and the one that serves SUITE-security."""
    main = security = None
    for entry in entries:
        if 'deb' not in entry['types']:
            continue
        for uri in entry['uris']:
            if main is None and suite in entry['suites']:
                main = uri
            if security is None and '%s-security' % suite in entry['suites']:
                security = uri
    return main, security


def parse_apt_config_dump(text: str) -> t.Dict[str, str]:
    """``apt-config dump`` lines look like: Acquire::http::Proxy "http://proxy:3142/";"""
    options = {}
    for line in text.splitlines():
        match = re.match(r'^(\S+) "(.*)";$', line.strip())
        if match:
            options[match.group(1)] = match.group(2)
    return options


def inherited_options(dump: t.Dict[str, str]) -> t.Dict[str, str]:
    lowered = {key.lower(): (key, value) for key, value in dump.items()}
    found = {}
    for name in INHERITED_OPTIONS:
        if name.lower() in lowered and lowered[name.lower()][1] != '':
            found[name] = lowered[name.lower()][1]
    return found


def sources_lines(mirror: str, security_mirror: t.Optional[str], suite: str,
                  components: t.List[str]) -> t.List[str]:
    """One-line sources for mmdebstrap: the suite, its updates, and its security suite."""
    comps = ' '.join(components)
    lines = ['deb %s %s %s' % (mirror, suite, comps), 'deb %s %s-updates %s' % (mirror, suite, comps)]
    if security_mirror:
        lines.append('deb %s %s-security %s' % (security_mirror, suite, comps))
    return lines


def resolve(suite: str, mirror: t.Optional[str], security_mirror: t.Optional[str],
            entries: t.List[Entry]) -> t.Tuple[str, t.Optional[str], str]:
    """Return (mirror, security mirror, where they came from)."""
    host_main, host_security = find_mirrors(entries, suite)
    if mirror:
        return mirror, security_mirror or host_security, 'blueprint'
    if not host_main:
        raise InvalidInput('source.mirror: the build host\'s apt configuration has no "deb" source for %s; '
                           'set source.mirror in the blueprint' % suite)
    return host_main, security_mirror or host_security, 'build host apt configuration'
