"""Peak resident memory: bert4keras on TensorFlow, JAX and PyTorch vs
Hugging Face ``transformers`` (torch), loading the same weights from disk.

Two workloads, each measured in a fresh subprocess per implementation (the
peak resident set size, ``ru_maxrss``, only ever goes up):

* ``gpt2``: GPT-2 small (12 layers, hidden 768, vocabulary 50257, 124M
  parameters) loaded from a Hugging Face directory (``model.safetensors`` +
  ``config.json``) written once into a temporary directory; then greedy
  cached decoding, batch 1, a 32-token prompt, ``--new-tokens`` (128) new
  tokens, run twice. Ours: ``build_transformer_model(config, dir,
  model='gpt2', with_lm='linear')`` + :class:`bert4keras.generation.CachedDecoder`
  (TF: XLA, JAX: ``jax.jit``, torch: eager). HF: ``GPT2LMHeadModel.
  from_pretrained(dir)`` + ``generate(use_cache=True)`` under
  ``torch.inference_mode()``.
* ``bert``: a BERT-base encoder (vocabulary 21128, dropout 0.1) loaded from a
  Hugging Face directory, with a per-token ``Dense(8)`` head, ``--steps``
  (3) training steps of AdamW (lr 1e-4) on batch 16 x length 128 random
  tokens and labels. Ours: ``model.compile(bert4keras.optimizers.AdamW)``
  (``keras.optimizers.AdamW``; on torch its update is torch's fused kernel)
  + ``train_on_batch``
  (TF graph mode, JAX ``jit``, torch eager); with ``--fit``, ``model.fit``
  (Keras' own loop, which on JAX does not wait for a step's loss before it
  starts the next step): one call of one step (the compilation), then one
  for the other steps. The first step used to be a ``train_on_batch``; on
  JAX, ``fit`` then compiled a second step function (Keras passes it the
  batch in another structure), whose compilation and executable
  ``memory_bert_fit_async_zen5.json`` includes. HF: ``BertForTokenClassification.
  from_pretrained(dir, num_labels=8)`` + ``torch.optim.AdamW``,
  ``loss.backward(); step(); zero_grad()``. Both sides are the same function:
  dropout :data:`DROPOUT` on the hidden states, the attention probabilities
  and the encoder output before the head (HF's token classifier has that last
  one; ours adds a ``Dropout`` layer). Before 2026-12-07 11:20 UTC the HF row
  read the directory's ``config.json``, whose dropout is 0 (the exported
  model was built without), so HF trained without any dropout while ours
  had 0.1 and drew its masks: every earlier ``bert`` result file compares
  unlike steps (benchmarks/HISTORY.md, Zen 5: "The memory benchmark's dropout").

``--prompt-lengths 64,96,128`` (``gpt2``): after the two timed runs, one
more ``generate`` per listed prompt length, each a decoding shape the process
has not run yet (ours pads prompts to a multiple of 32 here, and TF and JAX
compile each padded shape once; HF and ours on torch run eagerly). The
resident memory after each is reported with what each new shape kept on
average (``MiB per new shape``): the cost of compiling for another shape (the
"graph retracing" a server with many prompt lengths pays), which stays with
the process. These phases are not part of the ``peak`` column.

Rows ``torch-packed`` / ``torch-nojax-packed`` (``gpt2`` only, not run by
default) decode with ``CachedDecoder(packed_weights=True)``: what its
oneDNN-blocked kernel copies cost in memory.

Rows ``jax-keep-async`` / ``jax-glibc`` (not run by default) run ours on
JAX with other host-memory settings than the plain ``jax`` row's (where
:mod:`bert4keras.allocator` keeps freed memory and runs JAX's computations
inline, the default since 2026-12-07): kept memory with
``JAX_CPU_ENABLE_ASYNC_DISPATCH=1`` (asynchronous dispatch left on) /
``BERT4KERAS_KEEP_FREED_MEMORY=0`` (glibc's own ``malloc`` settings and
asynchronous dispatch, the plain row's settings before). Earlier result files
have a ``jax-keep`` row: ``BERT4KERAS_KEEP_FREED_MEMORY=1`` while it was
opt-in.

Rows ``tensorflow-interop1`` / ``tensorflow-nojax-interop1`` (not run by
default) run ours on TensorFlow with ``TF_NUM_INTEROP_THREADS=1``: TF's executor
then runs one op at a time (each op still uses every core), so fewer
intermediates are alive at once in a graph-mode step.

Rows ``tensorflow-nojax`` / ``torch-nojax`` run ours with ``import jax``
failing, as on a machine where JAX is not installed (``pip install
bert4keras`` does not install it): Keras 3 imports JAX on every backend when
it is there (``keras/src/callbacks/orbax_checkpoint.py``).

Columns, in MiB (2**20 bytes) of resident memory (``/proc/self/status``):

* ``import``: after importing the framework and the library (Keras + backend
  + ``bert4keras``; torch + ``transformers`` and the model class) -- the
  runtime's own baseline, nothing of ours allocated yet;
* ``loaded``: after the model is built and its weights loaded (ours: with
  the optimizer built, for ``bert``);
* ``first``: after the first step / first ``generate`` (compilation included);
* ``peak``: the process' high-water mark (``ru_maxrss``), and the phase in
  which it was reached (``/proc/self/clear_refs`` resets the mark between
  phases, so each phase's own peak is known; the overall peak is their
  maximum);
* ``peak - import``: what the workload itself costs above the runtime;
* ratios ``peak / HF peak`` and ``(peak - import) / (HF peak - HF import)``.

Seconds per step / per ``generate`` (the last one) are printed for context
only: the machine is shared and memory is what is measured here; resident
memory does not depend on the machine's load.

Usage::

    python benchmarks/memory.py                      # full size, ~8 workers, ~6 min
    python benchmarks/memory.py --quick              # tiny shapes, ours on JAX + HF, ~1 min
    python benchmarks/memory.py --workloads gpt2 --impls tensorflow,hf
    python benchmarks/memory.py --workloads gpt2 --prompt-lengths 64,96,128   # per-shape cost
    python benchmarks/memory.py --results mem.json
"""

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import benchlib  # noqa: E402

