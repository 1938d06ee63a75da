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
EXIT_BROKEN_PIPE = 141  # the reader of stdout went away (`| head`): 128 + SIGPIPE, as `yes | head` reports


class OvdetError(Exception):
    """A problem with the user's input or environment, explained in one line.

    `details` (optional) is the longer story, e.g. every place looked for a checkpoint: the
    CLI shows it with `--debug`, so the line itself can lead with the fix and stay short.
    """

    def __init__(self, message: str = "", details: str | None = None):
        super().__init__(message)
        self.details = details


class OvdetWarning(UserWarning):
    """Something that works but probably not as meant (an unused class threshold, a softmax
    over one class). The CLI prints it as one `ovdet: warning: ...` line."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C after a command has saved its finished work; the message says where (the CLI
    prints it once, instead of a bare "interrupted")."""


class ConfigError(OvdetError, ValueError):
    """A config file or override is malformed, or names an unknown key or preset."""


class VocabularyError(OvdetError, ValueError):
    """The class-name list is empty, has empty entries or duplicates."""


class ResumeError(OvdetError, ValueError):
    """A long run (eval, calibrate, label) cannot be resumed: its manifest records other
    settings, or an unfinished run is in the way and neither --resume nor --overwrite says
    what to do with it."""


class ImageReadError(OvdetError, OSError):
    """An image is missing, unreadable or not an image. `reason`: why, without the image's name,
    for callers that name the image themselves (an upload, an exemplar)."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


class ImageTooLargeError(ImageReadError):
    """An image has more pixels than `max_pixels` allows (the message says how to raise it);
    `width`, `height` and `max_pixels` when known, for callers that word it for someone else."""

    def __init__(self, message: str, width: int | None = None, height: int | None = None,
                 max_pixels: int | None = None):
        super().__init__(message)
        self.width, self.height, self.max_pixels = width, height, max_pixels


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
