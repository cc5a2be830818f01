"""Tokenizers: BERT WordPiece (:mod:`.wordpiece`) and SentencePiece
(:mod:`.sentencepiece`, for T5/mT5 and other SentencePiece models).

Everything is importable from ``bert4keras.tokenizers`` as in the original
toolkit: ``Tokenizer``, ``SpTokenizer``, ``TokenizerBase``, ``load_vocab``,
``save_vocab``.
"""

from bert4keras.tokenizers.sentencepiece import SpTokenizer
from bert4keras.tokenizers.vocab import _is_redundant, load_vocab, save_vocab  # noqa: F401
from bert4keras.tokenizers.wordpiece import (  # noqa: F401
    _ASTRAL,
    _CJK_RANGES,
    _CONTROL_CATEGORIES,
    _SPECIAL_TOKENS,
    _WORD_CACHE_LIMIT,
    Tokenizer,
    TokenizerBase,
    _Cache,
    _CharTables,
    _is_ascii_punct,
    _none_of,
    _one_of,
    _ranges_to_class,
    _split_bmp,
    _subtract,
    _tables,
    _truncate,
    _unique,
)

__all__ = ["load_vocab", "save_vocab", "TokenizerBase", "Tokenizer", "SpTokenizer"]
