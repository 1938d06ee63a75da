"""`ovdet serve`: the detector over HTTP (FastAPI app in app.py, run by uvicorn).

SIGTERM / SIGINT: stop accepting connections, let in-flight requests finish, exit 0 (a
second SIGINT forces the exit).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import socket
import sys

from ..kit.parser import UsageError
from ..kit.options import add_model_options, config_overrides
from ..errors import EXIT_OK, OvdetError, first_line


def add_parser(sub, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = sub.add_parser("serve", parents=[common], help="serve the detector over HTTP (API and web page)",
                       description="HTTP API (POST /v1/detect, /v1/classify; /docs) and a web page at /, "
                                   "batching images of concurrent requests through the image tower.")
    add_model_options(p)
    g = p.add_argument_group("server")
    g.add_argument("--host", metavar="HOST", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    g.add_argument("--port", metavar="PORT", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    g.add_argument("--api-key", metavar="KEY", default=None,
                   help="require 'Authorization: Bearer KEY' on /v1/* and /metrics (default: $OVDET_API_KEY)")
    g.add_argument("--classify-model", metavar="M", help="CLIP preset or checkpoint for /v1/classify "
                   "(default: the detector's own CLIP when it is a clip-* preset, else none)")
    g.add_argument("--max-batch", metavar="B", type=int,
                   help="images per image-tower pass across requests (default: 8 on a GPU, 1 on a CPU)")
    g.add_argument("--batch-wait-ms", metavar="W", type=float, default=10.0,
                   help="how long a request waits for others to share its pass (default 10)")
    g.add_argument("--max-image-mb", metavar="N", type=float, default=20.0, help="largest image file (default 20 MB)")
    # --max-pixels is a model option (add_model_options): the server refuses larger uploads from
    # the header, with its own tighter default when the flag is not given
    g.add_argument("--max-classes", metavar="N", type=int, default=1300, help="class names + negatives per request (default 1300)")
    g.add_argument("--max-queue", metavar="N", type=int, default=64, help="requests waiting before 503 (default 64)")
    g.add_argument("--timeout", metavar="S", type=float, default=60.0, help="seconds a request may wait for its answer (504 after)")
    g.add_argument("--db", metavar="DIR", help="an `ovdet index` database: adds POST /v1/search and a search box to the "
                   "page (serve it with the model it was built with)")
    return p


SERVE_MAX_PIXELS = 50_000_000  # an upload's width x height unless --max-pixels says otherwise


def _settings(args: argparse.Namespace):
    from .limits import ServeSettings

    key = args.api_key if args.api_key is not None else os.environ.get("OVDET_API_KEY") or None
    try:
        return ServeSettings(max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms, max_image_mb=args.max_image_mb,
                             max_pixels=args.max_pixels or SERVE_MAX_PIXELS, max_classes=args.max_classes, max_queue=args.max_queue,
                             timeout=args.timeout, api_key=key)
    except ValueError as exc:
        raise UsageError(f"ovdet serve: {exc}") from exc


def _listen(host: str, port: int) -> socket.socket:
    """Bind before loading anything: a taken port is a one-line error, not a late crash."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OvdetError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        import uvicorn  # noqa: F401 - checked here for a one-line error
        import fastapi  # noqa: F401
    except ImportError as exc:
        raise OvdetError(f"ovdet serve needs the serve extra: pip install 'ovdet[serve]' ({exc.name} is missing)") from exc
    sock = _listen(args.host, args.port)  # a taken port fails before anything heavy is imported
    try:
        return _serve(args, settings, sock)
    finally:
        sock.close()


def _serve(args: argparse.Namespace, settings, sock: socket.socket) -> int:
    from ..detector import resolve_config
    from .app import ServedModels, create_app

    # configuration errors (unknown preset, bad YAML) fail here, before any model is loaded
    cfg = resolve_config(args.model, device=args.device, **config_overrides(args))
    if args.db:  # a missing index or one of another model: a one-line error before anything loads
        from ..index.build import index_identity
        from ..index.store import IndexDatabaseError, Store, check_model

        manifest = Store.read_manifest(args.db)
        if manifest is None:
            raise IndexDatabaseError(f"no ovdet index at {args.db}: build one with `ovdet index IMAGES --db {args.db}`")
        check_model(manifest, index_identity(cfg), args.db)
    clf_cfg = resolve_config(args.classify_model, device=args.device) if args.classify_model else None
    if not _is_loopback(args.host) and settings.api_key is None:
        print(f"ovdet: warning: listening on {args.host} without an API key: anyone who can reach it may use it "
              "(set --api-key or $OVDET_API_KEY)", file=sys.stderr)

    def load() -> ServedModels:
        from ..classify import Classifier
        from ..detector import Detector

        detector = Detector.from_config(cfg)
        if clf_cfg is not None:
            return ServedModels(detector, Classifier.from_config(clf_cfg), str(args.classify_model))
        if cfg.backend == "clip":  # the detector's own CLIP classifies too: no second model
            clip = detector.backend.clip  # with the detector's templates, resolved once
            return ServedModels(detector, Classifier(clip, detector.templates, detector.vocabulary.cache,
                                                     batch_size=cfg.batch_size), cfg.name or str(cfg.weights))
        return ServedModels(detector)

    failure: list[BaseException] = []
    server = _server(create_app(load, settings, on_load_error=lambda exc: _stop(server, failure, exc), db=args.db), args)
    host, port = sock.getsockname()[:2]
    url_host = f"[{host}]" if ":" in host else host
    print(f"ovdet: loading {args.model}; serving http://{url_host}:{port} (API docs at /docs; Ctrl-C stops)",
          file=sys.stderr, flush=True)
    server.run(sockets=[sock])
    if failure:
        exc = failure[0]
        raise exc if isinstance(exc, OvdetError) else OvdetError(f"cannot load the model: {first_line(exc)}")
    print("ovdet: server stopped", file=sys.stderr)
    return EXIT_OK


def _stop(server, failure: list[BaseException], exc: BaseException) -> None:
    failure.append(exc)
    server.should_exit = True


def _server(app, args: argparse.Namespace):
    import uvicorn

    class GracefulServer(uvicorn.Server):
        """uvicorn re-raises a captured SIGTERM/SIGINT after its graceful shutdown (so the
        process dies of the signal); a finished graceful shutdown is a clean exit here."""

        @contextlib.contextmanager
        def capture_signals(self):
            with super().capture_signals():
                yield
                self._captured_signals.clear()  # uvicorn's own list: nothing left to re-raise

    config = uvicorn.Config(app, log_level="debug" if args.debug else "info", timeout_graceful_shutdown=None,
                            lifespan="on")
    return GracefulServer(config)
