"""Run folders: where a command's results go when no explicit output flag says.

One convention for every command that writes files (as ultralytics does): without an explicit
output flag (--out, --json, --results-out...), results go to a new run folder
runs/<task>/<name>, the name taking the first free of exp, exp2, exp3..., and the command
prints the folder at the end. The folder is made when the first output is written
(`RunFolder.get()`); one made by a run that then fails before writing anything into it is
removed again (`remove_empty_run_dirs`, called by the CLI on errors), so a failed run leaves
no empty numbered folder behind.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from .parser import UsageError

RUNS_ROOT = Path("runs")
DEFAULT_RUN_NAME = "exp"
CREATED: list[Path] = []  # run folders this process made (cleared by remove_empty_run_dirs)


def add_run_options(p: argparse.ArgumentParser, task: str) -> None:
    """--project, --name, --exist-ok: where the run folder runs/<task>/<name> goes.

    `task` ("detect", "video", "eval"...) is stored as `args.run_task` for `run_dir_for`."""
    group = p.add_argument_group("run folder (used when no explicit output is given)")
    group.add_argument("--project", type=Path, metavar="DIR",
                       help=f"folder holding the run folders (default: {RUNS_ROOT / task})")
    group.add_argument("--name", default=DEFAULT_RUN_NAME,
                       help=f"run folder name; taken names get 2, 3... appended (default: {DEFAULT_RUN_NAME})")
    group.add_argument("--exist-ok", action="store_true", help="write into --name even if it exists")
    p.set_defaults(run_task=task)  # a value of its own, not a changed flag default


def run_dir(task: str, name: str = DEFAULT_RUN_NAME, project: str | Path | None = None,
            exist_ok: bool = False) -> Path:
    """Create and return the run folder `project/name` (default project: runs/<task>).

    Without `exist_ok` the first free of name, name2, name3... is taken; the folder is made
    with exist_ok=False, so two runs started at once never share one."""
    parent = Path(project) if project is not None else RUNS_ROOT / task
    if not name or Path(name).name != name or name in (".", ".."):
        raise UsageError(f"--name must be a plain folder name, got {name!r}")
    if exist_ok:
        if not (parent / name).is_dir():
            (parent / name).mkdir(parents=True, exist_ok=True)
            CREATED.append(parent / name)
        return parent / name
    parent.mkdir(parents=True, exist_ok=True)
    k = 1
    while True:
        candidate = parent / (name if k == 1 else f"{name}{k}")
        try:
            candidate.mkdir()
            CREATED.append(candidate)
            return candidate
        except FileExistsError:
            k += 1


def run_dirs(task: str, name: str = DEFAULT_RUN_NAME, project: str | Path | None = None) -> list[Path]:
    """The existing run folders name, name2, name3... under project (runs/<task>), in order."""
    parent = Path(project) if project is not None else RUNS_ROOT / task
    pattern = re.compile(re.escape(name) + r"(\d*)$")
    found = []
    for child in parent.iterdir() if parent.is_dir() else ():
        match = pattern.match(child.name)
        if child.is_dir() and match and match.group(1) != "1":
            found.append((int(match.group(1) or 1), child))
    return [path for _, path in sorted(found)]


def run_dir_for(args: argparse.Namespace) -> Path:
    """`run_dir` from the flags of `add_run_options`."""
    return run_dir(args.run_task, args.name, args.project, args.exist_ok)


class RunFolder:
    """The run folder of a command, made on first use (a run that fails its checks leaves no
    empty folder behind). `path` may be set beforehand (a resumed run's folder)."""

    def __init__(self, args: argparse.Namespace, path: Path | None = None):
        self.args, self.path = args, path

    def get(self) -> Path:
        if self.path is None:
            self.path = run_dir_for(self.args)
        return self.path


def remove_empty_run_dirs() -> list[Path]:
    """Remove the run folders this process made that are still empty (a run that failed
    before writing); returns them. Folders with anything in them stay."""
    removed = []
    while CREATED:
        folder = CREATED.pop()
        try:
            folder.rmdir()  # only succeeds when empty
            removed.append(folder)
        except OSError:
            pass
    return removed


def saved_to(where: Path | str) -> str:
    """The closing line of a command that wrote files (stderr, so stdout stays parseable)."""
    return f"ovdet: results saved to {where}"
