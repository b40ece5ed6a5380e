# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks of the build host that can be made before a build starts anything.

A blueprint can be right and still fail on a given host: the output directory
cannot be written or has no room, a port the build was told to use is taken,
the mirror does not answer, the VM asks for more memory than the host has. Each
check here raises InvalidInput whose message names the field or the resource
(path, port, URL) and the figures, so that the build stops before any VM, server
or disk exists.
"""

from __future__ import annotations

import errno
import os
import socket
import typing as t
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput
from ansible_collections.osimage.builder.plugins.module_utils._formats import FORMATS, extension
from ansible_collections.osimage.builder.plugins.module_utils._qemu import MAX_SOCKET_PATH, longest_socket_path
from ansible_collections.osimage.builder.plugins.module_utils._sizes import human_size

# How much of vm.disk_size an output is assumed to take: an uncompressed image holds
# every block the guest wrote, which can be the whole disk; compression is assumed to
# halve it. The real figures are known only after the export.
COMPRESSED_SHARE = 0.5


def nearest_existing(path: str) -> str:
    """The path itself or its closest ancestor that exists (a directory is made below it)."""
    current = os.path.abspath(path)
    while not os.path.lexists(current):
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return current


def check_writable_dir(path: str, field: str) -> str:
    """Raise unless PATH is a directory the build can write, or one it can create.

    Returns the existing directory the check was made on (PATH or its ancestor).
    """
    existing = nearest_existing(path)
    if not os.path.isdir(existing):
        if existing == os.path.abspath(path):
            raise InvalidInput('%s: %s is not a directory' % (field, path))
        raise InvalidInput('%s: %s cannot be created: %s is not a directory' % (field, path, existing))
    if os.access(existing, os.W_OK | os.X_OK):
        return existing
    # access(2) fails with EROFS on a read-only mount even for root.
    try:
        probe = os.statvfs(existing)
        read_only = bool(probe.f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    why = 'is on a read-only file system' if read_only else 'is not writable by the build user'
    if existing == os.path.abspath(path):
        raise InvalidInput('%s: %s %s' % (field, path, why))
    raise InvalidInput('%s: %s cannot be created: %s %s' % (field, path, existing, why))


def output_estimate(disk_size: int, outputs: t.List[t.Dict[str, t.Any]]) -> t.List[t.Tuple[str, int]]:
    """(file extension, bytes) the export of each output may take, from vm.disk_size."""
    estimate = []
    for output in outputs:
        fmt = output['format']
        compress = output.get('compress') or FORMATS[fmt].compressions[0]
        qcow2_compression = output.get('qcow2_compression') or 'none'
        compressed = (compress != 'none' or fmt in ('vmdk', 'gce', 'ova')
                      or (FORMATS[fmt].uses_qcow2_compression and qcow2_compression != 'none'))
        share = COMPRESSED_SHARE if compressed else 1.0
        estimate.append((extension(fmt, compress), int(disk_size * share)))
    return estimate


def free_bytes(path: str) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def total_bytes(path: str) -> int:
    stats = os.statvfs(path)
    return stats.f_blocks * stats.f_frsize


def check_space(path: str, field: str, disk_size: int, outputs: t.List[t.Dict[str, t.Any]],
                free: t.Optional[int] = None) -> t.Dict[str, t.Any]:
    """Raise when the file system of PATH has less room than the outputs may need."""
    existing = nearest_existing(path)
    free = free_bytes(existing) if free is None else free
    estimate = output_estimate(disk_size, outputs)
    need = sum(size for _name, size in estimate)
    if free < need:
        raise InvalidInput(
            '%s: %s has %s free, and the outputs may need about %s (%s, from vm.disk_size %s); make room, choose '
            'another output directory, or skip this estimate with build_image_check_space: false'
            % (field, path, human_size(free), human_size(need),
               ', '.join('%s %s' % (name, human_size(size)) for name, size in estimate), human_size(disk_size)))
    return {'free': free, 'need': need}


def host_memory() -> t.Optional[int]:
    """Bytes of physical memory of this host, or None where it cannot be read."""
    try:
        with open('/proc/meminfo', encoding='ascii') as meminfo:
            for line in meminfo:
                if line.startswith('MemTotal:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(memory: int, field: str, available: t.Optional[int]) -> None:
    if available is not None and memory > available:
        raise InvalidInput('%s: %s is more than the build host has (%s of memory)'
                           % (field, human_size(memory), human_size(available)))


def check_disk(disk_size: int, field: str, work_root: str, total: t.Optional[int] = None) -> None:
    """A disk larger than the whole file system of the work directory could never be filled."""
    existing = nearest_existing(work_root)
    total = total_bytes(existing) if total is None else total
    if disk_size > total:
        raise InvalidInput('%s: %s is more than the whole file system of the work directory %s holds (%s)'
                           % (field, human_size(disk_size), work_root, human_size(total)))


def check_socket_paths(work_root: str, work_dir: str, names: t.List[str], field: str) -> None:
    """qemu's console and QMP sockets live in the build's work directory: their paths must fit a unix address."""
    name, longest = max(((name, longest_socket_path(work_dir, name)) for name in names), key=lambda pair: len(pair[1]))
    if len(longest) > MAX_SOCKET_PATH:
        raise InvalidInput('%s: %s is too long: the VM %r would have the socket %s, %d bytes, and unix socket '
                           'paths hold at most %d; use a work root at most %d bytes long'
                           % (field, work_root, name, longest, len(longest), MAX_SOCKET_PATH,
                              len(work_root) - (len(longest) - MAX_SOCKET_PATH)))


def check_port(port: int, field: str, bind: str = '127.0.0.1') -> None:
    """Raise when something already listens on BIND:PORT (0 means any free port: nothing to check)."""
    if not port:
        return
    if not 1 <= port <= 65535:
        raise InvalidInput('%s: %d is not a TCP port (1..65535, or 0 for any free one)' % (field, port))
    family = socket.AF_INET6 if ':' in bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # as the servers bind it: a port in TIME_WAIT is free, a listening one is not
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise InvalidInput('%s: port %d on %s is already in use; free it or use 0 to pick a free port'
                               % (field, port, bind)) from None
        if exc.errno == errno.EACCES:
            raise InvalidInput('%s: port %d on %s needs root to listen on (ports below 1024); pick one above'
                               % (field, port, bind)) from None
        raise InvalidInput('%s: cannot listen on %s port %d: %s' % (field, bind, port, exc.strerror)) from None
    finally:
        sock.close()


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, 'reason', exc)
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason)


def check_reachable(url: str, field: str, timeout: float = 10.0) -> None:
    """Raise unless a TCP connection to the host and port of URL can be made (a proxy, for example)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == 'https' else 80)
    try:
        with socket.create_connection((parts.hostname or '', port), timeout=timeout):
            pass
    except OSError as exc:
        raise InvalidInput('%s: %s cannot be reached: %s' % (field, url, _reason(exc))) from None


