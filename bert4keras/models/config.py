"""Config files: find one, read it, and translate its keys in both directions.

A model is built from a JSON config: Google's ``bert_config.json`` (the keys
of google-research/bert ``modeling.BertConfig``) or a Hugging Face
``config.json`` (the keys of ``transformers``' ``BertConfig``, ``GPT2Config``,
``T5Config``, ...). The keys become constructor arguments of a
:class:`~bert4keras.models.base.Transformer` family through one mechanism:

* each family class may declare ``config_keys = {config key: constructor
  argument}``; the maps of a class and its bases are merged, the class's own
  entries first (:func:`merged_config_keys`);
* reading (:meth:`Transformer.translate_config`, via
  :func:`rename_config_keys`) renames every key found in the config to its
  argument; an argument the config already names wins over an alias of it;
* writing a Hugging Face ``config.json``
  (``save_weights_as_checkpoint(..., format='huggingface')``, via
  :func:`huggingface_config`) runs the same map backwards: each argument is
  written under the first key that maps to it (so a family's own key, e.g.
  GPT-2's ``n_embd``, is written rather than the BERT-style alias of a base
  class). A key spelled like its argument needs an entry only to be written.

Values that are not a plain rename (T5's ``feed_forward_proj``, OpenAI GPT's
``afn``) are converted by the family's ``translate_config`` (reading) and
``export_config`` (writing) around this shared map.

The ``transformers`` (5.x) class a directory is written for, by family
(``hf_model_type`` and ``hf_architectures``, chosen by the heads built):

=====================  ==================================================
``model=``             ``architectures``
=====================  ==================================================
bert, roberta          BertModel, BertForMaskedLM, BertForPreTraining,
                       BertForNextSentencePrediction (Chinese
                       RoBERTa-wwm has BERT's layout: ``model_type`` bert)
albert(_unshared)      AlbertModel, AlbertForMaskedLM, AlbertForPreTraining
electra                ElectraModel, ElectraForPreTraining
roformer               RoFormerModel, RoFormerForMaskedLM
gpt                    OpenAIGPTModel, OpenAIGPTLMHeadModel
gpt2                   GPT2Model, GPT2LMHeadModel
t5, t5.1.1 (mt5.1.1)   T5Model, T5ForConditionalGeneration, T5EncoderModel
                       (MT5...)
=====================  ==================================================

NEZHA (transformers 5 removed ``NezhaModel``), GPT2-ML, RoFormer-V2 and the
T5 decoder alone have no ``transformers`` class: they are saved with
``format='google'``.
"""

import json
import os
import warnings

import numpy as np

from bert4keras import fileio
from bert4keras.checkpoints import CheckpointError

#: Google BERT ``bert_config.json`` keys (also Hugging Face ``BertConfig``'s)
#: -> constructor arguments; the base of every family's ``config_keys``.
GOOGLE_CONFIG_KEYS = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "num_hidden_layers": "num_hidden_layers",
    "num_attention_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
    "hidden_act": "hidden_act",
    "hidden_dropout_prob": "dropout_rate",
    "attention_probs_dropout_prob": "attention_dropout_rate",
    "max_position_embeddings": "max_position",
    "type_vocab_size": "segment_vocab_size",
    "initializer_range": "initializer_range",
    "layer_norm_eps": "layer_norm_eps",
}

#: Config file names, in the order tried when nothing else decides.
CONFIG_FILES = ("config.json", "bert_config.json")

#: Our activation names that ``transformers`` spells differently.
_HF_ACTIVATIONS = {"gelu_erf": "gelu", "gelu_tanh": "gelu_new"}

#: Output heads (``with_<head>`` attributes) that choose a ``transformers``
#: class, in the order they are joined into an ``hf_architectures`` key.
HEADS = ("mlm", "nsp", "lm", "discriminator")


