"""Relation extraction with GPLinker: three EfficientGlobalPointer heads on BERT.

Task and data: DuIE 2.0 (the LIC2020 relation extraction track), read, scored
and written exactly as ``competition_lic2020_relation_extraction.py`` does
(its reader, schema handling, span mapping and port of the official
``re_official_evaluation.py`` are imported from there); by default the
hand-written sample in ``examples/data/duie_sample/`` in the official format
(its scores only show that the pipeline runs). Complex objects (``inWork``,
``onDate``, ... slots) are handled as there: every (predicate, slot) pair is
a relation of its own, reassembled after decoding.

Model (GPLinker, Su 2022, https://kexue.fm/archives/8888: TPLinker's
decomposition, Wang et al. 2020, scored with GlobalPointer), on the hidden
states of BERT, with ``R`` relations:

* entity head: :class:`bert4keras.layers.EfficientGlobalPointer` with 2 heads
  (subjects, objects) and RoPE: ``(batch, 2, seq_len, seq_len)``, a span
  ``[i, j]`` is an entity when its score is positive;
* head-pair head: ``EfficientGlobalPointer`` with ``R`` heads, no RoPE, no
  triangle mask: score of (subject start ``i``, object start ``j``) per
  relation, ``(batch, R, seq_len, seq_len)``;
* tail-pair head: the same for (subject end, object end).

All three are trained with
:func:`bert4keras.backend.sparse_multilabel_categorical_crossentropy` (the
positives given as flat indices ``i * seq_len + j``, ``(0, 0)`` for padding,
as Su's sparse version of the multi-label cross-entropy), summed over the
heads. Decoding: every (subject, object) pair of predicted entities is a
triple of relation ``r`` when both its head pair and its tail pair score
positive for ``r``. Unlike the original recipe this one uses no EMA of the
weights (it needs thousands of steps to help) and AdamW with linear decay.

    python examples/task_relation_extraction_gplinker.py            # shipped sample
    python examples/task_relation_extraction_gplinker.py \\
        --train DuIE/train.json --dev DuIE/dev.json --schema DuIE/schema.json \\
        --model-dir chinese_roberta_wwm_ext_L-12_H-768_A-12 --maxlen 128 \\
        --batch-size 16 --lr 2e-5 --epochs 20 --test DuIE/test.json --test-output pred.json
"""

import time

import common  # first: it loads TensorFlow without the C++ start-up log
import keras
import numpy as np
from keras import ops

from bert4keras.backend import sparse_multilabel_categorical_crossentropy
from bert4keras.layers import EfficientGlobalPointer
from bert4keras.models import build_transformer_model
from bert4keras.snippets import DataGenerator, build_for_fit
from common import (BestEpoch, adamw, add_model_args, add_run_args, pad_batch, save_and_check,
                    write_json)
from competition_lic2020_relation_extraction import (BUCKET, PRIOR_BIAS, Encoded, add_duie_args,
                                                     assemble_spos, duie_scores,
                                                     finish_dev_and_test, load_task, report)

MAX_SPANS = 64  # subjects / objects kept per text when decoding (see decode)


def span_labels(examples_spans, num_relations):
    """The sparse targets of one example.

    Args:
        examples_spans: ``{subject span: [(relation id, object span), ...]}``
            with inclusive token spans (``build_examples`` of the competition
            script).
        num_relations: ``R``.

    Returns:
        ``(entities, heads, tails)``: lists of 2, ``R`` and ``R`` sets of
        ``(row, column)`` pairs: entity spans (subjects, objects), (subject
        start, object start) and (subject end, object end) per relation.
    """
    entities = [set(), set()]
    heads = [set() for _ in range(num_relations)]
    tails = [set() for _ in range(num_relations)]
    for (s_start, s_end), objects in examples_spans.items():
        entities[0].add((s_start, s_end))
        for relation, (o_start, o_end) in objects:
            entities[1].add((o_start, o_end))
            heads[relation].add((s_start, o_start))
            tails[relation].add((s_end, o_end))
    return entities, heads, tails


def pack(label_sets, batch):
    """``int32 (batch, heads, n, 2)``: the pairs of every example and head,
    padded with ``(0, 0)`` (index 0, ignored by the loss's ``mask_zero``);
    ``n >= 1``."""
    n = max([1] + [len(s) for sets in label_sets for s in sets])
    out = np.zeros((batch, len(label_sets[0]), n, 2), dtype="int32")
    for row, sets in enumerate(label_sets):
        for head, pairs in enumerate(sets):
            if pairs:
                out[row, head, :len(pairs)] = sorted(pairs)
    return out


