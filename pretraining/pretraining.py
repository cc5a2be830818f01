"""Pretrain a BERT-family model on TFRecords written by ``pretraining.data_utils``.

Usage (the small Chinese BERT that ships in ``examples/pretrained/``)::

    python -m pretraining.data_utils --model roberta --vocab VOCAB --corpus corpus.txt \\
        --seq-len 128 --out runs/mlm_records
    python -m pretraining.pretraining --model roberta --config bert_config.json \\
        --vocab VOCAB --records runs/mlm_records --seq-len 128 --batch-size 64 \\
        --steps 20000 --out-dir runs/mlm

Objectives: ``roberta`` (masked LM with whole-word masking, Liu et al. 2019 /
Cui et al. 2019; the MLM head runs only at the masked positions, as Google's
``run_pretraining.py`` gathers ``masked_lm_positions``), ``gpt`` (causal LM
through ``application='lm'``) and ``unilm`` (seq2seq LM through
``application='unilm'``); the last two score every labelled position.

Training state (weights, optimizer, epoch) is backed up every ``--save-every``
steps with ``keras.callbacks.BackupAndRestore``: rerunning the same command
after an interruption continues from the last backup. At the end the weights
are written as a Google-format TF checkpoint (``bert_model.ckpt``) beside
``bert_config.json`` and ``vocab.txt``, which ``build_transformer_model`` loads.
Logs: TensorBoard (``--out-dir/logs``) and ``--out-dir/history.csv``.
"""

import argparse
import json
import os
import shutil
import sys
import time

import keras
from keras import ops

from bert4keras.layers import register
from bert4keras.models import build_transformer_model, load_config


@register
class GatherPositions(keras.layers.Layer):
    """``[(batch, seq_len, hidden), (batch, P) int] -> (batch, P, hidden)``."""

    def call(self, inputs):
        x, positions = inputs
        index = ops.expand_dims(ops.cast(positions, "int32"), -1)
        return ops.take_along_axis(x, index, axis=1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[1]) + (input_shape[0][-1],)


def build_pretraining_model(config_path, objective, max_predictions, init_checkpoint=None,
                            **kwargs):
    """The model trained and the :class:`~bert4keras.models.Transformer` it wraps.

    For ``objective='roberta'`` the training model takes an extra input
    ``Input-MLM-Positions`` ``(batch, max_predictions)`` and outputs MLM logits
    ``(batch, max_predictions, vocab)`` at those positions only. For ``gpt`` /
    ``unilm`` it outputs logits ``(batch, seq_len, vocab)``.
    """
    application = {"roberta": "encoder", "gpt": "lm", "unilm": "unilm"}[objective]
    transformer = build_transformer_model(config_path, init_checkpoint, with_mlm="linear",
                                          application=application, return_keras_model=False,
                                          **kwargs)
    if objective != "roberta":
        return transformer.model, transformer
    layers = transformer.layers
    sequence = layers["Transformer-%d-FeedForward-Norm" % (transformer.num_hidden_layers - 1)].output
    positions = keras.Input(shape=(max_predictions,), dtype="int32", name="Input-MLM-Positions")
    x = GatherPositions(name="MLM-Gather")([sequence, positions])
    x = layers["MLM-Dense"](x)
    x = layers["MLM-Norm"](x)
    x = layers["Embedding-Token"](x, mode="dense")
    x = layers["MLM-Bias"](x)
    model = keras.Model(transformer.model.inputs + [positions], x, name="mlm_pretraining")
    return model, transformer


def gather_masked(dataset, max_predictions):
    """Map ``(x, labels, weights)`` batches to the masked positions only.

    Keeps the ``max_predictions`` positions with the largest weight (all the
    masked ones when at most that many are masked; the data pipeline limits
    masking to about 15 %, so choose ``max_predictions >= 0.15 * seq_len``
    plus a margin).
    """
    import tensorflow as tf

    def pick(x, labels, weights):
        _, positions = tf.math.top_k(weights, k=max_predictions, sorted=True)
        x = dict(x)
        x["Input-MLM-Positions"] = positions
        labels = tf.gather(labels, positions, batch_dims=1)
        weights = tf.gather(weights, positions, batch_dims=1)
        return x, labels, weights

    return dataset.map(pick, num_parallel_calls=tf.data.AUTOTUNE)


def learning_rate_schedule(lr, steps, warmup_steps):
    """Linear warm-up to ``lr`` over ``warmup_steps``, then cosine decay to 0."""
    warmup_steps = max(1, min(warmup_steps, steps - 1))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0, decay_steps=max(1, steps - warmup_steps),
        warmup_target=lr, warmup_steps=warmup_steps, alpha=0.0)


