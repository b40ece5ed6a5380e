# -*- coding: utf-8 -*-
from __future__ import annotations

import io
import re

import pytest

from ansible_collections.osimage.builder.plugins.module_utils._errors import (
    FailPatternSeen, InvalidInput, WaitTimeout)
from ansible_collections.osimage.builder.plugins.module_utils._expect import ExpectSession, compile_steps
from ansible_collections.osimage.builder.plugins.module_utils._patterns import DEFAULT_FAIL_ON, compile_patterns


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class ScriptedConsole:
    """A console that prints its script; a reply is released when the expected input was typed."""

    def __init__(self, clock, script):
        self.clock = clock
        self.script = list(script)  # (needed input or None, output)
        self.written = b''
        self.closed = False

    def read(self, timeout):
        if self.script:
            needed, output = self.script[0]
            if needed is None or needed in self.written:
                self.script.pop(0)
                return output
        self.clock.now += timeout
        return b''

    def write(self, data):
        self.written += data

    def close(self):
        self.closed = True


def session(script, fail_on=(), char_delay=0.0, transcript=None):
    clock = Clock()
    console = ScriptedConsole(clock, script)
    return ExpectSession(console, compile_patterns(fail_on, 'fail_on'), char_delay, transcript, clock=clock), console


def test_dialogue_and_results():
    transcript = io.BytesIO()
    sess, console = session([
        (None, b'tiny guest: booted\r\nHostname? '),
        (b'tiny1\r', b'tiny1\r\nPassword? '),
        (b's3cret\r', b'\r\nanswers saved\r\n'),
    ], transcript=transcript)
    steps = compile_steps([
        {'expect': r'Hostname\? ', 'send': 'tiny1<enter>'},
        {'expect': r'Password\? ', 'send': 's3cret<enter>', 'secret': True},
        {'expect': r'answers (?P<what>\w+)'},
    ], 60)
    result = sess.run(steps)
    assert console.written == b'tiny1\rs3cret\r'
    assert [m['match'] for m in result['matched']] == ['Hostname? ', 'Password? ', 'answers saved']
    assert result['matched'][2]['named'] == {'what': 'saved'}
    assert steps[1].name == 'expect \'Password\\\\? \''
    assert result['transcript_tail'][-1] == 'answers saved'
    assert transcript.getvalue().startswith(b'tiny guest: booted\r\nHostname? ')


def test_expect_does_not_match_old_output_twice():
    sess, _console = session([(None, b'login: ')])
    steps = compile_steps([{'expect': 'login: '}, {'expect': 'login: ', 'timeout': 5}], 60)
    with pytest.raises(WaitTimeout) as caught:
        sess.run(steps)
    assert caught.value.msg.startswith("step 1 (expect 'login: '): 'login: ' did not appear within 5 s")
    assert caught.value.context['failed_step'] == 1
    assert caught.value.context['transcript_tail'] == ['login: ']


def test_fail_on_ends_during_expect():
    sess, _console = session([
        (None, b'Loading Linux...\r\n'),
        (None, b'[    1.2] Kernel panic - not syncing: VFS: Unable to mount root fs\r\n'),
    ], fail_on=DEFAULT_FAIL_ON)
    with pytest.raises(FailPatternSeen) as caught:
        sess.run(compile_steps([{'expect': 'login: ', 'timeout': 600}], 60))
    assert 'Kernel panic - not syncing' in caught.value.msg
    assert sess.clock() < 1, 'the panic must end the step at once, not after the timeout'
    assert 'Unable to mount root fs' in caught.value.context['transcript_tail'][-1]


def test_fail_on_while_waiting_in_send():
    sess, _console = session([(None, b'panic: uvm_fault\r\nddb> ')], fail_on=DEFAULT_FAIL_ON)
    with pytest.raises(FailPatternSeen):
        sess.run(compile_steps([{'send': '<wait30>boot<enter>'}], 60))
    assert sess.clock() < 1


def test_escape_sequences_are_removed_before_matching():
    sess, _console = session([(None, b'\x1b[1;1H\x1b[2JWelcome\x1b[0m to \x1b[7mGRUB\x1b'), (None, b'[0m!')])
    match = sess.expect(re.compile('Welcome to GRUB!'), 10)
    assert match.group(0) == 'Welcome to GRUB!'


def test_secret_send_is_not_named():
    steps = compile_steps([{'send': 'hunter2<enter>', 'secret': True}], 60)
    assert 'hunter2' not in steps[0].name


@pytest.mark.parametrize('steps, message', [
    ([], 'at least one step'),
    ([{'expct': 'x'}], "steps[0]: unknown key(s) expct"),
    ([{'timeout': 5}], 'steps[0]: needs expect, send, or both'),
    ([{'expect': '('}], 'steps[0].expect[0]: '),
    ([{'send': 'x'}, {'send': '<entr>'}], 'steps[1].send: unknown key <entr> (did you mean <enter>?)'),
    ([{'expect': 'x', 'timeout': 0}], 'steps[0].timeout: must be more than 0'),
    ([42], 'steps[0]: expected a mapping'),
])
def test_step_errors(steps, message):
    with pytest.raises(InvalidInput) as caught:
        compile_steps(steps, 60)
    assert message in caught.value.msg


def test_plain_string_is_a_send():
    steps = compile_steps(['root<enter>'], 60)
    assert steps[0].expect is None and steps[0].actions == [('key', b'r'), ('key', b'o'), ('key', b'o'),
                                                            ('key', b't'), ('key', b'\r')]
