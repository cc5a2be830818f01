"""The three kinds of pretraining data: masked LM, left-to-right LM, seq2seq LM.

Split out of :mod:`pretraining.data_utils` (which re-exports the classes and
describes the corpus and record formats): :class:`TrainingDatasetRoBERTa`,
:class:`TrainingDatasetGPT` and :class:`TrainingDatasetUniLM`, subclasses of
:class:`pretraining.dataset.TrainingDataset`, with the packing helpers they share.

Packing (``packing=`` of the masked LM and the LM; Liu et al. 2019, RoBERTa,
section 4.2):

* ``'document'`` (default) -- DOC-SENTENCES: a sequence holds consecutive
  sentences of one document and never crosses into the next, so the last
  sequence of every document is short (on 16-sentence news documents about a
  quarter of the positions of 128-token sequences end up as padding).
* ``'full'`` -- FULL-SENTENCES: the documents of a worker's chunk (``process``'s
  ``chunk_size`` consecutive documents, in corpus order) form one stream with
  one ``[SEP]`` between two documents, cut into sequences of ``seq_len - 2``
  tokens (plus ``[CLS]``/``[SEP]``).  Unlike RoBERTa, which keeps sentences
  whole and so leaves sequences up to a sentence short, a sentence that does
  not fit is cut at a word boundary and its remainder starts the next
  sequence, so a sequence is short by less than one word (the last of a
  chunk excepted).  See :func:`_fill`.
"""

import numpy as np

from bert4keras.snippets import truncate_sequences
from pretraining.dataset import TrainingDataset


def _pack(units, budget):
    """Greedily group consecutive ``units`` (token lists) into ``<= budget`` tokens.

    Every unit must already be ``<= budget`` long.  Returns a list of groups
    (lists of units); order is kept.
    """
    groups, group, size = [], [], 0
    for unit in units:
        if group and size + len(unit) > budget:
            groups.append(group)
            group, size = [], 0
        group.append(unit)
        size += len(unit)
    if group:
        groups.append(group)
    return groups


def _cut(tokens, budget):
    """Cut a token list into consecutive pieces of at most ``budget`` tokens."""
    return [tokens[i : i + budget] for i in range(0, len(tokens), budget)]


def _flatten(lists):
    return [x for sub in lists for x in sub]


PACKINGS = ("document", "full")


def _fill(documents, budget, separator):
    """Pack the words of consecutive documents into sequences of ``budget`` tokens.

    RoBERTa's FULL-SENTENCES packing (Liu et al. 2019, section 4.2), cut at
    word boundaries: words are appended in order while they fit; the first
    word that does not fit starts the next sequence, so a sequence is exactly
    ``budget`` tokens long unless its next word would have overflowed it (and
    the last one).  A word longer than ``budget`` is cut into ``budget``-token
    pieces, each packed as a word.  Between two documents inside a sequence
    comes one word ``[separator]``; where a document ends a full sequence the
    separator is left out (the sequence boundary marks it).  Empty documents
    are skipped.  Nothing is dropped: the words, minus the separators, are the
    input words in order.

    Args:
        documents: ``list[list[list[int]]]``, per document its words' token ids.
        budget: tokens per sequence without ``[CLS]``/``[SEP]`` (``>= 1``).
        separator: the token id put between documents (``[SEP]``).

    Returns:
        ``list[(owner, words, separators)]``, one per sequence: the index of
        the document the sequence starts in, its words (``list[list[int]]``,
        separators included) and the indices of the separator words in
        ``words``.
    """
    sequences = []
    words, separators, size, owner = [], [], 0, 0
    for index, document in enumerate(documents):
        if not document:
            continue
        if words:
            if size < budget:
                separators.append(len(words))
                words.append([separator])
                size += 1
            else:
                sequences.append((owner, words, separators))
                words, separators, size = [], [], 0
        for word in document:
            for piece in _cut(word, budget):
                if words and size + len(piece) > budget:
                    sequences.append((owner, words, separators))
                    words, separators, size = [], [], 0
                if not words:
                    owner = index
                words.append(piece)
                size += len(piece)
    if words:
        sequences.append((owner, words, separators))
    return sequences


