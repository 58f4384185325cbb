"""``convolab animate`` and ``convolab draw``: the files open, with the expected frames and sizes."""

from __future__ import annotations

import numpy as np
import pytest

from convolab.cli import main
from convolab.show.explain import Case, explain, slide_steps, standard_cases

pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")

from convolab.show.pictures import MAX_FRAMES, animate, draw_conv_matrix, draw_im2col  # noqa: E402


def opened_gif(path):
    image = Image.open(path)
    assert image.format == "GIF"
    return image


@pytest.mark.parametrize(
    "case",
    [
        standard_cases()["classic"],
        Case("strided", np.arange(1, 26).reshape(1, 5, 5), np.ones((1, 1, 3, 3), dtype=np.int64), stride=2, padding=1),
        Case("dilated", np.arange(1.0, 17.0).reshape(1, 4, 4), np.ones((1, 1, 2, 2)), dilation=2, padding=(0, 1)),
        Case("transposed", np.array([[[1, 2], [3, 4]]]), np.ones((1, 1, 2, 2), dtype=np.int64), stride=2,
             transposed=True),
    ],
    ids=lambda case: case.name,
)
def test_animate_one_frame_per_output_element(tmp_path, case):
    path = tmp_path / f"{case.name}.gif"
    result = animate(slide_steps(case), path, fps=4)
    gif = opened_gif(path)
    assert gif.n_frames == result["frames"] == case.output().size
    assert gif.size == result["size"]
    assert min(gif.size) > 200


def test_animate_refuses_too_many_frames(tmp_path):
    case = Case("big", np.zeros((1, 30, 30)), np.ones((1, 1, 2, 2)))
    assert case.output().size > MAX_FRAMES
    with pytest.raises(ValueError, match="frames"):
        animate(slide_steps(case), tmp_path / "big.gif")


def test_draw_both_matrix_views(tmp_path):
    im2col_step, matrix_step = explain(standard_cases()["classic"], ["im2col"]).steps
    for drawer, step, name in ((draw_im2col, im2col_step, "im2col.png"), (draw_conv_matrix, matrix_step, "m.png")):
        result = drawer(step, tmp_path / name)
        png = Image.open(tmp_path / name)
        assert png.format == "PNG" and png.size == result["size"] and min(png.size) > 200
    with pytest.raises(ValueError, match="im2col"):
        draw_im2col(matrix_step, tmp_path / "wrong.png")


def test_draw_with_groups_and_padding(tmp_path):
    case = Case("grouped", np.arange(32.0).reshape(2, 4, 4), np.ones((2, 1, 3, 3)), padding=1, groups=2)
    im2col_step, matrix_step = explain(case, ["im2col"]).steps
    assert Image.open(draw_im2col(im2col_step, tmp_path / "g.png")["path"]).format == "PNG"
    assert Image.open(draw_conv_matrix(matrix_step, tmp_path / "gm.png")["path"]).format == "PNG"


def test_cli_animate_and_draw(tmp_path, capsys):
    gif = tmp_path / "slide.gif"
    assert main(["animate", "--input", "1 2 3; 4 5 6; 7 8 9", "--kernel", "1 0; 0 1", "--stride", "2",
                 "--padding", "1", "--output", str(gif)]) == 0
    assert opened_gif(gif).n_frames == 4 and "4 frames" in capsys.readouterr().out
    assert main(["draw", "--output", str(tmp_path / "classic")]) == 0
    for suffix in ("im2col", "conv-matrix"):
        assert Image.open(tmp_path / f"classic-{suffix}.png").format == "PNG"
    assert main(["draw", "--input", "1 2; 3 4", "--kernel", "1", "--transposed", "--output",
                 str(tmp_path / "t")]) == 2
    assert "--transposed" in capsys.readouterr().err


def test_draw_refuses_a_matrix_too_large_to_draw_before_drawing_anything(tmp_path, capsys):
    from convolab.show.pictures import MAX_DRAWN_CELLS

    ones = "; ".join([" ".join(["1"] * 64)] * 64)  # explain takes it; its 4096 x 4096 matrix is too many cells
    assert main(["draw", "--input", ones, "--kernel", "1", "--output", str(tmp_path / "big")]) == 2
    err = capsys.readouterr().err
    assert f"M must have at most {MAX_DRAWN_CELLS:,} cells to be drawn" in err and "(4096, 4096)" in err
    assert err.count("\n") == 1 and list(tmp_path.iterdir()) == []


