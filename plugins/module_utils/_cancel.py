# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A cancelled build's module still cleans up after itself.

When ansible-playbook is interrupted (SIGINT, SIGTERM), or its lease keeper ends the
workers a killed playbook left behind, ansible's task worker passes the signal on to
its task's process group: the module gets SIGTERM (or SIGINT). Python's default for
SIGTERM ends the process at once - no ``finally``, no ``except BaseException`` - so a
module that holds something outside itself (a loop device and mounts, an unfinished
multipart upload) lets unwind_on_signals turn these signals into SystemExit, which
unwinds the module's cleanup code as a failure would.
"""

from __future__ import annotations

import signal
import typing as t

CANCEL_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _unwind(signum: int, _frame: t.Any) -> None:
    """Once only, so that a second signal does not cut the unwinding short."""
    for other in CANCEL_SIGNALS:
        signal.signal(other, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def unwind_on_signals() -> None:
    """From now on SIGTERM, SIGINT and SIGHUP raise SystemExit(128 + signal) in the main thread."""
    for signum in CANCEL_SIGNALS:
        signal.signal(signum, _unwind)