def _checkpoint_format(directory):
    """``'hf'``, ``'google'``, or None (neither or both) for a directory."""
    has_hf = bool(fileio.glob(fileio.join(directory, "*.safetensors")))
    has_tf = (fileio.exists(fileio.join(directory, "checkpoint"))
              or bool(fileio.glob(fileio.join(directory, "*.index"))))
    if has_hf == has_tf:
        return None
    return "hf" if has_hf else "google"


def _read_json(path):
    try:
        config = json.loads(fileio.read_text(path))  # local, gs://, ram://
    except Exception as exc:  # noqa: BLE001 -- OSError, ValueError, tf NotFoundError
        raise ValueError("Cannot read config %r: %s" % (path, exc)) from exc
    if not isinstance(config, dict):
        raise ValueError("Config %r is not a JSON object" % path)
    return config


def find_config(path):
    """The config file for ``path``: the file itself, or the one in a directory.

    In a directory the choice is: ``config.json`` if the directory holds a
    Hugging Face checkpoint (``*.safetensors``) and no TF checkpoint;
    ``bert_config.json`` if it holds a Google TF checkpoint (a ``checkpoint``
    state file or ``*.index``) and no safetensors; otherwise ``config.json``
    then ``bert_config.json`` (:data:`CONFIG_FILES`). When the other file
    exists too, only one is read; if the two give different values for a key
    they share, a ``UserWarning`` names both files and the key.

    Args:
        path: a config file or a model directory (``str`` or path-like).

    Returns:
        The path of the config file (``str``).

    Raises:
        FileNotFoundError: ``path`` does not exist, or a directory holds
            neither file (both names and the directory are given).
    """
    path = os.fspath(path)
    if not fileio.isdir(path):
        if not fileio.exists(path):
            raise FileNotFoundError("Config file not found: %r" % path)
        return path
    found = [name for name in CONFIG_FILES if fileio.exists(fileio.join(path, name))]
    if not found:
        raise FileNotFoundError("No %s in directory %r" % (" or ".join(CONFIG_FILES), path))
    if len(found) == 1:
        return fileio.join(path, found[0])
    fmt = _checkpoint_format(path)
    chosen, other = ("bert_config.json", "config.json") if fmt == "google" else found
    chosen, other = fileio.join(path, chosen), fileio.join(path, other)
    try:
        a, b = _read_json(chosen), _read_json(other)
    except ValueError:
        return chosen  # load_config reports an unreadable chosen file
    differing = sorted(k for k in set(a) & set(b) if a[k] != b[k])
    if differing:
        warnings.warn(
            "%r has both %s and %s, which differ in %s (%r vs %r); reading %s%s"
            % (path, os.path.basename(chosen), os.path.basename(other), differing[0],
               a[differing[0]], b[differing[0]], os.path.basename(chosen),
               " (it matches the %s checkpoint there)" % fmt if fmt else ""),
            UserWarning, stacklevel=2)
    return chosen


def load_config(config_path):
    """Read a Google ``bert_config.json`` or a Hugging Face ``config.json``.

    Args:
        config_path: the file or a directory holding one (chosen by
            :func:`find_config`).

    Returns:
        The JSON object as a ``dict``, with ``'_path'`` set to the file read.

    Raises:
        FileNotFoundError: naming the missing file or directory.
        ValueError: naming the file when it is not a valid JSON object.
    """
    path = find_config(config_path)
    config = _read_json(path)
    config["_path"] = path
    return config


def merged_config_keys(cls):
    """``{config key: constructor argument}`` of ``cls`` and its bases.

    Every class's own ``config_keys`` (from its ``__dict__``) is merged, the
    most derived first; a key a subclass declares overrides the same key of
    a base. The dict order is the order keys are tried (reading) and the
    preference for an argument's key (writing).
    """
    merged = {}
    for klass in cls.__mro__:
        for key, argument in klass.__dict__.get("config_keys", {}).items():
            merged.setdefault(key, argument)
    return merged


