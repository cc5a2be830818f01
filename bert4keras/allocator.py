"""Keep freed host memory in the process on the JAX backend (Linux, glibc):
on by default, ``BERT4KERAS_KEEP_FREED_MEMORY=0`` turns it off.

XLA on a CPU allocates every buffer of a compiled step with the C library's
``malloc`` (one block for all of a step's intermediates: ~1.8 GiB for a
BERT-base training step at batch 16 x 128) and frees it when the step ends.
Under glibc's defaults any block over 32 MiB (and, from the worker threads'
own arenas, any block that outgrows a 64 MiB heap) is ``mmap``-ed and
returned to the kernel on ``free``, so every step touches fresh pages:
~480,000 page faults per BERT-base step, seconds of system time when other
large processes share the machine (``benchmarks/encoder_throughput.py
--train`` reports system time and page faults per call). TensorFlow does not
pay it: its BFC allocator keeps what it frees.

:func:`keep_freed_memory` makes glibc keep that memory instead:

* at once (``import bert4keras``, before any JAX computation): one arena for
  all threads (``M_ARENA_MAX = 1``; a thread keeps the arena it first used,
  hence "before"), never trim the top of the heap (``M_TRIM_THRESHOLD`` =
  the largest ``size_t``), and JAX's asynchronous dispatch on the CPU off
  (:func:`run_jax_inline`; the option is read when JAX makes its CPU
  client, hence "before" again);
* from the first XLA compilation of :data:`MIN_COMPILE_SECONDS` or more on
  (a JAX monitoring listener; by then the model is built and its checkpoint
  loaded): no ``mmap`` for large blocks (``M_MMAP_MAX = 0``,
  :func:`hold_large_blocks`), and after each such compilation, before the
  executable's first run, the heap's free pages given back
  (:func:`trim_heap`) and a free block left below the top of the heap for
  small allocations (:func:`reserve_for_small_blocks`), so that the step
  block comes back to the same place every step.

Each step then reuses the same pages: no page faults after the first. The
price: memory a step freed stays resident until the process ends (as under
TensorFlow), so the resident size between steps is the step's peak rather
than the weights alone; the peak itself is not higher (benchmarks/HISTORY.md's memory rows,
``benchmarks/memory.py``, ``jax`` and ``jax-glibc`` rows).

Why asynchronous dispatch goes: with it, ``model.fit`` does not wait for a
step's result before it calls the next step, and XLA starts step ``n + 1``
while step ``n``'s block has not been freed yet (XLA frees it just after the
step's outputs are ready). The new block is then carved elsewhere, both stay
in the heap, and the process keeps two or three step blocks for good. Under
glibc's defaults the overlap costs nothing lasting (the ``mmap``-ed blocks go
back to the kernel); kept, it did: a BERT-base ``model.fit`` peaked at twice
the memory (``benchmarks/memory.py --fit``, the ``jax-keep-async`` row), and
the README's main example on JAX far above glibc's defaults, which is why
this was opt-in until 2026-12-07. With computations run inline both peak
lower than under glibc's defaults. The cost: Python's work between steps no
longer overlaps a running step, and the one arena that all threads share
slows steps made of many small buffers (a toy training step of 20 ms ran
about 30 % slower than under glibc's defaults, about half of it from each
part; BERT-base steps did not slow). ``JAX_CPU_ENABLE_ASYNC_DISPATCH=1`` in
the environment keeps asynchronous dispatch (:data:`ASYNC_ENVIRONMENT`, read
here: JAX 0.10 does not read that variable for the option).

When it is applied: on the JAX backend, at ``import bert4keras``, if no
JAX computation has run in the process yet (:func:`jax_backend_started`);
``BERT4KERAS_KEEP_FREED_MEMORY=1`` applies it in any case (then one arena and
inline dispatch may come too late to take effect); ``0`` keeps glibc's
defaults and JAX's asynchronous dispatch. On TensorFlow and PyTorch nothing
is changed. :func:`keep_freed_memory` can also be called directly, first
thing.

Without the two deferred parts (the opt-in of earlier versions set all three
``mallopt`` settings at import) a checkpoint's large temporaries stayed in
the heap and the second training step's block did not fit into the first's
(see :func:`reserve_for_small_blocks`), which grew a BERT-base step's peak
from 3.7 to 5.5 GiB.

A limit of glibc before 2.38 (Debian 12 has 2.36): an aligned request
(``posix_memalign``, what XLA uses) carves ``T`` plus the alignment plus a
minimum chunk and gives the spare bytes at the end back to the allocating
thread's cache of small blocks, which glibc counts as in use; while that
spare piece is held, the freed ``T`` cannot join the top of the heap, and the
next step's block is carved above it. So the first few calls of an
executable on a thread whose cache is not yet full can each grow the heap by
one step block (seen for a small function's first calls on fresh threads,
then never again; not in the BERT-base and GPT-2 runs of ``benchmarks/``,
whose threads have allocated plenty by then). ``tests/test_allocator.py``
checks ten calls after six warm-up calls, one by one; under other processes'
load glibc's heap can fragment and a call then takes a fresh block now and
then (the test's docstring).
"""