class _FullPacking:
    """The ``packing`` option of :class:`TrainingDatasetRoBERTa` and
    :class:`TrainingDatasetGPT` (mixed in before :class:`TrainingDataset`).

    With ``packing='full'`` a worker's chunk of documents (``process``'s
    ``chunk_size``) is packed as one stream by :func:`_fill`; its random
    generator (for the masks) is seeded with ``(seed, dupe_round,
    index of the chunk's first document)``, so the records depend on
    ``chunk_size`` but, as before, not on ``workers``.  A sequence is written
    under the document it starts in; the others of the chunk get none.
    :meth:`document_instances` always packs a single document
    (DOC-SENTENCES).  Subclasses define ``_document_words(document) ->
    list[list[int]]`` and ``_sequence_record(words, separators, rng) -> dict``.

    Raises:
        ValueError: ``packing`` is not one of :data:`PACKINGS` (checked before
            the dataset's own arguments).
    """

    def __init__(self, *args, packing="document", **kwargs):
        if packing not in PACKINGS:
            raise ValueError(f"packing must be one of {PACKINGS}, got packing={packing!r}")
        self.packing = packing
        super().__init__(*args, **kwargs)

    def _process_chunk(self, task):
        if self.packing == "document":
            return super()._process_chunk(task)
        seed, dupe_round, items = task
        out = [[] for _ in items]
        if not items:
            return out
        rng = np.random.default_rng([seed, dupe_round, items[0][0]])
        documents = [self._document_words(document) for _, document in items]
        for owner, words, separators in _fill(documents, self.seq_len - 2, self.token_sep_id):
            out[owner].append(self._sequence_record(words, separators, rng))
        return out

    def _manifest_extra(self):
        return {**super()._manifest_extra(), "packing": self.packing}


def _document_sentences(document):
    if isinstance(document, str):
        document = document.splitlines()
    return [s for s in (line.strip() for line in document) if s]


def _shift_left(tensor, fill):
    """``[b, L] -> [b, L]`` with ``out[:, t] = tensor[:, t + 1]`` and ``fill`` at the end."""
    import tensorflow as tf

    return tf.concat([tensor[:, 1:], tf.fill([tf.shape(tensor)[0], 1], fill)], axis=1)


# ---------------------------------------------------------------------------
# Masked LM
# ---------------------------------------------------------------------------


