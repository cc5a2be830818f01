"""Title generation with T5 / mT5: fine-tune an encoder-decoder to write the
title of a Chinese scientific paper from its abstract.

Task: CSL (Chinese Scientific Literature) title generation, as in CLUE's
CLGE benchmark. The files are read by ``task_seq2seq_autotitle.read_pairs``
(the UniLM recipe of the same task): ``.tsv`` with one ``title<TAB>abstract``
per line (the files 0.11.5's recipe read), or CLGE's JSON lines with
``title`` and ``abst``; the official files are read unchanged when their
paths are given (``--train/--dev/--test``). By default the script runs on
the small CSL-style sample ``examples/data/csl_sample/`` (written for these
recipes, not taken from CSL).

Model: mT5 (Xue et al. 2021; the T5.1.1 layout, ``--model mt5.1.1``) or T5 /
T5.1.1, from a mesh-TensorFlow checkpoint (``encoder/block_000/...``, as
released, e.g. bojone's ``mt5_base`` with ``mt5_base_config.json``) given by
``--model-dir`` (``config.json``, the checkpoint, ``spiece.model``). The
encoder reads ``abstract </s>``; the decoder starts from id 0 and is trained
with the cross-entropy of each next title token (``title </s>``).

Vocabulary trimming: mT5's 250,112 pieces are mostly of other languages, so
the vocabulary is cut to the pieces the training texts use, special pieces
first (``pad``, ``</s>``, ``<unk>``: T5's ids 0, 1, 2 stay put), with
:class:`bert4keras.tokenizers.SimplifiedTokenizer` (a tokenizer over the
kept ids) and ``build_transformer_model(..., keep_tokens=...)`` (the embedding
and LM-head rows of those ids, in that order). The kept ids are written to
``keep_tokens.json`` beside the model; ``--keep-tokens FILE`` reuses such a
list (0.11.5's pre-computed ``sentencepiece_cn_keep_tokens.json`` too: with
its already-trimmed ``sentencepiece_cn.model`` add ``--trimmed-spm``).

Decoding: beam search (``--beams``; 1 is greedy) with the key/value cache,
all titles of a batch at once (:class:`bert4keras.generation.CachedDecoder`:
the encoder runs once, each decoder step is one token through the cached
layers). Scores on the test file: character-level ROUGE-1/2/L F1 and BLEU,
as the original recipe reported them (``seq2seq_kit.generation_scores``).

THE DEFAULT WEIGHTS ARE RANDOM. No mT5 release can be had on the machines
this project is built on, so without ``--model-dir`` the script writes a
tiny mT5-shaped checkpoint (2+2 layers, hidden 64) of random weights in the
original mesh-TF format (``release_kit.write_random_checkpoint``, the
library's writer) and fine-tunes that. Its SentencePiece model is the
8,000-piece Japanese unigram model of the ``sentencepiece`` package's tests
(``kyoto_ja_unigram_8000.model``, fetched once by
``bert4keras.datasets.fetch``), the only multilingual-ish model with CJK
characters to be had offline: it has no pad piece, so its unused ``<s>``
takes T5's pad/decoder-start id 0, and many simplified characters are
``<unk>`` under it. Scores of the default run are therefore "sample only".

    python examples/task_seq2seq_autotitle_csl_mt5.py             # random tiny mT5, sample
    python examples/task_seq2seq_autotitle_csl_mt5.py --model-dir mt5_base \\
        --config mt5_base/mt5_base_config.json --train csl/train.tsv \\
        --dev csl/val.tsv --test csl/test.tsv --epochs 40 --batch-size 16 --beams 1
"""

import json
import os
import time

import common  # first: it loads TensorFlow without the C++ start-up log
import keras
import numpy as np

import release_kit
from bert4keras.datasets import fetch
from bert4keras.generation import CachedDecoder
from bert4keras.layers import DropMask
from bert4keras.models import build_transformer_model, find_config
from bert4keras.snippets import DataGenerator
from bert4keras.tokenizers import SimplifiedTokenizer, SpTokenizer
from common import add_run_args, pad_batch, save_and_check, write_json
from seq2seq_kit import fit_best, format_generation_scores, generation_scores
from task_seq2seq_autotitle import SAMPLE_DIR, read_pairs

BUCKET = 16  # pad batches to a multiple of this: few compiled shapes
KYOTO = ("sentencepiece", "0.2.3", "test/kyoto_ja_unigram_8000.model")

#: the shape of the random stand-in: mT5's layout (gated GELU, RMS norms,
#: untied LM head, relative position buckets), sizes cut down
TINY_MT5 = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                attention_head_size=16, intermediate_size=128,
                hidden_act=["gelu_new", "linear"], hidden_dropout_prob=0.1,
                relative_attention_num_buckets=32, relative_attention_max_distance=128)


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


