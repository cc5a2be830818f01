"""Autoregressive decoding throughput: bert4keras ``CachedDecoder`` on each
Keras backend (TensorFlow, JAX, PyTorch) vs Hugging Face ``transformers``
``generate`` (torch, KV cache on) vs our decoder without cache.

GPT-2 small shape by default (12 layers, hidden 768, 12 heads, vocabulary
50257, 124M parameters), random weights, float32, CPU; prompts of 32 tokens,
256 new tokens (no stop token, so every row decodes all of them), batch 1
and 8, greedy search and beam search (4 beams).

Every row runs in its own worker process (Keras fixes its backend per
process, and a fresh process gives each row its own peak RSS); the workers
wait on their stdin while another row runs. The first worker builds the model
(``--seed``) and writes its weights once (a Keras ``.weights.h5`` file, and
the same tensors in ``transformers``' names through
``checkpoint_tensors('hf')``); every other worker loads them, so every row
computes the same function.

Rows, per (batch, method), all timed in interleaved rounds in one run (the
row order rotates every round):

* ``ours <backend>`` (``--backend``, default ``tensorflow,jax,torch``):
  :class:`bert4keras.generation.CachedDecoder` in a worker started with
  ``KERAS_BACKEND=<backend>`` -- preallocated key/value caches updated in
  place, the prompt in one call and the new tokens in a loop: one compiled
  ``while`` loop on TensorFlow (XLA) and JAX (``jax.jit``); on torch, which
  Keras runs eagerly, a Python loop of eager steps under ``torch.inference_mode``
  with the caches written in place (``index_copy_``). Beam search reads each
  beam's history where it was written instead of reordering the caches. The
  torch row is run with each of ``--torch-threads`` (default: all cores and
  1, as the HF rows: ``ours torch Nt``) and compared through the faster.
* ``ours torch Nt plain`` (``--torch-plain``): the torch row with
  ``bert4keras.layers.direct.USE_ONEDNN`` off (torch's own matmul), in no
  group; ``torch oneDNN/plain`` is the torch row's speed over it.
* ``ours torch Nt packed`` (``--torch-packed``): the same worker's decoder
  built with ``CachedDecoder(packed_weights=True)`` (oneDNN-blocked copies of
  the kernels, made in the first call and kept by the decoder), a group of
  its own with its own ``/TF`` and ``/HF``.
* ``ours torch Nt compiled`` / ``ours torch Nt compiled packed``
  (``--torch-compile``): the same worker's decoders built with
  ``CachedDecoder(jit_compile=True)``, without and with ``packed_weights``:
  each cached step compiled by ``torch.compile`` (the warm-up compiles every
  cache segment), groups of their own with their own ``/TF`` and ``/HF``.
* ``HF Nt``: ``GPT2LMHeadModel.generate(use_cache=True)`` holding the same
  weights, ``eval()``, ``torch.inference_mode()``, default attention
  implementation, with ``N`` torch threads (``--hf-threads``, default: all
  cores and 1 -- on a loaded 2-core machine torch's OpenMP can run much
  faster with one thread than with two, so both are measured and ours is
  compared with the faster).
* ``ours <backend> one cache`` (``--one-cache``; TensorFlow and JAX): the
  same worker's decoder built with ``CachedDecoder(cache_segments=1)``, one
  cache of the final length from the first step, as before segmented caches
  (by default a long output with large caches decodes in up to four
  segments, each reading caches only as long as itself); a group of its own,
  and ``<backend> segments/one`` is the default row's speed over it.
* ``ours uncached`` (the first backend's worker): ``CachedDecoder(use_cache=
  False)``, the whole sequence through the model at every step (padded to a
  multiple of 32 tokens), the way the original toolkit decoded. Slow, so it
  gets ``--uncached-rounds`` rounds (default 1), runs only where ``batch x
  beams <= --uncached-rows`` (default 1), and may be skipped with
  ``--no-uncached``.
* ``HF uncached`` (only with ``--hf-uncached-rows``): ``generate(use_cache=
  False)``, torch 1 thread, the same ``--uncached-rounds``.

Before timing, ours is compiled for the exact shape with
``CachedDecoder.warm_up`` (the compile time is printed) and HF runs a
4-token ``generate``. The tokens of every row in the first round are compared
with HF's (``same``: identical token ids) and ours with each other (``ours
agree``). A sample is one ``generate`` call;
``tok/s = batch * new_tokens / time`` (beam search counts the tokens of the
returned sequences, not of every beam). The reported time is the median
sample; ratios are medians over rounds of the per-round ratios: ``/TF`` is
the row's speed over ``ours tensorflow``'s, ``/HF`` over the best HF row's.
``%peak`` is the row's matmul FLOP rate (``benchlib.decoder_step_flops``
summed over the prompt and every step, beams included) as a fraction of this
machine's fp32 matmul peak (``benchlib.matmul_peak``, TensorFlow, torch and
JAX, the highest, measured in this run before the workers start). ``peak RSS`` is
each worker's high-water resident memory at the end of the run
(``benchlib.peak_rss``; all configurations of the run, the model included;
our workers other than the first build the model with random weights before
loading the file, so their figure includes that initialization; see
``benchmarks/memory.py`` for the memory figures).

    python benchmarks/generation.py                                   # full size
    python benchmarks/generation.py --layers 2 --new-tokens 32 --rounds 2   # quick
    python benchmarks/generation.py --backend torch --methods greedy --results out.json
"""