class TrainingDatasetRoBERTa(_FullPacking, TrainingDataset):
    """Masked-LM data with whole-word masking (RoBERTa / BERT-wwm recipe).

    Each sentence is tokenised and its tokens grouped into whole words with
    ``word_segment`` (default ``jieba.lcut``), see :meth:`sentence_words`.
    For every packed sequence of ``n`` tokens (without
    ``[CLS]``/``[SEP]``) the budget is ``max(1, round(n * mask_rate))``
    tokens: words are visited in random order and taken whole while they
    fit the budget (a word that would overflow it is skipped), as in
    Google's ``create_pretraining_data.py``.  Each chosen token then becomes
    ``[MASK]`` with probability 0.8, a random token with 0.1 (uniform over
    the vocabulary minus ``[PAD]``/``[CLS]``/``[SEP]``/``[MASK]``), and stays
    itself with 0.1.

    Packing (see the module docstring): ``'document'`` packs whole sentences
    of one document (RoBERTa's DOC-SENTENCES; a sentence longer than
    ``seq_len - 2`` tokens is cut at word boundaries, a single longer word
    truncated); ``'full'`` fills every sequence to ``seq_len`` tokens from a
    stream of documents with ``[SEP]`` between them (FULL-SENTENCES), cutting
    only between words, so masked words are never split across sequences (a
    single word longer than ``seq_len - 2`` is cut into pieces, none dropped).
    The separators are never masked and do not count towards the prediction
    budget.

    Args:
        tokenizer, seq_len, vocab_size: see :class:`TrainingDataset`.
        word_segment: ``text -> list[str]`` whose pieces concatenate to the
            text; default ``jieba.lcut``.
        mask_rate: fraction of tokens chosen for prediction.
        packing: ``'document'`` (default) or ``'full'``; written to the
            manifest as ``packing``.
        **special_tokens: ``cls_token`` etc., see :class:`TrainingDataset`.

    Raises:
        ValueError: the vocabulary has no ``[MASK]``, ``mask_rate`` is not
            in ``(0, 1)``, or ``packing`` is not one of ``PACKINGS``.
    """

    kind = "roberta"
    features = ("token_ids", "mask_ids")
    supports_dupe_factor = True

    def __init__(self, tokenizer, seq_len=512, word_segment=None, mask_rate=0.15,
                 vocab_size=None, packing="document", **special_tokens):
        super().__init__(tokenizer, seq_len, vocab_size, packing=packing, **special_tokens)
        if self.token_mask_id is None:
            raise ValueError("masked LM needs a mask token in the vocabulary")
        self.token_mask_id = int(self.token_mask_id)
        if not 0 < mask_rate < 1:
            raise ValueError(f"mask_rate must be in (0, 1), got {mask_rate}")
        self.mask_rate = float(mask_rate)
        if word_segment is None:
            import jieba

            jieba.initialize()  # load the dictionary once, before workers fork
            word_segment = jieba.lcut
        self.word_segment = word_segment
        special = {self.token_pad_id, self.token_cls_id, self.token_sep_id, self.token_mask_id}
        self._random_ids = np.array([i for i in range(self.vocab_size) if i not in special])

    def sentence_words(self, text):
        """Token ids of ``text`` grouped into whole words: ``list[list[int]]``.

        If the tokenizer has ``rematch(text, tokens)`` (token -> character
        indices), the whole sentence is tokenised once -- so the ids are
        exactly what the tokenizer gives at fine-tuning time -- and tokens are
        grouped: a token joins the previous group when it is a ``##``
        continuation or shares a segmenter word with the previous token (so
        ``１ ##９ ##９ ##８`` stays one unit even where jieba cuts it into four
        words).  Otherwise every segmenter word is tokenised on its own, as
        the original bert4keras did.

        Raises:
            ValueError: the ``word_segment`` pieces do not concatenate to
                ``text`` (rematch path).
        """
        if not hasattr(self.tokenizer, "rematch"):
            words = (self.tokenize(word) for word in self.word_segment(text))
            return [w for w in words if w]
        tokens = self.tokenizer.tokenize(text)
        spans = self.tokenizer.rematch(text, tokens)
        pieces = self.word_segment(text)
        if sum(len(p) for p in pieces) != len(text):
            raise ValueError("word_segment pieces must concatenate to the text")
        char_word = np.repeat(np.arange(len(pieces)), [len(p) for p in pieces])
        ids = self.tokenizer.tokens_to_ids(tokens)
        groups, previous = [], None
        for token, token_id, span in zip(tokens, ids, spans):
            if token in (self.cls_token, self.sep_token) and not span:
                continue
            words = {int(char_word[c]) for c in span}
            continues = token.startswith("##") and len(token) > 2
            if groups and (continues or (words and previous and words & previous)):
                groups[-1].append(int(token_id))
            else:
                groups.append([int(token_id)])
            previous = words
        return groups

    def mask_words(self, words, rng, keep=()):
        """Mask one sequence given as words; return its record.

        Args:
            words: ``list[list[int]]``, the token ids of each word, in order.
            rng: ``np.random.Generator``.
            keep: indices of one-token words never chosen and left out of the
                prediction budget (the document separators of
                ``packing='full'``); the default ``()`` leaves every word
                eligible.

        Returns:
            ``{'token_ids': [CLS] + tokens + [SEP], 'mask_ids': ...}`` (see the
            module docstring for ``mask_ids``), both ``list[int]``.
        """
        n = sum(len(w) for w in words) - len(keep)
        budget = max(1, int(round(n * self.mask_rate)))
        chosen, taken = np.zeros(len(words), dtype=bool), 0
        for i in rng.permutation(len(words)):
            if taken >= budget:
                break
            if i in keep:
                continue
            if taken + len(words[i]) <= budget:
                chosen[i] = True
                taken += len(words[i])
        draws = rng.random(taken)
        random_ids = self._random_ids[rng.integers(len(self._random_ids), size=taken)]
        token_ids, mask_ids, k = [self.token_cls_id], [0], 0
        for word, is_chosen in zip(words, chosen):
            token_ids.extend(word)
            if not is_chosen:
                mask_ids.extend([0] * len(word))
                continue
            for token in word:
                if draws[k] < 0.8:
                    shown = self.token_mask_id
                elif draws[k] < 0.9:
                    shown = token
                else:
                    shown = int(random_ids[k])
                mask_ids.append(shown + 1)
                k += 1
        token_ids.append(self.token_sep_id)
        mask_ids.append(0)
        return {"token_ids": token_ids, "mask_ids": mask_ids}

    def document_instances(self, document, rng):
        budget = self.seq_len - 2
        units = []  # sentences (or pieces of long ones) as word lists
        for sentence in _document_sentences(document):
            piece, size = [], 0
            for word in self.sentence_words(sentence):
                word = word[:budget]
                if piece and size + len(word) > budget:
                    units.append(piece)
                    piece, size = [], 0
                piece.append(word)
                size += len(word)
            if piece:
                units.append(piece)
        groups, group, size = [], [], 0
        for unit in units:
            n = sum(len(w) for w in unit)
            if group and size + n > budget:
                groups.append(group)
                group, size = [], 0
            group.extend(unit)
            size += n
        if group:
            groups.append(group)
        return [self.mask_words(words, rng) for words in groups]

    def _document_words(self, document):
        return [w for sentence in _document_sentences(document)
                for w in self.sentence_words(sentence)]

    def _sequence_record(self, words, separators, rng):
        return self.mask_words(words, rng, keep=frozenset(separators))

    def _count_masked(self, instance):
        return sum(1 for m in instance["mask_ids"] if m)

    def _manifest_extra(self):
        return {**super()._manifest_extra(), "mask_rate": self.mask_rate}

    @classmethod
    def model_inputs(cls, batch):
        """Masked-LM triple from padded records.

        * ``x['Input-Token']``: ids with the masks applied
          (``mask_ids - 1`` where ``mask_ids > 0``, else ``token_ids``);
        * ``x['Input-Segment']``: zeros;
        * ``y`` (``mlm_labels``): the original ``token_ids``;
        * ``sample_weight`` (``mlm_weights``): ``1.0`` where ``mask_ids > 0``.
        """
        import tensorflow as tf

        token_ids, mask_ids = batch["token_ids"], batch["mask_ids"]
        valid = token_ids >= 0
        token_ids = tf.where(valid, token_ids, 0)
        is_masked = mask_ids > 0
        inputs = tf.where(is_masked, mask_ids - 1, token_ids)
        x = {"Input-Token": inputs, "Input-Segment": tf.zeros_like(inputs)}
        return x, token_ids, tf.cast(is_masked, tf.float32)


