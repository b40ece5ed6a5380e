# -*- coding: utf-8 -*-
from __future__ import annotations

import http.client
import ipaddress
import json
import os
import socket
import subprocess
import threading
import time

import pytest

from ansible_collections.osimage.builder.plugins.module_utils import _httpserve
from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput, WaitTimeout
from ansible_collections.osimage.builder.plugins.module_utils._httpserve import (
    AutoinstallServeModule, AutoinstallServer, RangeNotSatisfiable, Refused, ResponseServer)

TOKEN = '0123456789abcdef0123456789abcdef'


# -- request paths --------------------------------------------------------------

@pytest.mark.parametrize('target, token, segments', [
    ('/preseed.cfg', None, ['preseed.cfg']),
    ('/nocloud/user-data?x=1#frag', None, ['nocloud', 'user-data']),
    ('//nocloud/./user-data', None, ['nocloud', 'user-data']),
    ('/a%20b.cfg', None, ['a b.cfg']),
    ('http://10.0.2.2:8000/install.conf', None, ['install.conf']),
    ('/%s/install.conf' % TOKEN, TOKEN, ['install.conf']),
    ('/%s/' % TOKEN, TOKEN, []),
])
def test_request_segments(target, token, segments):
    assert _httpserve.request_segments(target, token) == segments


@pytest.mark.parametrize('target, token, status', [
    ('/../etc/passwd', None, 403),
    ('/a/../../etc/passwd', None, 403),
    ('/%2e%2e/etc/passwd', None, 403),
    ('/%2E%2E/%2e%2e/etc/passwd', None, 403),
    ('/a%2f..%2f..%2fetc%2fpasswd', None, 403),
    ('/%00/x', None, 403),
    ('/%ff%fe', None, 404),
    ('*', None, 404),
    ('/install.conf', TOKEN, 404),
    ('/%s/install.conf' % ('f' * 32), TOKEN, 404),
    ('/', TOKEN, 404),
    ('/%s/../install.conf' % TOKEN, TOKEN, 403),
])
def test_request_segments_refused(target, token, status):
    with pytest.raises(Refused) as info:
        _httpserve.request_segments(target, token)
    assert info.value.status == status


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / 'www'
    (root / 'sub').mkdir(parents=True)
    (root / 'install.conf').write_text('System hostname = build\n')
    (root / 'sub' / 'site.tgz').write_bytes(b'\x1f\x8b' + b'x' * 100)
    (root / 'inside').symlink_to('sub/site.tgz')
    (root / 'passwd').symlink_to('/etc/passwd')
    (root / 'outdir').symlink_to(str(tmp_path))
    (tmp_path / 'secret').write_text('not below root\n')
    return root


def test_resolve_stays_inside_root(tree):
    assert _httpserve.resolve(str(tree), ['install.conf']) == str(tree / 'install.conf')
    assert _httpserve.resolve(str(tree), ['inside']) == str(tree / 'sub' / 'site.tgz')
    # outdir/www/install.conf leads back into root, outdir/secret does not.
    assert _httpserve.resolve(str(tree), ['outdir', 'www', 'install.conf']) == str(tree / 'install.conf')
    for segments in (['passwd'], ['outdir', 'secret']):
        with pytest.raises(Refused) as info:
            _httpserve.resolve(str(tree), segments)
        assert info.value.status == 403


def test_resolve_hides_the_servers_own_files(tmp_path):
    (tmp_path / 'autoinstall.json').write_text('{}')
    (tmp_path / 'other.txt').write_text('x')
    hidden = os.path.join(str(tmp_path), 'autoinstall.')
    with pytest.raises(Refused) as info:
        _httpserve.resolve(str(tmp_path), ['autoinstall.json'], hidden)
    assert info.value.status == 404
    assert _httpserve.resolve(str(tmp_path), ['other.txt'], hidden) == str(tmp_path / 'other.txt')


@pytest.mark.parametrize('key, segments', [
    ('preseed.cfg', ['preseed.cfg']),
    ('nocloud/user-data', ['nocloud', 'user-data']),
])
def test_files_keys(key, segments):
    assert _httpserve.files_key_segments(key) == segments


