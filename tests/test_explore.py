"""``convolab explore`` without a browser: the controls, the model's numbers against convolab and PyTorch,
the server's answers, the snapshot and the command.

The browser tests (``test_explore_browser.py``) drive the same page in Chromium and import the configurations
and the expected windows from here.
"""

from __future__ import annotations

import ast
import http.client
import json
import re
import subprocess
import sys
from urllib.parse import urlencode

import numpy as np
import pytest

import convolab as cl
from convolab.apps.explore.controls import CONTROLS, ControlError, parse_controls
from convolab.apps.explore.model import MAX_EQUATION_TERMS, SNAPSHOT_MAX_TERMS, number, problem
from convolab.apps.explore.page import snapshot_html
from convolab.apps.explore.server import make_server, serve
from convolab.cli import main

FIVE_BY_FIVE = "; ".join(" ".join(str(5 * row + col + 1) for col in range(5)) for row in range(5))

#: The issue's configurations: stride 2 with padding 1, dilation 2, groups, flip, transposed (and a few more).
CONFIGS = {
    "stride2-padding1-dilation2": dict(input_from="text", input=FIVE_BY_FIVE, kernel="1 0 2; 0 1 0; -1 0 1",
                                       stride="2", padding="1", dilation="2"),
    "stride2-padding1": dict(input_from="text", input=FIVE_BY_FIVE, kernel="1 2; 3 -4", stride="2", padding="1"),
    "dilation2": dict(size="6,6", kernel="1 2 3; 4 5 6; 7 8 9", dilation="2"),
    "groups": dict(size="4,5", channels="4", groups="2", kernel="1 2; 3 4 | 0 1; 1 0\n-1 0; 0 1 | 2 2; 1 1",
                   padding="(1,0),(0,1)"),
    "flip": dict(size="4,4", kernel="1 2 3; 4 5 6; 7 8 9", flip="1", padding="same"),
    "reflect-floats": dict(size="4,4", kernel="0.5 -1.25; 2 0.1", padding="2", padding_mode="reflect",
                           grad_output="; ".join(["1 -2 0.5 3 1 2 0"] * 7)),
    "transposed": dict(size="3,3", channels="2", kernel="1 2; 3 4 | 5 6; 7 8\n-1 0; 1 2 | 0 1; 1 0",
                       transposed="1", stride="2", padding="1", output_padding="1"),
    "transposed-groups-dilation": dict(size="3,2", channels="2", groups="2", kernel="1 2; 3 4\n5 6; 7 8",
                                       transposed="1", stride="2", dilation="2", padding="(0,1),(1,0)"),
}


def _numbers(text: str) -> list:
    """``"1 2; 3 4 | 5 6; 7 8"`` as nested lists (channels, rows, values): ints, or floats if any has a point."""
    kind = float if "." in text else int
    return [[[kind(v) for v in row.split()] for row in channel.split(";")] for channel in text.split("|")]


def arrays(config: dict[str, str]) -> tuple[np.ndarray, np.ndarray, dict]:
    """The input, weight and keyword arguments a configuration means, built here independently of the model."""
    if config.get("input_from") == "text":
        x = np.array(_numbers(config["input"]))
    else:
        h, w = (int(v) for v in config["size"].split(","))
        c = int(config.get("channels", "1"))
        x = np.arange(1, c * h * w + 1).reshape(c, h, w)
    weight = np.array([_numbers(line) for line in config["kernel"].split("\n")])
    if weight.dtype != x.dtype:
        x, weight = x.astype(np.float64), weight.astype(np.float64)
    padding = config.get("padding", CONTROLS["padding"])
    if padding not in ("same", "valid", "full"):
        padding = ast.literal_eval(padding)  # "1", "(1,0),(0,1)"
    params = dict(stride=int(config.get("stride", "1")), padding=padding, dilation=int(config.get("dilation", "1")),
                  groups=int(config.get("groups", "1")))
    if config.get("transposed") == "1":
        params["output_padding"] = int(config.get("output_padding", "0"))
    else:
        params.update(padding_mode=config.get("padding_mode", "zeros"), flip=config.get("flip") == "1")
    return x, weight, params


