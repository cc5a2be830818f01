"""What every benchmark script shares: the machine, timing, peak memory, FLOPs.

Scripts in ``benchmarks/`` run as ``python benchmarks/X.py``, so this module is
importable as ``import benchlib`` (the script's folder is on ``sys.path``).

* :func:`machine` -- the CPU model and the flags that decide which kernels exist
  (from ``/proc/cpuinfo``, as ``lscpu`` prints them), and the core count;
* :func:`timed` -- mean seconds per call of ``fn`` over ``iters`` calls;
* :func:`peak_rss` / :func:`current_rss` -- the process' high-water and current
  resident set size in bytes; :func:`memory_pressure` -- a warning when
  concurrent workers together come near the machine's RAM;
* :func:`matmul_peak` -- this machine's measured fp32 matmul rate in GFLOP/s
  (TensorFlow, torch or NumPy), the yardstick for "fraction of peak";
* :func:`encoder_flops` / :func:`decoder_step_flops` -- the multiply-add count
  (x2, in FLOP) of a BERT-style forward pass and of one cached decoding step;
* :data:`JAX_HOST_MEMORY` / :func:`host_memory_environment` -- the JAX
  workers' host-memory settings (:mod:`bert4keras.allocator`) that
  ``encoder_throughput.py`` and ``memory.py`` compare.
"""

import os
import statistics
import time

#: CPU flags that decide which fp32 / bf16 / int8 kernels a library can use.
FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16",
         "amx_int8", "amx_tile")


def machine():
    """``{"model": str, "family": "<cpu family>/<model>", "cores": int, "flags":
    [present flags of FLAGS]}`` read from ``/proc/cpuinfo`` (``"unknown"`` /
    ``[]`` where it cannot be read). The family tells CPU generations apart
    that a virtual machine names alike ("AMD EPYC": family 25 is Zen 3/4,
    family 26 Zen 5, whose AVX-512 units are twice as wide)."""
    model, flags, family = "unknown", set(), {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "model name" and model == "unknown":
                    model = value
                elif key in ("cpu family", "model") and key not in family:
                    family[key] = value
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "cores": os.cpu_count(),
            "family": "%s/%s" % (family.get("cpu family", "?"), family.get("model", "?")),
            "flags": [flag for flag in FLAGS if flag in flags]}


def machine_line():
    """One printable line: ``CPU: <model> (family <f>/<m>), <n> cores, flags: a b c``."""
    info = machine()
    return "CPU: %s (family %s), %d cores, flags: %s" % (
        info["model"], info["family"], info["cores"] or 0, " ".join(info["flags"]) or "-")


def timed(fn, iters=1):
    """Mean wall seconds per call of ``fn()`` over ``iters`` calls."""
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters


def current_rss():
    """Resident set size of this process now, in bytes (Linux ``/proc``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss():
    """High-water resident set size of this process in bytes (``ru_maxrss``,
    KiB on Linux). A fresh process per measured configuration gives a clean
    figure: the mark never goes down."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_pressure(peaks, limit=0.8):
    """A warning line when worker processes alive at the same time could
    together hold more than ``limit`` of the machine's RAM, else None.

    ``peaks``: ``{name: peak RSS in bytes}`` (None entries are skipped).
    Near the RAM size the kernel evicts file-backed pages (shared
    libraries), and the worker that faults them back in runs slower: on the
    24 GiB machine four BERT-base training workers (21 GB together) made the
    JAX step 0.53x TensorFlow's, against 0.96x with two workers.
    """
    total = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    total = int(line.split()[1]) * 1024
    except OSError:
        return None
    used = sum(v for v in peaks.values() if v)
    if not total or used <= limit * total:
        return None
    return ("WARNING: the workers' peak RSS adds up to %.1f GB of %.1f GB RAM (%s): file pages "
            "get evicted and timings suffer; rerun with fewer backends at a time."
            % (used / 1e9, total / 1e9, ", ".join(
                "%s %.1f" % (k, v / 1e9) for k, v in peaks.items() if v)))


