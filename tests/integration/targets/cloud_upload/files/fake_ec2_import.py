# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A fake of EC2's snapshot import in front of a moto server, with fault injection, for the aws_ami tests.

    python fake_ec2_import.py --port PORT --upstream MOTO_URL [--access-key KEY] [--complete-after SECONDS]
        [--fail-key REGEX] [--fault WHAT:COUNT:ACTION ...]

moto has no VM Import. This server answers three actions of the EC2 Query API itself,
following the Amazon EC2 API Reference (API version 2016-11-15), sections "Actions":
ImportSnapshot, DescribeImportSnapshotTasks and CancelImportTask, and "Data Types":
SnapshotDiskContainer, SnapshotTaskDetail, UserBucket, UserBucketDetails, ImportSnapshotTask;
errors are the "Error codes" section's XML (Response/Errors/Error/Code+Message, RequestID).

- ImportSnapshot (DiskContainer.Format, DiskContainer.UserBucket.S3Bucket/S3Key, Description,
  ClientToken, TagSpecification.N for import-snapshot-task) starts a task in status
  ``active``. ClientToken makes it idempotent: the same token returns the same task.
- DescribeImportSnapshotTasks (ImportTaskId.N) reports it. Once --complete-after seconds have
  passed, the next description completes it: the object is read from moto's S3 (it must
  exist; its size is the task's DiskImageSize), and the snapshot is made in moto through
  moto's own API (CreateVolume of the size rounded up to GiB, CreateSnapshot, DeleteVolume),
  so that RegisterImage and DescribeSnapshots - forwarded to moto - know it. A missing object,
  or a key matching --fail-key, ends the task as ``deleted`` with a StatusMessage as EC2
  writes them ("ClientError: ...").
- CancelImportTask (ImportTaskId) ends an active task as ``deleted``.

With --access-key, these actions accept only that access key id (the Credential of the
SigV4 Authorization header; the signature itself is not recomputed) and answer anything else
with HTTP 401 AuthFailure, as EC2 does. Everything else is forwarded to moto unchanged.

--fault WHAT:COUNT:ACTION injects failures into any request, the forwarded ones included:
WHAT is a regular expression searched in "METHOD PATH ACTION" (ACTION being the Query API's
Action; "METHOD PATH" for the REST APIs), COUNT how many matching requests fail before the rest pass (-1: all),
ACTION an HTTP status (answered with EC2's Unavailable/InternalError XML, or for the EBS direct
APIs' REST paths the JSON error with x-amzn-ErrorType) or ``drop`` (the connection is closed
without an answer and nothing is forwarded).
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import math
import re
import threading
import time
import urllib.parse
import uuid
import xml.sax.saxutils

import boto3
import botocore.exceptions

NS = 'http://ec2.amazonaws.com/doc/2016-11-15/'
GIB = 1024 ** 3
FORMATS = ('RAW', 'VHD', 'VMDK')
HOP_HEADERS = ('connection', 'keep-alive', 'transfer-encoding', 'proxy-connection', 'upgrade', 'te', 'trailer')


def esc(value: object) -> str:
    return xml.sax.saxutils.escape(str(value))


class Fault:
    def __init__(self, spec: str) -> None:
        what, count, action = spec.rsplit(':', 2)
        self.pattern = re.compile(what)
        self.left = int(count)
        self.action = action
        self.lock = threading.Lock()

    def fires(self, subject: str) -> bool:
        if not self.pattern.search(subject):
            return False
        with self.lock:
            if self.left == 0:
                return False
            if self.left > 0:
                self.left -= 1
            return True