def library_output(config: dict[str, str]) -> np.ndarray:
    """``cl.conv2d`` (or ``cl.conv_transpose2d``) of the configuration."""
    x, w, params = arrays(config)
    if config.get("transposed") == "1":
        return cl.conv_transpose2d(x, w, None, params["stride"], params["padding"], params["output_padding"],
                                   params["groups"], params["dilation"])
    return cl.conv2d(x, w, **params)


def expected_window(config: dict[str, str], at: tuple[int, int, int]) -> set[str]:
    """The cells (``"c,y,x"`` in the shown grid) output ``at``'s window covers, from the definition.

    Forward: the padded input at ``position*stride + tap*dilation`` for the channels of the output's group.
    Transposed: the spread, padded input at ``position + tap*dilation`` (the canvas convolution has stride 1),
    over the input channels of the output channel's group.
    """
    x, w, params = arrays(config)
    o, y, x_ = at
    transposed = config.get("transposed") == "1"
    stride = 1 if transposed else params["stride"]
    groups, d = params["groups"], params["dilation"]
    in_per_group = x.shape[0] // groups
    out_per_group = (w.shape[1] * groups if transposed else w.shape[0]) // groups
    group = o // out_per_group
    return {f"{c},{y * stride + i * d},{x_ * stride + j * d}"
            for c in range(group * in_per_group, (group + 1) * in_per_group)
            for i in range(w.shape[2]) for j in range(w.shape[3])}


def equation_value(equation: str) -> float:
    """The number after the last ``=`` of a written-out sum."""
    return float(equation.rsplit("=", 1)[1])


def close(shown: str, value) -> bool:
    """The page's text of a number is the library's value (exact for integers, to six digits for floats)."""
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, (int, np.integer)):
        return shown == str(int(value))
    return abs(float(shown) - value) <= 5e-6 * max(abs(value), 1e-300) + 1e-12


# -- controls -------------------------------------------------------------------------------------


def test_defaults_make_a_padded_five_by_five():
    config = parse_controls({})
    assert config.input.tolist() == np.arange(1, 26).reshape(1, 5, 5).tolist()
    assert config.weight.shape == (1, 1, 3, 3) and config.output_shape == (1, 5, 5)
    assert config.grad_output.tolist() == np.ones((1, 5, 5), int).tolist()


ERRORS = [  # controls, the control the message is shown next to, part of the message
    (dict(stride="0"), "stride", "conv2d: stride must be >= 1 in every dimension, got 0"),
    (dict(stride="2.5"), "stride", "stride: '2.5' must be an int or comma-separated ints"),
    (dict(padding="(1,"), "padding", "padding: '(1,' is not an int or a tuple"),
    (dict(dilation="9"), "kernel", "conv2d: weight must fit inside the padded input"),
    (dict(groups="2"), "groups", "groups must divide the number of output channels"),
    (dict(groups="1,2"), "groups", "explore: groups must be one int"),
    (dict(padding_mode="mirror"), "padding_mode", "padding_mode must be one of"),
    (dict(flip="maybe"), "flip", "explore: flip must be on or off"),
    (dict(input_from="text", input="1 2; 3"), "input", "has rows of different lengths"),
    (dict(input_from="text", input=""), "input", "explore: input must hold the numbers"),
    (dict(input_from="file"), "input_from", "must be 'size' or 'text'"),
    (dict(kernel="1 2\n1 2 3"), "kernel", "must give every filter (one per line) the same shape"),
    (dict(kernel="1 x"), "kernel", "'x' in '1 x' is not a number"),
    (dict(size="100,100"), "size", "explore: size must make at most 4,096 cells"),
    (dict(size="0,3"), "size", "size must be >= 1"),
    (dict(channels="0"), "channels", "channels must be >= 1"),
    (dict(size="3,3", padding="200"), None, "explore: output must make at most 4,096 cells"),
    (dict(size="64,64", kernel="; ".join(["1 " * 9] * 9)), "kernel", "must need at most 262,144 multiply-adds"),
    (dict(output_padding="1"), "output_padding", "applies only to a transposed convolution"),
    (dict(transposed="1", padding="same"), "padding", "must be ints or (low, high) pairs for a transposed"),
    (dict(transposed="1", flip="1"), "flip", "explore: flip must be off for a transposed convolution"),
    (dict(transposed="1", padding_mode="reflect"), "padding_mode", "must be 'zeros' for a transposed"),
    (dict(grad_output="1 2"), "grad_output", "grad_output must have the output's shape (1, 5, 5)"),
    (dict(input_from="text", input="3037000500 1; 1 1", kernel="3037000500 1; 1 1", padding="0"), "input",
     "must keep every sum within int64"),
    (dict(colour="red"), None, "explore: control must be one of"),
    (dict(stride="2" * (12 * 4096 + 1)), "stride", "stride must be at most 49,152 characters"),
]