def make_optimizer(name, schedule, weight_decay, grad_accum, clipnorm):
    """AdamW (decoupled weight decay, no decay on LayerNorm and biases)."""
    kwargs = dict(learning_rate=schedule, global_clipnorm=clipnorm)
    if grad_accum > 1:
        kwargs["gradient_accumulation_steps"] = grad_accum
    if name == "adamw":
        optimizer = keras.optimizers.AdamW(weight_decay=weight_decay, beta_2=0.98,
                                           epsilon=1e-6, **kwargs)
        optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
        return optimizer
    if name == "lamb":
        return keras.optimizers.Lamb(**kwargs)
    raise ValueError("Unknown optimizer %r (adamw or lamb)" % name)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["roberta", "gpt", "unilm"], default="roberta",
                   help="pretraining objective")
    p.add_argument("--config", required=True, help="bert_config.json (or HF config.json)")
    p.add_argument("--vocab", required=True, help="vocab.txt copied beside the checkpoint")
    p.add_argument("--init-checkpoint", default=None, help="start from these weights")
    p.add_argument("--records", required=True,
                   help="TFRecord directory (with manifest.json), file or glob")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=10000, help="optimizer steps")
    p.add_argument("--warmup-steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--clipnorm", type=float, default=1.0)
    p.add_argument("--optimizer", choices=["adamw", "lamb"], default="adamw")
    p.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    p.add_argument("--max-predictions", type=int, default=None,
                   help="masked positions scored per sequence (default 0.15*seq_len+4)")
    p.add_argument("--save-every", type=int, default=500, help="back up every N steps")
    p.add_argument("--dropout", type=float, default=None, help="override the config's dropout")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", required=True)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from pretraining.data_utils import (TrainingDatasetGPT, TrainingDatasetRoBERTa,
                                        TrainingDatasetUniLM)

    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.out_dir, exist_ok=True)
    max_predictions = args.max_predictions or int(0.15 * args.seq_len) + 4
    kwargs = {}
    if args.dropout is not None:
        kwargs.update(dropout_rate=args.dropout, attention_dropout_rate=args.dropout)
    model, transformer = build_pretraining_model(args.config, args.model, max_predictions,
                                                 args.init_checkpoint, **kwargs)
    data_cls = {"roberta": TrainingDatasetRoBERTa, "gpt": TrainingDatasetGPT,
                "unilm": TrainingDatasetUniLM}[args.model]
    dataset = data_cls.load_tfrecord(args.records, args.seq_len, args.batch_size,
                                     shuffle=True, seed=args.seed, repeat=True)
    if args.model == "roberta":
        dataset = gather_masked(dataset, max_predictions)

    schedule = learning_rate_schedule(args.lr, args.steps, args.warmup_steps)
    optimizer = make_optimizer(args.optimizer, schedule, args.weight_decay, args.grad_accum,
                               args.clipnorm)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                        reduction="mean_with_sample_weight"),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=True,
    )
    steps_per_epoch = min(args.save_every, args.steps)
    epochs = -(-args.steps * args.grad_accum // steps_per_epoch)
    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(args.out_dir, "backup")),
        keras.callbacks.CSVLogger(os.path.join(args.out_dir, "history.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(args.out_dir, "logs"), update_freq=50),
    ]
    start = time.time()
    model.fit(dataset, epochs=epochs, steps_per_epoch=steps_per_epoch, callbacks=callbacks,
              verbose=2)
    elapsed = time.time() - start
    prefix = os.path.join(args.out_dir, "bert_model.ckpt")
    transformer.save_weights_as_checkpoint(prefix)
    config = load_config(args.config)
    config.pop("_path", None)
    with open(os.path.join(args.out_dir, "bert_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)
    if os.path.abspath(args.vocab) != os.path.abspath(os.path.join(args.out_dir, "vocab.txt")):
        shutil.copyfile(args.vocab, os.path.join(args.out_dir, "vocab.txt"))
    with open(os.path.join(args.out_dir, "train_info.json"), "w", encoding="utf-8") as f:
        json.dump({"argv": sys.argv[1:] if argv is None else list(argv),
                   "seconds_this_run": round(elapsed, 1)}, f, indent=2)
    print("Saved %s (+ bert_config.json, vocab.txt)" % prefix)


if __name__ == "__main__":
    main()
