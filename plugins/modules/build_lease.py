#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: build_lease
short_description: Keep a build's lease alive, so its background processes end when the build is killed
version_added: 0.1.0
description:
  - A lease is the file O(path) (normally C(WORK_DIR/lease)) whose modification time is a heartbeat, with the build's
    id, O(ttl) and the processes behind it as JSON.
  - V(started) starts a small detached keeper that refreshes the lease every O(ttl)/6 seconds while the build's
    anchor process lives, and then stops refreshing and exits. The anchor is the top-most C(ansible-playbook) among
    the task's ancestor processes (local connection, also under AWX's ansible-runner), else the nearest sshd session
    the task runs in (ssh connection; it ends when the controller's connection closes). Its start time is recorded,
    so a reused process id is not taken for it.
  - Every background process started with O(osimage.builder.qemu_vm#module:lease),
    O(osimage.builder.autoinstall_serve#module:lease) or O(osimage.builder.vmctl_vm#module:lease) ends by itself
    once the lease was not refreshed for its C(lease_ttl) seconds. A killed C(ansible-playbook) (SIGINT, SIGTERM or
    SIGKILL) therefore leaves nothing running for much longer than O(ttl).
  - V(stopped) ends the keeper and removes the lease.
  - V(kept) ends the keeper but marks the lease as kept, so that what the build started keeps running (a VM kept
    for debugging after a failure); C(playbooks/cleanup.yml) removes it later.
  - V(query) changes nothing; it lists the builds under O(work_root) (directories with C(osimage-build.json)) and
    whether their leases are V(live), V(stale) (the build is gone), V(kept) or V(none).
  - Works on Linux (C(/proc)) and on hosts without C(/proc), such as OpenBSD, through C(ps).
author:
  - osimage.builder developers (@osimage)
options:
  state:
    description: What to do, see above.
    type: str
    choices: [started, stopped, kept, query]
    default: started
  path:
    description: The lease file. Required unless O(state=query).
    type: path
  build_id:
    description: The build's id, written into the lease. Required with O(state=started).
    type: str
  ttl:
    description:
      - Seconds without a heartbeat after which the lease counts as expired. The keeper refreshes it every
        O(ttl)/6 seconds.
      - The background processes are given the same value as their C(lease_ttl).
    type: float
    default: 60
  anchor_pid:
    description:
      - The process whose end is the end of the build, instead of the one found among the task's ancestors.
      - For tests, and for connections where neither C(ansible-playbook) nor an sshd session is an ancestor.
    type: int
  remote_grace:
    description:
      - When the anchor is an sshd session, the keeper goes on refreshing the lease for this many seconds after the
        session ended, because a session also ends when the controller left the build host idle for longer than
        ControlPersist (while it provisions the guest, for example). Each call with O(state=started) from a newer
        session starts a keeper anchored to it; M(osimage.builder.build_image) makes that call at every stage.
      - A killed controller's leftovers on a remote build host therefore end up to this many seconds plus O(ttl)
        after the kill. An C(ansible-playbook) anchor (local connection) has no grace.
    type: float
    default: 1800
  work_root:
    description: The directory whose builds O(state=query) lists.
    type: path
attributes:
  check_mode:
    support: full
    description: Reports whether a keeper would be started, ended or the lease marked kept; nothing is started.
  diff_mode:
    support: none
    description: The lease has no diff to show.
  platform:
    support: full
    platforms: [posix]
    description: Linux (through C(/proc)) and OpenBSD or other hosts without C(/proc) (through C(ps)).
notes:
  - Over SSH the sshd session lasts until the controller's control master closes, which is up to its
    ControlPersist time after the controller was killed; the lease expires O(remote_grace) plus O(ttl) seconds
    after that.
'''

EXAMPLES = r'''
- name: Keep the build's lease while this playbook runs
  osimage.builder.build_lease:
    path: /var/tmp/osimage-builder/20250131-1804-ab12/lease
    build_id: 20250131-1804-ab12
    ttl: 60

- name: Start the VM so that it ends when the build is gone
  osimage.builder.qemu_vm:
    name: vm
    work_dir: /var/tmp/osimage-builder/20250131-1804-ab12
    disks:
      - path: /var/tmp/osimage-builder/20250131-1804-ab12/disk.qcow2
    lease: /var/tmp/osimage-builder/20250131-1804-ab12/lease
    lease_ttl: 60

- name: Find builds that were killed
  osimage.builder.build_lease:
    state: query
    work_root: /var/tmp/osimage-builder
  register: builds

- name: End the keeper at the end of the build
  osimage.builder.build_lease:
    path: /var/tmp/osimage-builder/20250131-1804-ab12/lease
    state: stopped
'''

RETURN = r'''
path:
  description: The lease file.
  returned: unless O(state=query)
  type: str
build_id:
  description: The build's id in the lease.
  returned: unless O(state=query)
  type: str
ttl:
  description: The lease's ttl in seconds.
  returned: unless O(state=query)
  type: float
keeper_pid:
  description: Process id of the keeper while it runs.
  returned: unless O(state=query)
  type: int
anchor_pid:
  description: Process id of the anchor, whose end ends the lease.
  returned: unless O(state=query)
  type: int
anchor_cmdline:
  description: The anchor's command line (at most 200 characters).
  returned: unless O(state=query)
  type: str
  sample: /usr/bin/python3 /usr/bin/ansible-playbook build-image.yml
kept:
  description: Whether the lease is marked kept (O(state=kept)).
  returned: unless O(state=query)
  type: bool
stale:
  description: Whether the lease has expired; null when there is no lease file.
  returned: unless O(state=query)
  type: bool
builds:
  description: The builds under O(work_root).
  returned: when O(state=query)
  type: list
  elements: dict
  contains:
    work_dir:
      description: The build's work directory.
      type: str
    build_id:
      description: The build's id.
      type: str
    hypervisor:
      description: The build's hypervisor (V(qemu) or V(vmm)) as its C(osimage-build.json) says, or null.
      type: str
    lease:
      description:
        - V(live), V(stale) (the build is gone), V(kept) or V(none) (no lease file).
        - A lease is V(stale) once its heartbeat is older than its ttl, or at once when both its keeper and the
          process it was anchored to have ended (nothing would refresh it any more).
      type: str
    age:
      description: Seconds since the lease's last heartbeat, or null.
      type: float
    staging_dir:
      description:
        - The hidden directory C(.NAME-VERSION.ID.partial) in the output directory that the build exports to
          before its export is tested and moved into place, as its C(osimage-build.json) says, or null.
        - Only a path of that form naming the build's own id is returned.
      type: str
    controller_dir:
      description:
        - The build's directory on the controller (C(build_image_controller_root/ID), the SSH key the build made
          for its guest), as its C(osimage-build.json) says, or null.
        - Only an absolute path whose last component is the build's own id is returned.
      type: str
dead:
  description: The work directories of the builds whose lease is V(stale).
  returned: when O(state=query)
  type: list
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.osimage.builder.plugins.module_utils import _daemon
from ansible_collections.osimage.builder.plugins.module_utils._errors import OsImageError
from ansible_collections.osimage.builder.plugins.module_utils._lease import BuildLease, find_leases


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type='str', default='started', choices=['started', 'stopped', 'kept', 'query']),
            path=dict(type='path'),
            build_id=dict(type='str'),
            ttl=dict(type='float', default=60),
            anchor_pid=dict(type='int'),
            remote_grace=dict(type='float', default=1800),
            work_root=dict(type='path'),
        ),
        required_if=[
            ('state', 'started', ('path', 'build_id')),
            ('state', 'stopped', ('path',)),
            ('state', 'kept', ('path',)),
            ('state', 'query', ('work_root',)),
        ],
        supports_check_mode=True,
    )
    params = module.params
    try:
        if params['state'] == 'query':
            builds = find_leases(params['work_root'])
            module.exit_json(changed=False, builds=builds,
                             dead=[build['work_dir'] for build in builds if build['lease'] == 'stale'])
        lease = BuildLease(params['path'], _daemon.daemonize, check_mode=module.check_mode)
        if params['state'] == 'started':
            result = lease.start(params['build_id'], params['ttl'], params['anchor_pid'], params['remote_grace'])
        elif params['state'] == 'kept':
            result = lease.keep_for_debugging()
        else:
            result = lease.stop()
    except OsImageError as exc:
        module.fail_json(msg=exc.msg, **exc.context)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