#: every row, all run by default: each backend as installed here, and the
#: TF/torch backends as bert4keras' own requirements install them (no JAX)
IMPLS = ("tensorflow", "jax", "torch", "hf", "tensorflow-nojax", "torch-nojax")
#: on request only (gpt2): the torch decoder with packed_weights=True
PACKED = ("torch-packed", "torch-nojax-packed")
#: ours on JAX with other host-memory settings (bert4keras.allocator), mapped to
#: their benchlib.JAX_HOST_MEMORY setting: kept memory with JAX's asynchronous
#: dispatch left on, and glibc's own malloc settings (what the plain JAX row ran
#: before 2026-12-07); not run by default
MALLOC_ROWS = {"jax-keep-async": "async", "jax-glibc": "glibc"}
#: ours on TensorFlow started with TF_NUM_INTEROP_THREADS=1 (TF's executor runs
#: one op at a time; intra-op threads unchanged); not run by default
INTEROP_ROWS = ("tensorflow-interop1", "tensorflow-nojax-interop1")
WORKLOADS = ("gpt2", "bert")
#: bert: dropout on both sides (hidden states, attention probabilities, before the head)
DROPOUT = 0.1
MIB = float(1 << 20)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny shapes (2 layers, hidden 64, vocab 1000): a smoke run < 1 min")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="gpt2 and/or bert")
    p.add_argument("--impls", default=None,
                   help="comma-separated: tensorflow, jax, torch (ours on that Keras backend), "
                        "hf (transformers + torch), tensorflow-nojax, torch-nojax (ours with "
                        "'import jax' failing, as where JAX is not installed); default all six "
                        "(--quick: jax,hf); also torch-packed, torch-nojax-packed (gpt2: "
                        "CachedDecoder(packed_weights=True)), tensorflow-interop1, "
                        "tensorflow-nojax-interop1 (TF_NUM_INTEROP_THREADS=1)")
    p.add_argument("--new-tokens", type=int, default=128, help="gpt2: new tokens per generate")
    p.add_argument("--prompt-lengths", default="",
                   help="gpt2: comma-separated prompt lengths decoded once each after the timed "
                        "runs (new decoding shapes): the memory each new shape keeps")
    p.add_argument("--batch", type=int, default=16, help="bert: batch size")
    p.add_argument("--seq-len", type=int, default=128, help="bert: sequence length")
    p.add_argument("--steps", type=int, default=3, help="bert: training steps")
    p.add_argument("--fit", action="store_true",
                   help="bert: ours trains in model.fit (Keras' loop, which does not wait "
                        "for a step's loss before the next step), one step and then the "
                        "others, instead of a train_on_batch each")
    p.add_argument("--workdir", default=None,
                   help="where the weight files are written (default: a temporary directory, "
                        "removed at the end); reused if it already holds them")
    p.add_argument("--timeout", type=float, default=1200, help="seconds per worker")
    p.add_argument("--results", default=None, help="also write the rows as JSON")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--impl", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.workload_list = [w for w in args.workloads.split(",") if w]
    if args.impls is None:
        args.impls = "jax,hf" if args.quick else ",".join(IMPLS)
    args.impl_list = [i for i in args.impls.split(",") if i]
    args.prompt_length_list = [int(n) for n in args.prompt_lengths.split(",") if n]
    for w in args.workload_list:
        if w not in WORKLOADS and w != "prepare":
            p.error("unknown workload %r (%s)" % (w, ", ".join(WORKLOADS)))
    for i in args.impl_list:
        if i not in IMPLS + PACKED + tuple(MALLOC_ROWS) + INTEROP_ROWS:
            p.error("unknown implementation %r (%s)"
                    % (i, ", ".join(IMPLS + PACKED + tuple(MALLOC_ROWS) + INTEROP_ROWS)))
    if args.quick:
        args.new_tokens, args.batch, args.seq_len, args.steps = 8, 4, 32, 2
    if args.fit and args.steps < 2:
        p.error("--fit needs --steps 2 or more (a fit of one step, then one of the rest)")
    return args


