"""The BERT WordPiece tokenizer (``load_vocab``/``save_vocab`` of
:mod:`.vocab` are importable from here too).

The tokenizer follows Google BERT's ``tokenization.py`` (``BasicTokenizer`` +
``WordpieceTokenizer``) and keeps the interface of the original bert4keras
``Tokenizer`` (by Su Jianlin): ``tokenize``, ``encode``, ``decode``,
``rematch``, ``token_to_id`` and friends.

Where Google's code and Hugging Face ``transformers.BertTokenizer`` (the Rust
``tokenizers`` ``BertNormalizer`` + ``BertPreTokenizer`` + ``WordPiece``)
disagree, we side with Hugging Face, because that is what checkpoints are
used with today and the test-suite checks id-for-id equality with it on real
text.  The points where this matters:

* text cleanup drops every character of Unicode category ``Cc``, ``Cf``,
  ``Co`` (private use) and ``Cs`` except ``\\t``, ``\\n`` and ``\\r``, plus
  NUL and U+FFFD.  (Google drops only ``Cc``/``Cf``; the original bert4keras
  turned private-use characters into ``[UNK]``.)  Unassigned code points
  (``Cn``) are kept.
* whitespace is ``\\t``, ``\\n``, ``\\r`` and every character of category
  ``Z`` -- including the line/paragraph separators U+2028/U+2029, which
  Google's code glued to neighbouring letters.
* the special tokens (``[PAD]``, ``[UNK]``, ``[CLS]``, ``[SEP]``,
  ``[MASK]``) are recognised verbatim in the raw text and never split
  (``never_split``), as Hugging Face does with its added tokens.
* lower-casing maps every character on its own (a capital sigma always
  becomes ``σ``; Python's ``str.lower`` would produce a final ``ς``).
* the CJK ranges split off as single characters are those of Hugging Face
  ``tokenizers``, which start CJK Extension E at U+2B920 instead of Google's
  U+2B820.

The character classes live in :mod:`bert4keras.tokenizers.chars`; they come
from Python's ``unicodedata`` (the Unicode version of the running
interpreter); for characters added to Unicode after the tables compiled into
``tokenizers`` they can differ, which does not occur in ordinary text.

The hot path runs on precompiled regular expressions and a per-word cache,
so no per-character Python code runs for text that has been seen before.
"""

import os
import re
import unicodedata

from bert4keras.tokenizers.base import TokenizerBase
from bert4keras.tokenizers.chars import (
    CJK_PUNCTUATION,
    char_tables,
    is_cjk_character,
    is_control,
    is_punctuation,
    is_space,
    is_special,
    stem,
)
from bert4keras.tokenizers.vocab import _is_redundant, load_vocab, save_vocab  # noqa: F401

__all__ = ["load_vocab", "save_vocab", "TokenizerBase", "Tokenizer"]

_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_WORD_CACHE_LIMIT = 200_000


