#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: autoinstall_serve
short_description: Serve response files (autoinstall, preseed, kickstart, cloud-init) over HTTP from the build host
version_added: 0.1.0
description:
  - Starts or stops a small HTTP server on the build host that hands an installer or cloud-init its
    response files - OpenBSD C(install.conf), Debian preseed, Ubuntu autoinstall, kickstart, NoCloud seeds.
  - The server is a daemon that outlives the task, until O(state=stopped), the end of its O(lifetime) or,
    with O(lease), until the build that started it is gone.
    It answers C(GET) and C(HEAD), single byte C(Range) requests, never lists directories and never serves
    a path outside O(root) (C(..), percent-encoded C(..) and symlinks that lead out of it are refused).
  - Its files live in O(work_dir) under O(name) - C(NAME.pid), C(NAME.json) (configuration and URL),
    C(NAME.log) (one JSON line per request with time, client, method, path, status, bytes and range) and
    C(NAME.files/), a private directory that holds O(files).
  - Started again with the same options while the server runs, the task changes nothing. If only the contents
    of O(files) differ, they are rewritten without a restart, so the URL stays the same. Other differences in
    O(bind), O(port), O(root), O(token), O(allow), O(once), O(lifetime), O(lease) or O(lease_ttl) restart the server.
  - The port, the bind address and O(root) are checked before anything starts, so a port held by another
    process or an address that is not on this host is an error of the task.
author:
  - osimage.builder developers (@osimage)
options:
  state:
    description:
      - V(started) starts the server unless it runs with the same options, then waits for O(wait_for).
      - V(stopped) ends it (SIGTERM, then SIGKILL after a few seconds) and removes C(NAME.files/), the pidfile
        and C(NAME.json). The request log is kept.
    type: str
    choices: [started, stopped]
    default: started
  name:
    description:
      - Name of the server; starts with a letter, then letters, digits, C(.), C(-) or C(_), at most 64 characters.
      - Names its files in O(work_dir), so several servers can share a work directory.
    type: str
    default: autoinstall
  work_dir:
    description: Directory of the server's files (created with mode 0700 if missing).
    type: path
    required: true
  bind:
    description:
      - Address the server listens on.
      - A qemu guest on user networking reaches the build host's loopback as C(10.0.2.2), so the default
        serves qemu guests without exposing the files to the network. OpenBSD vmm guests need the host side
        address of the VM's interface (for example the C(-L) link's address).
    type: str
    default: 127.0.0.1
  port:
    description: TCP port; V(0) picks a free one, returned as RV(port).
    type: int
    default: 0
  root:
    description:
      - Directory whose files are served below the URL, for example an installer's C(install.conf) and
        C(siteXX.tgz). Only regular files are served; symlinks must stay inside it.
      - O(files) entries are served first when both hold a path.
    type: path
  files:
    description:
      - Files to serve, as a mapping of a relative URL path (C(preseed.cfg), C(nocloud/user-data)) to the
        file's content.
      - Kept in C(NAME.files/) with mode 0600 and never shown in the task output, since they can carry
        password hashes and keys.
    type: dict
  token:
    description:
      - Put a random path prefix in front of every URL, so that the URL cannot be guessed;
        RV(url) includes it. Requests without it get 404.
    type: bool
    default: false
  once:
    description:
      - URL paths (below the URL, as in O(files)) that are served only once, in full; afterwards they get
        410 Gone and an O(files) entry is removed from the disk.
      - A path already served is not served again while this server runs, even if its content changes;
        stop and start the server to hand it out again.
    type: list
    elements: str
    default: []
  allow:
    description:
      - Client networks in CIDR form (V(192.168.0.0/24)) or single addresses that may fetch files.
        Others get 403, and the refusal is logged. Empty allows every client that reaches O(bind).
      - qemu's user networking connects to the build host on the guest's behalf, so a qemu guest arrives
        from V(127.0.0.1) (for O(bind=127.0.0.1)), not from its own V(10.0.2.15). OpenBSD vmm guests arrive
        from their own address.
    type: list
    elements: str
    default: []
  wait_for:
    description:
      - URL paths that must be fetched (C(GET) answered with 200) from this server before the task
        returns, for example the response file an installer fetches after the boot command was typed.
      - The task fails after O(wait_timeout) seconds with the paths not fetched and the last requests of
        the log; the server keeps running.
    type: list
    elements: str
    default: []
  wait_timeout:
    description: Seconds O(wait_for) waits.
    type: float
    default: 1800
  lifetime:
    description:
      - Seconds after which the server stops by itself and removes C(NAME.files/), so a build that was
        killed cannot leave it serving forever.
    type: int
    default: 21600
  lease:
    description:
      - Path of the build's lease (see M(osimage.builder.build_lease)). The server then also stops, and removes
        C(NAME.files/), as soon as the lease was not refreshed for O(lease_ttl) seconds - the build that started
        it was killed.
      - A lease that is missing or already stale is an error when the server is to be started.
    type: path
  lease_ttl:
    description: Seconds without a heartbeat after which O(lease) counts as expired.
    type: float
    default: 60
attributes:
  check_mode:
    support: full
    description: Reports whether the server would be started, restarted, updated or stopped; nothing is started or
      written, and O(wait_for) does not wait. The port and bind address are still checked.
  diff_mode:
    support: full
    description: Shows the server's configuration and the paths of O(files) before and after; never file contents.
  platform:
    support: full
    platforms: [posix]
    description: Linux, macOS and OpenBSD build hosts; needs only the Python standard library.
