"""Vocabulary surgery: give an uncased BERT cased tokens.

An uncased model lower-cases its input, so "Apple" and "apple" look the same to
it. This recipe adds cased tokens to its vocabulary and embedding matrix, so
that a cased tokenizer can feed them, and fine-tuning can then learn what case
means; without fine-tuning the new model behaves exactly as the old one on
lower-case text.

1. ``keep_tokens``: the vocabulary is first simplified
   (``load_vocab(..., simplified=True)``: ``[unused*]`` and tokens the
   tokenizer can never produce are dropped; ``--no-simplify`` keeps all);
   ``keep_tokens[new_id]`` is each kept token's old id, and
   ``build_transformer_model(keep_tokens=...)`` slices the checkpoint's
   embedding rows (and MLM output bias) accordingly.
2. ``compound_tokens``: new tokens are appended, each with the list of kept ids
   whose embedding rows are averaged into its own row (0.11.5's option of
   ``build_transformer_model``): for every ASCII word piece of the vocabulary,
   its capitalised and upper-case forms (``apple`` -> ``Apple``, ``APPLE``;
   ``##ing`` -> ``##ING``), initialised as the lower-case piece; and the whole
   words of ``--words`` (e.g. ``TensorFlow``), initialised as the mean of the
   pieces the uncased tokenizer cuts their lower-case form into
   (``tensor ##flow``).
3. The new vocabulary and checkpoint are saved to ``--output-dir``: Google
   format (``bert_model.ckpt`` + ``bert_config.json`` with the new
   ``vocab_size``) for a Google checkpoint, a Hugging Face directory for one,
   plus ``vocab.txt``; load them with ``do_lower_case=False``.
4. Check: lower-case texts through the old model (uncased tokenizer) and
   through the saved new one (cased tokenizer) give the same last-layer
   vectors; the largest difference is printed and returned.

Model: the small Chinese BERT shipped in ``checkpoints/chinese_bert_small``
(its vocabulary, simplified from Google's Chinese one, holds 2,000 lower-case
English pieces); ``--model-dir`` takes another uncased BERT, e.g. Google's
``uncased_L-12_H-768_A-12`` or the all-MiniLM-L6-v2 directory of
``bert4keras.datasets.minilm_dir()``. No data is read; the check texts are
written here (``--texts``).

    python examples/basic_make_uncased_model_cased.py --output-dir runs/cased_bert
    python examples/basic_make_uncased_model_cased.py --words iPhone McDonald \
        --text 'An iPhone at McDonald'
"""

import json
import os
import shutil

import common  # first: it loads TensorFlow without the C++ start-up log
import numpy as np

from bert4keras import checkpoints
from bert4keras.models import build_transformer_model, load_config
from bert4keras.tokenizers import Tokenizer, load_vocab, save_vocab

import tools_kit
from common import add_model_args, describe_model, resolve_paths, write_json

CHECK_TEXTS = ["welcome to beijing.", "我爱北京天安门，this is a test of the keras model.",
               "the apple iphone 8 在 2017 年发布。"]


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    add_model_args(p)
    p.add_argument("--words", nargs="*", default=["TensorFlow", "PyTorch", "GitHub", "McDonald"],
                   help="cased whole words to add, initialised from their lower-case pieces")
    p.add_argument("--no-simplify", action="store_true",
                   help="keep every token of the vocabulary (keep_tokens = all)")
    p.add_argument("--output-dir", default="runs/cased_bert",
                   help="where the new vocab.txt, checkpoint and config are written")
    p.add_argument("--texts", nargs="+", default=CHECK_TEXTS,
                   help="lower-case texts on which old and new model must agree")
    p.add_argument("--text", default="Welcome to BEIJING with TensorFlow and GitHub.",
                   help="a cased text to show how both tokenizers cut it")
    p.add_argument("--maxlen", type=int, default=64)
    p.add_argument("--results", default=None, help="write the sizes and the check as JSON")
    return p.parse_args(argv)


def cased_vocabulary(token_dict, uncased, words=()):
    """The tokens to append to ``token_dict`` and their ``compound_tokens``.

    Args:
        token_dict: the kept vocabulary, token -> id (ids ``0 .. n-1``).
        uncased: a lower-casing :class:`Tokenizer` over ``token_dict``.
        words: cased whole words to add.

    Returns:
        ``(new_tokens, compound_tokens)``: lists of equal length; the
        ``i``-th new token gets id ``len(token_dict) + i`` and its embedding is
        the mean of the rows ``compound_tokens[i]`` (ids of ``token_dict``).
        A word whose lower-case form the uncased tokenizer cannot cut
        without ``[UNK]`` is skipped.
    """
    new_tokens, compound, seen = [], [], set(token_dict)
    for token, index in sorted(token_dict.items(), key=lambda item: item[1]):
        stem = token[2:] if token.startswith("##") else token
        if not (stem.isascii() and stem.isalpha() and stem == stem.lower()):
            continue
        prefix = token[:len(token) - len(stem)]
        variants = [prefix + stem.upper()]
        if not prefix and len(stem) > 1:
            variants.insert(0, stem.capitalize())
        for variant in variants:
            if variant not in seen:
                seen.add(variant)
                new_tokens.append(variant)
                compound.append([index])
    unk = token_dict.get("[UNK]")
    for word in words:
        pieces = uncased.encode(word)[0][1:-1]
        if word in seen or not pieces or unk in pieces:
            continue
        seen.add(word)
        new_tokens.append(word)
        compound.append(list(pieces))
    return new_tokens, compound


