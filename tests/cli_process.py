"""Running `ovdet` (or a Python snippet) in a subprocess for CLI tests: start independent runs
together (each spends seconds importing torch/transformers, which a second core overlaps),
then `finish` each."""

from __future__ import annotations

import subprocess
import sys
from typing import Mapping, Sequence


def start(argv: Sequence[object], cwd=None, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """`python ARGV...` (e.g. ["-m", "ovdet", "detect", ...]) started and left running, text output captured."""
    return subprocess.Popen([sys.executable, *map(str, argv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=cwd, env=None if env is None else dict(env))


def finish(proc: subprocess.Popen, timeout: float = 300) -> subprocess.CompletedProcess:
    """Wait for a started run (killed if the wait fails) -> its CompletedProcess."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
