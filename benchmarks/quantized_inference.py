"""Quantized inference: float32 vs int8 vs bfloat16, ours on each Keras backend and HF's.

Models (encoder forward, inference; the output is the last hidden states):

* ``base``: the BERT-base shape (12 layers, hidden 768, 12 heads, FFN 3072,
  vocab 21128) from a config dict, random weights (one set, shared by every
  backend through a ``.weights.h5`` file);
* ``small``: the shipped Chinese BERT, ``checkpoints/chinese_bert_small``
  (4 layers, hidden 192), its pretrained weights.

Rows, for every model and batch size (``--batches``, default 1, 8, 32; length
``--seq-len``, default 128):

* ``ours fp32`` / ``ours int8`` / ``ours bf16``: ``build_transformer_model`` on
  the TensorFlow backend, called in a ``tf.function``; ``int8`` is a copy after
  Keras 3's ``model.quantize("int8")`` (int8 kernels of every attention /
  feed-forward ``Dense``, per-token int8 activations; embeddings and LayerNorm
  stay float32; see :mod:`bert4keras.layers.quantization`), run as
  ``quantize_model`` sets it: in graph mode where TensorFlow's oneDNN u8 x s8
  GEMM is exact (bert4keras' ``Dense`` sends its integer product there,
  :func:`bert4keras.layers.tf_direct.int8_dense`), else compiled by XLA;
  ``--tf-int8-xla`` adds ``ours int8-xla``, the same model under XLA (XLA's
  int8 dot); ``bf16`` a copy under the dtype policy ``bfloat16``; fp32 and
  bf16 run in graph mode (Keras' default on a CPU);
* ``ours-jax ...`` / ``ours-torch ...`` (``--backends``): the same three on
  Keras' JAX backend (``jax.jit`` of ``stateless_call``) and torch backend
  (eager, ``inference_mode``; there the int8 ``Dense`` multiplies through
  ``torch._int_mm``, :func:`bert4keras.layers.direct.int8_dense`);
* ``HF fp32`` / ``HF int8`` / ``HF bf16``: ``transformers.BertModel`` with the
  same weights, ``eval()``, ``torch.inference_mode()``; ``int8`` after
  ``torch.ao.quantization.quantize_dynamic`` (the peer's CPU recipe), ``bf16``
  cast with ``.to(torch.bfloat16)``.

Each backend's rows live in their own worker process (a Keras backend is chosen
per process); the parent interleaves the rounds across all workers (rotating
the order), so every ratio compares samples taken side by side. Printed per
row: median ms per batch over ``--rounds`` samples (a sample is the mean of
``--iters`` calls after ``--warmup`` untimed calls), sequences/s, the speed-up
over the same backend's fp32 row and over ``ours fp32`` (TensorFlow, the
target's yardstick) in the same round, ours / HF at the same precision, the
effective rate as a fraction of this machine's fp32 ``tf.matmul`` peak
(``benchlib.matmul_peak``, measured in the same run), the max output difference
against the same backend's fp32, and the peak RSS of a fresh process that
builds only that row's model and runs one batch at the largest size
(``--no-rss`` skips those processes).

First, a kernel probe per backend at the feed-forward shape of the largest
batch: fp32, int8 x int8 -> int32 as Keras' int8 ``Dense`` calls it
(``keras.ops.matmul``; on TensorFlow also under XLA), the backend's own int8
kernel where Keras does not use it (``torch._int_mm``, which bert4keras'
``Dense`` calls instead on torch), and bf16, each in
G(FL)OP/s with the kernel that ran:
oneDNN's verbose log (``ONEDNN_VERBOSE=1``) for TensorFlow and torch (no
oneDNN line: Eigen / the library's BLAS ran), the compiled HLO's fusion kind
for JAX (``ynn_fusion``: XLA's YNNPACK kernels). When int8 is no faster there,
no int8 model on that backend can be.

``--model PATH.keras`` (a classifier saved by
``examples/task_sentiment_classification.py --output``) adds the accuracy on
the sentiment test split (``bert4keras.datasets.load_sentiment_reviews``,
``--limit`` texts) of that model in fp32, int8 and bf16, on every backend of
``--accuracy-backends``, and checks that the int8 copy saved as ``.keras``
reloads in a new process with ``keras.saving.load_model`` after ``import
bert4keras``.

Usage::

    python benchmarks/quantized_inference.py                 # full run (see README)
    python benchmarks/quantized_inference.py --quick         # tiny smoke size
    python benchmarks/quantized_inference.py --models base --batches 32 --backends tensorflow,jax
    python benchmarks/quantized_inference.py --skip-speed --model runs/sentiment/model.keras
"""

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import benchlib  # noqa: E402

