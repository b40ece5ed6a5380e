#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: image_export
short_description: Turn a stopped build disk into image files, checksum files and a manifest
version_added: 0.1.0
description:
  - Converts the build disk O(src) into one file per entry of O(formats) in the directory O(dest),
    named O(basename) plus the format's extension (V(debian-12-1.0.0.qcow2), V(debian-12-1.0.0.raw)).
  - Writes C(SHA256SUMS) and/or C(SHA512SUMS) in the format C(sha256sum -c) and C(sha512sum -c) read,
    and C(manifest.json), which is O(manifest) with the list of artifacts and their digests added.
  - Nothing appears under its final name until it is complete. Every file is written under a temporary
    name in O(dest) (C(.NAME.partial-XXXXXXXX)), flushed to disk and renamed only once all files of the
    export are complete. On any failure the temporary files are removed and the files of the previous export
    stay as they were.
  - Idempotent. A hidden state file in O(dest) (C(.image_export.json)) records the SHA-256 digest of O(src),
    the options and the size, modification time and digests of each artifact. When O(src) has the same
    content and an artifact's options, size and modification time are unchanged, the artifact is not written
    again. Checksum files and C(manifest.json) are rewritten only when their content would differ.
  - A qcow2 O(src) with a backing file is flattened; the artifacts stand alone.
author:
  - osimage.builder developers (@osimage)
options:
  src:
    description:
      - The build disk, raw or qcow2. The VM that uses it must be stopped; C(qemu-img) refuses an image that
        a running qemu holds locked.
    type: path
    required: true
  src_format:
    description:
      - Format of O(src). Detected with C(qemu-img info) when not given.
      - Setting it is safer for raw disks, whose first bytes the guest controls.
    type: str
    choices: [raw, qcow2]
  dest:
    description:
      - Directory the files are written to; created if missing.
      - It holds one export. C(SHA256SUMS), C(SHA512SUMS) and C(manifest.json) describe only the artifacts of
        the last export into it.
    type: path
    required: true
  basename:
    description:
      - File name stem of the artifacts, for example V(debian-12-1.0.0).
      - A plain name without slash, backslash or control characters, not starting with a dot.
    type: str
    required: true
  formats:
    description:
      - Formats to write, one file each.
      - V(qcow2) is qcow2 version 3 (C(compat=1.1)), extension C(.qcow2).
      - V(raw) is a sparse raw image, extension C(.raw).
    type: list
    elements: str
    choices: [qcow2, raw]
    default: [qcow2]
  compress:
    description:
      - Compress the clusters of the qcow2 artifact (C(qemu-img convert -c), zlib). Smaller files, slower
        writes in the guest until the compressed clusters are rewritten. Does not change a raw artifact.
    type: bool
    default: false
  checksums:
    description:
      - Digests to compute for every artifact. V(sha256) writes C(SHA256SUMS), V(sha512) writes C(SHA512SUMS).
      - All digests come from one read of each finished file.
      - A checksum file that an earlier export into O(dest) wrote and that is no longer asked for is removed.
    type: list
    elements: str
    choices: [sha256, sha512]
    default: [sha256]
  manifest:
    description:
      - What the build knows about itself (blueprint, inputs with their digests, stages, guest packages, tool
        versions...). Written to C(manifest.json) in O(dest) with the key C(artifacts) added, a list of
        C(path) (file name relative to O(dest)), C(format), C(size) and one key per digest of O(checksums).
      - Must not have a key C(artifacts) of its own.
      - When not set, C(manifest.json) lists only the artifacts.
    type: dict
  force:
    description: Write every file again even if nothing changed.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Reports which files would be written (RV(written)) without writing any; artifacts that would be
      written have no size or digests in the result.
  diff_mode:
    support: none
    description: The files are images and their digests; RV(written) lists what changed.
  platform:
    support: full
    platforms: [posix]
    description: Linux, macOS or OpenBSD build hosts with qemu-img.
notes:
  - To know whether O(src) changed, the module reads it once on every run and compares its SHA-256 digest with
    the recorded one.
  - O(dest) needs room for the new artifacts next to the previous ones until they replace them.
  - Artifacts are created with the permissions the umask allows (usually C(0644)).
  - Files that an earlier export with another O(basename) or other O(formats) left in O(dest) are not removed.
