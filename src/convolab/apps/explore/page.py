"""The explorer's HTML page: served with its script and style, or written as one self-contained snapshot.

The page, its script and its style ship in the package (``static/``); nothing
is fetched from another host. The served page reads the controls' defaults and
initial values from a JSON block and asks the server for every number. The
snapshot inlines the script and style and carries one configuration's numbers,
every cell's details included, so that it works from a ``file://`` URL with no
server and no network (its Content-Security-Policy allows no connection at all).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any, Mapping

from .controls import CONTROLS

__all__ = ["STATIC_FILES", "static_file", "page_html", "snapshot_html"]

#: The files the server hands out besides the page, and their content types.
STATIC_FILES = {"explore.js": "text/javascript; charset=utf-8", "explore.css": "text/css; charset=utf-8"}

#: The snapshot may run its own inline script and style, and reach nothing.
SNAPSHOT_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; "
                   "base-uri 'none'; form-action 'none'")


def static_file(name: str) -> bytes:
    """The bytes of one of the page's files (``index.html`` or one of :data:`STATIC_FILES`)."""
    return resources.files(__package__).joinpath("static", name).read_bytes()


def _json_block(data: Any) -> str:
    """``data`` as JSON safe inside a ``<script>`` element (no ``</script>`` can end it early)."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return f'<script id="explore-data" type="application/json">{text}</script>'


def _fill(data: Mapping[str, Any], *, inline: bool) -> str:
    page = static_file("index.html").decode()
    if inline:
        style = f"<style>\n{static_file('explore.css').decode()}</style>"
        script = f"<script>\n{static_file('explore.js').decode()}</script>"
        policy = f'<meta http-equiv="Content-Security-Policy" content="{SNAPSHOT_POLICY}">'
    else:
        style, script, policy = '<link rel="stylesheet" href="explore.css">', '<script src="explore.js"></script>', ""
    for marker, text in (("<!--CSP-->", policy), ("<!--STYLE-->", style), ("<!--DATA-->", _json_block(data)),
                         ("<!--SCRIPT-->", script)):
        page = page.replace(marker, text, 1)
    return page


def page_html(initial: Mapping[str, str] | None = None) -> str:
    """The served page: the controls' defaults, its initial values (from the command's flags), no numbers.

    >>> '"stride":"2"' in page_html({"stride": "2"})
    True
    """
    return _fill({"mode": "server", "defaults": CONTROLS, "initial": dict(initial or {})}, inline=False)


def snapshot_html(values: Mapping[str, str]) -> str:
    """A self-contained page of one configuration, with every number and every cell's details.

    Raises
    ------
    ControlError
        The controls, as :func:`~convolab.apps.explore.controls.parse_controls`.
    ValueError
        More details than :data:`~convolab.apps.explore.model.SNAPSHOT_MAX_TERMS` terms.
    """
    from .model import problem

    found = problem(values)
    data = {"mode": "snapshot", "defaults": CONTROLS, "initial": found.config.texts, "view": found.view(),
            "details": found.all_details()}
    return _fill(data, inline=True)
