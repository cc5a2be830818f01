"""What every example script shares: the model-location flags and their resolution.

Every example takes the same way of naming a BERT-family checkpoint:

* ``--model-dir DIR``: a directory holding ``bert_config.json`` (or Hugging
  Face's ``config.json``), the weights (Google TF checkpoint or HF
  ``model.safetensors``) and ``vocab.txt``; default the small Chinese BERT
  that ships in ``checkpoints/chinese_bert_small/``;
* ``--config`` / ``--checkpoint`` / ``--vocab``: override any one of them;
* ``--random-init``: the same architecture without pretrained weights;
* ``--cased``: do not lower-case (Chinese BERT vocabularies are uncased).

Scripts run as ``python examples/NAME.py`` find this module beside them.

Besides the model flags, the kit every example shares:

* importing this module first loads TensorFlow without its C++ start-up log
  (``TF_CPP_MIN_LOG_LEVEL``, see :func:`_import_tensorflow_quietly`);
* :class:`ArgumentParser`: the scripts' parser, whose ``--help`` shows every
  default;

* :func:`add_run_args`: ``--limit``, ``--seed``, ``--output``, ``--results``,
  ``--log-every``; :func:`fit_progress` (with :class:`StepLog`): progress
  within an epoch, a bar on a terminal, a line every N steps in a log file;
* :func:`adamw`: AdamW with linear decay and no decay of norms and biases;
* :class:`BestEpoch`: the callback that scores each epoch and keeps the best
  weights;
* :func:`save_and_check`: save as ``.keras``, load back, compare predictions;
* :func:`read_json_lines` and :class:`DataFormatError` for the official data
  files; :func:`write_json` / :func:`write_json_lines` for results and
  predictions.
"""

import argparse
import json
import os
import sys
import time


def _import_tensorflow_quietly():
    """Import TensorFlow (and let it look for devices) with its C++ start-up
    log hidden: the oneDNN, CUDA-driver and CPU-feature lines.

    ``TF_CPP_MIN_LOG_LEVEL`` is set to 2 (info and warnings off) unless the
    user set it; TensorFlow 2.21 still writes some lines before its logging
    is set up (absl's "All log messages before absl::InitializeLog()"), which
    no variable hides, so file descriptor 2 points to ``/dev/null`` while
    TensorFlow loads. Python errors raised by the import still show (they are
    printed after stderr is back). Nothing is hidden when the user asked for
    the log (``TF_CPP_MIN_LOG_LEVEL`` 0 or 1), when TensorFlow is already
    loaded, or when it is not installed (another Keras backend).
    """
    level = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules or level in ("0", "1"):
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()  # the CUDA probe logs on first use
    except ImportError:
        pass
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# Scripts import this module before Keras (which loads TensorFlow).
_import_tensorflow_quietly()

import keras  # noqa: E402
import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_DIR = os.path.join(REPO, "checkpoints", "chinese_bert_small")


def _shown(default):
    """A default as ``--help`` prints it: a path inside the repository relative
    to its root (as the usage lines run the scripts), ``%`` escaped."""
    if isinstance(default, str) and os.path.isabs(default) and default.startswith(REPO + os.sep):
        default = os.path.relpath(default, REPO)
    return str(default).replace("%", "%%")


def _informative(default):
    """False for the defaults ``--help`` leaves out: ``None``, an unset flag."""
    return not (default is None or default is False or default == argparse.SUPPRESS)


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default, unless its help text already
    names one (``default``) or there is none to show (``None``, an unset
    ``store_true`` flag)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or not action.option_strings or not _informative(action.default):
            return text
        return (text + " " if text else "") + "(default: %s)" % _shown(action.default)


