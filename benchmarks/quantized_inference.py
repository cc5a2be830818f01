"""Quantized inference: float32 vs int8 vs bfloat16, ours and ``transformers``'.

Models (encoder forward, inference; the output is the last hidden states):

* ``base``: the BERT-base shape (12 layers, hidden 768, 12 heads, FFN 3072,
  vocab 21128) from a config dict, random weights;
* ``small``: the shipped Chinese BERT, ``checkpoints/chinese_bert_small``
  (4 layers, hidden 192), its pretrained weights.

Rows, for every model and batch size (``--batches``, default 1, 8, 32; length
``--seq-len``, default 128), measured in interleaved rounds in one process:

* ``ours fp32``: ``build_transformer_model``, TensorFlow backend, the model
  called inside ``tf.function`` (graph, oneDNN kernels);
* ``ours int8``: a copy after Keras 3's ``model.quantize("int8")`` (int8
  kernels of every attention / feed-forward ``Dense``, per-token int8
  activations; embeddings and LayerNorm stay float32; see
  :mod:`bert4keras.layers.quantization`);
* ``ours bf16``: a copy under the dtype policy ``bfloat16`` (weights and matmuls
  in bfloat16; softmax and LayerNorm statistics in float32);
* ``HF fp32``: ``transformers.BertModel`` with the same weights (copied through
  ``checkpoint_tensors('hf')``), ``eval()``, ``torch.inference_mode()``;
* ``HF int8``: that model after ``torch.ao.quantization.quantize_dynamic``
  (``nn.Linear`` -> dynamic int8, per-tensor weights, the peer's CPU recipe);
* ``HF bf16``: that model cast with ``.to(torch.bfloat16)``.

Printed per row: median ms per batch over ``--rounds`` samples (a sample is the
mean of ``--iters`` calls, after ``--warmup`` untimed calls), sequences/s, the
speed-up over the same library's fp32 row in the same round (median over
rounds), and ours / HF at the same precision. Then the output error of every
reduced-precision row against its own fp32 row (max and mean absolute
difference of the last hidden states on the first batch), and the CPU flags
that decide which int8 / bf16 kernels exist (``avx512_vnni``, ``amx_int8``,
``avx512_bf16``, ``amx_bf16``). First of all, a probe of the raw ``tf.matmul``
kernels at the feed-forward shape (fp32, int8 x int8 -> int32 as Keras' int8
``Dense`` calls it, bf16): when int8 is no faster there, no int8 model can be.

``--model PATH.keras`` (a classifier saved by
``examples/task_sentiment_classification.py --output``) adds the accuracy on
the sentiment test split (``bert4keras.datasets.load_sentiment_reviews``,
``--limit`` texts) of that model in fp32, int8 and bf16, and checks that the
int8 copy saved as ``.keras`` reloads with ``keras.saving.load_model``.

Usage::

    python benchmarks/quantized_inference.py                 # full run (minutes)
    python benchmarks/quantized_inference.py --quick         # tiny smoke size
    python benchmarks/quantized_inference.py --models small --batches 32 --no-torch
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
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SMALL = os.path.join(ROOT, "checkpoints", "chinese_bert_small")
BASE = dict(vocab_size=21128, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072)
QUICK = dict(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
             intermediate_size=128)
FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "amx_bf16")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--models", default="base,small", help="comma list of base, small")
    p.add_argument("--batches", default=None,
                   help="comma list of batch sizes (default 1,8,32; --quick: 1,2)")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    p.add_argument("--iters", type=int, default=1, help="calls per timing sample")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per row")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: defaults)")
    p.add_argument("--no-torch", action="store_true", help="skip the transformers rows")
    p.add_argument("--skip-speed", action="store_true", help="only the --model accuracy")
    p.add_argument("--quick", action="store_true",
                   help="smoke size: 'base' becomes a 2-layer hidden-64 model, batches 1,2, "
                        "length 16, 1 round, 1 warmup")
    p.add_argument("--model", default=None, metavar="PATH.keras",
                   help="a fine-tuned sentiment classifier: test accuracy fp32/int8/bf16")
    p.add_argument("--vocab", default=os.path.join(SMALL, "vocab.txt"),
                   help="vocab of --model (default: the shipped small BERT's)")
    p.add_argument("--maxlen", type=int, default=128, help="--model: tokens per text")
    p.add_argument("--limit", type=int, default=0, help="--model: test texts (0: all)")
    p.add_argument("--results", default=None, help="write the figures as JSON here")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.seq_len, args.rounds, args.warmup = 16, 1, 1
    if args.batches is None:
        args.batches = "1,2" if args.quick else "1,8,32"
    return args


def cpu_info():
    """The CPU model name and which of :data:`FLAGS` it has (from /proc/cpuinfo)."""
    model, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {"model": model, "flags": {flag: flag in flags for flag in FLAGS}}


# -- our models ---------------------------------------------------------------
def build_ours(name, args):
    """``(transformer, config dict)`` for ``'base'`` (random) or ``'small'`` (shipped)."""
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
    config.setdefault("max_position_embeddings", 512)
    return transformer, config


def variants(model):
    """``{'fp32', 'int8', 'bf16'}`` -> model (the two copies hold the same weights)."""
    from bert4keras.layers.quantization import quantize_model, with_dtype_policy

    int8 = with_dtype_policy(model, "float32")
    report = quantize_model(int8, "int8")
    return {"fp32": model, "int8": int8, "bf16": with_dtype_policy(model, "bfloat16")}, report


# -- the peer -----------------------------------------------------------------
def torch_variants(transformer, config, threads):
    """``transformers.BertModel`` with our weights: fp32, dynamic int8, bf16."""
    import warnings

    import torch
    from transformers import BertConfig, BertModel

    if threads:
        torch.set_num_threads(threads)
    hf_config = BertConfig(
        vocab_size=config["vocab_size"], hidden_size=config["hidden_size"],
        num_hidden_layers=config["num_hidden_layers"],
        num_attention_heads=config["num_attention_heads"],
        intermediate_size=config["intermediate_size"],
        max_position_embeddings=config["max_position_embeddings"], type_vocab_size=2,
        hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        layer_norm_eps=1e-12)
    model = BertModel(hf_config, add_pooling_layer=False).eval()
    state = {name[len("bert."):]: torch.from_numpy(value.copy())
             for name, value in transformer.checkpoint_tensors("hf").items()
             if name.startswith("bert.") and "pooler" not in name}
    missing, unexpected = model.load_state_dict(state, strict=False)
    buffers = {name for name, _ in model.named_buffers()}
    if unexpected or set(missing) - buffers:
        raise RuntimeError("weight copy to transformers failed: missing %s, unexpected %s"
                           % (sorted(set(missing) - buffers), unexpected))
    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)  # quantized tensor deprecation
        int8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear},
                                                      dtype=torch.qint8)
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    return {"fp32": model, "int8": int8, "bf16": bf16}


# -- timing -------------------------------------------------------------------
def timed(fn, iters):
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters


def speed(name, args, lines, results):
    """Time every row of model ``name`` at every batch size; print and record."""
    import tensorflow as tf

    transformer, config = build_ours(name, args)
    ours, report = variants(transformer.model)
    fns = {key: tf.function(lambda inputs, m=m: m(inputs, training=False), jit_compile=False)
           for key, m in ours.items()}
    peers = {} if args.no_torch else torch_variants(transformer, config, args.threads)
    results.setdefault("quantized_layers", {})[name] = len(report["quantized"])
    results.setdefault("float_layers", {})[name] = sorted(
        {reason.split(" ")[0] if "bert4keras Embedding" not in reason else "Embedding"
         for reason in report["skipped"].values()})
    rng = np.random.default_rng(args.seed)
    for batch in [int(b) for b in args.batches.split(",")]:
        ids = rng.integers(1, config["vocab_size"], size=(batch, args.seq_len)).astype("int32")
        seg = np.zeros_like(ids)
        seg[:, args.seq_len // 2:] = 1
        tf_inputs = [tf.constant(ids), tf.constant(seg)]
        rows = {"ours " + key: (lambda fn=fn: np.asarray(fn(tf_inputs), "float32"))
                for key, fn in fns.items()}
        if peers:
            import torch

            t_in = dict(input_ids=torch.from_numpy(ids.astype("int64")),
                        token_type_ids=torch.from_numpy(seg.astype("int64")),
                        attention_mask=torch.ones(ids.shape, dtype=torch.int64))

            def torch_run(m):
                with torch.inference_mode():
                    return m(**t_in).last_hidden_state.float().numpy()

            rows.update({"HF " + key: (lambda m=m: torch_run(m)) for key, m in peers.items()})
        outputs = {row: fn() for row, fn in rows.items()}  # first call: trace / warm up
        for _ in range(args.warmup - 1):
            for fn in rows.values():
                fn()
        samples = {row: [] for row in rows}
        order = list(rows)
        for _ in range(args.rounds):
            order = order[1:] + order[:1]  # rotate so no row always follows another
            for row in order:
                samples[row].append(timed(rows[row], args.iters))
        start = len(lines)
        lines.append("\n%s, batch %d x %d (%d rounds x %d iters):" % (
            name, batch, args.seq_len, args.rounds, args.iters))
        lines.append("  %-10s %10s %9s %12s %10s %10s" % (
            "row", "ms/batch", "seq/s", "vs own fp32", "ours/HF", "max|d|"))
        for row in rows:
            lib, precision = row.split(" ")
            ms = 1000 * statistics.median(samples[row])
            own = "%s fp32" % lib
            ratio = statistics.median(a / b for a, b in zip(samples[own], samples[row]))
            peer = "HF " + precision
            vs_hf = (statistics.median(b / a for a, b in zip(samples[row], samples[peer]))
                     if lib == "ours" and peer in samples else None)
            diff = np.abs(outputs[row] - outputs[own])
            lines.append("  %-10s %10.2f %9.1f %11.2fx %10s %10.2e" % (
                row, ms, batch / ms * 1000, ratio, "%.2fx" % vs_hf if vs_hf else "", diff.max()))
            results.setdefault("rows", []).append(dict(
                model=name, batch=batch, seq_len=args.seq_len, row=row, ms=ms,
                seq_per_s=batch / ms * 1000, speedup_vs_own_fp32=ratio, ours_over_hf=vs_hf,
                max_abs_diff_vs_own_fp32=float(diff.max()),
                mean_abs_diff_vs_own_fp32=float(diff.mean())))
        if "HF fp32" in outputs:
            lines.append("  ours fp32 vs HF fp32: max|d| %.2e" % np.abs(
                outputs["ours fp32"] - outputs["HF fp32"]).max())
        for row in ("ours int8", "ours bf16", "HF int8", "HF bf16"):
            if row in outputs:
                diff = np.abs(outputs[row] - outputs[row.split(" ")[0] + " fp32"])
                lines.append("  %s vs its fp32: max|d| %.3g, mean|d| %.3g (hidden states; "
                             "fp32 max|h| %.3g)" % (row, diff.max(), diff.mean(), np.abs(
                                 outputs[row.split(" ")[0] + " fp32"]).max()))
        print("\n".join(lines[start:]), flush=True)


def matmul_probe(args, lines, results):
    """Which matmul kernels pay off here: ``tf.matmul`` fp32, int8 x int8 -> int32
    (the op Keras' int8 ``Dense`` runs on TensorFlow) and bf16 at the
    feed-forward shape of the largest batch, in GFLOP/s (GOP/s for int8)."""
    import tensorflow as tf

    config = QUICK if args.quick else BASE
    m = max(int(b) for b in args.batches.split(",")) * args.seq_len
    k, n = config["hidden_size"], config["intermediate_size"]
    rng = np.random.default_rng(args.seed)
    a = rng.normal(size=(m, k)).astype("float32")
    b = rng.normal(size=(k, n)).astype("float32")
    cases = {
        "fp32": (tf.constant(a), tf.constant(b), None),
        "int8->int32": (tf.constant(np.clip(a * 30, -127, 127).astype("int8")),
                        tf.constant(np.clip(b * 30, -127, 127).astype("int8")), tf.int32),
        "bf16": (tf.cast(a, tf.bfloat16), tf.cast(b, tf.bfloat16), None),
    }
    lines.append("\nraw tf.matmul (%d x %d) @ (%d x %d):" % (m, k, k, n))
    for name, (x, y, out_type) in cases.items():
        fn = tf.function(lambda x, y, t=out_type: tf.matmul(x, y, output_type=t) if t
                         else tf.matmul(x, y))
        fn(x, y)
        seconds = statistics.median(timed(lambda: fn(x, y).numpy(), args.iters)
                                    for _ in range(max(args.rounds, 1)))
        rate = 2.0 * m * k * n / seconds / 1e9
        lines.append("  %-12s %9.2f ms %9.1f G(FL)OP/s" % (name, 1000 * seconds, rate))
        results.setdefault("matmul", {})[name] = rate
    print("\n".join(lines[-4:]), flush=True)


# -- accuracy of a fine-tuned classifier ---------------------------------------
def sentiment_accuracy(args, results):
    """fp32 / int8 / bf16 test accuracy of the classifier at ``args.model``."""
    import keras

    from bert4keras.datasets import load_sentiment_reviews
    from bert4keras.tokenizers import Tokenizer

    if not os.path.exists(args.model):
        raise FileNotFoundError("--model: no saved model at %s" % args.model)
    model = keras.saving.load_model(args.model)
    models, report = variants(model)
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
    out = {"test_texts": len(labels), "quantized_layers": len(report["quantized"])}
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
                             env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        found = [line for line in run.stdout.splitlines() if line.startswith("MAXDIFF")]
        out["int8_reload_max_diff"] = float(found[0].split()[1]) if found else None
        if not found:
            out["int8_reload_error"] = run.stderr[-500:]
    print("\nsentiment test (%d texts) %s:" % (out["test_texts"], args.model))
    for key in ("fp32", "int8", "bf16"):
        extra = "" if key == "fp32" else "  (%+.2f points, argmax agreement %.4f)" % (
            100 * (out["acc_" + key] - out["acc_fp32"]), out["argmax_agreement_" + key])
        print("  %-5s acc %.4f%s" % (key, out["acc_" + key], extra))
    print("  int8 .keras reloaded in a new process: max|d| %s" % out["int8_reload_max_diff"])
    results["sentiment"] = out


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["KERAS_BACKEND"] = "tensorflow"
    sys.path.insert(0, ROOT)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # tf.function retracing notices of the probe
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    cpu = cpu_info()
    results = {"argv": sys.argv[1:] if argv is None else list(argv), "cpu": cpu,
               "tensorflow": tf.__version__}
    print("CPU: %s; %s" % (cpu["model"], ", ".join(
        "%s=%s" % (k, "yes" if v else "no") for k, v in cpu["flags"].items())))
    if not args.skip_speed:
        lines = []
        matmul_probe(args, lines, results)
        for name in args.models.split(","):
            speed(name.strip(), args, lines, results)
        print("\nlayers quantized by model.quantize('int8'): %s; left in float: %s" % (
            results["quantized_layers"], results["float_layers"]))
    if args.model:
        sentiment_accuracy(args, results)
    if args.results:
        with open(args.results, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
