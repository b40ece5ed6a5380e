# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read a qcow2 header without qemu-img.

OpenBSD build hosts create images with ``vmctl create``, which has no "info";
the header fields needed here are fixed by the qcow2 specification
(docs/interop/qcow2.txt in qemu): magic, version, backing file offset/size,
virtual size.
"""

from __future__ import annotations

import os
import struct

from ansible_collections.osimage.builder.plugins.module_utils._qemu_img import ImageInfo

QCOW2_MAGIC = b'QFI\xfb'
# magic, version, backing_file_offset, backing_file_size, cluster_bits, size
_HEADER = struct.Struct('>4sIQIIQ')


def detect(path: str) -> ImageInfo:
    """Return the image's format and sizes; anything that is not qcow2 is raw."""
    st = os.stat(path)
    actual = getattr(st, 'st_blocks', 0) * 512 or st.st_size
    with open(path, 'rb') as handle:
        head = handle.read(_HEADER.size)
        if len(head) == _HEADER.size and head[:4] == QCOW2_MAGIC:
            _magic, _version, bf_offset, bf_size, _bits, size = _HEADER.unpack(head)
            backing = None
            if bf_offset and bf_size:
                handle.seek(bf_offset)
                backing = handle.read(bf_size).decode('utf-8', 'replace')
                if not os.path.isabs(backing):
                    backing = os.path.join(os.path.dirname(os.path.abspath(path)), backing)
            return ImageInfo('qcow2', size, actual, backing, None)
    return ImageInfo('raw', st.st_size, actual, None, None)
