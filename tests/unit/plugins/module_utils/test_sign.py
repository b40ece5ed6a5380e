# -*- coding: utf-8 -*-
from __future__ import annotations

import base64
import os
import shutil
import stat
import subprocess
import tempfile
import typing as t

import pytest

from ansible_collections.osimage.builder.plugins.module_utils import _sign
from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput, ToolError, ToolMissing
from ansible_collections.osimage.builder.plugins.module_utils._sign import (
    TOOLS, SignRequest, check, sign, signature_name, trusted_name)

GPG = shutil.which('gpg')
SIGNIFY = shutil.which('signify') or shutil.which('signify-openbsd')
MINISIGN = shutil.which('minisign')
needs_gpg = pytest.mark.skipif(GPG is None or shutil.which('gpgconf') is None, reason='gpg is not installed')
needs_signify = pytest.mark.skipif(SIGNIFY is None, reason='signify is not installed')
needs_minisign = pytest.mark.skipif(MINISIGN is None, reason='minisign is not installed')

PASSPHRASE = 'correct horse battery staple'
SUMS_TEXT = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  disk.qcow2\n'


def real_run(argv: t.List[str], check_rc: bool = False, data: t.Optional[str] = None,
             binary_data: bool = False) -> t.Tuple[int, str, str]:
    """AnsibleModule.run_command's behaviour that matters here: data (plus a newline) on stdin."""
    assert check_rc is False
    if data:
        proc = subprocess.run(argv, input=data if binary_data else data + '\n', capture_output=True, text=True,
                              check=False)
    else:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


class Recorder:
    """A fake runner that records argv and stdin, looks at the files named in argv while the call runs,
    and plays back replies (the default reply is success)."""

    def __init__(self, replies: t.Optional[t.Dict[str, t.Tuple[int, str, str]]] = None) -> None:
        self.replies = replies or {}
        self.calls: t.List[t.List[str]] = []
        self.data: t.List[t.Optional[str]] = []
        self.files: t.Dict[str, t.Tuple[int, int, str]] = {}

    def __call__(self, argv: t.List[str], check_rc: bool = False,
                 data: t.Optional[str] = None) -> t.Tuple[int, str, str]:
        assert check_rc is False
        self.calls.append(list(argv))
        self.data.append(data)
        for arg in argv:
            if os.path.isfile(arg) and os.path.basename(os.path.dirname(arg)).startswith('osimage-sign-'):
                with open(arg, encoding='utf-8') as handle:
                    self.files[arg] = (stat.S_IMODE(os.stat(arg).st_mode),
                                       stat.S_IMODE(os.stat(os.path.dirname(arg)).st_mode), handle.read())
        for word, reply in self.replies.items():
            if word in argv:
                return reply
        return 0, '', ''


@pytest.fixture
def sums(tmp_path):
    path = tmp_path / 'SHA256SUMS'
    path.write_text(SUMS_TEXT)
    return str(path)


@pytest.fixture
def out(tmp_path):
    path = tmp_path / '.SHA256SUMS.sig.partial-abc123'
    path.write_text('stale content that must be replaced\n')
    return str(path)


@pytest.fixture
def tracked_dirs(monkeypatch):
    """Every directory the module creates with mkdtemp, to check that none is left behind."""
    made: t.List[str] = []
    original = tempfile.mkdtemp

    def mkdtemp(*args, **kwargs):
        path = original(*args, **kwargs)
        made.append(path)
        return path

    monkeypatch.setattr(_sign.tempfile, 'mkdtemp', mkdtemp)
    return made


def processes_mentioning(text: str) -> t.List[str]:
    found = []
    for pid in os.listdir('/proc') if os.path.isdir('/proc') else []:
        if not pid.isdigit():
            continue
        try:
            with open('/proc/%s/cmdline' % pid, 'rb') as handle:
                cmdline = handle.read().replace(b'\0', b' ').decode('utf-8', 'replace')
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


# --- synthetic key files, for check() without the tools ---------------------------------------------

