"""Autoregressive decoding throughput: bert4keras ``CachedDecoder`` vs
Hugging Face ``transformers`` ``generate`` (torch, KV cache on) vs our
decoder without cache.

GPT-2 small shape by default (12 layers, hidden 768, 12 heads, vocabulary
50257, 124M parameters), random weights, float32, CPU; prompts of 32 tokens,
256 new tokens (no stop token, so every row decodes all of them), batch 1
and 8, greedy search and beam search (4 beams).

Rows, per (batch, method), all timed in interleaved rounds in one run (the
row order rotates every round):

* ``ours cached``: :class:`bert4keras.generation.CachedDecoder` on the
  current Keras backend (``KERAS_BACKEND``; TensorFlow: XLA, JAX:
  ``jax.jit``) -- preallocated key/value caches updated in place, the prompt
  in one compiled call and all the new tokens (model step + search) in one
  compiled ``while`` loop; beam search reads each beam's history where it was
  written instead of reordering the caches.
* ``HF Nt``: ``GPT2LMHeadModel.generate(use_cache=True)`` holding the same
  weights (copied through ``checkpoint_tensors('hf')``), ``eval()``,
  ``torch.inference_mode()``, default attention implementation, with ``N``
  torch threads (``--hf-threads``, default: all cores and 1 -- on a loaded
  2-core machine torch's OpenMP runs up to 10x faster with one thread than
  with two, so both are measured and ours is compared with the faster).
* ``ours uncached``: ``CachedDecoder(use_cache=False)``: the whole sequence
  through the model at every step (padded to a multiple of 32 tokens), the
  way the original toolkit decoded. Slow, so it gets ``--uncached-rounds``
  rounds (default 1), runs only where ``batch x beams <= --uncached-rows``
  (default 1: batch 1 greedy; at 256 tokens the others take too long on a
  small CPU), and may be skipped with ``--no-uncached``.
* ``HF uncached`` (only with ``--hf-uncached-rows``): ``generate(use_cache=
  False)``, torch 1 thread, the same ``--uncached-rounds``: the peer's own
  cached/uncached ratio on the same machine (``HF cached/uncached`` = its
  time over the best HF cached time of the same round).

Before timing, ours is compiled for the exact shape with
``CachedDecoder.warm_up`` (every function ``generate`` will run, each run
once; the compile time is printed) and HF runs a 4-token ``generate``. The
tokens of ours and of HF in the first round are compared (``same``:
identical token ids). A sample is one ``generate`` call; ``tok/s = batch *
new_tokens / time`` (beam search counts the tokens of the returned
sequences, not of every beam). The reported time is the median sample;
ratios are medians over rounds of the per-round ratios.

    python benchmarks/generation.py                                   # full size
    python benchmarks/generation.py --layers 2 --new-tokens 32 --rounds 2   # quick
    KERAS_BACKEND=jax python benchmarks/generation.py --layers 4 --new-tokens 64
"""

import argparse
import functools
import json
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the table to this file")
    return p.parse_args(argv)


