"""Cached, compiled, batched decoding: :class:`CachedDecoder`.

It runs a generating :class:`~bert4keras.models.Transformer`'s *own* layers
(``Transformer.apply_decoder``) through a
:class:`~bert4keras.generation.step.DecodingStep`, whose layers keep
preallocated key/value caches. The prompt goes through one compiled function
and the decoding loop (one token plus the search update, until every row
stops) through a second: a ``while`` loop under XLA on TensorFlow, ``jax.jit``
with donated buffers on JAX, eager steps or steps compiled by
``torch.compile`` on PyTorch (:mod:`bert4keras.generation.compiled`). Long
outputs may decode in segments whose caches grow (``cache_segments``); beam
search never moves a cache (rows record which beam wrote each slot); many
prompts decode at once, left-padded, each row as it would alone.
"""

import numpy as np
from keras import ops

from bert4keras.generation.decoder import (
    AutoRegressiveDecoder,
    _emit,
    _progress,
    _resolve_seed,
)
from bert4keras.generation.compiled import compile_step, compile_torch_loop, jit_mode, take_rows
from bert4keras.generation.search import Options, make_search
from bert4keras.generation import segments as growth
from bert4keras.generation.step import DecodingStep, positions, reads_masks
from bert4keras.models.validation import check_array

__all__ = ["CachedDecoder"]


def _yield_every(streamer, progress):
    """``_iterate``'s ``every``: 1 for a streaming callback, 8 for a progress
    bar (on TensorFlow each call copies the caches), else None (one loop)."""
    return 1 if streamer is not None else (8 if progress else None)


