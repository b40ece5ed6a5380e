# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An expect/send engine for serial consoles.

Everything read is appended to a transcript and scanned for fail_on patterns
the whole time - while typing and while waiting, not only during an expect -
so a kernel panic ends the task at once instead of after a timeout.
Expect patterns are matched against the console text with terminal escape
sequences removed, from where the previous match ended.
"""

from __future__ import annotations

import codecs
import time
import typing as t

from ansible_collections.osimage.builder.plugins.module_utils import _keys
from ansible_collections.osimage.builder.plugins.module_utils._console import Console
from ansible_collections.osimage.builder.plugins.module_utils._errors import (
    FailPatternSeen, InvalidInput, OsImageError, WaitTimeout)
from ansible_collections.osimage.builder.plugins.module_utils._patterns import (
    compile_patterns, last_lines, strip_ansi)

STEP_KEYS = {'name', 'expect', 'send', 'timeout', 'char_delay', 'secret'}
KEEP = 256 * 1024


class Step(t.NamedTuple):
    index: int
    name: str
    expect: t.Optional[t.Pattern[str]]
    actions: t.List[_keys.Action]
    timeout: float
    char_delay: t.Optional[float]
    secret: bool


def compile_steps(raw_steps: t.List[t.Any], default_timeout: float) -> t.List[Step]:
    """Check every step before the console is touched; errors name the step."""
    if not raw_steps:
        raise InvalidInput('steps: at least one step is needed')
    steps = []
    for index, raw in enumerate(raw_steps):
        field = 'steps[%d]' % index
        if isinstance(raw, str):
            raw = {'send': raw}
        if not isinstance(raw, dict):
            raise InvalidInput('%s: expected a mapping with expect and/or send, got %r' % (field, raw))
        unknown = sorted(set(raw) - STEP_KEYS)
        if unknown:
            raise InvalidInput('%s: unknown key(s) %s; a step takes %s'
                               % (field, ', '.join(unknown), ', '.join(sorted(STEP_KEYS))))
        if raw.get('expect') is None and raw.get('send') is None:
            raise InvalidInput('%s: needs expect, send, or both' % field)
        expect = None
        if raw.get('expect') is not None:
            expect = compile_patterns([str(raw['expect'])], field + '.expect')[0]
        actions = _keys.parse(str(raw['send']), field + '.send') if raw.get('send') is not None else []
        try:
            timeout = float(raw.get('timeout', default_timeout))
            char_delay = float(raw['char_delay']) if raw.get('char_delay') is not None else None
        except (TypeError, ValueError):
            raise InvalidInput('%s: timeout and char_delay must be numbers of seconds' % field)
        if timeout <= 0:
            raise InvalidInput('%s.timeout: must be more than 0 seconds' % field)
        if raw.get('name'):
            name = str(raw['name'])
        elif expect is not None:
            name = 'expect %r' % expect.pattern
        else:
            name = 'send (secret)' if raw.get('secret') else 'send %r' % str(raw['send'])[:40]
        steps.append(Step(index, name, expect, actions, timeout, char_delay, bool(raw.get('secret'))))
    return steps


class ExpectSession:
    def __init__(self, console: Console, fail_on: t.List[t.Pattern[str]], char_delay: float = 0.05,
                 transcript: t.Optional[t.BinaryIO] = None, tail_lines: int = 40,
                 clock: t.Callable[[], float] = time.monotonic) -> None:
        self.console = console
        self.fail_on = fail_on
        self.char_delay = char_delay
        self.transcript = transcript
        self.tail_lines = tail_lines
        self.clock = clock
        self._decoder = codecs.getincrementaldecoder('utf-8')('replace')
        self._pending = ''
        self.text = ''          # console text without escape sequences
        self.search_from = 0    # where the next expect starts looking
        self._fail_scanned = 0

    # -- reading ---------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        if self.transcript is not None:
            self.transcript.write(data)
            self.transcript.flush()
        clean, self._pending = strip_ansi(self._pending + self._decoder.decode(data))
        self.text += clean
        if len(self.text) > KEEP:
            cut = len(self.text) - KEEP // 2
            self.text = self.text[cut:]
            self.search_from = max(0, self.search_from - cut)
            self._fail_scanned = max(0, self._fail_scanned - cut)
        self._check_fail()

    def _check_fail(self) -> None:
        start = max(0, self._fail_scanned - 256)
        window = self.text[start:]
        self._fail_scanned = len(self.text)
        for pattern in self.fail_on:
            match = pattern.search(window)
            if match:
                raise FailPatternSeen('the console showed %r (fail_on pattern %r)' % (match.group(0), pattern.pattern))

    def pump(self, seconds: float) -> None:
        """Read whatever arrives for this long."""
        deadline = self.clock() + seconds
        while True:
            remaining = deadline - self.clock()
            if remaining <= 0:
                return
            data = self.console.read(min(remaining, 0.2))
            if data:
                self._feed(data)

    def drain(self) -> None:
        while True:
            data = self.console.read(0)
            if not data:
                return
            self._feed(data)

    def tail(self) -> t.List[str]:
        return last_lines(self.text, self.tail_lines)

    # -- steps -----------------------------------------------------------------

    def expect(self, pattern: t.Pattern[str], timeout: float) -> t.Any:
        deadline = self.clock() + timeout
        while True:
            match = pattern.search(self.text, self.search_from)
            if match:
                self.search_from = match.end()
                return match
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise WaitTimeout('%r did not appear within %g s' % (pattern.pattern, timeout))
            data = self.console.read(min(remaining, 0.2))
            if data:
                self._feed(data)

    def send(self, actions: t.List[_keys.Action], char_delay: t.Optional[float] = None) -> None:
        delay = self.char_delay if char_delay is None else char_delay
        for kind, value in actions:
            if kind == 'wait':
                self.pump(float(t.cast(float, value)))
                continue
            self.console.write(t.cast(bytes, value))
            if delay:
                self.pump(delay)
            else:
                self.drain()

    def run(self, steps: t.List[Step]) -> t.Dict[str, t.Any]:
        matched = []
        timings = []
        for step in steps:
            started = self.clock()
            try:
                entry: t.Dict[str, t.Any] = {'step': step.index, 'name': step.name}
                if step.expect is not None:
                    match = self.expect(step.expect, step.timeout)
                    matched.append({'step': step.index, 'pattern': step.expect.pattern,
                                    'match': match.group(0), 'groups': list(match.groups()),
                                    'named': match.groupdict()})
                if step.actions:
                    self.send(step.actions, step.char_delay)
            except OsImageError as exc:
                exc.msg = 'step %d (%s): %s' % (step.index, step.name, exc.msg)
                exc.args = (exc.msg,)
                exc.context.update(failed_step=step.index, matched=matched, steps=timings,
                                   transcript_tail=self.tail())
                raise
            entry['seconds'] = round(self.clock() - started, 3)
            timings.append(entry)
        return {'matched': matched, 'steps': timings, 'transcript_tail': self.tail()}
