# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small fake of Google's OAuth 2.0 token endpoint for service accounts and of Compute Engine's images API.

    python fake_gce_compute.py --port PORT --service-account KEY.json --project P --storage URL
                               [--fail-image NAME] [--delay SECONDS]

No emulator exists for either service (gcp-storage-emulator serves Cloud Storage only). This one follows the
public references, using the standard library only:

- Google Identity, "Using OAuth 2.0 for Server to Server Applications" (HTTP/REST): POST to the key's
  token_uri with grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer and an RS256 JWT assertion (RFC 7523)
  whose header names the key (``kid`` = private_key_id) and whose claims are iss (the client_email), scope,
  aud (https://oauth2.googleapis.com/token), iat and exp (at most one hour apart); the answer ``{"access_token", "expires_in",
  "token_type": "Bearer"}``, and HTTP 400 ``{"error": "invalid_grant", "error_description": ...}`` for a bad
  signature, an unknown account or a token that is not short-lived.
- The same page's "Addendum: Service account authorization without OAuth" (and Google AIP-4111): a JWT signed
  with the key, with iss = sub = client_email and a scope (or aud) claim, sent as the Bearer token itself, as
  the google-cloud-compute clients do.
- Compute Engine API v1 reference, "images" (insert, get, delete, list with filter/maxResults/pageToken) and
  "globalOperations" (get, wait): the paths /compute/v1/projects/{project}/global/images[/{image}] and
  .../global/operations/{operation}[/wait], the Image resource (name, family, labels, rawDisk.source,
  guestOsFeatures, architecture, licenses, storageLocations, status PENDING -> READY or FAILED,
  creationTimestamp in RFC 3339 with an offset, selfLink, id), the Operation resource (status PENDING,
  RUNNING, DONE; error.errors), and Google's JSON error format {"error": {"code", "message", "errors",
  "status"}} (401 UNAUTHENTICATED, 404 notFound, 409 alreadyExists, 400 invalid).
- Compute Engine, "Manually import boot disks": images.insert reads rawDisk.source, a gzip compressed tar
  archive in Cloud Storage that holds a file named disk.raw. The fake reads the object from the storage
  emulator given with --storage (gs://B/O and https://storage.googleapis.com/B/O name the emulator's
  objects) when the operation runs; a missing object or another archive makes the image FAILED and the
  operation end with an error. --fail-image NAME fails that image whatever its object.

Requests need a Bearer token the fake issued or a self-signed JWT of the service account.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime
import hashlib
import http.server
import io
import json
import random
import re
import secrets
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

IMAGES_PATH = re.compile(r'^/compute/v1/projects/([^/]+)/global/images(?:/([^/]+))?$')
OPERATION_PATH = re.compile(r'^/compute/v1/projects/([^/]+)/global/operations/([^/]+?)(/wait)?$')
NAME_RE = re.compile(r'^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$')
LABEL_KEY_RE = re.compile(r'^[a-z][a-z0-9_-]{0,62}$')
LABEL_VALUE_RE = re.compile(r'^[a-z0-9_-]{0,63}$')
FILTER_RE = re.compile(r'^\s*([A-Za-z][\w.-]*)\s*(=|!=|eq|ne)\s*"?([^"]*?)"?\s*$')
GOOGLE_TOKEN_URL = 'https://oauth2.googleapis.com/token'
JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer'
SHA256_DIGEST_INFO = binascii.unhexlify('3031300d060960864801650304020105000420')
PAGE_SIZE = 2   # small, so that clients must follow nextPageToken
PACIFIC = datetime.timezone(datetime.timedelta(hours=-7))


def b64url(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + '=' * (-len(data) % 4))


def now_rfc3339() -> str:
    """Compute Engine's creationTimestamp style: milliseconds and the offset of US Pacific time."""
    return datetime.datetime.now(PACIFIC).isoformat(timespec='milliseconds')


# ----- the service account's public key, from its PEM private key (a small DER reader) --------------------------

