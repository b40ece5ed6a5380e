# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""vmctl(8) wrapper: argv builders.

Synopsis followed (vmctl.8 in openbsd/src, usr.sbin/vmctl):
``vmctl create [-b base | -i disk] [-s size] disk`` where disk may carry a
format prefix ``raw:`` or ``qcow2:`` and size is read by scan_scaled(3) and
rounded to megabytes.
"""

from __future__ import annotations

import typing as t

from ansible_collections.osimage.builder.plugins.module_utils._sizes import round_up
from ansible_collections.osimage.builder.plugins.module_utils._tools import Runner, run_checked

MIB = 1024 * 1024


class VmctlTool:
    def __init__(self, run: Runner, binary: str = 'vmctl') -> None:
        self.run = run
        self.binary = binary

    def create_argv(self, path: str, fmt: str, size: t.Optional[int],
                    backing_file: t.Optional[str] = None) -> t.List[str]:
        argv = [self.binary, 'create']
        if backing_file:
            argv += ['-b', backing_file]
        if size is not None:
            argv += ['-s', '%dM' % (round_up(size, MIB) // MIB)]
        argv.append('%s:%s' % (fmt, path))
        return argv

    def create(self, path: str, fmt: str, size: t.Optional[int],
               backing_file: t.Optional[str] = None) -> None:
        run_checked(self.run, self.create_argv(path, fmt, size, backing_file), 'vmctl create %s' % path)
