"""``WebServing``: expose Python functions as a small JSON-over-HTTP API, with
bert4keras 0.11.5's constructor and ``route`` / ``start`` calls, on Flask
(0.11.5 used bottle).  Flask is an optional dependency:
``pip install 'bert4keras[serve]'``.

``RequestBatcher`` (not in 0.11.5) gathers the calls that concurrent requests
make into batches, so that a model runs once for many requests."""

import concurrent.futures
import json
import queue
import threading
import time

import numpy as np


def _jsonable(value):
    """``json.dumps`` fallback for NumPy scalars and arrays (model outputs)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError("%r of type %s is not JSON serializable" % (value, type(value).__name__))


class WebServing:
    """A minimal web API around Python functions, for demos and tests.

    Every route answers a JSON object ``{"code": c, "desc": d, "data": x}``:
    ``code`` 0 with ``data = func(**arguments)`` on success, 1 when a
    required argument is missing (or its conversion fails), 2 when ``func``
    raised (``desc`` holds the error message).  Arguments come from the query
    string for ``GET`` and from the form body for ``POST``; they arrive as
    strings and are converted by the function declared for each.

    Usage (as in 0.11.5)::

        arguments = {'text': (None, True), 'n': (int, False)}
        web = WebServing(port=8864)
        web.route('/gen_synonyms', gen_synonyms, arguments)
        web.start()  # blocks; http://127.0.0.1:8864/gen_synonyms?text=...

    Differences from 0.11.5: Flask and Werkzeug's threaded development server
    replace bottle; ``server`` is accepted and ignored (for production, serve
    the WSGI application ``web.app`` with a WSGI server such as gunicorn or
    waitress); no TensorFlow graph or session handling (Keras 3 runs
    eagerly); NumPy values in ``data`` are converted to JSON; the response has
    the ``application/json`` content type; a failing argument conversion is
    answered with code 1 instead of an HTTP 500 page.  Added:
    ``start(block=False)`` serves from a background thread and :meth:`stop`
    ends it; ``port=0`` picks a free port, readable from ``web.port`` after
    ``start``.

    Args:
        host: interface to listen on (``'127.0.0.1'`` for this machine only).
        port: TCP port (0: any free port).
        server: 0.11.5's bottle server name; ignored.

    Raises:
        ImportError: Flask is not installed.
    """

    def __init__(self, host="0.0.0.0", port=8000, server="paste"):
        try:
            import flask
        except ImportError as error:
            raise ImportError("WebServing needs Flask: pip install 'bert4keras[serve]'"
                              ) from error
        self.host = host
        self.port = port
        self.server = server
        self.flask = flask
        self.app = flask.Flask("bert4keras.snippets.WebServing")
        self._server = None
        self._thread = None

    def _respond(self, outputs):
        body = json.dumps(outputs, ensure_ascii=False, default=_jsonable)
        return self.flask.Response(body, mimetype="application/json")

    def wraps(self, func, arguments, method="GET"):
        """Turn ``func`` into a request handler (a function of no argument).

        Args:
            func: called as ``func(**kwargs)``; its result must be JSON
                serializable (NumPy arrays and scalars are converted).
            arguments: ``{name: (convert, required)}``: ``convert`` turns the
                string received into the value passed (``None``: keep the
                string); ``required`` makes a missing argument an error
                (code 1), else a missing argument is not passed at all.
            method: ``'GET'`` (query string) or ``'POST'`` (form body).

        Returns:
            The handler, returning a ``flask.Response``.
        """
        request = self.flask.request

        def handler():
            outputs = {"code": 0, "desc": "succeeded", "data": {}}
            received = request.args if method == "GET" else request.form
            kwargs = {}
            for name, spec in arguments.items():
                convert, required = spec[0], spec[1]
                value = received.get(name)
                if value is None:
                    if required:
                        outputs.update(code=1, desc='lack of "%s" argument' % name)
                        return self._respond(outputs)
                    continue
                if convert is not None:
                    try:
                        value = convert(value)
                    except Exception as error:
                        outputs.update(code=1, desc='bad "%s" argument: %s' % (name, error))
                        return self._respond(outputs)
                kwargs[name] = value
            try:
                outputs["data"] = func(**kwargs)
                return self._respond(outputs)
            except Exception as error:  # the client gets the message, the server goes on
                outputs.update(code=2, desc=str(error), data={})
                return self._respond(outputs)

        return handler

    def route(self, path, func, arguments, method="GET"):
        """Serve ``func`` at ``path`` (e.g. ``'/gen_synonyms'``); arguments as
        in :meth:`wraps`.  Raises ``ValueError`` for a method other than GET/POST."""
        method = method.upper()
        if method not in ("GET", "POST"):
            raise ValueError("WebServing.route(%r): method must be 'GET' or 'POST', got %r"
                             % (path, method))
        handler = self.wraps(func, arguments, method)
        self.app.add_url_rule(path, endpoint="%s %s" % (method, path), view_func=handler,
                              methods=[method])

    def start(self, block=True):
        """Listen on ``host:port`` and answer requests (one thread per request).

        Args:
            block: ``True`` (0.11.5) serves until the process is interrupted;
                ``False`` serves from a daemon thread and returns at once, the
                socket already listening; end it with :meth:`stop`.

        Raises:
            OSError: the port is taken.
        """
        from werkzeug.serving import make_server

        server = self._server = make_server(self.host, self.port, self.app, threaded=True)
        self.port = server.server_port
        if block:
            try:
                server.serve_forever()
            finally:
                server.server_close()
                if self._server is server:
                    self._server = None
        else:
            self._thread = threading.Thread(target=server.serve_forever,
                                            name="WebServing:%d" % self.port, daemon=True)
            self._thread.start()

    def stop(self):
        """Stop a server started with ``start(block=False)`` and free its port."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