def key_file_text(payload: bytes, comment: str = 'test secret key') -> str:
    return 'untrusted comment: %s\n%s\n' % (comment, base64.b64encode(payload).decode('ascii'))


SIGNIFY_PLAIN = key_file_text(b'EdBK' + b'\0\0\0\0' + b'\1' * 96)
SIGNIFY_PROTECTED = key_file_text(b'EdBK' + b'\0\0\0\x2a' + b'\1' * 96)
MINISIGN_PLAIN = key_file_text(b'Ed\0\0B2' + b'\1' * 152)
MINISIGN_PROTECTED = key_file_text(b'EdScB2' + b'\1' * 152)
PUBLIC = key_file_text(b'Ed' + b'\1' * 40, 'public key')


@pytest.fixture
def write(tmp_path):
    def write_file(name: str, text: str) -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)
    return write_file


@pytest.fixture
def all_tools(monkeypatch):
    monkeypatch.setattr(_sign.shutil, 'which', lambda name: '/usr/bin/%s' % name)


# --- signature_name -----------------------------------------------------------------------------------

@pytest.mark.parametrize('tool, expected', [
    ('gpg', 'SHA256SUMS.asc'), ('signify', 'SHA256SUMS.sig'), ('minisign', 'SHA256SUMS.minisig')])
def test_signature_name(tool, expected):
    assert signature_name(tool, 'SHA256SUMS') == expected


def test_signature_name_unknown_tool():
    with pytest.raises(InvalidInput, match='sign.tool'):
        signature_name('pgp', 'SHA256SUMS')


def test_tools():
    assert TOOLS == ('gpg', 'signify', 'minisign')


@pytest.mark.parametrize('path, expected', [
    ('/d/SHA256SUMS', 'SHA256SUMS'), ('/d/.SHA512SUMS.partial-k2j_x9a1', 'SHA512SUMS'), ('.hidden', '.hidden')])
def test_trusted_name(path, expected):
    assert trusted_name(path) == expected


# --- check() ------------------------------------------------------------------------------------------

def test_check_returns_binary(all_tools, write):
    assert check(SignRequest('gpg', key_file=write('k.asc', 'x')), {}) == '/usr/bin/gpg'
    assert check(SignRequest('signify', key_file=write('k.sec', SIGNIFY_PLAIN)), {}) == '/usr/bin/signify'
    assert check(SignRequest('minisign', key_env='K'), {'K': MINISIGN_PLAIN}) == '/usr/bin/minisign'


def test_check_signify_openbsd_name(monkeypatch, write):
    monkeypatch.setattr(_sign.shutil, 'which', lambda name: '/usr/bin/signify-openbsd' if name == 'signify-openbsd' else None)
    assert check(SignRequest('signify', key_file=write('k.sec', SIGNIFY_PLAIN)), {}) == '/usr/bin/signify-openbsd'


@pytest.mark.parametrize('tool, package', [
    ('gpg', 'gnupg'), ('signify', 'signify-openbsd'), ('minisign', 'minisign')])
def test_check_tool_missing(monkeypatch, write, tool, package):
    monkeypatch.setattr(_sign.shutil, 'which', lambda name: None)
    text = {'gpg': 'x', 'signify': SIGNIFY_PLAIN, 'minisign': MINISIGN_PLAIN}[tool]
    with pytest.raises(ToolMissing, match='install the Debian package %s' % package) as info:
        check(SignRequest(tool, key_file=write('key.sec', text)), {})
    assert 'sign.tool' in info.value.msg
    if tool == 'signify':
        assert 'signify or signify-openbsd' in info.value.msg


def test_check_unknown_tool(all_tools, write):
    with pytest.raises(InvalidInput, match=r"sign.tool: unknown signing tool 'pgp'; expected one of gpg, signify, minisign"):
        check(SignRequest('pgp', key_file=write('k', 'x')), {})


def test_check_needs_a_key(all_tools):
    with pytest.raises(InvalidInput, match='exactly one of sign.key_file and sign.key_env'):
        check(SignRequest('gpg'), {})


