"""What the UniLM seq2seq recipes share: batches, the loss, decoding, scores.

UniLM (Dong et al. 2019, arXiv:1905.03197) turns one BERT into a
sequence-to-sequence model: ``build_transformer_model(..., application='unilm')``
lets the source (segment 0) attend both ways and the target (segment 1) left
to right, and the MLM head predicts each next target token. The recipes
``task_seq2seq_unilm.py``, ``task_seq2seq_autotitle.py``,
``task_question_answer_generation_by_seq2seq.py``,
``task_reading_comprehension_by_seq2seq.py`` and
``task_seq2seq_ape210k_math_word_problem.py`` take from here:

* :class:`Seq2seqGenerator`: ``(source ids, target ids)`` pairs -> batches
  ``((token_ids, segment_ids), labels, weights)``, the weights marking the
  target tokens (the loss is computed on the target only);
* :func:`compile_seq2seq`: the masked cross-entropy (mean over the target
  tokens of the batch) and a weighted accuracy, AdamW with linear decay;
* :func:`setup`, :func:`build_for_training`, :func:`fit_best`,
  :func:`run_record`: the steps of a run (seed and tokenizer; model compiled
  for the training pairs; training with the best epoch kept; the results);
* :func:`build_unilm`, :class:`Seq2seqDecoder`: the model and its cached,
  batched decoding (:class:`bert4keras.generation.CachedDecoder`: key/value
  cache, greedy, beam search or sampling);
* :func:`encode_source`, :func:`encode_target`: WordPiece ids of a source
  (``[CLS] ... [SEP]``) and of a target (``... [SEP]``);
* :func:`generation_scores`: character-level ROUGE-1/2/L and BLEU, the
  figures the original CSL title-generation recipe reports;
  :func:`lcs_length` (longest common subsequence).
"""

import collections
import math
import time

import common  # noqa: F401  (first: TensorFlow without its C++ start-up log)
import keras
import numpy as np

from bert4keras.generation import CachedDecoder
from bert4keras.models import build_transformer_model
from bert4keras.snippets import DataGenerator, text_segmentate, build_for_fit
from bert4keras.tokenizers import Tokenizer
from common import (BestEpoch, adamw, add_model_args, add_run_args, describe_model, fit_progress,
                    pad_batch, resolve_paths)

BUCKET = 16  # pad batches to a multiple of this: few compiled shapes


# ---------------------------------------------------------------------------
# Batches and the loss
# ---------------------------------------------------------------------------


class Seq2seqGenerator(DataGenerator):
    """``((token_ids, segment_ids), labels, weights)``: the next token at each
    position, weighted where that token belongs to the target.

    Args:
        pairs: ``(source_ids, target_ids)`` lists of ints: the source with
            its ``[CLS]`` and ``[SEP]`` (segment 0), the target ending with
            ``[SEP]`` (segment 1).
        batch_size: pairs per batch.
        target_mean: False: weights 1 on target tokens (Keras then divides
            the weighted sum by every position of the batch, padding
            included); True: the weights of a batch sum to 1, so that a loss
            summed over the batch (:func:`seq2seq_loss`) is the mean
            cross-entropy of the target tokens, as the original recipes'
            masked loss ``sum(ce * mask) / sum(mask)``.

    Arrays: ``token_ids``, ``segment_ids``, ``labels`` int32 ``(batch,
    length)`` with ``length`` a multiple of :data:`BUCKET`; ``weights``
    float32 ``(batch, length)``.
    """

    def __init__(self, pairs, batch_size, target_mean=False):
        super().__init__(pairs, batch_size=batch_size)
        self.target_mean = target_mean

    def __iter__(self, random=False):
        tokens, segments = [], []
        for is_end, (source, target) in self.sample(random):
            tokens.append(list(source) + list(target))
            segments.append([0] * len(source) + [1] * len(target))
            if len(tokens) == self.batch_size or is_end:
                t, s = pad_batch(tokens, BUCKET), pad_batch(segments, BUCKET)
                labels = np.zeros_like(t)
                labels[:, :-1] = t[:, 1:]
                weights = np.zeros(t.shape, "float32")
                weights[:, :-1] = s[:, 1:]
                if self.target_mean:
                    weights /= max(weights.sum(), 1.0)
                yield (t, s), labels, weights
                tokens, segments = [], []


def seq2seq_loss(target_mean=True):
    """The cross-entropy of the next token, from the MLM head's logits.

    With ``target_mean`` (and the batches of
    ``Seq2seqGenerator(..., target_mean=True)``, whose weights sum to 1) the
    loss is summed over the batch: ``sum(weight * ce)``, i.e. the mean over
    the target tokens. Otherwise Keras's default mean over all positions.
    """
    reduction = "sum" if target_mean else "sum_over_batch_size"
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction)


