# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A forwarding HTTP/1.1 proxy that fails chosen requests, for retry and interruption tests.

    python faulty_proxy.py --port PORT --upstream URL [--rule METHOD:PATH_REGEX:COUNT:ACTION ...]

Every request is forwarded to URL unchanged (method, path, query, headers, body)
and the upstream's answer is sent back, unless a rule matches first: METHOD
(or ``*``) and PATH_REGEX searched in the path including the query string.
ACTION is an HTTP status code, answered with an empty body, or ``drop``: the
request is read and the connection closed without an answer, as a network
failure looks to a client. A rule fails COUNT matching requests and then lets
them through; COUNT -1 fails them all. Each request and its fate is logged on
standard output.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import re
import sys
import threading
import typing as t
import urllib.parse

HOP_BY_HOP = {'connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-connection',
              'content-length'}
# send_response() writes its own Server and Date
OWN_HEADERS = {'server', 'date'}


class Rule:
    def __init__(self, text: str) -> None:
        parts = text.split(':')
        if len(parts) < 4:
            raise SystemExit('--rule %r: expected METHOD:PATH_REGEX:COUNT:ACTION' % text)
        # the regex may itself hold colons
        self.method, self.count, self.action = parts[0], int(parts[-2]), parts[-1]
        self.pattern = re.compile(':'.join(parts[1:-2]))
        if self.action != 'drop' and not self.action.isdigit():
            raise SystemExit('--rule %r: ACTION must be an HTTP status or drop' % text)

    def take(self, method: str, path: str) -> t.Optional[str]:
        if self.count == 0 or self.method not in ('*', method) or not self.pattern.search(path):
            return None
        if self.count > 0:
            self.count -= 1
        return self.action


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    upstream: urllib.parse.SplitResult
    rules: t.List[Rule] = []
    lock = threading.Lock()

    def log_message(self, format: str, *args: t.Any) -> None:  # pylint: disable=redefined-builtin
        sys.stdout.write('%s\n' % (format % args))
        sys.stdout.flush()

    def _body(self) -> bytes:
        length = self.headers.get('Content-Length')
        if length is not None:
            return self.rfile.read(int(length))
        if 'chunked' in self.headers.get('Transfer-Encoding', '').lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b';')[0].strip() or b'0', 16)
                if size == 0:
                    while self.rfile.readline() not in (b'\r\n', b'\n', b''):
                        pass
                    return b''.join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return b''

    def _handle(self) -> None:
        body = self._body()
        with self.lock:
            action = next((a for a in (rule.take(self.command, self.path) for rule in self.rules) if a), None)
        if action == 'drop':
            self.log_message('%s %s -> dropped', self.command, self.path)
            self.close_connection = True
            self.connection.close()
            return
        if action is not None:
            self.log_message('%s %s -> injected %s', self.command, self.path, action)
            self.send_response(int(action))
            self.send_header('Content-Length', '0')
            self.end_headers()
            return
        upstream = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=120)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            headers['Content-Length'] = str(len(body))
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
        finally:
            upstream.close()
        self.log_message('%s %s -> %d', self.command, self.path, response.status)
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in HOP_BY_HOP | OWN_HEADERS:
                self.send_header(key, value)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _handle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--upstream', required=True)
    parser.add_argument('--rule', action='append', default=[])
    args = parser.parse_args()
    Proxy.upstream = urllib.parse.urlsplit(args.upstream)
    Proxy.rules = [Rule(text) for text in args.rule]
    server = http.server.ThreadingHTTPServer(('127.0.0.1', args.port), Proxy)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == '__main__':
    main()
