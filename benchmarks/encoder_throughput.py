"""Encoder forward and training step: bert4keras on TensorFlow, JAX and PyTorch
vs Hugging Face ``transformers`` (torch).

BERT-base shape by default (12 layers, hidden 768, 12 heads, FFN 3072, vocab
21128), random weights, float32, CPU; length 128; batch 32 for the forward,
16 for the training step.

Every row runs in its own worker subprocess (a process has one Keras backend,
and a fresh process gives each row a clean peak RSS); the main process only
drives them. The first worker builds the model (seeded), writes its weights,
and every other worker loads the same weights, so all rows compute the same
function (the table prints each row's maximum difference from the peer).

Forward rows (``model(x, training=False)``):

* ``ours TF graph`` / ``ours TF XLA``: ``tf.function(jit_compile=False|True)``
  around the call (``--tf-modes``).
* ``ours JAX``: ``jax.jit`` of ``model.stateless_call``.
* ``ours torch``: the eager call under ``torch.no_grad()`` (what
  ``model.predict`` runs on the torch backend, without its loop); without
  gradients our ``Dense`` layers and the tied projection multiply through
  oneDNN (``bert4keras.layers.direct.onednn_dense``).
* ``ours torch plain`` (``--torch-plain``): the same in a worker with
  ``bert4keras.layers.direct.USE_ONEDNN`` off (torch's own matmul, MKL), to
  show what the oneDNN path changes in the same run.
* ``ours <backend> predict`` (``--predict``): ``model.predict(x,
  batch_size=batch)``.
* ``HF torch``: ``BertModel(add_pooling_layer=False).eval()`` under
  ``torch.inference_mode()``, default (``sdpa``) attention.

Training rows (``--train``): one step of fine-tuning a sentence classifier,
which is what "a BERT-base training step" means for most users: the encoder,
the tanh pooler over [CLS] and a 2-way linear classifier, softmax cross-entropy
on integer labels, AdamW (lr 2e-5, weight decay 0.01, eps 1e-6, betas 0.9 /
0.999, decay on every weight), dropout 0.1 on the hidden states and the
attention probabilities (``--dropout``), as BERT's fine-tuning recipe.

* ours: ``model.train_on_batch(x, y)`` of the ``keras.Model`` compiled with
  ``bert4keras.optimizers.AdamW`` (``keras.optimizers.AdamW`` on TensorFlow
  and JAX; on torch the update is torch's fused AdamW kernel) and
  ``SparseCategoricalCrossentropy(from_logits=True)``; ``jit_compile``:
  the TF row is XLA (``jit_compile=True``; Keras' ``"auto"`` picks graph
  mode on a machine without a GPU, which ``--tf-modes graph,xla`` adds as a
  second TF row), JAX ``"auto"`` (XLA), torch eager.
* ``ours torch Keras AdamW`` (``--keras-adamw``): the torch row compiled
  with ``keras.optimizers.AdamW`` (Keras' chain of ``_foreach`` passes), to
  show what the fused update changes in the same run.
* ``HF torch``: ``BertForSequenceClassification(num_labels=2).train()``,
  ``loss = model(..., labels=y).loss; loss.backward(); opt.step();
  opt.zero_grad()`` with ``torch.optim.AdamW``, same hyper-parameters.
  The check column compares the logits in inference mode (no dropout).

* ``ours JAX kept memory`` (``--keep-freed-memory``): the JAX row with
  ``BERT4KERAS_KEEP_FREED_MEMORY=1`` (:mod:`bert4keras.allocator`: glibc keeps
  freed memory, so XLA's per-step buffers are not faulted in afresh each
  call). Since 2026-12-07 (its second change) that is the default, so this
  row runs what the plain JAX row runs.
* ``ours JAX glibc defaults`` (``--jax-glibc-defaults``): the JAX row with
  ``BERT4KERAS_KEEP_FREED_MEMORY=0``: glibc's own ``malloc`` settings and
  JAX's asynchronous dispatch (the plain JAX row's settings before 2026-12-07).
* ``ours JAX kept memory async dispatch`` (``--jax-async-dispatch``): kept
  memory with ``JAX_CPU_ENABLE_ASYNC_DISPATCH=1``, which the allocator leaves
  as asked (it turns asynchronous dispatch off otherwise).
* ``ours JAX huge pages`` (``--jax-hugetlb``): the JAX row with glibc's
  defaults (``BERT4KERAS_KEEP_FREED_MEMORY=0``), started with
  ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (glibc >= 2.35 asks the kernel for
  transparent huge pages on the blocks it maps, so XLA's per-step buffers
  fault in 2 MiB at a time instead of 4 KiB); an environment setting of the
  process, which no library can change once Python has started.

Method: workers are built, compiled and warmed up (``--warmup`` untimed
calls) before timing. Then in each of ``--rounds`` rounds every row runs
``--iters`` calls (a sample is their mean time), the row order rotated every
round, and every worker times one fp32 matmul of the feed-forward shape
(``(batch * length, hidden) @ (hidden, intermediate)``,
``benchlib.matmul_peak``) in its own library: a same-run probe of the raw
kernels of each backend. Reported: the median sample; ratios are medians over
rounds of (the reference's time / the row's time) in the same round, to TF
(the faster TF row) and to ``HF torch`` (> 1: the row is faster); the
system (kernel) time and minor page faults per call (``getrusage``); the
fraction of the run's best measured matmul rate (``benchlib.encoder_flops``,
x3 for a training step); each worker's peak RSS (``ru_maxrss``).

Usage::

    python benchmarks/encoder_throughput.py                       # forward, all backends
    python benchmarks/encoder_throughput.py --train               # training step
    python benchmarks/encoder_throughput.py --train --backend tensorflow,jax --keep-freed-memory
    python benchmarks/encoder_throughput.py --backend jax,torch --rounds 7
    python benchmarks/encoder_throughput.py --quick [--train]     # smoke run (< 1 min)
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import benchlib  # noqa: E402

VOCAB = 21128
BACKENDS = ("tensorflow", "jax", "torch")
LR, WEIGHT_DECAY, EPS = 2e-5, 0.01, 1e-6


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Rows and method: see the module docstring.")
    p.add_argument("--backend", default=",".join(BACKENDS),
                   help="our backends, comma-separated (default: all three)")
    p.add_argument("--train", action="store_true",
                   help="time a training step (pooled classifier, AdamW) instead of the forward")
    p.add_argument("--tf-modes", default=None,
                   help="TF rows: graph, xla or graph,xla (default: graph,xla for the "
                        "forward; xla, Keras' default jit_compile, for --train)")
    p.add_argument("--predict", action="store_true", help="add a model.predict row per backend")
    for flag, row, mode in JAX_MEMORY_ROWS:
        p.add_argument(flag, action="store_true",
                       help="add an '%s' row: the JAX worker with %s" % (row, " ".join(
                           "%s=%s" % pair for pair in benchlib.JAX_HOST_MEMORY[mode].items())))
    p.add_argument("--torch-plain", action="store_true",
                   help="add an 'ours torch plain' row: the torch worker with "
                        "bert4keras.layers.direct.USE_ONEDNN off (torch's own matmul)")
    p.add_argument("--keras-adamw", action="store_true",
                   help="with --train, add an 'ours torch Keras AdamW' row: the torch worker "
                        "compiled with keras.optimizers.AdamW instead of bert4keras' fused one")
    p.add_argument("--no-hf", action="store_true", help="skip the transformers peer")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2 layers, hidden 128, batch 8, length 64, 2 rounds")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    p.add_argument("--iters", type=int, default=1, help="calls per sample")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per row")
    p.add_argument("--batch", type=int, default=None, help="default 32 (16 with --train)")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--intermediate", type=int, default=3072)
    p.add_argument("--dropout", type=float, default=None,
                   help="hidden and attention dropout (default 0 for the forward, 0.1 with "
                        "--train)")
    p.add_argument("--threads", type=int, default=0,
                   help="intra-op threads for TF and torch (0: the runtimes' defaults, all "
                        "cores); JAX/XLA keeps its own thread pool (the 'cores busy' column "
                        "shows what each row used)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", metavar="FILE.json", help="write the raw rows as JSON")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.layers, args.hidden, args.heads, args.intermediate = 2, 128, 2, 512
        args.batch, args.seq_len, args.rounds = args.batch or 8, 64, 2
        args.warmup = min(args.warmup, 1)
    if args.batch is None:
        args.batch = 16 if args.train else 32
    if args.dropout is None:
        args.dropout = 0.1 if args.train else 0.0
    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    bad = sorted(set(backends) - set(BACKENDS))
    if bad:
        p.error("--backend: unknown %s (choose from %s)" % (bad, ", ".join(BACKENDS)))
    args.backends = backends
    modes = args.tf_modes or ("xla" if args.train else "graph,xla")
    args.tf_mode_list = [m.strip() for m in modes.split(",") if m.strip()]
    if set(args.tf_mode_list) - {"graph", "xla"}:
        p.error("--tf-modes: graph and/or xla, got %r" % modes)
    return args


#: the optional JAX rows of host-memory settings: (flag, row name, worker mode =
#: the benchlib.JAX_HOST_MEMORY setting it runs)
JAX_MEMORY_ROWS = (
    ("--keep-freed-memory", "ours JAX kept memory", "keep"),
    ("--jax-glibc-defaults", "ours JAX glibc defaults", "glibc"),
    ("--jax-async-dispatch", "ours JAX kept memory async dispatch", "async"),
    ("--jax-hugetlb", "ours JAX huge pages", "hugetlb"),
)


def row_specs(args):
    """``[(row name, worker kind, mode)]`` in table order."""
    rows = []
    for backend in args.backends:
        if backend == "tensorflow":
            rows += [("ours TF %s" % ("XLA" if m == "xla" else "graph"), "tensorflow", m)
                     for m in args.tf_mode_list]
        else:
            rows.append(("ours %s" % ("JAX" if backend == "jax" else "torch"), backend, "call"))
        if backend == "jax":
            rows += [(row, "jax", mode) for flag, row, mode in JAX_MEMORY_ROWS
                     if getattr(args, flag[2:].replace("-", "_"))]
        if backend == "torch" and args.torch_plain:
            rows.append(("ours torch plain", "torch", "plain"))
        if backend == "torch" and args.keras_adamw and args.train:
            rows.append(("ours torch Keras AdamW", "torch", "keras_adamw"))
        if args.predict and not args.train:
            rows.append(("ours %s predict" % backend, backend, "predict"))
    if not args.no_hf:
        rows.append(("HF torch", "hf", "call"))
    return rows


def make_batch(args):
    rng = np.random.default_rng(args.seed)
    ids = rng.integers(1, VOCAB, size=(args.batch, args.seq_len)).astype("int32")
    seg = np.zeros_like(ids)
    seg[:, args.seq_len // 2:] = 1
    labels = rng.integers(0, 2, size=(args.batch,)).astype("int32")
    return ids, seg, labels


def say(**fields):
    print(json.dumps(fields), flush=True)


# -- workers -------------------------------------------------------------------
def build_ours(args):
    """Our ``keras.Model``: the encoder, or (``--train``) encoder + pooler +
    ``classifier`` logits; and the ``Transformer`` (for its HF names)."""
    sys.path.insert(0, ROOT)
    import keras

    from bert4keras.models import build_transformer_model

    keras.utils.set_random_seed(args.seed)
    transformer = build_transformer_model(
        None, vocab_size=VOCAB, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, intermediate_size=args.intermediate,
        max_position=512, dropout_rate=args.dropout, attention_dropout_rate=args.dropout,
        with_pool=bool(args.train), return_keras_model=False)
    model = transformer.model
    if args.train:
        x = keras.layers.Dropout(args.dropout, name="classifier-dropout")(model.output)
        logits = keras.layers.Dense(2, name="classifier")(x)
        model = keras.Model(model.inputs, logits)
    return transformer, model


def save_weights(args, transformer, model):
    weights = model.get_weights()
    np.savez(os.path.join(args.workdir, "weights.npz"),
             **{"w%d" % i: w for i, w in enumerate(weights)})
    hf = dict(transformer.checkpoint_tensors("hf"))
    if args.train:
        kernel, bias = model.get_layer("classifier").get_weights()
        hf["classifier.weight"], hf["classifier.bias"] = kernel.T, bias
    np.savez(os.path.join(args.workdir, "hf.npz"), **hf)


def ours_worker(args):
    backend = args.worker
    import keras

    if backend == "tensorflow" and args.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    if backend == "torch" and args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.worker_mode == "plain":  # torch's own matmul, no oneDNN
        from bert4keras.layers import direct

        direct.USE_ONEDNN = False
    transformer, model = build_ours(args)
    path = os.path.join(args.workdir, "weights.npz")
    if os.path.exists(path):
        with np.load(path) as stored:
            model.set_weights([stored["w%d" % i] for i in range(len(stored.files))])
    else:
        save_weights(args, transformer, model)
        say(weights=True)
    ids, seg, labels = make_batch(args)
    mode = args.worker_mode
    runs = {}
    check = None
    if args.train:
        from bert4keras.optimizers import AdamW
        optimizer = keras.optimizers.AdamW if mode == "keras_adamw" else AdamW
        model.compile(optimizer=optimizer(LR, weight_decay=WEIGHT_DECAY, epsilon=EPS),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=(mode == "xla") if backend == "tensorflow" else "auto")
        check = np.asarray(model.predict_on_batch([ids, seg]))
        runs["call"] = lambda: model.train_on_batch([ids, seg], labels)
    elif mode == "predict":
        runs["call"] = lambda: model.predict([ids, seg], batch_size=args.batch, verbose=0)
    elif backend == "tensorflow":
        import tensorflow as tf

        inputs = [tf.constant(ids), tf.constant(seg)]
        fn = tf.function(lambda x: model(x, training=False), jit_compile=(mode == "xla"))
        runs["call"] = lambda: fn(inputs).numpy()
    elif backend == "jax":
        import jax

        tv = [v.value for v in model.trainable_variables]
        ntv = [v.value for v in model.non_trainable_variables]
        fn = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x, training=False)[0])
        inputs = [jax.device_put(ids), jax.device_put(seg)]
        runs["call"] = lambda: fn(tv, ntv, inputs).block_until_ready()
    else:
        import torch

        inputs = [torch.from_numpy(ids), torch.from_numpy(seg)]

        def torch_call():
            with torch.no_grad():
                return model(inputs, training=False)

        runs["call"] = torch_call
    worker_loop(args, backend, runs["call"], check, {
        "tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend])


def hf_worker(args):
    import torch
    import transformers
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    if args.threads:
        torch.set_num_threads(args.threads)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, intermediate_size=args.intermediate,
        max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu",
        hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=args.dropout,
        layer_norm_eps=1e-12, num_labels=2)
    with np.load(os.path.join(args.workdir, "hf.npz")) as stored:
        state = {name: torch.from_numpy(stored[name].copy()) for name in stored.files}
    if args.train:
        model = BertForSequenceClassification(config)
    else:
        model = BertModel(config, add_pooling_layer=False)
        state = {name[len("bert."):]: value for name, value in state.items()
                 if name.startswith("bert.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    buffers = {name for name, _ in model.named_buffers()}
    if unexpected or set(missing) - buffers:
        raise RuntimeError("weight copy to transformers failed: missing %s, unexpected %s"
                           % (sorted(set(missing) - buffers), unexpected))
    ids, seg, labels = make_batch(args)
    t_ids, t_seg = torch.from_numpy(ids.astype("int64")), torch.from_numpy(seg.astype("int64"))
    t_mask, t_labels = torch.ones_like(t_ids), torch.from_numpy(labels.astype("int64"))
    kwargs = dict(input_ids=t_ids, token_type_ids=t_seg, attention_mask=t_mask)
    if args.train:
        model.eval()
        with torch.inference_mode():
            check = model(**kwargs).logits.numpy()
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY,
                                      eps=EPS, betas=(0.9, 0.999))

        def run():
            loss = model(**kwargs, labels=t_labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss.item()
    else:
        model.eval()
        check = None

        def run():
            with torch.inference_mode():
                return model(**kwargs).last_hidden_state.numpy()
    worker_loop(args, "hf", run, check, "torch",
                extra={"transformers": transformers.__version__,
                       "attention": model.config._attn_implementation})


def worker_loop(args, kind, run, check, library, extra=None):
    """Warm up, report ready (with versions and the check output's file),
    then serve ``time N`` / ``matmul`` / ``quit`` on stdin."""
    start = time.perf_counter()
    out = run()
    first_s = time.perf_counter() - start
    if check is None:
        check = np.asarray(out)
    check_path = os.path.join(args.workdir, "out_%s_%s.npy" % (kind, args.worker_mode))
    np.save(check_path, check)
    for _ in range(max(args.warmup - 1, 0)):
        run()
    versions = {"keras": __import__("keras").__version__} if kind != "hf" else {}
    versions[library] = __import__(library).__version__
    if library == "torch":
        import torch

        versions["torch_threads"] = torch.get_num_threads()
    versions.update(extra or {})
    say(ready=True, first_s=first_s, check=check_path, versions=versions)
    m = args.batch * args.seq_len
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "time":
            cpu = time.process_time()
            before = resource.getrusage(resource.RUSAGE_SELF)
            wall = benchlib.timed(run, int(cmd[1]))
            after = resource.getrusage(resource.RUSAGE_SELF)
            # cores kept busy on average (threads actually used; < 1 on a loaded machine)
            say(time=wall, cores=(time.process_time() - cpu) / (wall * int(cmd[1])),
                sys_s=after.ru_stime - before.ru_stime,
                minflt=after.ru_minflt - before.ru_minflt)
        elif cmd[0] == "matmul":
            say(gflops=benchlib.matmul_peak(library, m=m, k=args.hidden, n=args.intermediate,
                                            rounds=1))
        else:
            say(peak_rss=benchlib.peak_rss())
            break


# -- the driver ----------------------------------------------------------------
class Worker:
    def __init__(self, args, name, kind, mode, workdir):
        self.name, self.kind = name, kind
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind + ":" + mode,
               "--workdir", workdir]
        for flag in ("batch", "seq_len", "layers", "hidden", "heads", "intermediate",
                     "dropout", "threads", "seed", "warmup"):
            cmd += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
        if args.train:
            cmd.append("--train")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
        env["KERAS_BACKEND"] = kind if kind != "hf" else "torch"
        benchlib.host_memory_environment(
            env, mode if kind == "jax" and mode in benchlib.JAX_HOST_MEMORY else None)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=ROOT)

    def read(self):
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("worker %r exited (rc=%s)" % (self.name, self.proc.wait()))
            if line.startswith("{"):
                return json.loads(line)

    def ask(self, cmd):
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self):
        try:
            self.info["peak_rss"] = self.ask("quit")["peak_rss"]
        except (BrokenPipeError, RuntimeError):
            self.info["peak_rss"] = None
        self.proc.wait(timeout=120)


def main(args):
    specs = row_specs(args)
    if not specs:
        raise SystemExit("encoder_throughput: no rows (give --backend, or drop --no-hf)")
    if [kind for _, kind, _ in specs] == ["hf"]:
        raise SystemExit("encoder_throughput: the peer needs one of our backends for weights")
    workdir = tempfile.mkdtemp(prefix="encoder_throughput_")
    load_start = os.getloadavg()
    started = time.time()
    workers = []
    try:
        # the first worker builds the seeded model and writes the weights; the
        # others start once they exist and get ready in parallel
        first = Worker(args, *specs[0], workdir)
        assert first.read().get("weights")
        workers = [first] + [Worker(args, *spec, workdir) for spec in specs[1:]]
        for w in workers:
            w.info = w.read()
        names = [w.name for w in workers]
        samples = {n: [] for n in names}
        gflops = {n: [] for n in names}
        cores = {n: [] for n in names}
        kernel = {n: [] for n in names}  # (system s, minor page faults) per call
        for r in range(args.rounds):
            shift = r % len(workers)
            for w in workers[shift:] + workers[:shift]:
                reply = w.ask("time %d" % args.iters)
                samples[w.name].append(reply["time"])
                cores[w.name].append(reply["cores"])
                kernel[w.name].append((reply["sys_s"] / args.iters,
                                       reply["minflt"] / args.iters))
            for w in workers[shift:] + workers[:shift]:
                gflops[w.name].append(w.ask("matmul")["gflops"])
            print("round %d/%d: %s" % (r + 1, args.rounds, ", ".join(
                "%s %.2fs" % (n, samples[n][-1]) for n in names)), file=sys.stderr, flush=True)
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.close()
    load_end = os.getloadavg()
    checks = {w.name: np.load(w.info["check"]) for w in workers}
    shutil.rmtree(workdir, ignore_errors=True)
    report(args, workers, samples, gflops, cores, kernel, checks, load_start, load_end,
           time.time() - started)


def report(args, workers, samples, gflops, cores, kernel, checks, load_start, load_end,
           wall_s):
    names = [w.name for w in workers]
    med = {n: statistics.median(samples[n]) for n in names}
    tf_rows = [n for n in names if n.startswith("ours TF")]
    tf_ref = min(tf_rows, key=med.get) if tf_rows else None
    hf_ref = "HF torch" if "HF torch" in names else None
    flops = benchlib.encoder_flops(args.batch, args.seq_len, args.layers, args.hidden,
                                   args.intermediate) * (3 if args.train else 1)
    peak = max(max(v) for v in gflops.values())

    def ratio(ref, name):
        if ref is None:
            return None
        per_round = [a / b for a, b in zip(samples[ref], samples[name])]
        return statistics.median(per_round), min(per_round), max(per_round)

    what = "training step" if args.train else "forward"
    print("\n## Encoder %s: bert4keras backends vs transformers\n" % what)
    print(benchlib.machine_line())
    print("Load average (1 min) %.1f at start, %.1f at end; wall %.0f s (the machine is shared: "
          "only ratios within this run mean much)." % (load_start[0], load_end[0], wall_s))
    print("Shape: %d layer(s), hidden %d, %d heads, FFN %d, vocab %d; batch %d, length %d; "
          "float32, CPU, random weights, dropout %g; %d rounds x %d call(s), medians."
          % (args.layers, args.hidden, args.heads, args.intermediate, VOCAB, args.batch,
             args.seq_len, args.dropout, args.rounds, args.iters))
    versions = {}
    for w in workers:
        versions.update(w.info["versions"])
    print("Versions/threads: " + ", ".join("%s %s" % kv for kv in sorted(versions.items())))
    print("FLOP per %s (matmuls): %.1f G; peak = best fp32 matmul sample of the run, %.0f "
          "GFLOP/s.\n" % (what, flops / 1e9, peak))
    ref_check = checks.get(hf_ref)
    print("| row | median s | seq/s | vs TF%s | vs HF torch | %% of matmul peak | "
          "own matmul GFLOP/s | cores busy | system s/call | page faults/call | peak RSS GB | "
          "max abs diff vs HF |" % ("" if tf_ref is None else " (%s)" % tf_ref))
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for w in workers:
        n = w.name
        to_tf, to_hf = ratio(tf_ref, n), ratio(hf_ref, n)
        diff = (None if ref_check is None or n == hf_ref
                else float(np.abs(checks[n] - ref_check).max()))
        own = statistics.median(gflops[n])
        rss = w.info.get("peak_rss")
        fmt = lambda r: "—" if r is None else "%.2fx (%.2f-%.2f)" % r  # noqa: E731
        print("| %s | %.3f | %.1f | %s | %s | %.0f%% | %.0f | %.2f | %.2f | %.0f | %s | %s |"
              % (n, med[n], args.batch / med[n], fmt(to_tf), fmt(to_hf),
                 100.0 * flops / med[n] / (peak * 1e9), own, statistics.median(cores[n]),
                 statistics.median(k[0] for k in kernel[n]),
                 statistics.median(k[1] for k in kernel[n]),
                 "?" if rss is None else "%.2f" % (rss / 2 ** 30),
                 "—" if diff is None else "%.1e" % diff))
        rows.append({"row": n, "worker": w.kind, "samples_s": samples[n], "median_s": med[n],
                     "vs_tf": to_tf, "vs_hf": to_hf, "matmul_gflops": gflops[n],
                     "cores_busy": cores[n],
                     "system_s_per_call": [k[0] for k in kernel[n]],
                     "page_faults_per_call": [k[1] for k in kernel[n]],
                     "peak_rss_bytes": rss, "first_call_s": w.info["first_s"],
                     "max_abs_diff_vs_hf": diff})
    warning = benchlib.memory_pressure({w.name: w.info.get("peak_rss") for w in workers})
    if warning:
        print("\n" + warning)
    print("\nfirst call (build/compile + one call), s: " + ", ".join(
        "%s %.1f" % (w.name, w.info["first_s"]) for w in workers))
    print("all samples, s: " + "; ".join(
        "%s [%s]" % (n, ", ".join("%.2f" % s for s in samples[n])) for n in names))
    if args.results:
        with open(args.results, "w") as f:
            json.dump({"benchmark": "encoder_throughput", "mode": what,
                       "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
                       "machine": benchlib.machine(), "load_avg_start": load_start,
                       "load_avg_end": load_end, "wall_s": wall_s, "flop": flops,
                       "matmul_peak_gflops": peak, "versions": versions,
                       "args": {k: v for k, v in vars(args).items()
                                if k not in ("worker", "workdir")},
                       "tf_reference": tf_ref, "rows": rows}, f, indent=1)
        print("raw rows written to %s" % args.results)


if __name__ == "__main__":
    ARGS = parse_args()
    if ARGS.worker:
        kind, ARGS.worker_mode = ARGS.worker.split(":")
        ARGS.worker = kind
        os.environ["KERAS_BACKEND"] = "torch" if kind == "hf" else kind
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        (hf_worker if kind == "hf" else ours_worker)(ARGS)
    else:
        main(ARGS)