def test_check_not_both_keys(all_tools, write):
    with pytest.raises(InvalidInput, match='exactly one of sign.key_file and sign.key_env'):
        check(SignRequest('gpg', key_file=write('k', 'x'), key_env='K'), {'K': 'x'})


def test_check_key_file_missing(all_tools, tmp_path):
    with pytest.raises(InvalidInput, match='sign.key_file: .*/nope does not exist'):
        check(SignRequest('gpg', key_file=str(tmp_path / 'nope')), {})


def test_check_key_file_directory(all_tools, tmp_path):
    with pytest.raises(InvalidInput, match='sign.key_file: .* is not a regular file'):
        check(SignRequest('gpg', key_file=str(tmp_path)), {})


def test_check_key_file_unreadable(all_tools, write, monkeypatch):
    path = write('k', 'x')
    real_access = os.access
    monkeypatch.setattr(_sign.os, 'access', lambda p, mode: False if p == path else real_access(p, mode))
    with pytest.raises(InvalidInput, match='sign.key_file: .* is not readable'):
        check(SignRequest('gpg', key_file=path), {})


def test_check_key_env_not_set(all_tools):
    with pytest.raises(InvalidInput, match='^sign.key_env: the environment variable SIGN_KEY is not set$'):
        check(SignRequest('gpg', key_env='SIGN_KEY'), {})


def test_check_key_env_empty(all_tools):
    with pytest.raises(InvalidInput, match='^sign.key_env: the environment variable SIGN_KEY is empty$'):
        check(SignRequest('gpg', key_env='SIGN_KEY'), {'SIGN_KEY': ' \n'})


def test_check_two_passphrases(all_tools, write):
    with pytest.raises(InvalidInput, match='at most one of sign.passphrase_file and sign.passphrase_env'):
        check(SignRequest('gpg', key_file=write('k', 'x'), passphrase_file=write('p', 'pw'), passphrase_env='P'),
              {'P': 'pw'})


def test_check_passphrase_file_missing(all_tools, write, tmp_path):
    with pytest.raises(InvalidInput, match='sign.passphrase_file: .*/nope does not exist'):
        check(SignRequest('gpg', key_file=write('k', 'x'), passphrase_file=str(tmp_path / 'nope')), {})


def test_check_passphrase_env_not_set(all_tools, write):
    with pytest.raises(InvalidInput, match='^sign.passphrase_env: the environment variable SIGN_PW is not set$'):
        check(SignRequest('gpg', key_file=write('k', 'x'), passphrase_env='SIGN_PW'), {})


def test_check_passphrase_env_empty(all_tools, write):
    with pytest.raises(InvalidInput, match='^sign.passphrase_env: the environment variable SIGN_PW is empty$'):
        check(SignRequest('gpg', key_file=write('k', 'x'), passphrase_env='SIGN_PW'), {'SIGN_PW': ''})


def test_check_passphrase_file_empty_first_line(all_tools, write):
    with pytest.raises(InvalidInput, match='sign.passphrase_file: the first line of the passphrase is empty'):
        check(SignRequest('gpg', key_file=write('k', 'x'), passphrase_file=write('p', '\nsecond')), {})


@pytest.mark.parametrize('tool, text', [('signify', SIGNIFY_PLAIN), ('minisign', MINISIGN_PLAIN)])
def test_check_key_id_only_gpg(all_tools, write, tool, text):
    with pytest.raises(InvalidInput, match='sign.key_id: only gpg picks a key by id'):
        check(SignRequest(tool, key_file=write('k.sec', text), key_id='ABCD'), {})


def test_check_signify_key_name(all_tools, write):
    with pytest.raises(InvalidInput, match='sign.key_file: signify needs the secret key file name to end in .sec'):
        check(SignRequest('signify', key_file=write('signify.key', SIGNIFY_PLAIN)), {})


