# -*- coding: utf-8 -*-
from __future__ import annotations

import typing as t

import pytest


class FakeRun:
    """Stands in for AnsibleModule.run_command: records argv, plays back (rc, stdout, stderr)."""

    def __init__(self, replies: t.Optional[t.List[t.Tuple[int, str, str]]] = None) -> None:
        self.replies = list(replies or [])
        self.calls: t.List[t.List[str]] = []

    def __call__(self, argv: t.List[str], check_rc: bool = False) -> t.Tuple[int, str, str]:
        assert check_rc is False
        self.calls.append(list(argv))
        if not self.replies:
            raise AssertionError('unexpected command %r' % (argv,))
        return self.replies.pop(0)


@pytest.fixture
def fake_run() -> t.Type[FakeRun]:
    return FakeRun