def compile_seq2seq(model, lr, steps, target_mean=True, eager=False):
    """Compile a UniLM model for :class:`Seq2seqGenerator` batches: AdamW whose
    learning rate falls linearly from ``lr`` to 0 over ``steps``
    (:func:`common.adamw`), :func:`seq2seq_loss` and the accuracy of the
    target tokens. ``eager``: run the training step eagerly (no graph to
    trace and compile: a run of a few steps starts much sooner)."""
    model.compile(optimizer=adamw(lr, steps), loss=seq2seq_loss(target_mean),
                  weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                  run_eagerly=eager)


def build_unilm(config, checkpoint):
    """The UniLM ``Transformer`` (``application='unilm'``, MLM head giving
    logits) of a BERT checkpoint (``None``: random initialisation); its Keras
    model is ``.model`` (inputs token and segment ids ``(batch, length)``,
    output logits ``(batch, length, vocab)``)."""
    return build_transformer_model(config, checkpoint, application="unilm",
                                   with_mlm="linear", return_keras_model=False)


def add_seq2seq_args(parser, epochs, lr=1e-4, batch_size=16, beams=4, max_source=256,
                     max_target=32, limit="examples per split"):
    """The flags every UniLM recipe has: the model flags
    (:func:`common.add_model_args`), ``--epochs --lr --batch-size --beams
    --max-source --max-target --eval-limit --show --eager`` and the run flags
    (:func:`common.add_run_args`; no ``--output``)."""
    add_model_args(parser)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--lr", type=float, default=lr, help="peak learning rate of AdamW")
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--beams", type=int, default=beams, help="beam width (1: greedy)")
    parser.add_argument("--max-source", type=int, default=max_source,
                        help="most tokens of a source, [CLS] and [SEP] included")
    parser.add_argument("--max-target", type=int, default=max_target,
                        help="most tokens of a target (and of a generated one), [SEP] included")
    parser.add_argument("--eval-limit", type=int, default=0,
                        help="decode at most N validation examples per epoch (0: all)")
    parser.add_argument("--show", type=int, default=3, help="print this many test outputs")
    parser.add_argument("--eager", action="store_true",
                        help="train eagerly and decode without XLA: slower steps but no "
                             "compilation (smoke runs of a few steps)")
    add_run_args(parser, limit=limit, output=False)
    return parser


def setup(args):
    """The start of a run: seed (``--seed``), model paths
    (:func:`common.resolve_paths`) and the WordPiece tokenizer.

    Returns:
        ``(tokenizer, config, checkpoint)`` (``checkpoint`` ``None`` with
        ``--random-init``).
    """
    keras.utils.set_random_seed(args.seed)
    config, checkpoint, vocab = resolve_paths(args)
    return Tokenizer(vocab, do_lower_case=not args.cased), config, checkpoint


def build_for_training(args, config, checkpoint, pairs):
    """The UniLM model (:func:`build_unilm`) compiled for the training
    ``pairs`` (:func:`compile_seq2seq`: target-mean loss, ``--lr`` decaying
    over ``--epochs``, ``--eager``), and their :class:`Seq2seqGenerator`.

    Returns:
        ``(transformer, train)``.
    """
    transformer = build_unilm(config, checkpoint)
    print("model: %s" % describe_model(config, checkpoint))
    train = Seq2seqGenerator(pairs, args.batch_size, target_mean=True)
    compile_seq2seq(transformer.model, args.lr, len(train) * args.epochs, eager=args.eager)
    return transformer, train


def run_record(args, evaluator, train_seconds, config, checkpoint, **extra):
    """The results every recipe returns: the validation history, best
    score and epoch (of :func:`fit_best`'s callback), training time, model
    and settings, plus ``extra``."""
    record = dict(history=evaluator.history, best=evaluator.best, best_epoch=evaluator.best_epoch,
                  train_seconds=round(train_seconds, 1), config=config, checkpoint=checkpoint,
                  epochs=args.epochs, lr=args.lr, beams=args.beams, batch_size=args.batch_size,
                  seed=args.seed)
    record.update(extra)
    return record


