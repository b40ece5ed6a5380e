# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small fake of Azure Resource Manager's Compute images and of Microsoft Entra ID's token endpoint, over TLS.

    python fake_azure_arm.py --port PORT --dir DIR --tenant T --client-id C --client-secret S
                             --subscription SUB --resource-group RG [--resource-group RG2] [--fail-image NAME]

No emulator exists for either service. This one follows the public references:

- Azure REST API reference, Compute, "Images - Create Or Update", "Images - Get", "Images - Delete" and
  "Images - List By Resource Group": the URL paths, the api-version query parameter, the Image body
  (location, tags, properties.storageProfile.osDisk, properties.hyperVGeneration, properties.provisioningState),
  the status codes (PUT 201 created / 200 updated; DELETE 202 accepted / 204 when there is nothing to delete;
  GET 200 / 404), list pages with ``value`` and ``nextLink``.
- Azure Resource Manager, "Track asynchronous Azure operations": a long-running PUT or DELETE answers with an
  ``Azure-AsyncOperation`` header naming an operation whose GET returns ``status`` InProgress, then Succeeded
  or Failed (with ``error``), and ``Retry-After``.
- ARM's error format ``{"error": {"code", "message"}}``: 401 AuthenticationFailed (no Authorization header),
  InvalidAuthenticationToken (a token this fake did not issue) and InvalidAuthenticationTokenAudience (a token
  for another resource), with a ``WWW-Authenticate: Bearer`` challenge; 404 SubscriptionNotFound,
  ResourceGroupNotFound, ResourceNotFound; 400 MissingApiVersionParameter; 409 PropertyChangeNotAllowed.
- Microsoft identity platform, "OAuth 2.0 client credentials flow": POST /{tenant}/oauth2/v2.0/token with
  grant_type=client_credentials, client_id, client_secret and a scope ending in ``/.default``; the answer
  ``{"token_type": "Bearer", "expires_in", "access_token"}``, and the documented errors (invalid_client
  AADSTS7000215 for a wrong secret, unauthorized_client AADSTS700016 for an unknown application,
  invalid_tenant AADSTS90002, invalid_scope AADSTS1002012). Also the OpenID Connect discovery document
  GET /{tenant}/v2.0/.well-known/openid-configuration that MSAL reads first.

