"""Text that is safe to show: control characters made visible, paths quoted when they need it.

Whatever a server sends (script text, script stderr, error bodies, certificates) can hold
terminal escape sequences that move the cursor, rewrite lines or hide text. `visible()` turns
every character that a terminal acts on, other than a newline and a tab, into a printable
escape (`\\x1b`, `\\r`, `\\u202e`), so what is shown is what was sent and nothing more.
Standard library only: the CLI's Terminal uses it for every line it writes.
"""

from __future__ import annotations

import re
import shlex
from pathlib import PurePath

# C0 controls but tab and newline, DEL, C1 controls; Unicode's bidirectional overrides and
# isolates, which reorder what a terminal shows (the "Trojan source" trick); the line and
# paragraph separators, which some terminals treat as a newline.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
_SHORT = {"\r": "\\r", "\x0b": "\\v", "\x0c": "\\f", "\x08": "\\b", "\x00": "\\0"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """`text` with every control character but newline and tab written as an escape."""
    return _UNSAFE.sub(_escape, text)


def quote_path(path: str | PurePath) -> str:
    """A path as a shell would need it typed: unchanged when plain, quoted when it has spaces
    or shell syntax in it, so a path shown in a message can be copied into a command."""
    return shlex.quote(str(path))
