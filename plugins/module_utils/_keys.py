# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Packer's boot_command key grammar, turned into bytes for a serial line.

Packer's names (``<enter>``, ``<esc>``, ``<f1>``, ``<wait5>``, ``<wait1m30s>``,
``<leftCtrlOn>`` ...) are matched without regard to case, as Packer does. On a
serial line there are no scan codes: special keys become the escape sequences
an xterm/VT220 terminal sends, Ctrl turns letters into control characters and
Alt prefixes ESC. An unknown ``<name>`` is an error rather than typed as text,
so that a typo such as ``<entr>`` is caught before anything is sent.
"""

from __future__ import annotations

import difflib
import re
import typing as t

from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput

KEYS = {
    'enter': b'\r', 'return': b'\r', 'esc': b'\x1b', 'tab': b'\t', 'bs': b'\x7f',
    'del': b'\x1b[3~', 'spacebar': b' ', 'insert': b'\x1b[2~', 'home': b'\x1b[H', 'end': b'\x1b[F',
    'pageup': b'\x1b[5~', 'pagedown': b'\x1b[6~',
    'up': b'\x1b[A', 'down': b'\x1b[B', 'right': b'\x1b[C', 'left': b'\x1b[D',
    'f1': b'\x1bOP', 'f2': b'\x1bOQ', 'f3': b'\x1bOR', 'f4': b'\x1bOS', 'f5': b'\x1b[15~',
    'f6': b'\x1b[17~', 'f7': b'\x1b[18~', 'f8': b'\x1b[19~', 'f9': b'\x1b[20~', 'f10': b'\x1b[21~',
    'f11': b'\x1b[23~', 'f12': b'\x1b[24~',
}
MODIFIERS = {'leftctrl': 'ctrl', 'rightctrl': 'ctrl', 'leftalt': 'alt', 'rightalt': 'alt',
             'leftshift': 'shift', 'rightshift': 'shift'}
_UNSUPPORTED = ('leftsuper', 'rightsuper')

_TOKEN = re.compile(r'<([A-Za-z][A-Za-z0-9]*)>')
_WAIT = re.compile(r'^wait((?:\d+(?:\.\d+)?(?:h|ms|m|s)?)+)?$', re.IGNORECASE)
_DURATION_PART = re.compile(r'(\d+(?:\.\d+)?)(h|ms|m|s)?', re.IGNORECASE)
_UNIT_SECONDS = {'h': 3600.0, 'm': 60.0, 's': 1.0, 'ms': 0.001, '': 1.0}

Action = t.Tuple[str, t.Union[bytes, float]]


def parse_duration(text: str) -> float:
    """'5' -> 5.0, '1m30s' -> 90.0, '500ms' -> 0.5 (Go's time.ParseDuration units, bare number = s)."""
    total = 0.0
    for number, unit in _DURATION_PART.findall(text):
        total += float(number) * _UNIT_SECONDS[(unit or '').lower()]
    return total


def _names() -> t.List[str]:
    return sorted(set(KEYS) | {m + s for m in MODIFIERS for s in ('on', 'off')} | {'wait', 'wait5', 'wait1m30s'})


def _apply(char: str, held: t.Set[str], field: str) -> bytes:
    if 'shift' in held:
        char = char.upper()
    data = char.encode('utf-8')
    if 'ctrl' in held:
        if len(char) != 1 or not (char.isalpha() or char in '@[\\]^_ '):
            raise InvalidInput('%s: Ctrl can only be combined with a letter or one of @[\\]^_ (got %r)' % (field, char))
        data = bytes([ord(char.upper()) & 0x1F]) if char != ' ' else b'\x00'
    if 'alt' in held:
        data = b'\x1b' + data
    return data


def parse(text: str, field: str = 'send') -> t.List[Action]:
    """Return a list of ('key', bytes) and ('wait', seconds); each 'key' is written in one piece."""
    actions: t.List[Action] = []
    held: t.Set[str] = set()
    position = 0
    for match in _TOKEN.finditer(text):
        for char in text[position:match.start()]:
            actions.append(('key', _apply(char, held, field)))
        position = match.end()
        name = match.group(1).lower()
        wait = _WAIT.match(name)
        if wait:
            actions.append(('wait', parse_duration(wait.group(1)) if wait.group(1) else 1.0))
        elif name in KEYS:
            key = KEYS[name]
            actions.append(('key', (b'\x1b' + key) if 'alt' in held else key))
        elif name[:-2] in MODIFIERS and name.endswith('on'):
            held.add(MODIFIERS[name[:-2]])
        elif name[:-3] in MODIFIERS and name.endswith('off'):
            held.discard(MODIFIERS[name[:-3]])
        elif name[:-2] in _UNSUPPORTED or name[:-3] in _UNSUPPORTED:
            raise InvalidInput('%s: <%s> has no meaning on a serial console' % (field, match.group(1)))
        else:
            close = difflib.get_close_matches(name, _names(), n=1)
            hint = ' (did you mean <%s>?)' % close[0] if close else ''
            raise InvalidInput('%s: unknown key <%s>%s' % (field, match.group(1), hint))
    for char in text[position:]:
        actions.append(('key', _apply(char, held, field)))
    return actions
