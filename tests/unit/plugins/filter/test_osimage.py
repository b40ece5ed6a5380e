# -*- coding: utf-8 -*-
from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from passlib.hash import bcrypt, sha512_crypt

from ansible_collections.osimage.builder.plugins.filter import osimage


def test_password_hashes_verify():
    linux = osimage.password_hash('s3cret')
    assert linux.startswith('$6$') and sha512_crypt.verify('s3cret', linux)
    bsd = osimage.password_hash('s3cret', 'bcrypt')
    assert bsd.startswith('$2b$') and bcrypt.verify('s3cret', bsd)
    with pytest.raises(AnsibleFilterError, match='unknown scheme'):
        osimage.password_hash('x', 'md5')


def test_blueprint_filter_reports_the_field():
    with pytest.raises(AnsibleFilterError, match=r"^blueprint: pacakges: unknown key \(did you mean 'packages'\?\)"):
        osimage.blueprint({'name': 'x', 'os': 'debian-12', 'pacakges': []})
    bp = osimage.blueprint({'name': 'x', 'os': 'debian-12', 'users': [{'name': 'a', 'password': 'pw'}]})
    assert sha512_crypt.verify('pw', bp['users'][0]['password_hash'])
    assert len(osimage.blueprint_digest(bp)) == 64


def test_package_list_and_sizes():
    assert osimage.package_list('zlib1g 1:1.2.13\nbash\t5.2.15-2+b7\n') == [
        {'name': 'bash', 'version': '5.2.15-2+b7'}, {'name': 'zlib1g', 'version': '1:1.2.13'}]
    assert osimage.size_bytes('1K') == 1024
    with pytest.raises(AnsibleFilterError):
        osimage.size_bytes('1X')
