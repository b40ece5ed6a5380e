#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: image_export
short_description: Turn a stopped build disk into image files, checksum files, signatures and a manifest
version_added: 0.1.0
description:
  - Converts the build disk O(src) into one file per entry of O(formats) in the directory O(dest),
    named O(basename) plus the format's extension (V(debian-12-1.0.0.qcow2), V(debian-12-1.0.0.tar.gz)).
  - Writes C(SHA256SUMS) and/or C(SHA512SUMS) in the format C(sha256sum -c) and C(sha512sum -c) read,
    optionally a detached signature of each (O(sign)), and C(manifest.json), which is O(manifest) with the
    list of artifacts and their digests added.
  - Nothing appears under its final name until it is complete. Every file is written under a temporary
    name in O(dest) (C(.NAME.partial-XXXXXXXX)), flushed to disk and renamed only once all files of the
    export are complete. On any failure the temporary files are removed and the files of the previous export
    stay as they were. Scratch files live in a private C(.osimage-export-XXXXXXXX) directory in O(dest),
    removed at the end; what a killed export left behind is removed by the next export into O(dest).
  - Artifacts written as a stream (compressed files, C(gce), C(box), C(ova)) are digested while they are
    written; images that C(qemu-img) writes directly are read once after writing.
  - Independent conversions run in parallel (O(jobs)).
  - Idempotent. A hidden state file in O(dest) (C(.image_export.json)) records the SHA-256 digest of O(src),
    the options and the size, modification time and digests of each artifact, and what each signature signed.
    When O(src) has the same content and an artifact's options, size and modification time are unchanged, the
    artifact is not written again. Checksum files and C(manifest.json) are rewritten only when their content
    would differ, signatures only when the checksum file, the tool or the key changed.
  - Reproducible on the same host tools and filesystem (pigz and gzip, GNU tar's sparse detection and xz
    versions differ in their output). The same O(src) and options give byte-identical C(qcow2), C(raw), C(vmdk), C(vhd), C(gce),
    C(box) and C(ova) artifacts - the random ids C(qemu-img) stamps into VMDK descriptors (CID) and VHD footers
    (unique id) are replaced by ids derived from the digest of O(src), and every timestamp is
    O(source_date_epoch). C(vhdx) artifacts keep the random GUIDs of their headers; gpg signatures carry
    their signing time.
  - A qcow2 O(src) with a backing file is flattened; the artifacts stand alone.
  - Only one export at a time may write into a O(dest); a second one fails at once.
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
      - The artifacts to write, one file each. An entry is a format name, or a mapping with the keys
        C(format), C(compress) and C(qcow2_compression) whose missing keys come from O(compress) and
        O(qcow2_compression).
      - V(qcow2) - qcow2 version 3 (C(compat=1.1)), extension C(.qcow2).
      - V(raw) - a sparse raw image, extension C(.raw).
      - V(vmdk) - a streamOptimized VMDK, extension C(.vmdk).
      - V(vhd) - a fixed VHD whose virtual size is rounded up to a whole MiB, so that the file is a whole number
        of MiB plus the 512-byte footer, as Azure requires; extension C(.vhd).
      - V(vhdx) - a dynamic VHDX, extension C(.vhdx).
      - V(gce) - C(disk.raw), its size rounded up to a whole GiB, in a sparse tar in the old GNU format,
        gzip-compressed, as Google Compute Engine imports it; extension C(.tar.gz).
      - V(box) - a Vagrant box for the libvirt provider (C(metadata.json), C(Vagrantfile), C(box.img) in qcow2),
        extension C(.box); its Vagrantfile sets the CPUs and memory of O(hardware).
      - V(ova) - an OVF package (ustar archive of the C(.ovf) descriptor with O(hardware), a streamOptimized
        C(-disk1.vmdk) and the C(.mf) manifest of their SHA-256 digests), extension C(.ova). A vmdk over 8 GiB
        needs GNU tar's size extension, which VirtualBox and VMware read.
      - Each artifact name may occur once; the same format may be listed twice with different compression.
    type: list
    elements: raw
    default: [qcow2]
  compress:
    description:
      - Compress the artifact file as a whole; the extension gets C(.zst), C(.xz) or C(.gz).
      - V(zstd) and V(xz) use every CPU (C(-T0)); V(gzip) uses C(pigz) when installed, else C(gzip), both
        without name and time in the header.
      - Applies to V(qcow2), V(raw), V(vmdk), V(vhd) and V(vhdx), and V(gzip) also to V(box). V(gce) archives are
        always gzip; V(ova) is never compressed, as OVF requires.
    type: str
    choices: [none, zstd, xz, gzip]
    default: none
  qcow2_compression:
    description:
      - Compress the clusters inside qcow2 images (C(qemu-img convert -c)), for V(qcow2) artifacts and the
        C(box.img) of V(box). The image stays directly usable; writes in the guest are slower until the
        compressed clusters are rewritten.
      - V(zlib) is read by every qemu; V(zstd) needs qemu 5.1 or later wherever the image is used.
    type: str
    choices: [none, zlib, zstd]
    default: none
  hardware:
    description:
      - The virtual machine that the V(ova) descriptor and the V(box) Vagrantfile describe. Usually the
        blueprint's C(vm) settings.
    type: dict
    suboptions:
      cpus:
        description: Number of virtual CPUs.
        type: int
        default: 2
      memory:
        description: Memory, a whole number of MiB, such as V(2G) or V(1536M).
        type: str
        default: 2G
      firmware:
        description: V(uefi) marks the OVF and Vagrantfile for EFI boot.
        type: str
        choices: [bios, uefi]
        default: bios
      os_type:
        description: Guest operating system for the OVF C(OperatingSystemSection).
        type: str
        choices: [debian, linux, openbsd, other]
        default: other
      description:
        description: Text for the OVF C(Annotation).
        type: str
        default: ''
  checksums:
    description:
      - Digests to compute for every artifact. V(sha256) writes C(SHA256SUMS), V(sha512) writes C(SHA512SUMS).
      - A checksum file that an earlier export into O(dest) wrote and that is no longer asked for is removed.
    type: list
    elements: str
    choices: [sha256, sha512]
    default: [sha256]
  sign:
    description:
      - Write a detached signature of every checksum file with the named tool, next to it -
        C(SHA256SUMS.asc) (gpg, ASCII-armored), C(SHA256SUMS.sig) (signify), C(SHA256SUMS.minisig) (minisign).
      - The secret key comes from a file (O(sign.key_file)) or from an environment variable of the module
        (O(sign.key_env)), never from the playbook in clear. It is never written to logs or to the state file,
        only a digest that tells a new key from the old one.
      - gpg imports the key into a throw-away keyring; the user's own keyring is not touched.
      - A signature that an earlier export wrote and that is no longer asked for is removed.
    type: dict
    suboptions:
      tool:
        description: The signing program.
        type: str
        choices: [gpg, signify, minisign]
        required: true
      key_file:
        description: Path of the secret key on the host the module runs on.
        type: path
      key_env:
        description: Name of an environment variable holding the secret key text (as AWX credentials inject it).
        type: str
      passphrase_file:
        description: File holding the key's passphrase (its first line); not needed for keys made without one.
        type: path
      passphrase_env:
        description: Name of an environment variable holding the key's passphrase.
        type: str
      key_id:
        description: With gpg, the key of O(sign.key_file) to sign with when it holds several.
        type: str
  source_date_epoch:
    description:
      - The time, in seconds since 1970, written into archives (C(gce), C(box), C(ova) members) and VHD footers.
      - Defaults to the environment variable C(SOURCE_DATE_EPOCH) of the module, else 0.
    type: int
  jobs:
    description: How many conversions run at the same time; V(0) means one per CPU.
    type: int
    default: 0
  manifest:
    description:
      - What the build knows about itself (blueprint, inputs with their digests, stages, guest packages, tool
        versions...). Written to C(manifest.json) in O(dest) with the key C(artifacts) added, a list of
        C(path) (file name relative to O(dest)), C(format), C(compress) (when the file is compressed), C(size)
        and one key per digest of O(checksums).
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
  - O(dest) needs room for the new artifacts next to the previous ones until they replace them, plus scratch
    space for an uncompressed copy of the disk per compressed or archived artifact.
  - Artifacts are created with the permissions the umask allows (usually C(0644)).
  - Files that an earlier export with another O(basename) or other O(formats) left in O(dest) are not removed.
