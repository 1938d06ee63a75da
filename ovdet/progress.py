"""The one progress bar of ovdet: every command and library loop that shows progress uses it.

    with progress_bar(total=len(paths), desc="label", unit="img") as bar:
        ...; bar.update(n)

One look (a tqdm bar on stderr, `desc: 40%|####   | 4/10 [00:02<00:03, 2.0img/s]`), and one rule
for when it shows: not when `enabled` is false (a command's `--no-progress`, a short loop), not
when the process switched bars off (`set_progress(False)`: the CLI does it for `--no-progress`),
and not when stderr is not a terminal (logs and pipes stay clean), as is usual for such bars.
Lines printed while a bar is drawn go through `bar.write(...)` so they land above it.
"""

from __future__ import annotations

import sys
from typing import Any

_state = {"enabled": True}


def set_progress(enabled: bool) -> None:
    """Switch every progress bar of this process on (the default) or off (`--no-progress`)."""
    _state["enabled"] = bool(enabled)


def progress_bar(total: int | None = None, desc: str | None = None, unit: str = "img", *, enabled: bool = True,
                 initial: int = 0, leave: bool = True, **kwargs: Any):
    """A tqdm bar on stderr; disabled unless `enabled`, bars are on for the process and stderr
    is a terminal (tqdm's `disable=None`). Extra keyword arguments go to tqdm (smoothing,
    mininterval...)."""
    from tqdm import tqdm

    disable = None if (enabled and _state["enabled"]) else True
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave, file=sys.stderr,
                dynamic_ncols=True, disable=disable, **kwargs)


def write_line(text: str, file: Any = None) -> None:
    """Print a line above any progress bar being drawn (stderr by default)."""
    out = sys.stderr if file is None else file
    tqdm = sys.modules.get("tqdm")
    if tqdm is not None:  # a bar may be drawn: tqdm prints above it
        tqdm.tqdm.write(text, file=out)
    else:
        print(text, file=out)
