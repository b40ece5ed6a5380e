# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small client for the QEMU Machine Protocol over a unix socket.

Follows docs/interop/qmp-spec: the server greets with {"QMP": ...}, the client
enters command mode with qmp_capabilities, then each command gets one
{"return": ...} or {"error": ...}; asynchronous {"event": ...} lines may come
in between and are skipped here.
"""

from __future__ import annotations

import json
import socket
import typing as t

from ansible_collections.osimage.builder.plugins.module_utils._errors import VmError


class QmpClient:
    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout
        self._sock: t.Optional[socket.socket] = None
        self._buffer = b''

    def __enter__(self) -> 'QmpClient':
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        greeting = self._read_message()
        if 'QMP' not in greeting:
            raise VmError('QMP socket %s did not greet: %r' % (self.path, greeting))
        self.execute('qmp_capabilities')

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def _connected(self) -> socket.socket:
        if self._sock is None:
            raise VmError('QMP socket %s is not connected' % self.path)
        return self._sock

    def _read_message(self) -> t.Dict[str, t.Any]:
        sock = self._connected()
        while b'\n' not in self._buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError('QMP socket %s closed' % self.path)
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b'\n', 1)
        return json.loads(line.decode('utf-8'))

    def execute(self, command: str, arguments: t.Optional[t.Dict[str, t.Any]] = None) -> t.Any:
        sock = self._connected()
        request: t.Dict[str, t.Any] = {'execute': command}
        if arguments:
            request['arguments'] = arguments
        sock.sendall(json.dumps(request).encode('utf-8') + b'\n')
        while True:
            message = self._read_message()
            if 'event' in message:
                continue
            if 'error' in message:
                error = message['error']
                raise VmError('QMP %s failed: %s' % (command, error.get('desc', error)))
            return message.get('return')
