"""Exceptions a user can act on.

Everything the CLI turns into "one line on stderr, exit code 2" derives from `OvdetError`; any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

# process exit statuses of every `ovdet` command
EXIT_OK = 0  # done
EXIT_PARTIAL = 1  # done, but some inputs were skipped (each reported)
EXIT_USAGE = 2  # user error: one line on stderr
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGTERM (what shells report for SIGINT)


class OvdetError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class ConfigError(OvdetError, ValueError):
    """A config file or override is malformed, or names an unknown key or preset."""


class VocabularyError(OvdetError, ValueError):
    """The class-name list is empty, has empty entries or duplicates."""


class ImageReadError(OvdetError, OSError):
    """An image is missing, unreadable or not an image."""


class WeightsNotFoundError(OvdetError, FileNotFoundError):
    """A checkpoint is not on disk and could not be downloaded."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none): library
    errors are often multi-line, and ovdet reports errors in one line."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ExemplarError(OvdetError, ValueError):
    """An image exemplar is unreadable, its box is empty or outside the image, or the model
    cannot take exemplars."""
