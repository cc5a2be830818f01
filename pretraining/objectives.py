"""The three kinds of pretraining data: masked LM, left-to-right LM, seq2seq LM.

Split out of :mod:`pretraining.data_utils` (which re-exports the classes and
describes the corpus and record formats): :class:`TrainingDatasetRoBERTa`,
:class:`TrainingDatasetGPT` and :class:`TrainingDatasetUniLM`, subclasses of
:class:`pretraining.dataset.TrainingDataset`, with the packing helpers they share.
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


class TrainingDatasetRoBERTa(TrainingDataset):
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

    Args:
        tokenizer, seq_len, vocab_size: see :class:`TrainingDataset`.
        word_segment: ``text -> list[str]`` whose pieces concatenate to the
            text; default ``jieba.lcut``.
        mask_rate: fraction of tokens chosen for prediction.
        **special_tokens: ``cls_token`` etc., see :class:`TrainingDataset`.

    Raises:
        ValueError: the vocabulary has no ``[MASK]`` or ``mask_rate`` is not
            in ``(0, 1)``.
    """

    kind = "roberta"
    features = ("token_ids", "mask_ids")
    supports_dupe_factor = True

    def __init__(self, tokenizer, seq_len=512, word_segment=None, mask_rate=0.15,
                 vocab_size=None, **special_tokens):
        super().__init__(tokenizer, seq_len, vocab_size, **special_tokens)
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

    def mask_words(self, words, rng):
        """Mask one sequence given as words; return its record.

        Args:
            words: ``list[list[int]]``, the token ids of each word, in order.
            rng: ``np.random.Generator``.

        Returns:
            ``{'token_ids': [CLS] + tokens + [SEP], 'mask_ids': ...}`` (see the
            module docstring for ``mask_ids``), both ``list[int]``.
        """
        n = sum(len(w) for w in words)
        budget = max(1, int(round(n * self.mask_rate)))
        chosen, taken = np.zeros(len(words), dtype=bool), 0
        for i in rng.permutation(len(words)):
            if taken >= budget:
                break
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

    def _count_masked(self, instance):
        return sum(1 for m in instance["mask_ids"] if m)

    def _manifest_extra(self):
        return {"mask_rate": self.mask_rate}

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


class TrainingDatasetGPT(TrainingDataset):
    """Left-to-right LM data: packed ``[CLS] s_1 ... s_k [SEP]`` token streams.

    Args: see :class:`TrainingDataset`.
    """

    kind = "gpt"
    features = ("token_ids",)

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
