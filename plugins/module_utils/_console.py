# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Open a VM's serial console: unix socket, pty/tty device, tcp, or a pyserial URL.

qemu's socket chardev and vmd's pty both take one client at a time, so a
console is always used as a context manager and closed on every path.
"""

from __future__ import annotations

import os
import select
import socket
import stat
import time
import typing as t

from ansible_collections.osimage.builder.plugins.module_utils._errors import ConsoleError

try:
    import serial  # pyserial
    HAS_PYSERIAL = True
    PYSERIAL_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - depends on the host
    serial = None
    HAS_PYSERIAL = False
    PYSERIAL_IMPORT_ERROR = _exc


class Console:
    """The interface the expect engine needs: read with a timeout, write, close."""

    def read(self, timeout: float) -> bytes:
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> 'Console':
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SocketConsole(Console):
    def __init__(self, sock: socket.socket, where: str) -> None:
        self.sock = sock
        self.where = where

    def read(self, timeout: float) -> bytes:
        ready, _w, _x = select.select([self.sock], [], [], max(0.0, timeout))
        if not ready:
            return b''
        data = self.sock.recv(65536)
        if not data:
            raise ConsoleError('the console %s was closed by the other side (did the VM stop?)' % self.where)
        return data

    def write(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise ConsoleError('writing to the console %s failed: %s' % (self.where, exc))

    def close(self) -> None:
        self.sock.close()


class SerialConsole(Console):
    def __init__(self, port: t.Any, where: str) -> None:
        self.port = port
        self.where = where

    def read(self, timeout: float) -> bytes:
        self.port.timeout = max(0.0, timeout)
        first = self.port.read(1)
        if not first:
            return b''
        waiting = getattr(self.port, 'in_waiting', 0)
        return first + (self.port.read(waiting) if waiting else b'')

    def write(self, data: bytes) -> None:
        self.port.write(data)
        self.port.flush()

    def close(self) -> None:
        self.port.close()


def classify(target: str) -> str:
    """'unix', 'device', 'tcp' or 'url' for a console string."""
    if target.startswith('unix:'):
        return 'unix'
    if target.startswith('tcp://'):
        return 'tcp'
    if '://' in target:
        return 'url'
    if target.startswith('/'):
        try:
            mode = os.stat(target).st_mode
        except OSError:
            return 'unix' if not target.startswith('/dev/') else 'device'
        if stat.S_ISSOCK(mode):
            return 'unix'
        return 'device'
    raise ConsoleError('console: %r is not a unix socket or device path, tcp://HOST:PORT, or a pyserial URL'
                       % target)


def _need_pyserial(target: str) -> None:
    if not HAS_PYSERIAL:
        raise ConsoleError('console %s needs the pyserial Python library on the build host '
                           '(Debian: python3-serial, OpenBSD: py3-serial, pip: pyserial): %s'
                           % (target, PYSERIAL_IMPORT_ERROR))


def _open_once(target: str, kind: str, baudrate: int) -> Console:
    if kind == 'unix':
        path = target[5:] if target.startswith('unix:') else target
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            raise
        return SocketConsole(sock, path)
    _need_pyserial(target)
    if kind == 'tcp':
        url = 'socket://' + target[len('tcp://'):]
        return SerialConsole(serial.serial_for_url(url, timeout=0), target)
    if kind == 'url':
        return SerialConsole(serial.serial_for_url(target, timeout=0, baudrate=baudrate), target)
    port = serial.Serial(target, baudrate=baudrate, timeout=0, exclusive=True)
    return SerialConsole(port, target)


def open_console(target: str, connect_timeout: float = 30.0, baudrate: int = 115200) -> Console:
    """Connect, retrying until connect_timeout: the VM may still be creating its console."""
    kind = classify(target)
    deadline = time.monotonic() + connect_timeout
    while True:
        try:
            return _open_once(target, kind, baudrate)
        except ConsoleError:
            raise
        except (OSError, ValueError) as exc:
            error: Exception = exc
        except Exception as exc:  # pyserial's SerialException is an OSError subclass on most versions
            error = exc
        if time.monotonic() >= deadline:
            raise ConsoleError('cannot open the console %s within %g s: %s' % (target, connect_timeout, error))
        time.sleep(0.2)
