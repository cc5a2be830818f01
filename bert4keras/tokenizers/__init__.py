"""Tokenizers: BERT WordPiece (:mod:`.wordpiece`) and SentencePiece
(:mod:`.sentencepiece`, for T5/mT5 and other SentencePiece models).

Everything is importable from ``bert4keras.tokenizers`` as in the original
toolkit: ``Tokenizer``, ``SpTokenizer``, ``TokenizerBase``, ``load_vocab``,
``save_vocab``.

Modules, each importing only those above it:

* :mod:`.chars` -- character classes (whitespace, punctuation, CJK, control)
  as single-character tests and compiled regular expressions;
* :mod:`.base` -- :class:`TokenizerBase`: start/end tokens, truncation, ``encode``;
* :mod:`.vocab` -- reading and writing ``vocab.txt`` (uses :mod:`.chars`);
* :mod:`.wordpiece` -- the WordPiece :class:`Tokenizer`;
* :mod:`.sentencepiece` -- :class:`SpTokenizer`;
* :mod:`.simplify` -- :func:`corpus_keep_tokens` and
  :class:`SimplifiedTokenizer`: vocabulary trimming (``keep_tokens``) for any
  tokenizer, from the texts of a task.
"""

from bert4keras.tokenizers.base import TokenizerBase
from bert4keras.tokenizers.sentencepiece import SpTokenizer
from bert4keras.tokenizers.simplify import SimplifiedTokenizer, corpus_keep_tokens
from bert4keras.tokenizers.vocab import load_vocab, save_vocab
from bert4keras.tokenizers.wordpiece import Tokenizer

__all__ = ["load_vocab", "save_vocab", "TokenizerBase", "Tokenizer", "SpTokenizer",
           "SimplifiedTokenizer", "corpus_keep_tokens"]

# Names bert4keras 0.11.5's tokenizers module had imported from its snippets
# (and two standard modules); scripts could import them from here. Resolved
# on first use so that importing the tokenizers stays light.
_SNIPPETS_NAMES = ("is_string", "is_py2", "open", "convert_to_unicode",
                   "truncate_sequences", "lowercase_and_normalize")


def __getattr__(name):
    if name in _SNIPPETS_NAMES:
        from bert4keras import snippets

        return getattr(snippets, name)
    if name in ("re", "unicodedata"):
        import importlib

        return importlib.import_module(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

# Private helpers this package exported when it was one module (not part of
# the public surface), still importable from here under their old names.
from bert4keras.tokenizers.base import _truncate  # noqa: E402,F401
from bert4keras.tokenizers.chars import (  # noqa: E402,F401
    _ASTRAL,
    CJK_RANGES as _CJK_RANGES,
    CONTROL_CATEGORIES as _CONTROL_CATEGORIES,
    CharTables as _CharTables,
    _is_ascii_punct,
    _none_of,
    _one_of,
    _ranges_to_class,
    _split_bmp,
    _subtract,
    char_tables as _tables,
)
from bert4keras.tokenizers.vocab import _is_redundant  # noqa: E402,F401
from bert4keras.tokenizers.wordpiece import (  # noqa: E402,F401
    _SPECIAL_TOKENS,
    _WORD_CACHE_LIMIT,
    _Cache,
    _unique,
)
