# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters the roles need beyond Jinja: blueprints, password hashes, sizes."""

from __future__ import annotations

import typing as t

from ansible.errors import AnsibleFilterError

from ansible_collections.osimage.builder.plugins.module_utils import _blueprint, _openbsd
from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput
from ansible_collections.osimage.builder.plugins.module_utils._sizes import parse_size

try:
    from passlib.hash import bcrypt, sha512_crypt
    HAS_PASSLIB = True
except ImportError:  # pragma: no cover - depends on the controller
    HAS_PASSLIB = False


def password_hash(password: str, scheme: str = 'sha512_crypt') -> str:
    """sha512_crypt ($6$) for Linux guests, bcrypt ($2b$) for OpenBSD."""
    if not HAS_PASSLIB:
        raise AnsibleFilterError('osimage.builder.password_hash needs passlib on the controller (pip install passlib)')
    if scheme == 'sha512_crypt':
        return sha512_crypt.using(rounds=656000).hash(password)
    if scheme == 'bcrypt':
        return bcrypt.using(ident='2b', rounds=12).hash(password)
    raise AnsibleFilterError('osimage.builder.password_hash: unknown scheme %r (sha512_crypt or bcrypt)' % scheme)


def blueprint(raw: t.Any, base_dir: t.Optional[str] = None) -> t.Dict[str, t.Any]:
    try:
        return _blueprint.normalise(raw, password_hash, base_dir)
    except InvalidInput as exc:
        raise AnsibleFilterError('blueprint: %s' % exc.msg)


def blueprint_check(raw: t.Any) -> str:
    """Check without hashing, so a task can show the error while the passwords stay out of it."""
    try:
        return _blueprint.normalise(raw, lambda password, scheme: '$6$checked')['name']
    except InvalidInput as exc:
        raise AnsibleFilterError('blueprint: %s' % exc.msg)


def blueprint_redacted(value: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
    return _blueprint.redacted(value)


def blueprint_digest(value: t.Dict[str, t.Any]) -> str:
    return _blueprint.digest(_blueprint.redacted(value))


def size_bytes(value: t.Any) -> int:
    try:
        return parse_size(value)
    except InvalidInput as exc:
        raise AnsibleFilterError(exc.msg)


def package_list(text: str) -> t.List[t.Dict[str, str]]:
    """'name version' lines (dpkg-query -W) -> [{'name': ..., 'version': ...}], sorted by name."""
    packages = []
    for line in str(text).splitlines():
        fields = line.split(None, 1)
        if len(fields) == 2:
            packages.append({'name': fields[0], 'version': fields[1].strip()})
    return sorted(packages, key=lambda item: item['name'])


def openbsd_sha256(text: str) -> t.Dict[str, str]:
    """An OpenBSD SHA256 (or SHA256.sig) file -> {file name: hex digest}."""
    try:
        return _openbsd.parse_sha256(str(text))
    except InvalidInput as exc:
        raise AnsibleFilterError(exc.msg)


def openbsd_install_conf(blueprint_value: t.Dict[str, t.Any], build_key: str, sets_server: str, sets_dir: str,
                         disklabel_url: t.Optional[str] = None) -> str:
    try:
        return _openbsd.install_conf(blueprint_value, str(build_key), str(sets_server), str(sets_dir),
                                     disklabel_url or None)
    except InvalidInput as exc:
        raise AnsibleFilterError('install.conf: %s' % exc.msg)


def openbsd_disklabel(parts: t.List[t.Dict[str, t.Any]]) -> str:
    """The disklabel(8) template of the blueprint's disklabel list; '' for the installer's auto layout."""
    return _openbsd.disklabel_template(list(parts)) or ''


def openbsd_install_site(blueprint_value: t.Dict[str, t.Any]) -> str:
    try:
        return _openbsd.install_site(blueprint_value)
    except InvalidInput as exc:
        raise AnsibleFilterError('install.site: %s' % exc.msg)


def openbsd_index(entries: t.List[t.Dict[str, t.Any]]) -> str:
    """[{name or path, size}] (for example stat results) -> index.txt text as a mirror serves it."""
    return _openbsd.index_txt([(str(entry.get('name') or str(entry['path']).rsplit('/', 1)[-1]), int(entry['size']))
                               for entry in entries])


def media_input(name: str, base_url: str, digests: t.Dict[str, str]) -> t.Dict[str, str]:
    """One manifest input record for a fetched file."""
    return {'name': name, 'kind': 'install media', 'url': '%s/%s' % (base_url, name), 'sha256': digests[name]}


class FilterModule:
    def filters(self) -> t.Dict[str, t.Callable[..., t.Any]]:
        return {
            'blueprint': blueprint,
            'openbsd_sha256': openbsd_sha256,
            'openbsd_install_conf': openbsd_install_conf,
            'openbsd_disklabel': openbsd_disklabel,
            'openbsd_install_site': openbsd_install_site,
            'openbsd_index': openbsd_index,
            'media_input': media_input,
            'blueprint_check': blueprint_check,
            'blueprint_redacted': blueprint_redacted,
            'blueprint_digest': blueprint_digest,
            'password_hash': password_hash,
            'size_bytes': size_bytes,
            'package_list': package_list,
        }