import ctypes
import functools
import os
import platform
import sys
import warnings

__all__ = ["ASYNC_ENVIRONMENT", "ENVIRONMENT", "OFF_VALUES", "applied", "apply_for_backend",
           "hold_large_blocks", "jax_backend_started", "keep_freed_memory", "release_free_memory",
           "reserve_for_small_blocks", "run_jax_inline", "trim_heap"]

#: environment variable: "0" keeps glibc's defaults on the JAX backend, "1"
#: applies :func:`keep_freed_memory` even after a JAX computation has run
ENVIRONMENT = "BERT4KERAS_KEEP_FREED_MEMORY"
#: values of the variables below that mean "off"
OFF_VALUES = ("0", "false", "no", "off")
#: environment variable: "1" keeps JAX's asynchronous CPU dispatch on where
#: :func:`keep_freed_memory` would turn it off (:func:`run_jax_inline`)
ASYNC_ENVIRONMENT = "JAX_CPU_ENABLE_ASYNC_DISPATCH"

# mallopt parameter numbers, glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_applied = False

#: size of the free block :func:`reserve_for_small_blocks` leaves in the heap
RESERVE_BYTES = 64 << 20
#: guard sizes tried, smallest first, until one lands above the reserve
_GUARD_SIZES = (1 << 12, 1 << 16, 1 << 20, 1 << 24)
_guards = []  # the live guards: kept for the life of the process
_listening = False
_holding = False


class _MallInfo2(ctypes.Structure):
    # glibc >= 2.33 <malloc.h> struct mallinfo2: ten size_t fields
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]


@functools.lru_cache(maxsize=None)
def _libc():
    """glibc's ``libc.so.6`` with the signatures used here, or None where
    there is no such library (macOS, musl, Windows)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


def applied():
    """True once :func:`keep_freed_memory` has changed ``malloc``'s settings
    in this process."""
    return _applied


def keep_freed_memory():
    """Make glibc's ``malloc`` keep freed memory for reuse (see the module
    docstring): ``M_ARENA_MAX = 1``, ``M_TRIM_THRESHOLD = SIZE_MAX`` and
    JAX's dispatch inline (:func:`run_jax_inline`) now,
    ``M_MMAP_MAX = 0`` (:func:`hold_large_blocks`) from the first XLA
    compilation of :data:`MIN_COMPILE_SECONDS` or more on, that is once the
    model is built and its checkpoint loaded (at once where JAX is not
    installed).

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
    libc = _libc()
    if libc is None:
        return False
    # mallopt's value is an int; glibc stores the trim threshold as a size_t,
    # so -1 becomes SIZE_MAX: never trim
    ok = [libc.mallopt(param, value) == 1 for param, value in (
        (_M_ARENA_MAX, 1), (_M_TRIM_THRESHOLD, -1))]
    _applied = all(ok)
    if _applied:
        run_jax_inline()
        if not _listen_to_jax_compiles():
            hold_large_blocks()
    return _applied


def hold_large_blocks():
    """``M_MMAP_MAX = 0``: blocks of any size come from the heap, so a freed
    step buffer stays in the process for the next step instead of going back
    to the kernel. Part of :func:`keep_freed_memory`, deferred to the first
    large compilation: while a checkpoint loads, its large temporaries (a
    GPT-2 small embedding table, 147 MiB, read, transposed, copied) would
    otherwise stay in the heap beside the weights and raise the loading peak.
    Returns whether it is in effect; a no-op unless
    :func:`keep_freed_memory` is."""
    global _holding
    if _applied and not _holding:
        _holding = _libc().mallopt(_M_MMAP_MAX, 0) == 1
    return _holding


