# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How each deliverable format is written from the build disk.

Each writer fills one temporary file and returns its digests when it could take
them while writing (streams: compressors, tar archives), or None when the file
has to be read once more (qemu-img writes images out of order).

Where the bytes come from, and what consumers require of them:
- qcow2: qcow2 version 3 (``compat=1.1``), optionally with compressed clusters.
- vmdk: ``subformat=streamOptimized``, the variant OVF/OVA, vSphere and the clouds import.
- vhd: a *fixed* VHD whose virtual size is a whole number of MiB, followed by the
  512-byte footer (Azure: "the VHD must be fixed and its virtual size aligned to 1 MiB").
  ``force_size=on`` keeps qemu from rounding the size to a CHS geometry.
- gce: ``disk.raw`` in a gzip-compressed tar in the old GNU format with sparse
  members, its size a whole number of GiB (Google Compute Engine's "import a
  custom image" page: ``tar --format=oldgnu -Sczf ... disk.raw``).
- box: a Vagrant box for the libvirt provider (vagrant-libvirt's box format v1:
  ``metadata.json`` with provider, format and virtual_size in GiB, a ``Vagrantfile``
  and the qcow2 disk ``box.img``).
- ova: a ustar archive of the OVF descriptor, a streamOptimized vmdk and the ``.mf``
  manifest of their SHA-256 digests (DMTF DSP0243, "OVF package").

qemu-img stamps some formats with a random id or the time. The ids are replaced
by ones derived from the source's digest and the time by ``source_date_epoch``,
so that the same disk gives the same bytes: the VHD footer's timestamp and UUID and
the VMDK descriptor's CID. VHDX headers keep qemu's random GUIDs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import tarfile
import typing as t
import uuid

from ansible_collections.osimage.builder.plugins.module_utils._bootstrap import _NS  # the project's UUID namespace
from ansible_collections.osimage.builder.plugins.module_utils._errors import ToolError, ToolMissing
from ansible_collections.osimage.builder.plugins.module_utils._ovf import manifest_text, ovf_descriptor
from ansible_collections.osimage.builder.plugins.module_utils._qemu_img import QemuImgTool
from ansible_collections.osimage.builder.plugins.module_utils._sizes import round_up
from ansible_collections.osimage.builder.plugins.module_utils._stream import (
    HashingReader, HashingWriter, pipeline_to_file)

MIB = 1024 * 1024
GIB = 1024 * MIB
VHD_EPOCH = 946684800  # 2000-01-01T00:00:00Z, where VHD timestamps count from
USTAR_MAX = 8 * GIB - 1  # the ustar size field holds 11 octal digits

COMPRESSIONS = ('none', 'zstd', 'xz', 'gzip')
QCOW2_COMPRESSIONS = ('none', 'zlib', 'zstd')
COMPRESSED_EXTENSION = {'zstd': '.zst', 'xz': '.xz', 'gzip': '.gz'}


class Hardware(t.NamedTuple):
    """What the OVF descriptor and the Vagrantfile say about the VM."""
    cpus: int = 2
    memory: int = 2 * GIB
    firmware: str = 'bios'
    os_type: str = 'other'
    description: str = ''


class Job(t.NamedTuple):
    qemu_img: QemuImgTool
    src: str
    src_format: str
    virtual_size: int
    src_sha256: str
    out: str                 # the temporary file that becomes the artifact
    work: str                # scratch directory of this artifact, removed afterwards
    basename: str
    compress: str
    qcow2_compression: str
    hardware: Hardware
    mtime: int
    algorithms: t.Sequence[str]
    tools: t.Dict[str, t.List[str]]  # compressor name -> argv writing stdin compressed to stdout


class Format(t.NamedTuple):
    extension: str
    # which compress values it accepts; the first is its default
    compressions: t.Tuple[str, ...]
    uses_qcow2_compression: bool
    uses_hardware: bool
    container: bool
    write: t.Callable[[Job], t.Optional[t.Dict[str, str]]]


def pinned_id(src_sha256: str, purpose: str) -> uuid.UUID:
    return uuid.uuid5(_NS, '%s:%s' % (src_sha256, purpose))


def qcow2_options(qcow2_compression: str) -> t.Tuple[str, bool]:
    options = 'compat=1.1'
    if qcow2_compression == 'zstd':
        options += ',compression_type=zstd'
    return options, qcow2_compression != 'none'


def _then_compress(job: Job, make: t.Callable[[str], None]) -> t.Optional[t.Dict[str, str]]:
    """make(path) writes the image; with compression it goes to scratch and is streamed compressed."""
    if job.compress == 'none':
        make(job.out)
        return None
    image = os.path.join(job.work, 'image')
    make(image)
    digests = pipeline_to_file([job.tools[job.compress]], job.out, job.algorithms, stdin_path=image)
    os.unlink(image)
    return digests


def write_qcow2(job: Job) -> t.Optional[t.Dict[str, str]]:
    options, compress = qcow2_options(job.qcow2_compression)
    return _then_compress(job, lambda path: job.qemu_img.convert(
        job.src, path, 'qcow2', job.src_format, options=options, compress=compress))


def write_raw(job: Job) -> t.Optional[t.Dict[str, str]]:
    # qemu-img convert leaves runs of zeros as holes, so the raw artifact is sparse.
    return _then_compress(job, lambda path: job.qemu_img.convert(job.src, path, 'raw', job.src_format))


def _vmdk(job: Job, path: str, name: str) -> None:
    job.qemu_img.convert(job.src, path, 'vmdk', job.src_format, options='subformat=streamOptimized')
    pin_vmdk_descriptor(path, pinned_id(job.src_sha256, 'vmdk').int & 0xfffffffe, name)


def write_vmdk(job: Job) -> t.Optional[t.Dict[str, str]]:
    return _then_compress(job, lambda path: _vmdk(job, path, job.basename + '.vmdk'))


def write_vhdx(job: Job) -> t.Optional[t.Dict[str, str]]:
    return _then_compress(job, lambda path: job.qemu_img.convert(
        job.src, path, 'vhdx', job.src_format, options='subformat=dynamic'))


def _vhd(job: Job, path: str) -> None:
    src, src_format = job.src, job.src_format
    if job.virtual_size % MIB:
        # Grow a raw copy to the next MiB: the guest sees zeros after its old end.
        src, src_format = os.path.join(job.work, 'aligned.raw'), 'raw'
        job.qemu_img.convert(job.src, src, 'raw', job.src_format)
        os.truncate(src, round_up(job.virtual_size, MIB))
    job.qemu_img.convert(src, path, 'vpc', src_format, options='subformat=fixed,force_size=on')
    if src != job.src:
        os.unlink(src)
    pin_vhd_footer(path, max(0, job.mtime - VHD_EPOCH), pinned_id(job.src_sha256, 'vhd'))


def write_vhd(job: Job) -> t.Optional[t.Dict[str, str]]:
    return _then_compress(job, lambda path: _vhd(job, path))


def gnu_tar(fmt: str, which: t.Callable[[str], t.Optional[str]] = shutil.which) -> str:
    """GNU tar: gtar where the system tar is another (OpenBSD, macOS), else tar."""
    for name in ('gtar', 'tar'):
        found = which(name)
        if found:
            try:
                version = subprocess.run([found, '--version'], capture_output=True, text=True, check=False).stdout
            except OSError:
                continue
            if 'GNU tar' in version:
                return found
    raise ToolMissing('formats: %s archives are written with GNU tar, which is not installed on the build host '
                      '(Debian: tar; OpenBSD: pkg_add gtar)' % fmt)


def _tar_argv(job: Job, fmt: str) -> t.List[str]:
    return [job.tools['tar'][0], '--format=' + fmt, '--create', '--file=-', '--mtime=@%d' % job.mtime,
            '--owner=0', '--group=0', '--numeric-owner', '--mode=u=rw,go=r', '--sort=name', '--directory', job.work]


def write_gce(job: Job) -> t.Optional[t.Dict[str, str]]:
    disk = os.path.join(job.work, 'disk.raw')
    job.qemu_img.convert(job.src, disk, 'raw', job.src_format)
    os.truncate(disk, round_up(job.virtual_size, GIB))  # Compute Engine wants whole GiB
    digests = pipeline_to_file([_tar_argv(job, 'oldgnu') + ['--sparse', 'disk.raw'], job.tools['gzip']],
                               job.out, job.algorithms)
    os.unlink(disk)
    return digests


def vagrantfile(hardware: Hardware) -> str:
    return ('# Written by osimage.builder for the vagrant-libvirt provider.\n'
            'Vagrant.configure("2") do |config|\n'
            '  config.vm.provider :libvirt do |libvirt|\n'
            '    libvirt.driver = "kvm"\n'
            '    libvirt.cpus = %d\n'
            '    libvirt.memory = %d\n'
            '%s'
            '  end\n'
            'end\n') % (hardware.cpus, hardware.memory // MIB,
                        '    libvirt.loader = "/usr/share/OVMF/OVMF_CODE.fd"\n' if hardware.firmware == 'uefi' else '')


def box_metadata(virtual_size: int) -> str:
    return json.dumps({'provider': 'libvirt', 'format': 'qcow2',
                       'virtual_size': round_up(virtual_size, GIB) // GIB}, sort_keys=True) + '\n'


def write_box(job: Job) -> t.Optional[t.Dict[str, str]]:
    options, compress = qcow2_options(job.qcow2_compression)
    job.qemu_img.convert(job.src, os.path.join(job.work, 'box.img'), 'qcow2', job.src_format,
                         options=options, compress=compress)
    for name, text in (('metadata.json', box_metadata(job.virtual_size)), ('Vagrantfile', vagrantfile(job.hardware))):
        with open(os.path.join(job.work, name), 'w', encoding='utf-8') as handle:
            handle.write(text)
    commands = [_tar_argv(job, 'gnu') + ['metadata.json', 'Vagrantfile', 'box.img']]
    if job.compress != 'none':
        commands.append(job.tools[job.compress])
    return pipeline_to_file(commands, job.out, job.algorithms)


def _tar_member(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ''
    return info


def write_ova(job: Job) -> t.Optional[t.Dict[str, str]]:
    disk_name = '%s-disk1.vmdk' % job.basename
    disk = os.path.join(job.work, disk_name)
    _vmdk(job, disk, disk_name)
    disk_size = os.path.getsize(disk)
    hw = job.hardware
    ovf_name = job.basename + '.ovf'
    ovf = ovf_descriptor(job.basename, hw.cpus, hw.memory, disk_name, disk_size, job.virtual_size,
                         firmware=hw.firmware, description=hw.description, os_type=hw.os_type).encode('utf-8')
    # OVF packages are ustar archives; a disk over 8 GiB needs GNU tar's size extension.
    fmt = tarfile.USTAR_FORMAT if disk_size <= USTAR_MAX else tarfile.GNU_FORMAT
    writer = HashingWriter(job.out, job.algorithms)
    try:
        with tarfile.open(fileobj=t.cast(t.IO[bytes], writer), mode='w|', format=fmt) as archive:
            archive.addfile(_tar_member(ovf_name, len(ovf), job.mtime), _BytesReader(ovf))
            reader = HashingReader(disk)
            try:
                archive.addfile(_tar_member(disk_name, disk_size, job.mtime), t.cast(t.IO[bytes], reader))
            finally:
                reader.close()
            # The descriptor comes first; the manifest may close the package (DSP0243 5.3).
            mf = manifest_text([(ovf_name, hashlib.sha256(ovf).hexdigest()),
                                (disk_name, reader.digest.hexdigest())]).encode('utf-8')
            archive.addfile(_tar_member(job.basename + '.mf', len(mf), job.mtime), _BytesReader(mf))
        digests = writer.close()
    finally:
        writer.discard()
    os.unlink(disk)
    return digests


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.data) if size < 0 else self.pos + size
        chunk = self.data[self.pos:end]
        self.pos += len(chunk)
        return chunk


FORMATS: t.Dict[str, Format] = {
    'qcow2': Format('qcow2', COMPRESSIONS, True, False, False, write_qcow2),
    'raw': Format('raw', COMPRESSIONS, False, False, False, write_raw),
    'vmdk': Format('vmdk', COMPRESSIONS, False, False, False, write_vmdk),
    'vhd': Format('vhd', COMPRESSIONS, False, False, False, write_vhd),
    'vhdx': Format('vhdx', COMPRESSIONS, False, False, False, write_vhdx),
    'gce': Format('tar.gz', ('gzip',), False, False, True, write_gce),
    'box': Format('box', ('none', 'gzip'), True, True, True, write_box),
    'ova': Format('ova', ('none',), False, True, True, write_ova),
}


def extension(fmt: str, compress: str) -> str:
    spec = FORMATS[fmt]
    if spec.container:
        return spec.extension
    return spec.extension + COMPRESSED_EXTENSION.get(compress, '')


def compressor_argv(name: str, which: t.Callable[[str], t.Optional[str]] = shutil.which) -> t.List[str]:
    """The command that compresses stdin to stdout with every core the tool can use."""
    if name == 'zstd':
        found = which('zstd')
        if found:
            return [found, '-q', '-T0', '-c']
        raise ToolMissing('compress: zstd is not installed on the build host; install the zstd package')
    if name == 'xz':
        found = which('xz')
        if found:
            return [found, '-q', '-T0', '-c']
        raise ToolMissing('compress: xz is not installed on the build host; install xz-utils (Debian) or xz')
    if name == 'gzip':
        # -n leaves the name and time out of the header, so the same input gives the same bytes.
        found = which('pigz')
        if found:
            return [found, '-q', '-n', '-c']
        found = which('gzip')
        if found:
            return [found, '-q', '-n', '-c']
        raise ToolMissing('compress: neither pigz nor gzip is installed on the build host; install pigz')
    raise ValueError(name)


def pin_vhd_footer(path: str, timestamp: int, ident: uuid.UUID) -> None:
    """Set the footer's timestamp and unique id and recompute its checksum (VHD specification 2006, footer)."""
    with open(path, 'r+b') as handle:
        handle.seek(-512, os.SEEK_END)
        footer = bytearray(handle.read(512))
        if footer[:8] != b'conectix':
            raise ToolError('%s has no VHD footer where qemu-img should have written it' % path)
        footer[24:28] = struct.pack('>I', timestamp & 0xffffffff)
        footer[68:84] = ident.bytes
        footer[64:68] = b'\0\0\0\0'
        footer[64:68] = struct.pack('>I', ~sum(footer) & 0xffffffff)
        handle.seek(-512, os.SEEK_END)
        handle.write(bytes(footer))


_CID_RE = re.compile(rb'^CID=[0-9a-fA-F]+$', re.M)
_EXTENT_RE = re.compile(rb'^(RW [0-9]+ SPARSE )"[^"\n]*"$', re.M)


def pin_vmdk_descriptor(path: str, cid: int, name: str) -> None:
    """Set the content id and the extent's file name in a sparse VMDK's embedded descriptor.

    qemu-img writes a random CID and names the extent after the file it wrote, here a
    temporary name; VMware Virtual Disk Format 5.0, "The Descriptor File", defines both.
    """
    with open(path, 'r+b') as handle:
        header = handle.read(512)
        if header[:4] != b'KDMV':
            raise ToolError('%s is not a sparse VMDK extent' % path)
        desc_offset, desc_size = struct.unpack_from('<QQ', header, 28)
        if not desc_offset or not desc_size:
            raise ToolError('%s has no embedded descriptor' % path)
        handle.seek(desc_offset * 512)
        area = handle.read(desc_size * 512)
        text = area.split(b'\0', 1)[0]
        new_text, count = _CID_RE.subn(b'CID=%08x' % cid, text, count=1)
        new_text, extents = _EXTENT_RE.subn(lambda m: m.group(1) + b'"' + name.encode('utf-8') + b'"', new_text, count=1)
        if count != 1 or extents != 1 or len(new_text) > len(area):
            raise ToolError('%s: the descriptor lacks the CID or extent line qemu-img writes' % path)
        handle.seek(desc_offset * 512)
        handle.write(new_text + b'\0' * (len(area) - len(new_text)))
