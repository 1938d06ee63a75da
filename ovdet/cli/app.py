"""`ovdet` entry point: the table of subcommands, parsing, and the one place errors become
exit statuses.

Exit codes: 0 success; 1 some inputs were skipped (each reported); 2 user error (one line on
stderr; `--debug` shows the traceback and the error's details); 130 interrupted; 141 stdout
closed by its reader (`ovdet detect ... --json - | head`): a quiet stop, as Unix tools do.
Warnings ovdet raises (`OvdetWarning`) print as one `ovdet: warning: ...` line. `--no-progress`
switches every progress bar of the run off (`ovdet.progress`); a run folder the run made but
wrote nothing into is removed at the end (`ovdet.kit.runs`).

Each subcommand module offers `add_parser(subparsers, common)` and `run(args) -> exit code`;
none of them imports torch at import time, so argument errors answer in a fraction of a second.
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from typing import Sequence

from ..audit import command as audit_command
from .. import __version__
from ..errors import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_USAGE, OvdetError, OvdetWarning
from ..calibrate import command as calibrate_command
from ..eval import command as eval_command
from ..explain import command as explain_command
from ..index import command as index_command
from ..index import search_command
from ..label import command as label_command
from ..serve import command as serve_command
from ..train import command as train_command
from ..export import command as export_command
from ..video import command as video_command
from . import classify as classify_command
from . import detect as detect_command
from . import weights as weights_command
from ..kit.parser import Parser, common_options, set_threads
from ..kit.runs import remove_empty_run_dirs
from ..progress import set_progress, write_line

# name -> module with add_parser(subparsers, common) and run(args); the order is --help's
SUBCOMMANDS = {
    "detect": detect_command,
    "classify": classify_command,
    "eval": eval_command,
    "video": video_command,
    "explain": explain_command,
    "audit": audit_command,
    "label": label_command,
    "index": index_command,
    "search": search_command,
    "calibrate": calibrate_command,
    "train": train_command,
    "serve": serve_command,
    "export": export_command,
    "weights": weights_command,
}


def build_parser() -> Parser:
    common = common_options()
    parser = Parser(prog="ovdet", description="Open-vocabulary object detection: type class names, get boxes.",
                    parents=[common])
    parser.add_argument("--version", action="version", version=f"ovdet {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=Parser, metavar="COMMAND")
    for module in SUBCOMMANDS.values():
        module.add_parser(sub, common)
    return parser


def _warning_printer(previous):
    """A warnings.showwarning for the CLI: ovdet's own warnings as one line, without the source
    line Python adds; other libraries' warnings go to `previous` (Python's format)."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, OvdetWarning):
            # a progress bar may be drawn on stderr: print above it, not into it
            write_line(f"ovdet: warning: {message}", file=file)
        else:
            previous(message, category, filename, lineno, file, line)

    return show


def _quiet_broken_pipe() -> int:
    """The reader of stdout is gone (`| head`): stop without a traceback or an error line.
    stdout now points at /dev/null so the interpreter's final flush cannot fail again
    (the recipe in Python's `signal` documentation)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (tests): nothing to flush
        pass
    return EXIT_BROKEN_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    is_process = argv is None  # the console script / python -m ovdet, not a caller in Python
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_printer(warnings.showwarning)
            warnings.simplefilter("default", OvdetWarning)  # shown, once per message (not once per batch)
            parser = build_parser()
            args = parser.parse_args(argv)
            if args.command is None:
                parser.print_help()
                return EXIT_USAGE
            set_threads(getattr(args, "threads", None))
            set_progress(not getattr(args, "no_progress", False))  # every bar of the run, tiling's included
            code = SUBCOMMANDS[args.command].run(args)
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
            return code
    except KeyboardInterrupt as exc:
        remove_empty_run_dirs()  # a run folder nothing was written into yet
        # a command that saved its finished work says where, once (`Interrupted`); otherwise a bare note
        print(f"ovdet: {exc}" if str(exc) else "ovdet: interrupted", file=sys.stderr)
        if is_process:
            # Ctrl-C ends the run at once: once torch and transformers are loaded, the
            # interpreter's teardown takes 1-6 s on a busy 2-core machine (measured). The
            # commands have written their finished work before the interrupt reached here.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except (OvdetError, OSError) as exc:
        # user errors (and file-system errors such as a full disk): one line, unless --debug
        if debug:
            traceback.print_exc()
            details = getattr(exc, "details", None)
            if details:
                print(details, file=sys.stderr)
        message = str(exc).replace("\n", " ")
        print(message if message.startswith("ovdet") else f"ovdet: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        # a run that failed (or wrote nothing) leaves no empty numbered run folder behind
        remove_empty_run_dirs()
        set_progress(True)  # main() may be called again in this process (tests, tools)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