def build_models(args):
    sys.path.insert(0, ROOT)
    import keras
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from bert4keras.models import build_transformer_model

    keras.utils.set_random_seed(args.seed)
    ours = build_transformer_model(
        None, model="gpt2", vocab_size=args.vocab, hidden_size=args.hidden,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        intermediate_size=4 * args.hidden, max_position=1024, hidden_act="gelu_new",
        layer_norm_eps=1e-5, with_lm="linear", return_keras_model=False)
    config = GPT2Config(vocab_size=args.vocab, n_embd=args.hidden, n_layer=args.layers,
                        n_head=args.heads, n_positions=1024, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0)
    hf = GPT2LMHeadModel(config).eval()
    state = {name: torch.from_numpy(value.copy())
             for name, value in ours.checkpoint_tensors("hf").items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise RuntimeError("weight copy failed: missing %s, unexpected %s" % (missing, unexpected))
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    return ours, hf


def main(argv=None):
    args = parse_args(argv)
    import keras
    import torch

    from bert4keras.generation import CachedDecoder

    default_threads = torch.get_num_threads()
    hf_threads = [int(t) or default_threads for t in args.hf_threads.split(",")]
    hf_threads = list(dict.fromkeys(hf_threads))  # distinct, in order
    ours, hf = build_models(args)
    cached = CachedDecoder(ours, end_id=None, maxlen=args.new_tokens, bucket=32)
    uncached = CachedDecoder(ours, end_id=None, maxlen=args.new_tokens, bucket=32,
                             use_cache=False)
    rng = np.random.default_rng(args.seed)
    backend = keras.backend.backend()
    print("GPT-2 shape: %d layers, hidden %d, %d heads, vocab %d (%.1fM parameters); prompt %d, "
          "%d new tokens; backend %s; HF rows with torch threads %s" % (
              args.layers, args.hidden, args.heads, args.vocab, ours.model.count_params() / 1e6,
              args.prompt_len, args.new_tokens, backend, hf_threads), flush=True)

    table = []
    began = time.perf_counter()
    for batch in [int(b) for b in args.batches.split(",")]:
        prompts = rng.integers(1, args.vocab, size=(batch, args.prompt_len)).astype("int64")
        for method in args.methods.split(","):
            beam = method == "beam"
            options = dict(method=method, num_beams=args.beams) if beam else {}
            hf_options = dict(num_beams=args.beams, early_stopping=False,
                              length_penalty=0.0) if beam else {}

            def run_ours(decoder=cached, warm=False):
                if warm:
                    return decoder.warm_up(list(prompts), max_new_tokens=args.new_tokens,
                                           **options)
                return decoder.generate(list(prompts), max_new_tokens=args.new_tokens, **options)

            def run_hf(threads, warm=False, use_cache=True):
                torch.set_num_threads(threads)
                new_tokens = 4 if warm else args.new_tokens
                with torch.inference_mode():
                    out = hf.generate(torch.from_numpy(prompts),
                                      attention_mask=torch.ones_like(torch.from_numpy(prompts)),
                                      max_new_tokens=new_tokens, min_new_tokens=0,
                                      do_sample=False, use_cache=use_cache, **hf_options)
                return out[:, args.prompt_len:].numpy()

            rows = {"ours cached": run_ours}
            for threads in hf_threads:
                rows["HF %dt" % threads] = functools.partial(run_hf, threads)
            hf_rows = [name for name in rows if name.startswith("HF")]
            width = batch * (args.beams if beam else 1)
            if not args.no_uncached and width <= args.uncached_rows:
                rows["ours uncached"] = functools.partial(run_ours, uncached)
            if width <= args.hf_uncached_rows:
                rows["HF uncached"] = functools.partial(run_hf, 1, use_cache=False)
            label = "batch %d %s" % (batch, "beam %d" % args.beams if beam else "greedy")
            print("%s: warming up (compiling) ..." % label, flush=True)
            compile_s = {}
            for name, fn in rows.items():
                start = time.perf_counter()
                fn(warm=True)
                compile_s[name] = time.perf_counter() - start
            outputs, times = {}, {name: [] for name in rows}
            names = list(rows)
            for r in range(args.rounds):
                order = names[r % len(names):] + names[:r % len(names)]
                for name in order:
                    if name.endswith("uncached") and r >= args.uncached_rounds:
                        continue
                    start = time.perf_counter()
                    out = rows[name]()
                    times[name].append(time.perf_counter() - start)
                    outputs.setdefault(name, out)
            same = all(np.array_equal(np.asarray(o), h)
                       for o, h in zip(outputs["ours cached"], outputs[hf_rows[0]]))
            if "ours uncached" in outputs:
                same = same and all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
                                    zip(outputs["ours cached"], outputs["ours uncached"]))
            tokens = batch * args.new_tokens
            result = dict(config=label, batch=batch, method=method, same_tokens=same,
                          warm_up_s={k: round(v, 2) for k, v in compile_s.items()})
            for name, samples in times.items():
                result[name] = tokens / statistics.median(samples)
            best_hf = [min(times[name][i] for name in hf_rows) for i in range(args.rounds)]
            result["HF"] = tokens / statistics.median(best_hf)
            result["ours/HF"] = statistics.median(
                best_hf[i] / times["ours cached"][i] for i in range(args.rounds))
            if "ours uncached" in times and times["ours uncached"]:
                n = len(times["ours uncached"])
                result["cached/uncached"] = statistics.median(
                    times["ours uncached"][i] / times["ours cached"][i] for i in range(n))
            if "HF uncached" in times and times["HF uncached"]:
                n = len(times["HF uncached"])
                result["HF cached/uncached"] = statistics.median(
                    times["HF uncached"][i] / best_hf[i] for i in range(n))
                result["HF uncached same"] = all(
                    np.array_equal(a, b) for a, b in zip(outputs["HF uncached"],
                                                         outputs[hf_rows[0]]))
            table.append(result)
            print("  %s" % json.dumps({k: (round(v, 2) if isinstance(v, float) else v)
                                       for k, v in result.items()}), flush=True)

    print()
    header = "| config | ours cached tok/s | %s | ours/best HF | ours uncached tok/s | " \
             "cached/uncached | HF uncached tok/s | HF cached/uncached | same tokens |" % \
             " | ".join("HF %d thread(s) tok/s" % t for t in hf_threads)
    print(header)
    print("|" + "---|" * (8 + len(hf_threads)))
    for r in table:
        print("| %s | %.1f | %s | %.2fx | %s | %s | %s | %s | %s |" % (
            r["config"], r["ours cached"],
            " | ".join("%.1f" % r["HF %dt" % t] for t in hf_threads), r["ours/HF"],
            "%.2f" % r["ours uncached"] if "ours uncached" in r else "-",
            "%.1fx" % r["cached/uncached"] if "cached/uncached" in r else "-",
            "%.2f" % r["HF uncached"] if "HF uncached" in r else "-",
            "%.1fx" % r["HF cached/uncached"] if "HF cached/uncached" in r else "-",
            "yes" if r["same_tokens"] and r.get("HF uncached same", True) else "NO"))
    print("\n(same tokens: ours cached == HF%s, token for token; total run %.1f min)"
          % ("" if args.no_uncached else " and == ours uncached where run",
             (time.perf_counter() - began) / 60))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(args=vars(args), backend=backend, rows=table), f, indent=2)
    return table


if __name__ == "__main__":
    main()
