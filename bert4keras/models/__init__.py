"""Transformer model families and :func:`build_transformer_model`.

One module per family (``bert.py``, ...), each with a ``MODELS`` dict of the
``model=`` keys it serves; :mod:`bert4keras.models.base` holds the shared
:class:`Transformer` base class, :mod:`bert4keras.models.config` the config
files (:func:`find_config`, :func:`load_config`, the key translation both ways).
"""

import inspect

from bert4keras.checkpoints import CheckpointError  # noqa: F401  (re-export)
from bert4keras.models import albert, bert, electra, gpt, nezha, roformer, t5
from bert4keras.models.albert import ALBERT, ALBERT_Unshared
from bert4keras.checkpoints import FORMATS  # noqa: F401  (re-export)
from bert4keras.models.base import Transformer  # noqa: F401
from bert4keras.models.bert import BERT
from bert4keras.models.compat import (
    OPTIONS as LEGACY_OPTIONS,
    LM_Mask,
    UniLM_Mask,
    data_parallel,
    extend_with_language_model,
    extend_with_unified_language_model,
    is_default,
    legacy_class,
)
from bert4keras.models.config import (  # noqa: F401  (re-export)
    GOOGLE_CONFIG_KEYS,
    check_model_type,
    check_config_values,
    find_config,
    load_config,
)
from bert4keras.models.electra import ELECTRA
from bert4keras.models.gpt import GPT, GPT2, GPT2_ML
from bert4keras.models.nezha import NEZHA
from bert4keras.models.roformer import RoFormer, RoFormerV2
from bert4keras.models.t5 import T5, T5_Base, T5_Decoder, T5_Encoder

#: bert4keras 0.11.5's names in this module (the families, their base, the
#: mask mixins and helpers).
__all__ = [
    "ALBERT", "ALBERT_Unshared", "BERT", "ELECTRA", "GPT", "GPT2", "GPT2_ML", "LM_Mask",
    "NEZHA", "RoFormer", "RoFormerV2", "T5", "T5_Base", "T5_Decoder", "T5_Encoder",
    "Transformer", "UniLM_Mask", "build_transformer_model", "data_parallel",
    "extend_with_language_model", "extend_with_unified_language_model",
]

#: ``model=`` keys of :func:`build_transformer_model`.
MODELS = {}
for _family in (bert, albert, nezha, electra, roformer, gpt, t5):
    MODELS.update(_family.MODELS)

#: Google/Hugging Face config keys -> constructor arguments (the base of every
#: family's ``config_keys``; see :mod:`bert4keras.models.config`).
CONFIG_KEYS = GOOGLE_CONFIG_KEYS
REQUIRED_CONFIG_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers",
                        "num_attention_heads", "intermediate_size")


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
            or a directory with either (chosen by :func:`find_config`). May be
            None if every required size is given in ``kwargs``.
        checkpoint_path: Google TF checkpoint prefix or directory, or a Hugging
            Face directory of ``*.safetensors`` (sharded too); None leaves the
            random initialisation.
        model: a key of :data:`MODELS` (``'bert'``, ``'roberta'``, ``'albert'``,
            ``'albert_unshared'``, ``'nezha'``, ``'electra'``, ``'roformer'``,
            ``'roformer_v2'``, ``'gpt'``, ``'gpt2'``, ``'gpt2_ml'``, ``'t5'``,
            ``'t5.1.1'``, ``'mt5.1.1'`` and their ``_encoder``/``_decoder``
            variants) or a :class:`Transformer` subclass.
        application: ``'encoder'``, ``'lm'`` or ``'unilm'``. As in bert4keras
            0.11.5, ``'lm'`` and ``'unilm'`` switch on the MLM head
            (``with_mlm=True``: next-token probabilities) for families that
            have one, unless ``with_mlm`` is given (``with_mlm=False`` keeps
            the hidden states).
        return_keras_model: return the ``keras.Model`` (default) or the
            :class:`Transformer` object (its ``.model`` is the Keras model).
        **kwargs: constructor arguments overriding the config: ``with_pool``,
            ``with_nsp``, ``with_mlm``, ``keep_tokens``, ``max_position``,
            ``segment_vocab_size``, ``dropout_rate``, ...; and bert4keras
            0.11.5's options ``sequence_length``, ``prefix``, ``layers``,
            ``custom_position_ids``, ``hierarchical_position``,
            ``shared_segment_embeddings``, ``compound_tokens``,
            ``residual_attention_scores``, ``ignore_invalid_weights``,
            ``autoresize_weights``, ``layer_norm_cond``,
            ``layer_norm_cond_hidden_size``, ``layer_norm_cond_hidden_act``,
            ``additional_input_layers``, ``attention_caches`` (see
            :mod:`bert4keras.models.compat`).

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
    check_model_type(config, cls, MODELS)  # a Hugging Face config of another family
    args = cls.translate_config(config)
    args.update(kwargs)
    args["application"] = application
    missing = [k for k in REQUIRED_CONFIG_KEYS if args.get(k) is None]
    if missing:
        raise KeyError("Config %s lacks required key(s): %s"
                       % (config["_path"], ", ".join(missing)))
    check_config_values(cls, config, args, kwargs)  # named errors for bad sizes/rates
    accepted = _accepted_arguments(cls)
    if any(k not in accepted and not is_default(v, LEGACY_OPTIONS[k])
           for k, v in kwargs.items() if k in LEGACY_OPTIONS):
        cls = legacy_class(cls)
        accepted |= set(LEGACY_OPTIONS)
    unknown = set(kwargs) - accepted - set(LEGACY_OPTIONS)
    if unknown:
        raise TypeError("%s got unknown argument(s): %s"
                        % (cls.__name__, ", ".join(sorted(unknown))))
    if application in ("lm", "unilm") and "with_mlm" in accepted and "with_mlm" not in kwargs:
        args["with_mlm"] = True  # bert4keras 0.11.5: an LM predicts tokens
    transformer = cls(**{k: v for k, v in args.items() if k in accepted})
    # weights the checkpoint sets are never drawn at random (see DeferredInitializer)
    transformer._defer_init = [] if checkpoint_path is not None else None
    transformer.build()
    if checkpoint_path is not None:
        transformer.load_weights_from_checkpoint(checkpoint_path)
    return transformer.model if return_keras_model else transformer