@pytest.mark.parametrize("controls, control, message", ERRORS)
def test_bad_controls_give_convolab_messages(controls, control, message):
    with pytest.raises(ControlError) as error:
        problem(controls)
    assert message in str(error.value)
    assert error.value.control == control
    assert "\n" not in str(error.value)


def test_transposed_op_errors_come_from_conv_transpose2d():
    with pytest.raises(ControlError, match="conv_transpose2d: output_padding must be smaller than stride") as error:
        problem(dict(transposed="1", output_padding="1"))
    assert error.value.control == "output_padding"


# -- the model: every number against convolab (and PyTorch) ----------------------------------------


@pytest.mark.parametrize("name", CONFIGS)
def test_view_shows_the_library_output(name):
    config = CONFIGS[name]
    view = problem(config).view()
    out = library_output(config)
    assert view["output"]["shape"] == list(out.shape)
    assert all(close(shown, value) for shown, value in zip(np.ravel(view["output"]["values"]), out.ravel()))
    assert all(check["holds"] for check in view.get("checks", []) + (view.get("backward") or {}).get("checks", []))


@pytest.mark.parametrize("name", CONFIGS)
def test_every_output_window_and_sum(name):
    config = CONFIGS[name]
    found, out = problem(config), library_output(config)
    for at in np.ndindex(*out.shape):
        detail = found.detail("out", ",".join(map(str, at)))
        assert set(detail["window"]) == expected_window(config, at)
        assert detail["equation"].endswith(f"= {detail['value']}") and close(detail["value"], out[at])
        assert detail["agrees"]
        if "im2col" in detail:
            assert detail["im2col"]["agrees"] and close(detail["im2col"]["dot"], out[at])
            assert detail["conv_matrix"]["agrees"] and close(detail["conv_matrix"]["dot"], out[at])


def test_done_when_matches_pytorch():
    """The issue's 'done when': their own 5x5, stride 2, padding 1, dilation 2: the numbers PyTorch gives."""
    torch = pytest.importorskip("torch")
    config = CONFIGS["stride2-padding1-dilation2"]
    x, w, _ = arrays(config)
    expected = torch.nn.functional.conv2d(torch.tensor(x[None]), torch.tensor(w), stride=2, padding=1, dilation=2)
    found = problem(config)
    for at in np.ndindex(*expected.shape[1:]):
        assert found.detail("out", ",".join(map(str, at)))["value"] == str(int(expected[(0, *at)]))


@pytest.mark.parametrize("name", [n for n in CONFIGS if CONFIGS[n].get("transposed") != "1"])
def test_backward_sums_agree_with_convolab_gradients(name):
    config = CONFIGS[name]
    x, w, params = arrays(config)
    found = problem(config)
    g = found.config.grad_output
    grad_input = cl.grad.conv2d_input(x.shape, w, g, **params)
    grad_weight = cl.grad.conv2d_weight(x, w.shape, g, **params)
    for at in np.ndindex(*x.shape):
        detail = found.detail("in", ",".join(map(str, at)))
        scatter, full = detail["scatter"]["equation"], detail["full"]["equation"]
        assert detail["agrees"] and detail["scatter"]["agrees"] and detail["full"]["agrees"]
        assert close(scatter.rsplit("= ", 1)[1], grad_input[at]) and close(full.rsplit("= ", 1)[1], grad_input[at])
        readers = {term["out"] for term in detail["scatter"]["terms"]}
        assert set(detail["readers"]) == readers
    for at in np.ndindex(*w.shape):
        detail = found.detail("weight", ",".join(map(str, at)))
        assert detail["agrees"] and close(detail["value"], grad_weight[at])


def test_a_sample_no_window_reads_has_no_readers_and_zero_gradient():
    found = problem(CONFIGS["stride2-padding1-dilation2"])
    detail = found.detail("in", "0,2,2")  # padded (3, 3): odd, and every window reads even coordinates
    assert detail["readers"] == [] and detail["scatter"]["equation"] == "0 (no terms) = 0"
    assert detail["full"]["equation"].endswith("= 0")
    assert "21 of 25 input samples are never read" in found.view()["unread"]


