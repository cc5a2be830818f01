"""Autoregressive decoding: greedy search, beam search and sampling.

Two doors, one set of search rules:

* :class:`AutoRegressiveDecoder` -- the original toolkit's pattern. Subclass
  it, write ``predict(self, inputs, output_ids, states)`` returning the
  next-token probabilities (or logits) of every row, decorate it with
  ``@AutoRegressiveDecoder.wraps(default_rtype='probas'|'logits',
  use_states=...)``, and call :meth:`~AutoRegressiveDecoder.beam_search`,
  :meth:`~AutoRegressiveDecoder.random_sample` or
  :meth:`~AutoRegressiveDecoder.greedy_search`. ``predict`` usually reruns
  the model over the whole sequence (no cache), as the original did.
* :class:`CachedDecoder` -- built from a :class:`~bert4keras.models.Transformer`
  (``build_transformer_model(..., return_keras_model=False)``): GPT, GPT-2,
  GPT2-ML, a BERT-like model with ``application='lm'`` or ``'unilm'`` (UniLM
  seq2seq), or T5. It runs the model's *own* graph code (the same layers and
  weights) on real tensors through ``Transformer.call_hook``, with a
  key/value cache per self-attention layer preallocated to the final length
  (written with ``ops.slice_update`` at the step index, unused slots masked)
  and T5's cross-attention keys/values computed once from the encoder output.
  The prompt goes through one compiled function; the decoding loop -- one
  token through the model plus the search update, until every row has
  stopped -- is a second one (a ``while`` loop inside ``tf.function(
  jit_compile=True)`` on TensorFlow, ``jax.jit`` with donated buffers on
  JAX), so there is no host round trip per token and the caches are updated
  in place. Beam search never moves a cache: each row records which beam
  wrote each of its slots and attention reads them there. Streaming (a
  ``streamer``, :meth:`CachedDecoder.stream`, ``progress``) runs the loop one
  token per call. Many prompts decode at once (:meth:`CachedDecoder.generate`);
  they are left-padded internally, each row with its own position offsets, so
  a row decodes exactly as it would alone.

The search rules (scores, stop tokens, beams, sampling) live in
:mod:`bert4keras.search`.
"""

import contextlib
import functools

import keras
import numpy as np
from keras import ops

from bert4keras import backend as Bk
from bert4keras.layers import (
    AttentionMask,
    CausalMask,
    ContextMask,
    MultiHeadAttention,
    PositionEmbedding,
    RelativePositionEmbedding,
    RelativePositionEmbeddingT5,
    SinusoidalPositionEmbedding,
)
from bert4keras.search import Options, make_search

__all__ = ["AutoRegressiveDecoder", "CachedDecoder"]


# ---------------------------------------------------------------------------
# The original toolkit's door
# ---------------------------------------------------------------------------


def _log_softmax_np(x):
    x = np.asarray(x, "float32")
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


