# -*- coding: utf-8 -*-
from __future__ import annotations

import pytest

from ansible_collections.osimage.builder.plugins.module_utils import _apt_sources
from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput

# The deb822 layout Debian 12 installs as /etc/apt/sources.list.d/debian.sources
# (host names replaced by example ones).
DEB822 = """Types: deb
# a comment line
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main contrib

Types: deb
Enabled: no
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
"""
ONE_LINE = """# sources.list(5)
deb http://mirror.example/debian bookworm main contrib
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://other.example/debian bookworm-backports main
deb-src http://mirror.example/debian bookworm main
deb http://security.example/debian-security bookworm-security main
"""
# `apt-config dump` lines, as apt 2.6 prints them
DUMP = '''APT "";
APT::Architecture "amd64";
Acquire::http::Proxy "http://proxy.example:3142/";
Acquire::Check-Valid-Until "false";
Acquire::Check-Date "false";
Acquire::IndexTargets::deb::DEP-11::DefaultEnabled "false";
'''


def test_deb822():
    entries = _apt_sources.parse_deb822(DEB822)
    assert len(entries) == 2
    assert entries[0] == {'types': ['deb'], 'uris': ['http://mirror.example/debian'],
                          'suites': ['bookworm', 'bookworm-updates'], 'components': ['main']}
    expected = ('http://mirror.example/debian', 'http://security.example/debian-security')
    assert _apt_sources.find_mirrors(entries, 'bookworm') == expected


def test_one_line():
    entries = _apt_sources.parse_one_line(ONE_LINE)
    assert entries[1]['uris'] == ['http://other.example/debian']
    expected = ('http://mirror.example/debian', 'http://security.example/debian-security')
    assert _apt_sources.find_mirrors(entries, 'bookworm') == expected


def test_read_host_sources(tmp_path):
    (tmp_path / 'sources.list.d').mkdir()
    (tmp_path / 'sources.list').write_text(ONE_LINE)
    (tmp_path / 'sources.list.d' / 'debian.sources').write_text(DEB822)
    entries = _apt_sources.read_host_sources(str(tmp_path))
    assert len(entries) == 6


def test_apt_options():
    options = _apt_sources.inherited_options(_apt_sources.parse_apt_config_dump(DUMP))
    assert options == {'Acquire::http::Proxy': 'http://proxy.example:3142/', 'Acquire::Check-Valid-Until': 'false',
                       'Acquire::Check-Date': 'false'}


def test_resolve():
    entries = _apt_sources.parse_deb822(DEB822)
    assert _apt_sources.resolve('bookworm', None, None, entries) == (
        'http://mirror.example/debian', 'http://security.example/debian-security', 'build host apt configuration')
    assert _apt_sources.resolve('bookworm', 'http://mine.example/debian', None, entries) == (
        'http://mine.example/debian', 'http://security.example/debian-security', 'blueprint')
    with pytest.raises(InvalidInput, match='source.mirror: .* no "deb" source for trixie'):
        _apt_sources.resolve('trixie', None, None, entries)


def test_sources_lines():
    assert _apt_sources.sources_lines('http://m/debian', 'http://s/debian-security', 'bookworm', ['main', 'contrib']) == [
        'deb http://m/debian bookworm main contrib', 'deb http://m/debian bookworm-updates main contrib',
        'deb http://s/debian-security bookworm-security main contrib']
