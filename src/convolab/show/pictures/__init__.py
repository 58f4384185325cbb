"""Pictures of the explanation steps: GIFs of the kernel sliding, PNGs of the matrix views, the gallery's frames.

Everything drawn here is read from :class:`~convolab.show.explain.Step` data, the
same steps ``convolab explain`` prints and the tests check, so a picture never
shows a number the library did not compute:

- :func:`animate` (:mod:`.animation`) draws :func:`~convolab.show.explain.slide_steps`:
  one frame per output element (or an evenly spread subset past
  :data:`FRAME_LIMIT`), the window on the padded input with each cell's value,
  kernel tap and product, padding shaded, never-read cells marked, inserted
  zeros for a transposed convolution, the product-sum written out, and the
  output filling in;
- :func:`draw_im2col` (:mod:`.matrix_views`) draws the ``im2col`` step: the
  input with each window outlined in its own colour, and the unrolled input
  (each row in its window's colour) times the filter matrix equals the
  product, reshaped into the output;
- :func:`draw_conv_matrix` draws the convolution matrix step: ``M`` times the
  flattened input equals the flattened output.

:mod:`._grid` holds what they share: numbered grids laid out in inches.
matplotlib (and Pillow, for GIFs) are imported inside the functions, and only
the Agg canvas is used (no pyplot, no global backend switch), so ``import
convolab`` never needs them. Install them with ``pip install "convolab[viz]"``.
"""

from ._grid import MAX_LABELLED_CELLS  # noqa: F401 (convolab.pictures re-exports it)
from .animation import FRAME_LIMIT, MAX_FRAMES, animate, check_frames, frame_elements, kilobytes
from .matrix_views import MAX_DRAWN_CELLS, check_drawn_cells, draw_conv_matrix, draw_im2col, window_colours

__all__ = ["animate", "draw_im2col", "draw_conv_matrix", "check_frames", "MAX_FRAMES", "MAX_DRAWN_CELLS",
           "check_drawn_cells", "frame_elements", "kilobytes", "window_colours", "FRAME_LIMIT"]