seealso:
  - module: osimage.builder.disk_image
  - module: osimage.builder.qemu_vm
requirements:
  - qemu-img (Debian package C(qemu-utils))
'''

EXAMPLES = r'''
- name: Export the build disk as compressed qcow2 and raw
  osimage.builder.image_export:
    src: /var/lib/osimage/builds/debian-12/disk.qcow2
    src_format: qcow2
    dest: /var/lib/osimage/output/debian-12-1.0.0
    basename: debian-12-1.0.0
    formats: [qcow2, raw]
    compress: true
    checksums: [sha256, sha512]
    manifest:
      blueprint: "{{ blueprint }}"
      stages: "{{ osimage_build.stages }}"
  register: export

- name: Show where the qcow2 went
  ansible.builtin.debug:
    msg: "{{ export.artifacts[0].path }} sha256 {{ export.artifacts[0].sha256 }}"
'''

RETURN = r'''
dest:
  description: The output directory, absolute.
  returned: always
  type: str
artifacts:
  description:
    - One entry per format, in the order of O(formats).
    - In check mode, artifacts that would be written have only RV(artifacts[].path), RV(artifacts[].name)
      and RV(artifacts[].format).
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: Absolute path of the artifact.
      type: str
      sample: /var/lib/osimage/output/debian-12-1.0.0/debian-12-1.0.0.qcow2
    name:
      description: File name of the artifact in O(dest).
      type: str
      sample: debian-12-1.0.0.qcow2
    format:
      description: Format of the artifact.
      type: str
      sample: qcow2
    size:
      description: Size of the file in bytes.
      type: int
      sample: 348651520
    sha256:
      description: SHA-256 digest in hex, when V(sha256) is in O(checksums).
      type: str
    sha512:
      description: SHA-512 digest in hex, when V(sha512) is in O(checksums).
      type: str
checksum_files:
  description: Absolute paths of the checksum files, one per entry of O(checksums).
  returned: always
  type: list
  elements: str
  sample: [/var/lib/osimage/output/debian-12-1.0.0/SHA256SUMS]
manifest:
  description: Absolute path of C(manifest.json).
  returned: always
  type: str
  sample: /var/lib/osimage/output/debian-12-1.0.0/manifest.json
written:
  description: File names in O(dest) that were written, or in check mode would be written.
  returned: always
  type: list
  elements: str
  sample: [debian-12-1.0.0.qcow2, SHA256SUMS, manifest.json]
removed:
  description: Checksum files of an earlier export that were removed, or in check mode would be removed.
  returned: always
  type: list
  elements: str
  sample: [SHA512SUMS]
source:
  description: The build disk that was read.
  returned: always
  type: dict
  contains:
    path:
      description: Absolute path of O(src).
      type: str
    format:
      description: Format of O(src), as given or detected.
      type: str
    size:
      description: Size of the O(src) file in bytes.
      type: int
    sha256:
      description: SHA-256 digest of the O(src) file; missing in check mode when it did not need to be read.
      type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.osimage.builder.plugins.module_utils._errors import OsImageError
from ansible_collections.osimage.builder.plugins.module_utils._export import (
    CHECKSUM_FILES, CONVERTERS, Exporter, ExportRequest)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            src=dict(type='path', required=True),
            src_format=dict(type='str', choices=['raw', 'qcow2']),
            dest=dict(type='path', required=True),
            basename=dict(type='str', required=True),
            formats=dict(type='list', elements='str', default=['qcow2'], choices=list(CONVERTERS)),
            compress=dict(type='bool', default=False),
            checksums=dict(type='list', elements='str', default=['sha256'], choices=list(CHECKSUM_FILES)),
            manifest=dict(type='dict'),
            force=dict(type='bool', default=False),
        ),
        supports_check_mode=True,
    )
    params = module.params
    request = ExportRequest(
        src=params['src'], dest=params['dest'], basename=params['basename'], formats=params['formats'],
        compress=params['compress'], checksums=params['checksums'], manifest=params['manifest'],
        force=params['force'], src_format=params['src_format'])
    try:
        result = Exporter(module.run_command, check_mode=module.check_mode).export(request)
    except OsImageError as exc:
        module.fail_json(msg=exc.msg, **exc.context)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
