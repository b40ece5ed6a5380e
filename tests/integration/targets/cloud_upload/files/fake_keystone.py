# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small fake of Keystone's Identity API v3, for openstacksdk and for keystonemiddleware in Glance.

    python fake_keystone.py --port PORT --dir DIR (--image-url URL | --image-url-file FILE)
                            --user NAME:PASSWORD [--user NAME:PASSWORD ...] [--project NAME]
                            [--application-credential ID:SECRET]

Standard library only. It follows the Identity API v3 reference (https://docs.openstack.org/api-ref/identity/v3/):

- "Version discovery": GET / answers 300 Multiple Choices with ``{"versions": {"values": [...]}}``, GET /v3
  answers ``{"version": {...}}``; both name the v3 endpoint with its ``self`` link and media type.
- "Password authentication with scoped authorization": POST /v3/auth/tokens with ``identity.methods``
  ``["password"]`` and a user named with its domain (or by id), scoped to a project named with its domain (or
  by id). The answer is 201 with the token in the ``X-Subject-Token`` header and a body
  ``{"token": {methods, user, project, roles, catalog, expires_at, issued_at, audit_ids}}``; the catalog has the
  identity service (this server) and the image service (--image-url) as public, internal and admin endpoints in
  region RegionOne. The ``token`` and ``application_credential`` methods are taken too.
- Wrong password, unknown user or unknown project: 401 with ``{"error": {"code": 401, "title":
  "Unauthorized", "message": "The request you have made requires authentication."}}`` and a
  ``WWW-Authenticate: Keystone uri="..."`` header, as Keystone answers (it does not say which part was wrong).
- "Validate and show information for token": GET /v3/auth/tokens with the caller's token in ``X-Auth-Token``
  and the token to check in ``X-Subject-Token``: 200 with the token body, 404 for an unknown token, 401 when
  the caller's own token is not valid. keystonemiddleware's auth_token in Glance validates user tokens this way.
- HEAD /v3/auth/tokens ("Check token") answers 200 or 404 without a body.

The image endpoint is --image-url, or the URL in --image-url-file read at each authentication: Glance is
started after this server, with its URL, so its own URL is written to that file once it listens.
Every user is a member (roles admin, member and reader) of the one project, in domain Default. The ``--dir``
receives the tokens issued (tokens.json) for inspection.
"""

from __future__ import annotations

import argparse
import datetime
import http.server
import json
import os
import secrets
import sys
import threading
import urllib.parse
import uuid

DOMAIN = {'id': 'default', 'name': 'Default'}
ROLES = [{'id': 'role-admin', 'name': 'admin'}, {'id': 'role-member', 'name': 'member'},
         {'id': 'role-reader', 'name': 'reader'}]
MEDIA_TYPE = 'application/vnd.openstack.identity-v3+json'
UNAUTHORIZED = 'The request you have made requires authentication.'


def iso(moment: datetime.datetime) -> str:
    return moment.strftime('%Y-%m-%dT%H:%M:%S.000000Z')


class State:
    """Users, the project, and the tokens issued, guarded by one lock."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.lock = threading.Lock()
        self.users = {}
        for entry in args.user:
            name, sep, password = entry.partition(':')
            if not sep:
                sys.exit('--user takes NAME:PASSWORD')
            self.users[name] = {'id': 'u-' + uuid.uuid5(uuid.NAMESPACE_URL, name).hex, 'name': name,
                                'password': password}
        self.app_creds = {}
        for entry in args.application_credential:
            cred_id, sep, secret = entry.partition(':')
            if not sep or not self.users:
                sys.exit('--application-credential takes ID:SECRET and needs a --user')
            self.app_creds[cred_id] = {'secret': secret, 'user': next(iter(self.users))}
        self.project = {'id': 'p-' + uuid.uuid5(uuid.NAMESPACE_URL, args.project).hex, 'name': args.project,
                        'domain': DOMAIN}
        self.tokens: dict = {}
        self.base = ''

    def user_by(self, ident: dict) -> dict | None:
        if 'id' in ident:
            return next((user for user in self.users.values() if user['id'] == ident['id']), None)
        domain = ident.get('domain') or {}
        if domain.get('id', 'default') != 'default' or domain.get('name', 'Default') != 'Default':
            return None
        return self.users.get(ident.get('name', ''))

    def project_matches(self, scope: dict) -> bool:
        project = scope.get('project') or {}
        if 'id' in project:
            return project['id'] == self.project['id']
        domain = project.get('domain') or {}
        return (project.get('name') == self.project['name'] and domain.get('id', 'default') == 'default'
                and domain.get('name', 'Default') == 'Default')

    def catalog(self) -> list:
        def service(kind: str, name: str, url: str) -> dict:
            return {'id': uuid.uuid5(uuid.NAMESPACE_URL, kind).hex, 'type': kind, 'name': name,
                    'endpoints': [{'id': uuid.uuid5(uuid.NAMESPACE_URL, kind + interface).hex, 'interface': interface,
                                   'region': 'RegionOne', 'region_id': 'RegionOne', 'url': url}
                                  for interface in ('public', 'internal', 'admin')]}
        catalog = [service('identity', 'keystone', self.base + '/v3')]
        image_url = self.args.image_url
        if self.args.image_url_file and os.path.exists(self.args.image_url_file):
            with open(self.args.image_url_file, encoding='utf-8') as handle:
                image_url = handle.read().strip()
        if image_url:
            catalog.append(service('image', 'glance', image_url.rstrip('/')))
        return catalog

    def issue(self, user: dict, methods: list, scoped: bool) -> tuple:
        issued = datetime.datetime.now(datetime.timezone.utc)
        body = {'methods': methods, 'user': {'id': user['id'], 'name': user['name'], 'domain': DOMAIN,
                                             'password_expires_at': None},
                'audit_ids': [secrets.token_urlsafe(16)], 'issued_at': iso(issued),
                'expires_at': iso(issued + datetime.timedelta(hours=1))}
        if scoped:
            body.update(project=self.project, is_domain=False, roles=ROLES, catalog=self.catalog())
        token = 'gAAAAA' + secrets.token_urlsafe(48)
        with self.lock:
            self.tokens[token] = body
            with open(os.path.join(self.args.dir, 'tokens.json'), 'w', encoding='utf-8') as handle:
                json.dump({'count': len(self.tokens), 'users': sorted({b['user']['name'] for b in self.tokens.values()})},
                          handle)
        return token, body


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = 'FakeKeystone/1.0'
    protocol_version = 'HTTP/1.1'
    state: State

    def log_message(self, format: str, *args: object) -> None:  # pylint: disable=redefined-builtin
        sys.stderr.write('%s %s\n' % (self.address_string(), format % args))

    def reply(self, status: int, body: object = None, headers: dict | None = None) -> None:
        data = b'' if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header('Vary', 'X-Auth-Token')
        self.send_header('x-openstack-request-id', 'req-' + str(uuid.uuid4()))
        if body is not None:
            self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(data)

    def error(self, status: int, title: str, message: str) -> None:
        headers = {'WWW-Authenticate': 'Keystone uri="%s"' % self.state.base} if status == 401 else None
        self.reply(status, {'error': {'code': status, 'title': title, 'message': message}}, headers)

    def body(self) -> dict | None:
        length = int(self.headers.get('Content-Length') or 0)
        try:
            data = json.loads(self.rfile.read(length) or b'null')
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def version(self) -> dict:
        return {'id': 'v3.14', 'status': 'stable', 'updated': '2020-04-07T00:00:00Z',
                'links': [{'rel': 'self', 'href': self.state.base + '/v3/'}],
                'media-types': [{'base': 'application/json', 'type': MEDIA_TYPE}]}

    # ----- POST /v3/auth/tokens ---------------------------------------------------------------------------------

    def authenticate(self) -> None:
        body = self.body()
        auth = (body or {}).get('auth')
        if not isinstance(auth, dict) or not isinstance(auth.get('identity'), dict):
            self.error(400, 'Bad Request', 'Invalid input for field \'identity\': \'identity\' is a required property')
            return
        identity, scope = auth['identity'], auth.get('scope') or {}
        methods = identity.get('methods') or []
        user = None
        if 'password' in methods:
            ident = (identity.get('password') or {}).get('user') or {}
            candidate = self.state.user_by(ident)
            if candidate is not None and secrets.compare_digest(str(ident.get('password', '')), candidate['password']):
                user = candidate
        elif 'token' in methods:
            with self.state.lock:
                previous = self.state.tokens.get((identity.get('token') or {}).get('id', ''))
            if previous is not None:
                user = self.state.users.get(previous['user']['name'])
        elif 'application_credential' in methods:
            cred = identity.get('application_credential') or {}
            known = self.state.app_creds.get(cred.get('id', ''))
            if known is not None and secrets.compare_digest(str(cred.get('secret', '')), known['secret']):
                user = self.state.users[known['user']]
                scope = {'project': {'id': self.state.project['id']}}
        else:
            self.error(400, 'Bad Request', 'Unsupported authentication methods: %s' % methods)
            return
        if user is None:
            self.error(401, 'Unauthorized', UNAUTHORIZED)
            return
        if scope and ('project' not in scope or not self.state.project_matches(scope)):
            self.error(401, 'Unauthorized', UNAUTHORIZED)
            return
        token, token_body = self.state.issue(user, methods, bool(scope))
        self.reply(201, {'token': token_body}, {'X-Subject-Token': token})

    # ----- GET/HEAD /v3/auth/tokens -------------------------------------------------------------------------------

    def validate(self) -> None:
        with self.state.lock:
            caller = self.state.tokens.get(self.headers.get('X-Auth-Token', ''))
            subject_id = self.headers.get('X-Subject-Token', '')
            subject = self.state.tokens.get(subject_id)
        if caller is None:
            self.error(401, 'Unauthorized', UNAUTHORIZED)
            return
        if subject is None:
            self.error(404, 'Not Found', 'Could not find token: %s.' % subject_id[:8])
            return
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
        body = dict(subject)
        if query.get('nocatalog'):
            body.pop('catalog', None)
        self.reply(200, {'token': body}, {'X-Subject-Token': subject_id})

    # ----- dispatch --------------------------------------------------------------------------------------------

    def route(self, method: str) -> None:
        path = urllib.parse.urlsplit(self.path).path.rstrip('/')
        if method == 'GET' and path == '':
            self.reply(300, {'versions': {'values': [self.version()]}}, {'Location': self.state.base + '/v3/'})
        elif method == 'GET' and path == '/v3':
            self.reply(200, {'version': self.version()})
        elif method == 'POST' and path == '/v3/auth/tokens':
            self.authenticate()
        elif method in ('GET', 'HEAD') and path == '/v3/auth/tokens':
            self.validate()
        else:
            self.error(404, 'Not Found', 'The resource could not be found.')

    def do_GET(self) -> None:  # pylint: disable=invalid-name
        self.route('GET')

    def do_HEAD(self) -> None:  # pylint: disable=invalid-name
        self.route('HEAD')

    def do_POST(self) -> None:  # pylint: disable=invalid-name
        self.route('POST')


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--dir', required=True)
    parser.add_argument('--image-url', help='the Glance endpoint the catalog names')
    parser.add_argument('--image-url-file', help='a file that holds the Glance endpoint once Glance runs')
    parser.add_argument('--user', action='append', default=[], help='NAME:PASSWORD, in domain Default')
    parser.add_argument('--project', default='osimage')
    parser.add_argument('--application-credential', action='append', default=[], help='ID:SECRET of the first user')
    args = parser.parse_args()
    state = State(args)
    state.base = 'http://127.0.0.1:%d' % args.port
    Handler.state = state
    Server(('127.0.0.1', args.port), Handler).serve_forever()


if __name__ == '__main__':
    main()