def _round_up(n, multiple):
    return -(-n // multiple) * multiple


class CachedDecoder(AutoRegressiveDecoder):
    """Cached, compiled, batched decoding of a :class:`~bert4keras.models.Transformer`.

    Args:
        transformer: ``build_transformer_model(..., return_keras_model=False)``
            of a model that generates: causal or UniLM (``application='lm'``
            or ``'unilm'``, with its LM head), or an encoder-decoder
            (``transformer.is_encoder_decoder``; the encoder runs once).
        start_id: token that opens the output (default: the model's
            ``decoder_start_id``); for decoder-only models it is appended to
            every prompt.
        end_id, maxlen, minlen: as :class:`AutoRegressiveDecoder`.
        use_cache: False reruns the model over the whole sequence every step
            (the sequence padded up to a multiple of ``bucket``), for
            comparison.
        jit_compile: ``'auto'`` (default): the steps compiled by XLA on
            TensorFlow and ``jax.jit`` on JAX, eager on PyTorch (as Keras'
            ``'auto'``). True: on PyTorch too, each cached step compiled by
            ``torch.compile``
            (:func:`~bert4keras.generation.compiled.compile_torch_loop`;
            benchmarks/HISTORY.md: "Compiled PyTorch decoding"): faster steps, for tens of
            seconds of compilation per decoding shape and cache segment
            (:meth:`warm_up` makes them). False: eager everywhere.
        bucket: prompts are padded to a multiple of this length, so that a
            few compiled shapes serve all prompts.
        segment_id: segment of generated tokens (default 1 for UniLM, where
            the prompt is segment 0, else 0).
        cache_segments: with the cache, decode in this many segments of the
            output, each a compiled loop whose self-attention caches end
            where the segment does, grown in between, so that early steps
            read fewer cache slots (:mod:`bert4keras.generation.segments`;
            :meth:`warm_up` compiles every segment). None (default): one per
            64 new tokens, at most 4, where the full-length caches would hold
            a quarter of the weight bytes or more
            (:func:`~bert4keras.generation.segments.cache_lengths`), else 1;
            always 1 for eager PyTorch steps (they read the written slots
            only). 1: one cache of the final length from the start.
        packed_weights: PyTorch on a CPU only (ignored elsewhere): keep a
            oneDNN-blocked copy of every ``Dense`` kernel of 2**17 weights or
            more for as long as the decoder lives, made on first use and
            again after the weights change in place (training between two
            ``generate`` calls); the steps multiply by it
            (:func:`bert4keras.layers.direct.packed_weights`). Faster few-row
            products for one more copy of those kernels (+340 MB for 12
            layers of hidden size 768); benchmarks/HISTORY.md: "Packed weights".

    Inputs: for decoder-only models a prompt is its token ids (UniLM: the
    whole source, all segment 0); for an encoder-decoder the encoder's ids.
    The single-input methods of :class:`AutoRegressiveDecoder`
    (``beam_search``, ``random_sample``, ``greedy_search``) take ``[ids]``
    (or ``[ids, segment_ids]``, segments ignored) and :meth:`generate` /
    :meth:`stream` take many prompts at once.

    Any model decodes here whose forward pass is ``Transformer.apply_decoder``
    and whose layers that differ in a cached step have a ``call_cached``
    method (:class:`~bert4keras.generation.step.DecodingStep`): nothing here
    depends on the family.

    Raises:
        TypeError: ``transformer`` is not a :class:`~bert4keras.models.Transformer`.
        ValueError: it is not built, or is a bidirectional encoder;
            ``jit_compile`` is not ``'auto'``, True or False; at
            decoding time, a prompt plus ``max_new_tokens`` longer than a
            position table of the model (a layer's ``max_positions``).
        InputRangeError: (a ValueError) at decoding time, a prompt id or the
            ``start_id`` outside ``[0, vocab_size)``
            (:mod:`bert4keras.models.validation`).
    """

    def __init__(self, transformer, start_id=None, end_id=None, maxlen=64, minlen=1,
                 use_cache=True, jit_compile="auto", bucket=16, segment_id=None,
                 packed_weights=False, cache_segments=None):
        from bert4keras.models.base import Transformer

        if not isinstance(transformer, Transformer):
            raise TypeError("CachedDecoder needs the Transformer object: build it with "
                            "build_transformer_model(..., return_keras_model=False)")
        if transformer.model is None:
            raise ValueError("build the Transformer first (transformer.build())")
        self.seq2seq = bool(transformer.is_encoder_decoder)
        if not self.seq2seq and transformer.application not in ("lm", "unilm"):
            raise ValueError("A bidirectional encoder (application=%r) cannot generate: build "
                             "it with application='lm' or 'unilm'" % transformer.application)
        if start_id is None:
            start_id = transformer.decoder_start_id
        super().__init__(start_id, end_id, maxlen, minlen)
        self.transformer = transformer
        self.vocab_size = transformer.vocab_size
        self.use_cache = bool(use_cache)
        self.jit_compile, self._torch_compile = jit_mode(jit_compile)
        self.bucket = max(1, int(bucket))
        if cache_segments is not None and int(cache_segments) < 1:
            raise ValueError("cache_segments must be a positive int or None, got %r"
                             % (cache_segments,))
        self.cache_segments = None if cache_segments is None else int(cache_segments)
        self.prefix_lm = transformer.application == "unilm"  # the prompt attends both ways
        self.segment_id = (1 if self.prefix_lm else 0) if segment_id is None else int(segment_id)
        self.uses_segments = not self.seq2seq and transformer.segment_vocab_size > 0
        if self.uses_segments:
            check_array(np.asarray([[self.segment_id]]), "segment_id",
                        transformer.segment_vocab_size, "segment_vocab_size")
        # the fewest positions a layer of the model can encode (absolute tables)
        limits = [getattr(layer, "max_positions", None) for layer in transformer.layers.values()]
        limits = [int(n) for n in limits if isinstance(n, (int, np.integer))]
        self.max_position = min(limits) if limits else None
        # no layer of a pass reads a Keras mask: the steps call the layers directly
        self._direct = not reads_masks(transformer.layers.values())
        self._variables = list(transformer.model.variables)
        self._weight_bytes = growth.weight_bytes(self._variables)
        self._functions = {}
        self._slot_caches = None  # DecodingStep.slot_caches of the model's first pass
        self._constants = {}  # DecodingStep.constant's store, emptied after each run
        self._packed = {} if packed_weights else None  # the blocked kernels (torch)
        self._pass = dict(direct=self._direct, constants=self._constants)  # every DecodingStep's

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
            progress: show a tqdm bar (it moves every 8 tokens).
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
        lengths = self._cache_lengths(static)
        state = self._compiled("start", growth.with_cache_len(static, lengths[0]))(batch)
        if self.use_cache:  # one token through the decoding loop of each segment
            for i, length in enumerate(lengths[:opt.max_new - 1]):
                if i:
                    growth.grow(state, length, opt, self._slot_caches)
                run = self._compiled("run", growth.with_cache_len(static, length))
                state = run(state, ops.convert_to_tensor(i + 2, "int32"))
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
        max_new = self.maxlen if max_new_tokens is None else max_new_tokens  # 0 raises
        opt = Options(method=method, max_new=int(max_new),
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
        # ids out of range would be clamped by the compiled gather (silent garbage)
        for i, p in enumerate(prompts):
            check_array(np.asarray(p)[None], "prompt %d" % i, self.vocab_size, "vocab_size")
        if self.start_id is not None:
            check_array(np.asarray([[self.start_id]]), "start_id", self.vocab_size, "vocab_size")
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
        shape ``(prompts, opt, prompt_len, cache_len, prompt_end)``
        (``prompt_end``: slots of the prompt before the start token)."""
        batch, prompt_len = self._prepare(prompts, opt)
        batch["seed"] = np.asarray(seed, "int32")
        prompt_end = 0 if self.seq2seq else prompt_len - (self.start_id is not None)
        static = (len(prompts), opt, prompt_len, prompt_len + opt.max_new, prompt_end)
        return {k: ops.convert_to_tensor(v) for k, v in batch.items()}, static

    def _cache_lengths(self, static):
        """The cache lengths of a decoding shape's segments (``segments.cache_lengths``)."""
        count = 1 if not self.use_cache else self.cache_segments
        return growth.cache_lengths(self.transformer, static, count, self._weight_bytes,
                                    whole_caches=True if self._torch_compile else None)

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
            self._functions[key] = compile_step(fn, self._variables, bool(self.jit_compile),
                                                donate=name != "start", packed=self._packed)
        return self._functions[key]

    def _iterate(self, prompts, opt, seed, every=1):
        """Yield the decoding state after the first token, then after every
        ``every`` tokens (None: once, at the end). With the cache, the tokens
        between two yields are decoded by one compiled loop: no host round
        trip per token, and the caches are updated in place."""
        batch, static = self._setup(prompts, opt, seed)
        lengths = self._cache_lengths(static)
        try:
            state = self._compiled("start", growth.with_cache_len(static, lengths[0]))(batch)
            yield state
            t = 1
            while t < opt.max_new:
                if bool(ops.convert_to_numpy(state["done"])):
                    return
                if self.use_cache:
                    stop = opt.max_new if every is None else min(t + every, opt.max_new)
                    state, t = growth.run_segments(  # stopped rows: yielded, then the loop ends
                        state, t, stop, static, lengths, self._slot_caches,
                        lambda n: self._compiled("run", growth.with_cache_len(static, n)))
                else:
                    rerun = self._compiled(("rerun", self._rerun_length(static, t)), static)
                    state, t = rerun(state), t + 1
                yield state
        finally:  # what the steps derived from the weights lives for one run
            self._constants.clear()

    # -- the compiled functions ---------------------------------------------------
    def _forward(self, tokens, segments, step, context=None):
        """Logits ``(rows, vocab)`` at ``step.select``'s position: the model's
        own layers, each call routed through ``step``."""
        inputs = [tokens] + ([segments] if self.uses_segments else [])
        with self.transformer.hooked(step):
            y = self.transformer.apply_decoder(inputs, context=context, select=step.select)
        if isinstance(y, (list, tuple)):
            y = y[-1]
        if y.shape[-1] != self.vocab_size:
            raise ValueError("the model has no LM head (output width %s, vocabulary %d): build "
                             "it with with_lm/with_mlm" % (y.shape[-1], self.vocab_size))
        return ops.cast(y[:, 0], "float32")

    def _start_fn(self, opt, prompt_len, cache_len, prompt_end):
        search = make_search(opt)
        rows = opt.rows

        def expand(x, axis=0):
            return x if rows == 1 or x is None else ops.repeat(x, rows, axis=axis)

        def start(batch):
            pad = batch["pad"]
            slots = ops.arange(prompt_len, dtype="int32")
            visible = ops.concatenate(
                [slots[None] >= pad[:, None],
                 ops.zeros((ops.shape(pad)[0], cache_len - prompt_len), "bool")], axis=1)
            step = DecodingStep(0, positions(slots, pad), visible, cache_len, prompt_end,
                                copies=rows if self.use_cache else 1,
                                beam_copies=opt.method == "beam", **self._pass)
            context = self.transformer.encode(batch["enc"]) if self.seq2seq else None
            logits = self._forward(batch["tokens"], batch.get("segments"), step, context)
            state = search.init_state(ops.shape(pad)[0] * rows, expand(batch.get("seen")),
                                      batch["seed"])
            # all rows of one input are still alike: no reordering needed yet
            state, _ = search.update(state, expand(logits))
            state["pad"] = expand(pad)
            if self.use_cache:
                state["visible"] = expand(step.new_visible)
                state["caches"] = step.new_caches
                self._slot_caches = list(step.slot_caches)
                if opt.method == "beam":  # every slot so far: the row's own copy
                    own = ops.arange(ops.shape(state["visible"])[0], dtype="int32") % rows
                    state["ancestors"] = ops.repeat(own[:, None], cache_len, axis=1)
            else:
                state["prompt"] = expand(batch["tokens"])
                if "segments" in batch:
                    state["prompt_segments"] = expand(batch["segments"])
                if self.seq2seq:
                    state["context"] = expand(context)
            return state

        return start

    def _step_fn(self, opt, prompt_len, cache_len, prompt_end):
        search = make_search(opt)

        def step(state):
            index = prompt_len + state["t"] - 1  # slot of the last token chosen
            tokens = state["token"][:, None]
            written = ops.equal(ops.arange(cache_len, dtype="int32")[None], index)
            beams = None
            if "ancestors" in state:  # the new slot belongs to the row writing it
                own = ops.arange(ops.shape(tokens)[0], dtype="int32") % opt.num_beams
                ancestors = ops.where(written, own[:, None], state["ancestors"])
                beams = (ancestors, opt.num_beams)
            context = None
            if self.seq2seq:  # the layers read what they drew from the context in their caches
                context = ops.zeros((ops.shape(tokens)[0], 1, self.transformer.hidden_size))
            now = DecodingStep(index, positions(ops.reshape(index, (1,)), state["pad"]),
                               ops.logical_or(state["visible"], written), cache_len, prompt_end,
                               caches=state["caches"], beams=beams, **self._pass)
            logits = self._forward(tokens, ops.full_like(tokens, self.segment_id), now, context)
            new, parent = search.update(state, logits)
            visible = now.new_visible
            if parent is not None:  # beams move, their caches do not: only the small maps
                visible = take_rows(visible, parent)
                new["ancestors"] = take_rows(beams[0], parent)
            new["caches"], new["visible"] = now.new_caches, visible
            return new

        return step

    def _run_fn(self, opt, prompt_len, cache_len, prompt_end):
        """Cached steps in one compiled loop, until ``t`` reaches ``stop``
        (a scalar int32 argument) or the search is done."""
        step = self._step_fn(opt, prompt_len, cache_len, prompt_end)
        if self._torch_compile:  # steps compiled by torch.compile (compile_step wraps the loop)
            return compile_torch_loop(step)

        def run(state, stop):
            def running(state):
                return ops.logical_and(ops.logical_not(state["done"]), state["t"] < stop)

            return ops.while_loop(running, step, state)

        return run

    def _rerun_fn(self, opt, prompt_len, cache_len, prompt_end, length):
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
            now = DecodingStep(0, positions(slots, pad), slots[None] >= pad[:, None], length,
                               prompt_end, pick=prompt_len + state["t"] - 1, **self._pass)
            logits = self._forward(tokens, segments, now, state.get("context"))
            new, _ = search.update(state, logits)  # rows carry their own ids: no caches
            return new

        return step