def reserve_for_small_blocks():
    """Leave a free block of :data:`RESERVE_BYTES` below the top of the heap,
    held there by a small live guard block above it, so that small
    allocations are served from it rather than from the top. A no-op (False)
    unless :func:`hold_large_blocks` is in effect, and when the top of the
    heap is already large (a step's freed buffer block sits there: a guard
    put into it would split it).

    Why: XLA's step buffer block (``T`` bytes, ``posix_memalign``) comes from
    the top of the heap the first time, and a buffer the XLA runtime
    allocates just after it (1.5 MiB, live for the rest of the process, seen
    in a BERT-base training step) would take the space right above it. Freed,
    the block is then exactly ``T`` bytes, while an aligned request for ``T``
    bytes needs ``T`` plus the alignment plus a minimum chunk: the second
    step's block no longer fits into the first's and the heap grows by ``T``
    a second time. With a free block below the top, small buffers
    land there, nothing lands above the step block, and every step reuses
    the same pages. Run after each XLA compilation of
    :data:`MIN_COMPILE_SECONDS` or more (a JAX monitoring listener), that is
    just before a large executable's first run. Returns whether a reserve
    was made."""
    if not _holding:
        return False
    libc = _libc()
    mallinfo2 = getattr(libc, "mallinfo2", None)
    if mallinfo2 is None:  # glibc < 2.33: the top's size is not known
        return False
    mallinfo2.restype = _MallInfo2
    if mallinfo2().keepcost >= RESERVE_BYTES:
        return False
    block = libc.malloc(RESERVE_BYTES)
    if not block:
        return False
    guard = None
    for size in _GUARD_SIZES:
        guard = libc.malloc(size)
        if guard and guard > block:
            break
        libc.free(guard)
        guard = None
    libc.free(block)
    if guard is None:
        return False
    _guards.append(guard)
    return True


#: compilations shorter than this (seconds) are small executables (eager ops,
#: the initializers of a model being built), whose buffers are small
MIN_COMPILE_SECONDS = 0.1


def _on_jax_event(event, duration_secs, **kwargs):
    if (event == "/jax/core/compile/backend_compile_duration"
            and duration_secs >= MIN_COMPILE_SECONDS):
        if hold_large_blocks():
            trim_heap()
            reserve_for_small_blocks()


def _listen_to_jax_compiles():
    """Register :func:`_on_jax_event` with JAX's monitoring; False where JAX
    is not installed."""
    global _listening
    if not _listening:
        try:
            import jax.monitoring
        except ImportError:
            return False
        jax.monitoring.register_event_duration_secs_listener(_on_jax_event)
        _listening = True
    return True


def jax_backend_started():
    """Whether JAX's backends (its CPU client) exist in this process, that
    is whether a JAX computation has run; True where it cannot be told (a
    JAX without the private helper asked)."""
    try:
        from jax._src import xla_bridge

        return xla_bridge.backends_are_initialized()
    except (ImportError, AttributeError):
        return True


def run_jax_inline():
    """Turn JAX's asynchronous dispatch on the CPU off
    (``jax_cpu_enable_async_dispatch = False``: a call of a compiled function
    runs before it returns) if JAX's CPU client is not made yet (the option
    is read once, when it is). Part of :func:`keep_freed_memory`: with
    asynchronous dispatch a loop that does not wait for each step's result
    (``model.fit``) starts step ``n + 1`` while step ``n``'s buffers are
    still being given back, so two step blocks are live at once and the kept
    heap holds both from then on (see the module docstring).

    Returns:
        bool: True when JAX runs computations inline (now, or already by the
        user's choice); False where JAX is not installed or has no such
        option, its CPU client already exists, or the environment asks for
        asynchronous dispatch (:data:`ASYNC_ENVIRONMENT` set to anything but
        ``0``/``false``/``no``/``off``; JAX 0.10 itself does not read that
        variable for this option, bert4keras does).
    """
    try:
        import jax

        asynchronous = jax.config.read("jax_cpu_enable_async_dispatch")
    except (ImportError, AttributeError):  # no JAX, or one without the option
        return False
    if not asynchronous:
        return True
    asked = os.environ.get(ASYNC_ENVIRONMENT, "").strip().lower()
    if (asked and asked not in OFF_VALUES) or jax_backend_started():
        return False
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    return True


def apply_for_backend(backend):
    """What ``import bert4keras`` runs: on the JAX backend
    :func:`keep_freed_memory` unless the environment says
    ``BERT4KERAS_KEEP_FREED_MEMORY=0``. Left unset, it applies only if no
    JAX computation has run yet (its settings must come first), and warns
    (``RuntimeWarning``) when one has;
    ``BERT4KERAS_KEEP_FREED_MEMORY=1`` applies it in any case. Other backends:
    nothing. Returns whether the settings are in place."""
    setting = os.environ.get(ENVIRONMENT, "").strip().lower()
    if backend != "jax" or setting in OFF_VALUES:
        return _applied
    if setting != "1" and jax_backend_started():
        if not _applied:
            warnings.warn(
                "bert4keras: a JAX computation ran before `import bert4keras`, so freed host "
                "memory is not kept for XLA's step buffers (every training step faults them in "
                "afresh; see bert4keras.allocator). Import bert4keras before any JAX "
                "computation, or set %s=0 to keep glibc's defaults without this warning."
                % ENVIRONMENT, RuntimeWarning, stacklevel=2)
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
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:
        return False
    trim(0)
    return True
