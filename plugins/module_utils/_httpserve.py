# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""autoinstall_serve: the HTTP server that hands installers their response files.

The server is a daemon that outlives the module (see _daemon.daemonize). The
module binds the listening socket itself, so a busy port or a foreign bind
address is an error of the task and not of a daemon nobody watches, and then
forks the daemon that serves on it. Its files live in the work directory under
the server's name:

  NAME.pid     pid of the daemon
  NAME.json    configuration, token, url, pid, where this server's log lines start
  NAME.log     one JSON line per request (kept when the server is stopped)
  NAME.files/  the `files` option as files (0700 directory, 0600 files); read on
               every request, so new contents are served without a restart

Besides its lifetime, a server started with a build's lease (see _lease) ends
as soon as that lease goes stale: the build that started it is gone.

The pure parts (request path resolution, Range parsing, the allow check, the
configuration comparison) are plain functions for the unit tests.
"""

from __future__ import annotations

import datetime
import errno
import hmac
import ipaddress
import json
import mimetypes
import os
import re
import secrets
import shutil
import signal
import socket
import socketserver
import stat
import threading
import time
import typing as t
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from ansible_collections.osimage.builder.plugins.module_utils import _daemon, _lease
from ansible_collections.osimage.builder.plugins.module_utils._errors import (
    InvalidInput, OsImageError, WaitTimeout)

NAME_RE = re.compile(r'^[A-Za-z][A-Za-z0-9_.-]{0,63}$')
# A change of any of these needs a new listening socket or a new server process.
RESTART_KEYS = ('bind', 'port', 'root', 'token', 'allow', 'once', 'lifetime', 'lease', 'lease_ttl')
STOP_GRACE = 5.0
CHUNK = 65536
_DIGITS = re.compile(r'^[0-9]+$')

Network = t.Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class ServeError(OsImageError):
    """The server could not be started, stopped or watched."""


class Refused(Exception):
    """Ends a request with an HTTP error status (raised inside the request handler)."""

    def __init__(self, status: int, headers: t.Optional[t.Dict[str, str]] = None) -> None:
        super().__init__(status)
        self.status = status
        self.headers = headers or {}


class RangeNotSatisfiable(Exception):
    """A Range header that no byte of the file satisfies (416)."""


class ServePaths(t.NamedTuple):
    pidfile: str
    statefile: str
    log: str
    files_dir: str


def serve_paths(work_dir: str, name: str) -> ServePaths:
    base = os.path.join(work_dir, name)
    return ServePaths(base + '.pid', base + '.json', base + '.log', base + '.files')


# -- pure parts ---------------------------------------------------------------


def files_key_segments(key: str) -> t.List[str]:
    """The path segments of a `files` key, which must be a plain relative path."""
    if not isinstance(key, str) or not key:
        raise InvalidInput('files: %r is not a relative path' % (key,))
    if key.startswith('/'):
        raise InvalidInput('files: %r is not a relative path; write it without the leading "/"' % key)
    segments = key.split('/')
    if '\x00' in key or any(segment in ('', '.', '..') for segment in segments):
        raise InvalidInput('files: %r is not a relative path (empty, "." and ".." segments are not allowed)' % key)
    return segments


def url_path(path: str, field: str) -> str:
    """A path of `once` or `wait_for` in the form the log uses: "/dir/file" below the URL."""
    segments = [segment for segment in str(path).split('/') if segment not in ('', '.')]
    if not segments or '..' in segments or '\x00' in path:
        raise InvalidInput('%s: %r is not a path of a file below the server URL' % (field, path))
    return '/' + '/'.join(segments)


def target_path(target: str) -> str:
    """The path of a request target, without query or fragment (origin or absolute form)."""
    if target.startswith('/'):
        return target.split('?', 1)[0].split('#', 1)[0]
    if '://' in target:
        return urlsplit(target).path or '/'
    return target


def request_segments(target: str, token: t.Optional[str]) -> t.List[str]:
    """Decode a request path into segments below the served tree.

    A missing or wrong token is 404, a ".." segment - literal or percent-encoded -
    is 403; empty and "." segments are dropped.
    """
    path = target_path(target)
    if not path.startswith('/'):
        raise Refused(404)
    try:
        decoded = unquote(path, errors='strict')
    except UnicodeDecodeError as exc:
        raise Refused(404) from exc
    if '\x00' in decoded:
        raise Refused(403)
    parts = decoded.split('/')[1:]
    if token:
        if not parts or not hmac.compare_digest(parts[0].encode('utf-8'), token.encode('utf-8')):
            raise Refused(404)
        parts = parts[1:]
    segments = []
    for part in parts:
        if part in ('', '.'):
            continue
        if part == '..':
            raise Refused(403)
        segments.append(part)
    return segments


def resolve(base: str, segments: t.Sequence[str], hidden_prefix: t.Optional[str] = None) -> str:
    """The real path of segments below base; 403 when it (through symlinks) leaves base.

    hidden_prefix hides the server's own files when the served root contains them.
    """
    base_real = os.path.realpath(base)
    real = os.path.realpath(os.path.join(base_real, *segments))
    inside = base_real.rstrip(os.sep) + os.sep
    if real != base_real and not real.startswith(inside):
        raise Refused(403)
    if hidden_prefix and real.startswith(hidden_prefix):
        raise Refused(404)
    return real


def parse_range(header: t.Optional[str], size: int) -> t.Optional[t.Tuple[int, int]]:
    """The (first, last) byte of a single-range "Range: bytes=..." header, inclusive.

    None means "serve the whole file": no header, another unit, several ranges or a
    malformed one (RFC 9110 lets a server ignore those). RangeNotSatisfiable means 416.
    """
    if not header:
        return None
    unit, equals, spec = header.strip().partition('=')
    if not equals or unit.strip().lower() != 'bytes':
        return None
    spec = spec.strip()
    if ',' in spec:
        return None
    first, dash, last = spec.partition('-')
    first, last = first.strip(), last.strip()
    if not dash:
        return None
    if not first:
        if not _DIGITS.match(last):
            return None
        length = int(last)
        if length == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return max(0, size - length), size - 1
    if not _DIGITS.match(first) or (last and not _DIGITS.match(last)):
        return None
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(header)
    return start, min(end, size - 1)


def parse_allow(entries: t.Iterable[str]) -> t.List[str]:
    """Client networks in canonical form ("10.0.0.0/8"), sorted; host bits are dropped."""
    networks = set()
    for index, entry in enumerate(entries):
        try:
            networks.add(str(ipaddress.ip_network(str(entry).strip(), strict=False)))
        except ValueError as exc:
            raise InvalidInput('allow[%d]: %r is not an address or network in CIDR form: %s'
                               % (index, entry, exc)) from exc
    return sorted(networks)


def plain_address(address: str) -> str:
    """A client address as the log shows it: IPv4-mapped IPv6 addresses as IPv4."""
    try:
        ip = ipaddress.ip_address(address.split('%', 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    return str(ip)


def client_allowed(address: str, networks: t.Sequence[Network]) -> bool:
    if not networks:
        return True
    try:
        ip = ipaddress.ip_address(plain_address(address))
    except ValueError:
        return False
    return any(ip.version == net.version and ip in net for net in networks)


def config_differences(old: t.Dict[str, t.Any], new: t.Dict[str, t.Any]) -> t.List[str]:
    """Options of a running server (old) that the request (new) changes; port 0 accepts any port."""
    differs = []
    for key in RESTART_KEYS:
        before, after = old.get(key), new.get(key)
        if key == 'port' and not after:
            continue
        if key == 'token':
            before, after = bool(before), bool(after)
        elif key in ('lifetime', 'lease_ttl'):
            before, after = float(before or 0), float(after or 0)
        elif key in ('allow', 'once'):
            before, after = sorted(before or []), sorted(after or [])
        if before != after:
            differs.append(key)
    return differs


def url_host(bind: str) -> str:
    """How a local client reaches bind: wildcard addresses through loopback, IPv6 in brackets."""
    if bind in ('', '0.0.0.0'):
        return '127.0.0.1'
    if bind == '::':
        return '[::1]'
    if ':' in bind:
        return '[%s]' % bind
    return bind


def url_prefix(token: t.Optional[str]) -> str:
    return '/%s/' % token if token else '/'


def server_url(bind: str, port: int, token: t.Optional[str]) -> str:
    return 'http://%s:%d%s' % (url_host(bind), port, url_prefix(token))


def parse_log(text: str) -> t.List[t.Dict[str, t.Any]]:
    """The request records of a log; an incomplete last line (being written) is left out."""
    entries = []
    for line in text.split('\n')[:-1]:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def fetched_paths(entries: t.Iterable[t.Dict[str, t.Any]]) -> t.List[str]:
    """Paths fetched in full (GET answered 200), in the order they were first fetched."""
    seen: t.List[str] = []
    for entry in entries:
        if entry.get('method') == 'GET' and entry.get('status') == 200 and entry.get('path') not in seen:
            seen.append(entry['path'])
    return seen


def describe_request(entry: t.Dict[str, t.Any]) -> str:
    text = '%s %s %s %s -> %s' % (entry.get('time'), entry.get('client'), entry.get('method'),
                                  entry.get('path'), entry.get('status'))
    if entry.get('range'):
        text += ' (Range: %s)' % entry['range']
    return text


def _now_iso(now: t.Optional[float] = None) -> str:
    moment = datetime.datetime.fromtimestamp(time.time() if now is None else now, tz=datetime.timezone.utc)
    return moment.isoformat(timespec='milliseconds').replace('+00:00', 'Z')


# -- the server (runs in the daemon) --------------------------------------------


class ResponseServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True
    allow_reuse_port = False

    def __init__(self, address: t.Tuple[str, int], family: int, files_dir: str, root: t.Optional[str],
                 token: t.Optional[str], once: t.Iterable[str], allow: t.Iterable[str],
                 hidden_prefix: t.Optional[str], log_fd: int) -> None:
        self.address_family = family
        self.files_dir = files_dir
        self.root = root
        self.token = token
        self.once = frozenset(once)
        self.networks = [ipaddress.ip_network(net) for net in allow]
        self.hidden_prefix = hidden_prefix
        self.log_fd = log_fd
        self.lock = threading.Lock()
        self.consumed: t.Set[str] = set()
        super().__init__(address, RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would look the address up in DNS (getfqdn); nothing here needs the name.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = self.server_address[1]

    def locate(self, segments: t.Sequence[str]) -> t.Tuple[str, bool]:
        """(real path, whether it is a `files` entry): `files` first, then root."""
        if not segments:
            raise Refused(404)
        candidate = resolve(self.files_dir, segments)
        if os.path.isfile(candidate):
            return candidate, True
        if self.root:
            return resolve(self.root, segments, self.hidden_prefix), False
        raise Refused(404)

    def write_log(self, entry: t.Dict[str, t.Any]) -> None:
        line = (json.dumps(entry, sort_keys=True) + '\n').encode('utf-8')
        with self.lock:
            try:
                os.write(self.log_fd, line)
            except OSError:
                pass


class RequestHandler(BaseHTTPRequestHandler):
    server: ResponseServer
    server_version = 'osimage-autoinstall'
    sys_version = ''
    protocol_version = 'HTTP/1.1'
    # An idle keep-alive connection gives its thread back after this many seconds.
    timeout = 60

    def log_message(self, *args: t.Any) -> None:
        """Requests go to the JSON log, nothing to stderr."""

    def version_string(self) -> str:
        return self.server_version

    def do_GET(self) -> None:  # pylint: disable=invalid-name
        self._respond(head=False)

    def do_HEAD(self) -> None:  # pylint: disable=invalid-name
        self._respond(head=True)

    def _not_allowed(self) -> None:
        # The request body is not read, so the connection cannot be reused.
        self.close_connection = True
        entry = self._entry()
        try:
            entry['status'] = self._send_error(405, False, {'Allow': 'GET, HEAD', 'Connection': 'close'})
        finally:
            self.server.write_log(entry)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def _entry(self) -> t.Dict[str, t.Any]:
        entry = {'time': _now_iso(), 'client': plain_address(self.client_address[0]), 'method': self.command,
                 'path': target_path(self.path), 'status': None, 'bytes': 0,
                 'range': self.headers.get('Range'), 'agent': self.headers.get('User-Agent')}
        token = self.server.token
        if token:
            # The log shows paths below the URL, as `fetched` and `wait_for` do, and never the token.
            prefix = '/%s/' % token
            if entry['path'].startswith(prefix):
                entry['path'] = entry['path'][len(prefix) - 1:]
            else:
                entry['token'] = False
        return entry

    def _send_error(self, status: int, head: bool, headers: t.Optional[t.Dict[str, str]] = None) -> int:
        body = ('%d %s\n' % (status, self.responses.get(status, ('',))[0])).encode('utf-8')
        self.send_response(status)
        self.send_header('Content-Type', 'text/plain; charset=utf-8')
        self.send_header('Content-Length', str(len(body)))
        self.send_header('Cache-Control', 'no-store')
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)
        return status

    def _respond(self, head: bool) -> None:
        entry = self._entry()
        try:
            try:
                self._serve_file(entry, head)
            except Refused as refused:
                entry['status'] = self._send_error(refused.status, head, refused.headers)
        except (OSError, socket.timeout):
            # The client went away; what was sent is logged.
            self.close_connection = True
        finally:
            self.server.write_log(entry)

    def _serve_file(self, entry: t.Dict[str, t.Any], head: bool) -> None:
        server = self.server
        if not client_allowed(self.client_address[0], server.networks):
            raise Refused(403)
        segments = request_segments(self.path, server.token)
        served = '/' + '/'.join(segments)
        entry['path'] = served
        once = served in server.once
        if once and served in server.consumed:
            raise Refused(410)
        path, from_files = server.locate(segments)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise Refused(403 if exc.errno in (errno.EACCES, errno.EPERM) else 404) from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise Refused(404)
            if once and not head:
                with server.lock:
                    # Checked again under the lock: of two requests at the same time, one gets the file.
                    if served in server.consumed:
                        raise Refused(410)
                    server.consumed.add(served)
            size = info.st_size
            first, last, status = 0, size - 1, 200
            if not once:
                try:
                    wanted = parse_range(self.headers.get('Range'), size)
                except RangeNotSatisfiable as exc:
                    raise Refused(416, {'Content-Range': 'bytes */%d' % size}) from exc
                if wanted is not None:
                    first, last = wanted
                    status = 206
            length = max(0, last - first + 1)
            self.send_response(status)
            self.send_header('Content-Type', mimetypes.guess_type(served)[0] or 'application/octet-stream')
            self.send_header('Content-Length', str(length))
            self.send_header('Last-Modified', self.date_time_string(int(info.st_mtime)))
            self.send_header('Cache-Control', 'no-store')
            if not once:
                self.send_header('Accept-Ranges', 'bytes')
            if status == 206:
                self.send_header('Content-Range', 'bytes %d-%d/%d' % (first, last, size))
            self.end_headers()
            entry['status'] = status
            if not head:
                entry['bytes'] = self._copy(fd, first, length)
                if entry['bytes'] < length:
                    self.close_connection = True
        finally:
            os.close(fd)
        if once and from_files and not head:
            # A secret served once does not stay on the disk.
            try:
                os.unlink(path)
            except OSError:
                pass

    def _copy(self, fd: int, offset: int, length: int) -> int:
        os.lseek(fd, offset, os.SEEK_SET)
        sent = 0
        while sent < length:
            chunk = os.read(fd, min(CHUNK, length - sent))
            if not chunk:
                break
            self.wfile.write(chunk)
            sent += len(chunk)
        return sent


def serve_until(server: ResponseServer, lifetime: float, files_dir: str, pidfile: str,
                lease: t.Optional[str] = None, lease_ttl: float = 60.0,
                clock: t.Callable[[], float] = time.monotonic) -> str:
    """The daemon's main loop: serve until SIGTERM, the end of its lifetime or of the build's lease; clean up.

    Returns why it stopped: 'signal', 'lifetime', 'lease expired' or 'server ended'.
    """
    stop: t.List[int] = []
    why = 'server ended'

    def on_signal(signum: int, _frame: t.Any) -> None:
        stop.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.5}, name='serve',
                              daemon=True)
    worker.start()
    deadline = clock() + lifetime
    next_lease_check = clock()
    try:
        # The signal handler only records the signal: taking a lock in it could deadlock.
        while worker.is_alive():
            if stop:
                why = 'signal'
                break
            if clock() >= deadline:
                why = 'lifetime'
                break
            # Polled as the qemu supervisor does (without /proc each poll runs ps).
            if lease and clock() >= next_lease_check:
                next_lease_check = clock() + _daemon.poll_interval(lease_ttl)
                if _lease.expired(lease, lease_ttl):
                    why = _daemon.LEASE_EXPIRED
                    break
            time.sleep(0.2)
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(files_dir, ignore_errors=True)
        try:
            with open(pidfile, 'r', encoding='ascii') as handle:
                mine = handle.read().strip() == str(os.getpid())
            if mine:
                os.unlink(pidfile)
        except OSError:
            pass
    return why


# -- the module's side ------------------------------------------------------------


def _listen_error(exc: OSError, bind: str, port: int) -> InvalidInput:
    if isinstance(exc, socket.gaierror):
        return InvalidInput('bind: %s is not an address of this host (it does not resolve: %s)' % (bind, exc))
    if exc.errno == errno.EADDRINUSE:
        return InvalidInput('port: %d on %s is already in use by another process; stop that process, choose '
                            'another port, or use port: 0 to pick a free one' % (port, bind))
    if exc.errno == errno.EADDRNOTAVAIL:
        return InvalidInput('bind: %s is not an address of this host' % bind)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return InvalidInput('port: %d on %s needs more privileges than this user has (ports below 1024 need '
                            'root); use a port above 1023 or port: 0' % (port, bind))
    return InvalidInput('bind: cannot listen on %s port %d: %s' % (bind, port, exc))


def address_family(bind: str, port: int) -> t.Tuple[int, t.Tuple[str, int]]:
    """The socket family and address to bind; InvalidInput when bind is not usable."""
    try:
        infos = socket.getaddrinfo(bind, port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise _listen_error(exc, bind, port) from exc
    family, _type, _proto, _name, sockaddr = infos[0]
    return family, (sockaddr[0], port)


def probe_listen(bind: str, port: int) -> None:
    """Fail as the real server would if it cannot bind (address not on this host, port taken)."""
    family, address = address_family(bind, port)
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise _listen_error(exc, bind, port) from exc


# State and start time of a process: /proc on Linux, ps(1) elsewhere (the lease's reader).
PROCESSES = _lease.ProcessTable()


def process_alive(pid: int) -> bool:
    # An orphan that was killed stays a zombie where PID 1 does not reap children: ended too.
    return not PROCESSES.ended(pid, None)


def normalise(params: t.Dict[str, t.Any]) -> t.Tuple[t.Dict[str, t.Any], t.Dict[str, bytes], t.List[str]]:
    """Check the options; return (server configuration, files as bytes, wait_for paths)."""
    name = params['name']
    if not NAME_RE.match(name or ''):
        raise InvalidInput('name: %r must start with a letter and hold only letters, digits, ".", "-" '
                           'and "_" (at most 64 characters)' % name)
    port = params.get('port') or 0
    if not 0 <= port <= 65535:
        raise InvalidInput('port: %d is not a TCP port (0 picks a free one)' % port)
    if params.get('lifetime', 1) <= 0:
        raise InvalidInput('lifetime: must be more than 0 seconds')
    lease = os.path.abspath(params['lease']) if params.get('lease') else None
    lease_ttl = float(params.get('lease_ttl') or 60)
    if lease and lease_ttl <= 0:
        raise InvalidInput('lease_ttl: must be more than 0 seconds')
    if (params.get('wait_timeout') or 0) < 0:
        raise InvalidInput('wait_timeout: must not be negative')
    root = params.get('root')
    if root:
        root = os.path.abspath(root)
        if params.get('state', 'started') == 'started':
            if not os.path.exists(root):
                raise InvalidInput('root: %s does not exist' % root)
            if not os.path.isdir(root):
                raise InvalidInput('root: %s is not a directory' % root)
    files: t.Dict[str, bytes] = {}
    keys: t.Dict[str, str] = {}
    for key, content in (params.get('files') or {}).items():
        segments = files_key_segments(key)
        if content is None:
            content = ''
        if not isinstance(content, str):
            raise InvalidInput('files: the content of %r must be a string (use to_yaml or to_json for data)' % key)
        files['/'.join(segments)] = content.encode('utf-8')
        keys['/'.join(segments)] = key
    for key in files:
        parent = key.rsplit('/', 1)[0] if '/' in key else None
        while parent:
            if parent in files:
                raise InvalidInput('files: %r cannot be both a file and the directory of %r'
                                   % (keys[parent], keys[key]))
            parent = parent.rsplit('/', 1)[0] if '/' in parent else None
    spec = {
        'bind': params.get('bind') or '127.0.0.1',
        'port': port,
        'root': root,
        'token': bool(params.get('token')),
        'allow': parse_allow(params.get('allow') or []),
        'once': sorted({url_path(path, 'once') for path in params.get('once') or []}),
        'lifetime': params.get('lifetime', 21600),
        'lease': lease,
        'lease_ttl': lease_ttl if lease else None,
    }
    wait_for: t.List[str] = []
    for path in params.get('wait_for') or []:
        path = url_path(path, 'wait_for')
        if path not in wait_for:
            wait_for.append(path)
    return spec, files, wait_for


def _file_differs(path: str, content: bytes) -> bool:
    try:
        with open(path, 'rb') as handle:
            return handle.read() != content
    except OSError:
        return True


class AutoinstallServer:
    """One response-file server: its files in work_dir and its daemon."""

    def __init__(self, work_dir: str, name: str, check_mode: bool = False) -> None:
        self.work_dir = os.path.abspath(work_dir)
        self.name = name
        self.check_mode = check_mode
        self.paths = serve_paths(self.work_dir, name)

    # -- what is there now ------------------------------------------------------

    def record(self) -> t.Optional[t.Dict[str, t.Any]]:
        return _daemon.read_json(self.paths.statefile)

    def pid(self) -> t.Optional[int]:
        return _daemon.read_pid(self.paths.pidfile)

    def running(self) -> bool:
        """Whether the server of record runs; a pid without a record is never taken for it (nor killed)."""
        pid = self.pid()
        record = self.record() or {}
        if pid is None or record.get('pid') != pid:
            return False
        # The pid may have been reused since (a reboot); the start time tells.
        return not PROCESSES.ended(pid, record.get('starttime') or None)

    def exists(self) -> bool:
        return any(os.path.lexists(path) for path in (self.paths.pidfile, self.paths.statefile,
                                                      self.paths.files_dir))

    def log_entries(self, record: t.Optional[t.Dict[str, t.Any]]) -> t.List[t.Dict[str, t.Any]]:
        """The requests this server (the one of record) has logged."""
        if not record:
            return []
        try:
            with open(self.paths.log, 'rb') as handle:
                handle.seek(int(record.get('log_start') or 0))
                text = handle.read().decode('utf-8', errors='replace')
        except OSError:
            return []
        return parse_log(text)

    def fetched(self, record: t.Optional[t.Dict[str, t.Any]]) -> t.List[str]:
        return fetched_paths(self.log_entries(record))

    # -- files -------------------------------------------------------------------

    def existing_files(self) -> t.List[str]:
        found = []
        for top, dirs, names in os.walk(self.paths.files_dir):
            dirs.sort()
            for name in sorted(names):
                found.append(os.path.relpath(os.path.join(top, name), self.paths.files_dir))
        return found

    def sync_files(self, files: t.Dict[str, bytes], keep: t.Iterable[str] = ()) -> bool:
        """Make NAME.files/ hold exactly `files`; True when something was (or would be) changed.

        keep names `once` paths already served: the server removed them on purpose.
        """
        keep = {path.lstrip('/') for path in keep}
        wanted = {key: content for key, content in files.items() if key not in keep}
        extra = [rel for rel in self.existing_files() if rel not in wanted and rel not in keep]
        differing = [key for key, content in sorted(wanted.items())
                     if _file_differs(os.path.join(self.paths.files_dir, key), content)]
        changed = bool(extra or differing)
        if self.check_mode or not changed:
            return changed
        for rel in extra:
            os.unlink(os.path.join(self.paths.files_dir, rel))
        for top, _dirs, _names in sorted(os.walk(self.paths.files_dir), reverse=True):
            if top != self.paths.files_dir and not os.listdir(top):
                os.rmdir(top)
        for index, key in enumerate(differing):
            self._write_file(key, wanted[key], index)
        return True

    def _write_file(self, key: str, content: bytes, index: int) -> None:
        target = os.path.join(self.paths.files_dir, key)
        directory = self.paths.files_dir
        for segment in key.split('/')[:-1]:
            directory = os.path.join(directory, segment)
            if os.path.lexists(directory) and not os.path.isdir(directory):
                os.unlink(directory)
            if not os.path.isdir(directory):
                os.mkdir(directory, 0o700)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        # Written next to NAME.files/ (same file system) so a request never sees half a file.
        tmp = '%s.tmp-%d-%d' % (self.paths.files_dir, os.getpid(), index)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_EXCL, 0o600)
        try:
            os.write(fd, content)
        finally:
            os.close(fd)
        os.replace(tmp, target)

    def _fresh_files_dir(self, files: t.Dict[str, bytes]) -> None:
        shutil.rmtree(self.paths.files_dir, ignore_errors=True)
        os.mkdir(self.paths.files_dir, 0o700)
        os.chmod(self.paths.files_dir, 0o700)
        self.sync_files(files)

    # -- actions -------------------------------------------------------------------

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while process_alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self) -> None:
        """SIGTERM, SIGKILL after a few seconds; then remove the pidfile and NAME.files/."""
        pid = self.pid()
        if pid is not None and self.running():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if not self._wait_gone(pid, STOP_GRACE):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                if not self._wait_gone(pid, STOP_GRACE):
                    raise ServeError('the server of %s (pid %d) did not end after SIGKILL' % (self.name, pid))
        shutil.rmtree(self.paths.files_dir, ignore_errors=True)
        if os.path.lexists(self.paths.pidfile):
            os.unlink(self.paths.pidfile)

    def start(self, spec: t.Dict[str, t.Any], files: t.Dict[str, bytes]) -> t.Dict[str, t.Any]:
        """Start a new server; a running one is stopped first. Returns the new record."""
        if not os.path.isdir(self.work_dir):
            os.makedirs(self.work_dir, mode=0o700)
        self.stop()
        build_id = _lease.require_live(spec['lease'], float(spec['lease_ttl'])) if spec.get('lease') else None
        family, address = address_family(spec['bind'], spec['port'])
        log_fd = os.open(self.paths.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        token = secrets.token_hex(16) if spec['token'] else None
        hidden_prefix = os.path.join(os.path.realpath(self.work_dir), self.name + '.')
        try:
            try:
                server = ResponseServer(address, family, self.paths.files_dir, spec['root'], token, spec['once'],
                                        spec['allow'], hidden_prefix, log_fd)
            except OSError as exc:
                raise _listen_error(exc, spec['bind'], spec['port']) from exc
            try:
                port = server.server_address[1]
                log_start = os.fstat(log_fd).st_size
                self._fresh_files_dir(files)
                pid = _daemon.daemonize(
                    lambda: serve_until(server, float(spec['lifetime']), self.paths.files_dir, self.paths.pidfile,
                                        spec.get('lease'), float(spec.get('lease_ttl') or 60)),
                    self.paths.pidfile, keep_fds=[server.fileno(), log_fd])
            finally:
                server.server_close()
        finally:
            os.close(log_fd)
        if pid is None:
            shutil.rmtree(self.paths.files_dir, ignore_errors=True)
            raise ServeError('the server of %s did not start (the daemon ended before it wrote %s)'
                             % (self.name, self.paths.pidfile))
        info = PROCESSES.info(pid)
        started = time.time()
        record = {
            'name': self.name,
            'spec': dict(spec, port=port),
            'pid': pid,
            'starttime': info.start if info else None,
            'token': token,
            'url': server_url(spec['bind'], port, token),
            'url_path': url_prefix(token),
            'log_start': log_start,
            'started': _now_iso(started),
            'expires': _now_iso(started + float(spec['lifetime'])),
            'build_id': build_id,
        }
        _daemon.write_atomic(self.paths.statefile, json.dumps(record, indent=2, sort_keys=True) + '\n', 0o600)
        return record

    def remove_record(self) -> None:
        if os.path.lexists(self.paths.statefile):
            os.unlink(self.paths.statefile)

    def wait_for(self, paths: t.Sequence[str], timeout: float, record: t.Dict[str, t.Any],
                 poll: float = 0.2) -> t.List[str]:
        """Block until every path was fetched (GET, 200) from this server."""
        deadline = time.monotonic() + timeout
        while True:
            fetched = self.fetched(record)
            missing = [path for path in paths if path not in fetched]
            if not missing:
                return fetched
            alive = self.running()
            if not alive or time.monotonic() >= deadline:
                break
            time.sleep(poll)
        entries = self.log_entries(record)
        tail = [describe_request(entry) for entry in entries[-10:]]
        last = ('last requests: %s' % '; '.join(tail[-5:])) if tail else 'no request was logged since the server started'
        what = '%s %s' % (', '.join(missing), 'was' if len(missing) == 1 else 'were')
        context = {'fetched': fetched, 'missing': missing, 'log_tail': tail, 'url': record.get('url'),
                   'log': self.paths.log}
        if not alive:
            raise ServeError('wait_for: %s not fetched and the server of %s is no longer running (it ends by '
                             'itself at %s, see lifetime, or when the lease of its build expires); %s'
                             % (what, self.name, record.get('expires'), last),
                             **context)
        raise WaitTimeout('wait_for: %s not fetched within %g s from %s (fetched so far: %s); %s'
                          % (what, timeout, record.get('url'), ', '.join(fetched) or 'nothing', last), **context)


def _describe(spec: t.Optional[t.Dict[str, t.Any]], files: t.Iterable[str]) -> t.Dict[str, t.Any]:
    if spec is None:
        return {'state': 'stopped'}
    described = {'state': 'started'}
    described.update((key, spec.get(key)) for key in RESTART_KEYS)
    described['files'] = sorted(files)
    return described


class AutoinstallServeModule:
    """The state machine behind the module: started/stopped, idempotent, check mode, wait_for."""

    def __init__(self, server: AutoinstallServer) -> None:
        self.server = server

    def result(self, changed: bool, record: t.Optional[t.Dict[str, t.Any]], running: bool,
               fetched: t.Optional[t.List[str]] = None) -> t.Dict[str, t.Any]:
        record = record or {}
        spec = record.get('spec') or {}
        return {
            'changed': changed,
            'url': record.get('url') if running else None,
            'url_path': record.get('url_path') if running else None,
            'port': spec.get('port') if running else None,
            'pid': record.get('pid') if running else None,
            'expires': record.get('expires') if running else None,
            'log': self.server.paths.log,
            'fetched': fetched if fetched is not None else self.server.fetched(record),
        }

    def run(self, params: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
        server = self.server
        spec, files, wait_for = normalise(params)
        running = server.running()
        record = server.record() if running else None
        before = _describe(record.get('spec') if record else None, server.existing_files() if running else [])
        if params['state'] == 'stopped':
            changed = running or server.exists()
            fetched = server.fetched(server.record())
            if changed and not server.check_mode:
                server.stop()
                server.remove_record()
            result = self.result(changed, None, False, fetched)
            result['diff'] = {'before': before, 'after': _describe(None, [])}
            return result

        differs = config_differences(record['spec'], spec) if record else None
        if record and not differs:
            consumed = [path for path in server.fetched(record) if path in spec['once']]
            changed = server.sync_files(files, keep=consumed)
            result = self.result(changed, record, True)
            after = _describe(record['spec'], set(files) - {path.lstrip('/') for path in consumed})
        else:
            old = record['spec'] if record else {}
            if spec['port'] and spec['port'] == old.get('port'):
                # The running server holds this port and is stopped first; only the address is checked.
                probe_listen(spec['bind'], 0)
            else:
                probe_listen(spec['bind'], spec['port'])
            changed = True
            if server.check_mode:
                # The URL (port, token) of a server that is not started yet is not known.
                result = self.result(True, None, False, [])
                after = _describe(spec, files)
            else:
                record = server.start(spec, files)
                result = self.result(True, record, True, [])
                after = _describe(record['spec'], files)
        result['diff'] = {'before': before, 'after': after}
        if differs:
            result['restarted_for'] = differs
        if wait_for and not server.check_mode:
            result['fetched'] = server.wait_for(wait_for, params.get('wait_timeout') or 0, t.cast(dict, record))
        return result
