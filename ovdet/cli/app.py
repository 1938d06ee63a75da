"""`ovdet` entry point: the table of subcommands, parsing, and the one place errors become
exit statuses.

Exit codes: 0 success; 1 some inputs were skipped (each reported); 2 user error (one line on
stderr; `--debug` shows the traceback); 130 interrupted.

Each subcommand module offers `add_parser(subparsers, common)` and `run(args) -> exit code`;
none of them imports torch at import time, so argument errors answer in a fraction of a second.
"""

from __future__ import annotations

import sys
import traceback
from typing import Sequence

from ..audit import command as audit_command
from ..errors import EXIT_INTERRUPTED, EXIT_USAGE, OvdetError
from ..eval import command as eval_command
from ..explain import command as explain_command
from ..export import command as export_command
from ..video import command as video_command
from . import classify as classify_command
from . import detect as detect_command
from . import weights as weights_command
from .options import Parser, common_options, set_threads

# name -> module with add_parser(subparsers, common) and run(args); the order is --help's
SUBCOMMANDS = {
    "detect": detect_command,
    "classify": classify_command,
    "eval": eval_command,
    "video": video_command,
    "explain": explain_command,
    "audit": audit_command,
    "export": export_command,
    "weights": weights_command,
}


def build_parser() -> Parser:
    common = common_options()
    parser = Parser(prog="ovdet", description="Open-vocabulary object detection: type class names, get boxes.",
                    parents=[common])
    sub = parser.add_subparsers(dest="command", parser_class=Parser, metavar="COMMAND")
    for module in SUBCOMMANDS.values():
        module.add_parser(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        set_threads(getattr(args, "threads", None))
        return SUBCOMMANDS[args.command].run(args)
    except KeyboardInterrupt:
        print("ovdet: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (OvdetError, OSError) as exc:
        # user errors (and file-system errors such as a full disk): one line, unless --debug
        if debug:
            traceback.print_exc()
        message = str(exc).replace("\n", " ")
        print(message if message.startswith("ovdet") else f"ovdet: error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
