"""Search rules of autoregressive decoding: greedy search, beam search and
sampling, written once in ``keras.ops`` on fixed shapes, so that the same code
runs eagerly (:class:`bert4keras.generation.AutoRegressiveDecoder`) and inside
a compiled step (:class:`bert4keras.generation.CachedDecoder`).

A search keeps a dict of tensors (its *state*) and updates it from the
next-token logits of every row: ``state, parent = search.update(state,
logits)``; ``parent`` (beam search) says which old row each new row continues,
so that caches can be reordered the same way.

Rules:

* scores are sums of token log-probabilities (log-softmax of the processed
  logits); ``temperature`` divides the logits; ``repetition_penalty`` ``p``
  (Keskar et al. 2019, as Hugging Face's processor) divides positive logits
  and multiplies negative ones of every token already in the sequence;
* ``minlen``: no stop token before the output holds ``minlen`` tokens (the
  stop token counted, so the default 1 allows stopping at once);
* a row ends at a stop token (``end_id``, or any of several) once it holds
  ``min_ends`` of them;
* beam search follows ``transformers``' ``generate(num_beams=k)``: ``2k``
  candidates per step, the best ``k`` that do not end keep running, the ones
  that end among the best ``k`` join a set of ``k`` finished hypotheses
  scored ``sum_logprob / length**length_penalty`` (``length_penalty=0``:
  plain sums, the original toolkit's score); ``early_stopping=True`` stops
  when ``k`` hypotheses are finished, ``False`` when no running beam can beat
  the worst of them; at ``max_new_tokens`` the running beams are finished;
* sampling draws with the Gumbel-max trick from the logits left by
  ``topk`` (the ``k`` best) then ``topp`` (the smallest set of best tokens
  whose probability reaches ``p``); a fixed ``seed`` reproduces the draws.
"""

import dataclasses
import functools
import math

import keras
import numpy as np
from keras import ops

__all__ = ["Options", "TokenSearch", "BeamSearch", "make_search"]

#: score offset of impossible candidates (as ``transformers``' beam search)
NEG = -1.0e9
#: logit of a forbidden token
FORBIDDEN = -1.0e30


@dataclasses.dataclass(frozen=True)
class Options:
    """Static settings of one decoding run (hashable: keys compiled functions)."""

    method: str  # 'greedy' | 'sample' | 'beam'
    max_new: int
    stop_ids: tuple = ()
    minlen: int = 1
    min_ends: int = 1
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    topk: int = 0
    topp: float = 0.0
    n: int = 1  # samples per input
    num_beams: int = 1
    length_penalty: float = 0.0
    early_stopping: bool = False
    pad_id: int = 0

    def __post_init__(self):
        if self.method not in ("greedy", "sample", "beam"):
            raise ValueError("method must be 'greedy', 'sample' or 'beam', got %r" % self.method)
        if self.max_new < 1:
            raise ValueError("max_new_tokens must be >= 1, got %d" % self.max_new)
        if self.minlen > self.max_new:
            raise ValueError("minlen=%d exceeds max_new_tokens (maxlen)=%d: no output can be "
                             "that long" % (self.minlen, self.max_new))
        if self.method == "beam" and self.num_beams < 1:
            raise ValueError("num_beams (topk) must be >= 1, got %d" % self.num_beams)
        # "not x > 0" also rejects nan; inf would turn every score into nan or 0
        if not 0 < self.temperature < math.inf:
            raise ValueError("temperature must be finite and > 0, got %r" % self.temperature)
        if not 0 < self.repetition_penalty < math.inf:
            raise ValueError("repetition_penalty must be finite and > 0, got %r"
                             % self.repetition_penalty)
        if self.topk < 0 or not 0.0 <= self.topp <= 1.0:
            raise ValueError("need topk >= 0 and 0 <= topp <= 1, got %r, %r"
                             % (self.topk, self.topp))

    @property
    def rows(self):
        """Rows decoded per input: beams, samples, or 1."""
        return {"beam": self.num_beams, "sample": self.n}.get(self.method, 1)


def _stop_mask(tokens, stop_ids):
    """Bool tensor of ``tokens``' shape: the token is a stop token."""
    if not stop_ids:
        return ops.zeros(ops.shape(tokens), "bool")
    # one comparison per stop id (a NumPy constant here would break
    # torch.compile's graph under torch.inference_mode)
    mask = ops.equal(tokens, int(stop_ids[0]))
    for stop in stop_ids[1:]:
        mask = ops.logical_or(mask, ops.equal(tokens, int(stop)))
    return mask


