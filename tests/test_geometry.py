"""The shared window geometry, checks and fixed-rank helper, against brute-force loops."""

from __future__ import annotations

import inspect
import itertools

import numpy as np
import pytest

import convolab as cl
from convolab import _vjp, shapes
from convolab._checks import check_bias, check_divisor, check_grad_output, check_grad_output_shape
from convolab._fixed_rank import fixed_rank_op, fixed_rank_ops
from convolab._geometry import (
    WindowGeometry,
    check_window_fits,
    join_phases,
    padding_for_outputs,
    resolve_padding,
    split_phases,
    window_geometry,
)
from convolab.spec import conv_spec


def axis_geometries():
    """Every one-axis geometry on a small grid whose window fits, and pooling's ceil_mode overhang on top."""
    for size, k, s, d, low, high in itertools.product(range(1, 7), range(1, 4), range(1, 4), range(1, 3),
                                                      range(3), range(3)):
        if size + low + high < shapes.dilated_kernel_size(k, d):
            continue
        yield WindowGeometry((size,), (k,), (s,), (d,), ((low, high),))
        if low <= k // 2 and shapes.dilated_kernel_size(k, d) - (size + 2 * low) < s:
            # ceil_mode: PyTorch's symmetric padding; the last window may overhang it by less than a stride
            out = shapes.pool_output_size(size, k, s, low, d, ceil_mode=True)
            nominal = WindowGeometry((size,), (k,), (s,), (d,), ((low, low),))
            yield WindowGeometry((size,), (k,), (s,), (d,), padding_for_outputs(nominal, (out,)))


def brute_force_reads(geometry: WindowGeometry) -> dict[tuple[int, int], int]:
    """``(o, j) -> input cell`` for every tap of every window that reads the input, by walking the padded axis."""
    (size,), (k,), (s,), (d,), ((low, high),) = (geometry.input_size, geometry.kernel_size, geometry.stride,
                                                  geometry.dilation, geometry.padding)
    reads, o = {}, 0
    while o * s + (k - 1) * d < low + size + high:  # window o lies inside the padded axis
        for j in range(k):
            cell = o * s + j * d - low
            if 0 <= cell < size:
                reads[(o, j)] = cell
        o += 1
    assert o == geometry.output_size[0]
    return reads


def test_tap_arithmetic_matches_a_brute_force_walk():
    checked = 0
    for geometry in axis_geometries():
        reads = brute_force_reads(geometry)
        out, k, size = geometry.output_size[0], geometry.kernel_size[0], geometry.input_size[0]
        positions = geometry.tap_positions(0)
        inside = geometry.reads_input(0)
        assert positions.shape == (out, k)
        assert {(o, j): int(positions[o, j]) for o, j in zip(*np.nonzero(inside))} == reads, geometry
        # axis_taps: per tap, the outputs it reaches inside the input and the cells they read
        from_slices = {}
        for reached, read in geometry.axis_taps(0):
            cells = list(range(size))[read]
            outputs = list(range(out))[reached]
            assert len(cells) == len(outputs)
            (j,) = {int(np.flatnonzero(positions[outputs[0]] == cells[0])[0])}
            from_slices.update({(o, j): cell for o, cell in zip(outputs, cells)})
        assert from_slices == reads, geometry
        whole = geometry.axis_taps(0, whole_first=True)
        assert sorted(map(repr, whole)) == sorted(map(repr, geometry.axis_taps(0)))
        # reaching_taps: exactly the taps some window reads the input with
        assert [j for run in geometry.reaching_taps(0) for j in run] == sorted({j for _, j in reads}), geometry
        # windows_reading_nothing: the windows with no read
        assert geometry.windows_reading_nothing(0).tolist() == sorted(set(range(out)) - {o for o, _ in reads})
        # stride phases: tap j of output o reads element o + shift[j] of phase phase[j]
        for padded in (False, True):
            origin = 0 if padded else geometry.padding[0][0]
            phases = geometry.stride_phases(0, padded=padded)
            for o, j in itertools.product(range(out), range(k)):
                assert (o + phases.shift[j]) * phases.stride + phases.phase[j] == positions[o, j] + (
                    geometry.padding[0][0] - origin)
        checked += 1
    assert checked > 1000


