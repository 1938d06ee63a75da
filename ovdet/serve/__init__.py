"""`ovdet serve`: the detector over HTTP, batching images across requests.

    app.py      FastAPI app factory (routes, JSON errors, auth, middleware)
    batcher.py  the queue and the worker thread that batches image passes across requests
    limits.py   settings, ApiError, decoding uploads within byte and pixel limits
    metrics.py  Prometheus metrics
    command.py  the `ovdet serve` subcommand (uvicorn, graceful SIGTERM)
    static/     the web page (plain HTML, JS, CSS; nothing loaded from the network)

Nothing here is imported by `ovdet --help` except command.py, which loads FastAPI lazily.
"""