seealso:
  - module: osimage.builder.disk_image
  - module: osimage.builder.qemu_vm
requirements:
  - qemu-img (Debian package C(qemu-utils))
  - zstd, xz (C(xz-utils)) or pigz/gzip for O(compress)
  - GNU tar for V(gce) and V(box)
  - gpg, signify (Debian C(signify-openbsd)) or minisign for O(sign)
'''

EXAMPLES = r'''
- name: Export the build disk as compressed qcow2, zstd-compressed raw, VHD for Azure and GCE
  osimage.builder.image_export:
    src: /var/lib/osimage/builds/debian-12/disk.qcow2
    src_format: qcow2
    dest: /var/lib/osimage/output/debian-12-1.0.0
    basename: debian-12-1.0.0
    formats:
      - qcow2
      - {format: raw, compress: zstd}
      - vhd
      - gce
    qcow2_compression: zlib
    checksums: [sha256, sha512]
    manifest:
      blueprint: "{{ blueprint }}"
      stages: "{{ osimage_build.stages }}"
  register: export

- name: An OVA for VirtualBox and VMware, checksums signed with signify
  osimage.builder.image_export:
    src: /var/lib/osimage/builds/debian-12/disk.qcow2
    dest: /var/lib/osimage/output/debian-12-1.0.0-ova
    basename: debian-12-1.0.0
    formats: [ova]
    hardware: {cpus: 2, memory: 2G, os_type: debian}
    sign:
      tool: signify
      key_env: OSIMAGE_SIGNIFY_KEY

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
    compress:
      description: How the file as a whole is compressed, V(none) when it is not.
      type: str
      sample: zstd
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
signature_files:
  description: Absolute paths of the signatures, one per checksum file, when O(sign) is set.
  returned: always
  type: list
  elements: str
  sample: [/var/lib/osimage/output/debian-12-1.0.0/SHA256SUMS.sig]
