"""Errors of the video pipeline; all are `OvdetError`s, so the CLI prints one line and exits 2."""

from __future__ import annotations

from ..errors import OvdetError


class SourceError(OvdetError, ValueError):
    """SOURCE cannot be understood: unsupported URL scheme, missing file, empty folder or glob."""


class SourceOpenError(OvdetError, OSError):
    """SOURCE names something real that cannot be opened: an undecodable file, no such webcam,
    a stream that does not answer."""


class StreamLostError(OvdetError, ConnectionError):
    """A source dropped mid-stream and every reconnection attempt failed."""


class VideoWriteError(OvdetError, OSError):
    """An output video cannot be created (unknown container, no codec, unwritable folder)."""
