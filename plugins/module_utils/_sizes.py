# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Disk and memory sizes: "20G", "512M", "1.5GiB", "10GB" or a byte count."""

from __future__ import annotations

import re

from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput

# K, M, G... and KiB, MiB... are powers of 1024, as qemu-img and vmctl read
# them; kB, MB, GB... are powers of 1000 as disk vendors and osbuild use them.
_BINARY = {'': 1, 'B': 1}
_DECIMAL = {}
for _i, _p in enumerate('KMGTPE', start=1):
    _BINARY[_p] = 1024 ** _i
    _BINARY[_p + 'IB'] = 1024 ** _i
    _DECIMAL[_p + 'B'] = 1000 ** _i

_SIZE_RE = re.compile(r'^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$')

UNITS_HELP = ('a byte count or a number with a unit: K, M, G, T (or KiB, MiB, GiB, TiB; '
              'powers of 1024) or kB, MB, GB, TB (powers of 1000), e.g. "20G" or "512M"')


def parse_size(value: object, field: str = 'size', minimum: int = 1) -> int:
    """Return the size in bytes, or raise InvalidInput naming the field."""
    if isinstance(value, bool):
        raise InvalidInput('%s: expected %s, got a boolean' % (field, UNITS_HELP))
    if isinstance(value, int):
        number = value
    else:
        text = str(value)
        match = _SIZE_RE.match(text)
        if not match:
            raise InvalidInput('%s: %r is not a size; expected %s' % (field, text, UNITS_HELP))
        digits, unit = match.groups()
        key = unit.upper()
        if key in _DECIMAL:
            factor = _DECIMAL[key]
        elif key in _BINARY:
            factor = _BINARY[key]
        else:
            raise InvalidInput('%s: %r has an unknown unit %r; expected %s' % (field, text, unit, UNITS_HELP))
        if '.' in digits:
            number = int(round(float(digits) * factor))
        else:
            number = int(digits) * factor
    if number < minimum:
        raise InvalidInput('%s: %r is too small; it must be at least %d bytes' % (field, value, minimum))
    return number


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def human_size(value: int) -> str:
    """1073741824 -> '1 GiB', 1536 -> '1.5 KiB'."""
    size = float(value)
    for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB'):
        if abs(size) < 1024 or unit == 'TiB':
            text = ('%.1f' % size).rstrip('0').rstrip('.')
            return '%s %s' % (text, unit)
        size /= 1024
    raise AssertionError('unreachable')
