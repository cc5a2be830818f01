"""Few-row float32 products on the PyTorch CPU kernels a cached decoding step
can call: torch's own matmul (MKL ``sgemm`` / ``sgemv`` behind ``torch.addmm``)
against oneDNN's inner product (``torch.ops.mkldnn._linear_pointwise``, what
:func:`bert4keras.layers.direct.onednn_linear` calls), measured in one process,
in interleaved rounds.

Why: on an AMD Zen 4 the PyTorch backend's cached decoding ran at 0.41-0.65x
our TensorFlow path; this is the probe that showed where (benchmarks/HISTORY.md:
"Cached decoding"). It times what one GPT-2-small decoding step multiplies:

* ``ffn``: 24 distinct feed-forward kernels stored as Keras keeps them,
  ``(in, out)`` -- 12 of ``768 x 3072`` and 12 of ``3072 x 768`` (226 MB, more
  than any cache) -- times ``rows`` input rows, each kernel once per sample:
  ``addmm`` (``torch.addmm(bias, x, kernel)``), ``onednn view`` (oneDNN on
  the kernel's transposed view, no copy: what a cached step does from 2 rows
  on), ``onednn (out,in)`` (oneDNN on a contiguous ``(out, in)`` copy made
  before timing: what it would cost to store the weights twice), ``onednn
  packed`` (oneDNN on a blocked copy made before timing by
  ``torch.ops.mkldnn._reorder_linear_weight`` for ``direct.PACK_ROWS`` rows:
  what ``CachedDecoder(packed_weights=True)`` keeps);
* ``qkv``: the query, key and value projections of 12 blocks, 36 ``768 x
  768`` kernels: ``packed apart`` (each blocked by itself, three calls per
  block, what ``packed_weights`` did before) and ``packed joined`` (the three
  side by side in one blocked ``2304 x 768`` copy, one call per block: what
  :func:`bert4keras.layers.direct.fused_dense` does inside ``packed_weights``);
  the apart outputs are concatenated (inside the timing) to compare values, so
  that row includes one small copy per block;
* ``head``: GPT-2's tied output projection, ``x @ E^T`` with ``E`` the
  ``50257 x 768`` table: ``matmul view`` (the transposed table as a strided
  view), ``matmul E^T copy`` (a contiguous ``E^T`` made before timing: what a
  cached step did before oneDNN), ``onednn`` (the table as stored), ``onednn
  packed`` (a blocked copy of the table, as ``packed_weights`` keeps one);
* ``ffn addmm, 1 thread``: the ``addmm`` row again with
  ``torch.set_num_threads(1)`` (whether MKL's product uses the second core).

Printed per (workload, rows): the median ms per sample over ``--rounds``, the
weight bytes read per second, and each row's speed over the first row of its
workload (``addmm`` / ``matmul view``) in the same round (median over rounds).
The values of every variant are checked against the first (max |diff|).

Usage::

    python benchmarks/torch_linear.py                 # rows 1,2,4,8, ~1 min
    python benchmarks/torch_linear.py --rows 1,8 --rounds 3 --results out.json
"""

import argparse
import json
import statistics

import numpy as np

import benchlib

PACK_ROWS = 8  # bert4keras.layers.direct.PACK_ROWS (not imported: this script needs only torch)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="1,2,4,8", help="comma-separated input row counts")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    p.add_argument("--reps", type=int, default=10, help="calls per sample (each: all kernels)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", default=None, help="also write the rows as JSON")
    return p.parse_args(argv)


