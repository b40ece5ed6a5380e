# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Console patterns that mean a build cannot go on, and reading a console log."""

from __future__ import annotations

import re
import typing as t

from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput

# Linux: panic() prints "Kernel panic - not syncing: <reason>".
# OpenBSD: panic(9) prints "panic: <reason>" at the start of a line and drops
# into ddb(4), whose prompt is "ddb>" or "ddb{N}>" on multiprocessor kernels.
DEFAULT_FAIL_ON = [
    r'Kernel panic - not syncing',
    r'(?m)^panic: ',
    r'(?m)^ddb(\{\d+\})?> ',
]

_ANSI = re.compile(r'\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()][0-9A-Za-z]|[=>78DEHMc])')
_ANSI_PARTIAL = re.compile(r'\x1b(\[[0-?]*[ -/]*|\][^\x07\x1b]*|[()])?$')


def compile_patterns(patterns: t.Iterable[str], field: str) -> t.List[t.Pattern[str]]:
    compiled = []
    for index, pattern in enumerate(patterns):
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise InvalidInput('%s[%d]: %r is not a valid regular expression: %s' % (field, index, pattern, exc))
    return compiled


def strip_ansi(text: str) -> t.Tuple[str, str]:
    """Remove terminal escape sequences; return (clean text, an incomplete tail kept for later)."""
    tail = ''
    partial = _ANSI_PARTIAL.search(text)
    if partial:
        tail = text[partial.start():]
        text = text[:partial.start()]
    return _ANSI.sub('', text), tail


def last_lines(text: str, count: int) -> t.List[str]:
    lines = text.replace('\r\n', '\n').replace('\r', '\n').split('\n')
    while lines and not lines[-1].strip():
        lines.pop()
    return lines[-count:]


class LogWatcher:
    """Follow a growing console log file and look for fail patterns in it."""

    def __init__(self, path: str, patterns: t.List[t.Pattern[str]], keep: int = 65536) -> None:
        self.path = path
        self.patterns = patterns
        self.keep = keep
        self.offset = 0
        self.text = ''
        self._pending = ''
        self._scanned = 0

    def poll(self) -> t.Optional[t.Tuple[str, str]]:
        """Read what was appended; return (pattern, matched text) of the first fail pattern seen."""
        try:
            with open(self.path, 'rb') as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except OSError:
            return None
        if chunk:
            self.offset += len(chunk)
            clean, self._pending = strip_ansi(self._pending + chunk.decode('utf-8', 'replace'))
            self.text += clean
            if len(self.text) > self.keep:
                cut = len(self.text) - self.keep
                self.text = self.text[cut:]
                self._scanned = max(0, self._scanned - cut)
        # Look again a little before where the last scan ended: a pattern may straddle reads.
        start = max(0, self._scanned - 256)
        window = self.text[start:]
        self._scanned = len(self.text)
        for pattern in self.patterns:
            match = pattern.search(window)
            if match:
                return pattern.pattern, match.group(0)
        return None

    def tail(self, count: int = 40) -> t.List[str]:
        return last_lines(self.text, count)
