#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: preflight
short_description: Check the build host for a build before anything is started
version_added: 0.1.0
description:
  - Checks what a checked blueprint needs of the build host, so that a build that cannot work stops before any VM,
    server or disk exists, with a message that names the field or the resource (path, port, URL).
  - The output directory must be a directory the build user can write, or one it can create; its file system must
    have room for the outputs, estimated from C(vm.disk_size) and the output formats (an uncompressed output may
    take the whole disk, a compressed one is assumed to take half of it).
  - C(vm.memory) must not exceed the host's physical memory, and C(vm.disk_size) not the size of the whole file
    system of the work directory.
  - Each port in O(ports) other than V(0) must be free.
  - Each mirror the blueprint names must answer (OpenBSD C(MIRROR/RELEASE/amd64/SHA256.sig); Debian
    C(MIRROR/dists/SUITE/InRelease) or C(Release), through C(source.proxy) when one is set). Mirrors taken from the
    build host's own apt configuration are not probed.
  - Never changes anything.
author:
  - osimage.builder developers (@osimage)
options:
  blueprint:
    description: The checked blueprint (the C(osimage.builder.blueprint) filter's result).
    type: dict
    required: true
  output_dir:
    description: Directory under which C(NAME-VERSION/) will receive the artifacts; it need not exist yet.
    type: path
    required: true
  output_field:
    description: How messages name O(output_dir).
    type: str
    default: osimage_output_dir
  work_root:
    description: Directory that will hold the build's work directory; it need not exist yet.
    type: path
    required: true
  work_dir:
    description:
      - The build's work directory below O(work_root). For a qemu build the VMs C(vm) and C(test) keep their
        console and QMP sockets there, and each socket path must fit the 103 bytes a unix socket address holds.
      - Not checked when omitted.
    type: path
  work_field:
    description: How messages name O(work_root).
    type: str
    default: build_image_work_root
  check_space:
    description: Refuse an output directory with less free space than the outputs' estimate.
    type: bool
    default: true
  check_mirrors:
    description: Probe the mirrors the blueprint names.
    type: bool
    default: true
  ports:
    description: Ports the build will listen on; V(0) picks a free one when the time comes and is not checked.
    type: list
    elements: dict
    default: []
    suboptions:
      field:
        description: How messages name the port.
        type: str
        required: true
      port:
        description: The port.
        type: int
        required: true
      bind:
        description: The address it will be bound to.
        type: str
        default: 127.0.0.1
  timeout:
    description: Seconds to wait for each mirror.
    type: int
    default: 15
attributes:
  check_mode:
    support: full
    description: Runs the same in check mode.
  diff_mode:
    support: none
    description: Nothing to show a difference of.
  platform:
    support: full
    platforms: [posix]
    description: Linux or OpenBSD build hosts.
seealso:
  - module: osimage.builder.qemu_vm
  - module: osimage.builder.autoinstall_serve
'''

EXAMPLES = r'''
- name: Check the build host before anything is started
  osimage.builder.preflight:
    blueprint: "{{ osimage_build.blueprint }}"
    output_dir: /srv/images
    work_root: /var/tmp/osimage-builder
    ports:
      - {field: build_image_ssh_port, port: 2222}
'''

RETURN = r'''
output_free:
  description: Bytes free on the output directory's file system.
  returned: always
  type: int
output_need:
  description: Bytes the outputs may need, as estimated.
  returned: always
  type: int
host_memory:
  description: Bytes of physical memory of the build host, or null where it could not be read.
  returned: always
  type: int
mirrors:
  description: The URL of each mirror that answered.
  returned: always
  type: list
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.osimage.builder.plugins.module_utils import _preflight as preflight
from ansible_collections.osimage.builder.plugins.module_utils._errors import OsImageError


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            blueprint=dict(type='dict', required=True),
            output_dir=dict(type='path', required=True),
            output_field=dict(type='str', default='osimage_output_dir'),
            work_root=dict(type='path', required=True),
            work_dir=dict(type='path'),
            work_field=dict(type='str', default='build_image_work_root'),
            check_space=dict(type='bool', default=True),
            check_mirrors=dict(type='bool', default=True),
            ports=dict(type='list', elements='dict', default=[], options=dict(
                field=dict(type='str', required=True),
                port=dict(type='int', required=True),
                bind=dict(type='str', default='127.0.0.1'),
            )),
            timeout=dict(type='int', default=15),
        ),
        supports_check_mode=True,
    )
    params = module.params
    bp = params['blueprint']
    vm = bp['vm']
    result = {'changed': False, 'mirrors': []}
    try:
        preflight.check_writable_dir(params['output_dir'], params['output_field'])
        preflight.check_writable_dir(params['work_root'], params['work_field'])
        if params['work_dir'] and bp.get('hypervisor', 'qemu') == 'qemu':
            preflight.check_socket_paths(params['work_root'], params['work_dir'], ['vm', 'test'], params['work_field'])
        free = preflight.free_bytes(preflight.nearest_existing(params['output_dir']))
        need = sum(size for _name, size in preflight.output_estimate(vm['disk_size'], bp['outputs']))
        if params['check_space']:
            preflight.check_space(params['output_dir'], params['output_field'], vm['disk_size'], bp['outputs'], free)
        result.update(output_free=free, output_need=need, host_memory=preflight.host_memory())
        preflight.check_memory(vm['memory'], 'vm.memory', result['host_memory'])
        preflight.check_disk(vm['disk_size'], 'vm.disk_size', params['work_root'])
        for entry in params['ports']:
            preflight.check_port(entry['port'], entry['field'], entry['bind'])
        if params['check_mirrors']:
            proxy = (bp.get('source') or {}).get('proxy')
            if proxy:
                preflight.check_reachable(proxy, 'source.proxy', params['timeout'])
            for field, urls, hint in preflight.mirror_probes(bp):
                result['mirrors'].append(preflight.probe_url(urls, field, hint, proxy, params['timeout']))
    except OsImageError as exc:
        module.fail_json(msg=exc.msg, **exc.context)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