def rename_config_keys(config, keys):
    """Copy ``config`` with each key of ``keys`` renamed to its argument.

    Keys are taken in the order of ``keys``; when the argument is already set
    (by the config itself or an earlier alias) the later key is dropped.
    Keys not in ``keys`` are kept as they are.
    """
    out = dict(config)
    for key, argument in keys.items():
        if key != argument and key in out:
            value = out.pop(key)
            out.setdefault(argument, value)
    return out


def hf_activation_name(transformer, value):
    """``transformers``' name of the activation ``value`` (``gelu_erf`` ->
    ``gelu``, ``gelu_tanh`` -> ``gelu_new``; other names pass through).

    Raises:
        ValueError: ``value`` is a callable (the family is named).
    """
    if callable(value):
        raise ValueError("%s: hidden_act=%r is a callable; a Hugging Face config.json needs an "
                         "activation name" % (type(transformer).__name__, value))
    if isinstance(value, str):
        return _HF_ACTIVATIONS.get(value.lower(), value)
    return value


def hf_architecture(transformer):
    """The ``transformers`` class named in ``architectures``.

    ``transformer.hf_architectures`` maps the output heads present
    (:data:`HEADS` joined with ``+``, e.g. ``'mlm+nsp'``; ``''`` for none)
    to a class; a combination it does not list falls back to the ``''``
    (encoder only) class, which loads the same file without the heads.

    Raises:
        ValueError: the family has no ``transformers`` class
            (``hf_model_type`` is None): the message names the family and
            ``format='google'``.
    """
    name = type(transformer).__name__
    architectures = getattr(transformer, "hf_architectures", None)
    if not getattr(transformer, "hf_model_type", None) or not architectures:
        raise ValueError(
            "%s has no Hugging Face transformers class, so it cannot be saved with "
            "format='huggingface'; save it with format='google' (the original checkpoint "
            "format) instead" % name)
    heads = "+".join(h for h in HEADS if getattr(transformer, "with_" + h, False))
    if heads not in architectures and "" not in architectures:
        raise ValueError("%s with head(s) %r has no Hugging Face transformers class (known: %s); "
                         "save it with format='google'" % (name, heads, ", ".join(
                             repr(k) for k in architectures)))
    return architectures.get(heads, architectures.get(""))


def huggingface_config(transformer):
    """The ``config.json`` dict of ``transformer`` for ``transformers``.

    Holds ``model_type``, ``architectures`` (:func:`hf_architecture`) and,
    for every constructor argument in the family's merged ``config_keys``
    that the object holds as an attribute, its value under the argument's
    first key (see the module docstring); activation names are spelled as
    ``transformers`` does (``gelu_erf`` -> ``gelu``). The vocabulary size is
    the model's, so a ``keep_tokens`` model writes the kept size. The
    family's ``export_config(config)`` (if any) then converts the values that
    are not plain renames.

    Raises:
        ValueError: the family has no ``transformers`` class; or the model
            has a size ``transformers``' config cannot express
            (``embedding_size != hidden_size`` where the family has no
            ``embedding_size`` key, a head size other than ``hidden_size /
            heads`` where it has no head-size key, a key size different from
            the value size). The family and the values are named.
    """
    name = type(transformer).__name__
    config = {"architectures": [hf_architecture(transformer)],
              "model_type": transformer.hf_model_type}
    written = {}
    for key, argument in merged_config_keys(type(transformer)).items():
        if argument in written or not hasattr(transformer, argument):
            continue
        written[argument] = key
        value = getattr(transformer, argument)
        config[key] = hf_activation_name(transformer, value) if argument == "hidden_act" else value
    if transformer.embedding_size != transformer.hidden_size and "embedding_size" not in written:
        raise ValueError("%s: embedding_size=%d != hidden_size=%d cannot be expressed in "
                         "transformers' %r config; save with format='google'"
                         % (name, transformer.embedding_size, transformer.hidden_size,
                            transformer.hf_model_type))
    head_size = transformer.attention_head_size
    if (head_size * transformer.num_attention_heads != transformer.hidden_size
            and "attention_head_size" not in written):
        raise ValueError("%s: attention_head_size=%d x %d heads != hidden_size=%d cannot be "
                         "expressed in transformers' %r config; save with format='google'"
                         % (name, head_size, transformer.num_attention_heads,
                            transformer.hidden_size, transformer.hf_model_type))
    if transformer.attention_key_size != head_size:
        raise ValueError("%s: attention_key_size=%d != attention_head_size=%d has no "
                         "transformers equivalent; save with format='google'"
                         % (name, transformer.attention_key_size, head_size))
    export = getattr(transformer, "export_config", None)
    if export is not None:
        config = export(config)
    return config


