"""Helpers around the models: padding, batch generators, text utilities,
files with indexed lines, a parallel map, Viterbi decoding and a small web API.

Every public name of bert4keras 0.11.5's ``bert4keras.snippets`` is here,
with its signature and behaviour (differences are noted in each docstring):

=================  ==========================================================
module             names
=================  ==========================================================
``arrays``         ``to_array``, ``sequence_padding``, ``truncate_sequences``,
                   ``softmax``, ``orthogonally_resize``
``text``           ``strQ2B``, ``string_matching``, ``convert_to_unicode``,
                   ``convert_to_str``, ``lowercase_and_normalize``,
                   ``text_segmentate``, ``longest_common_substring``,
                   ``longest_common_subsequence``
``pyutils``        ``is_py2``, ``is_string``, ``is_one_of``,
                   ``insert_arguments``, ``delete_arguments``
``files``          ``open`` (with ``indexable`` line offsets)
``data``           ``DataGenerator``; ``build_for_fit`` (new: one trace
                   of the first training step on TensorFlow)
``parallel``       ``parallel_apply``, ``parallel_apply_generator``
``viterbi``        ``ViterbiDecoder``
``serving``        ``WebServing`` (Flask, optional extra ``serve``);
                   ``RequestBatcher`` (new: concurrent calls -> batches)
=================  ==========================================================

``AutoRegressiveDecoder`` lives in :mod:`bert4keras.generation` and is
re-exported here on first use (it imports Keras; this package imports only
NumPy).  ``from bert4keras.snippets import uniout`` (0.11.5's Python 2
printing hook) gives ``None``, as 0.11.5 did on Python 3; ``K``, ``keras``
and ``tf``, which 0.11.5's module had imported, resolve lazily too.
"""

from bert4keras.snippets.arrays import (
    orthogonally_resize,
    sequence_padding,
    softmax,
    to_array,
    truncate_sequences,
)
from bert4keras.snippets.data import DataGenerator, build_for_fit
from bert4keras.snippets.files import open  # 0.11.5 shadows the built-in here too
from bert4keras.snippets.parallel import (
    WorkerDiedError,
    parallel_apply,
    parallel_apply_generator,
)
from bert4keras.snippets.pyutils import (
    delete_arguments,
    insert_arguments,
    is_one_of,
    is_py2,
    is_string,
)
from bert4keras.snippets.serving import RequestBatcher, WebServing
from bert4keras.snippets.text import (
    convert_to_str,
    convert_to_unicode,
    lowercase_and_normalize,
    longest_common_subsequence,
    longest_common_substring,
    strQ2B,
    string_matching,
    text_segmentate,
)
from bert4keras.snippets.viterbi import ViterbiDecoder

__all__ = [
    "AutoRegressiveDecoder",
    "DataGenerator",
    "ViterbiDecoder",
    "WebServing",
    "build_for_fit",
    "RequestBatcher",
    "convert_to_str",
    "convert_to_unicode",
    "delete_arguments",
    "insert_arguments",
    "is_one_of",
    "is_py2",
    "is_string",
    "longest_common_subsequence",
    "longest_common_substring",
    "lowercase_and_normalize",
    "open",
    "orthogonally_resize",
    "WorkerDiedError",
    "parallel_apply",
    "parallel_apply_generator",
    "sequence_padding",
    "softmax",
    "strQ2B",
    "string_matching",
    "text_segmentate",
    "to_array",
    "truncate_sequences",
]


def _lazy(name):
    if name == "AutoRegressiveDecoder":
        from bert4keras.generation import AutoRegressiveDecoder

        return AutoRegressiveDecoder
    if name == "uniout":
        return None  # 0.11.5 imported the `uniout` package on Python 2 only
    if name == "K":
        from bert4keras.backend import K

        return K
    if name == "keras":
        import keras

        return keras
    if name == "tf":
        import tensorflow as tf

        return tf
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


def __getattr__(name):
    return _lazy(name)


def __dir__():
    return sorted(set(globals()) | set(__all__) | {"uniout", "K", "keras", "tf"})