class TitleGenerator(DataGenerator):
    """``((encoder ids, decoder inputs), next tokens, weights)`` batches of
    ``(abstract ids, title ids)`` pairs: the
    decoder reads ``0 title`` and predicts ``title </s>``; weights 1 on the
    title's tokens and ``</s>``, 0 on padding."""

    def __iter__(self, random=False):
        sources, targets = [], []
        for is_end, (source, target) in self.sample(random):
            sources.append(source)
            targets.append([0] + target)
            if len(sources) == self.batch_size or is_end:
                enc = pad_batch(sources, BUCKET)
                dec = pad_batch(targets, BUCKET)
                lengths = np.array([len(t) for t in targets])
                weights = (np.arange(dec.shape[1] - 1)[None] < lengths[:, None] - 1)
                yield (enc, dec[:, :-1]), dec[:, 1:], weights.astype("float32")
                sources, targets = [], []


# ---------------------------------------------------------------------------
# Model and vocabulary
# ---------------------------------------------------------------------------


def t5_special_pieces(sp):
    """The pieces that take T5's ids 0 (pad, also the decoder start), 1
    (``</s>``) and 2 (``<unk>``) in the trimmed vocabulary: the model's own
    pad, end and unknown pieces; a model without a pad piece lends its
    (otherwise unused) start piece ``<s>`` to id 0.

    Raises:
        ValueError: the model lacks an end or unknown piece, or has neither a
            pad nor a start piece.
    """
    pad = sp.pad_id if sp.pad_id is not None else sp.bos_id
    if pad is None or sp.eos_id is None or sp.unk_id is None:
        raise ValueError("%s: T5 needs pad (or <s>), </s> and <unk> pieces; the model has "
                         "pad=%s bos=%s eos=%s unk=%s" % (sp._sp_model_path, sp.pad_id,
                                                          sp.bos_id, sp.eos_id, sp.unk_id))
    return [sp.id_to_token(i) for i in (pad, sp.eos_id, sp.unk_id)]


def model_files(args):
    """``(config, checkpoint, spm path)``: the release in ``--model-dir``, or a
    random tiny mT5 written into ``<output dir>/random_mt5/``."""
    if args.model_dir:
        config = args.config or find_config(args.model_dir)
        spm = args.spm or os.path.join(args.model_dir, "spiece.model")
        return config, args.checkpoint or args.model_dir, spm
    spm = args.spm or fetch(*KYOTO)
    size = SpTokenizer(spm).vocab_size
    directory = os.path.join(args.work_dir, "random_mt5")
    config, checkpoint = release_kit.write_random_checkpoint(
        directory, dict(TINY_MT5, vocab_size=size), args.model, "model.ckpt-0", seed=args.seed)
    print(release_kit.RANDOM_NOTE % "mT5" + "; written to %s" % directory)
    return config, checkpoint, spm


def make_tokenizer(args, spm, texts):
    """``(tokenizer, keep_tokens)``: the kept ids from ``--keep-tokens`` or
    from ``texts`` (special pieces first), and the tokenizer over them."""
    sp = SpTokenizer(spm, token_start=None, token_end="</s>")
    if args.keep_tokens:
        with open(args.keep_tokens, encoding="utf-8") as f:
            keep = [int(i) for i in json.load(f)]
        if args.trimmed_spm:  # 0.11.5's sentencepiece_cn.model already speaks the new ids
            return sp, keep
        return SimplifiedTokenizer(sp, keep), keep
    tokenizer = SimplifiedTokenizer.from_corpus(sp, texts, startswith=t5_special_pieces(sp))
    return tokenizer, tokenizer.keep_tokens


def decode_titles(decoder, tokenizer, sources, batch_size, beams):
    """The generated title of every source (ids), ``batch_size`` at a time."""
    titles = []
    for b in range(0, len(sources), batch_size):
        batch = sources[b:b + batch_size]
        if beams > 1:
            outputs = decoder.generate(batch, method="beam", num_beams=beams)
        else:
            outputs = decoder.generate(batch)
        titles.extend(tokenizer.decode([int(i) for i in ids]) for ids in outputs)
    return titles


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    p.add_argument("--train", default=os.path.join(SAMPLE_DIR, "train.tsv"),
                   help="training pairs (.tsv or CLGE .json lines)")
    p.add_argument("--dev", default=os.path.join(SAMPLE_DIR, "dev.tsv"),
                   help="validation pairs (the best epoch by BLEU is kept)")
    p.add_argument("--test", default=os.path.join(SAMPLE_DIR, "test.tsv"), help="test pairs")
    p.add_argument("--model-dir", default=None,
                   help="a mesh-TF T5/mT5 release (config.json, checkpoint, spiece.model); "
                        "default: a random tiny mT5 (sample only)")
    p.add_argument("--config", default=None, help="config file (default: in --model-dir)")
    p.add_argument("--checkpoint", default=None, help="checkpoint (default: --model-dir)")
    p.add_argument("--spm", default=None,
                   help="SentencePiece model (default: spiece.model in --model-dir; the "
                        "sentencepiece package's kyoto_ja_unigram_8000.model without it)")
    p.add_argument("--model", choices=["mt5.1.1", "t5.1.1", "t5"], default="mt5.1.1")
    p.add_argument("--keep-tokens", default=None,
                   help="JSON list of the original ids to keep (default: computed from the "
                        "training texts)")
    p.add_argument("--trimmed-spm", action="store_true",
                   help="--spm already numbers its pieces as --keep-tokens' new ids (0.11.5's "
                        "sentencepiece_cn.model)")
    p.add_argument("--max-c-len", type=int, default=256, help="abstract tokens (with </s>)")
    p.add_argument("--max-t-len", type=int, default=32, help="title tokens (with </s>)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate (0.11.5's)")
    p.add_argument("--beams", type=int, default=4, help="beam width (1: greedy search)")
    p.add_argument("--work-dir", default=os.path.join("runs", "csl_mt5"),
                   help="where the random checkpoint, keep_tokens.json and the model go")
    add_run_args(p, limit="pairs of each file", output=None,
                 output_doc="WORK_DIR/model.keras")
    p.add_argument("--show", type=int, default=3, help="print this many test titles")
    args = p.parse_args(argv)
    if args.output is None:
        args.output = os.path.join(args.work_dir, "model.keras")
    if args.trimmed_spm and not args.keep_tokens:
        p.error("--trimmed-spm needs --keep-tokens")
    return args