def huggingface_export(transformer):
    """``(config, tensors)`` of a ``transformers`` directory for ``transformer``.

    ``config`` is :func:`huggingface_config`; ``tensors`` is
    ``transformer.checkpoint_tensors('hf')`` (``{name: numpy array}`` in the
    family's Hugging Face names, the first spelling of each). A model without
    segments (``segment_vocab_size=0``) whose family has a Hugging Face
    token-type table gets ``type_vocab_size`` 1 and an all-zero table of one
    row: ``transformers`` adds row 0 for its default token type ids, so the
    outputs are unchanged.

    Raises:
        ValueError: as :func:`huggingface_config`.
        CheckpointError: a layer of the model has no Hugging Face name (e.g.
            RoFormer's pooler), naming the family and the layer.
    """
    config = huggingface_config(transformer)
    tensors = transformer.checkpoint_tensors("hf")
    key = next((k for k, a in merged_config_keys(type(transformer)).items()
                if a == "segment_vocab_size"), None)
    pairs = transformer.name_map.get("Embedding-Segment")
    if key is not None and config.get(key) == 0 and pairs and pairs[0][1]:
        name = pairs[0][1].split("|")[0]
        config[key] = 1
        tensors[name] = np.zeros((1, transformer.embedding_size), "float32")
    return config, tensors


# -- checking the values ------------------------------------------------------------

#: Constructor arguments that must be whole numbers, with their least value.
#: ``num_hidden_layers`` >= 1: a 0-layer model would "load" a checkpoint while
#: ignoring every Transformer block in it.
INTEGER_ARGUMENTS = {
    "vocab_size": 1, "hidden_size": 1, "num_hidden_layers": 1, "num_attention_heads": 1,
    "intermediate_size": 1, "embedding_size": 1, "attention_head_size": 1,
    "attention_key_size": 1, "max_position": 1, "segment_vocab_size": 0,
    "num_decoder_layers": 1, "relative_attention_num_buckets": 1,
    "relative_attention_max_distance": 1,
}
#: Constructor arguments that must be real numbers in ``[low, high)``.
RATE_ARGUMENTS = {"dropout_rate": (0.0, 1.0), "attention_dropout_rate": (0.0, 1.0),
                  "layer_norm_eps": (0.0, float("inf")), "initializer_range": (0.0, float("inf"))}