@pytest.mark.parametrize('tool', ['signify', 'minisign'])
def test_check_public_key(all_tools, write, tool):
    with pytest.raises(InvalidInput, match='sign.key_file: .* holds a public key; signing needs the secret key'):
        check(SignRequest(tool, key_file=write('k.sec', PUBLIC)), {})


@pytest.mark.parametrize('tool, text, hint', [
    ('signify', MINISIGN_PLAIN, 'signify -G'), ('minisign', SIGNIFY_PLAIN, 'minisign -G'),
    ('signify', 'not a key\n', 'signify -G'), ('minisign', '-----BEGIN PGP PRIVATE KEY BLOCK-----\n', 'minisign -G')])
def test_check_wrong_key_kind(all_tools, write, tool, text, hint):
    with pytest.raises(InvalidInput, match='does not hold a %s secret key \\(one made with %s\\)' % (tool, hint)):
        check(SignRequest(tool, key_file=write('k.sec', text)), {})


def test_check_wrong_key_kind_from_env_hides_the_text(all_tools):
    with pytest.raises(InvalidInput) as info:
        check(SignRequest('signify', key_env='SIGN_KEY'), {'SIGN_KEY': MINISIGN_PLAIN})
    assert info.value.msg.startswith('sign.key_env: the environment variable SIGN_KEY does not hold')
    assert MINISIGN_PLAIN.splitlines()[1] not in info.value.msg


@pytest.mark.parametrize('tool, text, hint', [
    ('signify', SIGNIFY_PROTECTED, 'signify -G -n'), ('minisign', MINISIGN_PROTECTED, 'minisign -G -W')])
def test_check_protected_key_needs_passphrase(all_tools, write, tool, text, hint):
    path = write('k.sec', text)
    with pytest.raises(InvalidInput, match='passphrase-protected; set sign.passphrase_file or sign.passphrase_env, '
                                           'or use a key made with %s' % hint):
        check(SignRequest(tool, key_file=path), {})
    assert check(SignRequest(tool, key_file=path, passphrase_env='P'), {'P': 'pw'}) == '/usr/bin/%s' % tool


@pytest.mark.parametrize('tool, text', [('signify', SIGNIFY_PLAIN), ('minisign', MINISIGN_PLAIN)])
def test_check_plain_key_with_passphrase_is_fine(all_tools, write, tool, text):
    assert check(SignRequest(tool, key_file=write('k.sec', text), passphrase_file=write('p', 'pw\n')), {})


# --- argv and secrets, with a recording runner --------------------------------------------------------

def test_argv_gpg_key_env_and_passphrase_env(sums, out, tracked_dirs):
    key_text = '-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlIYEZSECRETSECRETSECRETSECRETSECRET\n=abcd\n-----END PGP PRIVATE KEY BLOCK-----\n'
    environ = {'SIGN_KEY': key_text, 'SIGN_PW': PASSPHRASE}
    run = Recorder()
    sign(SignRequest('gpg', key_env='SIGN_KEY', passphrase_env='SIGN_PW', key_id='0xABCD'), sums, out, run,
         environ, '/usr/bin/gpg')
    private, home = tracked_dirs
    key_path = os.path.join(private, 'key.asc')
    pass_path = os.path.join(private, 'passphrase')
    assert run.calls[:2] == [
        ['/usr/bin/gpg', '--batch', '--homedir', home, '--import', key_path],
        ['/usr/bin/gpg', '--batch', '--homedir', home, '--yes', '--armor', '--detach-sign', '--output', out,
         '--local-user', '0xABCD', '--pinentry-mode', 'loopback', '--passphrase-file', pass_path, sums],
    ]
    assert run.calls[2][1:] == ['--homedir', home, '--kill', 'all']
    assert run.data == [None, None, None]
    assert run.files[key_path] == (0o600, 0o700, key_text)
    assert run.files[pass_path] == (0o600, 0o700, PASSPHRASE + '\n')
    argv_text = ' '.join(' '.join(call) for call in run.calls)
    assert 'SECRET' not in argv_text and PASSPHRASE not in argv_text
    assert not any(os.path.exists(d) for d in tracked_dirs)


