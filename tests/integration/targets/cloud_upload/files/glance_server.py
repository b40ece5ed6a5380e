# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run the real Glance API (the pip package glance) standalone on loopback, for the openstack_glance tests.

    GLANCE_PYTHON glance_server.py --port PORT --dir DIR --keystone URL --service-user NAME:PASSWORD
                                   [--project NAME]

GLANCE_PYTHON is the Python of a virtual environment of its own that has glance installed (Glance and its
dependencies pin versions that conflict with the collection's test environment). Everything Glance needs lives
in DIR: glance-api.conf and glance-api-paste.ini written here, a SQLite database created with Glance's own
migrations (glance-manage db sync), and a file store for the images' data (DIR/images, with the staging and
tasks stores beside it).

Authentication: the paste pipeline is Glance's "keystone" flavor (versionnegotiation, keystonemiddleware's
auth_token, Glance's context middleware). auth_token is pointed at files/fake_keystone.py: it authenticates as
--service-user and validates every user token with GET /v3/auth/tokens there, so a wrong or missing token gets
Glance's real 401, and the project and roles of the token decide the owner of an image and what Glance's
default policies allow, exactly as in a cloud. (The "noauth" flavors would make every caller an admin without a
project, which would hide what the module must get right.)

Glance dropped its own eventlet server; it is a WSGI application (glance.common.wsgi_app.init_app, which
uWSGI or mod_wsgi load in production). Here wsgiref serves it from threads. The port is opened only once the
application is loaded, so that files/background.py's readiness check (the port accepts connections) means that
Glance answers.
"""

from __future__ import annotations

import argparse
import os
import socketserver
import subprocess
import sys
import wsgiref.simple_server

PASTE_INI = """\
# The keystone flavor of Glance's API pipeline, without the optional middleware (CORS, proxy headers, profiler).
[pipeline:glance-api-keystone]
pipeline = versionnegotiation authtoken context rootapp

[composite:rootapp]
paste.composite_factory = glance.api:root_app_factory
/: apiversions
/v2: apiv2app

[app:apiversions]
paste.app_factory = glance.api.versions:create_resource

[app:apiv2app]
paste.app_factory = glance.api.v2.router:API.factory

[filter:versionnegotiation]
paste.filter_factory = glance.api.middleware.version_negotiation:VersionNegotiationFilter.factory

[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
delay_auth_decision = true

[filter:context]
paste.filter_factory = glance.api.middleware.context:ContextMiddleware.factory
"""

API_CONF = """\
[DEFAULT]
enabled_backends = fs:file
bind_host = 127.0.0.1
bind_port = {port}
show_image_direct_url = false
image_size_cap = 1099511627776
debug = false
use_stderr = true

[database]
connection = sqlite:///{dir}/glance.sqlite

[glance_store]
default_backend = fs

[fs]
filesystem_store_datadir = {dir}/images/

[os_glance_staging_store]
filesystem_store_datadir = {dir}/staging/

[os_glance_tasks_store]
filesystem_store_datadir = {dir}/tasks/

[paste_deploy]
flavor = keystone
config_file = {dir}/glance-api-paste.ini

[keystone_authtoken]
www_authenticate_uri = {keystone}
auth_url = {keystone}
auth_type = password
username = {user}
password = {password}
project_name = {project}
user_domain_name = Default
project_domain_name = Default
http_connect_timeout = 10

[oslo_concurrency]
lock_path = {dir}/locks

[wsgi]
task_pool_threads = 4
"""


class ThreadingWSGIServer(socketserver.ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    daemon_threads = True


class QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # pylint: disable=redefined-builtin
        sys.stderr.write('%s %s\n' % (self.address_string(), format % args))


def write_config(args: argparse.Namespace) -> str:
    user, sep, password = args.service_user.partition(':')
    if not sep:
        sys.exit('--service-user takes NAME:PASSWORD')
    directory = os.path.abspath(args.dir)
    for sub in ('images', 'staging', 'tasks', 'locks'):
        os.makedirs(os.path.join(directory, sub), exist_ok=True)
    conf = os.path.join(directory, 'glance-api.conf')
    with open(conf, 'w', encoding='utf-8') as handle:
        handle.write(API_CONF.format(port=args.port, dir=directory, keystone=args.keystone.rstrip('/'), user=user,
                                     password=password, project=args.project))
    with open(os.path.join(directory, 'glance-api-paste.ini'), 'w', encoding='utf-8') as handle:
        handle.write(PASTE_INI)
    return conf


def sync_database(conf: str) -> None:
    """Create the schema with Glance's migrations, as an operator does with glance-manage db sync."""
    manage = os.path.join(os.path.dirname(sys.executable), 'glance-manage')
    if os.path.exists(manage):
        argv = [sys.executable, manage]
    else:
        argv = [sys.executable, '-c', 'import sys; from glance.cmd.manage import main; sys.exit(main())']
    subprocess.run(argv + ['--config-file', conf, 'db', 'sync'], check=True, stdout=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--dir', required=True)
    parser.add_argument('--keystone', required=True, help='the Identity endpoint, e.g. http://127.0.0.1:5000')
    parser.add_argument('--service-user', required=True, help='NAME:PASSWORD of the user auth_token uses')
    parser.add_argument('--project', default='osimage', help='the project of the service user')
    args = parser.parse_args()
    conf = write_config(args)
    sync_database(conf)
    os.environ['OS_GLANCE_CONFIG_DIR'] = os.path.dirname(conf)
    from glance.common import wsgi_app  # pylint: disable=import-outside-toplevel,import-error
    application = wsgi_app.init_app()
    server = ThreadingWSGIServer(('127.0.0.1', args.port), QuietHandler)
    server.set_app(application)
    sys.stderr.write('glance listening on http://127.0.0.1:%d\n' % args.port)
    sys.stderr.flush()
    server.serve_forever()


if __name__ == '__main__':
    main()
