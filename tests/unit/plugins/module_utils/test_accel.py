# -*- coding: utf-8 -*-
from __future__ import annotations

import struct

from ansible_collections.osimage.builder.plugins.module_utils import _accel


def test_probe_image_is_a_valid_multiboot_kernel():
    image = _accel.probe_image()
    magic, flags, checksum, header_addr, load_addr, load_end, bss_end, entry = struct.unpack('<8I', image[:32])
    assert magic == 0x1BADB002
    assert (magic + flags + checksum) & 0xFFFFFFFF == 0
    assert flags & 0x10000, 'qemu needs the address fields for a flat (non-ELF) image'
    assert header_addr == load_addr == 0x100000 and entry == 0x100020
    assert image[32:34] == b'\x66\xba', 'code starts right after the header'


def test_probe_argv():
    assert _accel.probe_argv('qemu-system-x86_64', 'kvm', '/tmp/p.bin') == [
        'qemu-system-x86_64', '-accel', 'kvm', '-machine', 'pc', '-m', '128', '-nodefaults', '-display', 'none',
        '-no-reboot', '-serial', 'stdio', '-device', 'isa-debug-exit,iobase=0xf4,iosize=0x04',
        '-kernel', '/tmp/p.bin']


def fake_prober(results):
    calls = []

    def prober(binary, accel, timeout, workdir):
        calls.append(accel)
        return {'accel': accel, 'ok': results[accel], 'seconds': 0.1, 'reason': 'x'}
    return prober, calls


def test_auto_takes_kvm_only_when_probe_runs(tmp_path):
    kvm = tmp_path / 'kvm'
    kvm.write_bytes(b'')
    prober, calls = fake_prober({'kvm': False})
    original = _accel.candidates
    _accel.candidates = lambda system=None: original(system, str(kvm))
    try:
        accel, reports = _accel.choose('auto', 'qemu', 5, prober=prober, system='Linux')
        assert (accel, calls) == ('tcg', ['kvm'])
        assert reports[0]['ok'] is False
        prober, calls = fake_prober({'kvm': True})
        assert _accel.choose('auto', 'qemu', 5, prober=prober, system='Linux')[0] == 'kvm'
    finally:
        _accel.candidates = original


def test_candidates():
    assert _accel.candidates('Linux', '/nonexistent/kvm') == []
    assert _accel.candidates('Darwin') == ['hvf']
    assert _accel.candidates('OpenBSD') == []


def test_explicit_accel_is_not_probed():
    prober, calls = fake_prober({})
    assert _accel.choose('tcg', 'qemu', 5, prober=prober) == ('tcg', [])
    assert calls == []