def test_argv_gpg_key_file(sums, out, write, tracked_dirs):
    key = write('key.asc', 'x')
    pw = write('pw', PASSPHRASE)
    run = Recorder()
    sign(SignRequest('gpg', key_file=key, passphrase_file=pw), sums, out, run, {}, '/usr/bin/gpg')
    home = tracked_dirs[1]
    assert run.calls[:2] == [
        ['/usr/bin/gpg', '--batch', '--homedir', home, '--import', key],
        ['/usr/bin/gpg', '--batch', '--homedir', home, '--yes', '--armor', '--detach-sign', '--output', out,
         '--pinentry-mode', 'loopback', '--passphrase-file', pw, sums],
    ]


def test_argv_gpg_no_passphrase_still_loopback(sums, out, write):
    run = Recorder()
    sign(SignRequest('gpg', key_file=write('key.asc', 'x')), sums, out, run, {}, '/usr/bin/gpg')
    assert run.calls[1][-3:] == ['--pinentry-mode', 'loopback', sums]


def test_gpg_failure_kills_agent_and_removes_home(sums, out, write, tracked_dirs):
    run = Recorder({'--detach-sign': (2, '', 'gpg: signing failed: Bad passphrase\n')})
    with pytest.raises(ToolError, match=r'gpg --detach-sign failed \(rc 2\): gpg: signing failed: Bad passphrase'):
        sign(SignRequest('gpg', key_file=write('key.asc', 'x')), sums, out, run, {}, '/usr/bin/gpg')
    assert run.calls[-1][1:] == ['--homedir', tracked_dirs[1], '--kill', 'all']
    assert not any(os.path.exists(d) for d in tracked_dirs)


@pytest.mark.parametrize('tool, text', [('signify', SIGNIFY_PROTECTED), ('minisign', MINISIGN_PROTECTED)])
def test_argv_key_env_passphrase_on_stdin(sums, out, tracked_dirs, tool, text):
    environ = {'SIGN_KEY': text, 'SIGN_PW': PASSPHRASE + '\n'}
    run = Recorder()
    sign(SignRequest(tool, key_env='SIGN_KEY', passphrase_env='SIGN_PW'), sums, out, run, environ, '/bin/' + tool)
    key_path = os.path.join(tracked_dirs[0], 'key.sec' if tool == 'signify' else 'key')
    expected = ['/bin/' + tool, '-S', '-s', key_path, '-m', sums, '-x', out]
    if tool == 'minisign':
        expected += ['-t', 'file:SHA256SUMS']
    assert run.calls == [expected]
    assert run.data == [PASSPHRASE]
    assert run.files[key_path] == (0o600, 0o700, text)
    assert text.splitlines()[1] not in ' '.join(run.calls[0])
    assert not any(os.path.exists(d) for d in tracked_dirs)


def test_argv_minisign_staged_name_and_explicit_name(tmp_path, out, write):
    staged = tmp_path / '.SHA512SUMS.partial-x1y2z3'
    staged.write_text(SUMS_TEXT)
    key = write('k', MINISIGN_PLAIN)
    run = Recorder()
    sign(SignRequest('minisign', key_file=key), str(staged), out, run, {}, 'minisign')
    sign(SignRequest('minisign', key_file=key), str(staged), out, run, {}, 'minisign', signed_name='CHECKSUMS')
    assert [call[-2:] for call in run.calls] == [['-t', 'file:SHA512SUMS'], ['-t', 'file:CHECKSUMS']]
    assert run.data == [None, None]