def shapes(args):
    """Model sizes of the two workloads (GPT-2 small / BERT-base, or tiny)."""
    if args.quick:
        gpt2 = dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2,
                    num_attention_heads=2, intermediate_size=256)
        bert = dict(gpt2)
    else:
        gpt2 = dict(vocab_size=50257, hidden_size=768, num_hidden_layers=12,
                    num_attention_heads=12, intermediate_size=3072)
        bert = dict(gpt2, vocab_size=21128)
    return gpt2, bert


# ---------------------------------------------------------------------------
# Worker side: phases of one process
# ---------------------------------------------------------------------------


class Phases:
    """Resident memory at the end of each phase and the peak within it.

    The peak within a phase is ``VmHWM`` after ``/proc/self/clear_refs`` was
    reset at the start of the phase (Linux >= 4.0); where that file cannot
    be written, only the process' overall ``ru_maxrss`` is known.
    """

    def __init__(self):
        self.rows, self.resettable = [], True
        self._reset()

    def _status(self, key):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        return 0

    def _reset(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            self.resettable = False

    def mark(self, name, **extra):
        row = dict(phase=name, rss=benchlib.current_rss(),
                   phase_peak=self._status("VmHWM") if self.resettable else None, **extra)
        self.rows.append(row)
        self._reset()

    def report(self, **extra):
        """Print the phases as one JSON line; the peak is over the phases
        not marked ``extra_shape`` (``--prompt-lengths``' own)."""
        rows = [r for r in self.rows if not r.get("extra_shape")]
        peaks = [r["phase_peak"] for r in rows if r["phase_peak"] is not None]
        peak = max(peaks) if peaks and self.resettable else benchlib.peak_rss()
        where = None
        if peaks and self.resettable:
            where = max(rows, key=lambda r: r["phase_peak"] or 0)["phase"]
        print(json.dumps(dict(phases=self.rows, peak=peak, peak_phase=where, **extra)),
              flush=True)


def prepare(args):
    """Write the GPT-2 and BERT weights (random, seed 0) as Hugging Face
    directories under ``args.workdir`` (our exporter; ``from_pretrained``
    reads them)."""
    sys.path.insert(0, ROOT)
    import keras

    from bert4keras.models import build_transformer_model

    gpt2, bert = shapes(args)
    keras.utils.set_random_seed(0)
    model = build_transformer_model(None, model="gpt2", max_position=1024,
                                    hidden_act="gelu_new", layer_norm_eps=1e-5,
                                    with_lm="linear", return_keras_model=False, **gpt2)
    model.save_weights_as_checkpoint(os.path.join(args.workdir, "gpt2"), format="huggingface")
    del model
    model = build_transformer_model(None, model="bert", max_position=512,
                                    return_keras_model=False, **bert)
    model.save_weights_as_checkpoint(os.path.join(args.workdir, "bert"), format="huggingface")


def run_gpt2(args, impl, phases):
    import numpy as np

    directory = os.path.join(args.workdir, "gpt2")
    vocab = shapes(args)[0]["vocab_size"]
    prompt = np.random.RandomState(0).randint(1, vocab, (1, 32))
    if impl == "hf":
        import torch
        from transformers import GPT2LMHeadModel

        phases.mark("import")
        model = GPT2LMHeadModel.from_pretrained(directory).eval()
        model.generation_config.eos_token_id = None
        model.generation_config.pad_token_id = 0
        phases.mark("loaded")

        def generate(prompt):
            ids = torch.from_numpy(prompt)
            with torch.inference_mode():
                out = model.generate(ids, attention_mask=torch.ones_like(ids),
                                     max_new_tokens=args.new_tokens, min_new_tokens=0,
                                     do_sample=False, use_cache=True)
            return out[0, prompt.shape[1]:].numpy()
    else:
        sys.path.insert(0, ROOT)
        import keras  # noqa: F401

        from bert4keras.generation import CachedDecoder
        from bert4keras.models import build_transformer_model

        phases.mark("import")
        model = build_transformer_model(os.path.join(directory, "config.json"), directory,
                                        model="gpt2", with_lm="linear",
                                        return_keras_model=False)
        phases.mark("loaded")
        decoder = CachedDecoder(model, end_id=None, maxlen=args.new_tokens, bucket=32,
                                packed_weights=args.packed)

        def generate(prompt):
            return np.asarray(decoder.generate(list(prompt), max_new_tokens=args.new_tokens)[0])
    seconds = []
    for name in ("first", "second"):
        start = time.perf_counter()
        tokens = generate(prompt)
        seconds.append(time.perf_counter() - start)
        phases.mark(name)
    for length in args.prompt_length_list:  # new decoding shapes, one each
        generate(np.random.RandomState(length).randint(1, vocab, (1, length)))
        phases.mark("prompt%d" % length, extra_shape=True)
    phases.report(seconds=seconds, tokens=[int(t) for t in tokens[:8]])


def run_bert(args, impl, phases):
    import numpy as np

    directory = os.path.join(args.workdir, "bert")
    vocab = shapes(args)[1]["vocab_size"]
    rng = np.random.RandomState(0)
    ids = rng.randint(1, vocab, (args.batch, args.seq_len)).astype("int64")
    labels = rng.randint(0, 8, (args.batch, args.seq_len)).astype("int64")
    if impl == "hf":
        import torch
        from transformers import BertForTokenClassification

        torch.manual_seed(0)
        phases.mark("import")
        # the directory's config.json has dropout 0 (exported from a model built without)
        model = BertForTokenClassification.from_pretrained(
            directory, num_labels=8, hidden_dropout_prob=DROPOUT,
            attention_probs_dropout_prob=DROPOUT)
        if (model.config.hidden_dropout_prob, model.config.attention_probs_dropout_prob) \
                != (DROPOUT, DROPOUT):
            raise RuntimeError("HF BERT did not take dropout %g" % DROPOUT)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        phases.mark("loaded")
        x, y = torch.from_numpy(ids), torch.from_numpy(labels)

        def step():
            loss = model(input_ids=x, token_type_ids=torch.zeros_like(x), labels=y).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return float(loss)
    else:
        sys.path.insert(0, ROOT)
        import keras

        from bert4keras.models import build_transformer_model

        # no keras.utils.set_random_seed: it imports TensorFlow on every backend
        # (+450 MiB on JAX/torch); the weights come from the checkpoint anyway
        phases.mark("import")
        encoder = build_transformer_model(os.path.join(directory, "config.json"), directory,
                                          dropout_rate=DROPOUT, attention_dropout_rate=DROPOUT)
        features = keras.layers.Dropout(DROPOUT, name="Tagger-Dropout")(encoder.output)
        logits = keras.layers.Dense(8, name="Tagger")(features)
        model = keras.Model(encoder.inputs, logits)
        from bert4keras.optimizers import AdamW  # Keras' class; torch: the fused update

        optimizer = AdamW(1e-4)
        model.compile(optimizer=optimizer,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        optimizer.build(model.trainable_variables)
        phases.mark("loaded")
        x = [ids.astype("int32"), np.zeros_like(ids, dtype="int32")]
        y = labels.astype("int32")

        def step():
            return float(np.asarray(model.train_on_batch(x, y)))

        if args.fit:
            def batches():
                while True:
                    yield x, y

            def fit(steps):
                return model.fit(batches(), steps_per_epoch=steps, epochs=1,
                                 verbose=0).history["loss"][-1]
    if args.fit and impl != "hf":
        # one fit of one step (compiles), then one fit for the rest; both in fit, whose
        # data structure differs from train_on_batch's, so that one step function is
        # compiled (a train_on_batch first made fit compile a second one on JAX)
        start = time.perf_counter()
        fit(1)
        seconds = [time.perf_counter() - start]
        phases.mark("first")
        start = time.perf_counter()
        loss = fit(args.steps - 1)
        seconds += [(time.perf_counter() - start) / (args.steps - 1)] * (args.steps - 1)
        phases.mark("steps")
        phases.report(seconds=seconds, loss=loss)
        return
    seconds = []
    for index in range(args.steps):
        start = time.perf_counter()
        loss = step()
        seconds.append(time.perf_counter() - start)
        if index == 0:
            phases.mark("first")
    phases.mark("steps")
    phases.report(seconds=seconds, loss=loss)


class _NoJax:
    """An import hook under which ``import jax`` fails as if JAX were not
    installed: Keras 3 (``keras/src/callbacks/orbax_checkpoint.py``) imports
    JAX on every backend when it is installed (~106 MiB resident on this
    machine); ``pip install bert4keras`` does not install it."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("jax", "jaxlib"):
            raise ImportError("JAX hidden by benchmarks/memory.py (a '-nojax' row)")
        return None


def worker(args):
    if args.impl in MALLOC_ROWS:  # the environment says it (run_worker)
        args.impl = args.impl.split("-")[0]
    if (args.impl or "").endswith("-interop1"):  # the environment says it (run_worker)
        args.impl = args.impl[:-len("-interop1")]
    args.packed = (args.impl or "").endswith("-packed")
    if args.packed:
        args.impl = args.impl[:-len("-packed")]
    if (args.impl or "").endswith("-nojax"):
        sys.meta_path.insert(0, _NoJax())
        args.impl = args.impl[:-len("-nojax")]
    phases = Phases()
    if args.worker == "prepare":
        return prepare(args)
    (run_gpt2 if args.worker == "gpt2" else run_bert)(args, args.impl, phases)


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------


def run_worker(args, workload, impl):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", workload,
           "--impl", impl or "", "--workdir", args.workdir,
           "--new-tokens", str(args.new_tokens), "--batch", str(args.batch),
           "--seq-len", str(args.seq_len), "--steps", str(args.steps),
           "--prompt-lengths", args.prompt_lengths]
    if args.quick:
        cmd.append("--quick")
    if args.fit:
        cmd.append("--fit")
    backend = (impl or "").split("-")[0]  # the backend is the first word of a row name
    if backend not in ("tensorflow", "jax", "torch"):  # prepare: any installed backend
        backend = "jax" if importlib.util.find_spec("jax") is not None else "tensorflow"
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    benchlib.host_memory_environment(env, MALLOC_ROWS.get(impl))
    if impl in INTEROP_ROWS:
        env["TF_NUM_INTEROP_THREADS"] = "1"
    try:
        result = subprocess.run(cmd, env=env, capture_output=True, text=True,
                                timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": "no result within --timeout %s s" % args.timeout}
    if result.returncode != 0:
        if workload == "prepare":
            raise RuntimeError("writing the weights failed (exit %d): %s"
                               % (result.returncode, result.stderr.strip()[-2000:]))
        return {"error": "exit %d: %s" % (result.returncode, result.stderr.strip()[-600:])}
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def summarize(record):
    phases = {p["phase"]: p for p in record["phases"]}
    return dict(import_mib=phases["import"]["rss"] / MIB, loaded_mib=phases["loaded"]["rss"] / MIB,
                first_mib=phases["first"]["rss"] / MIB, peak_mib=record["peak"] / MIB,
                peak_phase=record["peak_phase"],
                phase_peaks_mib={p["phase"]: (p["phase_peak"] or 0) / MIB
                                 for p in record["phases"]},
                seconds=record.get("seconds"),
                second_mib=phases["second"]["rss"] / MIB if "second" in phases else None,
                shapes_mib={p["phase"]: p["rss"] / MIB for p in record["phases"]
                            if p.get("extra_shape")})


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    print(benchlib.machine_line(), flush=True)
    began = time.perf_counter()
    cleanup = args.workdir is None
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="b4k_memory_")
    rows = []
    try:
        if not all(os.path.exists(os.path.join(args.workdir, w, "model.safetensors"))
                   for w in WORKLOADS):
            run_worker(args, "prepare", None)
        for workload in args.workload_list:
            for impl in args.impl_list:
                if impl in PACKED and workload != "gpt2":
                    continue  # packing is a decoding option
                record = run_worker(args, workload, impl)
                if not record or "error" in record:
                    print("  %s %s FAILED: %s" % (workload, impl, (record or {}).get(
                        "error", "no output")), flush=True)
                    continue
                row = dict(workload=workload, impl=impl, **summarize(record))
                rows.append(row)
                print("  %s %s: peak %.0f MiB (in %s), import %.0f MiB" % (
                    workload, impl, row["peak_mib"], row["peak_phase"], row["import_mib"]),
                    flush=True)
    finally:
        if cleanup:
            shutil.rmtree(args.workdir, ignore_errors=True)
    gpt2, bert = shapes(args)
    print()
    print("gpt2: %d layers, hidden %d, vocab %d, batch 1, prompt 32, %d new tokens, greedy, "
          "cached; bert: %d layers, hidden %d, vocab %d, batch %d x %d, AdamW, %d steps"
          % (gpt2["num_hidden_layers"], gpt2["hidden_size"], gpt2["vocab_size"],
             args.new_tokens, bert["num_hidden_layers"], bert["hidden_size"],
             bert["vocab_size"], args.batch, args.seq_len, args.steps))
    print("| workload | impl | import MiB | loaded MiB | after first step MiB | peak MiB (phase) "
          "| peak - import MiB | peak / HF | (peak - import) / HF's | s (last step) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        hf = [r for r in rows if r["workload"] == row["workload"] and r["impl"] == "hf"]
        own = row["peak_mib"] - row["import_mib"]
        if hf:
            hf_own = hf[0]["peak_mib"] - hf[0]["import_mib"]
            row["peak/hf"] = row["peak_mib"] / hf[0]["peak_mib"]
            row["(peak-import)/hf"] = own / hf_own if hf_own > 0 else None
        print("| %s | %s | %.0f | %.0f | %.0f | %.0f (%s) | %.0f | %s | %s | %s |" % (
            row["workload"], "HF torch" if row["impl"] == "hf" else "ours " + row["impl"].replace(
                "-nojax", " (JAX not installed)").replace("-packed", ", packed weights").replace(
                "-glibc", ", glibc malloc defaults").replace(
                "-keep-async", ", kept memory, async dispatch").replace(
                "-keep", ", kept memory").replace("-interop1", ", TF_NUM_INTEROP_THREADS=1"),
            row["import_mib"], row["loaded_mib"], row["first_mib"], row["peak_mib"],
            row["peak_phase"], own,
            "%.2f" % row["peak/hf"] if "peak/hf" in row else "-",
            "%.2f" % row["(peak-import)/hf"] if row.get("(peak-import)/hf") else "-",
            "%.2f" % row["seconds"][-1] if row.get("seconds") else "-"))
    shaped = [r for r in rows if r["shapes_mib"]]
    if shaped:
        names = list(shaped[0]["shapes_mib"])
        print("\nNew decoding shapes (gpt2, one generate per prompt length after the timed runs; "
              "resident MiB after each):")
        print("| impl | after second | %s | MiB per new shape |" % " | ".join(
            "prompt " + n[len("prompt"):] for n in names))
        print("|---|---|%s---|" % ("---|" * len(names)))
        for row in shaped:
            second = row["second_mib"]
            last = list(row["shapes_mib"].values())[-1]
            row["per_new_shape_mib"] = (last - second) / len(row["shapes_mib"])
            print("| %s | %.0f | %s | %.1f |" % (
                row["impl"], second, " | ".join("%.0f" % v for v in row["shapes_mib"].values()),
                row["per_new_shape_mib"]))
    print("\n(MiB = 2**20 bytes; resident memory is not disturbed by other jobs, the seconds "
          "are; total run %.1f min)" % ((time.perf_counter() - began) / 60))
    if args.results:
        with open(args.results, "w") as f:
            json.dump(dict(machine=benchlib.machine(), args={k: v for k, v in vars(args).items()
                                                             if not k.endswith("_list")},
                           rows=rows), f, indent=2)
    return rows


if __name__ == "__main__":
    main()
