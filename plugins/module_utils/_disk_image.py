# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""disk_image: create, inspect, grow, overlay and remove raw/qcow2 images."""

from __future__ import annotations

import os
import platform
import shutil
import typing as t

from ansible_collections.osimage.builder.plugins.module_utils._errors import (
    InvalidInput, ToolMissing)
from ansible_collections.osimage.builder.plugins.module_utils import _qcow2
from ansible_collections.osimage.builder.plugins.module_utils._qemu_img import ImageInfo, QemuImgTool
from ansible_collections.osimage.builder.plugins.module_utils._sizes import (
    human_size, parse_size, round_up)
from ansible_collections.osimage.builder.plugins.module_utils._tools import Runner
from ansible_collections.osimage.builder.plugins.module_utils._vmctl import MIB, VmctlTool

SECTOR = 512


class DiskRequest(t.NamedTuple):
    path: str
    state: str = 'present'
    format: t.Optional[str] = None
    size: t.Optional[object] = None
    backing_file: t.Optional[str] = None
    backing_format: t.Optional[str] = None
    allow_shrink: bool = False
    backend: str = 'auto'


def choose_backend(requested: str, which: t.Callable[[str], t.Optional[str]] = shutil.which,
                   system: t.Optional[str] = None) -> str:
    """qemu-img everywhere but OpenBSD, where vmctl ships with the base system."""
    if requested != 'auto':
        return requested
    system = system or platform.system()
    if system == 'OpenBSD':
        return 'vmctl' if which('vmctl') or not which('qemu-img') else 'qemu-img'
    return 'qemu-img'


def _summary(info: t.Optional[ImageInfo]) -> t.Dict[str, object]:
    if info is None:
        return {'state': 'absent'}
    return {'state': 'present', 'format': info.format, 'virtual_size': info.virtual_size,
            'backing_file': info.backing_file}


