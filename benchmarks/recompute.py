"""Recompute benchmark: training-step memory and time with and without
per-block recompute (``build_transformer_model(..., recompute=True)``).

The model is a BERT-base-shaped encoder by default (12 layers, hidden 768,
12 heads, FFN 3072, vocabulary 21128, length 128, dropout 0.1) with a small
per-token head (``Dense(8)``, sparse cross-entropy on random labels; no MLM
head), trained with AdamW (``model.train_on_batch``). Every configuration
runs in its own subprocess, so each has a fresh process and its own memory
high-water mark.

Memory: the peak resident set size (RSS) of the worker process, from
``resource.getrusage(RUSAGE_SELF).ru_maxrss``. That high-water mark is what a
machine's memory (or a container limit, or the OOM killer) sees, so it is
what decides whether a batch fits. It includes the Python/TensorFlow runtime,
the weights and the AdamW slots, and graph/XLA compilation, which do not
depend on the batch; the table also shows the part above the RSS measured
after the model and optimizer were built ("activations"), which is what
recompute changes. TensorFlow's allocator statistics
(``tf.config.experimental.get_memory_info('CPU:0')``) read zero on the CPU
device (no statistics are kept there), so they cannot be used here.

Time: a separate worker builds both variants in one process, runs
``--warmup`` untimed steps of each (tracing/compilation included), then
``--steps`` rounds of one step of each, alternating which goes first, so
that a change of load on a shared machine hits both; the table gives the
median and range of the per-round ratios (recompute / plain). Only ratios
are printed, never seconds. With ``--time-largest`` each variant is also
timed at its largest batch within ``--budget-gb`` (time per example; these
two runs are not interleaved). The largest batch is found by doubling from the
largest timed batch that fits (or the first ``--batch-sizes`` entry) until a
worker exceeds the budget (a watchdog thread stops a worker as soon as its
RSS passes the budget, so probing cannot exhaust the machine), then by
bisection to within ``--resolution``; each probe runs one training step.

Target of the issue: 3x the batch at <= 30 % time overhead.

Usage::

    python benchmarks/recompute.py                                # BERT-base, slow on CPU
    python benchmarks/recompute.py --layers 4 --seq-len 64 --batch-sizes 4,8 --budget-gb 3
    python benchmarks/recompute.py --layers 6 --hidden 128 --heads 2 --intermediate 512 \
        --seq-len 64 --batch-sizes 32 --budget-gb 1.3 --resolution 0.25 --parallel-search
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import benchlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=12, help="Transformer blocks")
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--intermediate", type=int, default=3072)
    p.add_argument("--vocab", type=int, default=21128)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-sizes", default="8,16,32",
                   help="comma-separated batch sizes timed with and without recompute")
    p.add_argument("--budget-gb", type=float, default=6.0,
                   help="peak-RSS budget (GB = 2**30 bytes) for the largest-batch search (0: skip)")
    p.add_argument("--max-batch", type=int, default=1024, help="upper end of the search")
    p.add_argument("--resolution", type=float, default=0.125,
                   help="bisection stops when the bracket is within this fraction of the batch")
    p.add_argument("--parallel-search", action="store_true",
                   help="run the two searches' memory probes side by side (two workers at a "
                        "time; peak memory is unaffected, timing is not measured there)")
    p.add_argument("--time-largest", action="store_true",
                   help="also time both variants at their largest batch (examples/s ratio)")
    p.add_argument("--steps", type=int, default=5,
                   help="timed rounds (one step of each variant) of the paired timing")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps (compilation included)")
    p.add_argument("--jit", action="store_true",
                   help="XLA-compile the train step (default: TensorFlow graph mode)")
    p.add_argument("--backend", default="tensorflow", choices=["tensorflow", "jax", "torch"],
                   help="KERAS_BACKEND of the workers")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per worker")
    p.add_argument("--results", default=None, help="also write the measurements as JSON")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=8, help=argparse.SUPPRESS)
    p.add_argument("--recompute", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--limit-bytes", type=float, default=0, help=argparse.SUPPRESS)
    p.add_argument("--pair", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        args.batch_list = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    except ValueError:
        p.error("--batch-sizes must be comma-separated integers, got %r" % args.batch_sizes)
    if not args.batch_list or min(args.batch_list) < 1:
        p.error("--batch-sizes needs positive integers")
    for name in ("layers", "hidden", "heads", "seq_len", "max_batch"):
        if getattr(args, name) < 1:
            p.error("--%s must be >= 1" % name.replace("_", "-"))
    if args.steps < (0 if args.worker else 1):
        p.error("--steps must be >= 1")
    return args


# ---------------------------------------------------------------------------
# Worker (one configuration, in its own process)
# ---------------------------------------------------------------------------


current_rss = benchlib.current_rss
peak_rss = benchlib.peak_rss


def start_watchdog(limit_bytes):
    """Exit with code 3 as soon as RSS passes ``limit_bytes`` (checked every 5 ms)."""
    import threading

    def watch():
        while True:
            if current_rss() > limit_bytes:
                print(json.dumps({"over_budget": True, "rss": current_rss()}), flush=True)
                os._exit(3)
            time.sleep(0.005)

    threading.Thread(target=watch, daemon=True).start()


def build_model(args, recompute):
    """The encoder plus a per-token ``Dense(8)`` head, compiled with AdamW."""
    import keras

    from bert4keras.models import build_transformer_model

    keras.utils.set_random_seed(0)
    encoder = build_transformer_model(
        vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, intermediate_size=args.intermediate,
        max_position=max(512, args.seq_len), dropout_rate=0.1, attention_dropout_rate=0.1,
        recompute=bool(recompute))
    logits = keras.layers.Dense(8, name="Tagger")(encoder.output)
    model = keras.Model(encoder.inputs, logits)
    optimizer = keras.optimizers.AdamW(1e-4)
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=bool(args.jit))
    optimizer.build(model.trainable_variables)
    return model


def worker(args):
    """One process, one JSON line.

    Memory worker: build one variant, train ``warmup + steps`` steps, report
    the peak RSS. Paired timing worker (``--pair``): build both variants in
    this process, warm both up, then time them alternately (the first of
    each round alternates too) so that a change of the machine's load hits
    both; reports the per-round step-time ratios.
    """
    if args.limit_bytes:
        start_watchdog(args.limit_bytes)
    sys.path.insert(0, ROOT)
    import keras
    import numpy as np

    rng = np.random.RandomState(0)
    ids = rng.randint(1, args.vocab, (args.batch, args.seq_len)).astype("int32")
    x = [ids, np.zeros_like(ids)]
    y = rng.randint(0, 8, (args.batch, args.seq_len)).astype("int32")
    if args.pair:
        models = {r: build_model(args, r) for r in (False, True)}
        for model in models.values():
            for _ in range(args.warmup):
                model.train_on_batch(x, y)
        times = {False: [], True: []}
        for round_ in range(args.steps):
            for recompute in ((False, True) if round_ % 2 == 0 else (True, False)):
                start = time.perf_counter()
                models[recompute].train_on_batch(x, y)
                times[recompute].append(time.perf_counter() - start)
        ratios = [b / a for a, b in zip(times[False], times[True])]
        print(json.dumps({"batch": args.batch, "ratios": ratios,
                          "median_ratio": statistics.median(ratios)}), flush=True)
        return
    model = build_model(args, args.recompute)
    built_rss = current_rss()
    times = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        loss = float(np.asarray(model.train_on_batch(x, y)))
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    print(json.dumps({"batch": args.batch, "recompute": bool(args.recompute),
                      "peak_rss": peak_rss(), "built_rss": built_rss,
                      "step_time": statistics.median(times) if times else None,
                      "loss": loss, "backend": keras.backend.backend()}), flush=True)


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------


class WorkerError(RuntimeError):
    """A worker failed for another reason than memory (its stderr is quoted)."""


def run_worker(args, batch, recompute, steps, warmup, limit_bytes=0, pair=False):
    """Measurements of one configuration, or None if it went over ``limit_bytes``
    (stopped by its watchdog) or was killed by the system (out of memory).

    Raises:
        WorkerError: the worker failed otherwise (its stderr is in the message).
    """
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--batch", str(batch),
           "--recompute", str(int(recompute)), "--steps", str(steps), "--warmup", str(warmup),
           "--limit-bytes", str(limit_bytes)] + (["--pair"] if pair else [])
    for name in ("layers", "hidden", "heads", "intermediate", "vocab", "seq_len"):
        cmd += ["--" + name.replace("_", "-"), str(getattr(args, name))]
    if args.jit:
        cmd.append("--jit")
    env = dict(os.environ, KERAS_BACKEND=args.backend, TF_CPP_MIN_LOG_LEVEL="3")
    try:
        result = subprocess.run(cmd, env=env, capture_output=True, text=True,
                                timeout=args.timeout)
    except subprocess.TimeoutExpired as exc:
        raise WorkerError("batch %d recompute=%s: no result within --timeout %s s"
                          % (batch, recompute, args.timeout)) from exc
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    record = json.loads(lines[-1]) if lines else {}
    if record.get("over_budget") or result.returncode == -9:  # watchdog / OOM killer
        return None
    if result.returncode != 0 or not ("peak_rss" in record or "ratios" in record):
        raise WorkerError("batch %d recompute=%s failed (exit %d): %s" % (
            batch, recompute, result.returncode, result.stderr.strip()[-1500:]))
    return record


def largest_batch(args, recompute, budget_bytes, known):
    """Largest batch whose worker stays within ``budget_bytes`` peak RSS.

    ``known`` maps batch sizes already measured to whether they fitted; the
    doubling starts from the largest that fitted (or the first
    ``--batch-sizes`` entry), the bisection stops within ``--resolution``.
    """
    probes = dict(known)

    def fits(batch):
        if batch not in probes:
            record = run_worker(args, batch, recompute, steps=0, warmup=1,
                                limit_bytes=budget_bytes)
            probes[batch] = record is not None and record["peak_rss"] <= budget_bytes
            print("  search recompute=%s batch %d: %s" % (
                recompute, batch, "fits" if probes[batch] else "over"), flush=True)
        return probes[batch]

    low = max([b for b, ok in known.items() if ok], default=0)
    high = min([b for b, ok in known.items() if not ok and b > low], default=None)
    batch = 2 * low if low else args.batch_list[0]
    while high is None and batch <= args.max_batch:  # doubling
        if fits(batch):
            low, batch = batch, 2 * batch
        else:
            high = batch
    if high is None:
        return low, sorted(probes.items())
    while high - low > max(1, int(low * args.resolution)):  # bisection
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low, sorted(probes.items())


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    gb = 1024.0 ** 3
    print(benchlib.machine_line())
    print("Model: %d layers, hidden %d, %d heads, FFN %d, vocab %d, length %d; AdamW; backend %s"
          " (%s)" % (args.layers, args.hidden, args.heads, args.intermediate, args.vocab,
                     args.seq_len, args.backend, "XLA" if args.jit else "graph, no XLA"),
          flush=True)
    rows = []
    for batch in args.batch_list:
        pair = {}
        for recompute in (False, True):  # memory: one step each, in its own process
            pair[recompute] = run_worker(args, batch, recompute, 0, 1)
        pair["timing"] = run_worker(args, batch, False, args.steps, args.warmup, pair=True)
        print("  batch %d measured" % batch, flush=True)
        rows.append((batch, pair))
    search = {}
    if args.budget_gb > 0:
        known = {recompute: {batch: pair[recompute]["peak_rss"] <= args.budget_gb * gb
                             for batch, pair in rows if pair[recompute] is not None}
                 for recompute in (False, True)}
        if args.parallel_search:  # memory does not depend on CPU contention; time does
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(2) as pool:
                futures = {r: pool.submit(largest_batch, args, r, args.budget_gb * gb, known[r])
                           for r in (False, True)}
                search = {r: f.result() for r, f in futures.items()}
        else:
            search = {r: largest_batch(args, r, args.budget_gb * gb, known[r])
                      for r in (False, True)}
    print()
    print("| batch | peak RSS GB (plain / recompute) | peak RSS ratio | activations ratio "
          "| step time ratio (recompute / plain), median [range] |")
    print("|---|---|---|---|---|")
    results = {"args": {k: v for k, v in vars(args).items() if k != "batch_list"}, "rows": [],
               "machine": benchlib.machine()}
    for batch, pair in rows:
        plain, remat = pair[False], pair[True]
        if plain is None or remat is None:
            print("| %d | failed | | | |" % batch)
            continue
        act_plain = plain["peak_rss"] - plain["built_rss"]
        act_remat = remat["peak_rss"] - remat["built_rss"]
        ratios = pair["timing"]["ratios"]
        print("| %d | %.2f / %.2f | %.2f | %.2f | %.2f [%.2f-%.2f] |" % (
            batch, plain["peak_rss"] / gb, remat["peak_rss"] / gb,
            remat["peak_rss"] / plain["peak_rss"], act_remat / max(act_plain, 1),
            pair["timing"]["median_ratio"], min(ratios), max(ratios)))
        results["rows"].append({"batch": batch, "plain": plain, "recompute": remat,
                                "timing": pair["timing"]})
    if search:
        (b_plain, probes_plain), (b_remat, probes_remat) = search[False], search[True]
        results["search"] = {"budget_gb": args.budget_gb, "plain": b_plain,
                             "recompute": b_remat, "probes_plain": probes_plain,
                             "probes_recompute": probes_remat}
        print()
        print("Largest batch within %.2f GB peak RSS: plain %d, recompute %d -> batch ratio %s"
              % (args.budget_gb, b_plain, b_remat,
                 "%.2f" % (b_remat / b_plain) if b_plain else "n/a (plain fits no batch)"))
        if b_plain and b_remat and args.time_largest:
            timed = {r: run_worker(args, b, r, max(3, args.steps), args.warmup)
                     for r, b in ((False, b_plain), (True, b_remat))}
            if timed[False] and timed[True]:
                per_example = ((timed[True]["step_time"] / b_remat)
                               / (timed[False]["step_time"] / b_plain))
                print("At those batches: time per example recompute / plain = %.2f "
                      "(time overhead %+.0f %%)" % (per_example, 100 * (per_example - 1)))
                results["search"]["time_per_example_ratio"] = per_example
                results["search"]["timed"] = timed
    if args.results:
        with open(args.results, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