manifest:
  description: Absolute path of C(manifest.json).
  returned: always
  type: str
  sample: /var/lib/osimage/output/debian-12-1.0.0/manifest.json
written:
  description: File names in O(dest) that were written (artifacts, checksum files, signatures, manifest), or in
    check mode would be written.
  returned: always
  type: list
  elements: str
  sample: [debian-12-1.0.0.qcow2, SHA256SUMS, manifest.json]
removed:
  description: Checksum files and signatures of an earlier export that were removed, or in check mode would be
    removed.
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
    virtual_size:
      description: Size of the disk the guest sees, in bytes.
      type: int
    sha256:
      description: SHA-256 digest of the O(src) file; missing in check mode when it did not need to be read.
      type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.osimage.builder.plugins.module_utils._errors import OsImageError
from ansible_collections.osimage.builder.plugins.module_utils._export import CHECKSUM_FILES, Exporter, ExportRequest
from ansible_collections.osimage.builder.plugins.module_utils._formats import COMPRESSIONS, QCOW2_COMPRESSIONS
from ansible_collections.osimage.builder.plugins.module_utils._sign import TOOLS, SignRequest


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            src=dict(type='path', required=True),
            src_format=dict(type='str', choices=['raw', 'qcow2']),
            dest=dict(type='path', required=True),
            basename=dict(type='str', required=True),
            formats=dict(type='list', elements='raw', default=['qcow2']),
            compress=dict(type='str', default='none', choices=list(COMPRESSIONS)),
            qcow2_compression=dict(type='str', default='none', choices=list(QCOW2_COMPRESSIONS)),
            hardware=dict(type='dict', options=dict(
                cpus=dict(type='int', default=2),
                memory=dict(type='str', default='2G'),
                firmware=dict(type='str', default='bios', choices=['bios', 'uefi']),
                os_type=dict(type='str', default='other', choices=['debian', 'linux', 'openbsd', 'other']),
                description=dict(type='str', default=''),
            )),
            checksums=dict(type='list', elements='str', default=['sha256'], choices=list(CHECKSUM_FILES)),
            sign=dict(type='dict', options=dict(
                tool=dict(type='str', required=True, choices=list(TOOLS)),
                key_file=dict(type='path'),
                key_env=dict(type='str', no_log=False),
                passphrase_file=dict(type='path', no_log=False),
                passphrase_env=dict(type='str', no_log=False),
                key_id=dict(type='str'),
            ), mutually_exclusive=[('key_file', 'key_env'), ('passphrase_file', 'passphrase_env')],
                required_one_of=[('key_file', 'key_env')]),
            source_date_epoch=dict(type='int'),
            jobs=dict(type='int', default=0),
            manifest=dict(type='dict'),
            force=dict(type='bool', default=False),
        ),
        supports_check_mode=True,
    )
    params = module.params
    sign = SignRequest(**params['sign']) if params['sign'] else None
    request = ExportRequest(
        src=params['src'], dest=params['dest'], basename=params['basename'], formats=params['formats'],
        compress=params['compress'], qcow2_compression=params['qcow2_compression'], hardware=params['hardware'],
        checksums=params['checksums'], sign=sign, source_date_epoch=params['source_date_epoch'],
        jobs=params['jobs'], manifest=params['manifest'], force=params['force'], src_format=params['src_format'])
    try:
        result = Exporter(module.run_command, check_mode=module.check_mode).export(request)
    except OsImageError as exc:
        module.fail_json(msg=exc.msg, **exc.context)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