def der_next(data: bytes, pos: int) -> tuple:
    """(tag, value, next position) of the DER element at pos."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7f
        length = int.from_bytes(data[pos:pos + count], 'big')
        pos += count
    return tag, data[pos:pos + length], pos + length


def der_sequence(data: bytes) -> list:
    items, pos = [], 0
    while pos < len(data):
        tag, value, pos = der_next(data, pos)
        items.append((tag, value))
    return items


def rsa_public_numbers(pem: str) -> tuple:
    """(n, e) of a PKCS #8 or PKCS #1 RSA private key in PEM."""
    body = ''.join(line for line in pem.strip().splitlines() if not line.startswith('-----'))
    der = base64.b64decode(body)
    tag, outer, _unused = der_next(der, 0)
    items = der_sequence(outer)
    if 'BEGIN RSA PRIVATE KEY' not in pem:
        # PrivateKeyInfo: version, AlgorithmIdentifier, OCTET STRING holding the RSAPrivateKey.
        tag, rsa, _unused = der_next(items[2][1], 0)
        items = der_sequence(rsa)
    if tag != 0x30:
        raise ValueError('not a DER sequence')
    return int.from_bytes(items[1][1], 'big'), int.from_bytes(items[2][1], 'big')


def rs256_valid(signing_input: bytes, signature: bytes, n: int, e: int) -> bool:
    """RSASSA-PKCS1-v1_5 verification with SHA-256 (RFC 8017, 8.2.2)."""
    size = (n.bit_length() + 7) // 8
    if len(signature) != size:
        return False
    message = pow(int.from_bytes(signature, 'big'), e, n).to_bytes(size, 'big')
    digest_info = SHA256_DIGEST_INFO + hashlib.sha256(signing_input).digest()
    expected = b'\x00\x01' + b'\xff' * (size - len(digest_info) - 3) + b'\x00' + digest_info
    return secrets.compare_digest(message, expected)