def check_config_values(cls, config, args, overrides=()):
    """Check the sizes and rates of a model before it is built.

    Catches what would otherwise build a wrong model or fail deep inside
    graph building: ``num_hidden_layers`` 0 or negative (a 0-layer model that
    "loads" a checkpoint), a size given as a string (``"192"``: a
    string-formatting ``TypeError`` later), ``num_attention_heads: 0`` (a
    ``ZeroDivisionError``), a fractional size (``4.9`` layers would be
    truncated to 4). Whole-number floats (``12.0``) are accepted. ``None``
    values are skipped (a required size that is None is reported by
    ``build_transformer_model`` as missing).

    Args:
        cls: the :class:`~bert4keras.models.base.Transformer` family (its
            ``config_keys`` give the config file's spelling of a key).
        config: the config as read (:func:`load_config`; ``'_path'`` names
            the file, ``'<kwargs>'`` when there is none).
        args: the constructor arguments (``translate_config`` plus overrides).
        overrides: names of the arguments given to ``build_transformer_model``
            as keyword arguments rather than read from the file.

    Raises:
        TypeError: a size that is not a whole number (a string, a bool, a
            list) or a rate that is not a number; the message names the
            config file and its key (or the keyword argument) and the value.
        ValueError: a fractional size, a size below its least value
            (:data:`INTEGER_ARGUMENTS`), or a rate out of range
            (:data:`RATE_ARGUMENTS`), named the same way.
    """
    keys = merged_config_keys(cls)

    def where(argument):
        if argument in overrides:
            return "build_transformer_model argument %s" % argument
        key = next((k for k, a in keys.items() if a == argument and k in config), argument)
        spelled = "key %r" % key + (" (%s)" % argument if key != argument else "")
        return "config %s: %s" % (config.get("_path", "<kwargs>"), spelled)

    for argument, least in INTEGER_ARGUMENTS.items():
        value = args.get(argument)
        if value is None:
            continue
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
            raise TypeError("%s must be a whole number, got %r (%s)"
                            % (where(argument), value, type(value).__name__))
        if not float(value).is_integer():
            raise ValueError("%s must be a whole number, got %r (it would be truncated to %d)"
                             % (where(argument), value, int(value)))
        if value < least:
            raise ValueError("%s must be >= %d, got %r%s" % (
                where(argument), least, value,
                " (a model without Transformer blocks would ignore the checkpoint's)"
                if argument in ("num_hidden_layers", "num_decoder_layers") else ""))
    for argument, (low, high) in RATE_ARGUMENTS.items():
        value = args.get(argument)
        if value is None:
            continue
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
            raise TypeError("%s must be a number, got %r (%s)"
                            % (where(argument), value, type(value).__name__))
        if not low <= value < high:
            raise ValueError("%s must be in [%g, %g), got %r" % (where(argument), low, high, value))


#: Hugging Face ``model_type`` -> the family classes (by name) that read such
#: a directory. A ``config.json`` whose ``model_type`` is listed here, given
#: to a family of another row, is named as a wrong family before anything is
#: built; model types not listed are not checked.
HF_MODEL_TYPES = {
    "bert": ("BERT",),
    "albert": ("ALBERT", "ALBERT_Unshared"),
    "electra": ("ELECTRA",),
    "nezha": ("NEZHA",),
    "roformer": ("RoFormer", "RoFormerV2"),
    "openai-gpt": ("GPT",),
    "gpt2": ("GPT2",),
    "t5": ("T5", "T5_Encoder", "T5_Decoder"),
    "mt5": ("T5", "T5_Encoder", "T5_Decoder"),
}


def check_model_type(config, cls, models):
    """Refuse a Hugging Face ``config.json`` of another family than ``cls``.

    Args:
        config: the loaded config (its ``_path`` names the file).
        cls: the family class asked for (``model=``).
        models: ``{model key: class}`` (:data:`bert4keras.models.MODELS`),
            to name the keys that would read the file.

    Raises:
        CheckpointError: naming the file, its ``model_type``, the ``model=``
            keys that read it and the family asked for.
    """
    model_type = config.get("model_type")
    known = {name for names in HF_MODEL_TYPES.values() for name in names}
    family = next((k.__name__ for k in cls.__mro__ if k.__name__ in known), None)
    if model_type not in HF_MODEL_TYPES or family is None:
        return
    if family not in HF_MODEL_TYPES[model_type]:
        keys = sorted(key for key, klass in models.items()
                      if klass.__name__ in HF_MODEL_TYPES[model_type])
        asked = sorted(key for key, klass in models.items() if klass.__name__ == family)
        raise CheckpointError(
            "Config %s has model_type=%r, which looks like model=%s; this model is model=%s "
            "(%s)" % (config.get("_path"), model_type, " or ".join(repr(k) for k in keys),
                      " or ".join(repr(k) for k in asked) or repr(family), family))