@pytest.mark.parametrize('key', ['/preseed.cfg', '../x', 'a/../b', 'a//b', './a', 'dir/', ''])
def test_files_keys_must_be_relative_paths(key):
    with pytest.raises(InvalidInput, match='not a relative path'):
        _httpserve.files_key_segments(key)


def test_url_paths_of_once_and_wait_for():
    assert _httpserve.url_path('preseed.cfg', 'once') == '/preseed.cfg'
    assert _httpserve.url_path('/nocloud//user-data', 'once') == '/nocloud/user-data'
    with pytest.raises(InvalidInput, match=r"wait_for: '\.\./x' is not a path"):
        _httpserve.url_path('../x', 'wait_for')
    with pytest.raises(InvalidInput):
        _httpserve.url_path('/', 'once')


# -- Range ------------------------------------------------------------------------

@pytest.mark.parametrize('header, size, expected', [
    (None, 100, None),
    ('bytes=0-9', 100, (0, 9)),
    ('bytes=10-', 100, (10, 99)),
    ('bytes=-10', 100, (90, 99)),
    ('bytes=-500', 100, (0, 99)),
    ('bytes=90-500', 100, (90, 99)),
    ('bytes=99-99', 100, (99, 99)),
    (' Bytes = 5-6 ', 100, (5, 6)),
    # ignored: the whole file is served
    ('bytes=0-1,5-6', 100, None),
    ('items=0-1', 100, None),
    ('bytes=5-2', 100, None),
    ('bytes=a-b', 100, None),
    ('bytes=5', 100, None),
    ('bytes=-', 100, None),
    ('bytes=\u00b2-3', 100, None),
])
def test_parse_range(header, size, expected):
    assert _httpserve.parse_range(header, size) == expected


@pytest.mark.parametrize('header, size', [
    ('bytes=100-', 100),
    ('bytes=200-300', 100),
    ('bytes=-0', 100),
    ('bytes=0-', 0),
    ('bytes=-5', 0),
])
def test_parse_range_unsatisfiable(header, size):
    with pytest.raises(RangeNotSatisfiable):
        _httpserve.parse_range(header, size)


# -- allow --------------------------------------------------------------------------

def networks(*entries):
    return [ipaddress.ip_network(entry) for entry in _httpserve.parse_allow(entries)]


@pytest.mark.parametrize('client, allow, allowed', [
    ('127.0.0.1', [], True),
    ('127.0.0.1', ['10.0.0.0/8'], False),
    ('10.0.2.15', ['10.0.0.0/8'], True),
    ('10.0.2.15', ['10.0.2.15'], True),
    ('10.0.2.16', ['10.0.2.15/32'], False),
    ('::ffff:10.0.2.15', ['10.0.2.0/24'], True),
    ('::1', ['127.0.0.0/8'], False),
    ('::1', ['::1/128', '10.0.0.0/8'], True),
    ('fe80::1%eth0', ['fe80::/10'], True),
    ('not-an-address', ['0.0.0.0/0'], False),
])
def test_client_allowed(client, allow, allowed):
    assert _httpserve.client_allowed(client, networks(*allow)) is allowed


def test_allow_is_normalised_and_checked():
    assert _httpserve.parse_allow(['10.1.2.3/8', '127.0.0.1', '10.0.0.0/8']) == ['10.0.0.0/8', '127.0.0.1/32']
    with pytest.raises(InvalidInput, match=r"allow\[1\]: '10.0.0.0/33' is not an address or network"):
        _httpserve.parse_allow(['10.0.0.0/8', '10.0.0.0/33'])


# -- configuration comparison ---------------------------------------------------------

RUNNING = {'bind': '127.0.0.1', 'port': 40000, 'root': '/srv/www', 'token': True, 'allow': ['10.0.0.0/8'],
           'once': ['/preseed.cfg'], 'lifetime': 21600}