class GPLinkerGenerator(DataGenerator):
    """Batches ``((token_ids, segment_ids), (entity, head, tail))``: ids
    ``(batch, seq_len)``; targets ``int32 (batch, heads, n, 2)`` from
    :func:`pack` (2 entity heads, ``R`` head-pair and ``R`` tail-pair heads)."""

    def __init__(self, examples, num_relations, batch_size):
        super().__init__(examples, batch_size=batch_size)
        self.num_relations = num_relations

    def __iter__(self, random=False):
        batch = []
        for is_end, example in self.sample(random):
            batch.append(example)
            if len(batch) == self.batch_size or is_end:
                ids = pad_batch([token_ids for token_ids, _ in batch], BUCKET)
                labels = [span_labels(spans, self.num_relations) for _, spans in batch]
                yield (ids, np.zeros_like(ids)), tuple(
                    pack([example[k] for example in labels], len(batch)) for k in range(3))
                batch = []


@keras.saving.register_keras_serializable(package="gplinker")
def sparse_global_pointer_loss(y_true, y_pred):
    """Sparse multi-label cross-entropy of a (Efficient)GlobalPointer output.

    Args:
        y_true: ``(batch, heads, n, 2)`` gold ``(i, j)`` pairs per head,
            padded with ``(0, 0)``.
        y_pred: ``(batch, heads, seq_len, seq_len)`` span scores.

    Returns:
        ``(batch,)``: the loss summed over the heads (each head's spans are
        one multi-label problem over ``seq_len ** 2`` classes, index
        ``i * seq_len + j``; index 0 is padding).
    """
    shape = ops.shape(y_pred)
    y_true = ops.cast(y_true, "int32")
    flat_true = y_true[..., 0] * shape[2] + y_true[..., 1]
    flat_pred = ops.reshape(y_pred, (shape[0], shape[1], -1))
    loss = sparse_multilabel_categorical_crossentropy(flat_true, flat_pred, mask_zero=True)
    return ops.sum(loss, axis=1)


def build_model(config, checkpoint, num_relations, head_size):
    """BERT + the three heads: ``[token_ids, segment_ids]`` -> ``[entities
    (batch, 2, L, L), head pairs (batch, R, L, L), tail pairs (batch, R, L,
    L)]``; padded rows and columns score -1e12.

    The heads' span biases start at ``log(0.01 / 0.99)`` (a 1 % prior, as
    the competition script's pointers; the original GPLinker starts at 0).
    """
    bert = build_transformer_model(config, checkpoint)
    hidden, token_ids = bert.output, bert.inputs[0]
    pointers = [EfficientGlobalPointer(2, head_size, name="Entity-Pointer")] + [
        EfficientGlobalPointer(num_relations, head_size, RoPE=False, tril_mask=False, name=name)
        for name in ("Head-Pointer", "Tail-Pointer")]
    outputs = [pointer([hidden, token_ids]) for pointer in pointers]
    for pointer in pointers:
        # start and end biases each get half of q_dense's bias: every score starts near
        # log(0.01 / 0.99), so an untrained model does not call half of all spans entities
        pointer.q_dense.bias.assign(np.full(pointer.q_dense.bias.shape, PRIOR_BIAS, "float32"))
    return keras.Model(bert.inputs, outputs, name="gplinker")


def decode(enc, entities, heads, tails, relations, threshold=0.0, max_spans=MAX_SPANS):
    """Pieces ``(subject, predicate, slot, value, value_start)`` of one text.

    Args:
        enc: the competition script's ``Encoded`` text.
        entities: ``(2, L, L)`` scores; heads, tails: ``(R, L, L)``.
        relations: the ``(predicate, slot)`` list of ``load_schema``.
        threshold: a score above it counts.
        max_spans: at most this many subjects and objects, the highest
            scoring (a trained model finds a handful per text; an untrained
            one scores about half of all spans positive).
    """
    last = len(enc.token_ids) - 2  # no span on [CLS] or [SEP]
    found = []
    for k in (0, 1):
        spans = [(float(entities[k, i, j]), int(i), int(j))
                 for i, j in zip(*np.nonzero(entities[k] > threshold)) if 1 <= i <= j <= last]
        found.append(np.array([(i, j) for _, i, j in sorted(spans, reverse=True)[:max_spans]],
                              dtype="int64").reshape(-1, 2))
    subjects, objects = found
    if not len(subjects) or not len(objects):
        return []
    # (R, subjects, objects): both the head pair and the tail pair above the threshold
    both = ((heads[:, subjects[:, 0]][:, :, objects[:, 0]] > threshold)
            & (tails[:, subjects[:, 1]][:, :, objects[:, 1]] > threshold))
    pieces = []
    for r, s, o in zip(*np.nonzero(both)):
        s_chars, o_chars = enc.char_span(*subjects[s]), enc.char_span(*objects[o])
        if s_chars is None or o_chars is None:
            continue
        predicate, slot = relations[r]
        pieces.append((enc.text[s_chars[0]:s_chars[1]], predicate, slot,
                       enc.text[o_chars[0]:o_chars[1]], o_chars[0]))
    return pieces


