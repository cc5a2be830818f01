"""SentencePiece tokenizer (T5, mT5 and other SentencePiece models).

:class:`SpTokenizer` wraps a ``sentencepiece`` model (Kudo & Richardson
2018) in the interface of the original bert4keras ``SpTokenizer``:
``tokenize``, ``encode``, ``decode``, ``token_to_id``, ``id_to_token`` and
the ``_token_*_id`` attributes. Its ids are the ``sentencepiece`` library's
own (``SentencePieceProcessor.encode``) plus the start/end tokens; with
``extra_ids`` it adds T5's sentinel tokens as ``transformers``'
``T5Tokenizer`` does.
"""

import os
import re

from bert4keras.tokenizers.base import TokenizerBase

__all__ = ["SpTokenizer"]

_EXTRA_ID = re.compile(r"<extra_id_(\d+)>")


class _ModelDefault:
    """Default of ``token_start``/``token_end``: decided from the model."""

    def __repr__(self):
        return "<from the model>"


_FROM_MODEL = _ModelDefault()


class SpTokenizer(TokenizerBase):
    """A SentencePiece model with bert4keras' tokenizer interface.

    Follows ``SpTokenizer(sp_model_path, **kwargs)`` of bert4keras 0.11.5
    (the keyword arguments are :class:`TokenizerBase`'s).

    Args:
        sp_model_path: path of a ``.model`` file (``spiece.model`` of T5).
        token_start: token put in front of every sequence; ``None`` for none.
            By default ``'[CLS]'`` if the model has that piece (ALBERT's
            models do; 0.11.5's default), else none (T5).
        token_end: token appended to every sequence; ``None`` for none.  By
            default ``'[SEP]'`` if the model has ``'[CLS]'`` and ``'[SEP]'``
            pieces, else the model's end-of-sequence piece (T5's ``'</s>'``,
            id 1), else none.  0.11.5 used ``'[CLS]'``/``'[SEP]'`` whatever
            the model, which gave the unknown id on models without them
            (T5 scripts pass ``token_start=None, token_end='</s>'``, which
            works the same here).
        pre_tokenize: optional ``text -> iterable of str`` applied first; the
            pieces are joined with spaces before SentencePiece (as 0.11.5
            did, e.g. with ``jieba.lcut``).
        token_translate: optional dict token -> token applied by
            :meth:`tokenize` to the pieces (and inverted by :meth:`decode`),
            e.g. ``{'\\u2583': '<cls>'}`` of 0.11.5's CPM-LM example.
        extra_ids: number of T5 sentinel tokens ``<extra_id_0>`` ... after
            the model's pieces, numbered downwards from the top (``<extra_id_0>``
            is ``piece_size + extra_ids - 1``), as ``transformers``'
            ``T5Tokenizer`` numbers them (T5 uses 100). Sentinels in the text
            are kept whole.

    Special ids come from the model: ``pad_id``, ``unk_id``, ``bos_id`` and
    ``eos_id`` (``None`` when the model has none; T5's layout is pad 0, eos
    1, unk 2, no bos; sentencepiece's default is unk 0, bos 1, eos 2).  The
    0.11.5 attributes ``_token_pad``, ``_token_unk``, ``_token_mask``
    (``'[MASK]'`` if the model has it, else ``None``), ``_token_start``,
    ``_token_end`` and their ``_token_*_id`` are set as there.

    Raises:
        FileNotFoundError: ``sp_model_path`` does not exist.
        ValueError: the file is not a SentencePiece model, or ``token_start`` /
            ``token_end`` is not one of its pieces.
    """

    def __init__(self, sp_model_path, token_start=_FROM_MODEL, token_end=_FROM_MODEL,
                 pre_tokenize=None, token_translate=None, extra_ids=0):
        super().__init__(token_start=token_start, token_end=token_end,
                         pre_tokenize=pre_tokenize, token_translate=token_translate)
        import sentencepiece as spm

        path = os.fspath(sp_model_path)
        if not os.path.exists(path):
            raise FileNotFoundError("SentencePiece model not found: %r" % path)
        self._sp_model_path = path
        self.sp_model = spm.SentencePieceProcessor()
        try:
            self.sp_model.Load(path)
        except (OSError, RuntimeError) as exc:
            raise ValueError("Cannot read SentencePiece model %r: %s" % (path, exc)) from exc
        self._extra_ids = int(extra_ids)
        self._setup()

    def _setup(self):
        sp = self.sp_model
        self._piece_size = sp.get_piece_size()
        self._vocab_size = self._piece_size + self._extra_ids

        def special(i):
            return None if i < 0 else i

        self._pad_id, self._unk_id = special(sp.pad_id()), special(sp.unk_id())
        self._bos_id, self._eos_id = special(sp.bos_id()), special(sp.eos_id())
        self._token_pad = None if self._pad_id is None else sp.id_to_piece(self._pad_id)
        self._token_unk = None if self._unk_id is None else sp.id_to_piece(self._unk_id)
        self._token_mask = "[MASK]" if self._is_piece("[MASK]") else None
        if self._token_start is _FROM_MODEL or self._token_end is _FROM_MODEL:
            bert_style = self._is_piece("[CLS]") and self._is_piece("[SEP]")
            if self._token_start is _FROM_MODEL:
                self._token_start = "[CLS]" if bert_style else None
            if self._token_end is _FROM_MODEL:
                eos = None if self._eos_id is None else sp.id_to_piece(self._eos_id)
                self._token_end = "[SEP]" if bert_style else eos
        for name in ("start", "end"):
            token = getattr(self, "_token_%s" % name)
            if token is not None and not self._known(token):
                raise ValueError("%s token %r is not a piece of %r" % (
                    name, token, self._sp_model_path))
        for name in ("pad", "unk", "mask", "start", "end"):
            token = getattr(self, "_token_%s" % name)
            setattr(self, "_token_%s_id" % name,
                    None if token is None else self.token_to_id(token))

    def _known(self, token):
        i = self.token_to_id(token)
        return i != self._unk_id or token == self._token_unk

    def _is_piece(self, token):
        """``token`` is a piece of the model itself."""
        i = self.sp_model.piece_to_id(token)
        return self.sp_model.id_to_piece(i) == token

    def __getstate__(self):
        state = self.__dict__.copy()
        state["sp_model"] = self.sp_model.serialized_model_proto()
        return state

    def __setstate__(self, state):
        import sentencepiece as spm

        proto = state.pop("sp_model")
        self.__dict__.update(state)
        self.sp_model = spm.SentencePieceProcessor()
        self.sp_model.LoadFromSerializedProto(proto)

    # -- vocabulary -----------------------------------------------------------

    @property
    def vocab_size(self):
        """Pieces of the model plus ``extra_ids``."""
        return self._vocab_size

    @property
    def pad_id(self):
        return self._pad_id

    @property
    def unk_id(self):
        return self._unk_id

    @property
    def bos_id(self):
        return self._bos_id

    @property
    def eos_id(self):
        return self._eos_id

    def token_to_id(self, token):
        """Id of a piece (or sentinel); unknown pieces get the unknown id."""
        if self._extra_ids:
            match = _EXTRA_ID.fullmatch(token)
            if match and int(match.group(1)) < self._extra_ids:
                return self._vocab_size - 1 - int(match.group(1))
        return self.sp_model.piece_to_id(token)

    def id_to_token(self, i):
        """Piece (or sentinel) of id ``i``.

        Raises:
            KeyError: ``i`` is not an id of the vocabulary.
        """
        i = int(i)
        if 0 <= i < self._piece_size:
            return self.sp_model.id_to_piece(i)
        if self._piece_size <= i < self._vocab_size:
            return "<extra_id_%d>" % (self._vocab_size - 1 - i)
        raise KeyError("id %r is not in the vocabulary (size %d)" % (i, self._vocab_size))

    def _is_special(self, i):
        """Control, unknown and unused pieces (not shown by :meth:`decode`)."""
        sp = self.sp_model
        return sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i)

    def _is_decodable(self, i):
        return 0 <= i < self._piece_size and not self._is_special(i)

    # -- text -----------------------------------------------------------------

    def _chunks(self, text):
        """Split ``text`` around sentinel tokens: [(is_sentinel, str), ...]."""
        if self._pre_tokenize is not None:
            text = " ".join(self._pre_tokenize(text))
        if not self._extra_ids:
            return [(False, text)]
        out, start = [], 0
        for match in _EXTRA_ID.finditer(text):
            if int(match.group(1)) >= self._extra_ids:
                continue
            out.append((False, text[start:match.start()]))
            out.append((True, match.group(0)))
            start = match.end()
        out.append((False, text[start:]))
        return [(s, t) for s, t in out if s or t]

    def _tokenize(self, text):
        """Pieces of ``text`` before ``token_translate`` (0.11.5's
        ``_tokenize``: ``pre_tokenize`` pieces joined by spaces, then
        SentencePiece; sentinels kept whole)."""
        tokens = []
        for sentinel, chunk in self._chunks(text):
            if sentinel:
                tokens.append(chunk)
            else:
                tokens.extend(self.sp_model.encode_as_pieces(chunk))
        return tokens

    def encode(self, first_text, second_text=None, maxlen=None, pattern="S*E*E",
               truncate_from="right"):
        """Token ids and segment ids; see :meth:`TokenizerBase.encode`.

        A single text without ``maxlen`` takes a faster path (SentencePiece
        ids directly) with the same result.
        """
        if (second_text is None and maxlen is None and isinstance(first_text, str)
                and not self._token_translate):
            ids = [] if self._token_start_id is None else [self._token_start_id]
            for sentinel, chunk in self._chunks(first_text):
                if sentinel:
                    ids.append(self.token_to_id(chunk))
                else:
                    ids.extend(self.sp_model.encode(chunk))
            if self._token_end_id is not None:
                ids.append(self._token_end_id)
            return ids, [0] * len(ids)
        return super().encode(first_text, second_text, maxlen, pattern, truncate_from)

    def decode(self, ids):
        """Text of a list of ids.

        As 0.11.5: ``token_translate`` is undone, ids past the vocabulary
        (a model whose embedding is larger than its SentencePiece model)
        and control pieces (pad, start, end) give nothing, and the rest is
        SentencePiece's own detokenization.  Unknown and unused pieces are
        dropped too (0.11.5 showed an unknown piece as `` ⁇ ``); sentinels
        are kept as ``<extra_id_N>``.  The text is stripped (a dropped
        unknown piece can leave a space).
        """
        if self._token_translate_inv:
            inv = self._token_translate_inv
            ids = [self.token_to_id(inv.get(self.id_to_token(i), self.id_to_token(i)))
                   if 0 <= i < self._vocab_size else -1 for i in map(int, ids)]
        parts, run = [], []

        def flush():
            text = self.sp_model.decode(run)
            if parts and run and self.sp_model.id_to_piece(run[0]).startswith("\u2581"):
                text = " " + text  # a word after a sentinel keeps its space
            parts.append(text)
            run.clear()

        for i in map(int, ids):
            if self._piece_size <= i < self._vocab_size:
                flush()
                parts.append(self.id_to_token(i))
            elif self._is_decodable(i):
                run.append(i)
        flush()
        return "".join(parts).strip()
