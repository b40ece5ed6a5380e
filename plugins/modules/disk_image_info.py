#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: disk_image_info
short_description: Read the format and sizes of a disk image
version_added: 0.1.0
description:
  - Reports whether a disk image exists, its format, virtual and allocated size in bytes and its backing file.
  - Never changes anything.
author:
  - osimage.builder developers (@osimage)
options:
  path:
    description: Path of the image file on the build host.
    type: path
    required: true
  backend:
    description:
      - How the image is read. V(qemu-img) runs C(qemu-img info); V(vmctl) reads the qcow2 header itself
        (OpenBSD has no C(vmctl info)). V(auto) picks V(vmctl) on OpenBSD and V(qemu-img) elsewhere.
    type: str
    choices: [auto, qemu-img, vmctl]
    default: auto
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
    description: Linux, macOS or OpenBSD build hosts.
seealso:
  - module: osimage.builder.disk_image
requirements:
  - qemu-img (Debian package C(qemu-utils)) for O(backend=qemu-img)
'''

EXAMPLES = r'''
- name: Read the size of the exported image
  osimage.builder.disk_image_info:
    path: /var/lib/osimage/output/debian-12.qcow2
  register: disk

- name: Show it
  ansible.builtin.debug:
    msg: "{{ disk.virtual_size | human_readable }} ({{ disk.format }})"
'''

RETURN = r'''
exists:
  description: Whether the image exists.
  returned: always
  type: bool
path:
  description: Path of the image.
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
actual_size:
  description: Bytes allocated on the build host's filesystem.
  returned: when the image exists
  type: int
backing_file:
  description: Backing file of a qcow2 overlay, or null.
  returned: when the image exists
  type: str
backing_format:
  description: Format of the backing file, when known.
  returned: when the image exists
  type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.osimage.builder.plugins.module_utils._errors import OsImageError
from ansible_collections.osimage.builder.plugins.module_utils._disk_image import DiskImage, choose_backend


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type='path', required=True),
            backend=dict(type='str', default='auto', choices=['auto', 'qemu-img', 'vmctl']),
        ),
        supports_check_mode=True,
    )
    path = module.params['path']
    try:
        info = DiskImage(module.run_command, choose_backend(module.params['backend'])).inspect(path)
    except OsImageError as exc:
        module.fail_json(msg=exc.msg, **exc.context)
    if info is None:
        module.exit_json(changed=False, exists=False, path=path)
    module.exit_json(changed=False, exists=True, path=path, **info._asdict())


if __name__ == '__main__':
    main()