class State:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.upstream = urllib.parse.urlsplit(args.upstream)
        self.faults = [Fault(spec) for spec in args.fault]
        self.tasks: dict = {}
        self.tokens: dict = {}
        self.lock = threading.Lock()

    def client(self, service: str, region: str):
        return boto3.client(service, endpoint_url=self.args.upstream, region_name=region,
                            aws_access_key_id=self.args.upstream_key, aws_secret_access_key=self.args.upstream_secret)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'FakeEC2Import/1.0'
    state: State

    def do_GET(self) -> None:  # pylint: disable=invalid-name
        self.handle_any()

    def do_POST(self) -> None:  # pylint: disable=invalid-name
        self.handle_any()

    def do_PUT(self) -> None:  # pylint: disable=invalid-name
        self.handle_any()

    def do_DELETE(self) -> None:  # pylint: disable=invalid-name
        self.handle_any()

    def do_HEAD(self) -> None:  # pylint: disable=invalid-name
        self.handle_any()

    def handle_any(self) -> None:
        length = int(self.headers.get('Content-Length') or 0)
        body = self.rfile.read(length) if length else b''
        params: dict = {}
        if self.command == 'POST' and 'x-www-form-urlencoded' in (self.headers.get('Content-Type') or ''):
            parsed = urllib.parse.parse_qs(body.decode('utf-8'), keep_blank_values=True)
            params = {key: values[-1] for key, values in parsed.items()}
        action = params.get('Action', '')
        subject = '%s %s%s' % (self.command, self.path, ' ' + action if action else '')
        for fault in self.state.faults:
            if fault.fires(subject):
                self.log_message('fault %s for %s', fault.action, subject)
                self.inject(fault.action, bool(action))
                return
        handler = {'ImportSnapshot': self.import_snapshot, 'DescribeImportSnapshotTasks': self.describe_tasks,
                   'CancelImportTask': self.cancel_task}.get(action)
        if handler is None:
            self.forward(body)
            return
        if not self.authorized():
            self.error(401, 'AuthFailure', 'AWS was not able to validate the provided access credentials')
            return
        handler(params)

    # --- faults and forwarding ----------------------------------------------------------------------------

    def inject(self, action: str, query_api: bool) -> None:
        if action == 'drop':
            self.close_connection = True
            return
        status = int(action)
        if query_api:
            code = 'Unavailable' if status == 503 else 'InternalError'
            self.error(status, code, 'injected fault: the service is not available, retry the request')
            return
        kind = 'ThrottlingException' if status == 429 else 'InternalServerException'
        self.send(status, json.dumps({'message': 'injected fault'}).encode(), 'application/json',
                  {'x-amzn-ErrorType': kind})

    def forward(self, body: bytes) -> None:
        upstream = self.state.upstream
        conn = http.client.HTTPConnection(upstream.hostname, upstream.port or 80, timeout=120)
        headers = {key: value for key, value in self.headers.items() if key.lower() not in HOP_HEADERS}
        headers['Content-Length'] = str(len(body))
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in HOP_HEADERS and key.lower() != 'content-length':
                self.send_header(key, value)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(data)

    # --- the Query API's answers --------------------------------------------------------------------------

    def send(self, status: int, data: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(data)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def reply(self, action: str, inner: str) -> None:
        text = ('<?xml version="1.0" encoding="UTF-8"?>\n<%sResponse xmlns="%s"><requestId>%s</requestId>%s</%sResponse>'
                % (action, NS, uuid.uuid4(), inner, action))
        self.send(200, text.encode(), 'text/xml;charset=UTF-8')

    def error(self, status: int, code: str, message: str) -> None:
        text = ('<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>%s</Code><Message>%s</Message>'
                '</Error></Errors><RequestID>%s</RequestID></Response>' % (esc(code), esc(message), uuid.uuid4()))
        self.send(status, text.encode(), 'text/xml;charset=UTF-8')

    def credential(self) -> tuple:
        """(access key id, region) from the SigV4 Authorization header's Credential."""
        match = re.search(r'Credential=([^/,\s]+)/[0-9]{8}/([^/]+)/', self.headers.get('Authorization') or '')
        return (match.group(1), match.group(2)) if match else (None, None)

    def authorized(self) -> bool:
        key, _unused = self.credential()
        if key is None:
            return False
        return self.state.args.access_key is None or key == self.state.args.access_key

    def import_snapshot(self, params: dict) -> None:
        fmt = params.get('DiskContainer.Format', '').upper()
        bucket = params.get('DiskContainer.UserBucket.S3Bucket')
        key = params.get('DiskContainer.UserBucket.S3Key')
        if fmt not in FORMATS:
            self.error(400, 'InvalidParameterValue', 'Value (%s) for parameter DiskContainer.Format is invalid. '
                       'Supported formats: %s' % (fmt, ', '.join(FORMATS)))
            return
        if not bucket or not key:
            self.error(400, 'MissingParameter', 'The request must contain the parameter DiskContainer.UserBucket '
                       'or DiskContainer.Url')
            return
        tags = []
        index = 1
        while 'TagSpecification.%d.ResourceType' % index in params:
            if params['TagSpecification.%d.ResourceType' % index] != 'import-snapshot-task':
                self.error(400, 'InvalidParameterValue', "'%s' is not a valid taggable resource type for this "
                           'operation.' % params['TagSpecification.%d.ResourceType' % index])
                return
            tag = 1
            while 'TagSpecification.%d.Tag.%d.Key' % (index, tag) in params:
                tags.append((params['TagSpecification.%d.Tag.%d.Key' % (index, tag)],
                             params.get('TagSpecification.%d.Tag.%d.Value' % (index, tag), '')))
                tag += 1
            index += 1
        _unused, region = self.credential()
        token = params.get('ClientToken')
        with self.state.lock:
            if token and token in self.state.tokens:
                task = self.state.tasks[self.state.tokens[token]]
            else:
                task = dict(id='import-snap-%s' % uuid.uuid4().hex[:17], description=params.get('Description', ''),
                            disk_description=params.get('DiskContainer.Description', ''), format=fmt, bucket=bucket,
                            key=key, tags=tags, region=region, status='active', message='pending', progress='0',
                            started=time.monotonic(), snapshot=None, size=None)
                self.state.tasks[task['id']] = task
                if token:
                    self.state.tokens[token] = task['id']
        self.reply('ImportSnapshot', '<description>%s</description><importTaskId>%s</importTaskId>%s%s' % (
            esc(task['description']), task['id'], self.detail(task), self.tag_set(task)))

    def describe_tasks(self, params: dict) -> None:
        ids = [value for name, value in sorted(params.items()) if re.match(r'^ImportTaskId\.[0-9]+$', name)]
        with self.state.lock:
            unknown = [task_id for task_id in ids if task_id not in self.state.tasks]
            tasks = [self.state.tasks[task_id] for task_id in ids if task_id in self.state.tasks] if ids \
                else list(self.state.tasks.values())
        if unknown:
            self.error(400, 'InvalidConversionTaskId.Malformed', "The import task ID '%s' does not exist"
                       % unknown[0])
            return
        with self.state.lock:
            for task in tasks:
                self.advance(task)
        items = ''.join('<item><description>%s</description><importTaskId>%s</importTaskId>%s%s</item>' % (
            esc(task['description']), task['id'], self.detail(task), self.tag_set(task)) for task in tasks)
        self.reply('DescribeImportSnapshotTasks', '<importSnapshotTaskSet>%s</importSnapshotTaskSet>' % items)

    def cancel_task(self, params: dict) -> None:
        task = self.state.tasks.get(params.get('ImportTaskId', ''))
        if task is None:
            self.error(400, 'InvalidConversionTaskId.Malformed', "The import task ID '%s' does not exist"
                       % params.get('ImportTaskId'))
            return
        previous = task['status']
        if previous != 'active':
            self.error(400, 'IncorrectState', 'The import task %s is %s and cannot be cancelled'
                       % (task['id'], previous))
            return
        task.update(status='deleted', message='User initiated task cancelation', progress=None)
        self.reply('CancelImportTask', '<importTaskId>%s</importTaskId><previousState>%s</previousState>'
                   '<state>deleting</state>' % (task['id'], previous))

    def advance(self, task: dict) -> None:
        """Complete (or fail) an active task once its time has come - the conversion EC2 would do."""
        if task['status'] != 'active':
            return
        if time.monotonic() - task['started'] < self.state.args.complete_after:
            task.update(message='converting', progress='27')
            return
        if self.state.args.fail_key and re.search(self.state.args.fail_key, task['key']):
            task.update(status='deleted', progress=None,
                        message='ClientError: Disk validation failed [Unsupported specified file format]')
            return
        try:
            head = self.state.client('s3', task['region']).head_object(Bucket=task['bucket'], Key=task['key'])
        except botocore.exceptions.ClientError:
            task.update(status='deleted', progress=None, message='ClientError: Unable to access the S3 object '
                        's3://%s/%s. Verify that the object exists and that vmimport can read it'
                        % (task['bucket'], task['key']))
            return
        size = int(head['ContentLength'])
        ec2 = self.state.client('ec2', task['region'])
        volume = ec2.create_volume(AvailabilityZone=task['region'] + 'a', Size=max(1, math.ceil(size / GIB)))
        snapshot = ec2.create_snapshot(VolumeId=volume['VolumeId'],
                                       Description='Created by AWS-VMImport service for %s' % task['id'])
        ec2.delete_volume(VolumeId=volume['VolumeId'])
        task.update(status='completed', message=None, progress=None, snapshot=snapshot['SnapshotId'], size=size)

    @staticmethod
    def detail(task: dict) -> str:
        parts = ['<description>%s</description>' % esc(task['disk_description'] or task['description']),
                 '<format>%s</format>' % task['format'], '<status>%s</status>' % task['status'],
                 '<userBucket><s3Bucket>%s</s3Bucket><s3Key>%s</s3Key></userBucket>' % (esc(task['bucket']),
                                                                                        esc(task['key']))]
        if task['size'] is not None:
            parts.append('<diskImageSize>%d.0</diskImageSize>' % task['size'])
        if task['progress'] is not None:
            parts.append('<progress>%s</progress>' % task['progress'])
        if task['message']:
            parts.append('<statusMessage>%s</statusMessage>' % esc(task['message']))
        if task['snapshot']:
            parts.append('<snapshotId>%s</snapshotId>' % task['snapshot'])
        return '<snapshotTaskDetail>%s</snapshotTaskDetail>' % ''.join(parts)

    @staticmethod
    def tag_set(task: dict) -> str:
        return '<tagSet>%s</tagSet>' % ''.join('<item><key>%s</key><value>%s</value></item>' % (esc(k), esc(v))
                                               for k, v in task['tags'])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--upstream', required=True, help='URL of the moto server')
    parser.add_argument('--upstream-key', default='fake-import-key')
    parser.add_argument('--upstream-secret', default='fake-import-secret')
    parser.add_argument('--access-key', help='the only access key id the import actions accept')
    parser.add_argument('--complete-after', type=float, default=1.0)
    parser.add_argument('--fail-key', help='import tasks of S3 keys matching this regular expression fail')
    parser.add_argument('--fault', action='append', default=[], help='WHAT:COUNT:ACTION')
    args = parser.parse_args()
    Handler.state = State(args)
    server = http.server.ThreadingHTTPServer(('127.0.0.1', args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == '__main__':
    main()