@pytest.mark.parametrize('tool, binary', [('gpg', '/usr/bin/gpg'), ('signify', 'signify'), ('minisign', 'minisign')])
def test_error_scrubs_secrets(sums, out, tool, binary):
    key_line = 'RWRTY0Iy+EEZI0O0qgRWWydcl3/cIxijTnYBr81PPpn/sgQaDpoAAAACAAAAAAAAAEAA'
    key_text = 'untrusted comment: secret\n%s\n' % key_line
    stderr = 'bad key %s\npassphrase was %s\n' % (key_line, PASSPHRASE)
    run = Recorder({'-S': (1, 'echo ' + PASSPHRASE, stderr), '--detach-sign': (1, 'echo ' + PASSPHRASE, stderr)})
    with pytest.raises(ToolError) as info:
        sign(SignRequest(tool, key_env='K', passphrase_env='P'), sums, out, run, {'K': key_text, 'P': PASSPHRASE},
             binary)
    error = info.value
    shown = repr((error.msg, error.context))
    assert key_line not in shown and PASSPHRASE not in shown
    assert 'bad key <redacted>' in error.msg and 'passphrase was <redacted>' in error.msg
    assert error.context['rc'] == 1


# --- real signatures ----------------------------------------------------------------------------------

def gpg(home: str, *args: str, data: t.Optional[str] = None) -> str:
    rc, stdout, stderr = real_run([t.cast(str, GPG), '--batch', '--homedir', home] + list(args), data=data)
    assert rc == 0, stderr
    return stdout


@pytest.fixture(scope='module')
def gpg_keys(tmp_path_factory):
    base = tmp_path_factory.mktemp('gpgkeys')
    home = tempfile.mkdtemp(prefix='gpgt-')   # short: the agent socket lives in it
    verify_home = tempfile.mkdtemp(prefix='gpgv-')
    try:
        gpg(home, '--passphrase', '', '--quick-gen-key', 'Plain <plain@example.invalid>', 'ed25519', 'sign', 'never')
        gpg(home, '--passphrase', PASSPHRASE, '--quick-gen-key', 'Protected <prot@example.invalid>', 'ed25519',
            'sign', 'never')
        fprs = {}
        for name in ('Plain', 'Protected'):
            listing = gpg(home, '--with-colons', '--list-secret-keys', name)
            fprs[name] = [line.split(':')[9] for line in listing.splitlines() if line.startswith('fpr:')][0]
        loop = ['--pinentry-mode', 'loopback', '--passphrase', PASSPHRASE]
        files = {}
        for name, args in (('plain', ['Plain']), ('protected', ['Protected']), ('both', ['Plain', 'Protected'])):
            files[name] = str(base / ('%s.asc' % name))
            gpg(home, *(loop + ['--armor', '--output', files[name], '--export-secret-keys'] + args))
        public = str(base / 'public.asc')
        gpg(home, '--armor', '--output', public, '--export')
        gpg(verify_home, '--import', public)
        yield {'files': files, 'fprs': fprs, 'verify_home': verify_home}
    finally:
        for directory in (home, verify_home):
            subprocess.run(['gpgconf', '--homedir', directory, '--kill', 'all'], check=False)
            shutil.rmtree(directory, ignore_errors=True)


def gpg_signer(keys, signature: str, signed: str) -> str:
    """The fingerprint of the key that made a good signature."""
    status = gpg(keys['verify_home'], '--status-fd', '1', '--verify', signature, signed)
    valid = [line.split()[2] for line in status.splitlines() if line.startswith('[GNUPG:] VALIDSIG')]
    assert len(valid) == 1, status
    return valid[0]


@needs_gpg
@pytest.mark.parametrize('how', ['file', 'env'])
def test_gpg_plain_key(gpg_keys, sums, out, tracked_dirs, how):
    path = gpg_keys['files']['plain']
    if how == 'file':
        req, environ = SignRequest('gpg', key_file=path), {}
    else:
        with open(path) as handle:
            req, environ = SignRequest('gpg', key_env='SIGN_KEY'), {'SIGN_KEY': handle.read()}
    binary = check(req, environ)
    sign(req, sums, out, real_run, environ, binary)
    with open(out) as handle:
        assert handle.read().startswith('-----BEGIN PGP SIGNATURE-----')
    assert gpg_signer(gpg_keys, out, sums) == gpg_keys['fprs']['Plain']
    assert not any(os.path.exists(d) for d in tracked_dirs)
    assert not processes_mentioning(tracked_dirs[1])


