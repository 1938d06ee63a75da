"""The `ovdet` command line.

- `app.py`: the entry point and the table of subcommands;
- `options.py`: options and helpers subcommands share (feature packages such as eval/ and
  video/ import it; it imports no subcommand);
- `detect.py`, `classify.py`, `weights.py`: subcommands with no package of their own.
"""

from __future__ import annotations

from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """`ovdet ...` (argv without the program name); returns the exit status."""
    from .app import main as run_main  # here, not at import: options.py users must not load every subcommand

    return run_main(argv)
