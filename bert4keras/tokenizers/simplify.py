"""Vocabulary trimming for any tokenizer: ``keep_tokens`` from a corpus.

A multilingual model such as mT5 (250,112 ids) spends most of its embedding
and output matrices on pieces a Chinese task never meets. bert4keras 0.11.5
trimmed them with ``build_transformer_model(..., keep_tokens=ids)``, which
keeps the rows ``ids`` of the vocabulary-sized weights in that order (new id
``k`` is old id ``ids[k]``); for WordPiece vocabularies
``load_vocab(simplified=True)`` computed ``ids``, while its mT5 example read a
pre-computed JSON list and a SentencePiece model rebuilt to the new ids.

This module computes the list from the texts of a task and wraps the
original tokenizer so that it speaks the new ids directly, for any tokenizer
with bert4keras' interface (:class:`~bert4keras.tokenizers.SpTokenizer`,
:class:`~bert4keras.tokenizers.Tokenizer`), without rebuilding a model file:

* :func:`corpus_keep_tokens` -- the original ids to keep: special tokens
  first, in the order given, then every id the texts encode to (and any
  extra tokens), in the original order;
* :class:`SimplifiedTokenizer` -- the tokenizer over the kept ids; pieces
  outside them become the unknown token.

    sp = SpTokenizer('spiece.model', token_start=None, token_end='</s>')
    tokenizer = SimplifiedTokenizer.from_corpus(sp, titles + abstracts,
                                                startswith=['<pad>', '</s>', '<unk>'])
    t5 = build_transformer_model(config, checkpoint, model='mt5.1.1',
                                 keep_tokens=tokenizer.keep_tokens)
"""

__all__ = ["corpus_keep_tokens", "SimplifiedTokenizer"]


def _default_specials(tokenizer):
    """The tokenizer's pad, unknown, start, end and mask tokens that exist,
    in ascending id order (so a T5 layout pad 0, eos 1, unk 2 stays put)."""
    found = {}
    for name in ("pad", "unk", "start", "end", "mask"):
        token, i = getattr(tokenizer, "_token_%s" % name, None), getattr(
            tokenizer, "_token_%s_id" % name, None)
        if token is not None and i is not None and _is_token(tokenizer, token):
            found.setdefault(int(i), token)
    return [found[i] for i in sorted(found)]


def _is_token(tokenizer, token):
    """``token`` is an entry of the vocabulary (not mapped to the unknown id)."""
    try:
        return tokenizer.id_to_token(tokenizer.token_to_id(token)) == token
    except KeyError:
        return False


def corpus_keep_tokens(tokenizer, texts=(), tokens=(), startswith=None, min_count=1):
    """The original ids a task needs, for ``keep_tokens``.

    Args:
        tokenizer: a bert4keras tokenizer (``encode``, ``token_to_id``,
            ``id_to_token``), e.g. an :class:`SpTokenizer` of mT5's
            ``spiece.model``.
        texts: strings; each is encoded with ``tokenizer.encode`` and its
            ids (start/end tokens included) are counted.
        tokens: further tokens (strings) to keep whatever the texts hold,
            e.g. T5's ``<extra_id_0>``.
        startswith: tokens that take the first new ids, in this order
            (0.11.5's ``startswith`` of ``load_vocab``); default the
            tokenizer's pad, unknown, start, end and mask tokens that exist,
            in ascending original id. For T5 give ``['<pad>', '</s>',
            '<unk>']``: the decoder starts from id 0 and the encoder treats
            id 0 as padding.
        min_count: keep a text id only if it occurs at least this often.

    Returns:
        A list of distinct ints: the ``startswith`` ids, then every other id
        of ``tokens`` and of the texts (counted ``>= min_count`` times) in
        ascending original id. ``len(result)`` is the new vocabulary size.

    Raises:
        ValueError: a ``startswith`` or ``tokens`` entry is not in the
            vocabulary (the token is named), or is listed twice in
            ``startswith``; ``min_count < 1``.
    """
    if min_count < 1:
        raise ValueError("min_count must be >= 1, got %r" % (min_count,))
    startswith = _default_specials(tokenizer) if startswith is None else list(startswith)
    first = []
    for token in startswith:
        if not _is_token(tokenizer, token):
            raise ValueError("startswith token %r is not in the vocabulary" % (token,))
        i = int(tokenizer.token_to_id(token))
        if i in first:
            raise ValueError("startswith lists %r (id %d) twice" % (token, i))
        first.append(i)
    counts = {}
    for text in texts:
        for i in tokenizer.encode(text)[0]:
            counts[int(i)] = counts.get(int(i), 0) + 1
    rest = {i for i, n in counts.items() if n >= min_count}
    for token in tokens:
        if not _is_token(tokenizer, token):
            raise ValueError("token %r to keep is not in the vocabulary" % (token,))
        rest.add(int(tokenizer.token_to_id(token)))
    return first + sorted(rest - set(first))