def _process_logits(logits, state, opt):
    """Repetition penalty, minimum length and temperature on ``(rows, vocab)``."""
    logits = ops.cast(logits, "float32")
    if opt.repetition_penalty != 1.0:
        p = opt.repetition_penalty
        penalized = ops.where(logits > 0, logits / p, logits * p)
        logits = ops.where(state["seen"], penalized, logits)
    if opt.minlen > 1 and opt.stop_ids:
        vocab = ops.shape(logits)[-1]
        columns = _stop_mask(ops.arange(vocab, dtype="int32"), opt.stop_ids)
        forbid = ops.logical_and(columns[None], state["t"] + 1 < opt.minlen)
        logits = ops.where(forbid, FORBIDDEN, logits)
    if opt.temperature != 1.0:
        logits = logits / opt.temperature
    return logits


def _uniform(shape, seed, counter):
    """Uniform ``[0, 1)`` noise drawn from the stateless seed ``(seed, counter)``."""
    generator = _seed_generator()
    pair = ops.cast(ops.stack([ops.cast(seed, "int32"), ops.cast(counter, "int32")]),
                    generator.state.dtype)
    with keras.StatelessScope(state_mapping=[(generator.state, pair)]):
        return keras.random.uniform(shape, minval=1e-20, maxval=1.0, seed=generator)


@functools.lru_cache(maxsize=None)
def _seed_generator():
    # one per process; its state is always supplied through a StatelessScope
    return keras.random.SeedGenerator(0, name="bert4keras_generation_seed")


def _sample(logits, opt, seed, counter):
    """Draw one token per row from ``logits`` restricted by ``topk``/``topp``."""
    vocab = logits.shape[-1]
    indices = None
    if opt.topk or opt.topp:
        k = min(opt.topk or vocab, vocab)
        logits, indices = ops.top_k(logits, k)  # sorted, best first
        if opt.topp:
            probs = ops.softmax(logits, axis=-1)
            before = ops.cumsum(probs, axis=-1) - probs  # mass of the better tokens
            logits = ops.where(before < opt.topp, logits, FORBIDDEN)
    noise = -ops.log(-ops.log(_uniform(ops.shape(logits), seed, counter)))
    choice = ops.argmax(logits + noise, axis=-1)
    if indices is not None:
        choice = ops.take_along_axis(indices, ops.expand_dims(choice, -1), axis=-1)[:, 0]
    return ops.cast(choice, "int32")


def _mark_seen(seen, tokens):
    return ops.logical_or(seen, ops.cast(ops.one_hot(tokens, seen.shape[-1]), "bool"))


class TokenSearch:
    """Greedy search and sampling: every row extends by one token per step.

    State (``N`` rows): ``t`` tokens generated so far, ``ids`` ``(N,
    max_new)``, ``token`` ``(N,)`` the last one, ``length``, ``ends`` (stop
    tokens seen), ``finished``, ``done``, ``seed``, and with a repetition
    penalty ``seen`` ``(N, vocab)``.
    """

    def __init__(self, opt):
        self.opt = opt

    def init_state(self, rows, seen=None, seed=0):
        opt = self.opt
        state = {
            "t": ops.convert_to_tensor(0, "int32"),
            "ids": ops.full((rows, opt.max_new), opt.pad_id, "int32"),
            "token": ops.zeros((rows,), "int32"),
            "length": ops.zeros((rows,), "int32"),
            "ends": ops.zeros((rows,), "int32"),
            "finished": ops.zeros((rows,), "bool"),
            "done": ops.convert_to_tensor(False),
            "seed": ops.convert_to_tensor(seed, "int32"),
        }
        if opt.repetition_penalty != 1.0:
            state["seen"] = ops.convert_to_tensor(seen)
        return state

    def update(self, state, logits):
        """``(state, logits (N, vocab))`` -> ``(state, None)`` (rows never move)."""
        opt, t = self.opt, state["t"]
        logits = _process_logits(logits, state, opt)
        if opt.method == "sample":
            token = _sample(logits, opt, state["seed"], t)
        else:
            token = ops.cast(ops.argmax(logits, axis=-1), "int32")
        was_finished = state["finished"]
        token = ops.where(was_finished, opt.pad_id, token)
        is_stop = ops.logical_and(_stop_mask(token, opt.stop_ids), ~was_finished)
        ends = state["ends"] + ops.cast(is_stop, "int32")
        finished = ops.logical_or(was_finished,
                                  ops.logical_and(is_stop, ends >= opt.min_ends))
        column = ops.equal(ops.arange(opt.max_new, dtype="int32")[None], t)
        new = dict(state)
        new.update(
            t=t + 1,
            ids=ops.where(column, token[:, None], state["ids"]),
            token=token,
            length=ops.where(was_finished, state["length"], t + 1),
            ends=ends,
            finished=finished,
            done=ops.logical_or(ops.all(finished), t + 1 >= opt.max_new),
        )
        if "seen" in state:
            new["seen"] = _mark_seen(state["seen"], token)
        return new, None

    def results(self, state, inputs):
        """``[[ids of sample j of input i] for j] for i``, trimmed after the stop."""
        ids = ops.convert_to_numpy(state["ids"])
        length = ops.convert_to_numpy(state["length"])
        rows = [ids[r, :length[r]] for r in range(len(ids))]
        n = self.opt.rows
        return [rows[i * n:(i + 1) * n] for i in range(inputs)], None