class RequestBatcher:
    """Gather single calls from many threads into batched calls of ``func``.

    A web server answers each request in its own thread; a model is much
    faster on one batch of N inputs than on N batches of one.  Each thread
    calls ``batcher(item)`` and blocks; a worker thread takes the first
    waiting item, keeps collecting until it has ``max_batch`` items or
    ``max_wait`` seconds have passed since that first item, calls
    ``func(items)`` once and hands every caller its own result.  Items that
    arrive while ``func`` runs form the next batch.

    Usage::

        batcher = RequestBatcher(lambda texts: encode(texts), max_batch=32, max_wait=0.01)
        web.route('/embed', lambda text: batcher(text), {'text': (None, True)})

    Args:
        func: ``list of items -> list of results`` of the same length, in
            the same order (e.g. texts -> embeddings); called from the worker
            thread only, so it need not be thread-safe.
        max_batch: most items per call (>= 1).
        max_wait: seconds to wait for more items after the first one of a
            batch arrived (0: take only what is already waiting).

    Attributes:
        batch_sizes: the size of every batch ``func`` was called with, in
            order (to check or log how well requests were batched).

    Raises:
        ValueError: ``max_batch < 1`` or ``max_wait < 0``.

    An exception raised by ``func`` (or a result list of the wrong length)
    is raised in every caller of that batch; the worker goes on.  Call
    :meth:`close` (or use ``with``) to stop the worker; later calls raise
    ``RuntimeError``.
    """

    _STOP = object()

    def __init__(self, func, max_batch=32, max_wait=0.01):
        if int(max_batch) < 1:
            raise ValueError("RequestBatcher: max_batch must be >= 1, got %r" % (max_batch,))
        if max_wait < 0:
            raise ValueError("RequestBatcher: max_wait must be >= 0 seconds, got %r"
                             % (max_wait,))
        self.func, self.max_batch, self.max_wait = func, int(max_batch), float(max_wait)
        self.batch_sizes = []
        self._queue = queue.Queue()
        self._closed = False
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._run, name="RequestBatcher", daemon=True)
        self._worker.start()

    @property
    def pending(self):
        """Number of items waiting for the next batch (approximate while busy)."""
        return self._queue.qsize()

    def submit(self, item):
        """Queue ``item``; returns a ``concurrent.futures.Future`` of its result.

        Raises:
            RuntimeError: the batcher is closed.
        """
        future = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("RequestBatcher is closed")
            self._queue.put((item, future))
        return future

    def __call__(self, item, timeout=None):
        """The result of ``item`` (blocks until its batch ran; ``timeout``
        seconds at most, then ``concurrent.futures.TimeoutError``)."""
        return self.submit(item).result(timeout)

    def _collect(self, first):
        batch = [first]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            try:
                remaining = deadline - time.monotonic()
                entry = self._queue.get(timeout=remaining) if remaining > 0 \
                    else self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is self._STOP:
                self._queue.put(entry)  # seen again after this batch
                break
            batch.append(entry)
        return batch

    def _run(self):
        while True:
            entry = self._queue.get()
            if entry is self._STOP:
                return
            batch = self._collect(entry)
            self.batch_sizes.append(len(batch))
            items = [item for item, _ in batch]
            try:
                results = list(self.func(items))
                if len(results) != len(items):
                    raise ValueError("RequestBatcher: func returned %d results for %d items"
                                     % (len(results), len(items)))
            except Exception as error:  # every caller of this batch gets it
                for _, future in batch:
                    future.set_exception(error)
                continue
            for (_, future), result in zip(batch, results):
                future.set_result(result)

    def close(self):
        """Answer the items already queued, then stop the worker thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(self._STOP)
        self._worker.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