# ---------------------------------------------------------------------------
# Left-to-right LM
# ---------------------------------------------------------------------------


class TrainingDatasetGPT(_FullPacking, TrainingDataset):
    """Left-to-right LM data: packed ``[CLS] s_1 ... s_k [SEP]`` token streams.

    Packing (see the module docstring): ``'document'`` (default) packs whole
    sentences of one document (DOC-SENTENCES; longer sentences cut into
    ``seq_len - 2``-token pieces); ``'full'`` fills every sequence to
    ``seq_len`` tokens from the stream of a chunk's documents with ``[SEP]``
    between them (FULL-SENTENCES), cutting between any two tokens.

    Args:
        *args, **kwargs: see :class:`TrainingDataset`.
        packing: ``'document'`` (default) or ``'full'``; written to the
            manifest as ``packing``.

    Raises:
        ValueError: as :class:`TrainingDataset`, or ``packing`` is not one of
            ``PACKINGS``.
    """

    kind = "gpt"
    features = ("token_ids",)

    def _document_words(self, document):
        return [[t] for sentence in _document_sentences(document) for t in self.tokenize(sentence)]

    def _sequence_record(self, words, separators, rng):
        return {"token_ids": [self.token_cls_id] + _flatten(words) + [self.token_sep_id]}

    def document_instances(self, document, rng):
        budget = self.seq_len - 2
        units = []
        for sentence in _document_sentences(document):
            units.extend(_cut(self.tokenize(sentence), budget))
        units = [u for u in units if u]
        return [
            {"token_ids": [self.token_cls_id] + _flatten(group) + [self.token_sep_id]}
            for group in _pack(units, budget)
        ]

    @classmethod
    def model_inputs(cls, batch):
        """Next-token triple from padded records.

        * ``x['Input-Token']``: ``token_ids`` (``[CLS] ... [SEP]``, 0-padded);
        * ``x['Input-Segment']``: zeros;
        * ``y``: the next token, ``y[:, t] = token_ids[:, t + 1]`` (0 at the end);
        * ``sample_weight``: ``1.0`` where ``t + 1`` is inside the sequence
          (the final ``[SEP]`` is predicted; ``[CLS]`` is not).
        """
        import tensorflow as tf

        token_ids = batch["token_ids"]
        valid = token_ids >= 0
        token_ids = tf.where(valid, token_ids, 0)
        x = {"Input-Token": token_ids, "Input-Segment": tf.zeros_like(token_ids)}
        labels = _shift_left(token_ids, 0)
        weights = tf.cast(_shift_left(valid, False), tf.float32)
        return x, labels, weights


