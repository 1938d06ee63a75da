"""The argparse parser of every `ovdet` command: errors are one line, not usage + exit."""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from typing import Sequence

from ..errors import OvdetError


class UsageError(OvdetError):
    """Bad command-line usage (argparse's complaints, routed through our one-line errors)."""

    def __init__(self, message: str, prog: str = ""):
        super().__init__(message)
        self.prog = prog  # the parser that raised it (a subcommand's errors pass through ovdet's)


NUMBER = re.compile(r"^-\d|^-\.\d")  # negative numbers are values, not flags


class Parser(argparse.ArgumentParser):
    """argparse parser whose errors are one-line `UsageError`s instead of usage + exit, and
    which names a mistyped flag (`--clases`) before complaining about the flags it lacks."""

    def error(self, message: str):  # argparse prints usage + message; we want one line
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)", prog=self.prog)

    def parse_known_args(self, args=None, namespace=None):
        argv = list(sys.argv[1:] if args is None else args)
        try:
            namespace, extras = super().parse_known_args(argv, namespace)
        except UsageError as exc:
            # argparse checks required options before it reports unknown ones, so `--clases x`
            # would read "--classes is required": an unknown flag is the likelier story
            if exc.prog == self.prog:
                self.refuse_unknown(argv)
            raise
        self.refuse_unknown(extras)
        return namespace, extras

    def flags(self) -> list[str]:
        """Every option string of this parser ("--model", "-m", ...)."""
        return sorted(self._option_string_actions)  # argparse's own table of this parser's flags (read only)

    def refuse_unknown(self, tokens: Sequence[str]) -> None:
        """Raise a UsageError naming the first token that looks like a flag this parser lacks."""
        flags = self.flags()
        for token in tokens:
            if token == "--":
                return  # what follows is positional
            name = token.split("=", 1)[0]
            if not name.startswith("-") or name == "-" or NUMBER.match(name):
                continue
            if name in flags or (self.allow_abbrev and any(f.startswith(name) for f in flags if f.startswith("--"))):
                continue
            close = difflib.get_close_matches(name, flags, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise UsageError(f"{self.prog}: unknown option {name}{hint} (see {self.prog} --help)", prog=self.prog)


def whole_number(minimum: int):
    """An argparse `type`: a whole number no smaller than `minimum` (flags such as --limit,
    --every, --queue); argparse turns the error into its usual one-line usage error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value}")
        return value

    return parse


def common_options() -> argparse.ArgumentParser:
    """Parent parser of every subcommand: --debug and --threads."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    common.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads for the models (default: the CPUs this process may use, "
                             "container quotas included; or $OMP_NUM_THREADS)")
    return common


def set_threads(threads: int | None) -> None:
    """--threads N: through OMP_NUM_THREADS, read when torch loads (it loads later, lazily),
    and directly when something already loaded it."""
    if threads is None:
        return
    if threads < 1:
        raise UsageError(f"--threads must be at least 1, got {threads}")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
