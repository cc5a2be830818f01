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

    Follows ``TokenizerBase`` of the original bert4keras.  Subclasses provide
    ``_tokenize(text) -> list of str``, ``token_to_id`` and ``id_to_token``.

    Args:
        token_start: token put in front of every sequence (``None``: none).
        token_end: token appended to every sequence (``None``: none).
        pre_tokenize: optional function ``text -> iterable of str`` (e.g.
            ``jieba.lcut``) applied first; a piece that is a vocabulary token
            is kept whole, the others are tokenized further.
        token_translate: optional dict token -> token applied to the output
            of the tokenizer (and inverted by ``decode``).
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

        Args:
            text: a string.
            maxlen: if given, drop tokens before the end token until at most
                ``maxlen`` tokens remain.

        Returns:
            A list of token strings.

        Raises:
            ValueError: ``maxlen`` too small to hold the start and end tokens.
        """
        tokens = self._tokenize(text)
        if self._token_start is not None:
            tokens.insert(0, self._token_start)
        if self._token_end is not None:
            tokens.append(self._token_end)
        if maxlen is not None:
            keep = (self._token_start is not None) + (self._token_end is not None)
            _truncate(maxlen, -1 - (self._token_end is not None), [tokens], keep)
        return tokens

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

        Follows ``encode`` of the original bert4keras.  With
        ``pattern='S*E*E'`` a pair is ``[CLS] A [SEP] B [SEP]``; with
        ``'S*ES*E'`` it is ``[CLS] A [SEP] [CLS] B [SEP]``.  Segment ids are 0
        for the first part and 1 for the second.

        Args:
            first_text: a string, or an already tokenized list (with start
                and end tokens, as :meth:`tokenize` returns it).
            second_text: optional second string or token list.
            maxlen: maximum total length; tokens are removed one at a time
                from the currently longer sequence (the first on ties).
            pattern: ``'S*E*E'`` or ``'S*ES*E'``.
            truncate_from: ``'right'`` (drop the last real token), ``'left'``
                (drop the first real token) or an int position.

        Returns:
            ``(token_ids, segment_ids)``, two lists of ints.

        Raises:
            ValueError: unknown ``pattern``/``truncate_from``, or ``maxlen``
                too small to hold the special tokens.
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