@pytest.mark.parametrize('change, differs', [
    ({}, []),
    ({'port': 0}, []),
    ({'port': 40000}, []),
    ({'port': 40001}, ['port']),
    ({'bind': '0.0.0.0'}, ['bind']),
    ({'root': None}, ['root']),
    ({'token': False}, ['token']),
    ({'allow': []}, ['allow']),
    ({'once': []}, ['once']),
    ({'lifetime': 21600.0}, []),
    ({'lifetime': 60}, ['lifetime']),
    ({'bind': '::', 'port': 1}, ['bind', 'port']),
])
def test_config_differences(change, differs):
    assert _httpserve.config_differences(RUNNING, dict(RUNNING, **change)) == differs


@pytest.mark.parametrize('bind, port, token, url', [
    ('127.0.0.1', 8000, None, 'http://127.0.0.1:8000/'),
    ('0.0.0.0', 8000, TOKEN, 'http://127.0.0.1:8000/%s/' % TOKEN),
    ('::', 8000, None, 'http://[::1]:8000/'),
    ('fd00::1', 81, None, 'http://[fd00::1]:81/'),
])
def test_server_url(bind, port, token, url):
    assert _httpserve.server_url(bind, port, token) == url


def test_fetched_paths_from_the_log():
    lines = [
        {'method': 'HEAD', 'path': '/a', 'status': 200},
        {'method': 'GET', 'path': '/b', 'status': 404},
        {'method': 'GET', 'path': '/c', 'status': 206},
        {'method': 'GET', 'path': '/d', 'status': 200},
        {'method': 'GET', 'path': '/a', 'status': 200},
        {'method': 'GET', 'path': '/d', 'status': 200},
    ]
    text = ''.join(json.dumps(line) + '\n' for line in lines) + '{"method": "GET", "path": "/e", "sta'
    assert _httpserve.fetched_paths(_httpserve.parse_log(text)) == ['/d', '/a']


# -- options ------------------------------------------------------------------------------

def params(tmp_path, **overrides):
    base = dict(state='started', name='autoinstall', work_dir=str(tmp_path / 'work'), bind='127.0.0.1', port=0,
                root=None, files={'preseed.cfg': 'd-i foo\n'}, token=False, once=[], allow=[], wait_for=[],
                wait_timeout=5.0, lifetime=60)
    base.update(overrides)
    return base


def test_normalise(tmp_path, tree):
    spec, files, wait_for = _httpserve.normalise(params(
        tmp_path, root=str(tree), files={'nocloud/meta-data': None, 'nocloud/user-data': '#cloud-config\n'},
        once=['nocloud/user-data', '/nocloud/user-data'], allow=['10.0.2.15'], wait_for=['nocloud/user-data']))
    assert spec == {'bind': '127.0.0.1', 'port': 0, 'root': str(tree), 'token': False, 'allow': ['10.0.2.15/32'],
                    'once': ['/nocloud/user-data'], 'lifetime': 60, 'lease': None, 'lease_ttl': None}
    assert files == {'nocloud/meta-data': b'', 'nocloud/user-data': b'#cloud-config\n'}
    assert wait_for == ['/nocloud/user-data']


@pytest.mark.parametrize('overrides, message', [
    ({'root': '/nonexistent/www'}, 'root: /nonexistent/www does not exist'),
    ({'files': {'/preseed.cfg': 'x'}}, "files: '/preseed.cfg' is not a relative path"),
    ({'files': {'a': 'x', 'a/b': 'y'}}, "files: 'a' cannot be both a file and the directory of 'a/b'"),
    ({'files': {'meta-data': {'instance-id': 'x'}}}, "files: the content of 'meta-data' must be a string"),
    ({'port': 70000}, 'port: 70000 is not a TCP port'),
    ({'name': '../x'}, "name: '../x' must start with a letter"),
    ({'lifetime': 0}, 'lifetime: must be more than 0 seconds'),
])
def test_normalise_rejects(tmp_path, overrides, message):
    with pytest.raises(InvalidInput) as info:
        _httpserve.normalise(params(tmp_path, **overrides))
    assert info.value.msg.startswith(message)