# ---------------------------------------------------------------------------
# Sequence-to-sequence LM
# ---------------------------------------------------------------------------


class TrainingDatasetUniLM(TrainingDataset):
    """UniLM data: ``[CLS] source [SEP] target [SEP]`` with segment ids 0 / 1.

    With ``pairs=True`` every corpus item is a ``(source, target)`` pair of
    strings; a pair longer than ``seq_len`` is shortened with
    :func:`~bert4keras.snippets.truncate_sequences` (the longer side loses
    tokens from its end).  With ``pairs=False`` (the default) items are
    documents: their sentences are packed into chunks of at most
    ``seq_len - 3`` tokens, and each chunk becomes one pair, split at the
    sentence boundary closest to half of its tokens (a one-sentence chunk is
    split at its middle token); a chunk of a single token is dropped.

    Args:
        tokenizer, seq_len, vocab_size, **special_tokens: see
            :class:`TrainingDataset`.
        pairs: read corpus items as ``(source, target)`` pairs.
    """

    kind = "unilm"
    features = ("token_ids", "segment_ids")
    min_seq_len = 5

    def __init__(self, tokenizer, seq_len=512, pairs=False, vocab_size=None, **special_tokens):
        super().__init__(tokenizer, seq_len, vocab_size, **special_tokens)
        self.pairs = bool(pairs)

    def _instance(self, source, target):
        cls_id, sep_id = self.token_cls_id, self.token_sep_id
        token_ids = [cls_id] + source + [sep_id] + target + [sep_id]
        segment_ids = [0] * (len(source) + 2) + [1] * (len(target) + 1)
        return {"token_ids": token_ids, "segment_ids": segment_ids}

    def document_instances(self, document, rng):
        budget = self.seq_len - 3
        if self.pairs:
            source, target = document
            source, target = truncate_sequences(budget, -1, self.tokenize(source),
                                                self.tokenize(target))
            return [self._instance(source, target)]
        units = []
        for sentence in _document_sentences(document):
            units.extend(_cut(self.tokenize(sentence), budget))
        instances = []
        for group in _pack([u for u in units if u], budget):
            if len(group) == 1:
                tokens = group[0]
                if len(tokens) < 2:
                    continue
                half = len(tokens) // 2
                instances.append(self._instance(tokens[:half], tokens[half:]))
                continue
            sizes = np.cumsum([len(u) for u in group])
            split = int(np.argmin(np.abs(sizes[:-1] - sizes[-1] / 2))) + 1
            instances.append(self._instance(_flatten(group[:split]), _flatten(group[split:])))
        return instances

    def _manifest_extra(self):
        return {"pairs": self.pairs}

    @classmethod
    def model_inputs(cls, batch):
        """Seq2seq triple from padded records.

        * ``x['Input-Token']``: ``token_ids`` (0-padded);
        * ``x['Input-Segment']``: ``segment_ids`` (0-padded);
        * ``y``: the next token, ``y[:, t] = token_ids[:, t + 1]``;
        * ``sample_weight``: ``segment_ids[:, t + 1]`` as float -- only target
          tokens (and the final ``[SEP]``) are predicted.
        """
        import tensorflow as tf

        token_ids, segment_ids = batch["token_ids"], batch["segment_ids"]
        valid = token_ids >= 0
        token_ids = tf.where(valid, token_ids, 0)
        segment_ids = tf.where(valid, segment_ids, 0)
        x = {"Input-Token": token_ids, "Input-Segment": segment_ids}
        labels = _shift_left(token_ids, 0)
        weights = tf.cast(_shift_left(segment_ids, 0), tf.float32)
        return x, labels, weights
