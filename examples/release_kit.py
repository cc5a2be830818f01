"""What the generation recipes of released models share when the weights are
not on the machine: a randomly initialised checkpoint written in the
release's own format, and the decoding flags.

The machines these examples are built on reach no model hub, so the NEZHA-Gen,
CPM-LM and mT5 recipes default to a *random* model of the release's shape and
checkpoint layout: :func:`write_random_checkpoint` builds it with
``build_transformer_model`` (no weights loaded) and writes it through the
library's own writer (``Transformer.save_weights_as_checkpoint``, the
release's variable names), then the recipe loads it back exactly as it loads
the real release given with ``--model-dir``. Texts and scores from such a
model are noise: they show that the pipeline runs, nothing more.

* :func:`write_random_checkpoint` -- ``config.json`` + a TF checkpoint of
  random weights in the family's original names;
* :func:`add_decoding_args` / :func:`decoding_options` -- ``--method``,
  ``--n``, ``--topk``, ``--topp``, ``--temperature``, ``--beams``,
  ``--repetition-penalty``, ``--max-new-tokens``, ``--minlen`` and the
  keyword arguments of :meth:`bert4keras.generation.CachedDecoder.generate`;
* :func:`generate_texts` -- decode a batch of prompts with those flags and
  turn every output into text, timed.
"""

import json
import os
import time

import keras

from bert4keras.models import build_transformer_model

RANDOM_NOTE = ("RANDOM WEIGHTS: no %s release is on this machine, so the model is randomly "
               "initialised (written in the release's checkpoint format and loaded back); "
               "its outputs and scores are noise (sample only)")


def write_random_checkpoint(directory, config, model, filename, seed=0, **build_kwargs):
    """Write ``config`` and a randomly initialised checkpoint of ``model``.

    Args:
        directory: created if needed; receives ``config.json`` and the
            checkpoint ``filename`` (a TF prefix, e.g. ``'model.ckpt'``:
            ``.index``, ``.data-00000-of-00001`` and a ``checkpoint`` file).
        config: the configuration dict, in the keys the release's
            ``config.json`` uses (``build_transformer_model`` reads it).
        model: the ``model=`` key of :func:`build_transformer_model`
            (``'nezha'``, ``'gpt2'``, ``'mt5.1.1'``, ...).
        filename: the checkpoint prefix inside ``directory``.
        seed: seed of the random initialisation (same seed, same weights).
        **build_kwargs: further arguments of ``build_transformer_model``
            (e.g. ``application='lm'``: the heads the release carries).

    Returns:
        ``(config_path, checkpoint_prefix)``.

    The weights are written with
    :meth:`~bert4keras.models.base.Transformer.save_weights_as_checkpoint`
    (``format='google'``: the family's original variable names and layouts,
    e.g. mesh-TensorFlow's ``encoder/block_000/layer_000/SelfAttention/q``
    for T5, ``gpt/transformer/layer_0/...`` for the GPT-2 conversions,
    Google BERT's ``bert/encoder/layer_0/...`` for NEZHA).
    """
    os.makedirs(directory, exist_ok=True)
    config_path = os.path.join(directory, "config.json")
    with open(config_path, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    keras.utils.set_random_seed(seed)
    transformer = build_transformer_model(config_path, model=model, return_keras_model=False,
                                          **build_kwargs)
    prefix = os.path.join(directory, filename)
    transformer.save_weights_as_checkpoint(prefix)
    return config_path, prefix


def add_decoding_args(parser, method="sample", max_new_tokens=64, topk=None, topp=0.95,
                      beams=4):
    """Add the decoding flags (defaults as given) to ``parser``."""
    parser.add_argument("--method", choices=["sample", "beam", "greedy"], default=method)
    parser.add_argument("--n", type=int, default=1, help="samples per prompt (sampling)")
    parser.add_argument("--topk", type=int, default=topk, help="sample from the k likeliest")
    parser.add_argument("--topp", type=float, default=topp,
                        help="sample from the smallest set of tokens of this total probability")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--beams", type=int, default=beams, help="beam width (--method beam)")
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    parser.add_argument("--minlen", type=int, default=1,
                        help="fewest tokens before the end token may end a text")
    return parser


def decoding_options(args):
    """The keyword arguments of ``CachedDecoder.generate`` from the flags of
    :func:`add_decoding_args` (and ``args.seed`` for sampling)."""
    options = dict(method=args.method, max_new_tokens=args.max_new_tokens,
                   temperature=args.temperature, repetition_penalty=args.repetition_penalty)
    if args.method == "sample":
        options.update(n=args.n, topk=args.topk, topp=args.topp, seed=args.seed)
    elif args.method == "beam":
        options.update(num_beams=args.beams)
    return options


def generate_texts(decoder, prompts, args, to_text):
    """Decode ``prompts`` (token-id lists) in one batch with the flags of
    :func:`add_decoding_args`.

    Args:
        decoder: a :class:`bert4keras.generation.CachedDecoder`.
        prompts: one list of token ids per prompt.
        args: the parsed flags (``method``, ``n``, ``topk``, ... and ``seed``).
        to_text: ``(prompt index, generated ids) -> str``.

    Returns:
        ``(texts, tokens, seconds)``: per prompt a list of texts (one for beam
        and greedy search, ``args.n`` for sampling), the number of generated
        tokens and the wall time of the decoding (compilation included).
    """
    start = time.time()
    outputs = decoder.generate(prompts, **decoding_options(args))
    seconds = time.time() - start
    texts, tokens = [], 0
    for k, out in enumerate(outputs):
        rows = out if args.method == "sample" else [out]
        texts.append([to_text(k, [int(i) for i in ids]) for ids in rows])
        tokens += sum(len(ids) for ids in rows)
    return texts, tokens, seconds
