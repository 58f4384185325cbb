"""Time a copy into a buffer that another thread reads between copies (docs/compiled.md, "The cause: writing
memory another core has just read").

    python benchmarks/cross_core_copy.py

The calling thread copies a stride-2 view (ResNet-18 layer4.0's downsample input, 0.4 MB out) into a buffer,
then either sums the buffer itself or has a second thread sum it. On a machine whose cores share their caches
cheaply both columns read about the same; on this project's VM some processes read 0.07 against 0.87 ms. Run it
a few times: the state is per process.
"""

from __future__ import annotations

import threading
import time

import numpy as np


def main(calls: int = 300) -> None:
    source = np.random.default_rng(0).standard_normal((8, 256, 14, 14), dtype=np.float32)
    buffer = np.empty((8, 256, 7, 7), np.float32)
    start, finished = threading.Event(), threading.Event()

    def reader() -> None:  # the other core reads what the calling thread wrote
        while True:
            start.wait()
            start.clear()
            buffer.sum()
            finished.set()

    threading.Thread(target=reader, daemon=True).start()

    def copies(read_elsewhere: bool) -> np.ndarray:
        seconds = []
        for _ in range(calls):
            begun = time.perf_counter()
            np.copyto(buffer, source[:, :, ::2, ::2])
            seconds.append(time.perf_counter() - begun)
            if read_elsewhere:
                start.set()
                finished.wait()
                finished.clear()
            else:
                buffer.sum()
        return np.percentile(np.array(seconds) * 1e3, [10, 50, 90]).round(3)

    for _ in range(2):
        print("copy ms (p10, p50, p90): buffer read by this thread", copies(False),
              "| by another thread", copies(True))


if __name__ == "__main__":
    main()
