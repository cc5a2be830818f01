"""The original toolkit's decoding door: :class:`AutoRegressiveDecoder`.

Subclass it, write ``predict(self, inputs, output_ids, states)`` returning the
next-token probabilities (or logits) of every row, decorate it with
``@AutoRegressiveDecoder.wraps(default_rtype='probas'|'logits',
use_states=...)``, and call :meth:`~AutoRegressiveDecoder.beam_search`,
:meth:`~AutoRegressiveDecoder.random_sample` or
:meth:`~AutoRegressiveDecoder.greedy_search`. ``predict`` usually reruns the
model over the whole sequence (no cache), as the original did. The search
rules are those of :mod:`bert4keras.generation.search`.
"""

import contextlib
import functools

import keras
import numpy as np
from keras import ops

from bert4keras.generation.search import Options, make_search

__all__ = ["AutoRegressiveDecoder"]


def _log_softmax_np(x):
    x = np.asarray(x, "float32")
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


class AutoRegressiveDecoder:
    """Base class of autoregressive decoders (the original bert4keras API).

    Args:
        start_id: first output token (e.g. an encoder-decoder's decoder start
            id) or None.
        end_id: the stop token, a list of stop tokens, or None (decode
            ``maxlen`` tokens).
        maxlen: most tokens generated (``max_new_tokens``; the start token is
            not counted), >= 1.
        minlen: fewest tokens in the output before a stop may end it (the
            stop token counted; 1 = no constraint), at most ``maxlen``.

    Raises:
        ValueError: ``maxlen < 1`` or ``minlen > maxlen``; at decoding time
            ``max_new_tokens < 1`` or ``< minlen``, or a ``temperature`` /
            ``repetition_penalty`` that is not a finite number > 0 (nan too).

    Subclasses implement ``predict`` decorated with :meth:`wraps`::

        class Continuation(AutoRegressiveDecoder):
            @AutoRegressiveDecoder.wraps(default_rtype='probas')
            def predict(self, inputs, output_ids, states):
                token_ids = np.concatenate([inputs[0], output_ids], 1)
                return self.last_token(model).predict(token_ids, verbose=0)

        decoder = Continuation(start_id=None, end_id=sep_id, maxlen=32)
        ids = decoder.beam_search([prompt_ids], topk=4)

    ``inputs`` arrives as a list of arrays with one row per live beam or
    sample (the caller's list, each item given a batch axis), ``output_ids``
    ``(rows, length)``; ``predict`` returns ``(rows, vocab)`` probabilities
    (``'probas'``) or logits (``'logits'``), plus new ``states`` with
    ``use_states=True``. Decoding keyword arguments of every search:
    ``max_new_tokens`` (overrides ``maxlen``), ``repetition_penalty``,
    ``streamer`` (called with the new token of every row, ``-1`` for rows
    already ended; greedy and sampling), ``progress`` (a tqdm bar).
    """

    def __init__(self, start_id, end_id, maxlen, minlen=1):
        self.start_id = start_id
        if end_id is None:
            self.stop_ids = ()
        elif isinstance(end_id, (list, tuple, set, np.ndarray)):
            self.stop_ids = tuple(int(i) for i in end_id)
        else:
            self.stop_ids = (int(end_id),)
        self.end_id = end_id
        self.maxlen = int(maxlen)
        self.minlen = int(minlen)
        if self.maxlen < 1:
            raise ValueError("maxlen must be >= 1, got %d" % self.maxlen)
        if self.minlen > self.maxlen:
            raise ValueError("minlen=%d exceeds maxlen=%d: no output can be that long"
                             % (self.minlen, self.maxlen))
        if start_id is None:
            self.first_output_ids = np.empty((1, 0), dtype="int32")
        else:
            self.first_output_ids = np.array([[start_id]], dtype="int32")
        self._last_token_models = {}

    @staticmethod
    def wraps(default_rtype="probas", use_states=False):
        """Decorate ``predict(self, inputs, output_ids, states)``.

        Args:
            default_rtype: what the wrapped ``predict`` returns: ``'probas'``
                (probabilities) or ``'logits'``.
            use_states: ``predict`` returns ``(scores, states)`` (states are
                passed back at the next step, e.g. a cache the user keeps);
                otherwise just ``scores``.

        The decorated method is called as ``predict(inputs, output_ids,
        states, temperature=1, rtype=default_rtype)`` and returns
        ``(probabilities, states)`` for ``rtype='probas'`` or
        ``(log-probabilities, states)`` for ``rtype='logits'`` (as the
        original toolkit, whose 'logits' were log-probabilities).
        """
        if default_rtype not in ("probas", "logits"):
            raise ValueError("default_rtype must be 'probas' or 'logits', got %r" % default_rtype)

        def decorator(predict):
            @functools.wraps(predict)
            def new_predict(self, inputs, output_ids, states, temperature=1, rtype=default_rtype):
                if rtype not in ("probas", "logits"):
                    raise ValueError("rtype must be 'probas' or 'logits', got %r" % rtype)
                prediction = predict(self, inputs, output_ids, states)
                scores, states = prediction if use_states else (prediction, None)
                scores = ops.convert_to_numpy(scores).astype("float32")
                if default_rtype == "probas":
                    scores = np.log(scores + 1e-12)
                logp = _log_softmax_np(scores / temperature)
                return (np.exp(logp) if rtype == "probas" else logp), states

            new_predict.wrapped_by_decoder = True
            return new_predict

        return decorator

    def last_token(self, model):
        """A model with ``model``'s inputs whose output is the last position
        of its (first) output: ``(batch, vocab)``. Built once per model."""
        key = id(model)
        if key not in self._last_token_models:
            outputs = model.outputs[0]
            self._last_token_models[key] = keras.Model(model.inputs, outputs[:, -1])
        return self._last_token_models[key]

    def predict(self, inputs, output_ids, states=None):
        raise NotImplementedError("Subclasses implement predict(inputs, output_ids, states), "
                                  "decorated with @AutoRegressiveDecoder.wraps(...)")

    # -- the searches ---------------------------------------------------------
    def _options(self, method, options, **settings):
        unknown = set(options) - {"max_new_tokens", "repetition_penalty", "streamer", "progress",
                                  "length_penalty", "early_stopping", "seed"}
        if unknown:
            raise TypeError("unknown decoding option(s): %s" % ", ".join(sorted(unknown)))
        max_new = options.get("max_new_tokens")
        max_new = self.maxlen if max_new is None else max_new  # 0 is an error, not "default"
        opt = Options(method=method, max_new=int(max_new), stop_ids=self.stop_ids,
                      minlen=self.minlen, repetition_penalty=float(
                          options.get("repetition_penalty", 1.0)),
                      length_penalty=float(options.get("length_penalty", 0.0)),
                      early_stopping=bool(options.get("early_stopping", False)),
                      pad_id=self.stop_ids[0] if self.stop_ids else 0, **settings)
        if (options.get("streamer") is not None) and method == "beam":
            raise ValueError("streaming needs greedy search or sampling (beams reorder)")
        return opt

    def beam_search(self, inputs, topk, states=None, temperature=1, min_ends=1, **options):
        """The best sequence of a beam of width ``topk`` (np.ndarray of ids,
        the start id first if any). Options: see the class docstring, plus
        ``length_penalty`` (0) and ``early_stopping`` (False)."""
        opt = self._options("beam", options, num_beams=int(topk), temperature=float(temperature),
                            min_ends=int(min_ends))
        results, _ = self._decode_one(inputs, opt, states, options)
        return results[0]

    def random_sample(self, inputs, n, topk=None, topp=None, states=None, temperature=1,
                      min_ends=1, **options):
        """``n`` sampled sequences (a list of np.ndarray). ``seed`` option:
        an int makes the draws reproducible (default: a random seed).

        ``topp`` of 1 or more keeps every token (no nucleus cut), as in
        bert4keras 0.11.5, whose scripts pass e.g. ``topp=5``; a negative
        ``topp`` raises ``ValueError``."""
        topp = float(topp or 0.0)
        if topp >= 1.0:
            topp = 0.0  # the whole distribution: no nucleus truncation
        opt = self._options("sample", options, n=int(n), topk=int(topk or 0),
                            topp=topp, temperature=float(temperature),
                            min_ends=int(min_ends))
        results, _ = self._decode_one(inputs, opt, states, options)
        return results

    def greedy_search(self, inputs, states=None, min_ends=1, **options):
        """The greedy continuation (np.ndarray of ids)."""
        opt = self._options("greedy", options, min_ends=int(min_ends))
        results, _ = self._decode_one(inputs, opt, states, options)
        return results[0]

    def _prefix(self, ids):
        if self.start_id is None:
            return ids
        return np.concatenate([[self.start_id], ids]).astype(ids.dtype)

    def _decode_one(self, inputs, opt, states, options):
        """Decode one input with the user's ``predict`` (no compiled step)."""
        if not getattr(self.predict, "wrapped_by_decoder", False):
            raise TypeError("%s.predict must be decorated with @AutoRegressiveDecoder.wraps(...)"
                            % type(self).__name__)
        search = make_search(opt)
        seed = _resolve_seed(options.get("seed"))
        rows = opt.rows
        inputs = [np.asarray(i)[None] for i in inputs]
        state = None
        with _progress(options.get("progress"), opt.max_new) as bar:
            for step in range(opt.max_new):
                if state is None:
                    output_ids = self.first_output_ids
                else:
                    generated = ops.convert_to_numpy(state["ids"])[:, :step]
                    output_ids = np.concatenate(
                        [np.repeat(self.first_output_ids, rows, 0), generated], 1)
                logp, states = self.predict(inputs, output_ids, states, 1, "logits")
                logp = np.asarray(logp, "float32")
                if state is None:
                    seen = np.zeros((rows, logp.shape[1]), bool)  # generated tokens only
                    if self.start_id is not None:
                        seen[:, self.start_id] = True
                    state = search.init_state(rows, seen, seed)
                    logp = np.repeat(logp, rows, 0)
                    inputs = [np.repeat(i, rows, 0) for i in inputs]
                state, parent = search.update(state, ops.convert_to_tensor(logp))
                if parent is not None:
                    parent = ops.convert_to_numpy(parent)
                    inputs = [i[parent] for i in inputs]
                _emit(options.get("streamer"), state, bar)
                if bool(ops.convert_to_numpy(state["done"])):
                    break
        results, _ = search.results(state, 1)
        out = [self._prefix(ids) for ids in results[0]]
        return out, states


def _resolve_seed(seed):
    if seed is None:
        return int(np.random.randint(0, 2 ** 31 - 1))
    return int(seed) % (2 ** 31 - 1)


@contextlib.contextmanager
def _progress(enabled, total):
    if not enabled:
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="tok", desc="decoding")
    try:
        yield bar
    finally:
        bar.close()


def _emit(streamer, state, bar):
    """Stream the new token of each row (-1 where the row had ended) and move
    the bar to the tokens decoded so far (``state['t']``)."""
    if bar is not None:
        bar.update(int(ops.convert_to_numpy(state["t"])) - bar.n)
    if streamer is None:
        return
    token = ops.convert_to_numpy(state["token"]).astype("int64")
    t = int(ops.convert_to_numpy(state["t"]))
    if "length" in state:  # rows that ended before this step show -1
        token = np.where(ops.convert_to_numpy(state["length"]) < t, -1, token)
    streamer(token)