def test_flip_reverses_the_kernel_and_the_weight_gradient_follows():
    found = problem(CONFIGS["flip"])
    view = found.view()
    assert view["kernel"]["applied"][0][0] == [["9", "8", "7"], ["6", "5", "4"], ["3", "2", "1"]]
    assert found.detail("weight", "0,0,0,0")["applied_tap"] == "0,0,2,2"


def test_transposed_canvas_spreads_and_pads_the_input():
    found = problem(dict(size="2,2", kernel="1 2; 3 4", transposed="1", stride="2", padding="0"))
    canvas = found.view()["canvas"]
    roles = canvas["roles"][0]
    # Spread: (2 - 1)*2 + 1 = 3 cells; padded by dilation*(k - 1) - padding = 1 on each side: 5, samples at 1 and 3.
    assert canvas["shape"] == [1, 5, 5]
    assert [roles[1][c] for c in range(5)] == ["padding", "sample", "inserted", "sample", "padding"]
    assert canvas["sources"][0][1][3] == "0,0,1"
    assert found.view()["sizes"][0] == "height: (2 - 1)·2 - 0 - 0 + 1·(2 - 1) + 0 + 1 = 4"


def test_transposed_matches_pytorch():
    torch = pytest.importorskip("torch")
    config = CONFIGS["transposed"]
    x, w, p = arrays(config)
    expected = torch.nn.functional.conv_transpose2d(torch.tensor(x[None]), torch.tensor(w), stride=2, padding=1,
                                                    output_padding=1)[0].numpy()
    shown = problem(config).view()["output"]["values"]
    assert np.array(shown).tolist() == expected.astype(str).tolist()


def test_long_sums_are_cut_with_a_count():
    found = problem(dict(size="8,8", kernel="; ".join([" ".join(["1"] * 8)] * 8), padding="0"))
    equation = found.detail("out", "0,0,0")["equation"]
    assert f"… ({64 - MAX_EQUATION_TERMS} more terms)" in equation and equation.endswith("= 2080")


def test_detail_refuses_bad_cells():
    found = problem({})
    with pytest.raises(ValueError, match=r"explore: at must be 3 comma-separated ints indexing shape \(1, 5, 5\)"):
        found.detail("out", "0,5,0")
    with pytest.raises(ValueError, match="explore: kind must be one of 'out', 'in', 'weight', got 'bias'"):
        found.detail("bias", "0,0,0")
    with pytest.raises(ValueError, match="a transposed configuration shows outputs only"):
        problem(CONFIGS["transposed"]).detail("in", "0,0,0")


def test_numbers_are_written_exactly_or_to_six_digits():
    assert number(np.int64(2**62)) == str(2**62)  # past 2**53: exact, where a JavaScript number would not be
    assert (number(0.1 + 0.2), number(-0.0), number(float("nan")), number(1e-7)) == ("0.3", "0", "nan", "1e-07")


def test_configurations_are_cached():
    assert problem(dict(CONFIGS["dilation2"])) is problem(dict(CONFIGS["dilation2"]))


# -- the snapshot ---------------------------------------------------------------------------------


def test_snapshot_is_self_contained():
    html = snapshot_html(CONFIGS["stride2-padding1-dilation2"])
    assert re.search(r"https?://", html) is None  # no CDN, no link anywhere
    assert '<script src=' not in html and '<link' not in html
    assert "default-src 'none'" in html  # its policy refuses every connection
    data = json.loads(re.search(r'<script id="explore-data" type="application/json">(.*?)</script>', html).group(1))
    assert data["mode"] == "snapshot" and len(data["details"]) == 4 + 25 + 9
    assert data["details"]["out:0,1,0"]["equation"].endswith("= 35")


def test_snapshot_size_is_capped():
    with pytest.raises(ValueError, match=f"must need at most {SNAPSHOT_MAX_TERMS:,} for an offline snapshot"):
        snapshot_html(dict(size="60,60"))


# -- the server -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server():
    running = make_server(port=0, initial={"stride": "2"})
    serve(running, in_thread=True)
    yield running
    running.shutdown()
    running.server_close()


def ask(server, path: str, method: str = "GET") -> tuple[int, dict, bytes]:
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=10)
    connection.request(method, path)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, dict(response.getheaders()), body