class AutoRegressiveDecoder:
    """Base class of autoregressive decoders (the original bert4keras API).

    Args:
        start_id: first output token (e.g. T5's decoder start 0) or None.
        end_id: the stop token, a list of stop tokens, or None (decode
            ``maxlen`` tokens).
        maxlen: most tokens generated (``max_new_tokens``; the start token is
            not counted).
        minlen: fewest tokens in the output before a stop may end it (the
            stop token counted; 1 = no constraint).

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
        max_new = options.get("max_new_tokens") or self.maxlen
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
        an int makes the draws reproducible (default: a random seed)."""
        opt = self._options("sample", options, n=int(n), topk=int(topk or 0),
                            topp=float(topp or 0.0), temperature=float(temperature),
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
    """Stream the new token of each row (-1 where the row had ended) and tick."""
    if bar is not None:
        bar.update(1)
    if streamer is None:
        return
    token = ops.convert_to_numpy(state["token"]).astype("int64")
    t = int(ops.convert_to_numpy(state["t"]))
    if "length" in state:  # rows that ended before this step show -1
        token = np.where(ops.convert_to_numpy(state["length"]) < t, -1, token)
    streamer(token)


# ---------------------------------------------------------------------------
# Running a Transformer's own graph code with key/value caches
# ---------------------------------------------------------------------------


def _is_softmax(activation):
    return activation is keras.activations.get("softmax")


class _Trace:
    """The ``Transformer.call_hook`` of one forward pass over ``q_len`` new
    positions (slots ``index .. index + q_len - 1`` of caches of ``cache_len``).

    Args:
        index: scalar int32, slot of the first new position.
        positions: ``(rows, q_len)`` absolute positions (slot minus the row's
            left padding), for absolute and rotary position encodings.
        bias: ``(rows, 1, q_len, cache_len)`` self-attention bias.
        caches: ``[(keys, values)]`` per self-attention call, in
            ``MultiHeadAttention.call_with_cache``'s layout (``(heads * rows,
            cache_len, size)``; beams side by side ``(heads * rows / k, k *
            cache_len, size)``), or None to start empty ones (a prefill).
        cross: T5's ``[(keys, values)]`` per cross-attention call, or None to
            project them from the context.
        context, context_bias: T5's encoder output (or a placeholder once
            ``cross`` is given) and its attention bias (None: computed).
        pick: scalar position whose output feeds the LM head (None: the last).
        beams: ``(ancestors, k)`` for beam search: self-attention reads slot
            ``s`` of row ``r`` from the group's beam ``ancestors[r, s]`` (see
            ``MultiHeadAttention.call_with_cache``), so caches never move.
    """

    def __init__(self, index, positions, bias, cache_len, caches=None, cross=None,
                 context=None, context_bias=None, pick=None, beams=None):
        self.index = ops.convert_to_tensor(index, "int32")
        self.positions = positions
        self.bias = bias
        self.cache_len = cache_len
        self.q_len = positions.shape[1]
        self.caches, self.cross = caches, cross
        self.context, self.context_bias = context, context_bias
        self.pick = pick
        self.beams = beams
        self.new_caches, self.new_cross = [], []

    def __call__(self, layer, inputs, arguments):
        if isinstance(layer, MultiHeadAttention):
            return self.attention(layer, inputs)
        if isinstance(layer, (CausalMask, AttentionMask)):
            return self.bias
        if isinstance(layer, ContextMask):
            if self.context_bias is None:
                self.context_bias = layer(inputs)
            return self.context_bias
        if isinstance(layer, PositionEmbedding):
            if layer.merge_mode != "add":
                raise NotImplementedError("cached decoding supports merge_mode='add' positions")
            table = ops.cast(layer.embeddings, inputs.dtype)
            return inputs + ops.take(table, self.positions, axis=0)
        if isinstance(layer, SinusoidalPositionEmbedding):
            table = Bk.sinusoidal_embeddings(self.positions, layer.output_dim)
            if layer.merge_mode == "zero":
                return table
            if layer.merge_mode != "add":
                raise NotImplementedError("cached decoding supports sinusoidal 'zero'/'add'")
            return inputs + ops.cast(table, inputs.dtype)
        if isinstance(layer, (RelativePositionEmbedding, RelativePositionEmbeddingT5)):
            # relative terms depend on slot differences only, which left padding keeps
            full = ops.zeros((1, self.cache_len))
            table = layer([full, full])  # (cache_len, cache_len, dim)
            rows = self.index + ops.arange(self.q_len, dtype="int32")
            return ops.take(table, rows, axis=0)
        if isinstance(layer, keras.layers.Dropout):
            return inputs
        if isinstance(layer, keras.layers.Activation) and _is_softmax(layer.activation):
            return inputs  # the LM head's softmax: decode from logits
        if isinstance(layer, keras.layers.Dense) and _is_softmax(layer.activation):
            logits = ops.matmul(inputs, ops.cast(layer.kernel, inputs.dtype))
            return logits + ops.cast(layer.bias, inputs.dtype) if layer.use_bias else logits
        return layer(inputs, **arguments)

    def attention(self, layer, inputs):
        if inputs[1] is inputs[0]:  # self-attention: write the new keys/values
            if self.caches is None:
                rows = ops.shape(inputs[0])[0]
                dtype = layer.compute_dtype
                cache = (ops.zeros((layer.heads * rows, self.cache_len, layer.key_size), dtype),
                         ops.zeros((layer.heads * rows, self.cache_len, layer.head_size), dtype))
            else:
                cache = self.caches[len(self.new_caches)]
            output, cache = layer.call_with_cache(inputs, cache, index=self.index,
                                                  beams=self.beams)
            self.new_caches.append(cache)
            return output
        if self.cross is None:  # cross-attention: project the context once
            cache = tuple(_cache_layout(x, layer.heads)
                          for x in layer.compute_cache(inputs[1], inputs[2]))
        else:
            cache = self.cross[len(self.new_cross)]
        self.new_cross.append(cache)
        return layer.call_with_cache(inputs, cache)[0]

    def select(self, x):
        """``(rows, q_len, ...) -> (rows, 1, ...)`` at ``pick`` (or the last)."""
        if self.pick is None:
            return x[:, -1:]
        return ops.take(x, ops.reshape(ops.cast(self.pick, "int32"), (1,)), axis=1)


_NOTHING = object()


@contextlib.contextmanager
def _hooked(owner, trace):
    """Route ``owner.apply`` through ``trace``; RoFormer/NEZHA keep a position
    tensor from their build in ``position_bias``, recomputed meanwhile."""
    saved = owner.__dict__.get("position_bias", _NOTHING)
    owner.call_hook = trace
    if saved is not _NOTHING:
        owner.position_bias = None
    try:
        yield trace
    finally:
        del owner.call_hook
        if saved is not _NOTHING:
            owner.position_bias = saved


def _yield_every(streamer, progress):
    """``_iterate``'s ``every``: each token when someone watches (a streaming
    callback or a progress bar), else once at the end (one compiled loop)."""
    return 1 if streamer is not None or progress else None


def _cache_layout(x, heads):
    """Keys or values ``(batch, len, heads, size)`` -> ``(heads * batch, len,
    size)``, the layout of ``MultiHeadAttention.call_with_cache``."""
    batch, length, _, size = x.shape
    return ops.reshape(ops.transpose(x, (2, 0, 1, 3)), (heads * batch, length, size))


def _expand_cache(x, batch, rows, beams):
    """A cache ``(heads * batch, len, size)`` of ``batch`` sequences for
    ``rows`` rows each: beams side by side ``(heads * batch, rows * len,
    size)`` (``beams=True``, see ``MultiHeadAttention.call_with_cache``) or
    each row its own copy ``(heads * batch * rows, len, size)``."""
    if rows == 1:
        return x
    if beams:
        return ops.tile(x, (1, rows, 1))
    heads = x.shape[0] // batch
    x = ops.repeat(ops.reshape(x, (heads, batch) + tuple(x.shape[1:])), rows, axis=1)
    return ops.reshape(x, (heads * batch * rows,) + tuple(x.shape[2:]))


def _take_rows(x, rows):
    """``x[rows]`` along axis 0 (indices known in range: JAX's default
    out-of-range handling makes this gather several times slower)."""
    if keras.backend.backend() == "jax":
        import jax.numpy as jnp

        return jnp.take(x, rows, axis=0, mode="clip")
    return ops.take(x, rows, axis=0)


def _positions(slots, pad):
    """``(rows, q_len)`` positions of ``slots`` in rows left-padded by ``pad``."""
    return ops.maximum(slots[None, :] - pad[:, None], 0)


def _self_bias(visible, slots, prefix_end):
    """``(rows, 1, q_len, cache_len)`` from the visible keys ``(rows,
    cache_len)``: a query sees them up to itself, and all the prompt's below
    ``prefix_end`` (UniLM: the source attends both ways); unwritten slots are
    not visible."""
    k = ops.arange(visible.shape[1], dtype="int32")[None, None, :]
    keep = ops.logical_and(visible[:, None, :],
                           ops.logical_or(k <= slots[None, :, None], k < prefix_end))
    return Bk.visibility_to_bias(ops.cast(keep, "float32"))[:, None]


def _compile(fn, variables, jit, donate=False):
    """One compiled function: XLA on TensorFlow, ``jax.jit`` (weights passed
    as arguments, the state buffers donated) on JAX, eager elsewhere."""
    backend = keras.backend.backend()
    if backend == "jax" and jit:
        import jax

        def pure(values, *args):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return fn(*args)

        jitted = jax.jit(pure, donate_argnums=(1,) if donate else ())
        return lambda *args: jitted([v.value for v in variables], *args)
    if backend == "tensorflow":
        import tensorflow as tf

        compiled = tf.function(fn, jit_compile=bool(jit), autograph=False)
        # each compiled function serves one input shape; many are made on purpose
        compiled._omit_frequent_tracing_warning = True
        return compiled
    return fn


def _round_up(n, multiple):
    return -(-n // multiple) * multiple


class CachedDecoder(AutoRegressiveDecoder):
    """Cached, compiled, batched decoding of a :class:`~bert4keras.models.Transformer`.

    Args:
        transformer: ``build_transformer_model(..., return_keras_model=False)``
            of GPT, GPT-2, GPT2-ML, a BERT-like family built with
            ``application='lm'`` or ``'unilm'`` (with its LM/MLM head), or T5
            (``t5``, ``t5.1.1``, ``mt5.1.1``; the encoder runs once).
        start_id: token that opens the output (T5: 0, the default there);
            for decoder-only models it is appended to every prompt.
        end_id, maxlen, minlen: as :class:`AutoRegressiveDecoder`.
        use_cache: False reruns the model over the whole sequence every step
            (the sequence padded up to a multiple of ``bucket``), for
            comparison.
        jit_compile: compile the steps (XLA / ``jax.jit``).
        bucket: prompts are padded to a multiple of this length, so that a
            few compiled shapes serve all prompts.
        segment_id: segment of generated tokens (default 1 for UniLM, where
            the prompt is segment 0, else 0).

    Inputs: for decoder-only models a prompt is its token ids (UniLM: the
    source, ``[CLS] ... [SEP]``, all segment 0); for T5 the encoder's ids.
    The single-input methods of :class:`AutoRegressiveDecoder`
    (``beam_search``, ``random_sample``, ``greedy_search``) take ``[ids]``
    (or ``[ids, segment_ids]``, segments ignored) and :meth:`generate` /
    :meth:`stream` take many prompts at once.
    """

    def __init__(self, transformer, start_id=None, end_id=None, maxlen=64, minlen=1,
                 use_cache=True, jit_compile=True, bucket=16, segment_id=None):
        from bert4keras.models.base import Transformer
        from bert4keras.models.t5 import T5

        if not isinstance(transformer, Transformer):
            raise TypeError("CachedDecoder needs the Transformer object: build it with "
                            "build_transformer_model(..., return_keras_model=False)")
        if transformer.model is None:
            raise ValueError("build the Transformer first (transformer.build())")
        self.seq2seq = isinstance(transformer, T5)
        if self.seq2seq:
            start_id = 0 if start_id is None else start_id
            self._owner = transformer._decoder
        else:
            if transformer.application not in ("lm", "unilm"):
                raise ValueError("A bidirectional encoder (application=%r) cannot generate: build "
                                 "it with application='lm' or 'unilm'" % transformer.application)
            self._owner = transformer
        super().__init__(start_id, end_id, maxlen, minlen)
        self.transformer = transformer
        self.vocab_size = transformer.vocab_size
        self.use_cache = bool(use_cache)
        self.jit_compile = bool(jit_compile)
        self.bucket = max(1, int(bucket))
        self.unilm = transformer.application == "unilm"
        self.segment_id = (1 if self.unilm else 0) if segment_id is None else int(segment_id)
        # BERT-like masks (AttentionMask) hide id 0 ([PAD]) keys, GPT's and T5's do not
        self.hides_id_zero = any(isinstance(transformer.layers.get(name), AttentionMask) for name
                                 in ("Attention-LM-Mask", "Attention-UniLM-Mask"))
        position = transformer.layers.get("Embedding-Position")
        self.max_position = position.input_dim if isinstance(position, PositionEmbedding) else None
        self._variables = list(transformer.model.variables)
        self._functions = {}

    # -- public API -------------------------------------------------------------
    def generate(self, inputs, method="greedy", max_new_tokens=None, mask=None, num_beams=4,
                 n=1, topk=None, topp=None, temperature=1.0, repetition_penalty=1.0, min_ends=1,
                 length_penalty=0.0, early_stopping=False, seed=None, streamer=None,
                 progress=False, return_scores=False):
        """Decode many prompts at once.

        Args:
            inputs: a list of token-id sequences of any lengths, or a 2-D
                array (then ``mask`` marks its real tokens, so it may be
                padded on the left or the right).
            method: ``'greedy'``, ``'beam'`` (``num_beams``,
                ``length_penalty``, ``early_stopping``) or ``'sample'`` (``n``
                draws per prompt, ``topk``, ``topp``, ``seed``).
            max_new_tokens: default ``maxlen``.
            temperature, repetition_penalty, min_ends: see the module docstring.
            streamer: called after every step with the new token of each row
                ``(rows,)`` (``-1`` for rows already ended); greedy/sampling.
            progress: show a tqdm bar.
            return_scores: beam search: also return the best hypotheses' scores.

        Returns:
            One entry per prompt: an int32 array of the generated ids (the
            start id first if any, the stop token last if reached); for
            sampling a list of ``n`` such arrays.
        """
        opt, seed = self._generate_options(method, max_new_tokens, num_beams, n, topk, topp,
                                           temperature, repetition_penalty, min_ends,
                                           length_penalty, early_stopping, seed)
        if streamer is not None and method == "beam":
            raise ValueError("streaming needs greedy search or sampling (beams reorder)")
        prompts = self._prompts(inputs, mask)
        state = None
        with _progress(progress, opt.max_new) as bar:
            for state in self._iterate(prompts, opt, seed, _yield_every(streamer, progress)):
                _emit(streamer, state, bar)
        results, scores = make_search(opt).results(state, len(prompts))
        results = [[self._prefix(ids) for ids in rows] for rows in results]
        if method != "sample":
            results = [rows[0] for rows in results]
        return (results, scores) if return_scores else results

    def warm_up(self, inputs, method="greedy", max_new_tokens=None, mask=None, **options):
        """Compile every function :meth:`generate` would run on these
        arguments (same batch size, padded prompt length, method and options),
        running each once, without decoding the whole output: a later
        ``generate`` call of that shape starts at full speed."""
        opt, seed = self._generate_options(method, max_new_tokens, **options)
        batch, static = self._setup(self._prompts(inputs, mask), opt, seed)
        state = self._compiled("start", static)(batch)
        if self.use_cache:
            if opt.max_new > 1:  # one token through the decoding loop
                state = self._compiled("run", static)(state, ops.convert_to_tensor(2, "int32"))
        else:
            for length in sorted({self._rerun_length(static, t) for t in range(1, opt.max_new)}):
                state = self._compiled(("rerun", length), static)(state)
        ops.convert_to_numpy(state["t"])

    def stream(self, inputs, method="greedy", max_new_tokens=None, mask=None, **options):
        """Like :meth:`generate` (greedy or sampling) but yields, after each
        step, the new token of every row (``-1`` where a row has ended)."""
        if method == "beam":
            raise ValueError("streaming needs greedy search or sampling (beams reorder)")
        opt, seed = self._generate_options(method, max_new_tokens, **options)
        collected = []
        for state in self._iterate(self._prompts(inputs, mask), opt, seed):
            _emit(collected.append, state, None)
            yield collected.pop()

    def _generate_options(self, method, max_new_tokens, num_beams=4, n=1, topk=None, topp=None,
                          temperature=1.0, repetition_penalty=1.0, min_ends=1,
                          length_penalty=0.0, early_stopping=False, seed=None):
        sample, beam = method == "sample", method == "beam"
        opt = Options(method=method, max_new=int(max_new_tokens or self.maxlen),
                      stop_ids=self.stop_ids, minlen=self.minlen, min_ends=int(min_ends),
                      repetition_penalty=float(repetition_penalty),
                      temperature=float(temperature), topk=int(topk or 0) if sample else 0,
                      topp=float(topp or 0.0) if sample else 0.0, n=int(n) if sample else 1,
                      num_beams=int(num_beams) if beam else 1,
                      length_penalty=float(length_penalty) if beam else 0.0,
                      early_stopping=bool(early_stopping) and beam,
                      pad_id=self.stop_ids[0] if self.stop_ids else 0)
        return opt, _resolve_seed(seed)

    def _decode_one(self, inputs, opt, states, options):
        if len(inputs) and np.ndim(inputs[0]) == 1:
            inputs = inputs[0]  # [token_ids(, segment_ids)]
        results = None
        with _progress(options.get("progress"), opt.max_new) as bar:
            every = _yield_every(options.get("streamer"), options.get("progress"))
            for state in self._iterate([list(np.asarray(inputs))], opt,
                                       _resolve_seed(options.get("seed")), every):
                _emit(options.get("streamer"), state, bar)
                results = state
        rows, _ = make_search(opt).results(results, 1)
        return [self._prefix(ids) for ids in rows[0]], states

    # -- batches ----------------------------------------------------------------
    def _prompts(self, inputs, mask):
        if mask is not None:
            inputs, mask = np.asarray(inputs), np.asarray(mask).astype(bool)
            if inputs.shape != mask.shape or inputs.ndim != 2:
                raise ValueError("inputs and mask must be 2-D arrays of one shape, got %s and %s"
                                 % (inputs.shape, mask.shape))
            return [list(row[keep]) for row, keep in zip(inputs, mask)]
        if isinstance(inputs, np.ndarray) and inputs.ndim == 1:
            raise ValueError("generate() takes a batch of prompts; wrap one prompt in a list")
        return [list(np.asarray(p).reshape(-1)) for p in inputs]

    def _prepare(self, prompts, opt):
        """Numpy inputs of the start function and the padded prompt length."""
        if not prompts:
            raise ValueError("no prompts")
        longest = max(len(p) for p in prompts)
        batch = {"seed": np.asarray(0, "int32")}
        if self.seq2seq:
            length = _round_up(max(longest, 1), self.bucket)
            enc = np.zeros((len(prompts), length), "int32")
            for row, p in zip(enc, prompts):
                row[:len(p)] = p
            batch.update(enc=enc, tokens=np.full((len(prompts), 1), self.start_id, "int32"),
                         pad=np.zeros((len(prompts),), "int32"))
            decoder_prompts = [[self.start_id]] * len(prompts)
        else:
            if min(len(p) for p in prompts) == 0 and self.start_id is None:
                raise ValueError("an empty prompt needs a start_id")
            decoder_prompts = [list(p) + ([] if self.start_id is None else [self.start_id])
                               for p in prompts]
            real = max(len(p) for p in decoder_prompts)
            if self.max_position is not None and real + opt.max_new - 1 > self.max_position:
                raise ValueError(
                    "prompt of %d tokens + max_new_tokens=%d exceeds max_position=%d"
                    % (real, opt.max_new, self.max_position))
            length = _round_up(real, self.bucket)
            tokens = np.zeros((len(prompts), length), "int32")
            segments = np.zeros((len(prompts), length), "int32")
            pad = np.zeros((len(prompts),), "int32")
            for i, p in enumerate(decoder_prompts):
                pad[i] = length - len(p)
                tokens[i, pad[i]:] = p
                if self.start_id is not None:
                    segments[i, -1] = self.segment_id
            batch.update(tokens=tokens, segments=segments, pad=pad)
        if opt.repetition_penalty != 1.0:
            seen = np.zeros((len(prompts), self.vocab_size), bool)
            for row, p in zip(seen, decoder_prompts):
                row[np.asarray(p, "int64")] = True
            batch["seen"] = seen
        return batch, batch["tokens"].shape[1]

    def _setup(self, prompts, opt, seed):
        """The start function's tensors and the static key of the decoding
        shape ``(prompts, opt, prompt_len, cache_len, prefix_end)``."""
        batch, prompt_len = self._prepare(prompts, opt)
        batch["seed"] = np.asarray(seed, "int32")
        prefix_end = prompt_len - (self.start_id is not None) if self.unilm else 0
        static = (len(prompts), opt, prompt_len, prompt_len + opt.max_new, prefix_end)
        return {k: ops.convert_to_tensor(v) for k, v in batch.items()}, static

    def _rerun_length(self, static, t):
        """Slots the uncached step ``t`` runs over (bucketed)."""
        _, _, prompt_len, cache_len, _ = static
        return min(_round_up(prompt_len + t, self.bucket), cache_len)

    def _compiled(self, name, static):
        """The compiled ``'start'``, ``'run'`` or ``('rerun', length)``
        function of one decoding shape, traced once."""
        key = (name,) + static
        if key not in self._functions:
            args = static[1:]
            if name == "start":
                fn = self._start_fn(*args)
            elif name == "run":
                fn = self._run_fn(*args)
            else:
                fn = self._rerun_fn(*args, name[1])
            self._functions[key] = _compile(fn, self._variables, self.jit_compile,
                                            donate=name != "start")
        return self._functions[key]

    def _iterate(self, prompts, opt, seed, every=1):
        """Yield the decoding state after the first token, then after every
        ``every`` tokens (None: once, at the end). With the cache, the tokens
        between two yields are decoded by one compiled loop: no host round
        trip per token, and the caches are updated in place."""
        batch, static = self._setup(prompts, opt, seed)
        state = self._compiled("start", static)(batch)
        yield state
        t = 1
        while t < opt.max_new:
            if bool(ops.convert_to_numpy(state["done"])):
                return
            if self.use_cache:
                stop = opt.max_new if every is None else min(t + every, opt.max_new)
                state = self._compiled("run", static)(state, ops.convert_to_tensor(stop, "int32"))
                t = stop
            else:
                state = self._compiled(("rerun", self._rerun_length(static, t)), static)(state)
                t += 1
            yield state

    # -- the compiled functions ---------------------------------------------------
    def _visible(self, tokens, pad):
        """Keys ``(rows, len)`` a model attends to: not left padding (nor id 0
        where the model's own mask hides it)."""
        slots = ops.arange(ops.shape(tokens)[1], dtype="int32")[None]
        visible = slots >= pad[:, None]
        if self.hides_id_zero:
            visible = ops.logical_and(visible, ops.not_equal(tokens, 0))
        return visible

    def _forward(self, tokens, segments, trace):
        """Logits ``(rows, vocab)`` at ``trace.select``'s position."""
        transformer = self.transformer
        with _hooked(self._owner, trace):
            if self.seq2seq:
                y = trace.select(self._owner.decode(trace.context, tokens))
            else:
                inputs = [tokens] + ([segments] if transformer.segment_vocab_size > 0 else [])
                x = transformer.apply_embeddings(inputs)
                for index in range(transformer.num_hidden_layers):
                    x = transformer.apply_main_layers(x, index, trace.bias)
                y = transformer.apply_final_layers(trace.select(x))
                if isinstance(y, (list, tuple)):
                    y = y[-1]
        if y.shape[-1] != self.vocab_size:
            raise ValueError("the model has no LM head (output width %s, vocabulary %d): build "
                             "it with with_lm/with_mlm" % (y.shape[-1], self.vocab_size))
        return ops.cast(y[:, 0], "float32")

    def _start_fn(self, opt, prompt_len, cache_len, prefix_end):
        search = make_search(opt)
        rows = opt.rows

        def expand(x, axis=0):
            return x if rows == 1 or x is None else ops.repeat(x, rows, axis=axis)

        def expand_cache(caches, beams, batch):
            return [(_expand_cache(k, batch, rows, beams), _expand_cache(v, batch, rows, beams))
                    for k, v in caches]

        def start(batch):
            pad = batch["pad"]
            slots = ops.arange(prompt_len, dtype="int32")
            visible = ops.concatenate(
                [self._visible(batch["tokens"], pad),
                 ops.zeros((ops.shape(pad)[0], cache_len - prompt_len), "bool")], axis=1)
            trace = _Trace(0, _positions(slots, pad), _self_bias(visible, slots, prefix_end),
                           cache_len)
            if self.seq2seq:
                trace.context = self.transformer.encoder(batch["enc"])
            logits = self._forward(batch["tokens"], batch["segments"] if "segments" in batch
                                   else None, trace)
            state = search.init_state(ops.shape(pad)[0] * rows, expand(batch.get("seen")),
                                      batch["seed"])
            # all rows of one input are still alike: no reordering needed yet
            state, _ = search.update(state, expand(logits))
            state["pad"] = expand(pad)
            if self.use_cache:
                state["visible"] = expand(visible)
                state["caches"] = expand_cache(trace.new_caches, opt.method == "beam",
                                               ops.shape(pad)[0])
                if opt.method == "beam":  # every slot so far: the row's own copy
                    own = ops.arange(ops.shape(state["visible"])[0], dtype="int32") % rows
                    state["ancestors"] = ops.repeat(own[:, None], cache_len, axis=1)
                if self.seq2seq:
                    state["cross"] = expand_cache(trace.new_cross, False, ops.shape(pad)[0])
                    state["context_bias"] = expand(trace.context_bias)
            else:
                state["prompt"] = expand(batch["tokens"])
                if "segments" in batch:
                    state["prompt_segments"] = expand(batch["segments"])
                if self.seq2seq:
                    state["context"] = expand(trace.context)
            return state

        return start

    def _step_fn(self, opt, prompt_len, cache_len, prefix_end):
        search = make_search(opt)

        def step(state):
            index = prompt_len + state["t"] - 1  # slot of the last token chosen
            slots = ops.reshape(index, (1,))
            tokens = state["token"][:, None]
            written = ops.equal(ops.arange(cache_len, dtype="int32")[None], index)
            visible = ops.logical_or(state["visible"], written)
            if self.hides_id_zero:
                visible = ops.logical_and(visible, ops.logical_not(
                    ops.logical_and(written, ops.equal(tokens, 0))))
            beams = None
            if "ancestors" in state:  # the new slot belongs to the row writing it
                own = ops.arange(ops.shape(tokens)[0], dtype="int32") % opt.num_beams
                ancestors = ops.where(written, own[:, None], state["ancestors"])
                beams = (ancestors, opt.num_beams)
            trace = _Trace(index, _positions(slots, state["pad"]),
                           _self_bias(visible, slots, prefix_end), cache_len,
                           caches=state["caches"], cross=state.get("cross"),
                           context_bias=state.get("context_bias"), beams=beams)
            if self.seq2seq:  # cross-attention reads its cache; the context is not used
                trace.context = ops.zeros((ops.shape(tokens)[0], 1, self.transformer.hidden_size))
            logits = self._forward(tokens, ops.full_like(tokens, self.segment_id), trace)
            new, parent = search.update(state, logits)
            if parent is not None:  # beams move, their caches do not: only the small maps
                visible = _take_rows(visible, parent)
                new["ancestors"] = _take_rows(beams[0], parent)
            new["caches"], new["visible"] = trace.new_caches, visible
            return new

        return step

    def _run_fn(self, opt, prompt_len, cache_len, prefix_end):
        """Cached steps in one compiled loop, until ``t`` reaches ``stop``
        (a scalar int32 argument) or the search is done."""
        step = self._step_fn(opt, prompt_len, cache_len, prefix_end)

        def run(state, stop):
            def running(state):
                return ops.logical_and(ops.logical_not(state["done"]), state["t"] < stop)

            return ops.while_loop(running, step, state)

        return run

    def _rerun_fn(self, opt, prompt_len, cache_len, prefix_end, length):
        """Without cache: the whole sequence (``length`` slots) every step."""
        search = make_search(opt)

        def step(state):
            ids = state["ids"]
            tokens = ops.concatenate([state["prompt"], ids], axis=1)[:, :length]
            segments = None
            if "prompt_segments" in state:
                segments = ops.concatenate(
                    [state["prompt_segments"], ops.full_like(ids, self.segment_id)],
                    axis=1)[:, :length]
            pad = state["pad"]
            slots = ops.arange(length, dtype="int32")
            trace = _Trace(0, _positions(slots, pad),
                           _self_bias(self._visible(tokens, pad), slots, prefix_end), length,
                           context=state.get("context"), pick=prompt_len + state["t"] - 1)
            logits = self._forward(tokens, segments, trace)
            new, _ = search.update(state, logits)  # rows carry their own ids: no caches
            return new

        return step
