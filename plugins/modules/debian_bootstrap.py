#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: debian_bootstrap
short_description: Build a bootable Debian disk image with mmdebstrap, without an installer
version_added: 0.1.0
description:
  - Builds the root filesystem with C(mmdebstrap) (kernel, systemd, openssh-server, python3, cloud-init, sudo,
    GRUB and the given O(packages)) and writes it to a new raw disk image that boots with BIOS and with UEFI
    (GPT with a BIOS boot partition, an EFI system partition and an ext4 root).
  - The Debian mirror is the one the build host's own apt configuration uses (deb822 C(.sources) files and
    one-line C(sources.list) entries), unless O(mirror) is given; the host's apt proxy and Release-date
    settings (C(apt-config dump)) are passed on to mmdebstrap.
  - The serial console (ttyS0) and tty0 get the kernel console and GRUB; C(/etc/fstab) and C(grub.cfg) name
    filesystems by UUID, derived from O(seed) so the same seed gives the same UUIDs.
  - The root filesystem tarball is kept in O(cache_dir) keyed by suite, sources and packages, so a rebuild
    with the same packages skips mmdebstrap.
  - Needs root on the build host (loop devices, mounts, chroot); run it with C(become=true). Loop devices
    and mounts are released on every path, and the image only appears under O(path) once it is complete.
author:
  - osimage.builder developers (@osimage)
options:
  path:
    description: The raw disk image to create.
    type: path
    required: true
  size:
    description: Size of the disk, for example V(4G).
    type: str
    required: true
  suite:
    description: Debian suite (codename).
    type: str
    default: bookworm
  mirror:
    description: Debian archive URL; defaults to the one the build host's apt sources use for O(suite).
    type: str
  security_mirror:
    description: Debian security archive URL; defaults to the build host's source for O(suite)-security, if any.
    type: str
  components:
    description: Archive components.
    type: list
    elements: str
    default: [main]
  proxy:
    description: HTTP proxy for apt; defaults to the build host's C(Acquire::http::Proxy).
    type: str
  packages:
    description: Packages to install in addition to the base set.
    type: list
    elements: str
    default: []
  hostname:
    description: Host name written to C(/etc/hostname) and C(/etc/hosts).
    type: str
    default: debian
  kernel_append:
    description: Extra kernel command line arguments, also written to C(/etc/default/grub).
    type: str
    default: ''
  seed:
    description: Seed of the partition table and filesystem UUIDs.
    type: str
    required: true
  source_date_epoch:
    description:
      - Seconds since 1970 passed to mmdebstrap as C(SOURCE_DATE_EPOCH), which clamps the times of the files
        it writes to it. Part of the root filesystem cache's key.
    type: int
  cache_dir:
    description: Directory for the root filesystem tarball cache; defaults to the directory of O(path).
    type: path
  cache_max_age:
    description:
      - Hours a cached root filesystem tarball is used for; an older one is made again, so images do not
        keep shipping the package versions of a months-old cache.
    type: float
    default: 24
  force:
    description: Rebuild the disk even if it was built from the same inputs.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Reports whether the disk would be built.
  diff_mode:
    support: none
    description: Nothing to show a difference of.
  platform:
    support: full
    platforms: [posix]
    description: Debian or Ubuntu build hosts, as root.
requirements:
  - mmdebstrap, fdisk, mount, util-linux, e2fsprogs, dosfstools, mtools on the build host
seealso:
  - module: osimage.builder.qemu_vm
'''

EXAMPLES = r'''
- name: Build the disk from the build host's Debian mirror
  osimage.builder.debian_bootstrap:
    path: /var/tmp/osimage/debian-12/disk.raw
    size: 4G
    packages: [curl]
    hostname: debian
    seed: debian-12-1.0.0
  become: true
  register: bootstrap
'''

RETURN = r'''
path:
  description: The disk image.
  returned: always
  type: str
root_uuid:
  description: UUID of the ext4 root filesystem.
  returned: always
  type: str
