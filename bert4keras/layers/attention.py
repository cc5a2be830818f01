"""Attention: the attention-bias builder and multi-head attention.

Shapes use ``batch``, ``q_len``, ``k_len``, ``hidden``, ``heads``.
"""

import math

import keras
from keras import ops

from bert4keras import backend as B
from bert4keras.layers.core import Dense, fresh_initializer, register
from bert4keras.layers.dropout import Dropout
from bert4keras.layers.direct import (_reshape, cached_ops, direct_call, fused_dense,
                                      torch_attention, torch_compiling)
from bert4keras.layers.quantization import QuantizableSublayers


@register
class AttentionMask(keras.layers.Layer):
    """Builds the additive attention bias from token ids (and segment ids).

    Inputs: ``token_ids`` ``(batch, seq_len)`` (id 0 is [PAD]) or
    ``[token_ids, segment_ids]`` for ``mode='unilm'``.

    Output: float32 ``(batch, 1, q_len, k_len)`` (``(batch, 1, 1, k_len)`` for
    ``mode='padding'``) with 0 where attention is allowed and -1e12 elsewhere.

    Modes: ``'padding'`` (keys that are [PAD] are hidden: a BERT encoder),
    ``'lm'`` (plus causal: GPT-style language model), ``'unilm'`` (plus the
    UniLM seq2seq rule over segment ids; Dong et al. 2019).
    """

    def __init__(self, mode="padding", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("padding", "lm", "unilm"):
            raise ValueError("AttentionMask mode must be padding, lm or unilm; got %r" % mode)
        self.mode = mode

    def call(self, inputs):
        if self.mode == "unilm":
            token_ids, segment_ids = inputs
        else:
            token_ids = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        keep = B.padding_visibility(token_ids)
        if self.mode == "lm":
            keep = keep * B.causal_visibility(ops.shape(token_ids)[1])
        elif self.mode == "unilm":
            keep = keep * B.unilm_visibility(segment_ids)
        return B.visibility_to_bias(keep)

    def call_cached(self, inputs, step):
        """A cached decoding step (see
        :meth:`bert4keras.generation.DecodingStep.attention_bias`): the step's
        causal bias over its cache, the keys of new [PAD] (id 0) tokens hidden
        from then on; ``'unilm'``: the prompt (segment 0) attends both ways.

        Raises:
            ValueError: ``mode='padding'`` (a bidirectional encoder's mask
                cannot decode).
        """
        if self.mode == "padding":
            raise ValueError("%s: a bidirectional mask (mode='padding') cannot decode; build the "
                             "model with application='lm' or 'unilm'" % self.name)
        token_ids = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        return step.attention_bias(hide=ops.equal(token_ids, 0),
                                   bidirectional_prompt=self.mode == "unilm")

    def compute_mask(self, inputs, mask=None):
        return None  # a bias, not a sequence

    def compute_output_spec(self, inputs):
        token_ids = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        batch, seq_len = token_ids.shape[0], token_ids.shape[1]
        q_len = 1 if self.mode == "padding" else seq_len
        return keras.KerasTensor((batch, 1, q_len, seq_len), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode)
        return config


@register
class MultiHeadAttention(QuantizableSublayers, keras.layers.Layer):
    """Multi-head scaled dot-product attention (Vaswani et al. 2017).

    Inputs: ``[q, k, v]`` or ``[q, k, v, bias]`` with ``q`` ``(batch, q_len,
    hidden)``, ``k``/``v`` ``(batch, k_len, hidden)`` and an additive float
    ``bias`` broadcastable to ``(batch, heads, q_len, k_len)`` (see
    :class:`AttentionMask`); with a position mode (``p_bias``) one more input,
    always last, ``[q, k, v, (bias), position]``:

    * ``p_bias='typical_relative'`` (NEZHA; Shaw et al. 2018): ``position``
      ``(q_len, k_len, key_size)`` (a :class:`RelativePositionEmbedding`) is
      added to the keys in the scores, ``q_i . (k_j + r_ij)``, and to the
      values in the output, ``sum_j a_ij (v_j + r_ij)``; needs
      ``key_size == head_size``.
    * ``p_bias='rotary'`` (RoFormer): ``position`` ``(batch|1, seq_len,
      key_size)`` (a :class:`SinusoidalPositionEmbedding` with
      ``merge_mode='zero'``) rotates the projected queries and keys (RoPE);
      self-attention only (``q_len == k_len``).
    * ``p_bias='t5_relative'`` (T5): ``position`` ``(q_len, k_len, heads)`` is
      added to the scores.

    bert4keras 0.11.5's call form works too: ``layer(inputs, a_bias=True,
    p_bias='rotary')`` reads ``[q, k, v, (bias if a_bias), (position if
    p_bias)]``, ``p_bias`` choosing the position mode of that call (see
    :meth:`call`). In either form, Keras masks on the inputs (e.g. from
    ``Embedding(mask_zero=True)``) hide the masked keys, and the query's mask
    is the output's.

    Options (as 0.11.5): ``normalization`` of the scores, ``'softmax'``,
    ``'squared_relu'`` or ``'softmax_plus'`` (see
    :func:`bert4keras.backend.attention_normalize`);
    ``return_attention_scores=True`` makes the output ``[output, scores]``.
    ``mask_keys=False`` (ours): only ``bias`` hides keys, not the Keras mask
    of ``v``. The model families build their attention so: their bias
    already hides the padding (and keeps GPT-2's id 0, a real token,
    visible), so the Keras masks of their ``mask_zero`` embeddings -- there
    for the layers a user adds after the model, as in 0.11.5 -- change no
    output.

    Output: ``(batch, q_len, out_dim)``.

    Incremental decoding: :meth:`call_with_cache` attends over a preallocated
    key/value cache (written with ``ops.slice_update`` at a step index) and
    :meth:`compute_cache` projects a context once (cross-attention); both run
    the same projections and score code as :meth:`call`.
    :meth:`call_cached` is the layer's part of a cached decoding step (see
    :class:`bert4keras.generation.DecodingStep`): it takes its cache from the
    step, starts or updates it and hands it back.

    Weights, in this order (the checkpoint maps rely on it): ``q_dense``,
    ``k_dense``, ``v_dense``, ``o_dense``, each a kernel and (``use_bias``) a
    bias; ``p_bias`` adds no weights. Scores and softmax are computed in
    float32 under mixed precision.
    """

    P_BIAS_MODES = (None, "typical_relative", "rotary", "t5_relative")
    NORMALIZATIONS = ("softmax", "squared_relu", "softmax_plus")

    def __init__(self, heads, head_size, out_dim=None, key_size=None, use_bias=True,
                 normalization="softmax", attention_scale=True, attention_dropout=0.0,
                 return_attention_scores=False, kernel_initializer="glorot_uniform",
                 p_bias=None, mask_keys=True, **kwargs):
        super().__init__(**kwargs)
        if normalization not in self.NORMALIZATIONS:
            raise ValueError("%s: normalization must be one of %s, got %r"
                             % (self.name, self.NORMALIZATIONS, normalization))
        self.p_bias = p_bias
        self.normalization = normalization
        self.return_attention_scores = bool(return_attention_scores)
        self.mask_keys = bool(mask_keys)
        self.heads = int(heads)
        self.head_size = int(head_size)
        self.out_dim = int(out_dim or heads * head_size)
        self.key_size = int(key_size or head_size)
        self.use_bias = use_bias
        self.attention_scale = attention_scale
        self.attention_dropout = float(attention_dropout or 0.0)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self._check_p_bias(p_bias)
        def dense(units, name):  # each projection its own initializer (own seed)
            return Dense(units, use_bias=use_bias, name=name,
                         kernel_initializer=fresh_initializer(self.kernel_initializer),
                         dtype=self.dtype_policy)

        self.q_dense = dense(self.key_size * self.heads, "q_dense")
        self.k_dense = dense(self.key_size * self.heads, "k_dense")
        self.v_dense = dense(self.head_size * self.heads, "v_dense")
        self.o_dense = dense(self.out_dim, "o_dense")
        self.dropout = Dropout(self.attention_dropout, dtype=self.dtype_policy)

    def build(self, input_shape):
        q_shape, k_shape, v_shape = input_shape[:3]
        self.q_dense.build(q_shape)
        self.k_dense.build(k_shape)
        self.v_dense.build(v_shape)
        self.o_dense.build(tuple(q_shape[:-1]) + (self.head_size * self.heads,))
        self.built = True

    def _project(self, dense, x, size, direct=False):
        """``dense`` over ``x`` ``(batch, len, hidden)`` as one 2-D matmul, split
        into ``(batch, len, heads, size)``. Same math as a 3-D call; on
        TensorFlow a 2-D Dense is MatMul + BiasAdd, which oneDNN runs as one
        kernel (a 3-D one goes through Tensordot and adds the bias in a second
        pass, slow in bfloat16). ``direct`` (the cached path: real tensors, no
        masks): ``dense`` run by :func:`direct_call`, reshapes by :func:`_reshape`."""
        reshape = _reshape if direct else ops.reshape
        shape = tuple(x.shape) if direct else ops.shape(x)
        rows = reshape(x, (-1, shape[-1]))
        y = direct_call(dense, rows) if direct else dense(rows)
        return reshape(y, (shape[0], shape[1], self.heads, size))

    def _project_joint(self, x):
        """Queries, keys and values ``(batch, len, heads, size)`` of ``x`` ``(batch, len,
        hidden)`` from one :func:`~bert4keras.layers.direct.fused_dense` product, or None."""
        outputs = fused_dense((self.q_dense, self.k_dense, self.v_dense), x)
        if outputs is None:
            return None
        sizes = (self.key_size, self.key_size, self.head_size)
        return [_reshape(y, tuple(x.shape[:2]) + (self.heads, n)) for y, n in zip(outputs, sizes)]

    def _output(self, o, direct=False):
        """``o_dense`` over the heads' outputs ``(batch, q_len, heads,
        head_size)`` as one 2-D matmul (see :meth:`_project`, also for
        ``direct``); returns ``(batch, q_len, out_dim)``."""
        reshape = _reshape if direct else ops.reshape
        shape = tuple(o.shape) if direct else ops.shape(o)
        rows = reshape(o, (-1, self.heads * self.head_size))
        y = direct_call(self.o_dense, rows) if direct else self.o_dense(rows)
        return reshape(y, (shape[0], shape[1], self.out_dim))

    def _check_p_bias(self, p_bias):
        if p_bias not in self.P_BIAS_MODES:
            raise ValueError("%s: p_bias must be one of %s, got %r"
                             % (self.name, self.P_BIAS_MODES, p_bias))
        if p_bias == "typical_relative" and self.key_size != self.head_size:
            raise ValueError("%s: p_bias='typical_relative' shares one table between keys and "
                             "values, so key_size (%d) must equal head_size (%d)"
                             % (self.name, self.key_size, self.head_size))

    def _split_inputs(self, inputs, a_bias=None, p_bias=None):
        """The inputs, in either layout, as ``(q, k, v, bias, position, mode)``
        (``mode``: the position mode of this call).

        Without ``a_bias``/``p_bias``: ``[q, k, v, (bias), (position)]``, the
        position mode being the constructor's. With either (bert4keras
        0.11.5's call form): ``inputs[3]`` is the bias iff ``a_bias`` is
        truthy, and the next input is the position input iff the mode
        (``p_bias``, else the constructor's) is set.

        Raises:
            ValueError: an unknown ``p_bias``, or too few inputs for the flags.
        """
        q, k, v = inputs[:3]
        if a_bias is None and p_bias is None:
            extra = list(inputs[3:])
            position = extra.pop() if self.p_bias else None
            bias = extra[0] if extra else None
            return q, k, v, bias, position, self.p_bias
        mode = self.p_bias if p_bias is None else p_bias
        self._check_p_bias(mode)
        n = 4 if a_bias else 3
        if len(inputs) < n + (1 if mode else 0):
            raise ValueError("%s: a_bias=%r, p_bias=%r need [q, k, v%s%s], got %d inputs"
                             % (self.name, a_bias, mode, ", bias" if a_bias else "",
                                ", position" if mode else "", len(inputs)))
        bias = inputs[3] if a_bias else None
        position = inputs[n] if mode else None
        return q, k, v, bias, position, mode

    def _project_kv(self, k, v, position=None, direct=False):
        """Keys ``(batch, k_len, heads, key_size)`` and values ``(batch, k_len,
        heads, head_size)``; rotary keys are rotated by ``position``. ``direct``:
        see :meth:`_project`."""
        kw = self._project(self.k_dense, k, self.key_size, direct)
        vw = self._project(self.v_dense, v, self.head_size, direct)
        if self.p_bias == "rotary":
            kw = B.apply_rotary_position_embeddings(position, kw)[0]
        return kw, vw

    def call(self, inputs, mask=None, a_bias=None, p_bias=None, training=None):
        """Attention over ``inputs`` (see the class docstring for both layouts).

        Args:
            inputs: ``[q, k, v, ...]``.
            mask: Keras masks of the inputs (filled in by Keras from
                ``mask_zero`` embeddings): the keys where the value mask
                (``mask[2]``, ``(batch, k_len)``) is 0 are hidden, on top of
                any bias (unless ``mask_keys=False``).
            a_bias, p_bias: bert4keras 0.11.5's call options; ``a_bias``
                truthy: ``inputs[3]`` is an additive float bias (``(batch|1,
                heads|1, q_len|1, k_len)`` or ``(batch, q_len, k_len)``) or a
                bool visibility; ``p_bias``: the position mode of this call
                (``'typical_relative'``, ``'rotary'``, ``'t5_relative'``).

        Returns:
            ``(batch, q_len, out_dim)``, or ``[output, scores]`` with
            ``return_attention_scores`` (``scores`` float32 ``(batch, heads,
            q_len, k_len)``: scaled dot products with the position terms,
            before bias, mask and normalization).
        """
        q, k, v, bias, position, mode = self._split_inputs(inputs, a_bias, p_bias)
        v_mask = mask[2] if isinstance(mask, (list, tuple)) and len(mask) > 2 else None
        if not self.mask_keys:
            v_mask = None
        qw = self._project(self.q_dense, q, self.key_size)  # (batch, q_len, heads, size)
        kw = self._project(self.k_dense, k, self.key_size)
        vw = self._project(self.v_dense, v, self.head_size)
        if mode == "rotary":
            qw, kw = B.apply_rotary_position_embeddings(position, qw, kw)
        if self._can_fuse(mode, v_mask, training):
            return self._attend_fused(qw, kw, vw, bias)
        output, scores = self._attend_with_scores(qw, kw, vw, bias, position, training, mode,
                                                 v_mask)
        return [output, scores] if self.return_attention_scores else output

    def _can_fuse(self, mode, mask, training):
        """Whether :meth:`_attend_fused` computes this call: on PyTorch (where
        it is one fused kernel), plain softmax attention in float32 (rotary
        already applied), no key mask, no position term in the scores, no
        scores returned, no dropout on the probabilities in this call. On
        JAX and TensorFlow the transposes and matmuls of
        :meth:`_attend_with_scores` were the faster form (benchmarks/HISTORY.md: "JAX forward")."""
        return (keras.backend.backend() == "torch"
                and mode in (None, "rotary") and mask is None and not self.return_attention_scores
                and self.normalization == "softmax" and self.key_size == self.head_size
                and self.compute_dtype == "float32"
                and not (self.attention_dropout and training))

    def _attend_fused(self, qw, kw, vw, bias):
        """``softmax(q k^T * scale + bias) v`` by torch's
        ``scaled_dot_product_attention`` on the strided head-major views
        (:func:`~bert4keras.layers.direct.torch_attention`; only torch calls
        this, :meth:`_can_fuse`), ``keras.ops.dot_product_attention`` if the
        inputs are not torch tensors, then the output projection.

        ``qw`` ``(batch, q_len, heads, size)``, ``kw``/``vw`` ``(batch, k_len,
        heads, size)``; ``bias`` as :meth:`_normalize` takes it, or None.
        Returns ``(batch, q_len, out_dim)``.
        """
        if bias is not None:
            bias = _additive_bias(bias)
            for _ in range(4 - len(bias.shape)):
                bias = bias[None]
        scale = 1.0 / math.sqrt(self.key_size) if self.attention_scale else 1.0
        o = torch_attention(qw, kw, vw, bias, scale)  # None off torch
        if o is None:
            o = ops.dot_product_attention(qw, kw, vw, bias=bias, scale=scale)
        return self._output(o)

    def compute_mask(self, inputs, mask=None):
        """The query's mask for the output (``None`` for the scores)."""
        q_mask = mask[0] if isinstance(mask, (list, tuple)) and mask else None
        return [q_mask, None] if self.return_attention_scores else q_mask

    def compute_cache(self, k, v, position=None):
        """Project a context once for :meth:`call_with_cache` (cross-attention).

        Args:
            k, v: ``(batch, k_len, hidden)`` (the encoder output for T5).
            position: ``p_bias='rotary'`` only, ``(batch|1, k_len, key_size)``.

        Returns:
            ``(keys, values)``, ``(batch, k_len, heads, key_size|head_size)``.
        """
        return self._project_kv(k, v, position)

    def call_cached(self, inputs, step, training=None):
        """The attention of one cached decoding step (``step``: a
        :class:`bert4keras.generation.DecodingStep`).

        Self-attention (``inputs[1] is inputs[0]``): the keys/values of the
        new positions are written at ``step.index`` into the step's cache (a
        zero cache of ``step.cache_len`` slots on the first pass) and the
        queries attend over it, beams read through ``step.beams``.
        Cross-attention (keys from a context): the context is projected once,
        on the first pass, and read from the cache afterwards.

        After the first pass each input becomes ``step.copies`` rows: the
        self-attention cache is tiled side by side when those rows are the
        beams of one search (``step.beam_copies``, the layout ``beams``
        reads), every other cache repeated row by row.

        Returns:
            ``(batch, q_len, out_dim)``, as :meth:`call`.
        """
        if inputs[1] is not inputs[0]:  # cross-attention
            cache = step.cache(lambda: tuple(
                _head_major(x, self.heads) for x in self.compute_cache(inputs[1], inputs[2])))
            step.keep(cache, self._repeat_cache)
            return self.call_with_cache(inputs, cache, training=training)[0]
        rows = ops.shape(inputs[0])[0]
        dtype = self.compute_dtype
        cache = step.cache(lambda: (
            ops.zeros((self.heads * rows, step.cache_len, self.key_size), dtype),
            ops.zeros((self.heads * rows, step.cache_len, self.head_size), dtype)))
        output, cache = self.call_with_cache(inputs, cache, index=step.index, beams=step.beams,
                                             training=training, in_place=True)
        step.keep(cache, _tile_cache if step.beam_copies else self._repeat_cache, slots=True)
        return output

    def _repeat_cache(self, cache, copies):
        """``(heads * batch, len, size)`` caches -> ``(heads * batch * copies,
        len, size)``: each sequence's rows ``copies`` times, in the
        head-major layout of :meth:`call_with_cache`."""
        out = []
        for x in cache:
            x = ops.reshape(x, (self.heads, x.shape[0] // self.heads) + tuple(x.shape[1:]))
            x = ops.repeat(x, copies, axis=1)
            out.append(ops.reshape(x, (-1,) + tuple(x.shape[2:])))
        return tuple(out)

    def call_with_cache(self, inputs, cache, index=None, beams=None, training=None,
                        in_place=False):
        """Attention of new queries over a key/value cache.

        Args:
            inputs: ``[q, k, v, (bias), (position)]`` as for :meth:`call`, with
                ``q`` ``(batch, q_len, hidden)`` the new positions only. With
                ``index``, ``k``/``v`` are the states of the same new positions
                (self-attention); without, they are ignored (may be None).
                ``bias`` must broadcast to ``(batch, heads, q_len, cache_len)``
                and hide the cache slots not written yet. ``position``:
                rotary ``(batch|1, q_len, key_size)`` angles of the new
                positions; ``t5_relative`` ``(q_len, cache_len, heads)`` and
                ``typical_relative`` ``(q_len, cache_len, key_size)`` for the
                new queries against every cache slot.
            cache: ``(keys, values)``, preallocated to the maximum length,
                ``(heads * batch, cache_len, key_size|head_size)`` (row ``h *
                batch + b``: head ``h`` of sequence ``b``); with ``beams``,
                ``(heads * batch // k, k * cache_len, size)`` (the ``k`` beams
                of a group side by side; ``call_cached`` builds it
                from :meth:`compute_cache`'s ``(batch, k_len, heads, size)``).
                In this layout every product with the cache is a plain batched
                matmul and the new slots are written in place under XLA: no
                copy of the cache per step.
            index: scalar int (tensor or Python): slot of the first new
                position. The new keys/values are written to slots ``[index,
                index + q_len)`` (of each beam) with ``ops.slice_update``,
                and the slots after them count as not written yet: eager
                PyTorch reads slots ``[0, index + q_len)`` only. None:
                read-only cache (cross-attention), every slot read.
            beams: beam search without reordering the cache: ``(ancestors,
                k)``, rows in groups of ``k`` beams, ``ancestors`` int
                ``(batch, cache_len)``: slot ``s`` of row ``r`` is read from
                the group's beam ``ancestors[r, s]`` (the beam that wrote it).
                Each query is scored against the ``k`` beams of its group in
                one batched matmul and the ancestor's score kept, so the cache
                is read once per step instead of being copied in beam order.
            in_place: the caller gives up ``cache``: on torch (eager, where
                ``ops.slice_update`` copies the whole cache) the new slots
                are written into the cache tensors themselves
                (``index_copy_``). XLA (TensorFlow, JAX) writes in place
                anyway where the old cache is dead, so this changes nothing
                there.

        Returns:
            ``(output (batch, q_len, out_dim), (keys, values))``, the updated
            cache (the same tensors when ``index`` is None).

        Raises:
            ValueError: the cache does not have the layout above for this
                layer, these queries and ``beams``.
        """
        q, k, v, bias, position, _ = self._split_inputs(inputs)
        # self-attention: one product for q, k and v where the kernels are packed side by side
        joint = self._project_joint(q) if index is not None and k is q and v is q else None
        qw = self._project(self.q_dense, q, self.key_size, True) if joint is None else joint[0]
        if self.p_bias == "rotary":
            qw = B.apply_rotary_position_embeddings(position, qw)[0]
        keys, values = cache
        rows, q_len = qw.shape[0], qw.shape[1]
        group = 1 if beams is None else int(beams[1])
        if rows % group or any(x.shape[0] != self.heads * rows // group
                               or x.shape[1] % group for x in (keys, values)):
            raise ValueError(
                "%s: cache keys %s / values %s must be (heads * batch // beams, beams * "
                "cache_len, size) with heads = %d, batch = %d, beams = %d"
                % (self.name, tuple(keys.shape), tuple(values.shape), self.heads, rows, group))
        length = keys.shape[1] // group  # cache_len
        fops = cached_ops(qw)  # keras.ops, or on torch the same ops without Keras' dispatch
        if index is not None:
            if joint is None:
                kw, vw = self._project_kv(k, v, position, direct=True)
            else:
                kw, vw = joint[1:]
                if self.p_bias == "rotary":
                    kw = B.apply_rotary_position_embeddings(position, kw)[0]
            updated = []
            for old, new in ((keys, kw), (values, vw)):
                # (batch, q_len, heads, size) -> (heads * groups, beams, q_len, size)
                new = fops.transpose(fops.cast(new, old.dtype), (2, 0, 1, 3))
                new = _reshape(new, (self.heads * rows // group, group, q_len, -1))
                updated.append(_write_slots(old, fops.cast(index, "int32"), new, length,
                                            in_place))
            keys, values = updated
        qh = fops.transpose(qw, (2, 0, 1, 3))  # (heads, batch, q_len, key_size)
        # eager torch: attend over the slots written so far only (torch.compile: all of them)
        filled = None if index is None or fops is ops or torch_compiling() else int(index) + q_len
        output = self._attend_cache(qh, keys, values, bias, position, beams, training, filled)
        return output, (keys, values)

    def _attend_cache(self, qh, keys, values, bias, position, beams=None, training=None,
                      filled=None):
        """:meth:`_attend` over a cache in :meth:`call_with_cache`'s layout.

        ``qh`` ``(heads, batch, q_len, key_size)``, ``keys``/``values`` as
        :meth:`call_with_cache`'s cache; ``beams`` ``(ancestors, k)`` or None.
        ``filled`` (eager PyTorch only, a Python int): the slots of each beam
        written so far; only those are read (the others are hidden by the
        bias anyway). Returns ``(batch, q_len, out_dim)``.
        """
        heads, rows, q_len, key_size = qh.shape
        fops = cached_ops(qh)
        k = 1 if beams is None else int(beams[1])
        groups, cache_len = rows // k, keys.shape[1] // k
        length = cache_len if filled is None else min(filled, cache_len)
        if (k == 1 and fops is not ops and self.normalization == "softmax"
                and self.p_bias not in ("typical_relative", "t5_relative")
                and qh.dtype == keys.dtype == values.dtype
                and keras.backend.standardize_dtype(qh.dtype) == "float32"
                and not (self.attention_dropout and training)):
            # eager torch, no beams: one fused attention over the written slots
            if bias is not None:
                bias = _heads_major_bias(
                    fops.maximum(_additive_bias(bias[..., :length], fops), B.NEG_INF), fops)
            scale = 1 / math.sqrt(self.key_size) if self.attention_scale else 1.0
            o = fops.cache_attention(qh, keys, values, length, bias, scale)
            return self._output(fops.transpose(o, (1, 2, 0, 3)), direct=True)
        queries = _reshape(qh, (heads * groups, k * q_len, key_size))
        if length < cache_len:  # (heads * groups, k, length, k * q_len)
            every = fops.cache_scores(keys, queries, k, length)
        else:
            # keys on the left: (cache slots, key_size) x (key_size, queries) needs no
            # transposed copy of the cache in XLA's batched matmul
            every = fops.einsum("bnd,bmd->bnm", keys, queries)
        every = _reshape(every, (heads, groups, k, length, k, q_len))  # (.., j, l, i, q)
        pick = None
        if beams is None:
            scores = fops.transpose(every[:, :, 0, :, 0], (0, 1, 3, 2))
        else:
            # pick[g, i, j, l]: slot l of beam i of group g was written by beam j
            ancestors = beams[0] if length == cache_len else beams[0][:, :length]
            pick = fops.one_hot(_reshape(fops.cast(ancestors, "int32"), (groups, k, length)), k)
            pick = fops.cast(fops.transpose(pick, (0, 1, 3, 2)), every.dtype)
            scores = fops.einsum("hgjliq,gijl->hgiql", every, pick)
        scores = fops.cast(_reshape(scores, (heads, rows, q_len, length)), "float32")
        if length < cache_len:
            if position is not None and self.p_bias in ("typical_relative", "t5_relative"):
                position = position[:, :length]  # (q_len, cache_len, ..)
            if bias is not None:
                bias = bias[..., :length]
        if self.p_bias == "typical_relative":
            position = fops.cast(position, qh.dtype)
            scores = scores + fops.cast(fops.einsum("hbqd,qld->hbql", qh, position), "float32")
        elif self.p_bias == "t5_relative":
            scores = scores + fops.cast(fops.transpose(position, (2, 0, 1)), "float32")[:, None]
        if bias is not None:
            bias = _heads_major_bias(bias, fops)
        probs = self._probabilities(scores, bias, training, fops=fops)
        weights = _reshape(probs, (heads, groups, k, q_len, length))
        if pick is not None:  # each beam's weights over the slots of the beams that wrote them
            weights = fops.einsum("hgiql,gijl->hgiqjl", weights, pick)
        if length < cache_len:
            o = fops.cache_values(_reshape(weights, (heads * groups, k * q_len, k, length)),
                                  values, k)
        else:
            o = fops.einsum("bmn,bnd->bmd", _reshape(weights, (heads * groups, k * q_len,
                                                                  k * length)), values)
        o = _reshape(o, (heads, rows, q_len, self.head_size))
        if self.p_bias == "typical_relative":
            o = o + fops.einsum("hbql,qld->hbqd", probs, fops.cast(position, probs.dtype))
        return self._output(fops.transpose(o, (1, 2, 0, 3)), direct=True)  # (rows, q_len, ..)

    def _attend(self, qw, kw, vw, bias, position, training=None):
        """The output ``(batch, q_len, out_dim)`` of :meth:`_attend_with_scores`
        with the layer's own ``p_bias`` mode and no key mask (what the
        uncached ``call`` computes in the layer's own call form)."""
        return self._attend_with_scores(qw, kw, vw, bias, position, training, self.p_bias)[0]

    def _attend_with_scores(self, qw, kw, vw, bias, position, training=None, mode=None,
                            mask=None):
        """Scores, position terms, bias, normalization and output projection.

        ``qw`` ``(batch, q_len, heads, key_size)``, ``kw`` ``(batch, k_len,
        heads, key_size)``, ``vw`` ``(batch, k_len, heads, head_size)``;
        ``mode`` the position mode, ``mask`` ``(batch, k_len)`` or None.
        Returns ``(output (batch, q_len, out_dim), scaled float32 scores)``.
        """
        qw = ops.transpose(qw, (0, 2, 1, 3))
        kw = ops.transpose(kw, (0, 2, 3, 1))
        vw = ops.transpose(vw, (0, 2, 1, 3))
        scores = ops.cast(ops.matmul(qw, kw), "float32")  # (batch, heads, q_len, k_len)
        if mode == "typical_relative":
            position = ops.cast(position, qw.dtype)
            scores = scores + ops.cast(ops.einsum("bhqd,qkd->bhqk", qw, position), "float32")
        elif mode == "t5_relative":
            scores = scores + ops.cast(ops.transpose(position, (2, 0, 1)), "float32")[None]
        scores = self._scale(scores)
        probs = self._normalize(scores, bias, training, mask)
        o = ops.matmul(probs, vw)  # (batch, heads, q_len, head_size)
        if mode == "typical_relative":
            o = o + ops.einsum("bhqk,qkd->bhqd", probs, ops.cast(position, probs.dtype))
        o = ops.transpose(o, (0, 2, 1, 3))
        return self._output(o), scores

    def _scale(self, scores):
        return scores / math.sqrt(self.key_size) if self.attention_scale else scores

    def _probabilities(self, scores, bias, training=None, mask=None, fops=ops):
        """Attention weights from float32 ``scores``: scaling, then
        :meth:`_normalize`. Returns them in the compute dtype, shaped like
        ``scores``."""
        return self._normalize(self._scale(scores), bias, training, mask, fops)

    def _normalize(self, scores, bias, training=None, mask=None, fops=ops):
        """Scaled float32 ``scores`` -> weights: the additive ``bias`` (float,
        broadcastable to ``scores``, or ``(batch, q_len, k_len)``; a bool bias
        is a visibility), the key ``mask`` ``(batch, k_len)``, the
        normalization (softmax in float32), dropout. ``fops``: the ops
        namespace (:func:`~bert4keras.layers.torch_ops.cached_ops` on the cached
        path, where no dropout runs outside training)."""
        if bias is not None:
            # dtype fix: a float16 policy autocasts the -1e12 bias to -inf on the way in; clamp
            # it back so that a fully masked row stays finite (uniform), as in float32
            scores = scores + fops.maximum(_additive_bias(bias, fops), B.NEG_INF)
        if self.normalization == "softmax" and mask is None:
            probs = fops.softmax(scores, axis=-1)
        else:
            probs = B.attention_normalize(scores, mask, -1, self.normalization)
        probs = fops.cast(probs, self.compute_dtype)
        if self.attention_dropout and (training or fops is ops):
            probs = self.dropout(probs, training=training)
        return probs

    def compute_output_shape(self, input_shape):
        output = tuple(input_shape[0][:-1]) + (self.out_dim,)
        if self.return_attention_scores:
            q_shape, k_shape = input_shape[0], input_shape[1]
            return [output, (q_shape[0], self.heads, q_shape[1], k_shape[1])]
        return output

    def get_config(self):
        config = super().get_config()
        config.update(
            heads=self.heads,
            head_size=self.head_size,
            out_dim=self.out_dim,
            key_size=self.key_size,
            use_bias=self.use_bias,
            normalization=self.normalization,
            attention_scale=self.attention_scale,
            attention_dropout=self.attention_dropout,
            return_attention_scores=self.return_attention_scores,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            p_bias=self.p_bias,
            mask_keys=self.mask_keys,
        )
        return config


def _head_major(x, heads):
    """Keys or values ``(batch, len, heads, size)`` -> ``(heads * batch, len,
    size)``, the cache layout of :meth:`MultiHeadAttention.call_with_cache`."""
    batch, length, _, size = x.shape
    return ops.reshape(ops.transpose(x, (2, 0, 1, 3)), (heads * batch, length, size))


def _additive_bias(bias, fops=ops):
    """An attention ``bias`` as float32 to add to ``(batch, heads, q_len, k_len)``
    scores: a bool bias (a visibility) becomes ``0`` / ``NEG_INF``, a ``(batch,
    q_len, k_len)`` one gets a heads axis; other shapes pass as given."""
    if keras.backend.standardize_dtype(bias.dtype) == "bool":
        bias = ops.where(bias, 0.0, B.NEG_INF)
    if len(bias.shape) == 3:  # (batch, q_len, k_len): one bias for every head
        bias = bias[:, None]
    return fops.cast(bias, "float32")


def _heads_major_bias(bias, fops=ops):
    """An attention bias for the cached layout: ``(batch|1, heads|1, q_len|1,
    k_len)`` (fewer axes: leading ones) -> ``(heads|1, batch|1, q_len|1,
    k_len)``, the axis order of :meth:`MultiHeadAttention._attend_cache`'s
    scores."""
    for _ in range(4 - len(bias.shape)):
        bias = bias[None]
    return fops.transpose(bias, (1, 0, 2, 3))


def _write_slots(cache, start, new, length, in_place=False):
    """``cache`` ``(rows, beams * length, size)`` (``beams`` caches of
    ``length`` slots side by side) with slots ``[start, start + q_len)`` of
    each beam set to ``new`` ``(rows, beams, q_len, size)``; ``start`` a
    scalar int32 tensor. One ``ops.slice_update`` per beam (written in place
    by XLA where the old cache is dead); ``in_place`` on torch: ``cache``
    itself is written, all beams in one ``index_copy_`` (Keras' torch
    ``slice_update`` clones the whole tensor)."""
    beams, q_len = new.shape[1], new.shape[2]
    if in_place and keras.backend.backend() == "torch":
        import torch

        slots = (start.to(torch.int64) + torch.arange(q_len, device=cache.device)[None]
                 + length * torch.arange(beams, device=cache.device)[:, None])
        return cache.index_copy_(1, slots.reshape(-1),
                                 new.reshape(new.shape[0], beams * q_len, new.shape[3]))
    zero = ops.zeros((), dtype="int32")
    for beam in range(beams):
        cache = ops.slice_update(cache, (zero, start + beam * length, zero), new[:, beam])
    return cache


def _tile_cache(cache, copies):
    """``(heads * batch, len, size)`` caches -> ``(heads * batch, copies * len,
    size)``: ``copies`` beams side by side, as ``beams`` reads them."""
    return tuple(ops.tile(x, (1, copies, 1)) for x in cache)
