# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A forwarding HTTP/1.1 proxy that fails chosen requests, for retry and interruption tests.

    python faulty_proxy.py --port PORT --upstream URL [--rule METHOD:PATH_REGEX:COUNT:ACTION ...]

Every request is forwarded to URL unchanged (method, path with query, headers -
Host as the client sent it - and body) and the upstream's answer (status,
headers, body) is sent back, unless a rule matches first: METHOD (or ``*``) and
PATH_REGEX searched in the path including the query string. ACTION is an HTTP
status code, answered with a short plain-text body that no SDK mistakes for one
of its service's error documents, or ``drop``: the request is read and the
connection closed without an answer, as a network failure looks to a client.
A rule fails COUNT matching requests and then lets them through; COUNT -1 fails
them all. Rules are tried in the order given; the first that matches decides.

Bodies with a Content-Length are streamed both ways in 1 MiB pieces, so parts of
tens of MiB pass without being held in memory; a chunked request body (rare from
the SDKs) is collected and sent on with a Content-Length. Clients may keep their
connection open for many requests (the SDKs' connection pools do); each request
gets its own connection to the upstream. Each request and its fate is logged on
standard output.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import re
import socket
import sys
import threading
import typing as t
import urllib.parse

PIECE = 1024 * 1024
# Headers about one connection, not the request, and Expect: the proxy has answered 100-continue itself.
HOP_BY_HOP = {'connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-connection',
              'proxy-authorization', 'expect'}
# send_response() writes its own Server and Date.
OWN_HEADERS = {'server', 'date'}


LOCK = threading.Lock()


def log(text: str) -> None:
    with LOCK:
        sys.stdout.write(text + '\n')
        sys.stdout.flush()


class Rule:
    """METHOD:PATH_REGEX:COUNT:ACTION; the regex may itself contain colons."""

    def __init__(self, text: str) -> None:
        parts = text.split(':')
        if len(parts) < 4:
            raise SystemExit('--rule %r: expected METHOD:PATH_REGEX:COUNT:ACTION' % text)
        self.text = text
        self.method, self.action = parts[0].upper(), parts[-1].lower()
        try:
            self.count = int(parts[-2])
            self.pattern = re.compile(':'.join(parts[1:-2]))
        except (ValueError, re.error) as exc:
            raise SystemExit('--rule %r: %s' % (text, exc)) from exc
        if self.action != 'drop' and not (self.action.isdigit() and 100 <= int(self.action) <= 599):
            raise SystemExit('--rule %r: ACTION must be an HTTP status (100-599) or drop' % text)

    def take(self, method: str, path: str) -> t.Optional[str]:
        """The action when this rule fails the request (and one failure less to come), else None."""
        if self.count == 0 or self.method not in ('*', method) or not self.pattern.search(path):
            return None
        if self.count > 0:
            self.count -= 1
        return self.action


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    upstream: urllib.parse.SplitResult
    rules: t.List[Rule] = []

    def log_message(self, format: str, *args: t.Any) -> None:  # pylint: disable=redefined-builtin
        log('[%s] %s' % (threading.current_thread().name, format % args))

    def log_request(self, code: t.Any = '-', size: t.Any = '-') -> None:
        """The fate of each request is logged once it is known, by _handle()."""

    # --- the request body ---------------------------------------------------------------------------------

    def _pieces(self) -> t.Iterator[bytes]:
        """The request body as it arrives, in pieces of at most PIECE bytes."""
        length = self.headers.get('Content-Length')
        if length is not None:
            left = int(length)
            while left > 0:
                piece = self.rfile.read(min(PIECE, left))
                if not piece:
                    raise ConnectionError('the client closed the connection with %d bytes of the body unsent' % left)
                left -= len(piece)
                yield piece
        elif 'chunked' in self.headers.get('Transfer-Encoding', '').lower():
            while True:
                size = int(self.rfile.readline().split(b';')[0].strip() or b'0', 16)
                if size == 0:
                    while self.rfile.readline() not in (b'\r\n', b'\n', b''):
                        pass  # trailers
                    return
                yield self.rfile.read(size)
                self.rfile.readline()

    def _drain(self) -> int:
        return sum(len(piece) for piece in self._pieces())

    # --- one request --------------------------------------------------------------------------------------

    def _handle(self) -> None:
        with LOCK:
            action = next((a for a in (rule.take(self.command, self.path) for rule in self.rules) if a), None)
        if action == 'drop':
            size = self._drain()
            self.log_message('%s %s (%d bytes) -> dropped', self.command, self.path, size)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if action is not None:
            size = self._drain()
            self.log_message('%s %s (%d bytes) -> injected %s', self.command, self.path, size, action)
            body = ('faulty_proxy: injected HTTP %s\n' % action).encode('ascii')
            self.send_response(int(action))
            self.send_header('Content-Type', 'text/plain; charset=utf-8')
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            if self.command != 'HEAD':
                self.wfile.write(body)
            return
        self._forward()

    def _forward(self) -> None:
        upstream = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=300)
        try:
            try:
                sent = self._send_upstream(upstream)
                response = upstream.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                self.log_message('%s %s -> upstream failed: %s; answering 502', self.command, self.path, exc)
                body = ('faulty_proxy: upstream failed: %s\n' % exc).encode('utf-8', 'replace')
                self.close_connection = True
                self.send_response(502)
                self.send_header('Content-Type', 'text/plain; charset=utf-8')
                self.send_header('Content-Length', str(len(body)))
                self.send_header('Connection', 'close')
                self.end_headers()
                self.wfile.write(body)
                return
            received = self._send_back(response)
            self.log_message('%s %s (%d bytes) -> %d (%d bytes)', self.command, self.path, sent, response.status,
                             received)
        finally:
            upstream.close()

    def _send_upstream(self, upstream: http.client.HTTPConnection) -> int:
        """Send the request on, its body piece by piece; the number of body bytes sent."""
        upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        length = self.headers.get('Content-Length')
        chunked = length is None and 'chunked' in self.headers.get('Transfer-Encoding', '').lower()
        body = b''.join(self._pieces()) if chunked else None
        for key, value in self.headers.items():
            if key.lower() not in HOP_BY_HOP and not (chunked and key.lower() == 'content-length'):
                upstream.putheader(key, value)
        if body is not None:
            upstream.putheader('Content-Length', str(len(body)))
        upstream.endheaders()
        if body is not None:
            upstream.send(body)
            return len(body)
        sent = 0
        for piece in self._pieces():
            upstream.send(piece)
            sent += len(piece)
        return sent

    def _send_back(self, response: http.client.HTTPResponse) -> int:
        """Send the upstream's answer to the client, its body piece by piece; the number of body bytes."""
        self.send_response(response.status, response.reason)
        length = response.getheader('Content-Length')
        for key, value in response.getheaders():
            if key.lower() not in HOP_BY_HOP | OWN_HEADERS:
                self.send_header(key, value)
        no_body = self.command == 'HEAD' or response.status in (204, 304) or 100 <= response.status < 200
        chunked = length is None and not no_body
        if chunked:
            self.send_header('Transfer-Encoding', 'chunked')
        self.end_headers()
        if no_body:
            return 0
        received = 0
        while True:
            piece = response.read(PIECE)
            if not piece:
                break
            received += len(piece)
            self.wfile.write(b'%x\r\n%s\r\n' % (len(piece), piece) if chunked else piece)
        if chunked:
            self.wfile.write(b'0\r\n\r\n')
        elif length is not None and received != int(length):
            self.close_connection = True  # the client sees the same short answer the upstream gave
        return received

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or '').split('\n', 1)[0])
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--upstream', required=True, help='base URL of the server the requests go to (http only)')
    parser.add_argument('--rule', action='append', default=[], help='METHOD:PATH_REGEX:COUNT:ACTION (repeatable)')
    args = parser.parse_args()
    upstream = urllib.parse.urlsplit(args.upstream)
    if upstream.scheme != 'http' or not upstream.hostname:
        raise SystemExit('--upstream %r: expected http://HOST[:PORT]' % args.upstream)
    Proxy.upstream = upstream
    Proxy.rules = [Rule(text) for text in args.rule]
    http.server.ThreadingHTTPServer.request_queue_size = 64
    server = http.server.ThreadingHTTPServer(('127.0.0.1', args.port), Proxy)
    server.daemon_threads = True
    log('listening on 127.0.0.1:%d, forwarding to %s, rules: %s'
        % (args.port, args.upstream, ', '.join(rule.text for rule in Proxy.rules) or 'none'))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == '__main__':
    main()
