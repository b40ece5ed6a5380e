# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Exception types shared by the module_utils.

Each failure kind has its own type; a module's main() turns any of them into
fail_json(msg=..., **error.context) so the user sees the command, its rc and
stderr, or the last console lines, next to the message.
"""

from __future__ import annotations


class OsImageError(Exception):
    """Base of every error the collection raises on purpose."""

    def __init__(self, msg: str, **context: object) -> None:
        super().__init__(msg)
        self.msg = msg
        self.context = context


class InvalidInput(OsImageError):
    """An option value that cannot work, found before anything was changed."""


class ToolError(OsImageError):
    """An external command failed; context carries cmd, rc, stdout, stderr."""


class ToolMissing(OsImageError):
    """An external command is not installed on the build host."""


class VmError(OsImageError):
    """The VM could not be started, stopped or watched."""


class ConsoleError(OsImageError):
    """The serial console could not be reached or was lost."""


class WaitTimeout(OsImageError):
    """Something did not happen within its timeout."""


class FailPatternSeen(OsImageError):
    """A fail_on pattern appeared on the console."""