def fit_best(args, model, train, evaluate, key, report):
    """Train ``model`` on the :class:`Seq2seqGenerator` ``train`` for
    ``args.epochs``, scoring the validation data after every epoch
    (``evaluate() -> scores``, ``key(scores) -> float``, ``report(scores,
    best) -> str``: see :class:`common.BestEpoch`), and put the best epoch's
    weights back.

    Returns:
        ``(callback, seconds)``: the :class:`common.BestEpoch` (its
        ``history``, ``best``, ``best_epoch``) and the training time.
    """
    evaluator = BestEpoch(lambda _: (evaluate(), None), key=key, report=report)
    start = time.time()
    batches = train.forfit()
    build_for_fit(model, batches)  # one trace of the training step on TensorFlow
    model.fit(batches, steps_per_epoch=len(train), epochs=args.epochs, shuffle=False,
              **fit_progress(args, [evaluator]))
    seconds = time.time() - start
    if evaluator.best_weights is not None:
        model.set_weights(evaluator.best_weights)
    return evaluator, seconds


# ---------------------------------------------------------------------------
# Token ids
# ---------------------------------------------------------------------------


def encode_source(tokenizer, *texts, maxlen=None):
    """``[CLS] text1 [SEP] text2 [SEP] ...``: ids of one or more texts, each
    text cut to leave room for the special tokens (``maxlen``: most tokens of
    the whole source, or ``None``); the first texts keep their length and
    the last one is cut first."""
    sep = tokenizer.token_to_id("[SEP]")
    ids = [tokenizer.token_to_id("[CLS]")]
    pieces = [tokenizer.encode(text)[0][1:-1] for text in texts]
    if maxlen is not None:
        room = maxlen - 1 - len(pieces)
        for i in range(len(pieces) - 1, -1, -1):
            others = sum(len(p) for j, p in enumerate(pieces) if j != i)
            pieces[i] = pieces[i][:max(room - others, 0)]
    for piece in pieces:
        ids += piece + [sep]
    return ids


PASSAGE_SEPARATORS = "\n。！？!?；;，, "


def split_passage(text, max_chars):
    """Pieces of a passage of at most ``max_chars`` characters, cut after
    sentence ends where possible, then after clauses
    (:func:`bert4keras.snippets.text_segmentate`; the pieces joined give the
    passage back)."""
    return text_segmentate(text, max_chars, PASSAGE_SEPARATORS)


def encode_target(tokenizer, text, maxlen=None):
    """``text [SEP]`` as ids, at most ``maxlen`` tokens ([SEP] included)."""
    ids = tokenizer.encode(text)[0][1:-1]
    if maxlen is not None:
        ids = ids[:maxlen - 1]
    return ids + [tokenizer.token_to_id("[SEP]")]


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------


class Seq2seqDecoder:
    """Batched, cached decoding of a UniLM model.

    Args:
        transformer: from :func:`build_unilm`.
        end_id: the stop token (``[SEP]``).
        maxlen: most generated tokens (the stop token counted).
        jit_compile: as :class:`~bert4keras.generation.CachedDecoder`'s:
            ``'auto'`` compiles the decoding steps with XLA on TensorFlow and
            JAX (faster decoding), eager on PyTorch; True also compiles them
            with ``torch.compile`` there; False starts sooner, for tiny runs.

    :meth:`generate` takes source id lists (``[CLS] ... [SEP]``, segment 0)
    and returns the generated ids of each, without the stop token. It runs
    :class:`bert4keras.generation.CachedDecoder` (key/value cache, compiled
    steps) on ``batch_size`` sources at a time.
    """

    def __init__(self, transformer, end_id, maxlen, jit_compile="auto"):
        self.end_id = int(end_id)
        self.maxlen = int(maxlen)
        self.cached = CachedDecoder(transformer, end_id=self.end_id, maxlen=self.maxlen,
                                    jit_compile=jit_compile)

    def strip(self, ids):
        """``ids`` up to (not including) the first stop token, as a list."""
        ids = [int(i) for i in ids]
        return ids[:ids.index(self.end_id)] if self.end_id in ids else ids

    def generate(self, sources, batch_size=16, beams=1, method=None, **options):
        """Generated ids (list of int lists) of every source.

        ``beams > 1``: beam search of that width; else greedy, unless
        ``method='sample'`` (then ``options`` such as ``n``, ``topk``,
        ``seed`` apply and each entry is a list of ``n`` id lists).
        """
        method = method or ("beam" if beams > 1 else "greedy")
        if method == "beam":
            options.setdefault("num_beams", beams)
        out = []
        for b in range(0, len(sources), batch_size):
            batch = self.cached.generate(sources[b:b + batch_size], method=method, **options)
            if method == "sample":
                out.extend([self.strip(ids) for ids in rows] for rows in batch)
            else:
                out.extend(self.strip(ids) for ids in batch)
        return out


