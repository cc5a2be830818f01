"""Keep freed host memory in the process on the JAX backend (Linux, glibc): opt-in.

XLA on a CPU allocates every buffer of a compiled step with the C library's
``malloc`` and frees it when the step ends. glibc hands any block over 32 MiB
(and, from the worker threads' own arenas, any block that outgrows a 64 MiB
heap) straight to ``mmap`` and returns it to the kernel on ``free``, so a
BERT-base training step (batch 16 x 128, ~2.1 GiB of intermediate buffers)
touches fresh pages every step: ~480,000 page faults, 3.6 s of system time per
step on a 2-core virtual machine while other large processes shared it
(``benchmarks/encoder_throughput.py --train`` reports system time and page
faults per call; about 0.9 s with nothing beside it, in a one-off probe).
TensorFlow does not pay it: its BFC allocator keeps what it frees.

:func:`keep_freed_memory` sets three ``mallopt`` parameters so that glibc keeps
the memory instead: one arena for all threads (``M_ARENA_MAX = 1``), no
``mmap`` for large blocks (``M_MMAP_MAX = 0``), never trim the top of the
heap (``M_TRIM_THRESHOLD`` = the largest ``size_t``). The next step then
reuses the same pages: in one run of that benchmark the JAX training step went
from 0.76x to 0.99x TensorFlow's speed, and its peak RSS from 4.49 to 4.09 GB
(a randomly initialised BERT-base). The price is resident memory: it never
falls back between steps, and for a model loaded from a checkpoint
(``benchmarks/memory.py``) the step's peak grew from 3.7 GiB to 5.5 GiB, where
it stayed over 8 steps (probably the heap growing past free blocks it does not
reuse). That is why it is not the default.

Turn it on with ``BERT4KERAS_KEEP_FREED_MEMORY=1`` in the environment (``import
bert4keras`` then applies it on the JAX backend) or by calling
:func:`keep_freed_memory` first thing. It only helps threads that had not
allocated yet: it must run before the first JAX computation (a thread keeps
the arena it first used).
"""

import ctypes
import os
import platform
import sys

__all__ = ["ENVIRONMENT", "applied", "apply_for_backend", "keep_freed_memory",
           "release_free_memory", "trim_heap"]

#: environment variable: "1" applies :func:`keep_freed_memory` on the JAX backend
ENVIRONMENT = "BERT4KERAS_KEEP_FREED_MEMORY"

# mallopt parameter numbers, glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_applied = False


def applied():
    """True once :func:`keep_freed_memory` has changed ``malloc``'s settings
    in this process."""
    return _applied


def keep_freed_memory():
    """Make glibc's ``malloc`` keep freed memory for reuse (see the module
    docstring): ``M_ARENA_MAX = 1``, ``M_MMAP_MAX = 0``, ``M_TRIM_THRESHOLD``
    = ``SIZE_MAX``.

    Returns:
        bool: True when the settings are in place (now or from an earlier
        call); False where there is nothing to set (not Linux with glibc) or
        ``mallopt`` refused a setting (the others stay set).
    """
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # mallopt's value is an int; glibc stores the trim threshold as a size_t,
    # so -1 becomes SIZE_MAX: never trim
    ok = [libc.mallopt(param, value) == 1 for param, value in (
        (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))]
    _applied = all(ok)
    return _applied


def apply_for_backend(backend):
    """:func:`keep_freed_memory` on the JAX backend when the environment says
    ``BERT4KERAS_KEEP_FREED_MEMORY=1``; what ``import bert4keras`` runs.
    Returns whether the settings are in place."""
    if backend != "jax" or os.environ.get(ENVIRONMENT, "0").strip() != "1":
        return _applied
    return keep_freed_memory()


def release_free_memory():
    """Give the free pages inside the heap back to the kernel (glibc's
    ``malloc_trim(0)``) when :func:`keep_freed_memory` is in effect; a no-op
    otherwise. Called after a large checkpoint is loaded: the stored tensors
    read from the file are garbage by then, and with trimming off they would
    stay resident (a later buffer that does not fit in their holes grows the
    heap instead). Returns whether anything ran."""
    if not _applied:
        return False
    return trim_heap()


def trim_heap():
    """Give the free pages inside ``malloc``'s heap back to the kernel now
    (glibc's ``malloc_trim(0)``), whatever the settings. glibc trims only the
    top of its heap by itself, so memory freed below live blocks stays
    resident: after ``model.quantize`` on the PyTorch backend the float
    kernels and the build's temporaries of a BERT-base stayed in the process
    until trimmed.
    Returns whether it ran: False where the C library has no
    ``malloc_trim`` (not glibc: macOS, musl, Windows)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    trim(0)
    return True