notes:
  - The token is kept in C(NAME.json), readable by its owner only. The request log shows paths below the URL,
    without the token; a request that lacked the token is logged with C(token=false).
seealso:
  - module: osimage.builder.qemu_vm
  - module: osimage.builder.serial_bootcmd
'''

EXAMPLES = r'''
- name: Serve the preseed file to the installer VM, with an unguessable URL
  osimage.builder.autoinstall_serve:
    work_dir: /var/tmp/osimage/debian-12
    token: true
    files:
      preseed.cfg: "{{ lookup('ansible.builtin.template', 'preseed.cfg.j2') }}"
    once: [preseed.cfg]
    allow: [127.0.0.1/32]
  register: answers

- name: Type the boot command with the preseed URL as the guest sees it
  osimage.builder.serial_bootcmd:
    console: "{{ vm.console }}"
    steps:
      - expect: 'boot: '
        send: "auto url=http://10.0.2.2:{{ answers.port }}{{ answers.url_path }}preseed.cfg<enter>"

- name: Wait until the installer fetched its answers
  osimage.builder.autoinstall_serve:
    work_dir: /var/tmp/osimage/debian-12
    token: true
    files:
      preseed.cfg: "{{ lookup('ansible.builtin.template', 'preseed.cfg.j2') }}"
    once: [preseed.cfg]
    allow: [127.0.0.1/32]
    wait_for: [preseed.cfg]
    wait_timeout: 600

- name: Serve a cloud-init NoCloud seed from a directory on a fixed port
  osimage.builder.autoinstall_serve:
    name: seed
    work_dir: /var/tmp/osimage/ubuntu-24.04
    root: /var/tmp/osimage/ubuntu-24.04/seed
    port: 8000
    lifetime: 3600

- name: Stop the servers
  osimage.builder.autoinstall_serve:
    name: "{{ item }}"
    work_dir: /var/tmp/osimage/debian-12
    state: stopped
  loop: [autoinstall, seed]
'''

RETURN = r'''
url:
  description: URL of the server as seen from the build host, with the token prefix when O(token) is on.
  returned: while the server runs (not in check mode before it was started)
  type: str
  sample: http://127.0.0.1:40213/3f1c0e6b2a9d4e8f7a6b5c4d3e2f1a0b/
url_path:
  description: The path part of RV(url) (V(/), or V(/TOKEN/)), to build the URL a guest uses.
  returned: while the server runs
  type: str
  sample: /3f1c0e6b2a9d4e8f7a6b5c4d3e2f1a0b/
port:
  description: TCP port the server listens on.
  returned: while the server runs
  type: int
  sample: 40213
pid:
  description: Process id of the server.
  returned: while the server runs
  type: int
expires:
  description: When the server stops by itself (ISO 8601, UTC), see O(lifetime).
  returned: while the server runs
  type: str
  sample: '2025-01-31T18:04:11.201Z'
log:
  description:
    - The request log, one JSON object per line with C(time), C(client), C(method), C(path) (below the URL,
      without the token), C(status), C(bytes) (of the body sent), C(range) and C(agent).
  returned: always
  type: str
  sample: /var/tmp/osimage/debian-12/autoinstall.log
fetched:
  description: URL paths this server has served in full (C(GET) with 200) so far, in order.
  returned: always
  type: list
  elements: str
  sample: [/preseed.cfg]
restarted_for:
  description: The options whose change made the task restart a running server.
  returned: when a running server was (or in check mode would be) restarted
  type: list
  elements: str
  sample: [allow]
missing:
  description: The O(wait_for) paths that were not fetched.
  returned: when O(wait_for) failed
  type: list
  elements: str
log_tail:
  description: The last requests of the log, one line each, when O(wait_for) failed.
  returned: when O(wait_for) failed
  type: list
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.osimage.builder.plugins.module_utils._errors import OsImageError
from ansible_collections.osimage.builder.plugins.module_utils._httpserve import (
    AutoinstallServeModule, AutoinstallServer)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type='str', default='started', choices=['started', 'stopped']),
            name=dict(type='str', default='autoinstall'),
            work_dir=dict(type='path', required=True),
            bind=dict(type='str', default='127.0.0.1'),
            port=dict(type='int', default=0),
            root=dict(type='path'),
            files=dict(type='dict', no_log=True),
            token=dict(type='bool', default=False, no_log=False),
            once=dict(type='list', elements='str', default=[]),
            allow=dict(type='list', elements='str', default=[]),
            wait_for=dict(type='list', elements='str', default=[]),
            wait_timeout=dict(type='float', default=1800),
            lifetime=dict(type='int', default=21600),
            lease=dict(type='path'),
            lease_ttl=dict(type='float', default=60),
        ),
        required_if=[('state', 'started', ('root', 'files'), True)],
        supports_check_mode=True,
    )
    params = module.params
    try:
        server = AutoinstallServer(params['work_dir'], params['name'], check_mode=module.check_mode)
        result = AutoinstallServeModule(server).run(params)
    except OsImageError as exc:
        module.fail_json(msg=exc.msg, **exc.context)
    if not module._diff:
        result.pop('diff', None)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
