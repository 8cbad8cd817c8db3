"""The one entry-point wrapper of every command line: a problem with the user's configuration,
input or files ends as one ``error: ...`` line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

from hat.atomic import os_error_message
from hat.errors import HatConfigError

Note = str | Callable[[], str]


def run_cli(body: Callable[[], int | None], os_note: Note = "",
            interrupted: str | None = None) -> int:
    """``body()``'s exit status (None: 0). A :class:`HatConfigError` prints its message, an
    ``OSError`` its path and meaning plus ``os_note`` (what was kept; a callable is asked when
    it happens), both return 2; Ctrl-C prints ``interrupted`` and returns 130 when given."""
    try:
        return body() or 0
    except HatConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        note = os_note() if callable(os_note) else os_note
        print(f"error: {os_error_message(e)}{note}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        print(f"| interrupted: {interrupted}", file=sys.stderr)
        return 130
