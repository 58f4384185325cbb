"""``convolab explore`` in a real browser: Debian's Chromium, driven by Playwright.

The browser is never downloaded here: Playwright launches the system's
``chromium`` (``.ci/run`` installs it with apt-get). Where Playwright is not
installed or Chromium cannot start, every test skips with the reason.

One browser and one server for the module; each test opens a page.
"""

from __future__ import annotations

import os
import re
import shutil
from urllib.parse import urlencode

import numpy as np
import pytest

import convolab as cl
from convolab.apps.explore.page import snapshot_html
from convolab.apps.explore.server import make_server, serve
from test_explore import CONFIGS, arrays, close, equation_value, expected_window, library_output

#: Where Debian's chromium package puts the browser; CHROMIUM overrides it.
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"

#: Playwright waits at most this long (ms) for the page: every answer takes milliseconds.
WAIT_MS = 10_000


try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the fixture below skips, saying so
    expect = sync_playwright = None


@pytest.fixture(scope="module")
def browser():
    if sync_playwright is None:
        pytest.skip("Playwright is not installed (pip install playwright; it drives the system's Chromium)")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM)")
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=CHROMIUM)
        except Exception as error:  # noqa: BLE001 (whatever stops the browser, the reason is printed)
            pytest.skip(f"Chromium at {CHROMIUM} cannot start: {str(error).splitlines()[0]}")
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def server():
    running = make_server(port=0)
    serve(running, in_thread=True)
    yield running
    running.shutdown()
    running.server_close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(WAIT_MS)
    errors = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert errors == []  # no script error on any page


def open_config(page, server, config: dict[str, str]) -> None:
    """Open the page on a configuration (the page reads its controls from the URL) and wait for the output."""
    page.goto(server.url + "?" + urlencode(config))
    page.wait_for_selector('[data-testid="out-cell"]')


def wait_for_detail(page, heading: str) -> None:
    """Wait until the detail panel takes apart the cell whose heading starts with ``heading``.

    Through locators: the page's Content-Security-Policy refuses the string evaluation wait_for_function uses.
    """
    expect(page.locator("#detail h3").first).to_have_text(re.compile("^" + re.escape(heading)))


def hover_output(page, at: str) -> dict:
    """Hover output ``at``; once its details are drawn, the window's cells and the equation."""
    page.hover(f'[data-testid="out-cell"][data-index="{at}"]')
    wait_for_detail(page, f"output[{at}]")
    window = page.eval_on_selector_all('[data-testid="in-cell"].in-window', "cells => cells.map(c => c.dataset.index)")
    return {"window": set(window), "equation": page.inner_text('[data-testid="equation"]')}


@pytest.mark.parametrize("name", ["stride2-padding1-dilation2", "stride2-padding1", "dilation2", "groups", "flip",
                                  "transposed"])
def test_hovering_an_output_shows_its_window_and_the_library_value(page, server, name):
    config = CONFIGS[name]
    open_config(page, server, config)
    out = library_output(config)
    cells = [np.unravel_index(i, out.shape) for i in np.linspace(0, out.size - 1, min(out.size, 5)).astype(int)]
    for at in cells:
        shown = hover_output(page, ",".join(map(str, at)))
        assert shown["window"] == expected_window(config, at)
        assert close(shown["equation"].rsplit("= ", 1)[1], out[at])
    assert page.get_attribute('[data-testid="out-cell"][data-index="0,0,0"]', "tabindex") is not None


def test_the_done_when_case_matches_conv2d_everywhere(page, server):
    """Their own 5x5, stride 2, padding 1, dilation 2: every output shows cl.conv2d's number."""
    config = CONFIGS["stride2-padding1-dilation2"]
    x, w, params = arrays(config)
    expected = cl.conv2d(x, w, **params)
    open_config(page, server, config)
    for at in np.ndindex(*expected.shape):
        assert equation_value(hover_output(page, ",".join(map(str, at)))["equation"]) == expected[at]


def test_changing_controls_redraws(page, server):
    open_config(page, server, {})
    assert len(page.query_selector_all('[data-testid="out-cell"]')) == 25  # 5x5, padding 1
    page.fill('[name="stride"]', "2")
    expect(page.locator('[data-testid="out-cell"]')).to_have_count(9)
    page.check('[name="flip"]')
    expect(page.locator("#describe")).to_contain_text("flip")
    page.fill('[name="input"]', "1 2 3; 4 5 6; 7 8 9")  # typing numbers switches the input to them
    expect(page.locator('[data-testid="out-cell"]')).to_have_count(4)
    assert page.is_checked('[name="input_from"][value="text"]')
    x, w = np.arange(1, 10).reshape(1, 3, 3), np.array([[[[1, 0, 2], [0, 1, 0], [-1, 0, 1]]]])
    expected = cl.conv2d(x, w, stride=2, padding=1, flip=True)
    assert equation_value(hover_output(page, "0,1,1")["equation"]) == expected[0, 1, 1]
    assert "stride=2" in page.url  # the configuration is in the address, to bookmark or share


