"""Functional models that let go of each intermediate tensor after its last use.

Keras 3 runs a functional model (``keras.Model(inputs, outputs)``, every model
``build_transformer_model`` returns, and the models users build around them)
through ``keras.src.ops.function.Function._run_through_graph``: it computes the
nodes in depth order and keeps every node's output in one dict until the call
returns. Where the call is traced (TensorFlow's graph mode and XLA, ``jax.jit``)
that dict holds symbolic values and costs nothing at run time; where it runs
eagerly -- every call on the PyTorch backend, ``model(x)`` outside a compiled
function on the others -- it keeps real tensors alive that nothing reads any
more. In a BERT-base training step on PyTorch (batch 16 x 128, dropout 0.1)
those are four ``(batch, seq_len, hidden)`` tensors per block that autograd
does not save (the attention and feed-forward outputs before their dropout,
the dropout outputs before the residual sum): 24 MiB a block, 288 MiB at the
end of the forward pass, which is where the step's peak was (benchmarks/HISTORY.md,
Zen 5 section: "Releasing a functional model's intermediate tensors").

:func:`apply` replaces that method with :func:`run_through_graph`, which runs
the same nodes in the same order with the same arguments and differs only in
dropping a value from the dict once every node that reads it has run (the
model's outputs are kept). Values, gradients and errors are Keras' own; a
symbolic run (``call_fn`` given: shape inference) is left to Keras' method.
``import bert4keras`` applies it on every backend unless the environment
variable ``BERT4KERAS_RELEASE_GRAPH_TENSORS`` is ``0``; where the installed
Keras lacks what it relies on, it leaves Keras untouched (:func:`applied`
says which).
"""

import collections
import os

__all__ = ["apply", "applied", "restore", "run_through_graph", "apply_from_environment", "ENV"]

#: ``0`` turns the release off at ``import bert4keras`` (Keras' own method runs)
ENV = "BERT4KERAS_RELEASE_GRAPH_TENSORS"

_STATE = {"original": None}


def _function_class():
    try:
        from keras.src.ops.function import Function
    except ImportError:  # a Keras without that module: leave it alone
        return None
    return Function if hasattr(Function, "_run_through_graph") else None


def run_through_graph(self, inputs, operation_fn=lambda op: op, call_fn=None):
    """``Function._run_through_graph`` releasing each intermediate value after
    the last node that reads it.

    Args:
        self: the ``keras.src.ops.function.Function`` (a functional model).
        inputs: the call's inputs, in the structure of ``self.inputs``.
        operation_fn: wraps each node's operation (Keras passes the training
            flag this way).
        call_fn: Keras' symbolic runner; when given, Keras' own method runs.

    Returns:
        The outputs in ``self``'s output structure, as Keras' method returns them.

    Raises:
        ValueError: an output not connected to the inputs (Keras' message).
    """
    original = _STATE["original"]
    if call_fn is not None or original is None:
        return original(self, inputs, operation_fn=operation_fn, call_fn=call_fn)
    from keras.src import tree

    values = {id(x): y for x, y in zip(self.inputs, tree.flatten(inputs))}
    keep = {id(x) for x in self.outputs}
    nodes = [node for depth in sorted(self._nodes_by_depth, reverse=True)
             for node in self._nodes_by_depth[depth]
             if node.operation and not node.is_input]
    readers = collections.Counter(id(x) for node in nodes for x in node.input_tensors)
    lookup = getattr(self, "_get_operation_for_node", lambda node: node.operation)
    for node in nodes:
        if any(id(x) not in values for x in node.input_tensors):
            continue  # not computable from these inputs (Keras skips it too)
        args, kwargs = node.arguments.fill_in(values)
        outputs = operation_fn(lookup(node))(*args, **kwargs)
        del args, kwargs
        for x in node.input_tensors:
            readers[id(x)] -= 1
            if readers[id(x)] <= 0 and id(x) not in keep:
                values.pop(id(x), None)
        for x, y in zip(node.outputs, tree.flatten(outputs)):
            values[id(x)] = y
        del outputs
    results = []
    for index, x in enumerate(self.outputs):
        if id(x) not in values:
            path = ".".join(str(p) for p in tree.flatten_with_path(self._outputs_struct)[index][0])
            raise ValueError("Output with path `%s` is not connected to `inputs`" % path)
        results.append(values[id(x)])
    return tree.pack_sequence_as(self._outputs_struct, results)


def apply():
    """Install :func:`run_through_graph` on Keras' ``Function`` (idempotent).

    Returns:
        True when installed, False when this Keras lacks what it relies on.
    """
    cls = _function_class()
    if cls is None:
        return False
    if _STATE["original"] is None:
        _STATE["original"] = cls._run_through_graph
        cls._run_through_graph = run_through_graph
    return True


def restore():
    """Put Keras' own ``_run_through_graph`` back (for comparisons and tests)."""
    cls = _function_class()
    if cls is not None and _STATE["original"] is not None:
        cls._run_through_graph = _STATE["original"]
        _STATE["original"] = None


def applied():
    """True while :func:`run_through_graph` is installed."""
    return _STATE["original"] is not None


def apply_from_environment():
    """What ``import bert4keras`` calls: :func:`apply` unless :data:`ENV` is ``0``."""
    if os.environ.get(ENV, "1").strip() != "0":
        apply()