class BeamSearch:
    """Beam search with ``transformers``' ``generate(num_beams=k)`` rules
    (see the module docstring), rows ``batch * k``.

    State: ``ids``/``ends``/``token`` of the running beams ``(N, ...)``,
    their ``scores`` ``(batch, k)``; the finished hypotheses ``fin_ids``
    ``(batch, k, max_new)``, ``fin_scores``, ``fin_length``, ``fin_flag``
    (a real hypothesis, not a placeholder), ``improvable`` ``(batch,)``.
    """

    def __init__(self, opt):
        self.opt = opt
        self.k = opt.num_beams
        self.candidates = max(2, 1 + len(opt.stop_ids)) * self.k

    def init_state(self, rows, seen=None, seed=0):
        opt, k = self.opt, self.k
        batch = rows // k
        scores = np.full((batch, k), NEG, "float32")
        scores[:, 0] = 0.0  # only the first beam is live before the first step
        state = {
            "t": ops.convert_to_tensor(0, "int32"),
            "ids": ops.full((rows, opt.max_new), opt.pad_id, "int32"),
            "token": ops.zeros((rows,), "int32"),
            "ends": ops.zeros((rows,), "int32"),
            "scores": ops.convert_to_tensor(scores),
            "fin_ids": ops.full((batch, k, opt.max_new), opt.pad_id, "int32"),
            "fin_scores": ops.full((batch, k), NEG, "float32"),
            "fin_length": ops.zeros((batch, k), "int32"),
            "fin_flag": ops.zeros((batch, k), "bool"),
            "improvable": ops.ones((batch,), "bool"),
            "done": ops.convert_to_tensor(False),
            "seed": ops.convert_to_tensor(seed, "int32"),
        }
        if opt.repetition_penalty != 1.0:
            state["seen"] = ops.convert_to_tensor(seen)
        return state

    def update(self, state, logits):
        """``(state, logits (N, vocab))`` -> ``(state, parent (N,))``: row ``r``
        of the new state continues old row ``parent[r]`` (reorder caches so)."""
        opt, k, c = self.opt, self.k, self.candidates
        t = state["t"]
        vocab = logits.shape[-1]
        batch = state["scores"].shape[0]
        logp = ops.log_softmax(_process_logits(logits, state, opt), axis=-1)
        total = ops.reshape(logp, (batch, k, vocab)) + state["scores"][:, :, None]
        beam, token, top = _top_candidates(total, c)  # (batch, c) each
        rows = ops.reshape(beam + ops.arange(batch, dtype="int32")[:, None] * k, (-1,))
        token_flat = ops.reshape(token, (-1,))
        column = ops.equal(ops.arange(opt.max_new, dtype="int32")[None], t)
        cand_ids = ops.where(column, token_flat[:, None], ops.take(state["ids"], rows, axis=0))
        is_stop = _stop_mask(token, opt.stop_ids)
        cand_ends = ops.reshape(ops.take(state["ends"], rows, axis=0), (batch, c)) \
            + ops.cast(is_stop, "int32")
        hits = ops.logical_or(ops.logical_and(is_stop, cand_ends >= opt.min_ends),
                              t + 1 >= opt.max_new)

        # the best k candidates that do not end keep running
        running = top + ops.cast(hits, "float32") * NEG
        _, keep = ops.top_k(running, k)
        scores = ops.take_along_axis(running, keep, axis=1)
        pick = ops.reshape(ops.cast(keep, "int32") + ops.arange(batch, dtype="int32")[:, None] * c,
                           (-1,))
        parent = ops.take(rows, pick, axis=0)
        new_token = ops.take(token_flat, pick, axis=0)

        # the ones that end among the best k join the finished hypotheses
        top_k_mask = ops.arange(c)[None] < k
        just = ops.logical_and(hits, top_k_mask)
        length = ops.cast(t + 1, "float32")
        finished_scores = top / ops.power(length, opt.length_penalty)
        if opt.early_stopping:
            full = ops.all(state["fin_flag"], axis=1, keepdims=True)
            finished_scores = finished_scores + ops.cast(full, "float32") * NEG
        stale = ops.cast(~state["improvable"][:, None], "float32")  # no beam can improve
        finished_scores = finished_scores + stale * NEG
        finished_scores = finished_scores + ops.cast(~just, "float32") * NEG
        merged_scores = ops.concatenate([state["fin_scores"], finished_scores], axis=1)
        merged_ids = ops.concatenate(
            [state["fin_ids"], ops.reshape(cand_ids, (batch, c, opt.max_new))], axis=1)
        merged_flag = ops.concatenate([state["fin_flag"], just], axis=1)
        merged_length = ops.concatenate(
            [state["fin_length"], ops.full((batch, c), 1, "int32") * (t + 1)], axis=1)
        _, best = ops.top_k(merged_scores, k)
        fin_scores = ops.take_along_axis(merged_scores, best, axis=1)
        fin_flag = ops.take_along_axis(merged_flag, best, axis=1)
        fin_length = ops.take_along_axis(merged_length, best, axis=1)
        fin_ids = ops.take_along_axis(merged_ids, ops.expand_dims(best, -1), axis=1)

        # can a running beam still beat the worst finished hypothesis?
        best_running = scores[:, :1] / ops.power(length, opt.length_penalty)
        # top_k sorts: the last kept score is the smallest (ops.min would break
        # torch.compile's graph on PyTorch)
        worst = ops.where(fin_flag, fin_scores[:, -1:], NEG)
        improvable = ops.logical_and(state["improvable"], ops.any(best_running > worst, axis=1))
        still_open = ops.any(improvable)
        if opt.early_stopping:
            still_open = ops.logical_and(still_open, ~ops.all(fin_flag))
        still_open = ops.logical_and(still_open, ~ops.all(hits))

        new = dict(state)
        new.update(
            t=t + 1,
            ids=ops.take(cand_ids, pick, axis=0),
            token=new_token,
            ends=ops.take(ops.reshape(cand_ends, (-1,)), pick, axis=0),
            scores=scores,
            fin_ids=fin_ids,
            fin_scores=fin_scores,
            fin_length=fin_length,
            fin_flag=fin_flag,
            improvable=improvable,
            done=~still_open,
        )
        if "seen" in state:
            new["seen"] = _mark_seen(ops.take(state["seen"], parent, axis=0), new_token)
        return new, parent

    def results(self, state, inputs):
        """``[[best ids] for each input]`` and their scores ``(inputs,)``."""
        ids = ops.convert_to_numpy(state["fin_ids"])
        length = ops.convert_to_numpy(state["fin_length"])
        scores = ops.convert_to_numpy(state["fin_scores"])
        return [[ids[i, 0, :length[i, 0]]] for i in range(inputs)], scores[:, 0]


