# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Choose qemu's accelerator by proving that a guest really runs under it.

/dev/kvm can exist and open while guests hang (nested KVM on some clouds: a
Linux kernel stops right after "Probing EDD"). So ``accel: auto`` boots a tiny
multiboot guest that does what a kernel does first - enters long mode with
paging, writes 48 MiB of memory and reads it back - then prints "OK" on COM1
and leaves through isa-debug-exit. Only if that finishes within the timeout is
the accelerator chosen. Its source is tools/accel_probe.S in the collection.
"""

from __future__ import annotations

import os
import platform
import struct
import subprocess
import tempfile
import time
import typing as t

_MB_MAGIC = 0x1BADB002
_MB_FLAGS = 0x00010000  # the a.out kludge: load addresses are in the header
_LOAD_ADDR = 0x100000
# Assembled from tools/accel_probe.S (as --32; ld -m elf_i386 -Ttext=0x100020 --oformat=binary).
_PROBE_CODE = bytes.fromhex(
    '66baf803b041eebf0000200031c0b9000c0000f3abc7050000200003102000c705001020'
    '0003202000bf00202000b883000000b9000200008907050000200083c708e2f40f20e083'
    'c8200f22e0b8000020000f22d8b9800000c00f320d000100000f300f20c00d000000800f'
    '22c00f0115f8001000ea9c001000080048c7c70000000148c7c10000600048b8efcdab89'
    '67452301f348ab48c7c60000000148c7c1000060004831db48031e4883c608e2f766baf8'
    '03b04feeb04beeb00aee66baf400b021eef4ebfd000000000000000000000000009a2000'
    '0f00e8001000')
# isa-debug-exit turns the byte 0x21 the probe writes into exit status (0x21 << 1) | 1.
PROBE_EXIT_STATUS = 0x43


def probe_image() -> bytes:
    header = struct.pack('<8I', _MB_MAGIC, _MB_FLAGS, (-(_MB_MAGIC + _MB_FLAGS)) & 0xFFFFFFFF,
                         _LOAD_ADDR, _LOAD_ADDR, 0, 0, _LOAD_ADDR + 32)
    return header + _PROBE_CODE


def probe_argv(binary: str, accel: str, image: str) -> t.List[str]:
    return [binary, '-accel', accel, '-machine', 'pc', '-m', '128', '-nodefaults',
            '-display', 'none', '-no-reboot', '-serial', 'stdio',
            '-device', 'isa-debug-exit,iobase=0xf4,iosize=0x04', '-kernel', image]


def probe(binary: str, accel: str, timeout: float, workdir: t.Optional[str] = None) -> t.Dict[str, t.Any]:
    """Boot the probe guest under ``accel``; report whether it ran and how long it took."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix='accel-probe-', dir=workdir) as tmp:
        image = os.path.join(tmp, 'probe.bin')
        with open(image, 'wb') as handle:
            handle.write(probe_image())
        try:
            proc = subprocess.Popen(probe_argv(binary, accel, image), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            return {'accel': accel, 'ok': False, 'seconds': 0.0, 'reason': str(exc)}
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return {'accel': accel, 'ok': False, 'seconds': round(time.monotonic() - started, 2),
                    'reason': 'the probe guest did not finish within %g s under %s' % (timeout, accel)}
    seconds = round(time.monotonic() - started, 2)
    if proc.returncode == PROBE_EXIT_STATUS and b'OK' in out:
        return {'accel': accel, 'ok': True, 'seconds': seconds, 'reason': 'the probe guest ran'}
    reason = (err.decode('utf-8', 'replace').strip().splitlines() or ['exit status %d' % proc.returncode])[-1]
    return {'accel': accel, 'ok': False, 'seconds': seconds, 'reason': reason}


def candidates(system: t.Optional[str] = None, kvm_device: str = '/dev/kvm') -> t.List[str]:
    system = system or platform.system()
    if system == 'Linux' and os.access(kvm_device, os.R_OK | os.W_OK):
        return ['kvm']
    if system == 'Darwin':
        return ['hvf']
    return []


def choose(requested: str, binary: str, timeout: float, workdir: t.Optional[str] = None,
           prober: t.Callable[..., t.Dict[str, t.Any]] = probe,
           system: t.Optional[str] = None) -> t.Tuple[str, t.List[t.Dict[str, t.Any]]]:
    """Return the accelerator to use and the probe reports that led to it."""
    if requested != 'auto':
        return requested, []
    reports = []
    for accel in candidates(system):
        report = prober(binary, accel, timeout, workdir)
        reports.append(report)
        if report['ok']:
            return accel, reports
    return 'tcg', reports
