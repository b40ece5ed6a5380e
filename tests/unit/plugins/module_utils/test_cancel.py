# -*- coding: utf-8 -*-
from __future__ import annotations

import contextlib
import os
import signal

import pytest

from ansible_collections.osimage.builder.plugins.module_utils import _cancel


@pytest.fixture
def saved_handlers():
    saved = {signum: signal.getsignal(signum) for signum in _cancel.CANCEL_SIGNALS}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_a_cancelled_module_unwinds_once(saved_handlers):
    # What ansible's worker does to its task on a cancel: SIGTERM. The exception runs the
    # ExitStack's callbacks (debian_bootstrap: umount, losetup --detach); a second signal must not cut them short.
    released = []
    with pytest.raises(SystemExit) as exc:
        with contextlib.ExitStack() as stack:
            stack.callback(released.append, 'loop device')
            _cancel._unwind(signal.SIGTERM, None)
    assert exc.value.code == 128 + signal.SIGTERM
    assert released == ['loop device']
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN


def test_unwind_on_signals_turns_a_real_sigterm_into_system_exit(saved_handlers):
    _cancel.unwind_on_signals()
    with pytest.raises(SystemExit) as exc:
        os.kill(os.getpid(), signal.SIGTERM)
    assert exc.value.code == 128 + signal.SIGTERM