def variants(torch, rows, rng):
    """``{workload: (weight bytes, {name: fn})}`` for ``rows`` input rows; the
    first name of each workload is its reference."""
    op = torch.ops.mkldnn._linear_pointwise
    kernels = [torch.from_numpy(rng.standard_normal(
        (768, 3072) if i % 2 == 0 else (3072, 768), dtype=np.float32)) for i in range(24)]
    biases = [torch.from_numpy(rng.standard_normal(k.shape[1], dtype=np.float32))
              for k in kernels]
    stored = [k.t().contiguous() for k in kernels]
    packed = [torch.ops.mkldnn._reorder_linear_weight(w, PACK_ROWS) for w in stored]
    inputs = {n: torch.from_numpy(rng.standard_normal((rows, n), dtype=np.float32))
              for n in (768, 3072)}
    table = torch.from_numpy(rng.standard_normal((50257, 768), dtype=np.float32))
    table_t = table.t().contiguous()
    table_packed = torch.ops.mkldnn._reorder_linear_weight(table, PACK_ROWS)
    x = inputs[768]

    def each(fn, copies=stored):
        return lambda: [fn(inputs[k.shape[0]], k, w, b)
                        for k, w, b in zip(kernels, copies, biases)]

    ffn = {
        "addmm": each(lambda x, k, w, b: torch.addmm(b, x, k)),
        "onednn view": each(lambda x, k, w, b: op(x, k.t(), b, "none", [], "")),
        "onednn (out,in)": each(lambda x, k, w, b: op(x, w, b, "none", [], "")),
        "onednn packed": each(lambda x, k, w, b: op(x, w, b, "none", [], ""), packed),
    }
    # the q, k, v projections of 12 GPT-2 blocks: 36 768 x 768 kernels, blocked one by
    # one vs side by side (bert4keras.layers.direct.fused_dense); values compared joined
    projections = [torch.from_numpy(rng.standard_normal((768, 768), dtype=np.float32))
                   for _ in range(36)]
    shifts = [torch.from_numpy(rng.standard_normal(768, dtype=np.float32)) for _ in range(36)]
    apart = [torch.ops.mkldnn._reorder_linear_weight(k.t().contiguous(), PACK_ROWS)
             for k in projections]
    joined = [torch.ops.mkldnn._reorder_linear_weight(
        torch.cat([k.t() for k in projections[i:i + 3]]), PACK_ROWS) for i in range(0, 36, 3)]
    joined_bias = [torch.cat(shifts[i:i + 3]) for i in range(0, 36, 3)]
    qkv = {
        "packed apart": lambda: [torch.cat([op(x, w, b, "none", [], "") for w, b in zip(
            apart[i:i + 3], shifts[i:i + 3])], dim=-1) for i in range(0, 36, 3)],
        "packed joined": lambda: [op(x, w, b, "none", [], "")
                                  for w, b in zip(joined, joined_bias)],
    }
    head = {
        "matmul view": lambda: torch.matmul(x, table.t()),
        "matmul E^T copy": lambda: torch.matmul(x, table_t),
        "onednn": lambda: op(x, table, None, "none", [], ""),
        "onednn packed": lambda: op(x, table_packed, None, "none", [], ""),
    }
    return {"ffn": (sum(k.numel() * 4 for k in kernels), ffn),
            "qkv": (sum(k.numel() * 4 for k in projections), qkv),
            "head": (table.numel() * 4, head)}


def max_diff(torch, a, b):
    a, b = (x if isinstance(x, list) else [x] for x in (a, b))
    return max(float((u - v).abs().max()) for u, v in zip(a, b))


def main(argv=None):
    args = parse_args(argv)
    import torch

    print(benchlib.machine_line(), flush=True)
    threads = torch.get_num_threads()
    print("torch %s, %d threads; oneDNN available: %s" % (
        torch.__version__, threads, torch.backends.mkldnn.is_available()), flush=True)
    rng = np.random.default_rng(args.seed)
    table = []
    with torch.inference_mode():
        for rows in [int(r) for r in args.rows.split(",")]:
            for workload, (nbytes, fns) in variants(torch, rows, rng).items():
                names = list(fns)
                if workload == "ffn":  # the same kernel, one thread
                    fns["addmm, 1 thread"] = fns["addmm"]
                    names.append("addmm, 1 thread")
                reference = fns[names[0]]()
                diffs = {n: max_diff(torch, reference, fns[n]()) for n in names[1:]}
                times = {n: [] for n in names}
                for r in range(args.rounds):
                    for n in names[r % len(names):] + names[:r % len(names)]:
                        torch.set_num_threads(1 if n.endswith("1 thread") else threads)
                        times[n].append(benchlib.timed(fns[n], args.reps))
                torch.set_num_threads(threads)
                for n in names:
                    ms = statistics.median(times[n]) * 1e3
                    ratio = statistics.median(
                        a / b for a, b in zip(times[names[0]], times[n]))
                    table.append(dict(workload=workload, rows=rows, variant=n, ms=ms,
                                      gb_per_s=nbytes / ms / 1e6, over_reference=ratio,
                                      max_diff=diffs.get(n, 0.0)))
                    print("%-5s rows %d  %-17s %8.2f ms  %6.1f GB/s  %5.2fx  diff %.1e" % (
                        workload, rows, n, ms, nbytes / ms / 1e6, ratio,
                        diffs.get(n, 0.0)), flush=True)
    if args.results:
        with open(args.results, "w") as f:
            json.dump(dict(args=vars(args), machine=benchlib.machine(), rows=table), f,
                      indent=2)
    return table


if __name__ == "__main__":
    main()