MSAL and azure-identity take only https authorities and azure-core sends bearer tokens only over https, so the
fake makes a self-signed certificate for 127.0.0.1 at start (DIR/cert.pem, for REQUESTS_CA_BUNDLE) and serves TLS.
--fail-image NAME makes the creation of that image end with status Failed, as when the VHD is not usable.
"""

from __future__ import annotations

import argparse
import datetime
import http.server
import ipaddress
import json
import os
import re
import secrets
import ssl
import sys
import threading
import time
import urllib.parse
import uuid

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

IMAGE_PATH = re.compile(r'^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.Compute/images(?:/([^/]+))?$',
                        re.IGNORECASE)
OPERATION_PATH = re.compile(r'^/subscriptions/([^/]+)/providers/Microsoft\.Compute/locations/([^/]+)/operations/([^/]+)$',
                            re.IGNORECASE)
DISCOVERY_PATH = re.compile(r'^/([^/]+)/v2\.0/\.well-known/openid-configuration$')
TOKEN_PATH = re.compile(r'^/([^/]+)/oauth2/v2\.0/token$')
IMAGE_NAME = re.compile(r'^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,78}[A-Za-z0-9_])?$')
PAGE_SIZE = 2   # small, so that clients must follow nextLink


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%f0Z')


def make_certificate(directory: str) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'fake azure arm 127.0.0.1')])
    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    public = key.public_key()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public)
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address('127.0.0.1'))]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
            .sign(key, hashes.SHA256()))
    cert_file = os.path.join(directory, 'cert.pem')
    key_file = os.path.join(directory, 'key.pem')
    with open(key_file, 'wb') as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    with open(cert_file + '.tmp', 'wb') as handle:
        handle.write(cert.public_bytes(serialization.Encoding.PEM))
    os.rename(cert_file + '.tmp', cert_file)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context


class State:
    """Tokens issued, images by (resource group, name) and operations, guarded by one lock."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.lock = threading.Lock()
        self.tokens: dict = {}
        self.images: dict = {}
        self.operations: dict = {}
        self.groups = {group.lower(): group for group in args.resource_group}
        self.base = ''

    def advance(self) -> None:
        """Finish the operations whose time has come (the fake's stand-in for the platform's work)."""
        moment = time.monotonic()
        for op in self.operations.values():
            if op['status'] != 'InProgress' or moment < op['due']:
                continue
            image = self.images.get(op['key'])
            op['endTime'] = now()
            if op['kind'] == 'delete':
                self.images.pop(op['key'], None)
                op['status'] = 'Succeeded'
            elif image is None:
                op['status'] = 'Failed'
                op['error'] = {'code': 'NotFound', 'message': 'The image was deleted while it was created.'}
            elif op['key'][1].lower() in {name.lower() for name in self.args.fail_image}:
                image['properties']['provisioningState'] = 'Failed'
                op['status'] = 'Failed'
                op['error'] = {'code': 'InvalidParameter', 'target': 'blobUri',
                               'message': 'The specified VHD is not a valid fixed VHD.'}
            else:
                image['properties']['provisioningState'] = 'Succeeded'
                op['status'] = 'Succeeded'


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = 'FakeAzure/1.0'
    protocol_version = 'HTTP/1.1'
    state: State

    def setup(self) -> None:
        self.request.settimeout(30)
        self.request.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: object) -> None:  # pylint: disable=redefined-builtin
        sys.stderr.write('%s %s\n' % (self.address_string(), format % args))

    # ----- plumbing -------------------------------------------------------------------------------------------

    def reply(self, status: int, body: object = None, headers: dict | None = None) -> None:
        data = b'' if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header('x-ms-request-id', str(uuid.uuid4()))
        if body is not None:
            self.send_header('Content-Type', 'application/json; charset=utf-8')
        self.send_header('Content-Length', str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def arm_error(self, status: int, code: str, message: str, headers: dict | None = None) -> None:
        self.reply(status, {'error': {'code': code, 'message': message}}, headers)

    def entra_error(self, status: int, error: str, code: int, description: str) -> None:
        trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
        self.reply(status, {
            'error': error,
            'error_description': 'AADSTS%d: %s Trace ID: %s Correlation ID: %s Timestamp: %s'
                                 % (code, description, trace, correlation, now()),
            'error_codes': [code], 'timestamp': now(), 'trace_id': trace, 'correlation_id': correlation})

    def body(self) -> bytes:
        length = int(self.headers.get('Content-Length') or 0)
        return self.rfile.read(length) if length else b''

    def split(self) -> tuple:
        url = urllib.parse.urlsplit(self.path)
        return url.path, dict(urllib.parse.parse_qsl(url.query))

    # ----- Microsoft Entra ID ---------------------------------------------------------------------------------

    def discovery(self, tenant: str) -> None:
        if tenant != self.state.args.tenant:
            self.entra_error(400, 'invalid_tenant', 90002, "Tenant '%s' not found." % tenant)
            return
        base = '%s/%s' % (self.state.base, tenant)
        self.reply(200, {
            'token_endpoint': base + '/oauth2/v2.0/token',
            'token_endpoint_auth_methods_supported': ['client_secret_post', 'private_key_jwt', 'client_secret_basic'],
            'jwks_uri': base + '/discovery/v2.0/keys',
            'response_modes_supported': ['query', 'fragment', 'form_post'],
            'subject_types_supported': ['pairwise'],
            'id_token_signing_alg_values_supported': ['RS256'],
            'response_types_supported': ['code', 'id_token', 'code id_token', 'id_token token'],
            'scopes_supported': ['openid', 'profile', 'email', 'offline_access'],
            'issuer': base + '/v2.0',
            'authorization_endpoint': base + '/oauth2/v2.0/authorize',
            'tenant_region_scope': None,
        })

    def token(self, tenant: str) -> None:
        args = self.state.args
        form = dict(urllib.parse.parse_qsl(self.body().decode()))
        if tenant != args.tenant:
            self.entra_error(400, 'invalid_tenant', 90002, "Tenant '%s' not found." % tenant)
        elif form.get('grant_type') != 'client_credentials':
            self.entra_error(400, 'unsupported_grant_type', 70003,
                             'The app requested an unsupported grant type %r.' % form.get('grant_type'))
        elif form.get('client_id') != args.client_id:
            self.entra_error(400, 'unauthorized_client', 700016,
                             "Application with identifier '%s' was not found in the directory '%s'."
                             % (form.get('client_id'), tenant))
        elif form.get('client_secret') != args.client_secret:
            self.entra_error(401, 'invalid_client', 7000215,
                             'Invalid client secret provided. Ensure the secret being sent in the request is the '
                             "client secret value, not the client secret ID, for a secret added to app '%s'."
                             % args.client_id)
        elif not form.get('scope', '').endswith('/.default') or ' ' in form.get('scope', ''):
            self.entra_error(400, 'invalid_scope', 1002012,
                             "The provided value for scope %s is not valid. Client credential flows must have a "
                             "scope value with /.default suffixed to the resource identifier (application ID URI)."
                             % form.get('scope'))
        else:
            token = secrets.token_urlsafe(32)
            with self.state.lock:
                self.state.tokens[token] = form['scope'][:-len('.default')].rstrip('/')
            self.reply(200, {'token_type': 'Bearer', 'expires_in': 3599, 'ext_expires_in': 3599,
                             'access_token': token})

    # ----- Azure Resource Manager ------------------------------------------------------------------------------

    def authorized(self) -> bool:
        challenge = {'WWW-Authenticate': 'Bearer authorization_uri="%s/%s", error="invalid_token", '
                                         'error_description="The access token is invalid."'
                                         % (self.state.base, self.state.args.tenant)}
        header = self.headers.get('Authorization') or ''
        if not header:
            self.arm_error(401, 'AuthenticationFailed', "Authentication failed. The 'Authorization' header is missing.",
                           challenge)
            return False
        scheme, _unused, token = header.partition(' ')
        with self.state.lock:
            audience = self.state.tokens.get(token) if scheme.lower() == 'bearer' else None
        if audience is None:
            self.arm_error(401, 'InvalidAuthenticationToken', 'The access token is invalid.', challenge)
            return False
        if audience != self.state.base:
            self.arm_error(401, 'InvalidAuthenticationTokenAudience',
                           "The access token has been obtained for wrong audience or resource '%s'. It should exactly "
                           "match with one of the allowed audiences '%s', '%s/'." % (audience, self.state.base,
                                                                                     self.state.base), challenge)
            return False
        return True

    def arm(self, method: str) -> None:
        path, query = self.split()
        if method in ('PUT', 'PATCH', 'POST'):
            raw = self.body()
        else:
            raw = b''
        if not self.authorized():
            return
        if not query.get('api-version'):
            self.arm_error(400, 'MissingApiVersionParameter',
                           'The api-version query parameter (?api-version=) is required for all requests.')
            return
        match = OPERATION_PATH.match(path)
        if match and method == 'GET':
            self.operation(match.group(1), match.group(3))
            return
        match = IMAGE_PATH.match(path)
        if not match:
            self.arm_error(404, 'InvalidResourceType', 'The resource type could not be found in this fake.')
            return
        subscription, group, name = match.group(1), match.group(2), match.group(3)
        if subscription != self.state.args.subscription:
            self.arm_error(404, 'SubscriptionNotFound', "The subscription '%s' could not be found." % subscription)
            return
        if group.lower() not in self.state.groups:
            self.arm_error(404, 'ResourceGroupNotFound', "Resource group '%s' could not be found." % group)
            return
        group = self.state.groups[group.lower()]
        with self.state.lock:
            self.state.advance()
            if name is None and method == 'GET':
                self.list_images(group, query)
            elif name is None:
                self.arm_error(405, 'MethodNotAllowed', 'The method %s is not allowed on the image list.' % method)
            elif method == 'GET':
                self.get_image(group, name)
            elif method == 'PUT':
                self.put_image(subscription, group, name, raw, query)
            elif method == 'DELETE':
                self.delete_image(subscription, group, name, query)
            else:
                self.arm_error(405, 'MethodNotAllowed', 'The method %s is not allowed here by this fake.' % method)

    def not_found(self, group: str, name: str) -> None:
        self.arm_error(404, 'ResourceNotFound', "The Resource 'Microsoft.Compute/images/%s' under resource group '%s' "
                                                'was not found.' % (name, group))

    def find(self, group: str, name: str) -> tuple:
        for key in self.state.images:
            if key[0] == group and key[1].lower() == name.lower():
                return key
        return (group, name)

    def get_image(self, group: str, name: str) -> None:
        image = self.state.images.get(self.find(group, name))
        if image is None:
            self.not_found(group, name)
        else:
            self.reply(200, image)

    def list_images(self, group: str, query: dict) -> None:
        images = [image for key, image in sorted(self.state.images.items()) if key[0] == group]
        start = int(query.get('$skiptoken') or 0)
        page = {'value': images[start:start + PAGE_SIZE]}
        if start + PAGE_SIZE < len(images):
            page['nextLink'] = '%s%s?api-version=%s&$skiptoken=%d' % (
                self.state.base, urllib.parse.urlsplit(self.path).path, query['api-version'], start + PAGE_SIZE)
        self.reply(200, page)

    def start_operation(self, subscription: str, location: str, kind: str, key: tuple, query: dict) -> dict:
        op_id = str(uuid.uuid4())
        self.state.operations[op_id] = {'name': op_id, 'status': 'InProgress', 'startTime': now(), 'kind': kind,
                                        'key': key, 'due': time.monotonic() + self.state.args.delay}
        url = '%s/subscriptions/%s/providers/Microsoft.Compute/locations/%s/operations/%s?api-version=%s' % (
            self.state.base, subscription, location, op_id, query['api-version'])
        return {'Azure-AsyncOperation': url, 'Retry-After': '1'}

    def put_image(self, subscription: str, group: str, name: str, raw: bytes, query: dict) -> None:
        try:
            body = json.loads(raw or b'null')
        except ValueError as exc:
            self.arm_error(400, 'InvalidRequestContent', 'The request content was invalid and could not be '
                                                         'deserialized: %s' % exc)
            return
        if not isinstance(body, dict) or not body.get('location'):
            self.arm_error(400, 'LocationRequired', 'The location property is required for this definition.')
            return
        if not IMAGE_NAME.match(name):
            self.arm_error(400, 'InvalidParameter', "The entity name 'imageName' is invalid according to its "
                                                    'validation rule: ^[^_\\W][\\w-._]{0,79}(?<![-.])$.')
            return
        props = body.get('properties') or {}
        os_disk = (props.get('storageProfile') or {}).get('osDisk') or {}
        for field in ('osType', 'osState'):
            if not os_disk.get(field):
                self.arm_error(400, 'InvalidParameter', "Required parameter 'osDisk.%s' is missing (null)." % field)
                return
        if not (os_disk.get('blobUri') or os_disk.get('snapshot') or os_disk.get('managedDisk')):
            self.arm_error(400, 'InvalidParameter', 'One of blobUri, snapshot or managedDisk is required for the '
                                                    'OS disk of an image.')
            return
        if os_disk.get('blobUri') and not urllib.parse.urlsplit(os_disk['blobUri']).path.lower().endswith('.vhd'):
            self.arm_error(400, 'InvalidParameter', "The blob URI '%s' is not a VHD." % os_disk['blobUri'])
            return
        key = self.find(group, name)
        old = self.state.images.get(key)
        if old is not None:
            old_disk = old['properties']['storageProfile']['osDisk']
            if old_disk.get('blobUri') != os_disk.get('blobUri'):
                self.arm_error(409, 'PropertyChangeNotAllowed', "Changing property 'blobUri' is not allowed.")
                return
        template = '/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/images/%s'
        image_id = template % (subscription, group, key[1])
        image = {
            'id': image_id,
            'name': key[1], 'type': 'Microsoft.Compute/images', 'location': body['location'],
            'tags': body.get('tags') or {},
            'properties': {
                'storageProfile': {'osDisk': dict(os_disk, diskSizeGB=os_disk.get('diskSizeGB', 1)), 'dataDisks': [],
                                   'zoneResilient': False},
                'provisioningState': 'Updating' if old else 'Creating',
                'hyperVGeneration': props.get('hyperVGeneration') or 'V1',
            },
        }
        self.state.images[key] = image
        headers = self.start_operation(subscription, body['location'], 'create', key, query)
        self.reply(200 if old else 201, image, headers)

    def delete_image(self, subscription: str, group: str, name: str, query: dict) -> None:
        key = self.find(group, name)
        image = self.state.images.get(key)
        if image is None:
            self.reply(204)
            return
        image['properties']['provisioningState'] = 'Deleting'
        headers = self.start_operation(subscription, image['location'], 'delete', key, query)
        headers['Location'] = headers['Azure-AsyncOperation'] + '&monitor=true'
        self.reply(202, None, headers)

    def operation(self, subscription: str, op_id: str) -> None:
        with self.state.lock:
            self.state.advance()
            op = self.state.operations.get(op_id)
            if op is None or subscription != self.state.args.subscription:
                self.arm_error(404, 'NotFound', "The operation '%s' was not found." % op_id)
                return
            if urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get('monitor') and \
                    op['status'] == 'Succeeded':
                self.reply(200 if op['kind'] != 'delete' else 204)
                return
            body = {key: op[key] for key in ('name', 'status', 'startTime', 'endTime', 'error') if key in op}
        self.reply(200, body, {'Retry-After': '1'} if body['status'] == 'InProgress' else None)

    # ----- dispatch --------------------------------------------------------------------------------------------

    def dispatch(self, method: str) -> None:
        path = urllib.parse.urlsplit(self.path).path
        match = DISCOVERY_PATH.match(path)
        if match and method == 'GET':
            self.discovery(match.group(1))
            return
        match = TOKEN_PATH.match(path)
        if match and method == 'POST':
            self.token(match.group(1))
            return
        self.arm(method)

    def do_GET(self) -> None:  # pylint: disable=invalid-name
        self.dispatch('GET')

    def do_PUT(self) -> None:  # pylint: disable=invalid-name
        self.dispatch('PUT')

    def do_POST(self) -> None:  # pylint: disable=invalid-name
        self.dispatch('POST')

    def do_DELETE(self) -> None:  # pylint: disable=invalid-name
        self.dispatch('DELETE')

    def do_PATCH(self) -> None:  # pylint: disable=invalid-name
        self.dispatch('PATCH')


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # Port probes and clients that close mid-handshake are not worth a traceback.
        sys.stderr.write('connection from %s ended early\n' % (client_address,))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--dir', required=True)
    parser.add_argument('--tenant', required=True)
    parser.add_argument('--client-id', required=True)
    parser.add_argument('--client-secret', required=True)
    parser.add_argument('--subscription', required=True)
    parser.add_argument('--resource-group', action='append', default=[])
    parser.add_argument('--fail-image', action='append', default=[])
    parser.add_argument('--delay', type=float, default=0.5, help='seconds an operation stays InProgress')
    args = parser.parse_args()
    context = make_certificate(args.dir)
    state = State(args)
    state.base = 'https://127.0.0.1:%d' % args.port
    Handler.state = state
    server = Server(('127.0.0.1', args.port), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    server.serve_forever()


if __name__ == '__main__':
    main()
