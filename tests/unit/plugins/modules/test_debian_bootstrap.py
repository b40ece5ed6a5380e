# -*- coding: utf-8 -*-
from __future__ import annotations

import contextlib
import signal

import pytest

from ansible_collections.osimage.builder.plugins.modules import debian_bootstrap


@pytest.fixture
def saved_handlers():
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_a_cancelled_build_unwinds_the_disk_once(saved_handlers):
    # What ansible's worker does to its task on a cancel: SIGTERM. The exception runs the
    # ExitStack's callbacks (umount, losetup --detach); a second signal must not cut them short.
    released = []
    with pytest.raises(SystemExit) as exc:
        with contextlib.ExitStack() as stack:
            stack.callback(released.append, 'loop device')
            debian_bootstrap._unwind(signal.SIGTERM, None)
    assert exc.value.code == 128 + signal.SIGTERM
    assert released == ['loop device']
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