class SimplifiedTokenizer:
    """A tokenizer restricted to ``keep_tokens``: new id ``k`` is the
    original id ``keep_tokens[k]``.

    What :func:`~bert4keras.models.build_transformer_model` does to the
    weights with ``keep_tokens`` (rows of the token embedding and of the
    output layer kept in that order), this does to the ids: ``encode``
    returns new ids, ``decode`` and ``id_to_token`` take them. Tokenization
    itself (pieces, start/end tokens, truncation by ``maxlen``) is the
    original tokenizer's, unchanged; a piece whose id was not kept becomes
    the unknown token.

    Args:
        tokenizer: the original tokenizer (an :class:`SpTokenizer`, a
            WordPiece :class:`Tokenizer`, ...).
        keep_tokens: the original ids to keep, in their new order (e.g. from
            :func:`corpus_keep_tokens`, or a JSON list saved by an earlier
            run, or 0.11.5's pre-computed ``*_keep_tokens.json``).

    Attributes:
        tokenizer: the original tokenizer.
        keep_tokens: the list of kept original ids.
        vocab_size: ``len(keep_tokens)``.
        _token_start_id, _token_end_id, _token_pad_id, _token_unk_id,
        _token_mask_id: the new ids of the original's special tokens
            (``None`` where the original has none, or the token was not
            kept), with the ``_token_*`` strings, as 0.11.5's tokenizers
            have them.

    Raises:
        ValueError: ``keep_tokens`` is empty, repeats an id, holds an id
            outside the original vocabulary, or lacks the original's unknown
            token (the pieces dropped need somewhere to go); the id is named.
    """

    def __init__(self, tokenizer, keep_tokens):
        keep = [int(i) for i in keep_tokens]
        if not keep:
            raise ValueError("keep_tokens is empty")
        size = getattr(tokenizer, "vocab_size", None)
        new = {}
        for k, i in enumerate(keep):
            if i in new:
                raise ValueError("keep_tokens lists id %d twice (positions %d and %d)"
                                 % (i, new[i], k))
            if i < 0 or (size is not None and i >= size):
                raise ValueError("keep_tokens holds id %d, outside the vocabulary of %d ids"
                                 % (i, size))
            new[i] = k
        self.tokenizer, self.keep_tokens, self._new = tokenizer, keep, new
        unk = getattr(tokenizer, "_token_unk_id", None)
        if unk is not None and _is_token(tokenizer, tokenizer._token_unk) and unk not in new:
            raise ValueError("keep_tokens lacks the unknown token %r (id %d)"
                             % (tokenizer._token_unk, unk))
        self._unk = new.get(unk)
        for name in ("pad", "unk", "mask", "start", "end"):
            token = getattr(tokenizer, "_token_%s" % name, None)
            i = getattr(tokenizer, "_token_%s_id" % name, None)
            kept = None if i is None else new.get(int(i))
            setattr(self, "_token_%s" % name, None if kept is None else token)
            setattr(self, "_token_%s_id" % name, kept)

    @classmethod
    def from_corpus(cls, tokenizer, texts=(), tokens=(), startswith=None, min_count=1):
        """The tokenizer over :func:`corpus_keep_tokens` of ``texts`` (same
        arguments); its ``keep_tokens`` go to ``build_transformer_model``."""
        return cls(tokenizer, corpus_keep_tokens(tokenizer, texts, tokens, startswith,
                                                 min_count))

    @property
    def vocab_size(self):
        return len(self.keep_tokens)

    def _to_new(self, i):
        new = self._new.get(int(i), self._unk)
        if new is None:
            raise KeyError("id %d was not kept and the tokenizer has no unknown token" % i)
        return new

    def _to_old(self, i):
        i = int(i)
        if not 0 <= i < len(self.keep_tokens):
            raise KeyError("id %d is not in the simplified vocabulary (size %d)"
                           % (i, len(self.keep_tokens)))
        return self.keep_tokens[i]

    def token_to_id(self, token):
        """New id of ``token`` (the unknown id if it was not kept)."""
        return self._to_new(self.tokenizer.token_to_id(token))

    def id_to_token(self, i):
        """Token of new id ``i``.

        Raises:
            KeyError: ``i`` is outside ``[0, vocab_size)``.
        """
        return self.tokenizer.id_to_token(self._to_old(i))

    def tokens_to_ids(self, tokens):
        return [self.token_to_id(token) for token in tokens]

    def ids_to_tokens(self, ids):
        return [self.id_to_token(i) for i in ids]

    def tokenize(self, text, maxlen=None):
        """The original tokenizer's tokens (start/end tokens included)."""
        return self.tokenizer.tokenize(text, maxlen=maxlen)

    def encode(self, first_text, second_text=None, maxlen=None, pattern="S*E*E",
               truncate_from="right"):
        """``(token_ids, segment_ids)`` as the original tokenizer's ``encode``
        (same arguments and truncation), the ids mapped to the new ones."""
        ids, segments = self.tokenizer.encode(first_text, second_text, maxlen=maxlen,
                                              pattern=pattern, truncate_from=truncate_from)
        return [self._to_new(i) for i in ids], segments

    def decode(self, ids):
        """Text of new ids (ids outside the simplified vocabulary are
        skipped, as the original tokenizers skip ids past theirs)."""
        return self.tokenizer.decode([self.keep_tokens[int(i)] for i in ids
                                      if 0 <= int(i) < len(self.keep_tokens)])
