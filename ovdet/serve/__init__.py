"""`ovdet serve`: the detector over HTTP, batching images across requests.

    app.py        FastAPI app factory: routes, JSON errors, auth; assembles the modules below
    schemas.py    request bodies (pydantic) and their OpenAPI description
    parsing.py    reading a request (multipart or JSON) as FastAPI dependencies; vocabulary checks
    service.py    the models' state: background loading, the batcher, job errors -> API codes
    middleware.py body-size limit and per-route request metrics (ASGI)
    batcher.py    the queue and the worker thread that batches image passes across requests
    limits.py     settings, ApiError, decoding uploads within byte and pixel limits
    metrics.py    Prometheus metrics
    command.py    the `ovdet serve` subcommand (uvicorn, graceful SIGTERM)
    static/       the web page (plain HTML, JS, CSS; nothing loaded from the network)

Nothing here is imported by `ovdet --help` except command.py, which loads FastAPI lazily.
"""