def has_mlm_head(checkpoint):
    """True if ``checkpoint`` stores a BERT MLM head (Google or HF names)."""
    names = checkpoints.open_checkpoint(checkpoint).names()
    return any(n.startswith(("cls/predictions", "cls.predictions")) for n in names)


def save(transformer, config_path, checkpoint, token_dict, output_dir):
    """Write the new model to ``output_dir`` in the format of ``checkpoint``;
    returns the checkpoint path to load it from."""
    os.makedirs(output_dir, exist_ok=True)
    save_vocab(os.path.join(output_dir, "vocab.txt"), token_dict)
    if checkpoints.is_hf_directory(checkpoint):
        transformer.save_weights_as_checkpoint(output_dir, format="huggingface")
        return output_dir
    prefix = os.path.join(output_dir, "bert_model.ckpt")
    transformer.save_weights_as_checkpoint(prefix)
    config = load_config(config_path)
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    config["vocab_size"] = len(token_dict)
    with open(os.path.join(output_dir, "bert_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    return prefix


def main(argv=None):
    args = parse_args(argv)
    config, checkpoint, vocab = resolve_paths(args)
    if checkpoint is None:
        raise ValueError("--random-init: there are no pretrained embeddings to extend")
    print("model: %s" % describe_model(config, checkpoint))
    old_dict = load_vocab(vocab)
    if args.no_simplify:
        kept, keep_tokens = dict(old_dict), list(range(len(old_dict)))
    else:
        kept, keep_tokens = load_vocab(vocab, simplified=True,
                                       startswith=list(tools_kit.SPECIAL_TOKENS))
    uncased = Tokenizer(kept, do_lower_case=True)
    new_tokens, compound_tokens = cased_vocabulary(kept, uncased, args.words)
    new_dict = dict(kept)
    for token in new_tokens:
        new_dict[token] = len(new_dict)
    print("vocabulary: %d tokens, %d kept (keep_tokens), %d cased tokens added "
          "(compound_tokens) -> %d" % (len(old_dict), len(kept), len(new_tokens), len(new_dict)))

    with_mlm = has_mlm_head(checkpoint)
    transformer = build_transformer_model(config, checkpoint, keep_tokens=keep_tokens,
                                          compound_tokens=compound_tokens, with_mlm=with_mlm,
                                          return_keras_model=False)
    if os.path.isdir(args.output_dir):
        shutil.rmtree(args.output_dir)
    saved = save(transformer, config, checkpoint, new_dict, args.output_dir)
    new_config = saved if os.path.isdir(saved) else os.path.join(args.output_dir,
                                                                 "bert_config.json")
    print("saved %s (+ vocab.txt, %s MLM head)" % (saved, "with" if with_mlm else "no"))

    # old: the original files, lower-casing; new: the saved files, cased
    old_tokenizer = Tokenizer(vocab, do_lower_case=True)
    new_tokenizer = Tokenizer(os.path.join(args.output_dir, "vocab.txt"), do_lower_case=False)
    old_model = build_transformer_model(config, checkpoint)
    new_model = build_transformer_model(new_config, saved)
    diff, same_tokens = 0.0, True
    for text in args.texts:
        if text != text.lower():
            raise ValueError("--texts must be lower-case, got %r" % text)
        old_ids, new_ids = (tools_kit.encode(t, [text], args.maxlen)[0]
                            for t in (old_tokenizer, new_tokenizer))
        same_tokens &= old_tokenizer.ids_to_tokens(old_ids[0].tolist()) == \
            new_tokenizer.ids_to_tokens(new_ids[0].tolist())
        old_out = np.asarray(old_model.predict_on_batch([old_ids, np.zeros_like(old_ids)]))
        new_out = np.asarray(new_model.predict_on_batch([new_ids, np.zeros_like(new_ids)]))
        diff = max(diff, float(np.abs(old_out - new_out).max()))
    print("lower-case texts: same tokens %s; max |old - new| of the last layer = %.2e"
          % (same_tokens, diff))
    old_cut = old_tokenizer.tokenize(args.text)
    new_cut = new_tokenizer.tokenize(args.text)
    print("%r\n  uncased: %s\n  cased:   %s" % (args.text, " ".join(old_cut), " ".join(new_cut)))

    results = dict(old_vocab=len(old_dict), kept=len(kept), added=len(new_tokens),
                   new_vocab=len(new_dict), with_mlm=with_mlm, output=saved,
                   lowercase_same_tokens=bool(same_tokens), lowercase_max_diff=diff,
                   uncased_tokens=old_cut, cased_tokens=new_cut,
                   examples=dict(zip(new_tokens[:5], compound_tokens[:5])))
    if args.results:
        write_json(args.results, results)
    return results


if __name__ == "__main__":
    main()
