# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Detached signatures of checksum files with gpg, signify or minisign.

The secret key comes from a file or from an environment variable; key text
and passphrases never go into argv or into an error message. Text that has
to be a file for the tool is written to a private temporary directory (mode
0700, files 0600) that is removed afterwards.

How each tool gets its passphrase without a terminal:

- gpg: ``--pinentry-mode loopback --passphrase-file F``. The key is imported
  into a throw-away GNUPGHOME, so the user's keyring is never touched; the
  gpg-agent that home started is stopped before it is removed. Loopback mode
  is always on, so a protected key without a passphrase fails at once instead
  of starting a pinentry.
- signify: reads the passphrase from stdin when stdin is not a terminal and
  the message is not ``-`` (kdf() sets RPP_STDIN for readpassphrase), so the
  passphrase goes through the runner's ``data``. A key made with
  ``signify -G -n`` needs none. signify -S only takes a secret key file
  whose name ends in ``.sec``.
- minisign: reads the password from stdin when stdin is not a terminal, so
  it also goes through ``data``. A key made with ``minisign -G -W`` needs
  none and is recognised without ``-W``.

For signify and minisign the key format is checked up front: a public key,
the other tool's key, or a protected key without a passphrase is reported
before anything is exported.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import shutil
import tempfile
import typing as t

from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput, ToolError, ToolMissing
from ansible_collections.osimage.builder.plugins.module_utils._tools import Runner

TOOLS = ('gpg', 'signify', 'minisign')
FIELD = 'sign'

_EXTENSIONS = {'gpg': '.asc', 'signify': '.sig', 'minisign': '.minisig'}
_CANDIDATES = {'gpg': ['gpg', 'gpg2'], 'signify': ['signify', 'signify-openbsd'], 'minisign': ['minisign']}
_PACKAGES = {
    'gpg': 'the Debian package gnupg (OpenBSD: pkg_add gnupg)',
    'signify': 'the Debian package signify-openbsd (on OpenBSD signify is part of the base system)',
    'minisign': 'the Debian package minisign (OpenBSD: pkg_add minisign)',
}
_KEY_HINT = {'signify': 'signify -G', 'minisign': 'minisign -G'}
_NO_PASSPHRASE_HINT = {'signify': 'signify -G -n', 'minisign': 'minisign -G -W'}
REDACTED = '<redacted>'
# the temporary name image_export stages a file under: .NAME.partial-XXXXXXXX
_STAGED = re.compile(r'^\.(.+)\.partial-[A-Za-z0-9_]+$')


class SignRequest(t.NamedTuple):
    tool: str
    key_file: t.Optional[str] = None
    key_env: t.Optional[str] = None
    passphrase_file: t.Optional[str] = None
    passphrase_env: t.Optional[str] = None
    key_id: t.Optional[str] = None


def signature_name(tool: str, signed_name: str) -> str:
    """SHA256SUMS -> SHA256SUMS.asc (gpg, ASCII-armored), .sig (signify) or .minisig (minisign)."""
    if tool not in _EXTENSIONS:
        raise InvalidInput('%s.tool: unknown signing tool %r; expected one of %s' % (FIELD, tool, ', '.join(TOOLS)))
    return signed_name + _EXTENSIONS[tool]


def _readable_file(path: str, option: str) -> None:
    if not os.path.exists(path):
        raise InvalidInput('%s.%s: %s does not exist' % (FIELD, option, path))
    if not os.path.isfile(path):
        raise InvalidInput('%s.%s: %s is not a regular file' % (FIELD, option, path))
    if not os.access(path, os.R_OK):
        raise InvalidInput('%s.%s: %s is not readable' % (FIELD, option, path))


def _env_value(environ: t.Mapping[str, str], name: str, option: str) -> str:
    value = environ.get(name)
    if value is None:
        raise InvalidInput('%s.%s: the environment variable %s is not set' % (FIELD, option, name))
    if not value.strip():
        raise InvalidInput('%s.%s: the environment variable %s is empty' % (FIELD, option, name))
    return value


def _key_text(req: SignRequest, environ: t.Mapping[str, str]) -> t.Optional[str]:
    """The key as text when it comes from the environment, else None (the tool reads key_file itself)."""
    if req.key_env:
        return _env_value(environ, req.key_env, 'key_env')
    return None


def _passphrase(req: SignRequest, environ: t.Mapping[str, str]) -> t.Optional[str]:
    """The passphrase's first line, or None when none is given."""
    if req.passphrase_env:
        value = _env_value(environ, req.passphrase_env, 'passphrase_env')
    elif req.passphrase_file:
        try:
            with open(req.passphrase_file, 'r', encoding='utf-8') as handle:
                value = handle.read()
        except (OSError, UnicodeError) as exc:
            raise InvalidInput('%s.passphrase_file: cannot read %s: %s'
                               % (FIELD, req.passphrase_file, exc.__class__.__name__))
    else:
        return None
    lines = value.splitlines()
    return lines[0] if lines else ''


