"""Result files: every JSON / JSONL / YAML file ovdet writes or reads goes through here.

Writing is atomic (a temporary file in the same folder, moved into place only when complete,
so an interrupted run never leaves a truncated file), or line by line for streams (each JSONL
line is written whole and flushed, so a crash loses at most the line being written). Reading
has one error wording: `cannot read <what> <path>: <reason>` (`DataFileError`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import uuid
from pathlib import Path
from typing import IO, Any, Iterator

from .errors import OvdetError, first_line


class DataFileError(OvdetError, ValueError):
    """A JSON, JSONL or YAML file is missing, unreadable, malformed or of the wrong shape."""


# -- writing -----------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Write a file through a temporary file in the same folder, moved into place with
    `os.replace` only when the `with` block succeeds: an interrupted run never leaves a
    truncated file behind. Yields the temporary path (its suffix ends in `.tmp`, so pass the
    format explicitly to writers that guess it from the name)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # a plain open with "x" gets the usual umask permissions (mkstemp's are 0600)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, payload: Any, indent: int | None = 2) -> Path | None:
    """JSON to a file, atomically and flushed to disk before it replaces `path`; "-" writes to
    stdout (returns None then)."""
    if str(path) == "-":
        json.dump(payload, sys.stdout, indent=indent, ensure_ascii=False)
        sys.stdout.write("\n")
        return None
    with atomic_output(path) as tmp:
        with open(tmp, "x", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=indent, ensure_ascii=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def jsonl_line(record: Any) -> str:
    """One compact JSON line (with its newline): the form of every JSONL file ovdet writes."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n"


def write_jsonl(path: str | Path, records: Any) -> Path:
    """A whole JSONL file, atomically (label's shards: a chunk is on disk whole or not at all)."""
    with atomic_output(path) as tmp:
        with open(tmp, "x", encoding="utf-8") as fh:
            fh.write("".join(jsonl_line(r) for r in records))
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


class JsonlWriter:
    """A JSONL stream: each record written as one whole line and flushed at once, so a reader
    (or a crash) never sees half a line. Path "-" writes to stdout; `append` continues a file
    (a resumed run)."""

    def __init__(self, path: str | Path, append: bool = False):
        self.path = str(path)
        self.lines = 0
        if self.path == "-":
            self._fh: IO[str] | None = sys.stdout
            self._owned = False
            return
        target = Path(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(target, "a" if append else "w", encoding="utf-8")
        except OSError as exc:
            raise DataFileError(f"cannot write {target}: {exc.strerror or exc}") from exc
        self._owned = True

    def write(self, record: Any) -> None:
        if self._fh is None:
            raise DataFileError(f"{self.path} is already closed")
        self._fh.write(jsonl_line(record))
        self._fh.flush()
        self.lines += 1

    def close(self) -> None:
        """Flush and close (stdout is flushed, not closed). Idempotent."""
        if self._fh is None:
            return
        self._fh.flush()
        if self._owned:
            os.fsync(self._fh.fileno())
            self._fh.close()
        self._fh = None

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# -- reading -----------------------------------------------------------------------------------
Expected = type | tuple[type, ...] | None  # the top-level type a reader checks (dict, list, ...)


def _text(path: str | Path, what: str, error: type[OvdetError]) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"cannot read {what} {path}: file not found") from None
    except IsADirectoryError:
        raise error(f"cannot read {what} {path}: it is a folder") from None
    except UnicodeDecodeError:
        raise error(f"cannot read {what} {path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or first_line(exc)}") from exc


def read_json(path: str | Path, what: str = "JSON file", expect: Expected = None,
              error: type[OvdetError] = DataFileError) -> Any:
    """A JSON file's content; `expect` (e.g. dict or list) checks the top-level type; problems
    raise `error` (a `DataFileError` by default) with one line."""
    try:
        data = json.loads(_text(path, what, error))
    except json.JSONDecodeError as exc:
        raise error(f"cannot read {what} {path}: it is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                    f"{exc.msg})") from exc
    return _checked(data, path, what, expect, error)


def read_yaml(path: str | Path, what: str = "YAML file", expect: Expected = None,
              error: type[OvdetError] = DataFileError) -> Any:
    """A YAML (or JSON, which YAML reads too) file's content; `expect` checks the top level."""
    import yaml

    try:
        data = yaml.safe_load(_text(path, what, error))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1}" if mark is not None else " ("
        raise error(f"cannot read {what} {path}: it is not valid YAML{where}: "
                    f"{getattr(exc, 'problem', None) or first_line(exc)})") from exc
    return _checked(data, path, what, expect, error)


def read_jsonl(path: str | Path, what: str = "JSONL file", partial_tail: bool = False,
               error: type[OvdetError] = DataFileError) -> list[Any]:
    """The records of a JSONL file. `partial_tail`: a last line cut short by a crash (no final
    newline and not valid JSON) is dropped instead of refused, as a resumed run expects."""
    text = _text(path, what, error)
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if partial_tail and number == len(lines):  # the last line has no newline: cut short
                break
            raise error(f"cannot read {what} {path}: line {number} is not valid JSON ({exc.msg})") from exc
    return records


def read_records(path: str | Path, what: str = "results file", error: type[OvdetError] = DataFileError) -> list[Any]:
    """A list of records from a JSON list (`ovdet detect --json`) or a JSONL file (`ovdet video
    --jsonl`), told apart by the first character."""
    if not _text(path, what, error).lstrip().startswith("["):
        return read_jsonl(path, what, error=error)
    return read_json(path, what, expect=list, error=error)


def _checked(data: Any, path: str | Path, what: str, expect: Expected, error: type[OvdetError]) -> Any:
    if expect is not None and not isinstance(data, expect):
        kinds = expect if isinstance(expect, tuple) else (expect,)
        names = {dict: "a mapping of keys to values", list: "a list"}
        wanted = " or ".join(names.get(k, k.__name__) for k in kinds if k is not type(None))  # empty: no need to say
        raise error(f"cannot read {what} {path}: expected {wanted} at the top, got {type(data).__name__}")
    return data