def probe_url(urls: t.List[str], field: str, hint: str, proxy: t.Optional[str] = None,
              timeout: float = 10.0) -> str:
    """Fetch the first byte of the first of URLS that answers; raise naming FIELD and the URLs when none does.

    A file:// URL is looked up on this host. An HTTP error on one URL moves on to the next
    (a mirror may have InRelease but no Release); a connection error stops at once.
    """
    handlers: t.List[t.Any] = [urllib.request.ProxyHandler({'http': proxy, 'https': proxy} if proxy else {})]
    opener = urllib.request.build_opener(*handlers)
    answers = []
    for url in urls:
        if url.startswith('file://'):
            if os.path.exists(urlsplit(url).path):
                return url
            answers.append('%s does not exist' % url)
            continue
        request = urllib.request.Request(url, headers={'Range': 'bytes=0-0', 'User-Agent': 'osimage.builder preflight'})
        try:
            with opener.open(request, timeout=timeout) as response:
                response.read(1)
            return url
        except urllib.error.HTTPError as exc:
            answers.append('%s answers HTTP %d %s' % (url, exc.code, exc.reason))
        except (urllib.error.URLError, OSError) as exc:
            raise InvalidInput('%s: %s cannot be reached%s: %s'
                               % (field, url, ' through source.proxy %s' % proxy if proxy else '', _reason(exc))) from None
    raise InvalidInput('%s: %s%s' % (field, '; '.join(answers), hint))


def mirror_probes(blueprint: t.Dict[str, t.Any]) -> t.List[t.Tuple[str, t.List[str], str]]:
    """(field, URLs to try, hint) for each mirror a checked blueprint names; the host's own apt sources are not probed."""
    source = blueprint.get('source') or {}
    probes = []
    if blueprint.get('family') == 'openbsd' or source.get('release'):
        if source.get('mirror'):
            base = '%s/%s/%s' % (source['mirror'].rstrip('/'), source['release'], source.get('arch', 'amd64'))
            probes.append(('source.mirror', [base + '/SHA256.sig'],
                           ' (source.mirror is the pub/OpenBSD directory of a mirror that has %s)' % source['release']))
        return probes
    suite = source.get('suite')
    if not suite:
        return probes
    for key, dist in (('mirror', suite), ('security_mirror', suite + '-security')):
        if source.get(key):
            base = '%s/dists/%s' % (source[key].rstrip('/'), dist)
            probes.append(('source.' + key, [base + '/InRelease', base + '/Release'],
                           ' (source.%s is the directory that holds dists/%s/)' % (key, dist)))
    return probes