SMALL = os.path.join(ROOT, "checkpoints", "chinese_bert_small")
BASE = dict(vocab_size=21128, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072)
QUICK = dict(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
             intermediate_size=128)
BACKENDS = ("tensorflow", "jax", "torch")
PRECISIONS = ("fp32", "int8", "bf16")
REPLY = "@@QI "  # prefix of the worker's protocol lines on stdout


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--models", default="base,small", help="comma list of base, small")
    p.add_argument("--batches", default=None,
                   help="comma list of batch sizes (default 1,8,32; --quick: 1,2)")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--backends", default=None,
                   help="Keras backends of our rows, comma list of tensorflow, jax, torch "
                        "(default tensorflow,jax; --quick: tensorflow)")
    p.add_argument("--probe-backends", default=None,
                   help="backends of the kernel probe (default tensorflow,jax,torch; "
                        "--quick: tensorflow; '' to skip it)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    p.add_argument("--iters", type=int, default=1, help="calls per timing sample")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per row")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: defaults)")
    p.add_argument("--no-torch", action="store_true", help="skip the transformers rows")
    p.add_argument("--skip-rows", default="",
                   help="comma list of non-fp32 rows to leave out, e.g. 'ours int8' (TensorFlow's "
                        "int8 is the slowest row; the probe shows why)")
    p.add_argument("--tf-int8", choices=("auto", "graph", "xla"), default="auto",
                   help="how the TensorFlow 'ours int8' row (and --model's int8) runs: as "
                        "quantize_model sets it (auto), in graph mode with bert4keras' oneDNN "
                        "int8 product (graph), or under XLA (xla)")
    p.add_argument("--tf-int8-xla", action="store_true",
                   help="add an 'ours int8-xla' row: the TensorFlow int8 model under XLA "
                        "(XLA's int8 dot) instead of graph mode with bert4keras' oneDNN int8 "
                        "product, which quantize_model picks where that is exact")
    p.add_argument("--no-rss", action="store_true",
                   help="skip the fresh process per row that measures its peak RSS (--quick "
                        "skips it too; the worker processes' peak RSS is printed anyway)")
    p.add_argument("--skip-speed", action="store_true", help="only the --model accuracy")
    p.add_argument("--quick", action="store_true",
                   help="smoke size: 'base' becomes a 2-layer hidden-64 model, batches 1,2, "
                        "length 16, 1 round, 1 warmup")
    p.add_argument("--model", default=None, metavar="PATH.keras",
                   help="a fine-tuned sentiment classifier: test accuracy fp32/int8/bf16")
    p.add_argument("--accuracy-backends", default="tensorflow",
                   help="--model: Keras backends to score it on (comma list)")
    p.add_argument("--vocab", default=os.path.join(SMALL, "vocab.txt"),
                   help="vocab of --model (default: the shipped small BERT's)")
    p.add_argument("--maxlen", type=int, default=128, help="--model: tokens per text")
    p.add_argument("--limit", type=int, default=0, help="--model: test texts (0: all)")
    p.add_argument("--results", default=None, help="write the figures as JSON here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: JSON spec
    p.add_argument("--probe-child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--accuracy-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.seq_len, args.rounds, args.warmup = 16, 1, 1
    if args.batches is None:
        args.batches = "1,2" if args.quick else "1,8,32"
    if args.backends is None:
        args.backends = "tensorflow" if args.quick else "tensorflow,jax"
    if args.probe_backends is None:
        args.probe_backends = "tensorflow" if args.quick else "tensorflow,jax,torch"
    args.no_rss = args.no_rss or args.quick
    args.skip_rows = {row.strip() for row in args.skip_rows.split(",") if row.strip()}
    if any(row.endswith(" fp32") for row in args.skip_rows):
        p.error("--skip-rows: the fp32 rows are the yardsticks, they cannot be skipped")
    for name in args.backends.split(",") + [b for b in args.probe_backends.split(",") if b] \
            + args.accuracy_backends.split(","):
        if name not in BACKENDS:
            p.error("unknown backend %r (one of %s)" % (name, ", ".join(BACKENDS)))
    return args


def child_env(backend, **extra):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def row_name(lib, precision):
    """``('tensorflow', 'int8')`` -> ``'ours int8'``; ``('jax', ..)`` -> ``'ours-jax ..'``."""
    if lib == "hf":
        return "HF " + precision
    return ("ours " if lib == "tensorflow" else "ours-%s " % lib) + precision


# -- our models (inside a worker) ---------------------------------------------------
def build_ours(name, args, weights_dir):
    """``(transformer, config dict)`` for ``'base'`` (random, the weights file
    shared by all workers) or ``'small'`` (shipped checkpoint)."""
    import keras

    from bert4keras.models import build_transformer_model

    keras.utils.set_random_seed(args.seed)
    if name == "small":
        with open(os.path.join(SMALL, "bert_config.json")) as f:
            config = json.load(f)
        transformer = build_transformer_model(
            os.path.join(SMALL, "bert_config.json"), os.path.join(SMALL, "bert_model.ckpt"),
            dropout_rate=0.0, return_keras_model=False)
    else:
        config = dict(QUICK if args.quick else BASE)
        transformer = build_transformer_model(None, max_position=512, dropout_rate=0.0,
                                              return_keras_model=False, **config)
        path = os.path.join(weights_dir, "base.weights.h5")
        if os.path.exists(path):
            transformer.model.load_weights(path)
        else:
            transformer.model.save_weights(path)
    config.setdefault("max_position_embeddings", 512)
    return transformer, config


def variant(model, precision, tf_int8="auto"):
    """``(model, quantize report or None)``: ``model`` itself (fp32), an int8
    copy (Keras' ``quantize``) or a bfloat16 copy, holding the same weights.
    ``tf_int8`` (``--tf-int8``): ``'graph'`` / ``'xla'`` override the
    TensorFlow int8 model's ``jit_compile`` that ``quantize_model`` chose."""
    from bert4keras.layers.quantization import quantize_model, with_dtype_policy

    if precision == "fp32":
        return model, None
    if precision == "bf16":
        return with_dtype_policy(model, "bfloat16"), None
    int8 = with_dtype_policy(model, "float32")
    report = quantize_model(int8, "int8")
    if precision == "int8-xla" or tf_int8 == "xla":  # TF: XLA's int8 dot
        int8.jit_compile = True
    elif tf_int8 == "graph":  # TF: graph mode, bert4keras' oneDNN int8 product
        int8.jit_compile = False
    return int8, report


def compiled_forward(model, backend):
    """``inputs (list of int32 arrays) -> float32 numpy`` run the way each
    backend runs fastest: ``tf.function``, ``jax.jit`` of ``stateless_call``,
    torch eager under ``inference_mode``."""
    if backend == "tensorflow":
        import tensorflow as tf

        # XLA where the model asks for it (quantize_model sets jit_compile for
        # int8: False where TF's oneDNN u8 x s8 GEMM is exact, which bert4keras'
        # Dense then calls, else True); fp32 and bf16 run in graph mode, Keras'
        # choice on a CPU and their faster path here
        fn = tf.function(lambda x: model(x, training=False),
                         jit_compile=bool(getattr(model, "jit_compile", False)))
        return lambda x: np.asarray(fn([tf.constant(a) for a in x]), "float32")
    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        frozen = [v.value for v in model.non_trainable_variables]
        fn = jax.jit(lambda t, f, x: model.stateless_call(t, f, x, training=False)[0])
        return lambda x: np.asarray(fn(trainable, frozen, x), "float32")
    import torch

    def run(x):
        with torch.inference_mode():
            return model(x, training=False).float().cpu().numpy()
    return run


# -- the peer -------------------------------------------------------------------------
def torch_variants(transformer, config, precisions):
    """``transformers.BertModel`` with our weights: fp32, dynamic int8, bf16."""
    import warnings

    import torch
    from transformers import BertConfig, BertModel

    hf_config = BertConfig(
        vocab_size=config["vocab_size"], hidden_size=config["hidden_size"],
        num_hidden_layers=config["num_hidden_layers"],
        num_attention_heads=config["num_attention_heads"],
        intermediate_size=config["intermediate_size"],
        max_position_embeddings=config["max_position_embeddings"], type_vocab_size=2,
        hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        layer_norm_eps=1e-12)
    model = BertModel(hf_config, add_pooling_layer=False).eval()
    state = {name[len("bert."):]: torch.from_numpy(np.array(value))
             for name, value in transformer.checkpoint_tensors("hf").items()
             if name.startswith("bert.") and "pooler" not in name}
    missing, unexpected = model.load_state_dict(state, strict=False)
    buffers = {name for name, _ in model.named_buffers()}
    if unexpected or set(missing) - buffers:
        raise RuntimeError("weight copy to transformers failed: missing %s, unexpected %s"
                           % (sorted(set(missing) - buffers), unexpected))
    out = {}
    for precision in precisions:
        if precision == "fp32":
            out[precision] = model
        elif precision == "bf16":
            out[precision] = copy.deepcopy(model).to(torch.bfloat16)
        else:
            with warnings.catch_warnings():  # torch.ao.quantization's deprecation notices
                warnings.simplefilter("ignore")
                out[precision] = torch.ao.quantization.quantize_dynamic(
                    copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
    return out


def hf_forward(model):
    import torch

    def run(x):
        ids = torch.from_numpy(x[0].astype("int64"))
        with torch.inference_mode():
            return model(input_ids=ids, token_type_ids=torch.from_numpy(x[1].astype("int64")),
                         attention_mask=torch.ones_like(ids)).last_hidden_state.float().numpy()
    return run


def batch_inputs(batch, seq_len, vocab_size, seed):
    """The same ``[token_ids, segment_ids]`` (int32, ``(batch, seq_len)``) in every worker."""
    ids = np.random.default_rng(seed + batch).integers(1, vocab_size, size=(batch, seq_len))
    seg = np.zeros_like(ids)
    seg[:, seq_len // 2:] = 1
    return [ids.astype("int32"), seg.astype("int32")]


def worker_main(spec, args):
    """A worker process: builds ``spec['rows']`` (precisions of library
    ``spec['lib']``: a Keras backend or ``'hf'``) of model ``spec['model']``,
    then answers JSON commands on stdin (``batch``, ``time``, ``quit``)."""
    lib, tmp = spec["lib"], spec["tmp"]
    if lib == "hf":
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
    elif lib == "tensorflow" and args.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    if lib == "tensorflow":
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")  # retracing notices for a new batch size
    transformer, config = build_ours(spec["model"], args, tmp)
    fns, info = {}, {"quantized_layers": None, "float_layers": None}
    if lib == "hf":
        fns = {p: hf_forward(m) for p, m in
               torch_variants(transformer, config, spec["rows"]).items()}
    else:
        for precision in spec["rows"]:
            model, report = variant(transformer.model, precision, args.tf_int8)
            fns[precision] = compiled_forward(model, lib)
            if report:
                info["quantized_layers"] = len(report["quantized"])
                info["float_layers"] = sorted(
                    {r.split(" ")[0] if "bert4keras Embedding" not in r else "Embedding"
                     for r in report["skipped"].values()})
    del transformer
    reply = lambda obj: print(REPLY + json.dumps(obj), flush=True)  # noqa: E731
    reply(dict(info, ready=True, vocab_size=config["vocab_size"]))
    inputs = None
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "batch":
            inputs = batch_inputs(command["batch"], args.seq_len, config["vocab_size"],
                                  args.seed)
            for precision, fn in fns.items():
                out = fn(inputs)  # first call: trace / compile
                np.save(os.path.join(tmp, "%s-%s-%s-%d.npy" % (
                    spec["model"], lib, precision, command["batch"])), out)
                for _ in range(args.warmup - 1):
                    fn(inputs)
            reply({"ok": True})
        elif command["cmd"] == "time":
            fn = fns[command["row"]]
            reply({"s": benchlib.timed(lambda: fn(inputs), args.iters)})
        else:
            reply({"peak_rss": benchlib.peak_rss()})
            return


class Worker:
    """Parent side of one worker process."""

    def __init__(self, lib, model, rows, args, tmp):
        spec = dict(lib=lib, model=model, rows=list(rows), tmp=tmp)
        self.lib, self.rows = lib, list(rows)
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
            + worker_argv(args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=child_env("torch" if lib == "hf" else lib), text=True, bufsize=1)
        self.info = self.read()

    def read(self):
        for line in self.proc.stdout:
            if line.startswith(REPLY):
                return json.loads(line[len(REPLY):])
        raise RuntimeError("quantized_inference worker %s (%s) died, exit code %s; see its "
                           "stderr above" % (self.lib, self.rows, self.proc.wait()))

    def ask(self, **command):
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self):
        rss = self.ask(cmd="quit")["peak_rss"]
        self.proc.wait()
        return rss


def worker_argv(args):
    """The flags a worker needs to rebuild the same models and inputs."""
    out = ["--seq-len", str(args.seq_len), "--warmup", str(args.warmup), "--iters",
           str(args.iters), "--threads", str(args.threads), "--seed", str(args.seed),
           "--tf-int8", args.tf_int8]
    return out + (["--quick"] if args.quick else [])


# -- timing -----------------------------------------------------------------------------
def speed(name, args, peak, lines, results, tmp):
    """Time every row of model ``name`` at every batch size in interleaved
    rounds across the workers; print and record."""
    libs = [b for b in args.backends.split(",")] + ([] if args.no_torch else ["hf"])
    rows = {lib: [p for p in PRECISIONS if row_name(lib, p) not in args.skip_rows]
            + (["int8-xla"] if lib == "tensorflow" and args.tf_int8_xla else [])
            for lib in libs}
    workers = [Worker(libs[0], name, rows[libs[0]], args, tmp)]  # first: writes the weights
    workers += [Worker(lib, name, rows[lib], args, tmp) for lib in libs[1:]]
    for worker in workers:
        if worker.info["quantized_layers"] is not None:
            results.setdefault("quantized_layers", {}).setdefault(
                name, worker.info["quantized_layers"])
            results.setdefault("quantized_layers_by_backend", {}).setdefault(
                name, {})[worker.lib] = worker.info["quantized_layers"]
            results.setdefault("float_layers", {})[name] = worker.info["float_layers"]
    config = dict(QUICK if args.quick else BASE)
    if name == "small":
        with open(os.path.join(SMALL, "bert_config.json")) as f:
            config = {k: v for k, v in json.load(f).items() if k in BASE}
    batches = [int(b) for b in args.batches.split(",")]
    for batch in batches:
        for worker in workers:
            worker.ask(cmd="batch", batch=batch)
        order = [(w, p) for w in workers for p in w.rows]
        samples = {(w.lib, p): [] for w, p in order}
        for _ in range(args.rounds):
            order = order[1:] + order[:1]  # rotate so no row always follows another
            for worker, precision in order:
                samples[(worker.lib, precision)].append(
                    worker.ask(cmd="time", row=precision)["s"])
        outputs = {key: np.load(os.path.join(tmp, "%s-%s-%s-%d.npy" % (
            name, key[0], key[1], batch))) for key in samples}
        flops = benchlib.encoder_flops(batch, args.seq_len, config["num_hidden_layers"],
                                       config["hidden_size"], config["intermediate_size"])
        start = len(lines)
        lines.append("\n%s, batch %d x %d (%d rounds x %d iters; %.1f GFLOP per batch):" % (
            name, batch, args.seq_len, args.rounds, args.iters, flops / 1e9))
        lines.append("  %-15s %9s %8s %9s %9s %8s %9s %9s" % (
            "row", "ms/batch", "seq/s", "vs ownfp32", "vs oursfp32", "ours/HF", "of peak",
            "max|d|"))
        for (lib, precision), values in samples.items():
            seconds = statistics.median(values)
            own = samples[(lib, "fp32")]
            ratio = statistics.median(a / b for a, b in zip(own, values))
            tf_ratio = (statistics.median(a / b for a, b in zip(
                samples[("tensorflow", "fp32")], values))
                if ("tensorflow", "fp32") in samples else None)
            peer = samples.get(("hf", precision)) if lib != "hf" else None
            vs_hf = statistics.median(b / a for a, b in zip(values, peer)) if peer else None
            diff = np.abs(outputs[(lib, precision)] - outputs[(lib, "fp32")])
            fraction = flops / seconds / 1e9 / peak if peak else None
            lines.append("  %-15s %9.1f %8.1f %9.2fx %10s %8s %8s %9.2e" % (
                row_name(lib, precision), 1000 * seconds, batch / seconds, ratio,
                "%.2fx" % tf_ratio if tf_ratio else "", "%.2fx" % vs_hf if vs_hf else "",
                "%.1f%%" % (100 * fraction) if fraction else "", diff.max()))
            results.setdefault("rows", []).append(dict(
                model=name, batch=batch, seq_len=args.seq_len, row=row_name(lib, precision),
                backend=lib, precision=precision, ms=1000 * seconds,
                seq_per_s=batch / seconds, speedup_vs_own_fp32=ratio,
                speedup_vs_ours_tf_fp32=tf_ratio, ours_over_hf=vs_hf,
                fraction_of_fp32_peak=fraction, max_abs_diff_vs_own_fp32=float(diff.max()),
                mean_abs_diff_vs_own_fp32=float(diff.mean())))
        fp32 = outputs.get(("tensorflow", "fp32"))
        for key, out in outputs.items():
            if fp32 is not None and key[1] == "fp32" and key[0] != "tensorflow":
                lines.append("  %s vs ours fp32: max|d| %.2e" % (
                    row_name(*key), np.abs(out - fp32).max()))
        print("\n".join(lines[start:]), flush=True)
    rss = {w.lib: w.close() for w in workers}
    lines.append("  peak RSS of the worker processes (all three rows each): %s" % ", ".join(
        "%s %.0f MB" % (lib, value / 2**20) for lib, value in rss.items()))
    print(lines[-1], flush=True)
    if not args.no_rss:
        lines.append("  peak RSS, a fresh process per row (build + one batch %d x %d):" % (
            max(batches), args.seq_len))
        for lib in libs:
            for precision in rows[lib]:
                worker = Worker(lib, name, [precision], args, tmp)
                worker.ask(cmd="batch", batch=max(batches))
                value = worker.close()
                lines.append("    %-15s %7.0f MB" % (row_name(lib, precision), value / 2**20))
                for row in results["rows"]:
                    if row["model"] == name and row["row"] == row_name(lib, precision):
                        row["peak_rss_mb"] = value / 2**20
        print("\n".join(lines[-1 - sum(map(len, rows.values())):]), flush=True)
    results.setdefault("worker_peak_rss_mb", {})[name] = {k: v / 2**20 for k, v in rss.items()}


# -- kernel probe --------------------------------------------------------------------
def jax_kernel(fn, *operands):
    """What XLA CPU compiled ``fn`` to: the custom fusion / call holding the dot."""
    import re

    text = fn.lower(*operands).compile().as_text()
    for pattern, label in (("ynn_fusion", "YNNPACK (XLA ynn_fusion)"),
                           ("xnn_fusion", "XNNPACK (XLA xnn_fusion)"),
                           ("onednn", "oneDNN (XLA custom call)")):
        if pattern in text:
            return label
    found = re.search(r'custom_call_target="([^"]+)"', text)
    return "XLA %s" % (found.group(1) if found else "dot (Eigen)")


def probe_child(backend, args):
    """Runs in a process with ``ONEDNN_VERBOSE=1``: times the matmul cases of
    ``backend`` and prints them as JSON (the kernels are read by the parent)."""
    import keras

    config = QUICK if args.quick else BASE
    m = max(int(b) for b in args.batches.split(",")) * args.seq_len
    k, n = config["hidden_size"], config["intermediate_size"]
    rng = np.random.default_rng(args.seed)
    a = rng.normal(size=(m, k)).astype("float32")
    b = rng.normal(size=(k, n)).astype("float32")
    a8, b8 = (np.clip(np.round(x * 30), -127, 127).astype("int8") for x in (a, b))
    if backend == "tensorflow":
        import tensorflow as tf

        jit = lambda f: tf.function(f, jit_compile=False)  # noqa: E731
        cast = lambda x, dtype: tf.cast(tf.constant(x), dtype)  # noqa: E731
        sync = lambda y: y.numpy()  # noqa: E731
    elif backend == "jax":
        import jax
        import jax.numpy as jnp

        jit = jax.jit
        cast = lambda x, dtype: jnp.asarray(x).astype(getattr(jnp, dtype))  # noqa: E731
        sync = lambda y: y.block_until_ready()  # noqa: E731
    else:
        import torch

        jit, sync = (lambda f: f), (lambda y: y)
        cast = lambda x, dtype: torch.from_numpy(x).to(getattr(torch, dtype))  # noqa: E731
    cases = {"fp32": (keras.ops.matmul, a, b, "float32"),
             "int8->int32": (keras.ops.matmul, a8, b8, "int8"),
             "bf16": (keras.ops.matmul, a, b, "bfloat16")}
    if backend == "torch":
        cases["torch._int_mm"] = (torch._int_mm, a8, b8, "int8")
    if backend == "tensorflow":  # the int8 model's paths (quantize_model picks one)
        from bert4keras.layers.tf_direct import u8s8_available, u8s8_matmul

        cases["int8->int32 XLA"] = (keras.ops.matmul, a8, b8, "int8")
    if backend == "tensorflow" and u8s8_available():
        # bert4keras' Dense in graph mode: oneDNN's u8 x s8 GEMM (the shifted inputs)
        cases["u8s8->int32 oneDNN"] = (u8s8_matmul, (a8.astype("int16") + 128).astype("uint8"),
                                       b8, "uint8|int8")
    out = {"shape": [m, k, n]}
    for case, (op, x, y, dtype) in cases.items():
        x_dtype, _, y_dtype = dtype.partition("|")
        x, y = cast(x, x_dtype), cast(y, y_dtype or x_dtype)
        fn = tf.function(op, jit_compile=True) if case.endswith(" XLA") else jit(op)
        run = lambda: sync(fn(x, y))  # noqa: E731
        if backend == "torch":
            import torch

            with torch.inference_mode():
                run()
                seconds = min(benchlib.timed(run, args.iters) for _ in range(2))
        else:
            run()
            seconds = min(benchlib.timed(run, args.iters) for _ in range(2))
        out[case] = {"gops": 2.0 * m * k * n / seconds / 1e9}
        if backend == "jax":
            out[case]["kernel"] = jax_kernel(fn, x, y)
    if backend == "tensorflow":
        out["fp32_peak"] = benchlib.matmul_peak("tensorflow")
    print(REPLY + json.dumps(out), flush=True)


def onednn_kernels(stdout, backend):
    """Map the probe's dtype signature to the oneDNN primitive that executed it,
    from ``ONEDNN_VERBOSE`` lines (``primitive,exec,cpu,<kind>,<impl>,..,<dtypes>``)."""
    found = {}
    for line in stdout.splitlines():
        fields = line.split(",")
        if not line.startswith("onednn_verbose") or "exec" not in fields:
            continue
        at = fields.index("exec")
        kind, impl, desc = fields[at + 2], fields[at + 3], ",".join(fields[at + 4:])
        if kind == "reorder":  # a layout change of an operand, not the product
            continue
        # Keras' int8 matmul on torch/CPU casts to int32 (no oneDNN int kernel);
        # the s8 primitive there is torch._int_mm's
        int8_case = "torch._int_mm" if backend == "torch" else "int8->int32"
        tags = [("fp32", "f32"), (int8_case, "s8"), ("bf16", "bf16")]
        if backend == "tensorflow":  # bert4keras' int8 Dense in graph mode
            tags.append(("u8s8->int32 oneDNN", "u8"))
        for case, tag in tags:
            if "src_%s" % tag in desc or "src:%s" % tag in desc:
                found.setdefault(case, ("oneDNN %s %s" % (kind, impl)).strip())
    return found


def kernel_probe(args, lines, results):
    """The matmul probe of every backend of ``--probe-backends``, each in its own
    process with ``ONEDNN_VERBOSE=1``; returns TensorFlow's fp32 matmul peak."""
    peak = None
    lines.append("\nkernel probe: (m x k) @ (k x n) at the feed-forward shape, the op Keras' "
                 "Dense calls (keras.ops.matmul), best of 2:")
    for backend in [b for b in args.probe_backends.split(",") if b]:
        run = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--probe-child", backend]
            + worker_argv(args) + ["--batches", args.batches],
            capture_output=True, text=True, env=child_env(backend, ONEDNN_VERBOSE="1"))
        replies = [line for line in run.stdout.splitlines() if line.startswith(REPLY)]
        if run.returncode or not replies:
            lines.append("  %s: probe failed: %s" % (backend, run.stderr[-400:]))
            continue
        out = json.loads(replies[-1][len(REPLY):])
        if backend != "jax":
            kernels = onednn_kernels(run.stdout, backend)
            for case in out:
                if isinstance(out[case], dict) and case.endswith(" XLA"):
                    out[case]["kernel"] = "XLA:CPU's compiled dot (jit_compile=True)"
                elif isinstance(out[case], dict):
                    out[case]["kernel"] = kernels.get(case, "no oneDNN primitive (%s)" % (
                        "Eigen" if backend == "tensorflow" else
                        "MKL / torch's own loops"))
        peak = out.pop("fp32_peak", peak)
        m, k, n = out.pop("shape")
        lines.append("  %s (%d x %d) @ (%d x %d):" % (backend, m, k, k, n))
        for case, row in out.items():
            lines.append("    %-18s %8.1f G(FL)OP/s  %5.2fx fp32   %s" % (
                case, row["gops"], row["gops"] / out["fp32"]["gops"], row["kernel"]))
        results.setdefault("kernels", {})[backend] = out
        if backend == "tensorflow":  # the yardstick keys of earlier results files
            results["matmul"] = {case: row["gops"] for case, row in out.items()}
    if peak:
        lines.append("  fp32 matmul peak (benchlib.matmul_peak('tensorflow'), 4096x768x3072): "
                     "%.1f GFLOP/s" % peak)
        results["fp32_matmul_peak_gflops"] = peak
    print("\n".join(lines), flush=True)
    return peak


# -- accuracy of a fine-tuned classifier ---------------------------------------
def accuracy_child(backend, args):
    """fp32 / int8 / bf16 test accuracy of the classifier at ``args.model`` on
    the current Keras backend; prints a JSON reply."""
    import keras

    from bert4keras.datasets import load_sentiment_reviews
    from bert4keras.tokenizers import Tokenizer

    model = keras.saving.load_model(args.model)
    models, reports = {}, {}
    for precision in PRECISIONS:
        models[precision], reports[precision] = variant(model, precision, args.tf_int8)
    tokenizer = Tokenizer(args.vocab, do_lower_case=True)
    test = load_sentiment_reviews()["test"]
    if args.limit:
        test = test[: args.limit]
    predictions = {key: [] for key in models}
    labels = []
    for start in range(0, len(test), 32):
        chunk = test[start:start + 32]
        ids = [tokenizer.encode(text, maxlen=args.maxlen)[0] for text, _ in chunk]
        length = max(map(len, ids))
        token_ids = np.array([i + [0] * (length - len(i)) for i in ids], "int32")
        inputs = [token_ids, np.zeros_like(token_ids)]
        labels.extend(label for _, label in chunk)
        for key, m in models.items():
            predictions[key].append(np.asarray(m.predict_on_batch(inputs), "float32"))
    labels = np.array(labels)
    out = {"backend": backend, "test_texts": len(labels),
           "quantized_layers": len(reports["int8"]["quantized"]),
           "int8_jit_compile": getattr(models["int8"], "jit_compile", None)}
    probs = {key: np.concatenate(p) for key, p in predictions.items()}
    for key, p in probs.items():
        out["acc_" + key] = float((p.argmax(-1) == labels).mean())
        if key != "fp32":
            out["argmax_agreement_" + key] = float(
                (p.argmax(-1) == probs["fp32"].argmax(-1)).mean())
            out["max_prob_diff_" + key] = float(np.abs(p - probs["fp32"]).max())
    with tempfile.TemporaryDirectory() as tmp:  # the int8 file reloads with plain Keras
        path = os.path.join(tmp, "int8.keras")
        models["int8"].save(path)
        code = ("import sys, numpy as np, bert4keras, keras; "
                "m = keras.saving.load_model(sys.argv[1]); "
                "x = np.load(sys.argv[2]); print('MAXDIFF', float(np.abs(np.asarray("
                "m.predict_on_batch([x['a'], x['b']])) - x['p']).max()))")
        np.savez(os.path.join(tmp, "x.npz"), a=inputs[0], b=inputs[1],
                 p=np.asarray(models["int8"].predict_on_batch(inputs)))
        run = subprocess.run([sys.executable, "-c", code, path, os.path.join(tmp, "x.npz")],
                             capture_output=True, text=True,
                             env=dict(child_env(backend), TF_CPP_MIN_LOG_LEVEL="3"))
        found = [line for line in run.stdout.splitlines() if line.startswith("MAXDIFF")]
        out["int8_reload_max_diff"] = float(found[0].split()[1]) if found else None
        if not found:
            out["int8_reload_error"] = run.stderr[-500:]
    print(REPLY + json.dumps(out), flush=True)


def sentiment_accuracy(args, results):
    """fp32 / int8 / bf16 test accuracy of ``args.model`` on each backend of
    ``--accuracy-backends`` (a process each)."""
    if not os.path.exists(args.model):
        raise FileNotFoundError("--model: no saved model at %s" % args.model)
    argv = ["--model", os.path.abspath(args.model), "--vocab", args.vocab, "--maxlen",
            str(args.maxlen), "--limit", str(args.limit), "--tf-int8", args.tf_int8]
    for backend in args.accuracy_backends.split(","):
        run = subprocess.run([sys.executable, os.path.abspath(__file__), "--accuracy-child",
                              backend] + argv, capture_output=True, text=True,
                             env=child_env(backend))
        replies = [line for line in run.stdout.splitlines() if line.startswith(REPLY)]
        if run.returncode or not replies:
            raise RuntimeError("accuracy on %s failed:\n%s" % (backend, run.stderr[-2000:]))
        out = json.loads(replies[-1][len(REPLY):])
        print("\nsentiment test (%d texts), %s backend, %s (int8 model's jit_compile: %s):" % (
            out["test_texts"], backend, args.model, out.get("int8_jit_compile")))
        for key in PRECISIONS:
            extra = "" if key == "fp32" else "  (%+.2f points, argmax agreement %.4f)" % (
                100 * (out["acc_" + key] - out["acc_fp32"]), out["argmax_agreement_" + key])
            print("  %-5s acc %.4f%s" % (key, out["acc_" + key], extra))
        print("  int8 .keras reloaded in a new process (%s backend): max|d| %s%s" % (
            backend, out["int8_reload_max_diff"], "" if out["int8_reload_max_diff"] is not None
            else " ERROR " + out.get("int8_reload_error", "")), flush=True)
        results.setdefault("sentiment", {})[backend] = out


def main(argv=None):
    args = parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.worker or args.probe_child or args.accuracy_child:  # child processes
        sys.path.insert(0, ROOT)
        if args.worker:
            return worker_main(json.loads(args.worker), args)
        if args.probe_child:
            return probe_child(args.probe_child, args)
        return accuracy_child(args.accuracy_child, args)
    results = {"argv": args.argv, "machine": benchlib.machine(),
               "load_average": os.getloadavg()}
    print(benchlib.machine_line())
    print("load average at start: %.2f %.2f %.2f" % os.getloadavg(), flush=True)
    if not args.skip_speed:
        lines = []
        peak = kernel_probe(args, lines, results) if args.probe_backends else None
        with tempfile.TemporaryDirectory() as tmp:
            for name in args.models.split(","):
                speed(name.strip(), args, peak, lines, results, tmp)
        print("\nlayers quantized by model.quantize('int8'): %s; left in float: %s" % (
            results.get("quantized_layers"), results.get("float_layers")))
    if args.model:
        sentiment_accuracy(args, results)
    results["load_average_end"] = os.getloadavg()
    print("load average at end: %.2f %.2f %.2f" % os.getloadavg(), flush=True)
    if args.results:
        with open(args.results, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