class Tokenizer(TokenizerBase):
    """BERT WordPiece tokenizer.

    Follows Google BERT's ``FullTokenizer`` and the ``Tokenizer`` of the
    original bert4keras, and gives the same ids as Hugging Face
    ``transformers.BertTokenizer`` with the same ``do_lower_case``,
    ``strip_accents``, ``tokenize_chinese_chars`` and
    ``max_input_chars_per_word`` (our ``word_maxlen``); see the module
    docstring for the fine points.

    Processing: special tokens in ``never_split`` are cut out of the raw
    text; the rest is cleaned (control, format, private-use characters,
    NUL and U+FFFD dropped), lower-cased and stripped of accents (NFD, then
    combining marks ``Mn`` removed) if asked, split on whitespace, around
    every punctuation character and around every CJK character, and every
    word is split greedily longest-match-first into vocabulary pieces
    (continuations prefixed ``##``).  A word longer than ``word_maxlen``
    characters or one that cannot be split becomes ``[UNK]``.

    Args:
        token_dict: a dict token -> id or the path of a ``vocab.txt`` (read
            with :func:`load_vocab`), as in 0.11.5.
        do_lower_case: lower-case the text (and strip accents, unless
            ``strip_accents`` says otherwise).  Google's Chinese and uncased
            English models need ``True``; the default ``False`` is the
            original bert4keras default.
        word_maxlen: words with more characters become ``[UNK]`` (Google:
            200, Hugging Face: 100).
        token_start, token_end, token_translate: see
            :class:`TokenizerBase`.
        pre_tokenize: optional ``text -> iterable of str`` (e.g.
            ``jieba.lcut``), as in 0.11.5: it gets the text lower-cased and
            stripped of accents when ``do_lower_case`` (or ``strip_accents``)
            is on, else the raw text; a
            piece that is a vocabulary token (after the same normalisation)
            is kept whole, the others are tokenized as usual.
        strip_accents: ``None`` follows ``do_lower_case`` (as in Hugging
            Face); ``True``/``False`` force it.
        tokenize_chinese_chars: split off every CJK character (default).
        never_split: tokens recognised verbatim (case-sensitive) in the raw
            text; default: those of ``[PAD] [UNK] [CLS] [SEP] [MASK]`` in the
            vocabulary.  Pass ``()`` to turn this off.

    Raises:
        FileNotFoundError, ValueError: see :func:`load_vocab`.
        ValueError: the vocabulary has no ``[UNK]`` token.

    Differences from bert4keras 0.11.5, kept because they give Hugging
    Face's ids (the ids of ordinary text are the same): a word that cannot
    be split, or is too long, is the token ``[UNK]`` (0.11.5 kept the word
    as a token, whose id was ``[UNK]``'s); ``[MASK]`` and the other special
    tokens written in the text stay whole (0.11.5 split them into ``[``,
    ``mask``, ``]``); private-use characters are dropped (0.11.5: ``[UNK]``)
    and U+2028/U+2029 are whitespace.  :meth:`decode` and :meth:`rematch`
    list theirs.
    """

    def __init__(self, token_dict, do_lower_case=False, word_maxlen=200,
                 token_start="[CLS]", token_end="[SEP]", pre_tokenize=None,
                 token_translate=None, strip_accents=None, tokenize_chinese_chars=True,
                 never_split=None):
        super().__init__(token_start=token_start, token_end=token_end,
                         pre_tokenize=pre_tokenize, token_translate=token_translate)
        if isinstance(token_dict, (str, os.PathLike)):
            token_dict = load_vocab(token_dict)
        else:
            token_dict = dict(token_dict)
        if self._token_unk not in token_dict:
            raise ValueError(f"the vocabulary has no {self._token_unk} token")
        self._token_dict = token_dict
        self._token_dict_inv = {v: k for k, v in token_dict.items()}
        self._vocab_size = len(token_dict)
        self._do_lower_case = bool(do_lower_case)
        self._strip_accents = self._do_lower_case if strip_accents is None else bool(strip_accents)
        self._word_maxlen = word_maxlen
        self._tokenize_chinese_chars = bool(tokenize_chinese_chars)

        for name in ("pad", "unk", "mask", "start", "end"):
            token = getattr(self, "_token_%s" % name)
            setattr(self, "_token_%s_id" % name, token_dict.get(token) if token else None)
        self._unk_id = self._token_unk_id

        if never_split is None:
            never_split = [t for t in _SPECIAL_TOKENS if t in token_dict]
        self._never_split = tuple(t for t in never_split if t)
        if self._never_split:
            alternatives = sorted(set(self._never_split), key=len, reverse=True)
            self._special_re = re.compile("|".join(map(re.escape, alternatives)))
        else:
            self._special_re = None

        # the longest vocabulary piece, first-piece and ## continuation, bounds
        # the WordPiece search
        self._max_first = max((len(t) for t in token_dict if not t.startswith("##")), default=1)
        self._max_cont = max((len(t) - 2 for t in token_dict if t.startswith("##")), default=1)

        tables = char_tables()
        self._word_re = tables.word_re(self._tokenize_chinese_chars)
        self._clean_re = tables.drop_marks_re if self._strip_accents else tables.drop_re
        self._make_caches()

    def _make_caches(self):
        # per-word results; a word is looked up once, then served from here
        self._char_cache = {}
        self._piece_cache = _Cache(self._word_pieces)
        self._token_cache = _Cache(self._word_tokens)
        self._id_cache = _Cache(self._word_ids)

    def __getstate__(self):
        state = self.__dict__.copy()
        for name in ("_char_cache", "_piece_cache", "_token_cache", "_id_cache"):
            del state[name]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._make_caches()

    # -- vocabulary ---------------------------------------------------------

    @property
    def token_dict(self):
        """The vocabulary, token -> id (do not modify)."""
        return self._token_dict

    @property
    def vocab_size(self):
        """Number of tokens in the vocabulary."""
        return self._vocab_size

    def token_to_id(self, token):
        """Id of ``token``; the ``[UNK]`` id for unknown tokens."""
        return self._token_dict.get(token, self._unk_id)

    def tokens_to_ids(self, tokens):
        """Ids of a list of tokens (unknown ones -> the ``[UNK]`` id)."""
        get, unk = self._token_dict.get, self._unk_id
        return [get(token, unk) for token in tokens]

    def id_to_token(self, i):
        """Token of id ``i``.

        Raises:
            KeyError: ``i`` is not an id of the vocabulary.
        """
        try:
            return self._token_dict_inv[i]
        except KeyError:
            raise KeyError(f"id {i!r} is not in the vocabulary") from None

    # -- tokenization -------------------------------------------------------

    def _normalize(self, text):
        """Cleanup + lower-casing + accent stripping of a whole string."""
        if self._do_lower_case:
            if "\u03a3" in text:  # per-character lower case, no final sigma
                text = text.replace("\u03a3", "\u03c3")
            text = text.lower()
        if self._strip_accents and not text.isascii():
            text = unicodedata.normalize("NFD", text)
        return self._clean_re.sub("", text)

    def _normalize_char(self, ch):
        """The same normalisation for one character (used for offsets)."""
        out = self._char_cache.get(ch)
        if out is None:
            out = ch
            if self._do_lower_case:
                out = "\u03c3" if out == "\u03a3" else out.lower()
            if self._strip_accents:
                out = unicodedata.normalize("NFD", out)
            out = self._clean_re.sub("", out)
            self._char_cache[ch] = out
        return out

    def _word_pieces(self, word):
        """Greedy longest-match-first WordPiece split of one word (a tuple)."""
        vocab = self._token_dict
        if len(word) > self._word_maxlen:
            return (self._token_unk,)
        if word in vocab:
            return (word,)
        pieces, start, n = [], 0, len(word)
        while start < n:
            end = min(n, start + (self._max_cont if start else self._max_first))
            while end > start:
                piece = word[start:end]
                if start:
                    piece = "##" + piece
                if piece in vocab:
                    break
                end -= 1
            else:
                return (self._token_unk,)
            pieces.append(piece)
            start = end
        return tuple(pieces)

    def _word_tokens(self, word):
        tokens = self._piece_cache[word]
        if self._token_translate:
            tokens = tuple(self._token_translate.get(t) or t for t in tokens)
        return tokens

    def _word_ids(self, word):
        return tuple(self.tokens_to_ids(self._token_cache[word]))

    def _segments(self, text):
        """Yield ``(start, end, is_special)`` pieces of the raw text."""
        pos = 0
        if self._special_re is not None:
            for m in self._special_re.finditer(text):
                if m.start() > pos:
                    yield pos, m.start(), False
                yield m.start(), m.end(), True
                pos = m.end()
        if pos < len(text):
            yield pos, len(text), False

    def _words(self, text):
        """Normalised words and verbatim special tokens of ``text``."""
        if self._special_re is None or self._special_re.search(text) is None:
            return self._word_re.findall(self._normalize(text))
        words = []
        for start, end, special in self._segments(text):
            if special:
                words.append(text[start:end])
            else:
                words.extend(self._word_re.findall(self._normalize(text[start:end])))
        return words

    def _pre_text(self, text):
        """The text handed to ``pre_tokenize`` and, unless it is ``text``
        itself, ``mapping[i]`` = the index in ``text`` of its character i.

        As in 0.11.5, with lower-casing (or accent stripping) the callback
        sees the normalised text; the ``never_split`` tokens stay verbatim.
        """
        if not (self._do_lower_case or self._strip_accents):
            return text, None
        chars, mapping = [], []
        for a, b, special in self._segments(text):
            seg = text[a:b]
            norm = seg if special else self._normalize(seg)
            if len(norm) == len(seg) and (special or seg.isascii()):
                chars.append(norm)  # character for character
                mapping.extend(range(a, b))
                continue
            for i in range(a, b):
                out = self._normalize_char(text[i])
                chars.append(out)
                mapping.extend([i] * len(out))
        return "".join(chars), mapping

    def _pre_pieces(self, text):
        """With ``pre_tokenize``: ``(pre_text, mapping, pieces)`` (see
        :meth:`_pre_text`); pieces are ``(whole token or None, piece)``."""
        ptext, mapping = self._pre_text(text)
        out = []
        for piece in self._pre_tokenize(ptext):
            if piece in self._never_split:
                out.append((piece, piece))
                continue
            norm = self._normalize(piece)
            whole = norm in self._token_dict and norm.split() == [norm]
            out.append((norm if whole else None, piece))
        return ptext, mapping, out

    def _tokenize(self, text, pre_tokenize=True):
        """Tokens of ``text`` without start/end tokens, before
        ``token_translate`` (as 0.11.5's ``_tokenize``; ``pre_tokenize=False``
        skips the ``pre_tokenize`` callback)."""
        if pre_tokenize and self._pre_tokenize is not None:
            tokens = []
            for whole, piece in self._pre_pieces(text)[2]:
                if whole is not None:
                    tokens.append(whole)
                else:
                    tokens.extend(self._tokens_of_words(self._words(piece)))
            return tokens
        return self._tokens_of_words(self._words(text))

    def _word_piece_tokenize(self, word):
        """WordPiece split of one normalised word (0.11.5's name); a word
        that cannot be split, or longer than ``word_maxlen``, gives
        ``['[UNK]']`` (0.11.5 returned ``[word]``, which has the same id)."""
        return list(self._piece_cache[word])

    def _tokens_of_words(self, words):
        cache = self._piece_cache
        tokens = []
        for word in words:
            if word in self._never_split:
                tokens.append(word)
            else:
                tokens.extend(cache[word])
        if len(cache) > _WORD_CACHE_LIMIT:
            self._clear_caches()
        return tokens

    def encode(self, first_text, second_text=None, maxlen=None, pattern="S*E*E",
               truncate_from="right"):
        """Token ids and segment ids; see :meth:`TokenizerBase.encode`.

        A single text without ``maxlen`` takes a faster path (ids cached per
        word) with the same result.
        """
        if (second_text is None and maxlen is None and isinstance(first_text, str)
                and self._pre_tokenize is None and pattern in ("S*E*E", "S*ES*E")):
            ids = self._ids_of_text(first_text)
            return ids, [0] * len(ids)
        return super().encode(first_text, second_text, maxlen, pattern, truncate_from)

    def _ids_of_text(self, text):
        cache, words = self._id_cache, self._words(text)
        ids = [] if self._token_start_id is None else [self._token_start_id]
        if self._special_re is None:
            for word in words:
                ids.extend(cache[word])
        else:
            never, get, unk = self._never_split, self._token_dict.get, self._unk_id
            for word in words:
                if word in never:
                    ids.append(get(self._token_translate.get(word) or word, unk))
                else:
                    ids.extend(cache[word])
        if self._token_end_id is not None:
            ids.append(self._token_end_id)
        if len(cache) > _WORD_CACHE_LIMIT:
            self._clear_caches()
        return ids

    def _clear_caches(self):
        self._piece_cache.clear()
        self._token_cache.clear()
        self._id_cache.clear()
        self._char_cache.clear()

    # -- offsets --------------------------------------------------------------

    def _tokenize_with_spans(self, text):
        """Tokens of ``text`` (as :meth:`_tokenize`) and, for each, the list of
        indices of the characters of ``text`` it came from (a ``[UNK]``
        covers its whole word).  Returns ``None`` if a ``pre_tokenize`` piece
        cannot be found in the text."""
        tokens, spans = [], []
        if self._pre_tokenize is not None:
            ptext, mapping, pieces = self._pre_pieces(text)
            pos = 0
            for whole, piece in pieces:
                start = ptext.find(piece, pos)
                if start < 0:
                    return None
                end = start + len(piece)
                if whole is not None:
                    tokens.append(whole)
                    spans.append([i for i in range(start, end) if self._normalize_char(ptext[i])])
                else:
                    self._spans_of_plain(ptext, start, end, tokens, spans)
                pos = end
            if mapping is not None:  # indices into ptext -> into text
                spans = [_unique([mapping[i] for i in span]) for span in spans]
        else:
            self._spans_of_plain(text, 0, len(text), tokens, spans)
        tokens = self._translate(tokens)
        if len(self._piece_cache) > _WORD_CACHE_LIMIT:
            self._clear_caches()
        return tokens, spans

    def _spans_of_plain(self, text, start, end, tokens, spans):
        """Append the (untranslated) tokens of ``text[start:end]`` and their
        character indices to ``tokens`` and ``spans``."""
        piece_cache, finditer = self._piece_cache, self._word_re.finditer
        for a, b, special in self._segments(text[start:end]):
            a, b = a + start, b + start
            seg = text[a:b]
            if special:
                tokens.append(seg)
                spans.append(list(range(a, b)))
                continue
            norm = self._normalize(seg)
            if norm == seg or (seg.isascii() and len(norm) == len(seg)):
                # character i of norm is character a + i of text
                for m in finditer(norm):
                    s, e = m.span()
                    raw = piece_cache[m.group()]
                    if len(raw) == 1:  # the whole word, or [UNK] for it
                        tokens.append(raw[0])
                        spans.append([a + s] if e - s == 1 else list(range(a + s, a + e)))
                        continue
                    s += a
                    for k, piece in enumerate(raw):
                        e = s + (len(piece) - 2 if k else len(piece))
                        tokens.append(piece)
                        spans.append(list(range(s, e)))
                        s = e
                continue
            chars, mapping = [], []
            for i in range(a, b):
                out = self._normalize_char(text[i])
                if out:
                    chars.append(out)
                    mapping.extend([i] * len(out))
            for m in finditer("".join(chars)):
                s, e = m.span()
                raw = piece_cache[m.group()]
                if len(raw) == 1:
                    tokens.append(raw[0])
                    spans.append(_unique(mapping[s:e]))
                    continue
                for k, piece in enumerate(raw):
                    e = s + (len(piece) - 2 if k else len(piece))
                    tokens.append(piece)
                    spans.append(_unique(mapping[s:e]))
                    s = e

    def rematch(self, text, tokens):
        """Map tokens back to the characters of the original ``text``.

        Follows ``rematch`` of bert4keras 0.11.5, but computes the offsets
        while tokenizing, so they are exact even where normalisation changes
        the length of the text (dropped control characters, ``İ``, Hangul
        syllables decomposed by NFD).  Where 0.11.5 gave ``[]`` to every
        bracketed token and raised ``ValueError`` for a token it could not
        find, special tokens written in the text get their characters and
        unlocatable tokens get ``[]``.

        Args:
            text: the original string.
            tokens: its tokens, e.g. ``tokenize(text)`` (possibly truncated
                from either end).

        Returns:
            One list per token with the indices into ``text`` of the
            characters it came from: ``[]`` for the start/end/pad tokens and
            for tokens that cannot be located; a ``[UNK]`` produced by the
            tokenizer gets the indices of its whole word.  Indices need not be
            contiguous (dropped characters are skipped), and several tokens
            share an index when one character was normalised into several
            (e.g. a Hangul syllable into its jamo).
        """
        tokens = list(tokens)
        own = self._tokenize_with_spans(text)
        # leave out the added start token, the end token and trailing padding
        lo, hi = 0, len(tokens)
        while hi > lo and tokens[hi - 1] == self._token_pad:
            hi -= 1
        if hi > lo and self._token_end is not None and tokens[hi - 1] == self._token_end:
            hi -= 1
        if hi > lo and self._token_start is not None and tokens[lo] == self._token_start:
            lo += 1
        core = list(range(lo, hi))
        result = [[] for _ in tokens]
        if own is None:
            return self._rematch_by_search(text, tokens, core, result)
        own_tokens, own_spans = own
        wanted = [tokens[i] for i in core]
        if not wanted:
            return result
        # the usual case: the tokens are a contiguous run of our own tokens
        first, n = wanted[0], len(wanted)
        for a in range(len(own_tokens) - n + 1):
            if own_tokens[a] == first and own_tokens[a:a + n] == wanted:
                for k, i in enumerate(core):
                    result[i] = list(own_spans[a + k])
                return result
        # otherwise: walk forward, matching token by token
        j = 0
        for i in core:
            for k in range(j, len(own_tokens)):
                if own_tokens[k] == tokens[i]:
                    result[i] = list(own_spans[k])
                    j = k + 1
                    break
        return result

    def _rematch_by_search(self, text, tokens, core, result):
        """Fallback: find each token's stem in the normalised text, in order."""
        chars, mapping = [], []
        for i, ch in enumerate(text):
            out = self._normalize_char(ch)
            chars.append(out)
            mapping.extend([i] * len(out))
        norm, offset = "".join(chars), 0
        for i in core:
            token = self._token_translate_inv.get(tokens[i], tokens[i])
            if self._is_special(token):
                continue
            stem = self.stem(token)
            start = norm.find(stem, offset) if stem else -1
            if start >= 0:
                result[i] = _unique(mapping[start:start + len(stem)])
                offset = start + len(stem)
        return result

    # -- decoding -------------------------------------------------------------

    _NO_SPACE_BEFORE = frozenset(".,!?;:%)]}'-/")
    _NO_SPACE_AFTER = frozenset("([{$#@'-/")

    def decode(self, ids, tokens=None):
        """Turn ids (or ``tokens``) back into readable text.

        Follows ``decode`` of bert4keras 0.11.5: bracketed special
        tokens (``[CLS]``, ``[SEP]``, ``[PAD]``, ``[UNK]`` ...) are dropped,
        ``##`` pieces are glued to the previous token, CJK characters and CJK
        (non-ASCII) punctuation are joined without spaces, other words are
        separated by single spaces, no space goes before ``. , ! ? ; : % ) ]
        }`` or after ``( [ { $ # @``, ``-``, ``/`` and ``'`` are glued on both
        sides, and numbers like ``3 . 14`` or ``1 , 000`` become ``3.14`` and
        ``1,000``.  Decoding cannot undo lower-casing or recover dropped
        whitespace exactly.

        Chinese text decodes as in 0.11.5.  The spacing of ASCII
        punctuation is improved: 0.11.5 put a space after every
        punctuation token and then removed the one after ``+ - / = { ( < [``
        (``a+b=c``, ``$ 5``, ``10: 30``, ``1, 000``, ``a. . . b``); here
        ``a + b = c``, ``$5``, ``10:30``, ``1,000``, ``a... b``.  Tokens are
        also mapped back through ``token_translate`` first (0.11.5 did that
        only in ``SpTokenizer``).

        Args:
            ids: token ids (ignored when ``tokens`` is given).
            tokens: optional list of tokens to decode instead.

        Returns:
            The text, stripped.
        """
        if tokens is None:
            tokens = self.ids_to_tokens(ids)
        tokens = [self._token_translate_inv.get(t, t) for t in tokens]
        out, last = [], ""
        for token in tokens:
            if not token or self._is_special(token):
                continue
            if token.startswith("##") and len(token) > 2 and out:
                piece = token[2:]
                out.append(piece)
                last = piece
                continue
            if out and self._space_between(last, token):
                out.append(" ")
            out.append(token)
            last = token
        text = "".join(out)
        # 3 . 14 -> 3.14, 10 : 30 -> 10:30, 1 , 000 -> 1,000 (groups of three)
        text = re.sub(r"(\d[.:]) (?=\d)", r"\1", text)
        text = re.sub(r"(\d,) (?=\d{3}(?!\d))", r"\1", text)
        return text.strip()

    def _space_between(self, left, right):
        a, b = left[-1], right[0]
        if self._is_cjk_character(a) or self._is_cjk_character(b):
            return False
        if (ord(a) > 127 and self._is_punctuation(a)) or (ord(b) > 127 and self._is_punctuation(b)):
            return False
        if len(right) == 1 and b in self._NO_SPACE_BEFORE:
            return False
        if len(left) == 1 and a in self._NO_SPACE_AFTER:
            return False
        return True

    # -- character classes ------------------------------------------------------

    # the single-character tests of :mod:`bert4keras.tokenizers.chars`, kept as
    # static methods under 0.11.5's names. Their definitions are Hugging
    # Face's where 0.11.5's differed: _is_space also takes U+2028/U+2029 and
    # the other Z categories; _is_control leaves out \t \n \r (whitespace)
    # and takes private-use and surrogate characters; _is_cjk_character starts
    # Extension E at U+2B920; _is_special needs at least one character
    # between the brackets.
    stem = staticmethod(stem)
    _is_space = staticmethod(is_space)
    _is_punctuation = staticmethod(is_punctuation)
    _is_cjk_character = staticmethod(is_cjk_character)
    _is_control = staticmethod(is_control)
    _is_special = staticmethod(is_special)
    _is_redundant = staticmethod(_is_redundant)

    @staticmethod
    def _cjk_punctuation():
        """The full-width/CJK punctuation characters (a string, 0.11.5's set
        and order) after which 0.11.5's ``decode`` removed the space (ours
        decides by :meth:`_is_punctuation` on non-ASCII characters)."""
        return CJK_PUNCTUATION


class _Cache(dict):
    """dict that computes missing values with ``func(key)``."""

    def __init__(self, func):
        super().__init__()
        self._func = func

    def __missing__(self, key):
        value = self[key] = self._func(key)
        return value


def _unique(indices):
    """Drop consecutive repeats (one character normalised into several)."""
    out = []
    for i in indices:
        if not out or out[-1] != i:
            out.append(i)
    return out