def matmul_peak(library="tensorflow", m=4096, k=768, n=3072, rounds=3):
    """Measured fp32 matmul rate of ``library`` on this machine, GFLOP/s.

    Args:
        library: ``"tensorflow"`` (``tf.matmul`` in a ``tf.function``),
            ``"torch"`` (``torch.matmul`` under ``inference_mode``), ``"jax"``
            (``jax.jit(jnp.matmul)``, XLA's CPU dot) or ``"numpy"``; each with
            its default thread count.
        m, k, n: the product ``(m, k) @ (k, n)``; the default is BERT-base's
            feed-forward at batch 32 x length 128.
        rounds: samples; the best one is returned (a peak, not a typical rate).

    Raises:
        ValueError: for an unknown ``library``.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.normal(size=(m, k)).astype("float32")
    b = rng.normal(size=(k, n)).astype("float32")
    if library == "tensorflow":
        import tensorflow as tf

        x, y = tf.constant(a), tf.constant(b)
        fn = tf.function(tf.matmul)
        run = lambda: fn(x, y).numpy()  # noqa: E731
    elif library == "torch":
        import torch

        x, y = torch.from_numpy(a), torch.from_numpy(b)

        def run():
            with torch.inference_mode():
                return torch.matmul(x, y)
    elif library == "jax":
        import jax

        x, y = jax.device_put(a), jax.device_put(b)
        fn = jax.jit(jax.numpy.matmul)
        run = lambda: fn(x, y).block_until_ready()  # noqa: E731
    elif library == "numpy":
        run = lambda: a @ b  # noqa: E731
    else:
        raise ValueError("matmul_peak: unknown library %r (tensorflow, torch, jax, numpy)"
                         % (library,))
    run()
    best = min(timed(run, 3) for _ in range(rounds))
    return 2.0 * m * k * n / best / 1e9


def encoder_flops(batch, seq_len, layers=12, hidden=768, intermediate=3072):
    """FLOP (2 x multiply-adds) of a BERT-style encoder forward pass, matmuls
    only: per layer the Q/K/V/output projections (``4 h^2``), the two
    feed-forward matrices (``2 h i``) per token, and the two attention products
    (``2 s h``) per token. Embedding lookups, softmax and LayerNorm are left
    out (they are not matmuls). A training step is about 3x this."""
    per_token = layers * (4 * hidden * hidden + 2 * hidden * intermediate
                          + 2 * seq_len * hidden)
    return 2.0 * batch * seq_len * per_token


def decoder_step_flops(batch, context, layers=12, hidden=768, intermediate=3072,
                       vocab=50257):
    """FLOP of one cached decoding step of a GPT-style decoder for ``batch``
    rows attending to ``context`` positions, including the vocabulary
    projection (matmuls only, as :func:`encoder_flops`)."""
    per_token = layers * (4 * hidden * hidden + 2 * hidden * intermediate
                          + 2 * context * hidden) + hidden * vocab
    return 2.0 * batch * per_token


def median(values):
    """The median of a non-empty iterable."""
    return statistics.median(list(values))


#: the variables :mod:`bert4keras.allocator` reads; a worker starts without them
#: unless its setting (below) says otherwise, so the caller's shell cannot leak in
ALLOCATOR_VARIABLES = ("BERT4KERAS_KEEP_FREED_MEMORY", "JAX_CPU_ENABLE_ASYNC_DISPATCH")
#: a JAX worker's host-memory setting -> its environment: ``keep`` the
#: allocator's default said explicitly, ``glibc`` glibc's defaults and JAX's
#: asynchronous dispatch, ``async`` kept memory with asynchronous dispatch,
#: ``hugetlb`` glibc's defaults with transparent huge pages (GLIBC_TUNABLES is
#: appended to, not replaced)
JAX_HOST_MEMORY = {
    "keep": {"BERT4KERAS_KEEP_FREED_MEMORY": "1"},
    "glibc": {"BERT4KERAS_KEEP_FREED_MEMORY": "0"},
    "async": {"BERT4KERAS_KEEP_FREED_MEMORY": "1", "JAX_CPU_ENABLE_ASYNC_DISPATCH": "1"},
    "hugetlb": {"BERT4KERAS_KEEP_FREED_MEMORY": "0", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
}


def host_memory_environment(env, setting=None):
    """``env`` (a dict, changed in place and returned) without
    :data:`ALLOCATOR_VARIABLES`, then with :data:`JAX_HOST_MEMORY` ``[setting]``
    (None: the allocator's default). Raises ``KeyError`` for an unknown setting."""
    for variable in ALLOCATOR_VARIABLES:
        env.pop(variable, None)
    for variable, value in (JAX_HOST_MEMORY[setting] if setting else {}).items():
        if variable == "GLIBC_TUNABLES":
            value = ":".join([t for t in env.get(variable, "").split(":") if t] + [value])
        env[variable] = value
    return env