class ArgumentParser(argparse.ArgumentParser):
    """The parser of an example script: ``description`` is the first
    paragraph of ``doc`` (the script's docstring) and ``--help`` shows every
    option's default (:class:`DefaultsHelpFormatter`), options added without
    a help text included."""

    def __init__(self, doc=None, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        if doc is not None:
            kwargs.setdefault("description", doc.split("\n\n")[0])
        super().__init__(**kwargs)

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        if not action.help and action.option_strings and _informative(action.default):
            # argparse prints nothing after an option without help text
            action.help = "(default: %s)" % _shown(action.default)
        return action


def add_model_args(parser, default_dir=DEFAULT_DIR):
    """Add ``--model-dir --config --checkpoint --vocab --random-init --cased``."""
    parser.add_argument("--model-dir", default=None,
                        help="directory with config, checkpoint and vocab.txt (Google or HF); "
                             "default %s" % os.path.relpath(default_dir, os.getcwd()))
    parser.add_argument("--config", default=None, help="bert_config.json / config.json")
    parser.add_argument("--checkpoint", default=None, help="TF checkpoint prefix/dir or HF dir")
    parser.add_argument("--vocab", default=None, help="vocab.txt")
    parser.add_argument("--random-init", action="store_true",
                        help="same architecture, no pretrained weights")
    parser.add_argument("--cased", action="store_true",
                        help="do not lowercase (default lowercases)")
    parser.set_defaults(_default_model_dir=default_dir)
    return parser


def resolve_paths(args):
    """``(config_path, checkpoint_path or None, vocab_path)`` from the flags.

    Without ``--config`` the model directory's config file is chosen by
    :func:`bert4keras.models.find_config` (as ``build_transformer_model``
    would choose it).

    Raises:
        FileNotFoundError: the model directory has neither ``bert_config.json``
            nor ``config.json``, or the vocabulary file does not exist.
    """
    from bert4keras.models import find_config

    model_dir = args.model_dir or getattr(args, "_default_model_dir", DEFAULT_DIR)
    config = args.config if args.config is not None else find_config(model_dir)
    checkpoint = None if args.random_init else (args.checkpoint or model_dir)
    vocab = args.vocab or os.path.join(model_dir, "vocab.txt")
    if not os.path.exists(vocab):
        raise FileNotFoundError("Vocabulary file %r not found (pass --vocab)" % vocab)
    return config, checkpoint, vocab


class CharEncoder:
    """Token id of every character, one token per character, so that
    character-level tags and tokens line up one to one (Chinese BERT
    vocabularies hold single characters); characters the vocabulary lacks,
    or that WordPiece would split, become ``[UNK]``.

    ``encoder(text)`` -> ``[CLS] ids [SEP]`` as ``list[int]`` of length
    ``len(text) + 2``.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.unk = tokenizer.token_to_id("[UNK]")
        self.cls, self.sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        self.cache = {}

    def char_id(self, char):
        """The id of one character (cached)."""
        if char not in self.cache:
            ids = self.tokenizer.encode(char)[0][1:-1]
            self.cache[char] = ids[0] if len(ids) == 1 else self.unk
        return self.cache[char]

    def __call__(self, text):
        return [self.cls] + [self.char_id(c) for c in text] + [self.sep]


def pad_batch(id_lists, bucket=32, fill=0, length=None, maxlen=None):
    """``int32 (batch, length)``: the lists right-padded with ``fill``.

    The length is the longest list rounded up to a multiple of ``bucket``
    (few distinct shapes, so few recompilations), at most ``maxlen``; or
    exactly ``length`` when given (one shape only). Longer lists are cut.
    """
    from bert4keras.snippets import sequence_padding

    if length is None:
        length = -(-max(map(len, id_lists)) // bucket) * bucket
        if maxlen:
            length = min(length, maxlen)
    return sequence_padding(id_lists, length=length, value=fill).astype("int32")


class DataFormatError(ValueError):
    """A data file does not follow its official format.

    The message names the file, the line (or the position in a JSON
    document) and the field at fault; ``path`` and ``line_no`` (1-based)
    hold the file and line for programs when the error is about one line
    (else ``None``).
    """

    def __init__(self, message, path=None, line_no=None):
        super().__init__(message)
        self.path, self.line_no = path, line_no

    @classmethod
    def at(cls, path, line_no, message):
        """The error for line ``line_no`` of ``path``, its message starting
        ``path:line_no:`` (the compiler style)."""
        return cls("%s:%d: %s" % (path, line_no, message), path, line_no)


def read_json_lines(path, what="data", location="{path}, line {line}", not_json="invalid JSON"):
    """``(line_number, object)`` for every non-blank line of a JSON-lines file
    (one JSON object per line, as the LIC2020 / CCKS / NL2SQL releases are
    written; a UTF-8 byte-order mark is accepted).

    Args:
        path: the file.
        what: the kind of file, for the not-found message.
        location: how an error message names the line, from ``{path}`` and
            ``{line}`` (the scripts keep the style of their other messages:
            ``'{path}, line {line}'`` or ``'{path}:{line}'``).
        not_json: the words for a line that is not JSON.

    Raises:
        FileNotFoundError: no file at ``path`` (``what`` names the kind of file).
        DataFormatError: a line is not valid JSON or not a JSON object; its
            ``path`` and ``line_no`` are set.
    """
    if not os.path.exists(path):
        raise FileNotFoundError("%s file %r not found" % (what, path))
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = location.format(path=path, line=number)
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataFormatError("%s: %s (%s)" % (where, not_json, error), path,
                                      number) from None
            if not isinstance(obj, dict):
                raise DataFormatError("%s: expected a JSON object, got %s"
                                      % (where, type(obj).__name__), path, number)
            yield number, obj


def require(obj, key, kind, where):
    """``obj[key]``, checked to be of type ``kind`` (a type or a tuple; a
    ``bool`` never passes for ``int``).

    Raises:
        DataFormatError: ``key`` is missing or of another type; the message
            starts with ``where`` (file, line and position of ``obj``).
    """
    if key not in obj:
        raise DataFormatError("%s: missing field %r" % (where, key))
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise DataFormatError("%s: field %r must be %s, got %s"
                              % (where, key, names, type(value).__name__))
    return value


def read_texts(path, what="data", limit=None):
    """The records of a file to predict: one JSON object per line with a
    string ``text``; the other fields are kept (to be written back with the
    predictions). At most ``limit`` records.

    Raises:
        FileNotFoundError, DataFormatError: see :func:`read_json_lines`; or a
            line without a string ``text`` (file and line named).
    """
    records = []
    for number, obj in read_json_lines(path, what):
        if limit is not None and len(records) >= limit:
            break
        require(obj, "text", str, "%s, line %d" % (path, number))
        records.append(obj)
    return records


def write_json_lines(path, records):
    """Write ``records`` one JSON object per line (UTF-8, not ASCII-escaped),
    creating the directory."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_json(path, obj):
    """Write ``obj`` as one indented JSON document (UTF-8, not ASCII-escaped),
    creating the directory: the ``--results`` file and other summaries."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)


# ---------------------------------------------------------------------------
# Run flags, training, checking the saved model
# ---------------------------------------------------------------------------


def add_run_args(parser, limit="examples per split", limit_default=None, seed=42,
                 output=None, output_doc=None, saved="the fine-tuned model (.keras)",
                 results="the scores"):
    """Add the run flags the examples share.

    * ``--limit N``: use only the first N ``limit`` (smoke runs); left out
      when ``limit`` is ``None``; default ``limit_default``;
    * ``--seed``: default ``seed``;
    * ``--output``: where ``saved`` is written, default ``output``, ``''``
      to skip saving; left out when ``output`` is ``False``. ``output=None``
      leaves the default to the script (``--output`` stays ``None``), and
      ``output_doc`` tells the help what it is;
    * ``--results``: write ``results`` to this JSON file (:func:`write_json`).

    Returns:
        ``parser``.
    """
    if limit is not None:
        parser.add_argument("--limit", type=int, default=limit_default,
                            help="use only the first N %s (smoke runs)" % limit)
    parser.add_argument("--seed", type=int, default=seed,
                        help="seed of the initialisation and the data order (default %(default)s)")
    if output is not False:
        parser.add_argument("--output", default=output,
                            help="where to save %s; default %s; '' to skip"
                                 % (saved, output if output is not None else output_doc))
    parser.add_argument("--results", default=None, help="write %s to this JSON file" % results)
    parser.add_argument("--log-every", type=int, default=50, metavar="N",
                        help="when the output is not a terminal, print the running loss every "
                             "N training steps (on a terminal Keras shows its per-step bar); "
                             "0: one line per epoch only")
    return parser


class StepLog(keras.callbacks.Callback):
    """Print one line every ``every`` training steps: epoch, step/steps,
    the running means Keras reports (loss, metrics) and the seconds since
    the epoch began, flushed at once, so a log file shows progress within a
    long epoch instead of nothing for minutes."""

    def __init__(self, every):
        super().__init__()
        self.every = int(every)
        self.epoch, self.started = 0, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.started = epoch, time.time()

    def on_train_batch_end(self, batch, logs=None):
        if self.every <= 0 or (batch + 1) % self.every:
            return
        steps = (self.params or {}).get("steps")
        scores = " ".join("%s=%.4g" % (k, float(v)) for k, v in sorted((logs or {}).items())
                          if np.ndim(v) == 0)
        print("epoch %d step %d/%s: %s (%.0f s)" % (self.epoch + 1, batch + 1, steps or "?",
                                                    scores, time.time() - self.started),
              flush=True)


def fit_progress(args, callbacks=()):
    """The ``verbose`` and ``callbacks`` arguments of ``model.fit`` for a run
    that shows its progress within an epoch.

    On a terminal: Keras's per-step progress bar (``verbose=1``). Otherwise
    (output piped or redirected to a log file, where the bar would be one
    endless line): one line per epoch (``verbose=2``) plus a
    :class:`StepLog` line every ``args.log_every`` steps (``--log-every``
    from :func:`add_run_args`; 0 turns it off).

    Usage: ``model.fit(data, epochs=..., **fit_progress(args, [evaluator]))``.
    """
    callbacks = list(callbacks)
    if sys.stdout.isatty():
        return dict(verbose=1, callbacks=callbacks)
    every = getattr(args, "log_every", 50)
    return dict(verbose=2, callbacks=callbacks + ([StepLog(every)] if every > 0 else []))


def adamw(lr, steps, exclude=("gamma", "beta", "bias")):
    """AdamW (weight decay 0.01) whose learning rate falls linearly from
    ``lr`` to 0 over ``steps`` steps, without weight decay on the variables
    named in ``exclude`` (LayerNorm ``gamma``/``beta``, biases; add ``'trans'``
    for CRF transitions), as in BERT's fine-tuning recipe.
    ``bert4keras.optimizers.AdamW``: Keras' class, whose update on the torch
    backend is torch's fused kernel."""
    from bert4keras.optimizers import AdamW

    schedule = keras.optimizers.schedules.PolynomialDecay(lr, max(int(steps), 1),
                                                          end_learning_rate=0.0)
    optimizer = AdamW(schedule, weight_decay=0.01)
    optimizer.exclude_from_weight_decay(var_names=list(exclude))
    return optimizer


def describe_model(config, checkpoint):
    """``'config (checkpoint)'``, or ``'config (random init)'`` without one."""
    return "%s (%s)" % (config, "random init" if checkpoint is None else checkpoint)


class BestEpoch(keras.callbacks.Callback):
    """Score the model after every epoch of ``fit``; keep the best weights.

    Args:
        evaluate: ``model -> (scores, output)``: the scores of the epoch (a
            number or a dict, kept in :attr:`history`) and anything to keep
            from the best epoch (e.g. its predictions; ``None`` for nothing).
        key: ``scores -> float``, larger is better; default the scores
            themselves (a number).
        report: ``(scores, best) -> str``, printed after ``epoch N:`` (``best``
            is the best key so far, this epoch included).

    Attributes:
        history: the scores of every epoch.
        best: the best key (``-1.0`` before the first epoch); an epoch
            replaces the best only if it is strictly better, so ties keep the
            earlier epoch.
        best_epoch, best_scores, best_output, best_weights: of the best epoch
            (``best_weights`` from ``model.get_weights()``; ``None`` before
            the first epoch).

    Put the best weights back with ``model.set_weights(callback.best_weights)``.
    """

    def __init__(self, evaluate, key=None, report=None):
        super().__init__()
        self.evaluate = evaluate
        self.key = key or (lambda scores: scores)
        self.report = report or (lambda scores, best: "%s (best %.4f)" % (scores, best))
        self.history, self.best, self.best_epoch = [], -1.0, None
        self.best_scores = self.best_output = self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        scores, output = self.evaluate(self.model)
        self.history.append(scores)
        value = self.key(scores)
        if value > self.best:
            self.best, self.best_epoch = value, epoch + 1
            self.best_scores, self.best_output = scores, output
            self.best_weights = self.model.get_weights()
        print("epoch %d: %s" % (epoch + 1, self.report(scores, self.best)), flush=True)


def save_and_check(model, path, x, tolerance=1e-4, verbose=True):
    """Save ``model`` as ``.keras``, load it back, compare the predictions.

    The file is read with ``keras.saving.load_model(path, compile=False)``,
    as a user would in a new program, and both models predict the batch
    ``x``; the largest absolute difference over all outputs must stay within
    ``tolerance``.

    Args:
        model: a Keras model.
        path: the ``.keras`` file (its directory is created).
        x: one input batch (what ``model.predict_on_batch`` takes).
        tolerance: the largest difference accepted.
        verbose: print the path and the difference.

    Returns:
        The largest absolute difference, a float.

    Raises:
        RuntimeError: the reloaded model predicts differently.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    model.save(path)
    reloaded = keras.saving.load_model(path, compile=False)
    pairs = zip(keras.tree.flatten(reloaded.predict_on_batch(x)),
                keras.tree.flatten(model.predict_on_batch(x)))
    diff = max(float(np.max(np.abs(keras.ops.convert_to_numpy(a) - keras.ops.convert_to_numpy(b))))
               for a, b in pairs)
    if verbose:
        print("saved %s; reloaded with keras.saving.load_model, max |diff| = %.2e" % (path, diff))
    if diff > tolerance:
        raise RuntimeError("%s: the reloaded model predicts differently (max |diff| %g > %g)"
                           % (path, diff, tolerance))
    return diff