def test_root_must_be_a_directory(tmp_path):
    (tmp_path / 'file').write_text('x')
    with pytest.raises(InvalidInput, match='is not a directory'):
        _httpserve.normalise(params(tmp_path, root=str(tmp_path / 'file')))


def test_port_in_use_is_named():
    with socket.socket() as holder:
        holder.bind(('127.0.0.1', 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        with pytest.raises(InvalidInput) as info:
            _httpserve.probe_listen('127.0.0.1', port)
    assert info.value.msg.startswith('port: %d on 127.0.0.1 is already in use by another process' % port)


def test_bind_address_must_be_on_this_host():
    # 192.0.2.0/24 is TEST-NET-1: never an address of this host.
    with pytest.raises(InvalidInput, match=r'^bind: 192\.0\.2\.1 is not an address of this host$'):
        _httpserve.probe_listen('192.0.2.1', 0)


# -- the server, in this process --------------------------------------------------------------

class Served:
    def __init__(self, tmp_path, root, token=None, once=(), allow=(), name='srv'):
        self.files_dir = tmp_path / (name + '.files')
        self.files_dir.mkdir(exist_ok=True)
        self.log_path = tmp_path / (name + '.log')
        self.log_fd = os.open(str(self.log_path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.server = ResponseServer(('127.0.0.1', 0), socket.AF_INET, str(self.files_dir), str(root), token,
                                     once, allow, str(tmp_path / (name + '.')), self.log_fd)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={'poll_interval': 0.05})
        self.thread.start()

    def request(self, path, method='GET', headers=None):
        conn = http.client.HTTPConnection('127.0.0.1', self.port, timeout=5)
        try:
            # http.client sends the path exactly as given ("..", "%2e%2e" and all).
            conn.putrequest(method, path, skip_accept_encoding=True)
            for key, value in (headers or {}).items():
                conn.putheader(key, value)
            conn.endheaders()
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def log(self, count):
        """The log once it holds count lines: a request is logged just after its answer was sent."""
        deadline = time.monotonic() + 5
        while True:
            entries = _httpserve.parse_log(self.log_path.read_text())
            if len(entries) >= count or time.monotonic() > deadline:
                return entries
            time.sleep(0.01)

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
        os.close(self.log_fd)


@pytest.fixture
def served(tmp_path, tree):
    running = []

    def start(**kwargs):
        running.append(Served(tmp_path, tree, name='srv%d' % len(running), **kwargs))
        return running[-1]

    yield start
    for server in running:
        server.close()


def test_get_head_and_range(served):
    srv = served()
    status, headers, body = srv.request('/install.conf')
    assert (status, body) == (200, b'System hostname = build\n')
    assert headers['Content-Length'] == str(len(body))
    assert headers['Accept-Ranges'] == 'bytes'
    status, headers, body = srv.request('/install.conf', 'HEAD')
    assert (status, body, headers['Content-Length']) == (200, b'', '24')
    status, headers, body = srv.request('/sub/site.tgz', headers={'Range': 'bytes=1-4'})
    assert (status, body) == (206, b'\x8bxxx')
    assert headers['Content-Range'] == 'bytes 1-4/102'
    assert headers['Content-Length'] == '4'
    status, headers, body = srv.request('/install.conf', headers={'Range': 'bytes=-5'})
    assert (status, body) == (206, b'uild\n')
    status, headers, _body = srv.request('/install.conf', headers={'Range': 'bytes=500-'})
    assert status == 416
    assert headers['Content-Range'] == 'bytes */24'
    # Each request is logged when its answer was sent, by its own thread: compare without the order.
    logged = [(e['method'], e['path'], e['status'], e['bytes'], e['range'] or '') for e in srv.log(5)]
    assert sorted(logged) == sorted([
        ('GET', '/install.conf', 200, 24, ''),
        ('HEAD', '/install.conf', 200, 0, ''),
        ('GET', '/sub/site.tgz', 206, 4, 'bytes=1-4'),
        ('GET', '/install.conf', 206, 5, 'bytes=-5'),
        ('GET', '/install.conf', 416, 0, 'bytes=500-'),
    ])


def test_no_listing_no_traversal(served):
    srv = served()
    for path, status in [('/', 404), ('/sub/', 404), ('/sub', 404), ('/missing', 404),
                         ('/../etc/passwd', 403), ('/%2e%2e/%2e%2e/etc/passwd', 403), ('/passwd', 403),
                         ('/outdir/secret', 403), ('/inside', 200)]:
        assert srv.request(path)[0] == status, path
    assert srv.request('/install.conf', 'POST')[0] == 405
    assert sorted(entry['status'] for entry in srv.log(10)) == [200, 403, 403, 403, 403, 404, 404, 404, 404, 405]


def test_files_first_then_root_and_once(served):
    srv = served(once=['/install.conf', '/sub/site.tgz'])
    (srv.files_dir / 'install.conf').write_text('from files\n')
    assert srv.request('/install.conf', 'HEAD')[0] == 200
    status, headers, body = srv.request('/install.conf', headers={'Range': 'bytes=0-3'})
    # A file served once is served whole, so the one chance is not spent on a part of it.
    assert (status, body) == (200, b'from files\n')
    assert 'Accept-Ranges' not in headers
    srv.log(2)
    assert not (srv.files_dir / 'install.conf').exists()
    assert srv.request('/install.conf')[0] == 410
    assert srv.request('/install.conf', 'HEAD')[0] == 410
    assert srv.request('/sub/site.tgz')[0] == 200
    assert srv.request('/sub/site.tgz')[0] == 410
    # Files of root are never removed.
    assert srv.server.root and os.path.exists(os.path.join(srv.server.root, 'sub', 'site.tgz'))


def test_token_and_allow(served):
    srv = served(token=TOKEN)
    assert srv.request('/install.conf')[0] == 404
    assert srv.request('/%s/install.conf' % TOKEN)[0] == 200
    assert srv.request('/%s/../x' % TOKEN)[0] == 403
    assert srv.request('/%s/../x' % TOKEN, 'HEAD')[0] == 403
    # The log never holds the token; a request without it says so.
    assert sorted((e['method'], e['path'], e['status'], e.get('token')) for e in srv.log(4)) == [
        ('GET', '/../x', 403, None), ('GET', '/install.conf', 200, None), ('GET', '/install.conf', 404, False),
        ('HEAD', '/../x', 403, None)]
    assert TOKEN not in srv.log_path.read_text()
    denied = served(allow=['10.0.0.0/8'])
    assert denied.request('/install.conf')[0] == 403
    entry = denied.log(1)[-1]
    assert (entry['client'], entry['path'], entry['status']) == ('127.0.0.1', '/install.conf', 403)


def test_servers_own_files_are_hidden_in_root(tmp_path):
    (tmp_path / 'srv.json').write_text('{"token": "secret"}')
    (tmp_path / 'shared.txt').write_text('ok')
    srv = Served(tmp_path, tmp_path)
    try:
        assert srv.request('/srv.json')[0] == 404
        assert srv.request('/srv.log')[0] == 404
        assert srv.request('/shared.txt')[0] == 200
    finally:
        srv.close()


# -- files directory ---------------------------------------------------------------------------

def test_sync_files(tmp_path):
    server = AutoinstallServer(str(tmp_path), 'autoinstall')
    os.mkdir(server.paths.files_dir, 0o700)
    assert server.sync_files({'a.cfg': b'one', 'nocloud/user-data': b'two'}) is True
    assert server.existing_files() == ['a.cfg', 'nocloud/user-data']
    assert os.stat(os.path.join(server.paths.files_dir, 'nocloud')).st_mode & 0o777 == 0o700
    assert os.stat(os.path.join(server.paths.files_dir, 'a.cfg')).st_mode & 0o777 == 0o600
    assert server.sync_files({'a.cfg': b'one', 'nocloud/user-data': b'two'}) is False
    checking = AutoinstallServer(str(tmp_path), 'autoinstall', check_mode=True)
    assert checking.sync_files({'a.cfg': b'changed'}) is True
    assert server.existing_files() == ['a.cfg', 'nocloud/user-data']
    assert server.sync_files({'a.cfg': b'changed', 'nocloud': b'now a file'}) is True
    assert server.existing_files() == ['a.cfg', 'nocloud']
    with open(os.path.join(server.paths.files_dir, 'a.cfg'), 'rb') as handle:
        assert handle.read() == b'changed'
    os.unlink(os.path.join(server.paths.files_dir, 'a.cfg'))
    assert server.sync_files({'a.cfg': b'changed', 'nocloud': b'now a file'}, keep=['/a.cfg']) is False
    assert not [name for name in os.listdir(str(tmp_path)) if 'tmp' in name]


# -- the daemon, through the module's state machine -----------------------------------------------

def test_started_idempotent_update_and_stopped(tmp_path, tree):
    work = tmp_path / 'work'

    def run(check_mode=False, **overrides):
        server = AutoinstallServer(str(work), 'autoinstall', check_mode=check_mode)
        return AutoinstallServeModule(server).run(params(tmp_path, **overrides))

    checked = run(check_mode=True, root=str(tree))
    assert checked['changed'] is True and checked['pid'] is None and not work.exists()
    started = run(root=str(tree), token=True)
    try:
        assert started['changed'] is True and started['pid'] > 0
        assert started['url'] == 'http://127.0.0.1:%d%s' % (started['port'], started['url_path'])
        again = run(root=str(tree), token=True)
        assert (again['changed'], again['pid'], again['url']) == (False, started['pid'], started['url'])
        conn = http.client.HTTPConnection('127.0.0.1', started['port'], timeout=5)
        conn.request('GET', started['url_path'] + 'preseed.cfg')
        assert conn.getresponse().read() == b'd-i foo\n'
        conn.close()
        updated = run(root=str(tree), token=True, files={'preseed.cfg': 'd-i bar\n'}, wait_for=['preseed.cfg'])
        assert (updated['changed'], updated['pid'], updated['url']) == (True, started['pid'], started['url'])
        assert updated['fetched'] == ['/preseed.cfg']
        with pytest.raises(WaitTimeout) as info:
            run(root=str(tree), token=True, files={'preseed.cfg': 'd-i bar\n'}, wait_for=['never.cfg'],
                wait_timeout=0.3)
        assert info.value.msg.startswith('wait_for: /never.cfg was not fetched within 0.3 s')
        assert 'GET /preseed.cfg -> 200' in info.value.msg
        restarted = run(root=str(tree), token=False, files={'preseed.cfg': 'd-i bar\n'})
        assert restarted['changed'] is True and restarted['pid'] != started['pid']
        assert restarted['restarted_for'] == ['token'] and restarted['fetched'] == []
        assert not _httpserve.process_alive(started['pid'])
        # The same port on another address: the running server gives the port up for its successor.
        moved = run(root=str(tree), files={'preseed.cfg': 'd-i bar\n'}, bind='127.0.0.2', port=restarted['port'])
        assert moved['restarted_for'] == ['bind']
        assert moved['url'] == 'http://127.0.0.2:%d/' % restarted['port']
    finally:
        stopped = run(state='stopped')
    assert stopped['changed'] is True
    assert sorted(os.listdir(str(work))) == ['autoinstall.log']
    assert run(state='stopped')['changed'] is False


def test_a_pid_without_its_record_is_not_taken_for_the_server(tmp_path):
    server = AutoinstallServer(str(tmp_path), 'autoinstall')
    with open(server.paths.pidfile, 'w', encoding='ascii') as handle:
        handle.write('%d\n' % os.getpid())
    assert server.running() is False
    server.stop()
    assert not os.path.exists(server.paths.pidfile)


# -- serve_until and the build's lease -------------------------------------------------------------

@pytest.fixture
def keep_signal_handlers():
    import signal
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def daemon_parts(tmp_path, tree):
    files_dir = tmp_path / 'srv.files'
    files_dir.mkdir()
    pidfile = tmp_path / 'srv.pid'
    pidfile.write_text('%d\n' % os.getpid())
    log_fd = os.open(str(tmp_path / 'srv.log'), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    server = ResponseServer(('127.0.0.1', 0), socket.AF_INET, str(files_dir), str(tree), None, (), (),
                            str(tmp_path / 'srv.'), log_fd)
    return server, files_dir, pidfile, log_fd


def test_serve_until_stops_when_the_lease_goes_stale(tmp_path, tree, keep_signal_handlers):
    lease = tmp_path / 'lease'
    lease.write_text('{"build_id": "b1", "ttl": 1}')
    server, files_dir, pidfile, log_fd = daemon_parts(tmp_path, tree)
    port = server.server_address[1]
    begun = time.monotonic()
    try:
        why = _httpserve.serve_until(server, 3600, str(files_dir), str(pidfile), str(lease), 1.0)
    finally:
        os.close(log_fd)
    # The lease was fresh when serving began: it stops about a ttl later, not at once and not after its lifetime.
    assert why == 'lease expired'
    assert 0.9 <= time.monotonic() - begun < 5
    assert not files_dir.exists() and not pidfile.exists()
    with pytest.raises(OSError):
        socket.create_connection(('127.0.0.1', port), timeout=1).close()


def test_serve_until_keeps_serving_while_the_lease_is_refreshed(tmp_path, tree, keep_signal_handlers):
    lease = tmp_path / 'lease'
    lease.write_text('{"build_id": "b1", "ttl": 1}')
    ticks = iter([0.0] + [0.1 * step for step in range(1, 30)] + [10.0] * 100)

    def clock():
        # Each check of the loop is a tick; the heartbeat goes on meanwhile, until the lifetime is over.
        os.utime(str(lease), None)
        return next(ticks)

    server, files_dir, pidfile, log_fd = daemon_parts(tmp_path, tree)
    try:
        why = _httpserve.serve_until(server, 5, str(files_dir), str(pidfile), str(lease), 1.0, clock=clock)
    finally:
        os.close(log_fd)
    assert why == 'lifetime'


def test_a_server_is_not_started_on_a_stale_lease(tmp_path):
    lease = tmp_path / 'lease'
    lease.write_text('{"build_id": "b1"}')
    os.utime(str(lease), (time.time() - 100, time.time() - 100))
    server = _httpserve.AutoinstallServer(str(tmp_path / 'work'), 'seed')
    spec, files, dummy = _httpserve.normalise(params(tmp_path, lease=str(lease), lease_ttl=6))
    with pytest.raises(InvalidInput, match='lease: .* is stale'):
        server.start(spec, files)
    assert not server.running()


def test_a_new_lease_restarts_the_server():
    assert _httpserve.config_differences(dict(RUNNING, lease=None, lease_ttl=None),
                                         dict(RUNNING, lease='/w/lease', lease_ttl=6.0)) == ['lease', 'lease_ttl']
    assert _httpserve.config_differences(dict(RUNNING, lease='/w/lease', lease_ttl=6),
                                         dict(RUNNING, lease='/w/lease', lease_ttl=6.0)) == []


def test_a_server_of_record_runs_only_while_its_pid_is_the_process_that_started(tmp_path):
    """A pid reused since the record was written (a reboot) is not the server; a zombie neither."""
    server = _httpserve.AutoinstallServer(str(tmp_path), 'seed')
    me = _httpserve.PROCESSES.info(os.getpid())

    def record(pid, starttime):
        with open(server.paths.pidfile, 'w', encoding='ascii') as handle:
            handle.write('%d\n' % pid)
        with open(server.paths.statefile, 'w', encoding='utf-8') as handle:
            json.dump({'pid': pid, 'starttime': starttime}, handle)

    record(os.getpid(), me.start)
    assert server.running()
    record(os.getpid(), None)
    assert server.running()
    record(os.getpid(), 'not-' + me.start)
    assert not server.running()
    zombie = subprocess.Popen(['true'])
    deadline = time.monotonic() + 5
    while _httpserve.PROCESSES.info(zombie.pid).state[0] != 'Z' and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        record(zombie.pid, None)
        assert not server.running()
    finally:
        zombie.wait()
