# -*- coding: utf-8 -*-
from __future__ import annotations

from ansible_collections.osimage.builder.plugins.module_utils._patterns import (
    DEFAULT_FAIL_ON, LogWatcher, compile_patterns, last_lines, strip_ansi)


def test_strip_ansi_keeps_incomplete_tail():
    assert strip_ansi('a\x1b[31mb\x1b[0mc') == ('abc', '')
    assert strip_ansi('abc\x1b[3') == ('abc', '\x1b[3')
    assert strip_ansi('abc\x1b') == ('abc', '\x1b')


def test_last_lines():
    assert last_lines('a\r\nb\rc\n\n', 2) == ['b', 'c']


def test_log_watcher_finds_patterns_across_reads(tmp_path):
    log = tmp_path / 'serial.log'
    log.write_bytes(b'booting\nKernel pan')
    watcher = LogWatcher(str(log), compile_patterns(DEFAULT_FAIL_ON, 'fail_on'))
    assert watcher.poll() is None
    with open(log, 'ab') as handle:
        handle.write(b'ic - not syncing: Attempted to kill init!\n')
    assert watcher.poll() == ('Kernel panic - not syncing', 'Kernel panic - not syncing')
    assert watcher.tail(1) == ['Kernel panic - not syncing: Attempted to kill init!']


def test_openbsd_panic_and_ddb(tmp_path):
    log = tmp_path / 'serial.log'
    log.write_bytes(b'root on sd0a\npanic: kernel diagnostic assertion failed\nStopped at db_enter+0x14:\nddb{0}> ')
    patterns = compile_patterns(DEFAULT_FAIL_ON, 'fail_on')
    assert LogWatcher(str(log), patterns).poll()[0] == '(?m)^panic: '
    log.write_bytes(b'ddb> ')
    assert LogWatcher(str(log), patterns).poll()[0].startswith('(?m)^ddb')


def test_no_false_alarm(tmp_path):
    log = tmp_path / 'serial.log'
    log.write_bytes(b'[    0.000000] Linux version 6.1.0\nkernel.panic = 10\ndebian login: ')
    assert LogWatcher(str(log), compile_patterns(DEFAULT_FAIL_ON, 'fail_on')).poll() is None