class State:
    """The account, tokens issued, images and operations, guarded by one lock."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.lock = threading.Lock()
        with open(args.service_account, encoding='utf-8') as handle:
            key = json.load(handle)
        self.email = key['client_email']
        self.key_id = key['private_key_id']
        self.n, self.e = rsa_public_numbers(key['private_key'])
        self.tokens: dict = {}
        self.images: dict = {}
        self.operations: dict = {}
        self.base = 'http://127.0.0.1:%d' % args.port
        self.counter = 0

    # ----- JWTs ------------------------------------------------------------------------------------------------

    def check_jwt(self, token: str) -> tuple:
        """(claims, None) for a JWT this account signed, else (None, the reason)."""
        parts = token.split('.')
        if len(parts) != 3:
            return None, 'Invalid JWT: not three dot-separated parts.'
        try:
            header = json.loads(b64url(parts[0]))
            claims = json.loads(b64url(parts[1]))
            signature = b64url(parts[2])
        except (ValueError, binascii.Error):
            return None, 'Invalid JWT: not base64url-encoded JSON.'
        if header.get('alg') != 'RS256':
            return None, 'Invalid JWT: alg must be RS256.'
        if claims.get('iss') != self.email:
            return None, 'Invalid grant: account not found'
        if header.get('kid') not in (None, self.key_id):
            return None, 'Invalid JWT Signature.'
        if not rs256_valid(('%s.%s' % (parts[0], parts[1])).encode(), signature, self.n, self.e):
            return None, 'Invalid JWT Signature.'
        moment = time.time()
        iat, exp = claims.get('iat'), claims.get('exp')
        if not isinstance(iat, (int, float)) or not isinstance(exp, (int, float)) or exp - iat > 3600 or \
                iat > moment + 300 or exp < moment - 300:
            return None, ('Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable '
                          'timeframe. Check your iat and exp values in the JWT claim.')
        return claims, None

    def authorized(self, header: str) -> bool:
        scheme, _unused, token = header.partition(' ')
        if scheme.lower() != 'bearer' or not token:
            return False
        with self.lock:
            expiry = self.tokens.get(token)
        if expiry is not None:
            return expiry > time.time()
        claims, _reason = self.check_jwt(token)
        if claims is None or claims.get('sub', claims.get('iss')) != self.email:
            return False
        scopes = str(claims.get('scope') or '').split()
        audience = str(claims.get('aud') or '')
        return bool({'https://www.googleapis.com/auth/cloud-platform',
                     'https://www.googleapis.com/auth/compute'} & set(scopes)) or 'compute.googleapis.com' in audience

    # ----- images and operations ---------------------------------------------------------------------------

    def new_operation(self, kind: str, project: str, name: str, target_id: str) -> dict:
        self.counter += 1
        op_name = 'operation-%d-%s' % (int(time.time() * 1000), secrets.token_hex(6))
        op = {'kind': 'compute#operation', 'id': str(random.getrandbits(63)), 'name': op_name,
              'operationType': kind, 'targetLink': '%s/compute/v1/projects/%s/global/images/%s' % (self.base, project, name),
              'targetId': target_id, 'status': 'RUNNING', 'user': self.email, 'progress': 0,
              'insertTime': now_rfc3339(), 'startTime': now_rfc3339(),
              'selfLink': '%s/compute/v1/projects/%s/global/operations/%s' % (self.base, project, op_name),
              '_due': time.monotonic() + self.args.delay, '_image': name}
        self.operations[op_name] = op
        return op

    def advance(self) -> None:
        """Finish the operations whose time has come (the fake's stand-in for the platform's work)."""
        moment = time.monotonic()
        for op in self.operations.values():
            if op['status'] == 'DONE' or moment < op['_due']:
                continue
            image = self.images.get(op['_image'])
            if op['operationType'] == 'delete':
                self.images.pop(op['_image'], None)
            elif image is not None:
                error = self.read_disk(image)
                if error:
                    image['status'] = 'FAILED'
                    op['error'] = {'errors': [{'code': error[0], 'message': error[1]}]}
                    op['httpErrorStatusCode'] = 400
                    op['httpErrorMessage'] = 'BAD REQUEST'
                else:
                    image['status'] = 'READY'
            op['status'] = 'DONE'
            op['progress'] = 100
            op['endTime'] = now_rfc3339()

    def read_disk(self, image: dict) -> tuple:
        """(code, message) when Compute Engine could not make a disk of the image's rawDisk.source, else ()."""
        if image['name'] in self.args.fail_image:
            return ('INVALID_IMAGE_FILE', 'The image file is not valid (the test asked this fake to fail %s).'
                    % image['name'])
        source = image['rawDisk']['source']
        parts = urllib.parse.urlsplit(source)
        if parts.scheme == 'gs':
            bucket, name = parts.netloc, parts.path.lstrip('/')
        else:
            bucket, _unused, name = parts.path.lstrip('/').partition('/')
            name = urllib.parse.unquote(name)
        url = '%s/download/storage/v1/b/%s/o/%s?alt=media' % (
            self.args.storage.rstrip('/'), urllib.parse.quote(bucket, safe=''), urllib.parse.quote(name, safe=''))
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                data = response.read()
        except urllib.error.HTTPError as exc:
            return ('RESOURCE_NOT_FOUND' if exc.code == 404 else 'UNAVAILABLE',
                    'The resource \'%s\' could not be read: HTTP %d.' % (source, exc.code))
        except OSError as exc:
            return ('UNAVAILABLE', 'Cloud Storage could not be reached for \'%s\': %s' % (source, exc))
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode='r:gz') as archive:
                members = archive.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            return ('INVALID_IMAGE_FILE', 'The image file \'%s\' is not a gzip compressed tar archive: %s'
                    % (source, exc))
        disks = [member for member in members if member.name in ('disk.raw', './disk.raw') and member.isfile()]
        if not disks:
            return ('INVALID_IMAGE_FILE', 'The tar archive \'%s\' has no file named disk.raw.' % source)
        image['archiveSizeBytes'] = str(len(data))
        image['diskSizeGb'] = str(max(1, -(-disks[0].size // (1 << 30))))
        return ()


def public(resource: dict) -> dict:
    return {key: value for key, value in resource.items() if not key.startswith('_')}


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = 'FakeGCE/1.0'
    protocol_version = 'HTTP/1.1'
    state: State

    def log_message(self, format: str, *args: object) -> None:  # pylint: disable=redefined-builtin
        sys.stderr.write('%s %s\n' % (self.address_string(), format % args))

    # ----- plumbing -------------------------------------------------------------------------------------------

    def reply(self, status: int, body: object = None, headers: dict | None = None) -> None:
        data = b'' if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/json; charset=UTF-8')
        self.send_header('Content-Length', str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def google_error(self, status: int, reason: str, message: str, headers: dict | None = None) -> None:
        names = {400: 'INVALID_ARGUMENT', 401: 'UNAUTHENTICATED', 403: 'PERMISSION_DENIED', 404: 'NOT_FOUND',
                 405: 'METHOD_NOT_ALLOWED', 409: 'ALREADY_EXISTS'}
        self.reply(status, {'error': {'code': status, 'message': message,
                                      'errors': [{'message': message, 'domain': 'global', 'reason': reason}],
                                      'status': names.get(status, 'UNKNOWN')}}, headers)

    def body(self) -> bytes:
        length = int(self.headers.get('Content-Length') or 0)
        return self.rfile.read(length) if length else b''

    # ----- the token endpoint ----------------------------------------------------------------------------------

    def token(self) -> None:
        form = dict(urllib.parse.parse_qsl(self.body().decode()))
        if form.get('grant_type') != JWT_BEARER:
            self.reply(400, {'error': 'unsupported_grant_type',
                             'error_description': 'Invalid grant_type: %s' % form.get('grant_type')})
            return
        claims, reason = self.state.check_jwt(form.get('assertion') or '')
        if claims is None:
            self.reply(400, {'error': 'invalid_grant', 'error_description': reason})
            return
        # Google's documented audience is its own token URL whatever the key's token_uri; accept this one too.
        if claims.get('aud') not in (GOOGLE_TOKEN_URL, self.state.base + '/token'):
            self.reply(400, {'error': 'invalid_grant', 'error_description': 'Invalid JWT: aud must be %s.'
                                                                            % GOOGLE_TOKEN_URL})
            return
        if not claims.get('scope'):
            self.reply(400, {'error': 'invalid_scope', 'error_description': 'Invalid OAuth scope or ID token '
                                                                            'audience provided.'})
            return
        token = 'ya29.fake-' + secrets.token_urlsafe(32)
        with self.state.lock:
            self.state.tokens[token] = time.time() + 3599
        self.reply(200, {'access_token': token, 'expires_in': 3599, 'token_type': 'Bearer'})

    # ----- Compute Engine -----------------------------------------------------------------------------------

    def compute(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        raw = self.body() if method in ('POST', 'PUT', 'PATCH') else b''
        if not self.state.authorized(self.headers.get('Authorization') or ''):
            self.google_error(401, 'unauthorized', 'Request had invalid authentication credentials. Expected OAuth 2 '
                                                   'access token, login cookie or other valid authentication '
                                                   'credential.', {'WWW-Authenticate': 'Bearer realm="fake-gce"'})
            return
        match = OPERATION_PATH.match(url.path)
        if match:
            self.operation(method, match.group(1), urllib.parse.unquote(match.group(2)), bool(match.group(3)))
            return
        match = IMAGES_PATH.match(url.path)
        if not match:
            self.google_error(404, 'notFound', 'The requested URL %s was not found on this fake.' % url.path)
            return
        project, name = match.group(1), match.group(2) and urllib.parse.unquote(match.group(2))
        if project != self.state.args.project:
            self.google_error(404, 'notFound', "The resource 'projects/%s' was not found" % project)
            return
        with self.state.lock:
            self.state.advance()
            if name is None and method == 'GET':
                self.list_images(project, query)
            elif name is None and method == 'POST':
                self.insert_image(project, raw)
            elif name is not None and method == 'GET':
                image = self.state.images.get(name)
                if image is None:
                    self.not_found(project, name)
                else:
                    self.reply(200, public(image))
            elif name is not None and method == 'DELETE':
                self.delete_image(project, name)
            else:
                self.google_error(405, 'methodNotAllowed', 'The method %s is not allowed here by this fake.' % method)

    def not_found(self, project: str, name: str) -> None:
        self.google_error(404, 'notFound', "The resource 'projects/%s/global/images/%s' was not found" % (project, name))

    def insert_image(self, project: str, raw: bytes) -> None:
        try:
            body = json.loads(raw or b'null')
        except ValueError as exc:
            self.google_error(400, 'parseError', 'Invalid JSON payload received. %s' % exc)
            return
        if not isinstance(body, dict):
            self.google_error(400, 'required', 'Required field \'resource\' not specified')
            return
        name = body.get('name') or ''
        if not NAME_RE.match(name):
            self.google_error(400, 'invalid', "Invalid value for field 'resource.name': '%s'. Must be a match of "
                                              "regex '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'" % name)
            return
        if body.get('family') and not NAME_RE.match(body['family']):
            self.google_error(400, 'invalid', "Invalid value for field 'resource.family': '%s'." % body['family'])
            return
        labels = body.get('labels') or {}
        for key, value in labels.items():
            if not LABEL_KEY_RE.match(key) or not LABEL_VALUE_RE.match(str(value)):
                self.google_error(400, 'invalid', "Invalid value for field 'resource.labels': '%s'. Label keys and "
                                                  'values must be lowercase.' % key)
                return
        source = (body.get('rawDisk') or {}).get('source')
        if not source:
            self.google_error(400, 'required', 'Required field \'resource.rawDisk.source\' (or another source) not '
                                               'specified')
            return
        if name in self.state.images:
            self.google_error(409, 'alreadyExists', "The resource 'projects/%s/global/images/%s' already exists"
                                                    % (project, name))
            return
        image_id = str(random.getrandbits(63))
        image = {'kind': 'compute#image', 'id': image_id, 'creationTimestamp': now_rfc3339(), 'name': name,
                 'description': body.get('description', ''), 'sourceType': 'RAW',
                 'rawDisk': {'source': source, 'containerType': 'TAR'}, 'status': 'PENDING',
                 'selfLink': '%s/compute/v1/projects/%s/global/images/%s' % (self.state.base, project, name),
                 'labels': labels, 'labelFingerprint': secrets.token_urlsafe(8),
                 'architecture': body.get('architecture') or 'ARCHITECTURE_UNSPECIFIED',
                 'guestOsFeatures': body.get('guestOsFeatures') or [], 'licenses': body.get('licenses') or [],
                 'storageLocations': body.get('storageLocations') or ['us'], 'diskSizeGb': '1'}
        if body.get('family'):
            image['family'] = body['family']
        self.state.images[name] = image
        self.reply(200, public(self.state.new_operation('insert', project, name, image_id)))

    def delete_image(self, project: str, name: str) -> None:
        image = self.state.images.get(name)
        if image is None:
            self.not_found(project, name)
            return
        self.reply(200, public(self.state.new_operation('delete', project, name, image['id'])))

    def list_images(self, project: str, query: dict) -> None:
        images = [image for _name, image in sorted(self.state.images.items())]
        expression = query.get('filter') or ''
        if expression:
            match = FILTER_RE.match(expression)
            if not match:
                self.google_error(400, 'invalid', "Invalid value for field 'filter': '%s'. This fake takes one "
                                                  "'field = value' comparison." % expression)
                return
            field, operator, value = match.groups()

            def lookup(image: dict) -> object:
                current: object = image
                for part in field.split('.'):
                    current = current.get(part) if isinstance(current, dict) else None
                return current

            wanted = operator in ('=', 'eq')
            images = [image for image in images if (str(lookup(image)) == value) == wanted]
        size = min(int(query.get('maxResults') or PAGE_SIZE), PAGE_SIZE)
        start = int(query.get('pageToken') or 0)
        page = {'kind': 'compute#imageList', 'id': 'projects/%s/global/images' % project,
                'items': [public(image) for image in images[start:start + size]],
                'selfLink': '%s/compute/v1/projects/%s/global/images' % (self.state.base, project)}
        if start + size < len(images):
            page['nextPageToken'] = str(start + size)
        self.reply(200, page)

    def operation(self, method: str, project: str, name: str, wait: bool) -> None:
        if (method, wait) not in (('GET', False), ('POST', True)):
            self.google_error(405, 'methodNotAllowed', 'The method %s is not allowed here by this fake.' % method)
            return
        deadline = time.monotonic() + (30 if wait else 0)
        while True:
            with self.state.lock:
                self.state.advance()
                op = self.state.operations.get(name)
                body = public(op) if op is not None else None
            if op is None or project != self.state.args.project:
                self.google_error(404, 'notFound', "The resource 'projects/%s/global/operations/%s' was not found"
                                                   % (project, name))
                return
            if body['status'] == 'DONE' or time.monotonic() >= deadline:
                self.reply(200, body)
                return
            time.sleep(0.1)

    # ----- dispatch --------------------------------------------------------------------------------------------

    def dispatch(self, method: str) -> None:
        if urllib.parse.urlsplit(self.path).path == '/token' and method == 'POST':
            self.token()
        else:
            self.compute(method)

    def do_GET(self) -> None:  # pylint: disable=invalid-name
        self.dispatch('GET')

    def do_POST(self) -> None:  # pylint: disable=invalid-name
        self.dispatch('POST')

    def do_DELETE(self) -> None:  # pylint: disable=invalid-name
        self.dispatch('DELETE')

    def do_PATCH(self) -> None:  # pylint: disable=invalid-name
        self.dispatch('PATCH')


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # Port probes that close at once are not worth a traceback.
        sys.stderr.write('connection from %s ended early\n' % (client_address,))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--service-account', required=True, help='the JSON key of the one account that is accepted')
    parser.add_argument('--project', required=True)
    parser.add_argument('--storage', required=True, help='URL of the Cloud Storage emulator')
    parser.add_argument('--fail-image', action='append', default=[])
    parser.add_argument('--delay', type=float, default=0.5, help='seconds an operation stays RUNNING')
    args = parser.parse_args()
    Handler.state = State(args)
    server = Server(('127.0.0.1', args.port), Handler)
    server.serve_forever()


if __name__ == '__main__':
    main()