def _decode_key(text: str) -> t.Optional[bytes]:
    """The base64 payload of a signify/minisign key file (comment line, then base64), or None."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) < 2 or not lines[0].startswith('untrusted comment:'):
        return None
    try:
        return base64.b64decode(lines[1], validate=True)
    except (binascii.Error, ValueError):
        return None


def _key_format(payload: bytes) -> t.Tuple[str, bool]:
    """(kind, protected) with kind 'signify', 'minisign', 'public' or 'unknown'."""
    if len(payload) == 42 and payload[:2] == b'Ed':
        return 'public', False
    if len(payload) == 104 and payload[:4] == b'EdBK':
        return 'signify', int.from_bytes(payload[4:8], 'big') != 0
    if len(payload) == 158 and payload[:2] == b'Ed' and payload[2:4] in (b'Sc', b'\0\0'):
        return 'minisign', payload[2:4] == b'Sc'
    return 'unknown', False


def _check_key_format(req: SignRequest, text: str, has_passphrase: bool) -> None:
    option = 'key_env' if req.key_env else 'key_file'
    where = ('the environment variable %s' % req.key_env) if req.key_env else t.cast(str, req.key_file)
    payload = _decode_key(text)
    kind, protected = _key_format(payload) if payload is not None else ('unknown', False)
    if kind == 'public':
        raise InvalidInput('%s.%s: %s holds a public key; signing needs the secret key' % (FIELD, option, where))
    if kind != req.tool:
        raise InvalidInput('%s.%s: %s does not hold a %s secret key (one made with %s)'
                           % (FIELD, option, where, req.tool, _KEY_HINT[req.tool]))
    if protected and not has_passphrase:
        raise InvalidInput('%s.%s: the %s key in %s is passphrase-protected; set %s.passphrase_file or '
                           '%s.passphrase_env, or use a key made with %s'
                           % (FIELD, option, req.tool, where, FIELD, FIELD, _NO_PASSPHRASE_HINT[req.tool]))


def check(req: SignRequest, environ: t.Mapping[str, str]) -> str:
    """Validate the request before any export work; returns the path of the signing program."""
    if req.tool not in TOOLS:
        raise InvalidInput('%s.tool: unknown signing tool %r; expected one of %s' % (FIELD, req.tool, ', '.join(TOOLS)))
    if bool(req.key_file) == bool(req.key_env):
        raise InvalidInput('%s: set exactly one of %s.key_file and %s.key_env' % (FIELD, FIELD, FIELD))
    if req.passphrase_file and req.passphrase_env:
        raise InvalidInput('%s: set at most one of %s.passphrase_file and %s.passphrase_env' % (FIELD, FIELD, FIELD))
    if req.key_id and req.tool != 'gpg':
        raise InvalidInput('%s.key_id: only gpg picks a key by id; a %s key file holds a single key' % (FIELD, req.tool))
    if req.key_file:
        _readable_file(req.key_file, 'key_file')
        text = None
    else:
        text = _key_text(req, environ)
    if req.passphrase_file:
        _readable_file(req.passphrase_file, 'passphrase_file')
    passphrase = _passphrase(req, environ)
    if passphrase is not None and not passphrase:
        option = 'passphrase_env' if req.passphrase_env else 'passphrase_file'
        raise InvalidInput('%s.%s: the first line of the passphrase is empty' % (FIELD, option))
    if req.tool != 'gpg':
        if text is None:
            try:
                with open(t.cast(str, req.key_file), 'r', encoding='utf-8') as handle:
                    text = handle.read(65536)
            except (OSError, UnicodeError) as exc:
                raise InvalidInput('%s.key_file: cannot read %s as a %s key: %s'
                                   % (FIELD, req.key_file, req.tool, exc.__class__.__name__))
        _check_key_format(req, text, passphrase is not None)
    if req.tool == 'signify' and req.key_file and not os.path.basename(req.key_file).endswith('.sec'):
        # signify -S refuses other names ("please use naming scheme of keyname.pub and keyname.sec")
        raise InvalidInput('%s.key_file: signify needs the secret key file name to end in .sec (got %s)'
                           % (FIELD, req.key_file))
    for name in _CANDIDATES[req.tool]:
        found = shutil.which(name)
        if found:
            return found
    raise ToolMissing('%s.tool: %s is not installed on the build host (looked for %s); install %s'
                      % (FIELD, req.tool, ' or '.join(_CANDIDATES[req.tool]), _PACKAGES[req.tool]))


def _secrets(key_text: t.Optional[str], passphrase: t.Optional[str]) -> t.List[str]:
    """Strings to scrub from tool output: the passphrase, the key text and each substantial line of it."""
    found: t.List[str] = []
    if passphrase:
        found.append(passphrase)
    if key_text:
        found.append(key_text)
        found.append(key_text.strip())
        for line in key_text.splitlines():
            line = line.strip()
            if len(line) >= 16 and not line.startswith('-----') and not line.startswith('untrusted comment:'):
                found.append(line)
    # longest first, so that a line inside the whole text does not break its replacement
    return sorted(set(found), key=len, reverse=True)


def _scrub(text: str, secrets: t.Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def _run(run: Runner, argv: t.List[str], what: str, secrets: t.Sequence[str], data: t.Optional[str] = None) -> None:
    if data is None:
        rc, out, err = run(argv, check_rc=False)
    else:
        rc, out, err = run(argv, check_rc=False, data=data)
    if rc != 0:
        out = _scrub(out or '', secrets)
        err = _scrub(err or '', secrets)
        detail = (err or out).strip()
        raise ToolError('%s failed (rc %d): %s' % (what, rc, detail or 'no output'),
                        cmd=argv, rc=rc, stdout=out, stderr=err)


def _write_private(directory: str, name: str, text: str) -> str:
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, 'w', encoding='utf-8') as handle:
        handle.write(text if text.endswith('\n') else text + '\n')
    return path


def _remove_tree(path: str) -> None:
    try:
        shutil.rmtree(path)
    except OSError:
        # an agent socket can vanish while the tree is walked; a second pass gets the rest
        shutil.rmtree(path, ignore_errors=True)


def _gpgconf(binary: str) -> t.Optional[str]:
    sibling = os.path.join(os.path.dirname(binary), 'gpgconf')
    if os.path.isfile(sibling) and os.access(sibling, os.X_OK):
        return sibling
    return shutil.which('gpgconf')


def _sign_gpg(req: SignRequest, path: str, out: str, run: Runner, binary: str, private: str,
              key_text: t.Optional[str], passphrase: t.Optional[str], secrets: t.Sequence[str]) -> None:
    home = tempfile.mkdtemp(prefix='osimage-gnupg-')
    os.chmod(home, 0o700)
    try:
        key_path = req.key_file or _write_private(private, 'key.asc', t.cast(str, key_text))
        _run(run, [binary, '--batch', '--homedir', home, '--import', key_path], 'gpg --import of the signing key', secrets)
        argv = [binary, '--batch', '--homedir', home, '--yes', '--armor', '--detach-sign', '--output', out]
        if req.key_id:
            argv += ['--local-user', req.key_id]
        argv += ['--pinentry-mode', 'loopback']
        if passphrase is not None:
            argv += ['--passphrase-file', req.passphrase_file or _write_private(private, 'passphrase', passphrase)]
        argv.append(path)
        _run(run, argv, 'gpg --detach-sign', secrets)
    finally:
        gpgconf = _gpgconf(binary)
        try:
            if gpgconf:
                # the import started a gpg-agent for this home; stop it before its home goes
                run([gpgconf, '--homedir', home, '--kill', 'all'], check_rc=False)
        finally:
            _remove_tree(home)


def trusted_name(path: str) -> str:
    """The file name minisign's trusted comment names: path's, without a staging .NAME.partial-XXXX wrapper."""
    name = os.path.basename(path)
    staged = _STAGED.match(name)
    return staged.group(1) if staged else name


def sign(req: SignRequest, path: str, out: str, run: Runner, environ: t.Mapping[str, str], binary: str,
         signed_name: t.Optional[str] = None) -> None:
    """Write the detached signature of path to out (overwritten if it exists).

    signed_name is the name the file is published under, for minisign's trusted comment
    (``file:NAME``); by default trusted_name(path).
    """
    key_text = _key_text(req, environ)
    passphrase = _passphrase(req, environ)
    secrets = _secrets(key_text, passphrase)
    private = tempfile.mkdtemp(prefix='osimage-sign-')
    try:
        os.chmod(private, 0o700)
        if req.tool == 'gpg':
            _sign_gpg(req, path, out, run, binary, private, key_text, passphrase, secrets)
            return
        # signify only takes a key file named *.sec; its untrusted comment then says "verify with key.pub"
        key_path = req.key_file or _write_private(private, 'key.sec' if req.tool == 'signify' else 'key',
                                                  t.cast(str, key_text))
        if req.tool == 'signify':
            argv = [binary, '-S', '-s', key_path, '-m', path, '-x', out]
        elif req.tool == 'minisign':
            argv = [binary, '-S', '-s', key_path, '-m', path, '-x', out, '-t',
                    'file:%s' % (signed_name or trusted_name(path))]
        else:
            raise InvalidInput('%s.tool: unknown signing tool %r; expected one of %s'
                               % (FIELD, req.tool, ', '.join(TOOLS)))
        # both read the passphrase from stdin when it is not a terminal
        _run(run, argv, '%s -S' % req.tool, secrets, data=passphrase)
    finally:
        _remove_tree(private)