@needs_gpg
@pytest.mark.parametrize('how', ['file', 'env'])
def test_gpg_protected_key(gpg_keys, sums, out, write, how):
    if how == 'file':
        req, environ = SignRequest('gpg', key_file=gpg_keys['files']['protected'],
                                   passphrase_file=write('pw', PASSPHRASE + '\n')), {}
    else:
        req, environ = (SignRequest('gpg', key_file=gpg_keys['files']['protected'], passphrase_env='SIGN_PW'),
                        {'SIGN_PW': PASSPHRASE})
    sign(req, sums, out, real_run, environ, check(req, environ))
    assert gpg_signer(gpg_keys, out, sums) == gpg_keys['fprs']['Protected']


@needs_gpg
def test_gpg_key_id_picks_the_key(gpg_keys, sums, out, write):
    fpr = gpg_keys['fprs']['Protected']
    req = SignRequest('gpg', key_file=gpg_keys['files']['both'], key_id=fpr, passphrase_file=write('pw', PASSPHRASE))
    sign(req, sums, out, real_run, {}, check(req, {}))
    assert gpg_signer(gpg_keys, out, sums) == fpr


@needs_gpg
def test_gpg_wrong_or_missing_passphrase(gpg_keys, sums, out, tracked_dirs):
    for environ in ({'SIGN_PW': 'wrong passphrase'}, {}):
        req = SignRequest('gpg', key_file=gpg_keys['files']['protected'], passphrase_env='SIGN_PW' if environ else None)
        with pytest.raises(ToolError, match='gpg --detach-sign failed') as info:
            sign(req, sums, out, real_run, environ, check(req, environ))
        assert 'wrong passphrase' not in repr((info.value.msg, info.value.context))
    assert not any(os.path.exists(d) for d in tracked_dirs)


def signify_tool(*args: str, data: t.Optional[str] = None) -> str:
    rc, stdout, stderr = real_run([t.cast(str, SIGNIFY)] + list(args), data=data)
    assert rc == 0, stderr
    return stdout


@pytest.fixture(scope='module')
def signify_keys(tmp_path_factory):
    base = tmp_path_factory.mktemp('signify')
    keys = {}
    for name in ('plain', 'protected'):
        keys[name] = (str(base / ('%s.pub' % name)), str(base / ('%s.sec' % name)))
    signify_tool('-G', '-n', '-c', 'test', '-p', keys['plain'][0], '-s', keys['plain'][1])
    # with stdin not a terminal signify reads the passphrase once from it (no confirmation)
    signify_tool('-G', '-c', 'test', '-p', keys['protected'][0], '-s', keys['protected'][1], data=PASSPHRASE)
    return keys


@needs_signify
@pytest.mark.parametrize('key, how', [('plain', 'file'), ('plain', 'env'), ('protected', 'passphrase_file'),
                                      ('protected', 'passphrase_env')])
def test_signify(signify_keys, sums, out, write, tracked_dirs, key, how):
    public, secret = signify_keys[key]
    environ: t.Dict[str, str] = {}
    if how == 'env':
        with open(secret) as handle:
            environ['SIGN_KEY'] = handle.read()
        req = SignRequest('signify', key_env='SIGN_KEY')
    elif how == 'passphrase_file':
        req = SignRequest('signify', key_file=secret, passphrase_file=write('pw', PASSPHRASE + '\n'))
    elif how == 'passphrase_env':
        environ['SIGN_PW'] = PASSPHRASE
        req = SignRequest('signify', key_file=secret, passphrase_env='SIGN_PW')
    else:
        req = SignRequest('signify', key_file=secret)
    sign(req, sums, out, real_run, environ, check(req, environ))
    signify_tool('-V', '-q', '-p', public, '-m', sums, '-x', out)
    with open(out) as handle:
        assert handle.readline().startswith('untrusted comment: ')
    assert not any(os.path.exists(d) for d in tracked_dirs)