def extract_spos(model, tokenizer, texts, schema, relations, maxlen, batch_size, threshold=0.0):
    """Predicted SPO lists (official format) for a list of texts."""
    results = []
    for b in range(0, len(texts), batch_size):
        encs = [Encoded(tokenizer, text, maxlen) for text in texts[b:b + batch_size]]
        ids = pad_batch([e.token_ids for e in encs], BUCKET)
        outputs = [keras.ops.convert_to_numpy(o)
                   for o in model.predict_on_batch([ids, np.zeros_like(ids)])]
        for row, enc in enumerate(encs):
            pieces = decode(enc, *(o[row] for o in outputs), relations, threshold)
            results.append(assemble_spos(pieces, schema))
    return results


def evaluate(model, tokenizer, records, schema, relations, args):
    texts = [r["text"] for r in records]
    predicted = extract_spos(model, tokenizer, texts, schema, relations, args.maxlen,
                             args.batch_size, args.threshold)
    predictions = [{"text": t, "spo_list": p} for t, p in zip(texts, predicted)]
    return duie_scores(records, predictions), predictions


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    add_model_args(p)
    add_duie_args(p)
    p.add_argument("--maxlen", type=int, default=128, help="tokens per text incl. [CLS]/[SEP]")
    p.add_argument("--head-size", type=int, default=64, help="GlobalPointer head size")
    # defaults for the shipped small BERT on the shipped sample (dev F1 0 at 3e-4 after 30
    # epochs, 0.095 at 1e-3); a base-size BERT on the official data wants about 2e-5
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate")
    p.add_argument("--threshold", type=float, default=0.0,
                   help="span / pair score above which it counts")
    add_run_args(p, limit="lines of each file", output="runs/gplinker/model.keras",
                 saved="the trained model (.keras)")
    return p.parse_args(argv)


def main(argv=None):
    """Train on ``--train``, score ``--dev`` after every epoch, return the scores.

    Returns:
        dict with ``dev`` (best-epoch scores of the official metric),
        ``history`` (per epoch), ``losses`` (first and last epoch's mean
        training loss), data counts, timings and the settings.

    Raises:
        DataFormatError: a malformed line in one of the files.
        ValueError: no training sentence has an SPO that can be placed.
    """
    args = parse_args(argv)
    config, checkpoint, tokenizer, schema, relations, examples, counts, dev_records = \
        load_task(args)

    model = build_model(config, checkpoint, len(relations), args.head_size)
    train = GPLinkerGenerator(examples, len(relations), args.batch_size)
    model.compile(optimizer=adamw(args.lr, len(train) * args.epochs),
                  loss=[sparse_global_pointer_loss] * 3)
    evaluator = BestEpoch(
        lambda m: evaluate(m, tokenizer, dev_records, schema, relations, args),
        key=lambda scores: scores["f1"], report=report)
    pairs = (None, len(relations), None, 2)
    dataset = train.to_dataset(
        types=(("int32", "int32"), ("int32", "int32", "int32")),
        shapes=(((None, None), (None, None)), ((None, 2, None, 2), pairs, pairs)))
    start = time.time()
    build_for_fit(model, dataset)  # one trace of the training step on TensorFlow
    history = model.fit(dataset, steps_per_epoch=len(train), epochs=args.epochs, shuffle=False,
                        **common.fit_progress(args, [evaluator]))
    seconds = time.time() - start
    model.set_weights(evaluator.best_weights)
    dev_scores, dev_predictions = evaluate(model, tokenizer, dev_records, schema, relations, args)
    dev_scores = finish_dev_and_test(
        args, dev_records, dev_scores, dev_predictions,
        lambda texts: extract_spos(model, tokenizer, texts, schema, relations, args.maxlen,
                                   args.batch_size, args.threshold),
        "runs/gplinker/test_predictions.json")

    reload_diff = None
    if args.output:
        reload_diff = save_and_check(model, args.output, next(iter(train))[0])
    losses = history.history["loss"]
    results = dict(dev=dev_scores, history=evaluator.history, best_dev_f1=evaluator.best,
                   losses=[losses[0], losses[-1]],
                   data=dict(counts, dev_sentences=len(dev_records), relations=len(relations)),
                   train_seconds=round(seconds, 1), checkpoint=checkpoint, config=config,
                   epochs=args.epochs, lr=args.lr, maxlen=args.maxlen, batch_size=args.batch_size,
                   threshold=args.threshold, limit=args.limit, seed=args.seed,
                   reload_diff=reload_diff)
    if args.results:
        write_json(args.results, results)
    return results


if __name__ == "__main__":
    main()