def main(argv=None):
    args = parse_args(argv)
    data = {name: read_pairs(getattr(args, name))[:args.limit or None]
            for name in ("train", "dev", "test")}  # (abstract, title) pairs
    print("CSL pairs: train %d, dev %d, test %d" % tuple(len(data[k]) for k in data))
    config, checkpoint, spm = model_files(args)
    keras.utils.set_random_seed(args.seed)
    tokenizer, keep = make_tokenizer(args, spm, [t for pair in data["train"] for t in pair])
    os.makedirs(args.work_dir, exist_ok=True)
    with open(os.path.join(args.work_dir, "keep_tokens.json"), "w") as f:
        json.dump(keep, f)
    print("vocabulary: %d of the model's pieces kept (%s)" % (len(keep), spm))

    t5 = build_transformer_model(config, checkpoint, model=args.model, keep_tokens=keep,
                                 with_lm="linear", return_keras_model=False)
    model = t5.model
    print("model: %s (%s), embedding %s" % (config, checkpoint,
                                            tuple(t5.layers["Embedding-Token"].weights[0].shape)))

    def encode(pairs):
        return ([tokenizer.encode(abstract, maxlen=args.max_c_len)[0] for abstract, _ in pairs],
                [tokenizer.encode(title, maxlen=args.max_t_len)[0] for _, title in pairs])

    train = TitleGenerator(list(zip(*encode(data["train"]))), batch_size=args.batch_size)
    decoder = CachedDecoder(t5, end_id=tokenizer._token_end_id, maxlen=args.max_t_len)

    def evaluate(pairs):
        titles = decode_titles(decoder, tokenizer, encode(pairs)[0], args.batch_size,
                               args.beams)
        return generation_scores([title for _, title in pairs], titles), titles

    # trained through a copy whose logits drop the decoder's padding mask: the
    # batches' weights already zero the padding (else Keras reweights twice)
    model = keras.Model(model.inputs, DropMask(name="LM-Unmasked")(model.output))
    model.compile(optimizer=keras.optimizers.Adam(args.lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    evaluator, train_seconds = fit_best(
        args, model, train, lambda: evaluate(data["dev"])[0], key=lambda s: s["bleu"],
        report=lambda s, best: "dev %s (best BLEU %.2f)" % (format_generation_scores(s),
                                                           100 * best))

    start = time.time()
    test, titles = evaluate(data["test"])
    test_seconds = time.time() - start
    for (_, title), generated in list(zip(data["test"], titles))[:args.show]:
        print("  title: %s\n  model: %s" % (title, generated))
    note = "" if args.model_dir else " -- RANDOM-INIT tiny mT5: sample only"
    print("test (%d titles, beams %d): %s; training %.0f s, decoding %.1f s%s"
          % (test["count"], args.beams, format_generation_scores(test), train_seconds,
             test_seconds, note))
    results = dict(test=test, dev=evaluator.history, best_epoch=evaluator.best_epoch,
                   loss=[float(v) for v in model.history.history["loss"]], titles=titles,
                   random_weights=not args.model_dir, config=config, checkpoint=checkpoint,
                   spm=spm, model=args.model, vocabulary=len(keep),
                   train_seconds=round(train_seconds, 1), test_seconds=round(test_seconds, 1),
                   epochs=args.epochs, beams=args.beams, seed=args.seed, limit=args.limit,
                   reload_diff=None)
    if args.output:
        enc, dec = train.__iter__().__next__()[0]
        results["reload_diff"] = save_and_check(model, args.output, [enc[:2], dec[:2]])
    if args.results:
        write_json(args.results, results)
    return results


if __name__ == "__main__":
    main()
