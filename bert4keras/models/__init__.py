"""Transformer model families and :func:`build_transformer_model`.

One module per family (``bert.py``, ...), each with a ``MODELS`` dict of the
``model=`` keys it serves; :mod:`bert4keras.models.base` holds the shared
:class:`Transformer` base class.
"""

import inspect
import json
import os

from bert4keras.checkpoints import CheckpointError  # noqa: F401  (re-export)
from bert4keras.models import albert, bert, electra, gpt, nezha, roformer, t5
from bert4keras.models.base import FORMATS, Transformer  # noqa: F401
from bert4keras.models.bert import BERT  # noqa: F401

#: ``model=`` keys of :func:`build_transformer_model`.
MODELS = {}
for _family in (bert, albert, nezha, electra, roformer, gpt, t5):
    MODELS.update(_family.MODELS)

#: Google/Hugging Face config keys -> constructor arguments.
CONFIG_KEYS = {
    "max_position_embeddings": "max_position",
    "type_vocab_size": "segment_vocab_size",
    "hidden_dropout_prob": "dropout_rate",
    "attention_probs_dropout_prob": "attention_dropout_rate",
}
REQUIRED_CONFIG_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers",
                        "num_attention_heads", "intermediate_size")


def load_config(config_path):
    """Read a Google ``bert_config.json`` or a Hugging Face ``config.json``.

    ``config_path`` may be the file or a directory holding one of them.

    Raises:
        FileNotFoundError / ValueError: naming the file when it is missing or
            not valid JSON.
    """
    path = os.fspath(config_path)
    if os.path.isdir(path):
        for candidate in ("config.json", "bert_config.json"):
            if os.path.exists(os.path.join(path, candidate)):
                path = os.path.join(path, candidate)
                break
        else:
            raise FileNotFoundError("No config.json or bert_config.json in directory %r" % path)
    if not os.path.exists(path):
        raise FileNotFoundError("Config file not found: %r" % path)
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError("Cannot read config %r: %s" % (path, exc)) from exc
    if not isinstance(config, dict):
        raise ValueError("Config %r is not a JSON object" % path)
    config["_path"] = path
    return config


def _accepted_arguments(cls):
    names = set()
    for klass in cls.__mro__:
        if klass is object:
            continue
        names.update(inspect.signature(klass.__init__).parameters)
    return names - {"self", "kwargs"}


def build_transformer_model(config_path=None, checkpoint_path=None, model="bert",
                            application="encoder", return_keras_model=True, **kwargs):
    """Build a Keras 3 Transformer from a config and load a checkpoint.

    Args:
        config_path: Google ``bert_config.json``, Hugging Face ``config.json``,
            or a directory with either. May be None if every required size is
            given in ``kwargs``.
        checkpoint_path: Google TF checkpoint prefix or directory, or a Hugging
            Face directory of ``*.safetensors`` (sharded too); None leaves the
            random initialisation.
        model: a key of :data:`MODELS` (``'bert'``, ``'roberta'``, ``'albert'``,
            ``'albert_unshared'``, ``'nezha'``, ``'electra'``, ``'roformer'``,
            ``'roformer_v2'``, ``'gpt'``, ``'gpt2'``, ``'gpt2_ml'``, ``'t5'``,
            ``'t5.1.1'``, ``'mt5.1.1'`` and their ``_encoder``/``_decoder``
            variants) or a :class:`Transformer` subclass.
        application: ``'encoder'``, ``'lm'`` or ``'unilm'``.
        return_keras_model: return the ``keras.Model`` (default) or the
            :class:`Transformer` object (its ``.model`` is the Keras model).
        **kwargs: constructor arguments overriding the config: ``with_pool``,
            ``with_nsp``, ``with_mlm``, ``keep_tokens``, ``max_position``,
            ``segment_vocab_size``, ``dropout_rate``, ...

    Returns:
        ``keras.Model`` with inputs ``Input-Token`` (and ``Input-Segment``),
        each ``(batch, seq_len)`` int32.

    Raises:
        KeyError: a required size is missing from the config (the file and
            key are named).
        CheckpointError: the checkpoint is missing, lacks a variable or does
            not match the config (see :meth:`Transformer.load_weights_from_checkpoint`).
    """
    config = load_config(config_path) if config_path is not None else {"_path": "<kwargs>"}
    if isinstance(model, str):
        if model.lower() not in MODELS:
            raise ValueError("Unknown model %r; known: %s" % (model, ", ".join(sorted(MODELS))))
        cls = MODELS[model.lower()]
    else:
        cls = model
    config = cls.translate_config(config)
    args = {}
    for key, value in config.items():
        args[CONFIG_KEYS.get(key, key)] = value
    args.update(kwargs)
    args["application"] = application
    missing = [k for k in REQUIRED_CONFIG_KEYS if args.get(k) is None]
    if missing:
        raise KeyError("Config %s lacks required key(s): %s" % (config["_path"], ", ".join(missing)))
    accepted = _accepted_arguments(cls)
    unknown = set(kwargs) - accepted
    if unknown:
        raise TypeError("%s got unknown argument(s): %s" % (cls.__name__, ", ".join(sorted(unknown))))
    transformer = cls(**{k: v for k, v in args.items() if k in accepted})
    transformer.build()
    if checkpoint_path is not None:
        transformer.load_weights_from_checkpoint(checkpoint_path)
    return transformer.model if return_keras_model else transformer
