"""Probes and controls of the machine: its CPU, BLAS and load, thread counts, and the memory guard.

Threads
    PyTorch gets ``torch.set_num_threads(threads)``. NumPy's BLAS gets the same
    count through threadpoolctl when it is installed (:func:`blas_threads`);
    otherwise through ``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS``/
    ``MKL_NUM_THREADS``, which a BLAS reads only when it loads, so the ``bench``
    command then runs again in a subprocess with them set
    (:func:`child_environment`).
Memory guard
    :func:`address_space_limit` caps the address space (``RLIMIT_AS``) at what
    the process has mapped plus a number of GiB, so an algorithm that would
    need more fails with ``MemoryError``, reported in the table, instead of
    exhausting the machine.
The machine
    :func:`machine_info` records the CPU, cores, memory, versions, the BLAS and
    the kernels it runs; :func:`pinned_blas_warnings` and
    :func:`busy_machine_warnings` say when the numbers cannot be trusted.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Iterator

import numpy as np

import convolab

from . import protocol

__all__ = ["proc_status_bytes", "child_environment", "blas_threads", "default_memory_limit_gib",
           "address_space_limit", "cpu_flags", "pinned_blas_warnings", "machine_info", "load_average",
           "busy_machine_warnings", "CORETYPE_VARIABLE"]


def proc_status_bytes(key: str) -> int | None:
    """A size from ``/proc/self/status`` (``VmRSS``, ``VmHWM``, ``VmSize``...) in bytes; None off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        pass
    return None


# --------------------------------------------------------------------------- thread counts and the memory guard


def child_environment(threads: int) -> dict[str, str]:
    """This environment with the BLAS thread variables set, and convolab importable (even uninstalled)."""
    env = dict(os.environ)
    env.update({name: str(threads) for name in protocol.THREAD_VARIABLES})
    source = str(Path(convolab.__file__).resolve().parent.parent)  # the folder holding the package
    env["PYTHONPATH"] = os.pathsep.join(part for part in (source, env.get("PYTHONPATH")) if part)
    return env


def _environment_sets_threads(threads: int) -> bool:
    return all(os.environ.get(name) == str(threads) for name in protocol.THREAD_VARIABLES)


@contextlib.contextmanager
def blas_threads(threads: int) -> Iterator[str | None]:
    """Hold NumPy's BLAS to ``threads``; yields how, or None if it cannot be done in this process."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(limits=threads):
            yield "threadpoolctl.threadpool_limits"
    elif _environment_sets_threads(threads):
        yield f"environment: {', '.join(protocol.THREAD_VARIABLES)}={threads}, set before NumPy loaded"
    else:
        yield None


def _address_space_bytes() -> int:
    return proc_status_bytes("VmSize") or 0


def default_memory_limit_gib() -> float:
    """Half the memory available now, in GiB (at least 1)."""
    available = None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None:
        return 8.0
    return max(1.0, round(available / 2 / protocol.GIB, 1))


@contextlib.contextmanager
def address_space_limit(limit_gib: float) -> Iterator[int | None]:
    """Cap this process's address space at what it maps now plus ``limit_gib``; restore it on exit."""
    try:
        import resource
    except ImportError:  # not on this platform
        yield None
        return
    if not limit_gib or limit_gib <= 0:
        yield None
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _address_space_bytes() + int(limit_gib * protocol.GIB)
    for existing in (soft, hard):
        if existing != resource.RLIM_INFINITY:
            limit = min(limit, existing)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# --------------------------------------------------------------------------- the machine


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _blas_info() -> dict[str, Any]:
    info: dict[str, Any] = {}
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info = {"name": blas.get("name"), "version": blas.get("version"),
                "configuration": blas.get("openblas configuration")}
    except Exception:  # show_config's layout varies between NumPy versions
        pass
    try:
        from threadpoolctl import threadpool_info

        info["threadpools"] = [{key: pool.get(key) for key in ("internal_api", "version", "num_threads", "filepath",
                                                               "architecture")}
                               for pool in threadpool_info()]
        # The kernels OpenBLAS runs (its build configuration names only the oldest it supports).
        info["architecture"] = next((pool.get("architecture") for pool in info["threadpools"]
                                     if pool.get("architecture")), None)
    except ImportError:
        pass
    info["coretype_variable"] = os.environ.get(CORETYPE_VARIABLE)
    return info