def test_pictures_go_into_a_new_folder_and_an_unwritable_path_is_one_line(tmp_path, capsys):
    # The README's `draw --output pictures/classic` in a fresh checkout: the folder is made.
    assert main(["draw", "--output", str(tmp_path / "pictures" / "classic")]) == 0
    assert (tmp_path / "pictures" / "classic-im2col.png").is_file()
    (tmp_path / "a-file").write_text("")
    assert main(["animate", "--output", str(tmp_path / "a-file" / "slide.gif")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("convolab animate: error: ") and err.count("\n") == 1


@pytest.mark.parametrize("fps", [0, -1.0, float("nan"), "fast"])
def test_animate_checks_fps(tmp_path, fps):
    with pytest.raises(ValueError, match="animate: fps must be a finite number > 0"):
        animate(slide_steps(standard_cases()["classic"]), tmp_path / "x.gif", fps=fps)


# -- issue 16: products in the window, the frame limit, the im2col picture's windows -----------------------------


def test_frame_elements_spread_evenly_from_the_first_to_the_last():
    from convolab.show.pictures import frame_elements

    chosen = frame_elements(324, 64)
    assert len(chosen) == len(set(chosen)) == 64 and chosen[0] == 0 and chosen[-1] == 323
    assert chosen == sorted(chosen) and max(b - a for a, b in zip(chosen, chosen[1:])) <= 6
    assert frame_elements(9, 64) == list(range(9)) and frame_elements(9, 1) == [0]
    with pytest.raises(ValueError, match="animate: frames must be None"):
        frame_elements(9, 0)


def test_animate_draws_an_evenly_spread_subset(tmp_path):
    case = Case("subset", np.arange(1, 26).reshape(1, 5, 5), np.ones((1, 1, 2, 2), dtype=np.int64))
    result = animate(slide_steps(case), tmp_path / "subset.gif", frames=3)
    assert opened_gif(tmp_path / "subset.gif").n_frames == result["frames"] == 3
    assert result["elements"] == 16 and result["bytes"] == (tmp_path / "subset.gif").stat().st_size


def test_animate_warns_past_the_frame_limit(tmp_path, monkeypatch):
    from convolab.show.pictures import animation

    monkeypatch.setattr(animation, "FRAME_LIMIT", 2)
    with pytest.warns(UserWarning, match="frames=2 draws an evenly spread 2"):
        animate(slide_steps(standard_cases()["classic"]), tmp_path / "x.gif")


def test_cli_animate_subsamples_past_the_limit_and_says_so(tmp_path, capsys, monkeypatch):
    import convolab.show.pictures

    monkeypatch.setattr(convolab.show.pictures, "FRAME_LIMIT", 2)
    gif = tmp_path / "nine.gif"
    assert main(["animate", "--input", "1 2 3; 4 5 6; 7 8 9", "--kernel", "1", "--output", str(gif)]) == 0
    out = capsys.readouterr().out
    assert "the output has 9 elements; drawing 2 of them, evenly spread (--frames all draws every one)" in out
    assert opened_gif(gif).n_frames == 2 and "2 frames" in out and " KB" in out
    assert main(["animate", "--input", "1 2 3; 4 5 6; 7 8 9", "--kernel", "1", "--frames", "3", "--output",
                 str(gif)]) == 0
    assert opened_gif(gif).n_frames == 3


def test_cli_animate_refuses_all_frames_past_the_maximum_before_drawing(tmp_path, capsys):
    ones = "; ".join([" ".join(["1"] * 30)] * 30)
    assert main(["animate", "--input", ones, "--kernel", "1 1; 1 1", "--frames", "all", "--output",
                 str(tmp_path / "big.gif")]) == 2
    err = capsys.readouterr().err
    assert f"must have at most {MAX_FRAMES} elements to animate" in err and "--frames 64" in err
    assert err.count("\n") == 1 and list(tmp_path.iterdir()) == []
    with pytest.raises(SystemExit):
        main(["animate", "--frames", "0", "--output", str(tmp_path / "x.gif")])


def test_frame_cells_are_large_enough_for_legible_taps_and_products():
    from convolab.show.pictures.animation import ANIMATION_CELL_INCHES, TAP_POINTS, _Animation

    layout = _Animation(slide_steps(Case("p", np.arange(1, 26).reshape(1, 5, 5), np.ones((1, 1, 3, 3), dtype=np.int64),
                                         stride=2, padding=1))[0])
    assert layout.cell == ANIMATION_CELL_INCHES
    assert TAP_POINTS / 72 * 100 >= 13  # pixels at 100 dpi: the taps were about 7 before issue 16


def test_im2col_rows_take_their_windows_colours(tmp_path):
    from convolab._window import pad
    from convolab.show.explain.slide import window_taps
    from convolab.show.pictures import window_colours

    case = Case("padded", np.arange(1, 10).reshape(1, 3, 3), np.array([[[[1, 2], [3, 4]]]]), stride=2, padding=1)
    step = explain(case, ["im2col"]).steps[0]
    result = draw_im2col(step, tmp_path / "padded.png")
    rows = step.data["unrolled"].shape[0]
    assert result["row_colours"] == window_colours(rows) and len(set(result["row_colours"])) == rows
    # Each row's window, read from the padded input, is that row of the unrolled input.
    padded = pad(case.input, case.spec.padding)
    for row, position in enumerate(step.data["row_labels"]):
        taps = np.transpose(window_taps(position, case.spec.stride, case.spec.dilation, case.spec.kernel_size))
        assert padded[0][tuple(taps)].tolist() == step.data["unrolled"][row].tolist()
    # The PNG shows each row's colour in its swatch.
    png = np.asarray(Image.open(tmp_path / "padded.png").convert("RGB")).astype(int)
    for (x, y), colour in zip(result["row_pixels"], result["row_colours"]):
        expected = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
        assert np.abs(png[y, x] - expected).max() <= 8, (x, y, png[y, x], colour)
    assert "grey: from the zero padding" in result["legend"]


def test_im2col_legend_names_padding_only_where_there_is_some(tmp_path):
    step = explain(standard_cases()["classic"], ["im2col"]).steps[0]
    legend = draw_im2col(step, tmp_path / "classic.png")["legend"]
    assert "padding" not in legend and "one per window" in legend
