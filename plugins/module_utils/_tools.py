# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How the wrappers call external commands.

A wrapper gets a ``run`` callable with the signature of
AnsibleModule.run_command(argv, check_rc=False) -> (rc, stdout, stderr), so unit
tests can hand in a fake that records the argv and plays back outputs.
"""

from __future__ import annotations

import typing as t

from ansible_collections.osimage.builder.plugins.module_utils._errors import ToolError

Runner = t.Callable[..., t.Tuple[int, str, str]]


def run_checked(run: Runner, argv: t.List[str], what: str) -> str:
    """Run argv; on a non-zero exit raise ToolError quoting the tool's own stderr."""
    rc, out, err = run(argv, check_rc=False)
    if rc != 0:
        detail = (err or out or '').strip()
        raise ToolError('%s failed (rc %d): %s' % (what, rc, detail or 'no output'),
                        cmd=argv, rc=rc, stdout=out, stderr=err)
    return out