def test_server_binds_loopback_by_default(server):
    assert server.server_address[0] == "127.0.0.1"


def test_server_serves_the_page_and_its_files(server):
    status, headers, body = ask(server, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"] and "connect-src 'self'" in headers[
        "Content-Security-Policy"]
    assert b'"initial":{"stride":"2"}' in body and b'src="explore.js"' in body
    for name, kind in (("explore.js", "text/javascript"), ("explore.css", "text/css")):
        status, headers, body = ask(server, "/" + name)
        assert status == 200 and headers["Content-Type"].startswith(kind) and body
        assert re.search(rb"https?://", body) is None


def test_server_answers_a_view_and_a_detail(server):
    query = urlencode(CONFIGS["stride2-padding1-dilation2"])
    status, headers, body = ask(server, "/api/view?" + query)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["output"]["values"] == [[["26", "-8"], ["35", "26"]]]
    status, _, body = ask(server, f"/api/detail?{query}&kind=out&at=0,1,0")
    assert status == 200 and json.loads(body)["equation"].endswith("= 35")


@pytest.mark.parametrize("path, status, message, control", [
    ("/api/view?stride=0", 400, "conv2d: stride must be >= 1 in every dimension, got 0", "stride"),
    ("/api/view?size=99,99", 400, "explore: size must make at most 4,096 cells", "size"),
    ("/api/view?stride=1&stride=2", 400, "explore: stride must be given once, got 2 values", "stride"),
    ("/api/view?volume=11", 400, "explore: control must be one of", None),
    ("/api/detail?kind=out&at=9,9,9", 400, "explore: at must be 3 comma-separated ints", None),
    ("/api/detail?kind=bias&at=0,0,0", 400, "explore: kind must be one of", None),
    ("/api/detail", 400, "explore: kind must be one of", None),
    ("/etc/passwd", 404, "explore: path '/etc/passwd' is not one the explorer serves", None),
    ("/api/view?input=" + "1" * 70_000, 414, "explore: the request must be at most 65,536 characters", None),
])
def test_server_refuses_bad_requests_with_the_message(server, path, status, message, control):
    got, headers, body = ask(server, path)
    answer = json.loads(body)
    assert got == status and headers["Content-Type"] == "application/json"
    assert message in answer["error"] and answer["control"] == control


def test_server_refuses_other_methods(server):
    status, headers, body = ask(server, "/api/view", method="POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert "method POST is not allowed" in json.loads(body)["error"]


# -- the command ----------------------------------------------------------------------------------


def test_command_writes_a_snapshot(tmp_path, capsys):
    path = tmp_path / "page.html"
    assert main(["explore", "--output", str(path), "--input", FIVE_BY_FIVE, "--kernel", "1 0 2; 0 1 0; -1 0 1",
                 "--stride", "2", "--padding", "1", "--dilation", "2"]) == 0
    assert f"wrote {path}" in capsys.readouterr().out
    assert '"out:0,1,0"' in path.read_text()


@pytest.mark.parametrize("args, message", [
    (["--stride", "0"], "convolab explore: error: conv2d: stride must be >= 1 in every dimension, got 0"),
    (["--input", "1 2", "--size", "3,3"], "give --input (your numbers) or --size/--channels"),
    (["--output", "x.html", "--port", "9"], "--host, --port and --no-browser apply to the server"),
])
def test_command_refuses_bad_flags_in_one_line(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(["explore", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "x.html").exists()


def test_command_serves_until_stopped():
    command = [sys.executable, "-m", "convolab.cli", "explore", "--port", "0", "--no-browser", "--stride", "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        url = re.search(r"serving (http://127\.0\.0\.1:(\d+)/)", line)
        assert url, line + process.stderr.read()
        connection = http.client.HTTPConnection("127.0.0.1", int(url.group(2)), timeout=10)
        connection.request("GET", "/api/view?stride=2")
        answer = json.loads(connection.getresponse().read())
        assert answer["output"]["shape"] == [1, 3, 3]
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_neither_import_convolab_nor_other_commands_load_the_explorer():
    code = ("import sys, convolab, convolab.cli; before = [m for m in sys.modules if 'explore' in m]; "
            "convolab.cli.build_parser(); after = [m for m in sys.modules if 'explore' in m]; print(before, after)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] ['convolab.apps.explore', 'convolab.apps.explore.command']"

