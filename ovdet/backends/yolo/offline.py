"""Keeping ultralytics offline: no DNS probes, telemetry, downloads or pip installs.

Every ovdet module that touches ultralytics calls `ultralytics_offline()` first. Only
`download_yolo_asset` (files.py, for `ovdet weights download`) lifts the guard, inside
`downloads_allowed()`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

from ...errors import WeightsNotFoundError, first_line

# What ultralytics reads from the environment when it is first imported (ultralytics/utils):
#   YOLO_OFFLINE=1      `ONLINE = is_online()` is False without the DNS look-ups it otherwise
#                       makes at import (one.one.one.one, dns.google; slow where DNS hangs).
#                       ONLINE False disables the Google Analytics events (utils/events.py),
#                       Sentry error reports, the PyPI "new version available" check, and makes
#                       a failed download give up at once instead of retrying 5 + 10 + 20 s.
#   YOLO_AUTOINSTALL=0  `check_requirements` never runs `pip install` / `uv pip install`; it
#                       would otherwise install `clip` from GitHub when ultralytics.nn.text_model
#                       is imported, or any module a checkpoint's pickle names.
_OFFLINE_ENV = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}

# Ultralytics functions that reach the network for files; each is replaced by a guard.
_GUARDED = ("safe_download", "get_github_assets", "is_url")

BLOCKED_DOWNLOADS: list[str] = []  # URLs ultralytics tried to fetch and the guard refused
_originals: dict[str, object] = {}
_guard_lock = threading.Lock()
_allow_depth = 0  # > 0 inside `downloads_allowed()` (only `download_yolo_asset` opens it)


def _blocked(what: str) -> WeightsNotFoundError:
    BLOCKED_DOWNLOADS.append(what)
    return WeightsNotFoundError(
        f"ultralytics tried to download {what}; ovdet keeps ultralytics offline: put the file in weights/ "
        f"(`ovdet weights download <preset>` where the network is reachable) and point the config at it"
    )


def _guarded_safe_download(*args, **kwargs):
    if _allow_depth:
        return _originals["safe_download"](*args, **kwargs)
    raise _blocked(str(args[0] if args else kwargs.get("url", "")).split("?", 1)[0])


def _guarded_get_github_assets(*args, **kwargs):
    if _allow_depth:
        return _originals["get_github_assets"](*args, **kwargs)
    raise _blocked(f"the release list of github.com/{args[0] if args else kwargs.get('repo', 'ultralytics/assets')}")


def _guarded_is_url(url, check: bool = False):
    if check and not _allow_depth:  # check=True sends an HTTP HEAD; offline nothing is reachable
        BLOCKED_DOWNLOADS.append(f"HEAD {str(url).split('?', 1)[0]}")
        return False
    return _originals["is_url"](url, check=check)


_GUARDS = {"safe_download": _guarded_safe_download, "get_github_assets": _guarded_get_github_assets, "is_url": _guarded_is_url}


def ultralytics_offline():
    """Make ultralytics safe to use offline; call before building or running any ultralytics model.

    Idempotent and process-wide. Returns the `ultralytics` module.

    Why each step (read from ultralytics 8.4 sources):
      - Environment, read once when ultralytics is first imported: YOLO_OFFLINE=1 (no DNS
        probe at import; telemetry events, Sentry and the PyPI update check stay off because
        they all require `ONLINE`) and YOLO_AUTOINSTALL=0 (no `pip install` of missing
        requirements). They are forced, not defaulted: ovdet never wants ultralytics online.
      - The same switches patched on the imported modules (`ultralytics.utils.ONLINE`,
        `ultralytics.utils.checks.ONLINE/AUTOINSTALL`, `ultralytics.utils.events.events.enabled`),
        in case the host program imported ultralytics before ovdet set the environment.
      - Downloads are refused, not just made to fail fast: `safe_download` (every weight,
        font and asset file: `attempt_download_asset`, `check_font`, `check_file` end there),
        `get_github_assets` (GitHub API release listing) and `is_url(check=True)` (an HTTP
        HEAD) are replaced by guards on `ultralytics.utils.downloads` and on every already
        imported ultralytics module that bound them by name. A refused download raises
        `WeightsNotFoundError` naming the URL (and is recorded in `BLOCKED_DOWNLOADS`);
        `is_url(check=True)` answers False, as ultralytics does for an unreachable URL.
        `ultralytics.nn.text_model` (ultralytics' own CLIP, which downloads ViT-B/32 weights)
        is never imported by ovdet.
    Side effects ultralytics itself has at import, which this does not change: it writes its
    settings file (~/.config/Ultralytics/settings.json, or $YOLO_CONFIG_DIR), replaces
    `torch.save` by a retrying wrapper, and sets OMP_NUM_THREADS=1 in the environment when unset
    (inherited by child processes; torch's thread pool is unaffected once torch is imported).
    """
    global _originals
    for key, value in _OFFLINE_ENV.items():
        os.environ[key] = value
    import ultralytics
    import ultralytics.utils as ul_utils
    import ultralytics.utils.checks as ul_checks
    import ultralytics.utils.downloads as ul_downloads

    ul_utils.ONLINE = False
    ul_checks.ONLINE = False
    ul_checks.AUTOINSTALL = False
    events = sys.modules.get("ultralytics.utils.events")
    if events is not None:  # imported later it reads the patched ONLINE and stays disabled
        events.events.enabled = False
    with _guard_lock:
        if not _originals:
            _originals = {name: getattr(ul_downloads, name) for name in _GUARDED}
        for name in _GUARDED:
            setattr(ul_downloads, name, _GUARDS[name])
        # modules that did `from ultralytics.utils.downloads import safe_download` hold their own reference
        for mod_name, module in list(sys.modules.items()):
            if module is None or not mod_name.startswith("ultralytics"):
                continue
            for name in _GUARDED:
                if getattr(module, name, None) is _originals[name]:
                    setattr(module, name, _GUARDS[name])
    return ultralytics


@contextlib.contextmanager
def downloads_allowed():
    """Let ultralytics download (with its retries) inside this block: `ovdet weights download` only."""
    global _allow_depth
    previous = os.environ.get("YOLO_OFFLINE")
    with _guard_lock:
        _allow_depth += 1
    os.environ["YOLO_OFFLINE"] = "0"  # is_online() reads it per call: retry transient failures
    try:
        yield
    finally:
        with _guard_lock:
            _allow_depth -= 1
        if previous is None:
            os.environ.pop("YOLO_OFFLINE", None)
        else:
            os.environ["YOLO_OFFLINE"] = previous




def error_line(exc: BaseException) -> str:
    """An exception's first line without ultralytics' "ERROR ❌" decorations."""
    line = first_line(exc)
    line = line.replace("ERROR", "", 1) if line.startswith("ERROR") else line
    return line.lstrip(" ❌️⚠\ufe0f:").strip() or type(exc).__name__


__all__ = ["BLOCKED_DOWNLOADS", "downloads_allowed", "error_line", "ultralytics_offline"]
