"""Runs of values copied as whole 512-bit vectors, at strides 1 and 2: the packing of :mod:`._kernels_packed`, the
phase grids of :mod:`._kernels_direct`, the streaming stores of :mod:`._kernels_tiled`.

This module imports Numba at its top, so only the kernel modules import it, on
first use (through :mod:`._compiled`). It imports none of them: each may use it.

A loop of ``col[to + i] = x[read + i*sw]`` did not vectorize well: Numba cannot
tell LLVM that the two arrays do not overlap, so a fixed loop of 16 copies
stayed 16 scalar loads and stores, and at stride 2 LLVM gathered. Here a move
is one LLVM vector loaded (two and one shuffle at stride 2) and stored.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types, uint64
from numba.extending import intrinsic

__all__ = ["copy_run", "COPY_STEP", "VECTOR_VALUES"]


#: Values one LLVM vector of :func:`_run_pointer` holds: a 512-bit vector of float32, two of float64.
VECTOR_VALUES = 16


def _run_pointer(context, builder, array_type, array, index):
    """A pointer to :data:`VECTOR_VALUES` values of ``array`` from ``index`` on, as one LLVM vector (for the
    intrinsics' code: this module's moves, :func:`._kernels_tiled._stream`)."""
    data = context.make_array(array_type)(context, builder, array).data
    return builder.bitcast(builder.gep(data, [index]), ir.VectorType(data.type.pointee, VECTOR_VALUES).as_pointer())


#: Values one step of :func:`copy_run` moves: one 512-bit vector of float32 (two of float64), as one LLVM vector
#: (:func:`_run_pointer`).
COPY_STEP = VECTOR_VALUES


def _move_codegen(even: bool, part: bool):
    """The code of one :data:`COPY_STEP`-value move ``dst[to + m] = src[read + m]`` (``src[read + 2*m]`` where
    ``even``): whole vectors, loaded unaligned; where ``part``, only lanes ``m < count`` change (the other lanes
    of ``dst`` are read and stored back as they were)."""

    def codegen(context, builder, signature, args):
        dst, to, src, read = args[:4]
        align = context.get_abi_sizeof(context.get_value_type(signature.args[0].dtype))
        source = _run_pointer(context, builder, signature.args[2], src, read)
        value = builder.load(source, align=align)
        if even:  # the even values of two vectors' worth: one shuffle (vpermt2ps)
            high = builder.load(builder.gep(source, [ir.Constant(ir.IntType(64), 1)]), align=align)
            lanes = ir.Constant(ir.VectorType(ir.IntType(32), COPY_STEP), [2 * m for m in range(COPY_STEP)])
            value = builder.shuffle_vector(value, high, lanes)
        target = _run_pointer(context, builder, signature.args[0], dst, to)
        if part:
            index = ir.VectorType(ir.IntType(64), COPY_STEP)
            count = builder.insert_element(ir.Constant(index, None), args[4], ir.Constant(ir.IntType(32), 0))
            count = builder.shuffle_vector(count, count, ir.Constant(ir.VectorType(ir.IntType(32), COPY_STEP), None))
            kept = builder.icmp_unsigned("<", ir.Constant(index, list(range(COPY_STEP))), count)
            value = builder.select(kept, value, builder.load(target, align=align))
        builder.store(value, target, align=align)
        return context.get_dummy_value()

    return codegen


@intrinsic
def _move(typingctx, dst, to, src, read):
    """``dst[to:to + 16] = src[read:read + 16]``: one vector load and store. Numba cannot tell that the two arrays
    do not overlap, so LLVM left a fixed loop of 16 copies as 16 scalar loads and stores."""
    return types.none(dst, to, src, read), _move_codegen(even=False, part=False)


@intrinsic
def _move_even(typingctx, dst, to, src, read):
    """``dst[to:to + 16] = src[read:read + 32:2]``: it reads ``src[read + 31]``, one past the last value taken."""
    return types.none(dst, to, src, read), _move_codegen(even=True, part=False)


@intrinsic
def _move_part(typingctx, dst, to, src, read, count):
    """:func:`_move` of the first ``count < 16`` values: it reads 16 values of each array, and stores the rest of
    ``dst``'s back unchanged."""
    return types.none(dst, to, src, read, count), _move_codegen(even=False, part=True)


@intrinsic
def _move_even_part(typingctx, dst, to, src, read, count):
    """:func:`_move_even` of the first ``count < 16`` values, as :func:`_move_part`."""
    return types.none(dst, to, src, read, count), _move_codegen(even=True, part=True)


@njit(cache=True, nogil=True, inline="always")
def copy_run(col, to, flat_x, read, count, sw):
    """``col[to + i] = flat_x[read + i*sw]`` for ``i < count`` (``to``, ``read`` unsigned), ``col`` the calling
    thread's own scratch, or the part of an array it alone writes. At strides 1 and 2, :data:`COPY_STEP` values
    at a time as whole vectors (:func:`_move`, :func:`_move_even`), and a last part of fewer as one vector whose
    other lanes are stored back as they were (:func:`_move_part`: no other thread writes ``col``), each where its
    vectors lie inside both arrays; any other stride, and what is left, one value at a time. A row's part in one
    of packed's panels is at most 32 values: one value at a time, 28 took 8 ns, against 3 as vectors."""
    done, count, step = uint64(0), uint64(count), uint64(sw)
    room = uint64(col.size) - to  # values of col from to on
    if sw == 1:
        while done + uint64(COPY_STEP) <= count:
            _move(col, to + done, flat_x, read + done)
            done += uint64(COPY_STEP)
        if done < count and read + done + uint64(COPY_STEP) <= uint64(flat_x.size) and done + uint64(COPY_STEP) <= room:
            _move_part(col, to + done, flat_x, read + done, count - done)
            done = count
    elif sw == 2:  # each step reads 2 * COPY_STEP values: one past the last value it takes
        while done < count and read + uint64(2) * (done + uint64(COPY_STEP)) <= uint64(flat_x.size):
            if done + uint64(COPY_STEP) <= count:
                _move_even(col, to + done, flat_x, read + uint64(2) * done)
            elif done + uint64(COPY_STEP) <= room:
                _move_even_part(col, to + done, flat_x, read + uint64(2) * done, count - done)
            else:
                break
            done = min(done + uint64(COPY_STEP), count)
    for i in range(done, count):
        col[to + i] = flat_x[read + step * i]