def _top_candidates(total, c):
    """The ``c`` best of ``total`` ``(batch, k, vocab)`` over each row's ``k *
    vocab`` (beam, token) pairs: ``(beam, token, score)``, each ``(batch,
    c)``, best first, ties to the lower beam, then the lower token.

    In two stages where ``c <= vocab``: each beam's best ``c``, then the best
    ``c`` of those ``k * c``. The same pairs in the same order as one top-k
    over ``k * vocab`` (every pair of the overall best ``c`` is among its
    beam's best ``c``; on TensorFlow and JAX, whose top-k keeps index order
    on ties, tied pairs come in the same order too), at a fraction of the
    cost of one top-k over a long row."""
    batch, k, vocab = total.shape
    if c > vocab:
        top, index = ops.top_k(ops.reshape(total, (batch, k * vocab)), c)
        index = ops.cast(index, "int32")
        return index // vocab, index % vocab, top
    per_beam, tokens = ops.top_k(ops.reshape(total, (batch * k, vocab)), c)
    top, index = ops.top_k(ops.reshape(per_beam, (batch, k * c)), c)
    index = ops.cast(index, "int32")
    token = ops.take_along_axis(ops.reshape(ops.cast(tokens, "int32"), (batch, k * c)), index,
                                axis=1)
    return index // c, token, top


def make_search(opt):
    return BeamSearch(opt) if opt.method == "beam" else TokenSearch(opt)