#: OpenBLAS reads this when it loads and then runs that core type's kernels instead of the CPU's own.
CORETYPE_VARIABLE = "OPENBLAS_CORETYPE"
#: OpenBLAS core types whose single-precision kernels are at most 256 bits wide.
NARROW_CORETYPES = frozenset({"haswell", "zen", "sandybridge", "nehalem", "core2", "prescott", "atom", "bulldozer",
                              "piledriver", "steamroller", "excavator", "barcelona", "opteron"})


def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def pinned_blas_warnings(blas: dict[str, Any], flags: frozenset[str]) -> list[str]:
    """A core type forced by OPENBLAS_CORETYPE below what the CPU runs halves NumPy's matrix products, not PyTorch's."""
    variable, architecture = blas.get("coretype_variable"), blas.get("architecture")
    if not variable or "avx512f" not in flags or str(architecture or variable).lower() not in NARROW_CORETYPES:
        return []
    return [f"{CORETYPE_VARIABLE}={variable} in the environment holds NumPy's BLAS to {architecture or variable} "
            "(256-bit) kernels on a CPU with AVX-512, which PyTorch uses: every ratio against PyTorch is inflated "
            f"(run with `env -u {CORETYPE_VARIABLE}` to let OpenBLAS choose)"]


def _git_revision() -> str | None:
    try:
        completed = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                                   cwd=Path(__file__).resolve().parent, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if completed.returncode != 0:
        return None
    return completed.stdout.strip() or None


def machine_info(torch: Any = None) -> dict[str, Any]:
    """The machine and software a run used: CPU, cores, memory, versions, BLAS, date."""
    import scipy

    memory = None
    try:
        with open("/proc/meminfo") as meminfo:
            memory = int(next(line for line in meminfo if line.startswith("MemTotal:")).split()[1]) * 1024
    except (OSError, StopIteration):
        pass
    try:
        usable_cores = len(os.sched_getaffinity(0))
    except AttributeError:
        usable_cores = os.cpu_count()
    return {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "usable_cores": usable_cores, "memory_bytes": memory,
        "os": platform.platform(), "python": platform.python_version(), "numpy": np.__version__,
        "scipy": scipy.__version__, "torch": None if torch is None else torch.__version__,
        "convolab": convolab.__version__, "convolab_revision": _git_revision(), "blas": _blas_info(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------- is the machine busy?


def load_average() -> float | None:
    """The one-minute load average, or None where the system does not report one."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


#: BLAS rates before and after the problems further apart than this mean the machine was shared.
BLAS_RATE_SPREAD = 0.2
#: A one-minute load average above this share of the cores before the run means other work was running.
BUSY_LOAD_PER_CORE = 0.5


def busy_machine_warnings(before: float | None, after: float | None, load: float | None) -> list[str]:
    """Signs that something else shared the CPUs, which makes every timing of the run unreliable."""
    warnings = []
    if before and after and abs(before - after) > BLAS_RATE_SPREAD * max(before, after):
        warnings.append(f"the BLAS rate moved from {before:.1f} to {after:.1f} GFLOP/s during the run: the machine "
                        "was probably busy and the timings are unreliable")
    if load is not None and load > BUSY_LOAD_PER_CORE * (os.cpu_count() or 1):
        warnings.append(f"the one-minute load average was {load:.2f} on {os.cpu_count()} cores when the run "
                        "started: other processes may have been using the CPUs")
    return warnings