@needs_signify
def test_signify_protected_key_checks(signify_keys, sums, out):
    public, secret = signify_keys['protected']
    with pytest.raises(InvalidInput, match='passphrase-protected'):
        check(SignRequest('signify', key_file=secret), {})
    with pytest.raises(InvalidInput, match='holds a public key'):
        check(SignRequest('signify', key_file=public), {})
    req = SignRequest('signify', key_file=secret, passphrase_env='SIGN_PW')
    environ = {'SIGN_PW': 'wrong passphrase'}
    with pytest.raises(ToolError, match='incorrect passphrase') as info:
        sign(req, sums, out, real_run, environ, check(req, environ))
    assert 'wrong passphrase' not in repr((info.value.msg, info.value.context))


def minisign_tool(*args: str, data: t.Optional[str] = None) -> str:
    rc, stdout, stderr = real_run([t.cast(str, MINISIGN)] + list(args), data=data)
    assert rc == 0, stderr
    return stdout


@pytest.fixture(scope='module')
def minisign_keys(tmp_path_factory):
    base = tmp_path_factory.mktemp('minisign')
    keys = {}
    for name in ('plain', 'protected'):
        keys[name] = (str(base / ('%s.pub' % name)), str(base / ('%s.key' % name)))
    minisign_tool('-G', '-W', '-p', keys['plain'][0], '-s', keys['plain'][1])
    minisign_tool('-G', '-p', keys['protected'][0], '-s', keys['protected'][1], data='%s\n%s' % (PASSPHRASE, PASSPHRASE))
    return keys


@needs_minisign
@pytest.mark.parametrize('key, how', [('plain', 'file'), ('plain', 'env'), ('protected', 'passphrase_file'),
                                      ('protected', 'passphrase_env')])
def test_minisign(minisign_keys, sums, out, write, tracked_dirs, key, how):
    public, secret = minisign_keys[key]
    environ: t.Dict[str, str] = {}
    if how == 'env':
        with open(secret) as handle:
            environ['SIGN_KEY'] = handle.read()
        req = SignRequest('minisign', key_env='SIGN_KEY')
    elif how == 'passphrase_file':
        req = SignRequest('minisign', key_file=secret, passphrase_file=write('pw', PASSPHRASE + '\n'))
    elif how == 'passphrase_env':
        environ['SIGN_PW'] = PASSPHRASE
        req = SignRequest('minisign', key_file=secret, passphrase_env='SIGN_PW')
    else:
        req = SignRequest('minisign', key_file=secret)
    sign(req, sums, out, real_run, environ, check(req, environ))
    verified = minisign_tool('-V', '-p', public, '-m', sums, '-x', out)
    assert 'Trusted comment: file:SHA256SUMS' in verified
    assert not any(os.path.exists(d) for d in tracked_dirs)


@needs_minisign
def test_minisign_protected_key_checks(minisign_keys, sums, out):
    public, secret = minisign_keys['protected']
    with pytest.raises(InvalidInput, match='passphrase-protected'):
        check(SignRequest('minisign', key_file=secret), {})
    with pytest.raises(InvalidInput, match='holds a public key'):
        check(SignRequest('minisign', key_file=public), {})
    req = SignRequest('minisign', key_file=secret, passphrase_env='SIGN_PW')
    environ = {'SIGN_PW': 'wrong passphrase'}
    with pytest.raises(ToolError, match='Wrong password') as info:
        sign(req, sums, out, real_run, environ, check(req, environ))
    assert 'wrong passphrase' not in repr((info.value.msg, info.value.context))


@needs_signify
@needs_minisign
def test_real_keys_of_the_other_tool_are_refused(signify_keys, minisign_keys):
    with pytest.raises(InvalidInput, match='does not hold a minisign secret key'):
        check(SignRequest('minisign', key_file=signify_keys['plain'][1]), {})
    with pytest.raises(InvalidInput, match='does not hold a signify secret key'):
        check(SignRequest('signify', key_file=shutil.copy(minisign_keys['plain'][1], signify_keys['plain'][1] + '.m.sec')), {})