def test_an_invalid_setting_shows_the_message_and_breaks_nothing(page, server):
    open_config(page, server, {})
    page.fill('[name="stride"]', "0")
    message = page.locator('[data-error-for="stride"]')
    message.wait_for(state="visible")
    assert message.inner_text() == "conv2d: stride must be >= 1 in every dimension, got 0"
    assert page.get_attribute('[name="stride"]', "aria-invalid") == "true"
    assert len(page.query_selector_all('[data-testid="out-cell"]')) == 25  # the last good drawing stays
    assert equation_value(hover_output(page, "0,0,0")["equation"]) == cl.conv2d(
        np.arange(1, 26).reshape(1, 5, 5), np.array([[[[1, 0, 2], [0, 1, 0], [-1, 0, 1]]]]), padding=1)[0, 0, 0]
    page.fill('[name="size"]', "99,99")
    expect(page.locator('[data-error-for="size"]')).to_contain_text("at most 4,096 cells")
    page.fill('[name="size"]', "5,5")
    page.fill('[name="stride"]', "1")
    message.wait_for(state="hidden")


def test_backward_view_the_two_sums_agree(page, server):
    config = CONFIGS["stride2-padding1"]
    x, w, params = arrays(config)
    grad_input = cl.grad.conv2d_input(x.shape, w, np.ones(library_output(config).shape, dtype=x.dtype), **params)
    open_config(page, server, config)
    page.click("#tab-backward")
    for at in ("0,0,0", "0,1,2", "0,4,4"):
        page.hover(f'[data-testid="in-cell"][data-index="{at}"]')
        wait_for_detail(page, f"∂L/∂x[{at}]")
        scatter = equation_value(page.inner_text('[data-testid="scatter-equation"]'))
        full = equation_value(page.inner_text('[data-testid="full-equation"]'))
        assert scatter == full == grad_input[tuple(map(int, at.split(",")))]
        readers = page.eval_on_selector_all('[data-testid="out-cell"].reads', "cells => cells.length")
        assert readers >= 1
    page.hover('[data-testid="w-cell"][data-index="0,0,1,1"]')
    page.wait_for_selector('[data-testid="weight-equation"]')
    grad_weight = cl.grad.conv2d_weight(x, w.shape, np.ones((1, 3, 3), dtype=x.dtype), **params)
    assert equation_value(page.inner_text('[data-testid="weight-equation"]')) == grad_weight[0, 0, 1, 1]


def test_keyboard_and_play(page, server):
    open_config(page, server, CONFIGS["stride2-padding1-dilation2"])
    page.focus('[data-testid="out-cell"][data-index="0,0,0"]')
    wait_for_detail(page, "output[0,0,0]")
    page.keyboard.press("ArrowRight")
    wait_for_detail(page, "output[0,0,1]")
    assert page.evaluate("document.activeElement.dataset.index") == "0,0,1"
    page.click('[data-testid="step"]')
    wait_for_detail(page, "output[0,1,0]")
    page.select_option('[aria-label="play speed"]', "350")
    page.click('[data-testid="play"]')
    wait_for_detail(page, "output[0,0,0]")
    assert page.get_attribute('[data-testid="play"]', "aria-pressed") == "true"
    page.click('[data-testid="play"]')
    assert page.get_attribute('[data-testid="play"]', "aria-pressed") == "false"


def test_offline_snapshot_works_from_a_file_with_the_network_blocked(browser, tmp_path):
    config = CONFIGS["stride2-padding1-dilation2"]
    path = tmp_path / "page.html"
    path.write_text(snapshot_html(config), encoding="utf-8")
    context = browser.new_context()
    requested = []

    def only_files(route):
        requested.append(route.request.url)
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            route.abort()

    context.route("**/*", only_files)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(path.as_uri())
    page.wait_for_selector('[data-testid="out-cell"]')
    x, w, params = arrays(config)
    expected = cl.conv2d(x, w, **params)
    for at in np.ndindex(*expected.shape):
        shown = hover_output(page, ",".join(map(str, at)))
        assert shown["window"] == expected_window(config, at)
        assert equation_value(shown["equation"]) == expected[at]
    page.click("#tab-backward")
    page.hover('[data-testid="in-cell"][data-index="0,1,1"]')
    page.wait_for_selector('[data-testid="full-equation"]')
    assert page.inner_text('[data-testid="scatter-equation"]').rsplit("=", 1)[1] == \
        page.inner_text('[data-testid="full-equation"]').rsplit("=", 1)[1]
    assert page.is_disabled('[name="stride"]')  # one configuration: its controls show it, read-only
    context.close()
    assert errors == [] and all(url.startswith("file://") for url in requested), requested


def test_transposed_view_shows_the_spread_input_and_size(page, server):
    config = CONFIGS["transposed"]
    open_config(page, server, config)
    assert page.get_attribute("#tab-transposed", "aria-selected") == "true"
    assert page.is_disabled("#tab-backward")
    inserted = page.eval_on_selector_all('[data-testid="in-cell"].role-inserted', "cells => cells.length")
    assert inserted > 0
    assert page.inner_text(".panel .sizes") == "height: (3 - 1)·2 - 1 - 1 + 1·(2 - 1) + 1 + 1 = 5"
    assert equation_value(hover_output(page, "1,4,4")["equation"]) == library_output(config)[1, 4, 4]
