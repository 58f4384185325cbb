"""Running one function from many Python threads at once, as the tests of thread safety do."""

from __future__ import annotations

import threading
from typing import Any, Callable


def results_from_threads(fn: Callable[[], Any], threads: int = 8, repeats: int = 1) -> list[Any]:
    """``fn()`` called ``repeats`` times on each of ``threads`` threads started together: each thread's last
    result, in thread order; the first error any of them raised is raised here."""
    results: list[Any] = [None] * threads
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            for _ in range(repeats):
                results[index] = fn()
        except Exception as error:  # noqa: BLE001 - raised below, on the test's thread
            errors.append(error)

    started = [threading.Thread(target=work, args=(index,)) for index in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join(timeout=120)
    if errors:
        raise errors[0]
    return results
