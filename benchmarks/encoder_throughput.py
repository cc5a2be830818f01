"""Encoder forward throughput: bert4keras vs Hugging Face ``transformers`` (torch).

BERT-base shape by default (12 layers, hidden 768, 12 heads, FFN 3072, vocab
21128), random weights, batch 32, length 128, float32, CPU, inference.

Rows (all measured in interleaved rounds in one run; the order of the rows is
rotated every round so no row always runs right after another):

* ``ours TF graph``: the bert4keras ``keras.Model`` on the TensorFlow backend,
  called as ``model(inputs, training=False)`` inside
  ``tf.function(jit_compile=False)`` (TF graph executor with oneDNN kernels).
* ``ours TF XLA``: the same call inside ``tf.function(jit_compile=True)``.
* ``ours TF predict`` (``--predict``): ``model.predict(x, batch_size=batch)``,
  Keras' own inference loop (graph mode, XLA only if ``jit_compile`` resolves
  to it), including its per-call overhead.
* ``ours JAX`` (unless ``--no-jax``): the same model built with
  ``KERAS_BACKEND=jax`` in a worker subprocess (a process has one Keras
  backend), ``jax.jit`` of ``model.stateless_call``. The worker sleeps on its
  stdin while the other rows run, and is driven round by round.
* ``HF torch``: ``transformers.BertModel`` (no pooler, default attention
  implementation, ``eval()``, ``torch.inference_mode()``) holding the same
  weights as ours (copied through ``checkpoint_tensors('hf')``); the maximum
  absolute difference of the two outputs is printed as a sanity check.

Every row is warmed up (compilation included) before timing. A sample is the
mean time of ``--iters`` forward passes; the reported time is the median of
the ``--rounds`` samples and ``seq/s = batch / time``; the ratio to torch is
the median over rounds of (torch's time / the row's time) in the same round,
with the range of those per-round ratios. All runtimes use every core unless ``--threads`` is
given (the thread counts are printed).

Usage::

    python benchmarks/encoder_throughput.py                 # full run
    python benchmarks/encoder_throughput.py --layers 2 --rounds 2 --batch 8
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VOCAB = 21128


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    p.add_argument("--iters", type=int, default=1, help="forward passes per sample")
    p.add_argument("--warmup", type=int, default=2, help="untimed passes per row")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--intermediate", type=int, default=3072)
    p.add_argument("--threads", type=int, default=0,
                   help="intra-op threads for every runtime (0: the runtimes' defaults, "
                        "all cores)")
    p.add_argument("--torch-alt-threads", type=int, default=0, metavar="N",
                   help="add an informational row: torch with N intra-op threads (on a loaded "
                        "machine OpenMP can run faster with fewer threads than cores)")
    p.add_argument("--no-jax", action="store_true", help="skip the JAX-backend row")
    p.add_argument("--no-graph", action="store_true", help="skip the TF graph (no XLA) row")
    p.add_argument("--predict", action="store_true", help="add a model.predict row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", choices=["jax"], help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    p.add_argument("--worker-weights", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def make_inputs(args):
    rng = np.random.default_rng(args.seed)
    ids = rng.integers(1, VOCAB, size=(args.batch, args.seq_len)).astype("int32")
    seg = np.zeros_like(ids)
    seg[:, args.seq_len // 2:] = 1
    return ids, seg


def build_ours(args):
    sys.path.insert(0, ROOT)
    import keras

    from bert4keras.models import build_transformer_model

    keras.utils.set_random_seed(args.seed)
    return build_transformer_model(
        None, vocab_size=VOCAB, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, intermediate_size=args.intermediate,
        max_position=512, dropout_rate=0.0, return_keras_model=False)


def timed(fn, iters):
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters


# -- JAX worker (a subprocess: the Keras backend is fixed per process) ---------
def jax_worker(args):
    import jax

    transformer = build_ours(args)
    model = transformer.model
    with np.load(args.worker_weights) as stored:
        model.set_weights([stored["w%d" % i] for i in range(len(stored.files))])
    ids, seg = make_inputs(args)
    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]

    @jax.jit
    def forward(tv, ntv, ids, seg):
        return model.stateless_call(tv, ntv, [ids, seg], training=False)[0]

    ids_j, seg_j = jax.device_put(ids), jax.device_put(seg)

    def run():
        return forward(tv, ntv, ids_j, seg_j).block_until_ready()

    start = time.perf_counter()
    out = np.asarray(run())
    compile_s = time.perf_counter() - start
    np.save(args.worker_out, out)
    for _ in range(max(args.warmup - 1, 0)):
        run()
    print(json.dumps({"ready": True, "compile_s": compile_s, "jax": jax.__version__}),
          flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        print(json.dumps({"time": timed(run, int(cmd))}), flush=True)


class JaxRow:
    def __init__(self, args, weights, workdir):
        self.out_path = os.path.join(workdir, "jax_out.npy")
        weights_path = os.path.join(workdir, "weights.npz")
        np.savez(weights_path, **{"w%d" % i: w for i, w in enumerate(weights)})
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "jax",
               "--batch", str(args.batch), "--seq-len", str(args.seq_len),
               "--layers", str(args.layers), "--hidden", str(args.hidden),
               "--heads", str(args.heads), "--intermediate", str(args.intermediate),
               "--warmup", str(args.warmup), "--seed", str(args.seed),
               "--worker-out", self.out_path, "--worker-weights", weights_path]
        env = dict(os.environ, KERAS_BACKEND="jax")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=ROOT)
        self.info = self._read()

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the JAX worker exited (rc=%s)" % self.proc.wait())
        return json.loads(line)

    def time(self, iters):
        self.proc.stdin.write("%d\n" % iters)
        self.proc.stdin.flush()
        return self._read()["time"]

    def close(self):
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        self.proc.wait(timeout=60)


# -- main process: TensorFlow-backend rows and the torch peer -----------------
def torch_peer(args, transformer, threads):
    import torch
    from transformers import BertConfig, BertModel

    if threads:
        torch.set_num_threads(threads)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, intermediate_size=args.intermediate,
        max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, layer_norm_eps=1e-12)
    model = BertModel(config, add_pooling_layer=False).eval()
    state = {name[len("bert."):]: torch.from_numpy(value.copy())
             for name, value in transformer.checkpoint_tensors("hf").items()
             if name.startswith("bert.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    buffers = {name for name, _ in model.named_buffers()}
    if unexpected or set(missing) - buffers:
        raise RuntimeError("weight copy to torch failed: missing %s, unexpected %s"
                           % (sorted(set(missing) - buffers), unexpected))
    return model


def main(args):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    import torch
    import transformers

    transformer = build_ours(args)
    model = transformer.model
    jax_row = None
    if not args.no_jax:
        # The worker gets the same weights; it is ready (built, compiled, warm)
        # before anything else is built or run here.
        workdir = tempfile.mkdtemp(prefix="encoder_throughput_")
        jax_row = JaxRow(args, model.get_weights(), workdir)
    ids, seg = make_inputs(args)
    tf_inputs = [tf.constant(ids), tf.constant(seg)]

    def forward(inputs):
        return model(inputs, training=False)

    rows = {}
    if not args.no_graph:
        graph_fn = tf.function(forward, jit_compile=False)
        rows["ours TF graph"] = lambda: graph_fn(tf_inputs).numpy()
    xla_fn = tf.function(forward, jit_compile=True)
    rows["ours TF XLA"] = lambda: xla_fn(tf_inputs).numpy()
    if args.predict:
        rows["ours TF predict"] = lambda: model.predict([ids, seg], batch_size=args.batch,
                                                        verbose=0)

    hf = torch_peer(args, transformer, args.threads)
    t_ids = torch.from_numpy(ids.astype("int64"))
    t_seg = torch.from_numpy(seg.astype("int64"))
    t_mask = torch.ones_like(t_ids)

    def torch_run():
        with torch.inference_mode():
            return hf(input_ids=t_ids, token_type_ids=t_seg,
                      attention_mask=t_mask).last_hidden_state

    rows["HF torch"] = torch_run
    alt_name = "HF torch, %d thread(s)" % args.torch_alt_threads
    if args.torch_alt_threads:
        default_threads = torch.get_num_threads()

        def torch_alt_run():
            torch.set_num_threads(args.torch_alt_threads)
            try:
                return torch_run()
            finally:
                torch.set_num_threads(default_threads)

        rows[alt_name] = torch_alt_run

    # Warm-up (and compilation), plus a numerical sanity check against torch.
    compile_s = {}
    outputs = {}
    for name, fn in rows.items():
        start = time.perf_counter()
        outputs[name] = np.asarray(fn())
        compile_s[name] = time.perf_counter() - start
        for _ in range(max(args.warmup - 1, 0)):
            fn()
    reference = outputs["HF torch"]
    diffs = {name: float(np.abs(out - reference).max()) for name, out in outputs.items()}
    if jax_row is not None:
        compile_s["ours JAX"] = jax_row.info["compile_s"]
        diffs["ours JAX"] = float(np.abs(np.load(jax_row.out_path) - reference).max())
        rows["ours JAX"] = None

    names = list(rows)
    samples = {name: [] for name in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            if name == "ours JAX":
                samples[name].append(jax_row.time(args.iters))
            else:
                samples[name].append(timed(rows[name], args.iters))
        print("round %d/%d: %s" % (r + 1, args.rounds, ", ".join(
            "%s %.2fs" % (n, samples[n][-1]) for n in names)), file=sys.stderr, flush=True)
    if jax_row is not None:
        jax_row.close()
        shutil.rmtree(workdir, ignore_errors=True)

    tf_threads = tf.config.threading.get_intra_op_parallelism_threads()
    print("\n## Encoder forward throughput\n")
    print("Shape: %d layer(s), hidden %d, %d heads, FFN %d, vocab %d; batch %d, "
          "length %d; float32, CPU, random weights; %d rounds x %d pass(es), medians."
          % (args.layers, args.hidden, args.heads, args.intermediate, VOCAB, args.batch,
             args.seq_len, args.rounds, args.iters))
    print("torch %s (intra-op threads %d, attention %s), transformers %s; tensorflow %s "
          "(intra-op threads %s, inter-op %s), keras %s; cores %d%s.\n"
          % (torch.__version__, torch.get_num_threads(), hf.config._attn_implementation,
             transformers.__version__, tf.__version__,
             tf_threads or "0 = all cores", tf.config.threading.get_inter_op_parallelism_threads()
             or "0 = default", __import__("keras").__version__, os.cpu_count(),
             "" if jax_row is None else "; jax %s" % jax_row.info["jax"]))
    print("| row | how it is called | median s/batch | seq/s | ratio to torch "
          "(median of rounds) | per-round ratio range | max abs diff vs torch |")
    print("|---|---|---|---|---|---|---|")
    how = {
        "ours TF graph": "`tf.function(jit_compile=False)` around `model(x, training=False)`",
        "ours TF XLA": "`tf.function(jit_compile=True)` around `model(x, training=False)`",
        "ours TF predict": "`model.predict(x, batch_size=%d)` (graph, no XLA)" % args.batch,
        "ours JAX": "`jax.jit(model.stateless_call)` (subprocess)",
        "HF torch": "`BertModel.eval()` under `torch.inference_mode()`",
        alt_name: "the same, `torch.set_num_threads(%d)` (informational)"
                  % args.torch_alt_threads,
    }
    for name in names:
        t = statistics.median(samples[name])
        # torch time / our time in the same round: robust to load drifting across rounds.
        ratios = [b / s for b, s in zip(samples["HF torch"], samples[name])]
        print("| %s | %s | %.3f | %.2f | %.2fx | %.2f-%.2f | %s |"
              % (name, how[name], t, args.batch / t, statistics.median(ratios),
                 min(ratios), max(ratios),
                 "—" if name == "HF torch" else "%.1e" % diffs[name]))
    print("\nfirst call (build/compile + one pass), s: " +
          ", ".join("%s %.1f" % (n, compile_s[n]) for n in names))
    print("all samples, s: " + "; ".join(
        "%s [%s]" % (n, ", ".join("%.2f" % s for s in samples[n])) for n in names))


if __name__ == "__main__":
    ARGS = parse_args()
    if ARGS.worker == "jax":
        os.environ["KERAS_BACKEND"] = "jax"
        jax_worker(ARGS)
    else:
        main(ARGS)
