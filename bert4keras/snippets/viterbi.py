"""``ViterbiDecoder``: the best label path of a linear-chain CRF, in NumPy
(the decoder that bert4keras 0.11.5 sequence-labelling scripts subclass)."""

import numpy as np


class ViterbiDecoder:
    """Best label path of a linear-chain CRF (Viterbi 1967), in numpy.

    The score of a path ``y`` is ``sum_t nodes[t, y_t] + sum_{t>0}
    trans[y_{t-1}, y_t]`` (plus ``start_scores[y_0]`` and
    ``end_scores[y_last]`` when given); :meth:`decode` returns the path with
    the highest score.

    Args:
        trans: ``(num_labels, num_labels)`` transition scores, ``trans[i, j]``
            for label ``i`` followed by ``j`` (e.g. ``ConditionalRandomField.trans``
            as numpy: ``keras.ops.convert_to_numpy(crf.trans)``).
        starts: labels allowed at the first position (None: all).
        ends: labels allowed at the last position (None: all).
        start_scores: optional ``(num_labels,)`` added at the first position
            (CRFs trained with explicit start weights, e.g. Paddle's).
        end_scores: optional ``(num_labels,)`` added at the last position.

    Unlike 0.11.5's ``decode``, ``nodes`` is not modified in place.

    Example (BERT + CRF with ``[CLS]``/``[SEP]`` tagged 0)::

        decoder = ViterbiDecoder(keras.ops.convert_to_numpy(crf.trans), starts=[0], ends=[0])
        labels = decoder.decode(model.predict(x)[0][:length])
    """

    def __init__(self, trans, starts=None, ends=None, start_scores=None, end_scores=None):
        self.trans = np.asarray(trans, dtype="float64")
        if self.trans.ndim != 2 or self.trans.shape[0] != self.trans.shape[1]:
            raise ValueError("trans must be square (num_labels, num_labels), "
                             f"got {self.trans.shape}")
        self.num_labels = self.trans.shape[0]
        self.first = self._edge_scores(starts, start_scores, "start")
        self.last = self._edge_scores(ends, end_scores, "end")
        # 0.11.5's attributes: the labels banned at the first / last position
        self.non_starts = [int(i) for i in np.flatnonzero(np.isneginf(self.first))]
        self.non_ends = [int(i) for i in np.flatnonzero(np.isneginf(self.last))]

    def _edge_scores(self, allowed, scores, what):
        edge = np.zeros(self.num_labels)
        if scores is not None:
            scores = np.asarray(scores, dtype="float64")
            if scores.shape != (self.num_labels,):
                raise ValueError(f"{what}_scores must have shape ({self.num_labels},), "
                                 f"got {scores.shape}")
            edge = edge + scores
        if allowed is not None:
            banned = np.ones(self.num_labels, dtype=bool)
            banned[list(allowed)] = False
            edge[banned] = -np.inf
        return edge

    def decode(self, nodes):
        """The best path for the emission scores ``nodes``.

        Args:
            nodes: ``(seq_len, num_labels)`` scores of one sequence (without
                padding).

        Returns:
            ``np.ndarray`` of ``seq_len`` int label ids (empty for an empty
            sequence).
        """
        nodes = np.asarray(nodes, dtype="float64")
        # read at each call: scripts refresh it (``decoder.trans = crf_weights``)
        trans = np.asarray(self.trans, dtype="float64")
        if nodes.ndim != 2 or nodes.shape[1] != self.num_labels:
            raise ValueError(f"nodes must have shape (seq_len, {self.num_labels}), "
                             f"got {nodes.shape}")
        seq_len = len(nodes)
        if seq_len == 0:
            return np.zeros(0, dtype=int)
        score = nodes[0] + self.first
        if seq_len == 1:
            score = score + self.last
        backpointers = np.zeros((seq_len, self.num_labels), dtype=int)
        for t in range(1, seq_len):
            candidates = score[:, None] + trans  # previous label x current label
            backpointers[t] = candidates.argmax(axis=0)
            score = candidates.max(axis=0) + nodes[t]
            if t == seq_len - 1:
                score = score + self.last
        path = np.zeros(seq_len, dtype=int)
        path[-1] = int(score.argmax())
        for t in range(seq_len - 1, 0, -1):
            path[t - 1] = backpointers[t, path[t]]
        return path
