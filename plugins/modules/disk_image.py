#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: disk_image
short_description: Create, inspect, grow, overlay and remove raw and qcow2 disk images
version_added: 0.1.0
description:
  - Manages one disk image file on the build host.
  - Creates raw (sparse) or qcow2 images, optionally as a qcow2 overlay on a backing file.
  - Grows an existing image when a larger O(size) is asked for; refuses to shrink unless O(allow_shrink=true).
  - Reports the format and the virtual and allocated sizes in bytes.
  - Uses C(qemu-img) on Linux and macOS and C(vmctl create) on OpenBSD (see O(backend)).
author:
  - osimage.builder developers (@osimage)
options:
  path:
    description: Path of the image file on the build host.
    type: path
    required: true
  state:
    description:
      - V(present) creates the image if it is missing and grows it if O(size) is larger than it is.
      - V(absent) removes the image file. The backing file of an overlay is never touched.
      - To only read an image's format and sizes, use M(osimage.builder.disk_image_info).
    type: str
    choices: [present, absent]
    default: present
  format:
    description:
      - Image format. When the image exists and is of another format, the module fails and names both formats.
      - Defaults to V(qcow2) when O(backing_file) is set, else V(raw), for new images; for existing images, whatever they are.
    type: str
    choices: [raw, qcow2]
  size:
    description:
      - Virtual size, as bytes or with a unit, for example V(20G), V(512M), V(1.5GiB) or V(10GB).
      - V(K), V(M), V(G), V(T) and V(KiB), V(MiB), V(GiB), V(TiB) are powers of 1024; V(kB), V(MB), V(GB), V(TB) are powers of 1000.
      - Rounded up to whole 512-byte sectors (qemu-img) or whole MiB (vmctl), as those tools do.
      - Required to create an image unless O(backing_file) is given, in which case the overlay takes the backing file's size.
    type: str
  backing_file:
    description:
      - Create the image as a qcow2 overlay on this file; the backing file is only read.
      - For an existing image, a different backing file is an error (this module does not rebase).
    type: path
  backing_format:
    description: Format of O(backing_file); detected when not given.
    type: str
    choices: [raw, qcow2]
  allow_shrink:
    description: Allow O(size) smaller than the image, which cuts off whatever lies past the new end.
    type: bool
    default: false
  backend:
    description:
      - Tool that creates and resizes images.
      - V(auto) picks V(vmctl) on OpenBSD and V(qemu-img) everywhere else.
      - With V(vmctl), images are inspected by reading their header; qcow2 images cannot be resized.
    type: str
    choices: [auto, qemu-img, vmctl]
    default: auto
extends_documentation_fragment:
  - ansible.builtin.files
attributes:
  check_mode:
    support: full
    description: Reports what would be created, grown or removed without doing it.
  diff_mode:
    support: full
    description: Shows format, virtual size and backing file before and after.
  platform:
    support: full
    platforms: [posix]
    description: Linux, macOS or OpenBSD build hosts.
notes:
  - Sizes in the results are always bytes.
seealso:
  - module: osimage.builder.disk_image_info
  - module: osimage.builder.qemu_vm
requirements:
  - qemu-img (Debian package C(qemu-utils)) for O(backend=qemu-img)
  - vmctl (OpenBSD base system) for O(backend=vmctl)
'''

EXAMPLES = r'''
- name: Create the build disk
  osimage.builder.disk_image:
    path: /var/lib/osimage/builds/debian-12/disk.qcow2
    format: qcow2
    size: 20G

- name: Start from a vendor cloud image without modifying it
  osimage.builder.disk_image:
    path: /var/lib/osimage/builds/debian-12/disk.qcow2
    backing_file: /var/lib/osimage/cache/debian-12-genericcloud-amd64.qcow2
    size: 20G

- name: Remove the build disk
  osimage.builder.disk_image:
    path: /var/lib/osimage/builds/debian-12/disk.qcow2
    state: absent
'''

RETURN = r'''
path:
  description: Path of the image.
  returned: always
  type: str
state:
  description: V(present) or V(absent) after the task.
  returned: always
  type: str
format:
  description: Format of the image.
  returned: when the image exists
  type: str
  sample: qcow2
virtual_size:
  description: Size the guest sees, in bytes.
  returned: when the image exists
  type: int
  sample: 21474836480
actual_size:
  description: Bytes allocated on the build host's filesystem.
  returned: when the image exists
  type: int
  sample: 200704
backing_file:
  description: Backing file of a qcow2 overlay, or null.
  returned: when the image exists
  type: str
backing_format:
  description: Format of the backing file, when known.
  returned: when the image exists
  type: str
backend:
  description: The tool used, V(qemu-img) or V(vmctl).
  returned: when state is not absent
  type: str
'''

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.osimage.builder.plugins.module_utils._errors import OsImageError
from ansible_collections.osimage.builder.plugins.module_utils._disk_image import (
    DiskImage, DiskRequest, choose_backend)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type='path', required=True),
            state=dict(type='str', default='present', choices=['present', 'absent']),
            format=dict(type='str', choices=['raw', 'qcow2']),
            size=dict(type='str'),
            backing_file=dict(type='path'),
            backing_format=dict(type='str', choices=['raw', 'qcow2']),
            allow_shrink=dict(type='bool', default=False),
            backend=dict(type='str', default='auto', choices=['auto', 'qemu-img', 'vmctl']),
        ),
        add_file_common_args=True,
        supports_check_mode=True,
    )
    params = module.params
    backend = choose_backend(params['backend'])
    disk = DiskImage(module.run_command, backend, check_mode=module.check_mode)
    request = DiskRequest(
        path=params['path'], state=params['state'], format=params['format'], size=params['size'],
        backing_file=params['backing_file'], backing_format=params['backing_format'],
        allow_shrink=params['allow_shrink'], backend=backend)
    try:
        result = disk.ensure(request)
    except OsImageError as exc:
        module.fail_json(msg=exc.msg, **exc.context)
    if params['state'] == 'present' and os.path.exists(params['path']):
        file_args = module.load_file_common_arguments(params)
        result['changed'] = module.set_fs_attributes_if_different(file_args, result['changed'])
    if not module._diff:
        result.pop('diff', None)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