def test_phase_taps_are_the_axes_product_in_window_order():
    geometry = WindowGeometry((7, 6), (3, 2), (2, 3), (2, 1), ((1, 2), (0, 1)))
    rows, columns = geometry.stride_phases(0), geometry.stride_phases(1)
    expected = tuple(((rows.phase[a], columns.phase[b]), (rows.shift[a], columns.shift[b]))
                     for a, b in np.ndindex(3, 2))
    assert geometry.phase_taps() == expected


@pytest.mark.parametrize("shape, stride", [((5,), (2,)), ((2, 7, 5), (3, 2)), ((1, 2, 4, 3, 5), (1, 2, 3)),
                                           ((3, 4), (1, 1))])
def test_stride_phases_reassemble_the_input(shape, stride):
    x = np.random.default_rng(0).standard_normal(shape)
    rank = len(stride)
    phases = split_phases(x, stride)
    assert phases.shape == (*shape[:-rank], int(np.prod(stride)), *(-(-n // s) for n, s in zip(shape[-rank:], stride)))
    np.testing.assert_array_equal(join_phases(phases, stride, shape[-rank:]), x)
    for number, residue in enumerate(np.ndindex(*stride)):  # phase number: row-major over the residues
        part = x[(Ellipsis, *(slice(r, None, s) for r, s in zip(residue, stride)))]
        np.testing.assert_array_equal(phases[(Ellipsis, number, *(slice(0, n) for n in part.shape[-rank:]))], part)


def test_resolve_padding_agrees_with_conv_spec():
    for size, k, s, d in itertools.product((1, 4, 7), (1, 2, 3), (1, 2, 3), (1, 2)):
        for padding in ("valid", "same", "full", 1, (2,), ((0, 3),)):
            try:
                spec = conv_spec((1, 1, size), (1, 1, k), stride=s, padding=padding, dilation=d)
            except ValueError:
                continue  # the kernel does not fit: conv_spec refuses after resolving
            assert resolve_padding(padding, (size,), (k,), (s,), (d,), "conv") == spec.padding
    assert resolve_padding(2, (4, 4), (3, 3), (1, 1), (1, 1), "conv2d") == ((2, 2), (2, 2))
    with pytest.raises(ValueError, match=r"^unfold: padding must be ints or \(low, high\) pairs .*, got 'same'"):
        resolve_padding("same", (4,), (3,), (1,), (1,), "unfold", strings=False)


def test_window_geometry_freezes_checked_arguments():
    geometry = window_geometry("unfold", (5, 6), (2, 3), stride=(1, 2), padding=((0, 1), 2), dilation=2)
    assert geometry == WindowGeometry((5, 6), (2, 3), (1, 2), (2, 2), ((0, 1), (2, 2)))
    assert geometry.output_size == shapes_output(geometry)
    with pytest.raises(ValueError, match="^unfold: stride must be >= 1"):
        window_geometry("unfold", (5,), 2, stride=0)


def shapes_output(geometry: WindowGeometry) -> tuple[int, ...]:
    return tuple(shapes.conv_output_size(i, k, s, p, d) for i, k, s, p, d in zip(
        geometry.input_size, geometry.kernel_size, geometry.stride, geometry.padding, geometry.dilation))


def test_the_window_must_fit_rule_keeps_every_asserted_phrase():
    with pytest.raises(ValueError) as refused:
        check_window_fits("conv1d", "weight", (3,), (3,), (3,), ((1, 1),))
    message = str(refused.value)
    assert message.startswith("conv1d: weight must fit inside the padded input, got dilated extent 7")
    for phrase in ("extent 7", "dilation 3", "padded input is 5", "larger than the padded input"):
        assert phrase in message
    with pytest.raises(ValueError, match=r"^max_pool1d: kernel_size must fit inside the padded input .*"
                                         r"got window extent 5 .* at stride 5$"):
        check_window_fits("max_pool1d", "kernel_size", (4,), (5,), (1,), ((0, 0),), (5,), ceil_mode=False)
    check_window_fits("max_pool1d", "kernel_size", (4,), (5,), (1,), ((0, 0),), (2,), ceil_mode=True)  # overhang 1
    with pytest.raises(ValueError, match="must overhang the padded input by less than the stride"):
        check_window_fits("max_pool1d", "kernel_size", (4,), (5,), (1,), ((0, 0),), (1,), ceil_mode=True)


def test_shared_argument_checks():
    with pytest.raises(ValueError, match=r"^conv2d_input: grad_output must have the forward output's shape \(2,\)"):
        check_grad_output_shape("conv2d_input", (3,), np.dtype("f8"), (2,))
    with pytest.raises(TypeError, match="^pool: grad_output must be a floating-point array, got dtype int64"):
        check_grad_output("pool", np.ones(2, dtype=np.int64), (2,), floating=True)
    same = np.ones(2, dtype=">f8")
    assert check_grad_output("conv", same, (2,), expected_dtype=np.dtype("<f8")).dtype.isnative
    assert check_bias("conv2d", None, 3, np.dtype("f8")) is None
    with pytest.raises(TypeError, match="^conv2d: bias must have the same dtype as input"):
        check_bias("conv2d", np.ones(3, np.float32), 3, np.dtype("f8"))
    with pytest.raises(ValueError, match=r"C_out=4 \(weight.shape\[1\] × groups\), got shape \(3,\)"):
        check_bias("conv_transpose2d", np.ones(3), 4, np.dtype("f8"), channels_from="weight.shape[1] × groups")
    assert check_divisor("avg_pool2d", np.int64(3)) == 3 and check_divisor("avg_pool2d", None) is None
    with pytest.raises(TypeError, match="^avg_pool2d: divisor_override must be an int or None, got True"):
        check_divisor("avg_pool2d", True)


def _scaled(op, rank, x, factor=2, *, offset=0, **options):
    """Stand-in N-d op: ``x * factor + offset``; ``rank`` is checked against ``x.ndim``."""
    if rank is not None and x.ndim != rank:
        raise ValueError(f"{op}: x must have {rank} dimensions, got {x.ndim}")
    return x * factor + offset


def _scaled_vjp(op, rank, x, factor=2, *, offset=0, **options):
    return _scaled(op, rank, x, factor, offset=offset), lambda g: (g * factor,)


def test_fixed_rank_ops_keep_signature_name_doc_and_vjp():
    ops = fixed_rank_ops(_scaled, "scaled", "{op}: {summary} ({spatial}).", suffix="_op",
                         words={rank: {"summary": f"rank {rank}"} for rank in (None, 1, 2, 3)}, vjp=_scaled_vjp)
    nd, one, two, three = ops
    assert [op.__name__ for op in ops] == [op.__qualname__ for op in ops] == [
        "scaled_op", "scaled1d_op", "scaled2d_op", "scaled3d_op"]
    assert two.__doc__ == "scaled2d_op: rank 2 (H, W)."
    assert two.__module__ == __name__
    implementation = list(inspect.signature(_scaled).parameters.values())[2:]
    assert list(inspect.signature(two).parameters.values()) == implementation
    assert two(np.ones((1, 1)), 3, offset=1).tolist() == [[4.0]]
    with pytest.raises(ValueError, match="^scaled1d_op: x must have 1 dimensions"):
        one(np.ones((1, 1)))
    with pytest.raises(TypeError, match=r"scaled3d_op\(\) takes from 1 to 2 positional arguments but 3 were given"):
        three(np.ones((1, 1, 1)), 1, 2)
    out, pullback = _vjp.vjp(nd, np.ones(2), factor=5)
    assert out.tolist() == [5.0, 5.0] and pullback(np.ones(2))[0].tolist() == [5.0, 5.0]


def test_fixed_rank_public_ops_are_unchanged():
    """The public variants keep PyTorch's parameter lists (what users and test_validation read)."""
    assert str(inspect.signature(cl.conv2d)) == (
        "(input: 'np.ndarray', weight: 'np.ndarray', bias: 'np.ndarray | None' = None, stride: 'Any' = 1, "
        "padding: 'PaddingArg' = 0, dilation: 'Any' = 1, groups: 'int' = 1, *, padding_mode: 'str' = 'zeros', "
        "flip: 'bool' = False, algorithm: 'str' = 'auto') -> 'np.ndarray'")
    assert cl.conv3d.__name__ == "conv3d" and "D_out, H_out, W_out" in cl.conv3d.__doc__

