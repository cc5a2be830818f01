"""What every tokenizer shares: start/end tokens, truncation and ``encode``.

:class:`TokenizerBase` follows ``TokenizerBase`` of the original bert4keras;
the WordPiece :class:`~bert4keras.tokenizers.wordpiece.Tokenizer` and the
:class:`~bert4keras.tokenizers.sentencepiece.SpTokenizer` subclass it. This
module imports nothing from the package.
"""

__all__ = ["TokenizerBase"]


def _truncate(maxlen, index, sequences, keep):
    """Pop ``sequences[i][index]`` from the longest sequence (first on ties)
    until the total length is <= ``maxlen``; as ``truncate_sequences`` of
    the original bert4keras.  ``keep`` is the number of elements (special
    tokens) that must stay in each sequence.

    Raises:
        ValueError: ``maxlen`` is smaller than ``keep * len(sequences)``.
    """
    lengths = [len(s) for s in sequences]
    if maxlen < keep * len(sequences):
        raise ValueError(f"maxlen={maxlen} leaves no room for the special tokens")
    total = sum(lengths)
    while total > maxlen:
        i = lengths.index(max(lengths))
        sequences[i].pop(index)
        lengths[i] -= 1
        total -= 1


class TokenizerBase:
    """Shared part of the tokenizers: start/end tokens, truncation, ``encode``.

    Follows ``TokenizerBase`` of bert4keras 0.11.5, with its signature.
    Subclasses provide ``_tokenize(text) -> list of str`` (the tokens before
    ``token_translate``), ``token_to_id``, ``id_to_token`` and ``decode``;
    :meth:`tokenize`, :meth:`encode`, :meth:`tokens_to_ids` and
    :meth:`ids_to_tokens` are built on them, so a 0.11.5-style subclass
    that defines only those works unchanged.

    Args:
        token_start: token put in front of every sequence (``None``: none).
        token_end: token appended to every sequence (``None``: none).
        pre_tokenize: optional function ``text -> iterable of str`` (e.g.
            ``jieba.lcut``) used by the subclass's ``_tokenize`` as a first
            split (see :class:`~bert4keras.tokenizers.wordpiece.Tokenizer`
            and :class:`~bert4keras.tokenizers.sentencepiece.SpTokenizer` for
            what each does with the pieces).
        token_translate: optional dict token -> token applied by
            :meth:`tokenize` to the tokens of ``_tokenize`` (and inverted by
            the subclasses' ``decode``); kept as ``_token_translate``, its
            inverse as ``_token_translate_inv``.
    """

    _token_pad = "[PAD]"
    _token_unk = "[UNK]"
    _token_mask = "[MASK]"

    def __init__(self, token_start="[CLS]", token_end="[SEP]", pre_tokenize=None,
                 token_translate=None):
        self._token_start = token_start
        self._token_end = token_end
        self._pre_tokenize = pre_tokenize
        self._token_translate = dict(token_translate or {})
        self._token_translate_inv = {v: k for k, v in self._token_translate.items()}

    def tokenize(self, text, maxlen=None):
        """Split ``text`` into tokens, with the start and end tokens.

        As in bert4keras 0.11.5: the tokens of :meth:`_tokenize` are passed
        through ``token_translate`` (a token missing from the dict, or mapped
        to an empty string, stays as it is), then the start token is put in
        front and the end token appended.

        Args:
            text: a string.
            maxlen: if given, drop the last token before the end token until
                at most ``maxlen`` tokens remain (0.11.5's truncation).

        Returns:
            A list of token strings.

        Raises:
            ValueError: ``maxlen`` too small to hold the start and end tokens
                (0.11.5 went on to drop the start token; an improvement).
        """
        tokens = self._translate(self._tokenize(text))
        if self._token_start is not None:
            tokens.insert(0, self._token_start)
        if self._token_end is not None:
            tokens.append(self._token_end)
        if maxlen is not None:
            keep = (self._token_start is not None) + (self._token_end is not None)
            _truncate(maxlen, -1 - (self._token_end is not None), [tokens], keep)
        return tokens

    def _translate(self, tokens):
        """``tokens`` through ``token_translate`` (a new list)."""
        translate = self._token_translate
        if not translate:
            return list(tokens)
        return [translate.get(token) or token for token in tokens]

    def token_to_id(self, token):
        """Id of one token (implemented by subclasses)."""
        raise NotImplementedError

    def id_to_token(self, i):
        """Token of one id (implemented by subclasses)."""
        raise NotImplementedError

    def tokens_to_ids(self, tokens):
        """Map a list of tokens to ids (unknown tokens -> the unknown id)."""
        return [self.token_to_id(token) for token in tokens]

    def ids_to_tokens(self, ids):
        """Map a list of ids to tokens."""
        return [self.id_to_token(int(i)) for i in ids]

    def encode(self, first_text, second_text=None, maxlen=None, pattern="S*E*E",
               truncate_from="right"):
        """Token ids and segment ids of one text or a text pair.

        Follows ``encode`` of bert4keras 0.11.5.  With ``pattern='S*E*E'``
        (the default) a pair is ``[CLS] A [SEP] B [SEP]``: the second text's
        own start token is dropped.  With ``'S*ES*E'`` it is kept:
        ``[CLS] A [SEP] [CLS] B [SEP]``.  Segment ids are 0 for the first part
        and 1 for the second.

        Truncation (``maxlen``), as in 0.11.5: both texts are tokenized with
        their start and end tokens, then one token at a time is removed from
        the currently longer one (the first on ties) until the total is at
        most ``maxlen``; for ``'S*E*E'`` pairs the second start token still
        counts there, so ``maxlen`` is raised by one to make up for dropping
        it.  The result is at most ``maxlen`` ids long.

        Args:
            first_text: a string, or an already tokenized list (with start
                and end tokens, as :meth:`tokenize` returns it).
            second_text: optional second string or token list.
            maxlen: maximum total length (``None``: no truncation).
            pattern: ``'S*E*E'`` or ``'S*ES*E'``.
            truncate_from: ``'right'`` (drop the last token before the end
                token), ``'left'`` (drop the first token after the start
                token) or an int: the list position to pop in each sequence.

        Returns:
            ``(token_ids, segment_ids)``, two lists of ints of equal length.

        Raises:
            ValueError: unknown ``pattern``/``truncate_from``, or ``maxlen``
                too small to hold the special tokens.

        Differences from 0.11.5 (all on inputs 0.11.5 mishandled): a token
        list passed in is copied, not truncated in place; an unknown
        ``pattern`` raises instead of acting as ``'S*ES*E'``; a ``maxlen``
        too small for the special tokens raises instead of dropping them;
        without a start token, ``'S*E*E'`` does not raise ``maxlen`` by one
        (0.11.5 did, and returned ``maxlen + 1`` ids).
        """
        if pattern not in ("S*E*E", "S*ES*E"):
            raise ValueError(f"unknown pattern {pattern!r}")
        first = self.tokenize(first_text) if isinstance(first_text, str) else list(first_text)
        if second_text is None:
            second = None
        elif isinstance(second_text, str):
            second = self.tokenize(second_text)
        else:
            second = list(second_text)

        if maxlen is not None:
            if truncate_from == "right":
                index = -1 - (self._token_end is not None)
            elif truncate_from == "left":
                index = int(self._token_start is not None)
            elif isinstance(truncate_from, int):
                index = truncate_from
            else:
                raise ValueError(f"unknown truncate_from {truncate_from!r}")
            keep = (self._token_start is not None) + (self._token_end is not None)
            sequences = [first] if second is None else [first, second]
            if second is not None and pattern == "S*E*E" and self._token_start is not None:
                maxlen += 1  # the second start token is dropped below
            _truncate(maxlen, index, sequences, keep)

        token_ids = self.tokens_to_ids(first)
        segment_ids = [0] * len(token_ids)
        if second is not None:
            if pattern == "S*E*E" and self._token_start is not None:
                second = second[1:]
            second_ids = self.tokens_to_ids(second)
            token_ids.extend(second_ids)
            segment_ids.extend([1] * len(second_ids))
        return token_ids, segment_ids

    def decode(self, ids):
        """Text of a list of ids (implemented by subclasses)."""
        raise NotImplementedError

    def _tokenize(self, text):
        raise NotImplementedError
