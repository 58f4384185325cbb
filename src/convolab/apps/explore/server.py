"""The explorer's local server: the page, and the numbers for each configuration the page asks for.

Why the standard library's :mod:`http.server`: the server answers a handful
of GET requests from one browser on the same machine, each a few
milliseconds of NumPy under the size caps, with JSON. ``ThreadingHTTPServer``
does that with no dependency to install, pin or keep secure; a framework
(Flask, Starlette) would add routing and templating we do not need. It binds
to loopback (127.0.0.1) unless told otherwise.

Routes (GET or HEAD):

``/``
    The page (:func:`~convolab.apps.explore.page.page_html`).
``/explore.js``, ``/explore.css``
    Its script and style, shipped in the package (no CDN, no network).
``/api/view?<controls>``
    :meth:`~convolab.apps.explore.model.Problem.view` as JSON.
``/api/detail?<controls>&kind=out|in|weight&at=c,y,x``
    :meth:`~convolab.apps.explore.model.Problem.detail` as JSON.

A bad request gets a 4xx status and ``{"error": <convolab's one-line
message>, "control": <the control it is about, or null>}``.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Mapping
from urllib.parse import parse_qs, urlsplit

from .controls import CONTROLS, ControlError
from .page import STATIC_FILES, page_html, static_file

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "ExploreServer", "make_server", "serve"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765

#: The page's own origin only: no CDN, no other host, nothing inline but the configuration's JSON.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                           "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class ExploreServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that knows the page's initial controls; threads end with the server."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], initial: Mapping[str, str], quiet: bool = True):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6  # "::1", "::": the socket TCPServer makes must be IPv6
        super().__init__(address, _Handler)
        self.initial = dict(initial)
        self.quiet = quiet

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)  # "all": this machine's
        return f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}/"


class _Handler(BaseHTTPRequestHandler):
    server: ExploreServer
    server_version = "convolab-explore"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(send_body=False)

    def _refuse_method(self) -> None:
        self._send_json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"explore: method {self.command} is not "
                                                                 "allowed; the explorer answers GET and HEAD",
                                                        "control": None}, extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method

    def _answer(self, send_body: bool) -> None:
        self._send_body = send_body
        parts = urlsplit(self.path)
        path = parts.path
        if path == "/":
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", page_html(self.server.initial).encode())
        elif path.lstrip("/") in STATIC_FILES:
            name = path.lstrip("/")
            self._send(HTTPStatus.OK, STATIC_FILES[name], static_file(name))
        elif path in ("/api/view", "/api/detail"):
            self._api(path, parts.query)
        elif path == "/favicon.ico":
            self._send(HTTPStatus.NO_CONTENT, "image/x-icon", b"")
        else:
            self._send_error(HTTPStatus.NOT_FOUND, f"explore: path {path!r} is not one the explorer serves "
                                                   "(/, /explore.js, /explore.css, /api/view, /api/detail)")

    def _api(self, path: str, query: str) -> None:
        from .model import problem  # NumPy work: loaded with the first request, not with the command's flags

        try:
            fields = parse_qs(query, keep_blank_values=True, strict_parsing=False, max_num_fields=len(CONTROLS) + 2)
        except ValueError as error:
            self._send_error(HTTPStatus.BAD_REQUEST, f"explore: query {error}")
            return
        repeated = next((name for name, values in fields.items() if len(values) > 1), None)
        if repeated is not None:
            self._send_error(HTTPStatus.BAD_REQUEST, f"explore: {repeated} must be given once, got "
                                                     f"{len(fields[repeated])} values", repeated)
            return
        values = {name: values[0] for name, values in fields.items()}
        cell = {name: values.pop(name, None) for name in ("kind", "at")} if path == "/api/detail" else {}
        try:
            found = problem(values)
            answer = found.view() if path == "/api/view" else found.detail(cell["kind"], cell["at"])
        except ControlError as error:
            self._send_error(HTTPStatus.BAD_REQUEST, str(error), error.control)
        except (ValueError, TypeError) as error:  # the cell asked for (kind, at): convolab's message names it
            self._send_error(HTTPStatus.BAD_REQUEST, str(error), None)
        except MemoryError:
            self._send_error(HTTPStatus.UNPROCESSABLE_ENTITY, "explore: out of memory; give a smaller problem")
        else:
            self._send_json(HTTPStatus.OK, answer)

    # -- sending

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a request line over 64 KiB: 414; a malformed request: 400) as JSON too."""
        status = HTTPStatus(code)
        if status == HTTPStatus.REQUEST_URI_TOO_LONG:
            text = ("explore: the request must be at most 65,536 characters (the standard library server's limit), "
                    "got more; give fewer or shorter numbers")
        else:
            text = f"explore: {message or status.phrase}"
        self.close_connection = True
        self._send_body = self.command != "HEAD"
        self._send_json(status, {"error": text, "control": None}, extra={"Connection": "close"})

    def _send_error(self, status: HTTPStatus, message: str, control: str | None = None) -> None:
        self._send_json(status, {"error": " ".join(message.split()), "control": control})

    def _send_json(self, status: HTTPStatus, data: Any, extra: Mapping[str, str] | None = None) -> None:
        self._send(status, "application/json", json.dumps(data, separators=(",", ":")).encode(), extra)

    def _send(self, status: HTTPStatus, content_type: str, body: bytes, extra: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if getattr(self, "_send_body", True) and status != HTTPStatus.NO_CONTENT:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        if not self.server.quiet:
            sys.stderr.write(f"convolab explore: {self.address_string()} {format % args}\n")


def make_server(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, initial: Mapping[str, str] | None = None,
                quiet: bool = True) -> ExploreServer:
    """A bound, not yet serving, explorer server (``port=0``: any free port; read it from ``.url``).

    >>> server = make_server(port=0)
    >>> server.url.startswith("http://127.0.0.1:")
    True
    >>> server.server_close()
    """
    return ExploreServer((host, port), initial or {}, quiet=quiet)


def serve(server: ExploreServer, *, in_thread: bool = False) -> threading.Thread | None:
    """Serve until interrupted (Ctrl-C), or, with ``in_thread``, in a daemon thread returned to the caller."""
    if in_thread:
        thread = threading.Thread(target=server.serve_forever, name="convolab-explore", daemon=True)
        thread.start()
        return thread
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return None
