"""Expected input errors and the CLI wrapper that turns them into one-line messages."""

from __future__ import annotations

import sys
from typing import Callable, Sequence


class InputError(Exception):
    """A problem with a file or a setting the user gave us (not a bug in qabench)."""

    def __init__(self, path: object, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Run a script's ``main`` and exit; expected input errors print one line, no traceback."""
    try:
        code = main(argv)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)
