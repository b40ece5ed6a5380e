# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""qemu-img: argv builders and the parser of ``qemu-img info --output=json``."""

from __future__ import annotations

import json
import os
import typing as t

from ansible_collections.osimage.builder.plugins.module_utils._errors import ToolError
from ansible_collections.osimage.builder.plugins.module_utils._tools import Runner, run_checked


class ImageInfo(t.NamedTuple):
    format: str
    virtual_size: int
    actual_size: int
    backing_file: t.Optional[str]
    backing_format: t.Optional[str]


def parse_info(text: str) -> ImageInfo:
    """Read the JSON that ``qemu-img info --output=json`` prints for one image."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ToolError('qemu-img info printed something that is not JSON: %s' % exc, stdout=text)
    if isinstance(data, list):  # --backing-chain prints a list; the first is the image
        data = data[0]
    try:
        return ImageInfo(
            format=data['format'],
            virtual_size=int(data['virtual-size']),
            actual_size=int(data.get('actual-size', 0)),
            backing_file=data.get('full-backing-filename') or data.get('backing-filename'),
            backing_format=data.get('backing-filename-format'),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ToolError('qemu-img info JSON lacks %s' % exc, stdout=text)


class QemuImgTool:
    def __init__(self, run: Runner, binary: str = 'qemu-img') -> None:
        self.run = run
        self.binary = binary

    def info_argv(self, path: str) -> t.List[str]:
        # -U (force-share) reads an image that a running VM holds open.
        return [self.binary, 'info', '--output=json', '-U', path]

    def create_argv(self, path: str, fmt: str, size: t.Optional[int],
                    backing_file: t.Optional[str] = None,
                    backing_format: t.Optional[str] = None) -> t.List[str]:
        argv = [self.binary, 'create', '-q', '-f', fmt]
        if fmt == 'qcow2':
            argv += ['-o', 'compat=1.1,lazy_refcounts=on']
        if backing_file:
            argv += ['-b', backing_file]
            if backing_format:
                argv += ['-F', backing_format]
        argv.append(path)
        if size is not None:
            argv.append(str(size))
        return argv

    def resize_argv(self, path: str, fmt: str, size: int, shrink: bool = False) -> t.List[str]:
        argv = [self.binary, 'resize', '-q', '-f', fmt]
        if shrink:
            argv.append('--shrink')
        return argv + [path, str(size)]

    def convert_argv(self, src: str, dest: str, out_format: str, src_format: t.Optional[str] = None,
                     options: t.Optional[str] = None, compress: bool = False) -> t.List[str]:
        # An explicit -f keeps qemu-img from probing: a guest that wrote a qcow2 header
        # onto its raw disk could otherwise make the host read files named in it.
        argv = [self.binary, 'convert', '-q']
        if src_format:
            argv += ['-f', src_format]
        argv += ['-O', out_format]
        if options:
            argv += ['-o', options]
        if compress:
            argv.append('-c')
        return argv + [src, dest]

    def info(self, path: str) -> ImageInfo:
        info = parse_info(run_checked(self.run, self.info_argv(path), 'qemu-img info %s' % path))
        if info.backing_file and not os.path.isabs(info.backing_file):
            # qemu-img names a relative backing file relative to the image's own directory.
            info = info._replace(backing_file=os.path.join(os.path.dirname(os.path.abspath(path)), info.backing_file))
        return info

    def create(self, path: str, fmt: str, size: t.Optional[int],
               backing_file: t.Optional[str] = None, backing_format: t.Optional[str] = None) -> None:
        run_checked(self.run, self.create_argv(path, fmt, size, backing_file, backing_format),
                    'qemu-img create %s' % path)

    def resize(self, path: str, fmt: str, size: int, shrink: bool = False) -> None:
        run_checked(self.run, self.resize_argv(path, fmt, size, shrink), 'qemu-img resize %s' % path)

    def convert(self, src: str, dest: str, out_format: str, src_format: t.Optional[str] = None,
                options: t.Optional[str] = None, compress: bool = False) -> None:
        run_checked(self.run, self.convert_argv(src, dest, out_format, src_format, options, compress),
                    'qemu-img convert %s to %s' % (src, out_format))