import argparse
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
sys.path.insert(0, HERE)
import benchlib  # noqa: E402

BACKENDS = ("tensorflow", "jax", "torch")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default=",".join(BACKENDS),
                   help="comma-separated Keras backends for our rows (tensorflow, jax, torch); "
                        "ratios are taken to tensorflow's row when it is listed")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    p.add_argument("--methods", default="greedy,beam", help="greedy and/or beam")
    p.add_argument("--beams", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    p.add_argument("--uncached-rounds", type=int, default=1)
    p.add_argument("--no-uncached", action="store_true", help="skip the uncached row")
    p.add_argument("--uncached-rows", type=int, default=1,
                   help="run the uncached row only where batch x beams <= this (it costs "
                        "O(length) per token)")
    p.add_argument("--hf-uncached-rows", type=int, default=0,
                   help="also time HF generate(use_cache=False) (torch 1 thread) where batch x "
                        "beams <= this, for the peer's own cached/uncached ratio (0: never)")
    p.add_argument("--hf-threads", default="0,1",
                   help="comma-separated torch intra-op thread counts, one HF row each (0: "
                        "torch's default, all cores); ours/HF is taken against the fastest")
    p.add_argument("--torch-threads", default="0,1",
                   help="comma-separated torch thread counts, one 'ours torch' row each (0: all "
                        "cores); ratios use the fastest")
    p.add_argument("--torch-plain", action="store_true",
                   help="also time the torch row (first --torch-threads setting) with "
                        "bert4keras.layers.direct.USE_ONEDNN off: torch's own matmul for "
                        "every Dense and the tied output projection (row 'ours torch Nt "
                        "plain', in no group; its time over the oneDNN row's is printed)")
    p.add_argument("--torch-packed", action="store_true",
                   help="also time a torch decoder built with packed_weights=True (first "
                        "--torch-threads setting): row and group 'ours torch Nt packed', "
                        "with its own /TF and /HF")
    p.add_argument("--torch-compile", action="store_true",
                   help="also the torch worker's decoders with jit_compile=True "
                        "(torch.compile), with and without packed_weights: rows 'ours torch "
                        "Nt compiled' and 'ours torch Nt compiled packed', groups of their own")
    p.add_argument("--one-cache", action="store_true",
                   help="also time CachedDecoder(cache_segments=1) on TF and JAX")
    p.add_argument("--no-peak", action="store_true",
                   help="skip the fp32 matmul peak measurement (no %%peak column)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", "--json", dest="results", default=None,
                   help="write the raw rows (and the run's settings) to this JSON file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--weights", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# -- workers ------------------------------------------------------------------------
def _build_ours(args):
    import keras

    from bert4keras.models import build_transformer_model

    keras.utils.set_random_seed(args.seed)
    return build_transformer_model(
        None, model="gpt2", vocab_size=args.vocab, hidden_size=args.hidden,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        intermediate_size=4 * args.hidden, max_position=1024, hidden_act="gelu_new",
        layer_norm_eps=1e-5, with_lm="linear", return_keras_model=False)


class OursWorker:
    """One Keras backend: builds (first worker) or loads the weights."""

    def __init__(self, args, first):
        import keras

        from bert4keras.generation import CachedDecoder

        self.args = args
        self.backend = keras.backend.backend()
        ours = _build_ours(args)
        h5 = os.path.join(args.weights, "ours.weights.h5")
        if first:
            ours.model.save_weights(h5)
            np.savez(os.path.join(args.weights, "hf.npz"), **ours.checkpoint_tensors("hf"))
        else:
            ours.model.load_weights(h5)
        self.params = ours.model.count_params()
        self.torch = None
        if self.backend == "torch":
            import torch

            self.torch, self.default_threads = torch, torch.get_num_threads()
        self.decoders = {
            "cached": CachedDecoder(ours, end_id=None, maxlen=args.new_tokens, bucket=32),
            "uncached": CachedDecoder(ours, end_id=None, maxlen=args.new_tokens, bucket=32,
                                      use_cache=False),
        }
        if self.torch is None:  # one cache of the final length (no segments)
            self.decoders["one"] = CachedDecoder(ours, end_id=None, maxlen=args.new_tokens,
                                                 bucket=32, cache_segments=1)
        else:  # oneDNN-blocked kernels kept by the decoder
            self.decoders["packed"] = CachedDecoder(ours, end_id=None, maxlen=args.new_tokens,
                                                    bucket=32, packed_weights=True)
            if args.torch_compile:  # steps compiled by torch.compile
                for name, packed in (("compiled", False), ("compiledpacked", True)):
                    self.decoders[name] = CachedDecoder(
                        ours, end_id=None, maxlen=args.new_tokens, bucket=32, jit_compile=True,
                        packed_weights=packed)

    def run(self, prompts, method, row="cached", warm=False):
        options = dict(method=method, num_beams=self.args.beams) if method == "beam" else {}
        # 'cached:N[:plain]' / 'packed:N' / 'compiled:N' / 'compiledpacked:N': N torch
        # threads (0: default), oneDNN off with 'plain', the packed_weights decoder with
        # 'packed', the jit_compile=True decoders with 'compiled[packed]'
        row, *torch_options = row.split(":")
        if self.torch is not None and torch_options:
            from bert4keras.layers import direct

            self.torch.set_num_threads(int(torch_options[0]) or self.default_threads)
            direct.USE_ONEDNN = "plain" not in torch_options[1:]
        decoder = self.decoders[row]
        if warm:
            decoder.warm_up(list(prompts), max_new_tokens=self.args.new_tokens, **options)
            return None
        out = decoder.generate(list(prompts), max_new_tokens=self.args.new_tokens, **options)
        return [np.asarray(o).tolist() for o in out]


class HFWorker:
    """``transformers`` GPT-2 holding the first worker's weights."""

    def __init__(self, args):
        import torch
        from transformers import GPT2Config, GPT2LMHeadModel

        self.args, self.torch = args, torch
        self.default_threads = torch.get_num_threads()
        config = GPT2Config(vocab_size=args.vocab, n_embd=args.hidden, n_layer=args.layers,
                            n_head=args.heads, n_positions=1024, resid_pdrop=0.0,
                            embd_pdrop=0.0, attn_pdrop=0.0)
        self.model = GPT2LMHeadModel(config).eval()
        with np.load(os.path.join(args.weights, "hf.npz")) as tensors:
            state = {name: torch.from_numpy(tensors[name].copy()) for name in tensors.files}
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        if unexpected or set(missing) - {"lm_head.weight"}:
            raise RuntimeError("weight copy failed: missing %s, unexpected %s"
                               % (missing, unexpected))
        self.model.generation_config.eos_token_id = None
        self.model.generation_config.pad_token_id = 0
        self.params = sum(p.numel() for p in self.model.parameters())

    def run(self, prompts, method, row="1", warm=False):
        torch = self.torch
        use_cache = row != "uncached"
        threads = 1 if not use_cache else (int(row) or self.default_threads)
        torch.set_num_threads(threads)
        options = dict(num_beams=self.args.beams, early_stopping=False,
                       length_penalty=0.0) if method == "beam" else {}
        prompts = torch.from_numpy(np.asarray(prompts, "int64"))
        with torch.inference_mode():
            out = self.model.generate(prompts, attention_mask=torch.ones_like(prompts),
                                      max_new_tokens=4 if warm else self.args.new_tokens,
                                      min_new_tokens=0, do_sample=False, use_cache=use_cache,
                                      **options)
        return None if warm else out[:, self.args.prompt_len:].numpy().tolist()


def worker_main(args):
    """Serve JSON commands on stdin, one per line, one JSON answer each."""
    sys.path.insert(0, ROOT)
    name = args.worker
    if name == "hf":
        worker = HFWorker(args)
    else:
        worker = OursWorker(args, first=name.endswith(":first"))
    reply = dict(ready=True, params=worker.params,
                 backend=getattr(worker, "backend", "torch"))
    print(json.dumps(reply), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        if cmd["cmd"] == "rss":
            print(json.dumps(dict(peak_rss=benchlib.peak_rss())), flush=True)
            continue
        start = time.perf_counter()
        out = worker.run(cmd["prompts"], cmd["method"], cmd["row"], warm=cmd["cmd"] == "warm")
        seconds = time.perf_counter() - start
        print(json.dumps(dict(seconds=seconds, tokens=out)), flush=True)


class Worker:
    """The main process' handle on a worker subprocess."""

    def __init__(self, name, backend, argv, weights):
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), *argv, "--worker", name,
             "--weights", weights], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, cwd=ROOT)
        self.hello = None

    def ready(self):
        """Wait for the worker's first line (its model is built or loaded)."""
        if self.hello is None:
            self.hello = self._read()
        return self.hello

    def _read(self):
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("worker %s exited (code %s); see its stderr above"
                                   % (self.name, self.proc.wait()))
            if line.startswith("{"):
                return json.loads(line)

    def ask(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        try:
            self.proc.stdin.write(json.dumps(dict(cmd="quit")) + "\n")
            self.proc.stdin.close()
        except (BrokenPipeError, ValueError):
            pass
        self.proc.wait(timeout=60)


# -- the table ----------------------------------------------------------------------
def generate_flops(args, batch, rows_per_input):
    """Matmul FLOP of one ``generate`` call: the prompt pass (``prompt_len``
    positions of every row, each with the vocabulary projection only for the
    last) and every new token's cached step, beams counted."""
    rows = batch * rows_per_input
    shape = dict(layers=args.layers, hidden=args.hidden, intermediate=4 * args.hidden,
                 vocab=args.vocab)
    no_vocab = dict(shape, vocab=0)
    prompt = sum(benchlib.decoder_step_flops(batch, i + 1, **no_vocab)
                 for i in range(args.prompt_len))
    prompt += benchlib.decoder_step_flops(batch, 0, **dict(shape, layers=0))
    steps = sum(benchlib.decoder_step_flops(rows, args.prompt_len + t + 1, **shape)
                for t in range(args.new_tokens - 1))
    return prompt + steps


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    argv = list(sys.argv[1:] if argv is None else argv)
    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    unknown = set(backends) - set(BACKENDS)
    if unknown or not backends:
        raise SystemExit("--backend: unknown %s (choose from %s)" % (sorted(unknown), BACKENDS))
    hf_threads = list(dict.fromkeys(int(t) for t in args.hf_threads.split(",")))
    print(benchlib.machine_line(), flush=True)
    print("load average at start: %.2f %.2f %.2f (shared machine)" % os.getloadavg(), flush=True)
    peak = {}
    if not args.no_peak:
        for library in ("tensorflow", "torch", "jax"):
            peak[library] = benchlib.matmul_peak(library)
        print("fp32 matmul peak: %s GFLOP/s" % ", ".join(
            "%s %.0f" % kv for kv in peak.items()), flush=True)
    began = time.perf_counter()
    weights = tempfile.mkdtemp(prefix="b4k_generation_")
    workers = {}
    try:
        start = time.perf_counter()
        first = workers["ours " + backends[0]] = Worker(backends[0] + ":first", backends[0],
                                                        argv, weights)
        first.ready()  # the weights are written: the others start side by side
        for backend in backends[1:]:
            workers["ours " + backend] = Worker(backend, backend, argv, weights)
        workers["HF"] = Worker("hf", backends[0], argv, weights)
        for w in workers.values():
            w.ready()
        print("workers ready (%.1fs)" % (time.perf_counter() - start), flush=True)
        print("GPT-2 shape: %d layers, hidden %d, %d heads, vocab %d (%.1fM parameters); "
              "prompt %d, %d new tokens; HF rows with torch threads %s (0: all cores)" % (
                  args.layers, args.hidden, args.heads, args.vocab,
                  first.hello["params"] / 1e6, args.prompt_len, args.new_tokens, hf_threads),
              flush=True)
        table = run_table(args, backends, hf_threads, workers, peak)
        rss = {name: w.ask(cmd="rss")["peak_rss"] for name, w in workers.items()}
    finally:
        for w in workers.values():
            w.close()
        for f in os.listdir(weights):
            os.remove(os.path.join(weights, f))
        os.rmdir(weights)
    print_table(args, backends, table, rss, peak)
    warning = benchlib.memory_pressure(rss)
    if warning:
        print("\n" + warning)
    print("\n(total run %.1f min; load average at the end: %.2f %.2f %.2f)"
          % (((time.perf_counter() - began) / 60,) + os.getloadavg()))
    if args.results:
        settings = {k: v for k, v in vars(args).items() if k not in ("worker", "weights")}
        with open(args.results, "w") as f:
            json.dump(dict(args=settings, machine=benchlib.machine(), matmul_peak_gflops=peak,
                           peak_rss_bytes=rss, rows=table), f, indent=2)
    return table


def run_table(args, backends, hf_threads, workers, peak):
    rng = np.random.default_rng(args.seed)
    torch_threads = list(dict.fromkeys(int(t) for t in args.torch_threads.split(",")))
    default_threads = os.cpu_count()
    best_peak = max(peak.values()) if peak else None
    table = []
    for batch in [int(b) for b in args.batches.split(",")]:
        prompts = rng.integers(1, args.vocab, size=(batch, args.prompt_len)).tolist()
        for method in args.methods.split(","):
            beam = method == "beam"
            rows, groups = {}, {}
            for b in backends:
                if b == "torch":
                    for threads in torch_threads:
                        name = "ours torch %dt" % (threads or default_threads)
                        rows[name] = (workers["ours torch"], "cached:%d" % threads)
                        groups.setdefault("ours torch", []).append(name)
                    if args.torch_plain:  # oneDNN off, the first thread setting, no group
                        plain = "ours torch %dt" % (torch_threads[0] or default_threads)
                        rows[plain + " plain"] = (workers["ours torch"],
                                                  "cached:%d:plain" % torch_threads[0])
                    if args.torch_packed:  # its own group, the first thread setting
                        packed = "ours torch %dt packed" % (torch_threads[0] or default_threads)
                        rows[packed] = (workers["ours torch"], "packed:%d" % torch_threads[0])
                        groups["ours torch packed"] = [packed]
                    if args.torch_compile:  # groups of their own, the first thread setting
                        n = torch_threads[0] or default_threads
                        for kind, suffix in (("compiled", "compiled"),
                                             ("compiledpacked", "compiled packed")):
                            name = "ours torch %dt %s" % (n, suffix)
                            rows[name] = (workers["ours torch"], "%s:%d" % (kind, torch_threads[0]))
                            groups["ours torch " + suffix] = [name]
                else:
                    rows["ours " + b] = (workers["ours " + b], "cached")
                    groups["ours " + b] = ["ours " + b]
                    if args.one_cache:
                        rows["ours %s one cache" % b] = (workers["ours " + b], "one")
                        groups["ours %s one cache" % b] = ["ours %s one cache" % b]
            for threads in hf_threads:
                rows["HF %dt" % (threads or default_threads)] = (workers["HF"], str(threads))
            hf_rows = [name for name in rows if name.startswith("HF")]
            groups["HF"] = hf_rows
            width = batch * (args.beams if beam else 1)
            if not args.no_uncached and width <= args.uncached_rows:
                rows["ours uncached"] = (workers["ours " + backends[0]], "uncached")
            if width <= args.hf_uncached_rows:
                rows["HF uncached"] = (workers["HF"], "uncached")
            label = "batch %d %s" % (batch, "beam %d" % args.beams if beam else "greedy")
            print("%s: warming up (compiling) ..." % label, flush=True)
            compile_s = {}
            for name, (worker, row) in rows.items():
                compile_s[name] = worker.ask(cmd="warm", prompts=prompts, method=method,
                                             row=row)["seconds"]
            outputs, times = {}, {name: [] for name in rows}
            names = list(rows)
            for r in range(args.rounds):
                order = names[r % len(names):] + names[:r % len(names)]
                for name in order:
                    if name.endswith("uncached") and r >= args.uncached_rounds:
                        continue
                    worker, row = rows[name]
                    answer = worker.ask(cmd="run", prompts=prompts, method=method, row=row)
                    times[name].append(answer["seconds"])
                    outputs.setdefault(name, answer["tokens"])
            tokens = batch * args.new_tokens
            flops = generate_flops(args, batch, args.beams if beam else 1)
            best = {g: [min(times[n][i] for n in members) for i in range(args.rounds)]
                    for g, members in groups.items()}
            best_hf = best["HF"]
            result = dict(config=label, batch=batch, method=method,
                          warm_up_s={k: round(v, 2) for k, v in compile_s.items()},
                          seconds={k: v for k, v in times.items()}, flop_per_call=flops)
            for name, samples in times.items():
                result[name] = tokens / statistics.median(samples)
            for group, samples in best.items():
                result[group + " best"] = tokens / statistics.median(samples)
                if best_peak:
                    result[group + " %peak"] = 100.0 * flops / statistics.median(samples) / (
                        best_peak * 1e9)
                if group == "HF":
                    continue
                result[group + " same"] = all(outputs[n] == outputs[hf_rows[0]]
                                              for n in groups[group])
                result[group + " /HF"] = statistics.median(
                    best_hf[i] / samples[i] for i in range(args.rounds))
                if "ours tensorflow" in best:
                    result[group + " /TF"] = statistics.median(
                        best["ours tensorflow"][i] / samples[i] for i in range(args.rounds))
            ours_rows = [n for n in outputs if n.startswith("ours") and n != "ours uncached"]
            result["ours agree"] = all(outputs[n] == outputs[ours_rows[0]] for n in ours_rows)
            for name in times:
                if name.endswith(" one cache"):  # the default (segments) over one cache
                    result[name[len("ours "):-len(" one cache")] + " segments/one"] = \
                        statistics.median(times[name][i] / times[name[:-len(" one cache")]][i]
                                          for i in range(args.rounds))
            plain = [n for n in times if n.endswith(" plain")]
            if plain:  # the oneDNN row's speed over the same thread setting without it
                result["torch oneDNN/plain"] = statistics.median(
                    times[plain[0]][i] / times[plain[0][:-len(" plain")]][i]
                    for i in range(args.rounds))
            if times.get("ours uncached"):
                n = len(times["ours uncached"])
                cached = best["ours " + backends[0]]
                result["cached/uncached"] = statistics.median(
                    times["ours uncached"][i] / cached[i] for i in range(n))
                result["uncached same"] = outputs["ours uncached"] == outputs[
                    groups["ours " + backends[0]][0]]
            if times.get("HF uncached"):
                n = len(times["HF uncached"])
                result["HF cached/uncached"] = statistics.median(
                    times["HF uncached"][i] / best_hf[i] for i in range(n))
                result["HF uncached same"] = outputs["HF uncached"] == outputs[hf_rows[0]]
            table.append(result)
            print("  " + json.dumps({k: (round(v, 2) if isinstance(v, float) else v)
                                     for k, v in result.items() if k != "seconds"}),
                  flush=True)
    return table


def print_table(args, backends, table, rss, peak):
    groups = ["ours " + b for b in backends]
    if args.one_cache:
        groups += ["ours %s one cache" % b for b in backends if b != "torch"]
    if args.torch_packed and "torch" in backends:
        groups.append("ours torch packed")
    if args.torch_compile and "torch" in backends:
        groups += ["ours torch compiled", "ours torch compiled packed"]
    print()
    for r in table:
        print("%s: %s tok/s (warm-up s: %s)" % (r["config"], ", ".join(
            "%s %.1f" % (name, r[name]) for name in r["seconds"]), r["warm_up_s"]))
    cols = ["config"] + ["%s tok/s" % g for g in groups + ["HF"]] + \
        ["%s /TF" % g for g in groups if "ours tensorflow" in groups] + \
        ["%s /HF" % g for g in groups] + \
        (["%s %%peak" % g for g in groups + ["HF"]] if peak else []) + ["same tokens"]
    print("\n| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in table:
        cells = [r["config"]] + ["%.1f" % r[g + " best"] for g in groups + ["HF"]] + \
            ["%.2fx" % r[g + " /TF"] for g in groups if "ours tensorflow" in groups] + \
            ["%.2fx" % r[g + " /HF"] for g in groups] + \
            (["%.1f%%" % r[g + " %peak"] for g in groups + ["HF"]] if peak else []) + \
            ["yes" if all(r[g + " same"] for g in groups) else
             "NO (%s)" % ", ".join(g for g in groups if not r[g + " same"])]
        print("| " + " | ".join(cells) + " |")
    for r in table:
        if not r["ours agree"]:
            print("%s: our cached rows do NOT all return the same tokens" % r["config"])
        elif not all(r[g + " same"] for g in groups):
            print("%s: our cached rows all return the same tokens (not HF's)" % r["config"])
    for r in table:
        if "cached/uncached" in r or "HF cached/uncached" in r:
            print("%s: ours uncached %s tok/s, cached/uncached %s (same tokens: %s); HF "
                  "uncached %s tok/s, HF cached/uncached %s" % (
                      r["config"], "%.2f" % r["ours uncached"] if "ours uncached" in r else "-",
                      "%.1fx" % r["cached/uncached"] if "cached/uncached" in r else "-",
                      r.get("uncached same", "-"),
                      "%.2f" % r["HF uncached"] if "HF uncached" in r else "-",
                      "%.1fx" % r["HF cached/uncached"] if "HF cached/uncached" in r else "-"))
    for r in table:
        ratios = ["%s %.2fx" % (k[:-len(" segments/one")], v) for k, v in r.items()
                  if k.endswith(" segments/one")]
        if ratios:
            print("%s: default (cache segments) / one cache: %s" % (r["config"],
                                                                     ", ".join(ratios)))
    for r in table:
        if "torch oneDNN/plain" in r:
            print("%s: torch with oneDNN / without (USE_ONEDNN off, same threads): %.2fx" % (
                r["config"], r["torch oneDNN/plain"]))
    print("\npeak RSS per worker process (whole run, model included): " + ", ".join(
        "%s %.2f GB" % (name, v / 1e9) for name, v in rss.items()))
    print("(tok/s of a group: its fastest thread setting per round; /TF, /HF: median over "
          "rounds of the speed ratio; same tokens: every row == the first HF row)")


if __name__ == "__main__":
    main()