# ---------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------


def lcs_length(a, b):
    """Length of the longest common subsequence of two sequences."""
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b):
            prev, row[j + 1] = row[j + 1], prev + 1 if x == y else max(row[j + 1], row[j])
    return row[-1]


def text_units(text):
    """The units the scores count: the characters of ``text``, lower-cased,
    whitespace dropped (the original CSL recipe scores characters)."""
    return [c for c in text.lower() if not c.isspace()]


def _ngrams(units, n):
    return collections.Counter(tuple(units[i:i + n]) for i in range(len(units) - n + 1))


def _f1(overlap, n_hyp, n_ref):
    if not overlap:
        return 0.0
    precision, recall = overlap / n_hyp, overlap / n_ref
    return 2 * precision * recall / (precision + recall)


def rouge_n(reference, hypothesis, n):
    """ROUGE-N F1 of two unit sequences (Lin 2004): n-gram counts clipped
    (an n-gram matches at most as often as it occurs in both), precision over
    the hypothesis's n-grams, recall over the reference's."""
    ref, hyp = _ngrams(reference, n), _ngrams(hypothesis, n)
    overlap = sum((ref & hyp).values())
    return _f1(overlap, sum(hyp.values()), sum(ref.values()))


def rouge_l(reference, hypothesis):
    """ROUGE-L F1 (Lin 2004): the longest common subsequence over the
    hypothesis length (precision) and the reference length (recall)."""
    return _f1(lcs_length(reference, hypothesis), len(hypothesis), len(reference))


def sentence_bleu(reference, hypothesis, max_n=4, epsilon=0.1):
    """BLEU-4 of one hypothesis against one reference (Papineni et al. 2002):
    the geometric mean of the clipped n-gram precisions (n = 1..4, equal
    weights) times the brevity penalty ``exp(1 - r/c)`` when the hypothesis
    (``c`` units) is shorter than the reference (``r``). A precision with no
    match counts ``epsilon`` matches ("method 1" of Chen & Cherry 2014, NLTK's
    ``SmoothingFunction().method1``, which the original recipe used), except
    that no matching unigram at all gives 0. A hypothesis shorter than ``n``
    has the precision ``epsilon / 1`` for that ``n`` (NLTK counts at least
    one n-gram), so this agrees with NLTK's ``sentence_bleu`` with that
    smoothing."""
    if not hypothesis:
        return 0.0
    ref_len, hyp_len = len(reference), len(hypothesis)
    logs = []
    for n in range(1, max_n + 1):
        hyp, ref = _ngrams(hypothesis, n), _ngrams(reference, n)
        matches = sum((hyp & ref).values())
        total = max(sum(hyp.values()), 1)
        if matches == 0:
            if n == 1:
                return 0.0
            matches = epsilon
        logs.append(math.log(matches / total) / max_n)
    penalty = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return penalty * math.exp(math.fsum(logs))


def generation_scores(references, hypotheses):
    """Mean ROUGE-1, ROUGE-2, ROUGE-L F1 and BLEU of generated texts, on
    characters (:func:`text_units`), as the original CSL title recipe
    reported them: each text pair scored alone, then averaged over all
    pairs (an empty hypothesis scores 0).

    Returns:
        ``{'rouge-1', 'rouge-2', 'rouge-l', 'bleu'}`` in [0, 1] and ``'count'``.

    Raises:
        ValueError: the two lists differ in length.
    """
    if len(references) != len(hypotheses):
        raise ValueError("%d references but %d hypotheses" % (len(references), len(hypotheses)))
    totals = dict.fromkeys(("rouge-1", "rouge-2", "rouge-l", "bleu"), 0.0)
    for reference, hypothesis in zip(references, hypotheses):
        ref, hyp = text_units(reference), text_units(hypothesis)
        totals["rouge-1"] += rouge_n(ref, hyp, 1)
        totals["rouge-2"] += rouge_n(ref, hyp, 2)
        totals["rouge-l"] += rouge_l(ref, hyp)
        totals["bleu"] += sentence_bleu(ref, hyp)
    count = max(len(references), 1)
    scores = {k: v / count for k, v in totals.items()}
    scores["count"] = len(references)
    return scores


def format_generation_scores(scores):
    """``ROUGE-1=... ROUGE-2=... ROUGE-L=... BLEU=...`` (percentages)."""
    return "ROUGE-1=%.2f ROUGE-2=%.2f ROUGE-L=%.2f BLEU=%.2f" % tuple(
        100 * scores[k] for k in ("rouge-1", "rouge-2", "rouge-l", "bleu"))