class DiskImage:
    def __init__(self, run: Runner, backend: str, check_mode: bool = False,
                 binaries: t.Optional[t.Dict[str, str]] = None) -> None:
        binaries = binaries or {}
        self.backend = backend
        self.check_mode = check_mode
        self.qemu_img = QemuImgTool(run, binaries.get('qemu-img', 'qemu-img'))
        self.vmctl = VmctlTool(run, binaries.get('vmctl', 'vmctl'))

    def _require(self, binary: str, package: str) -> None:
        if not shutil.which(binary) and not os.path.isfile(binary):
            raise ToolMissing('%s is not installed on the build host (backend %s); install %s'
                              % (binary, self.backend, package))

    def inspect(self, path: str) -> t.Optional[ImageInfo]:
        if not os.path.lexists(path):
            return None
        if os.path.isdir(path):
            raise InvalidInput('path: %s is a directory, not a disk image' % path)
        if self.backend == 'qemu-img':
            self._require(self.qemu_img.binary, 'qemu-utils (Debian) or qemu')
            return self.qemu_img.info(path)
        return _qcow2.detect(path)

    def _granule(self) -> int:
        # vmctl rounds sizes to megabytes, qemu-img to 512-byte sectors.
        return MIB if self.backend == 'vmctl' else SECTOR

    def ensure(self, req: DiskRequest) -> t.Dict[str, object]:
        if req.state == 'absent':
            return self._absent(req)
        return self._present(req)

    def _absent(self, req: DiskRequest) -> t.Dict[str, object]:
        if not os.path.lexists(req.path):
            return {'changed': False, 'path': req.path, 'state': 'absent',
                    'diff': {'before': {'state': 'absent'}, 'after': {'state': 'absent'}}}
        if os.path.isdir(req.path):
            raise InvalidInput('path: %s is a directory, not a disk image; not removing it' % req.path)
        before = self.inspect(req.path)
        if not self.check_mode:
            os.unlink(req.path)
        return {'changed': True, 'path': req.path, 'state': 'absent',
                'diff': {'before': _summary(before), 'after': {'state': 'absent'}}}

    def _present(self, req: DiskRequest) -> t.Dict[str, object]:
        size = None
        if req.size is not None:
            size = round_up(parse_size(req.size, 'size'), self._granule())
        info = self.inspect(req.path)
        if info is None:
            return self._create(req, size)

        if req.format and req.format != info.format:
            raise InvalidInput('format: %s is a %s image but format=%s was requested; '
                               'remove it first (state=absent) or ask for %s'
                               % (req.path, info.format, req.format, info.format))
        if req.backing_file and os.path.abspath(req.backing_file) != (info.backing_file and os.path.abspath(info.backing_file)):
            raise InvalidInput('backing_file: %s has backing file %s but %s was requested'
                               % (req.path, info.backing_file or '(none)', req.backing_file))
        if size is None or size == info.virtual_size:
            return self._result(req, info, changed=False, before=info)
        if size < info.virtual_size and not req.allow_shrink:
            raise InvalidInput('size: %s is %s (%d bytes); shrinking it to %s (%d bytes) would cut off data; '
                               'set allow_shrink=true if that is what you want'
                               % (req.path, human_size(info.virtual_size), info.virtual_size,
                                  human_size(size), size))
        if not self.check_mode:
            self._resize(req.path, info, size)
            after = self.inspect(req.path)
        else:
            after = info._replace(virtual_size=size)
        return self._result(req, after, changed=True, before=info)

    def _resize(self, path: str, info: ImageInfo, size: int) -> None:
        if self.backend == 'qemu-img':
            self.qemu_img.resize(path, info.format, size, shrink=size < info.virtual_size)
        elif info.format == 'raw':
            os.truncate(path, size)
        else:
            raise InvalidInput('size: vmctl cannot resize qcow2 images (%s); install qemu-img and set '
                               'backend=qemu-img, or use a raw image' % path)

    def _create(self, req: DiskRequest, size: t.Optional[int]) -> t.Dict[str, object]:
        fmt = req.format or ('qcow2' if req.backing_file else 'raw')
        if req.backing_file:
            if fmt != 'qcow2':
                raise InvalidInput('backing_file: only qcow2 images can have a backing file, '
                                   'format=%s was requested' % fmt)
            if not os.path.exists(req.backing_file):
                raise InvalidInput('backing_file: %s does not exist' % req.backing_file)
        elif size is None:
            raise InvalidInput('size: creating %s needs a size (or a backing_file to take it from)' % req.path)
        parent = os.path.dirname(os.path.abspath(req.path))
        if not os.path.isdir(parent):
            raise InvalidInput('path: the directory %s does not exist' % parent)
        if not os.access(parent, os.W_OK):
            raise InvalidInput('path: the directory %s is not writable by this user' % parent)

        backing_format = req.backing_format
        if req.backing_file and not backing_format:
            backing_info = self.inspect(req.backing_file)
            backing_format = backing_info.format if backing_info else None
        if self.check_mode:
            after = ImageInfo(fmt, size or 0, 0, req.backing_file, backing_format)
            return self._result(req, after, changed=True, before=None)
        if self.backend == 'qemu-img':
            self._require(self.qemu_img.binary, 'qemu-utils (Debian) or qemu')
            self.qemu_img.create(req.path, fmt, size, req.backing_file, backing_format)
        else:
            self._require(self.vmctl.binary, 'OpenBSD base (vmctl)')
            self.vmctl.create(req.path, fmt, size, req.backing_file)
        return self._result(req, self.inspect(req.path), changed=True, before=None)

    def _result(self, req: DiskRequest, info: t.Optional[ImageInfo], changed: bool,
                before: t.Optional[ImageInfo] = None) -> t.Dict[str, object]:
        result: t.Dict[str, object] = {'changed': changed, 'path': req.path, 'backend': self.backend}
        if info is None:
            result['state'] = 'absent'
        else:
            result.update(state='present', format=info.format, virtual_size=info.virtual_size,
                          actual_size=info.actual_size, backing_file=info.backing_file,
                          backing_format=info.backing_format)
        result['diff'] = {'before': _summary(before), 'after': _summary(info)}
        return result
