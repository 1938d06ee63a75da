"""Running the app in a background thread of this process (notebooks, tests, benchmarks):

    with serve_in_thread(create_app(load, settings)) as url:
        httpx.post(f"{url}/v1/detect", ...)

uvicorn installs no signal handlers outside the main thread; leaving the block shuts the
server down gracefully (in-flight requests finish, the batcher drains).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Iterator


@contextlib.contextmanager
def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0, ready_timeout: float = 120.0,
                    wait_ready: bool = True) -> Iterator[str]:
    """Serve `app` on host:port (0: a free port) and yield its base URL ("http://host:port");
    with `wait_ready`, only once /readyz says the model is loaded."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="ovdet-serve", daemon=True)
    thread.start()
    url = f"http://{host}:{sock.getsockname()[1]}"
    try:
        deadline = time.monotonic() + ready_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        service = app.state.service
        while wait_ready and service.batcher is None:
            if service.error is not None:
                raise RuntimeError(f"the model did not load: {service.error}") from service.error
            if time.monotonic() > deadline:
                raise RuntimeError("the model did not load in time")
            time.sleep(0.01)
        yield url
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()