esp_uuid:
  description: Volume id of the EFI system partition, as fstab names it.
  returned: always
  type: str
mirror:
  description: The Debian archive used.
  returned: always
  type: str
security_mirror:
  description: The security archive used, if any.
  returned: always
  type: str
mirror_from:
  description: Where the mirror came from, V(blueprint) or V(build host apt configuration).
  returned: always
  type: str
sources:
  description: The apt source lines given to mmdebstrap.
  returned: always
  type: list
  elements: str
packages:
  description: Every package asked for (base set and O(packages)).
  returned: always
  type: list
  elements: str
rootfs:
  description: Path and sha256 of the root filesystem tarball.
  returned: when built or up to date
  type: dict
timings:
  description: Seconds spent in mmdebstrap and on the disk.
  returned: when built or up to date
  type: dict
mmdebstrap_version:
  description: The version of mmdebstrap on the build host.
  returned: when mmdebstrap is installed
  type: str
'''

import os
import shutil

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.osimage.builder.plugins.module_utils import _apt_sources
from ansible_collections.osimage.builder.plugins.module_utils._bootstrap import Bootstrap, Request
from ansible_collections.osimage.builder.plugins.module_utils._cancel import unwind_on_signals
from ansible_collections.osimage.builder.plugins.module_utils._errors import OsImageError
from ansible_collections.osimage.builder.plugins.module_utils._sizes import parse_size


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type='path', required=True),
            size=dict(type='str', required=True),
            suite=dict(type='str', default='bookworm'),
            mirror=dict(type='str'),
            security_mirror=dict(type='str'),
            components=dict(type='list', elements='str', default=['main']),
            proxy=dict(type='str'),
            packages=dict(type='list', elements='str', default=[]),
            hostname=dict(type='str', default='debian'),
            kernel_append=dict(type='str', default=''),
            seed=dict(type='str', required=True),
            source_date_epoch=dict(type='int'),
            cache_dir=dict(type='path'),
            cache_max_age=dict(type='float', default=24),
            force=dict(type='bool', default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        host_sources = _apt_sources.read_host_sources()
        mirror, security, origin = _apt_sources.resolve(p['suite'], p['mirror'], p['security_mirror'], host_sources)
        options = {}
        if shutil.which('apt-config'):
            rc, out, _err = module.run_command(['apt-config', 'dump'], check_rc=False)
            if rc == 0:
                options = _apt_sources.inherited_options(_apt_sources.parse_apt_config_dump(out))
        if p['proxy']:
            options['Acquire::http::Proxy'] = p['proxy']
        request = Request(
            path=p['path'], size=parse_size(p['size'], 'size'), suite=p['suite'],
            sources=_apt_sources.sources_lines(mirror, security, p['suite'], p['components']),
            apt_options=options, packages=p['packages'], hostname=p['hostname'],
            kernel_append=p['kernel_append'], seed=p['seed'],
            cache_dir=p['cache_dir'] or os.path.dirname(os.path.abspath(p['path'])), cache_max_age=p['cache_max_age'],
            source_date_epoch=p['source_date_epoch'])
        builder = Bootstrap(module.run_command, check_mode=module.check_mode)
        if p['force'] and os.path.exists(builder.stamp_path(request)) and not module.check_mode:
            os.unlink(builder.stamp_path(request))
        # A cancelled build (ansible's worker passes SIGTERM on to its task) still releases the disk's
        # mounts and loop device and removes the partial files: Bootstrap's ExitStack unwinds.
        unwind_on_signals()
        result = builder.ensure(request)
    except OsImageError as exc:
        module.fail_json(msg=exc.msg, **exc.context)
    result.update(mirror=mirror, security_mirror=security, mirror_from=origin)
    if shutil.which('mmdebstrap'):
        rc, out, _err = module.run_command(['mmdebstrap', '--version'], check_rc=False)
        if rc == 0:
            result['mmdebstrap_version'] = out.strip().split()[-1]
    module.exit_json(**result)


if __name__ == '__main__':
    main()
