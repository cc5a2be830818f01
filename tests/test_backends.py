"""The suite's tests again on the JAX and PyTorch backends.

Keras fixes its backend per process, so each backend's share runs in ONE
subprocess with ``KERAS_BACKEND=jax`` / ``torch`` (one Python start-up and
TensorFlow/JAX/torch import per backend instead of one per test file: that
start-up is ~5 s of CPU on this project's 2-core CI machine). ``RERUNS`` lists
what runs where: each file, with the ``-k`` selection of its tests that
concern the backend (``None``: the whole file). A failure names the failing
tests of that process. Same-weights parity across all three backends,
decoding included, is tests/test_backend_parity.py.
"""

import os

import pytest

from conftest import rerun_on_backend

HERE = os.path.dirname(os.path.abspath(__file__))

#: The old bert4keras models whose numerics JAX must reproduce (test_compat_models.py).
COMPAT_MODELS_NUMERICAL = ("hierarchical or custom_position or compound or residual or "
                           "attention_caches or layer_norm_cond or autoresize or layers_shares")
#: Block loading from safetensors: in-place writes per backend (test_checkpoint_io.py).
BLOCK_LOADING = "written_from_the_file_in_blocks or assign_in_row_blocks or block_writer"

RERUNS = {
    "jax": [
        ("test_bert.py", None),  # the core models against transformers
        ("test_minilm.py", None),
        ("test_compat_backend.py", None),  # bert4keras 0.11.5's backend, layers, masks
        # the old user scripts run as written on TensorFlow (the old toolkit's
        # backend); here the layers and optimizers they use
        ("test_compat_layers.py", "not old_style_script"),
        ("test_compat_masks.py", None),
        ("test_compat_models.py", COMPAT_MODELS_NUMERICAL),
        ("test_compat_optimizers.py", "not old_style_script"),
        # JAX is the backend whose int8 matmul is fast on a CPU: Keras' int8 of our
        # layers must match NumPy and reload there
        ("test_quantization.py", "numpy_int8 or reload_in_a_new_process"),
        ("test_checkpoint_io.py", BLOCK_LOADING),  # a donated dynamic_update_slice
        # decoding in segments: the state grown between two donated jax.jit loops
        ("test_generation.py", "test_cache_segments"),
        # functional models releasing intermediate tensors: Keras' results (eager JAX calls)
        ("test_graph_memory.py", None),
        # recompute: the same gradients, and a remat region per block in the gradient's jaxpr
        ("test_recompute.py", "test_gradients_match_on_this_backend"),
        # dropout masks hashed from rng_bit_generator keys; GELUs keeping only their input
        ("test_dropout.py", None),
        ("test_training_activation.py", None),
        # DataGenerator.forfit: a Python generator here, (x, None) batches as inputs only
        ("test_compat_snippets.py", "test_forfit_inputs_and_none_target_train_a_loss_layer"),
    ],
    "torch": [
        ("test_bert.py", None),
        ("test_minilm.py", None),
        # the eager decoding shortcuts (direct calls, prefix reads, in-place beam
        # writes), and cached == uncached decoding of every family on torch
        ("test_direct.py", None),
        ("test_generation.py", "test_cached_equals_uncached or "
                               "test_attention_beams_read_ancestor_slots or test_cache_segments "
                               # steps compiled by torch.compile (jit_compile=True)
                               "or test_compiled_steps_equal_eager_steps and gpt2 "
                               "or test_torch_compiled_decoding"),
        ("test_checkpoint_io.py", BLOCK_LOADING),  # copy_ into the parameter
        # a quantized Dense's integer product runs through torch._int_mm here
        ("test_quantization.py", "numpy_int8 or reload_in_a_new_process"),
        # training: oneDNN products with a backward, and the dropout masks drawn as int16s
        ("test_torch_train.py", None),
        ("test_dropout.py", "not jax_hash"),
        # bert4keras' AdamW / Adam: torch's fused kernel, Keras' arithmetic
        # (the TensorFlow process of its torch-free check is the same on every backend)
        ("test_fused_adam.py", "not tensorflow_users_never_load_torch"),
        # ... and its moments and iterations reload in a new process (.keras round trip)
        ("test_optimizer_serialization.py", "bert4keras_adamw or weight_decay"),
        # every call is eager here: functional models release tensors, Keras' results
        ("test_graph_memory.py", None),
        # recompute: the same gradients, each block run once more during backward
        ("test_recompute.py", "test_gradients_match_on_this_backend"),
    ],
}


#: Environment of each backend's process. PyTorch: TorchInductor generates its C++
#: kernels without SIMD (``TORCHINDUCTOR_VEC_ISA_OK=0``). The compiled-decoding tests
#: check that our step graphs, compiled, give the eager tokens; Inductor's vectorized
#: code is torch's own (users get it: the variable is set for this process only). With
#: an empty Inductor cache, as on a CI machine, the vectorized kernels cost the GPT-2
#: sampling test ~16 s more of gcc and codegen (49 -> 33 s, Zen 4, 2 cores).
ENVIRONMENT = {"torch": {"TORCHINDUCTOR_VEC_ISA_OK": "0"}}


def selection(reruns):
    """One ``-k`` expression for the files of ``reruns``: a file's tests are
    matched by its module keyword (``test_x.py``), narrowed by its selection."""
    return " or ".join("(%s and (%s))" % (name, sel) if sel else "(%s)" % name
                       for name, sel in reruns)


@pytest.mark.parametrize("backend", sorted(RERUNS))
def test_suite_share_on_backend(backend):
    reruns = RERUNS[backend]
    rerun_on_backend(backend, [os.path.join(HERE, name) for name, _ in reruns],
                     selection(reruns), timeout=1800, env=ENVIRONMENT.get(backend))
