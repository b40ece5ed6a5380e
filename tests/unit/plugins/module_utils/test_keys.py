# -*- coding: utf-8 -*-
from __future__ import annotations

import pytest

from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput
from ansible_collections.osimage.builder.plugins.module_utils._keys import parse, parse_duration


def keys(text):
    return b''.join(value for kind, value in parse(text) if kind == 'key')


@pytest.mark.parametrize('text, expected', [
    ('abc', b'abc'),
    ('A<enter>', b'A\r'),
    ('<return>', b'\r'),
    ('<ENTER>', b'\r'),
    ('<esc><tab><bs><del><spacebar>', b'\x1b\t\x7f\x1b[3~ '),
    ('<up><down><right><left>', b'\x1b[A\x1b[B\x1b[C\x1b[D'),
    ('<home><end><pageUp><pageDown><insert>', b'\x1b[H\x1b[F\x1b[5~\x1b[6~\x1b[2~'),
    ('<f1><f2><f3><f4>', b'\x1bOP\x1bOQ\x1bOR\x1bOS'),
    ('<f5><f10><f12>', b'\x1b[15~\x1b[21~\x1b[24~'),
    ('<leftCtrlOn>x<leftCtrlOff>x', b'\x18x'),
    ('<rightCtrlOn>c<rightCtrlOff>', b'\x03'),
    ('<leftAltOn>f<leftAltOff>', b'\x1bf'),
    ('<leftShiftOn>abc<leftShiftOff>d', b'ABCd'),
    ('ds=nocloud-net;s=http://10.0.2.2:8000/', b'ds=nocloud-net;s=http://10.0.2.2:8000/'),
    ('a < b', b'a < b'),
    ('é', 'é'.encode()),
])
def test_keys(text, expected):
    assert keys(text) == expected


def test_each_key_is_one_write():
    actions = parse('a<up><f5>')
    assert actions == [('key', b'a'), ('key', b'\x1b[A'), ('key', b'\x1b[15~')]


@pytest.mark.parametrize('text, seconds', [
    ('<wait>', 1.0), ('<wait5>', 5.0), ('<wait10>', 10.0), ('<wait1m30s>', 90.0),
    ('<wait500ms>', 0.5), ('<wait2h>', 7200.0), ('<WAIT3s>', 3.0),
])
def test_waits(text, seconds):
    assert parse(text) == [('wait', seconds)]


def test_wait_between_keys():
    assert parse('x<wait2>y') == [('key', b'x'), ('wait', 2.0), ('key', b'y')]


def test_duration():
    assert parse_duration('1h2m3s') == 3723.0


@pytest.mark.parametrize('text, message', [
    ('<entr>', 'unknown key <entr> (did you mean <enter>?)'),
    ('<f13>', 'unknown key <f13>'),
    ('<leftSuperOn>', 'no meaning on a serial console'),
    ('<leftCtrlOn>1', 'Ctrl can only be combined'),
])
def test_errors(text, message):
    with pytest.raises(InvalidInput) as caught:
        parse(text, 'steps[2].send')
    assert caught.value.msg.startswith('steps[2].send: ')
    assert message in caught.value.msg
