"""``pretraining.export``: a training checkpoint -> the Google checkpoint a finished run writes."""

import os

import numpy as np
import pytest

from test_pretraining_train import checkpoint_tensors, cli_args, make_tiny_setup


@pytest.mark.parametrize("kind", ["roberta", "gpt"])
def test_export_of_last_state_equals_the_runs_own_checkpoint(tmp_path, kind):
    from pretraining.export import export_checkpoint, main as export_main
    from pretraining.pretraining import main

    tiny = make_tiny_setup(tmp_path / "tiny", kinds=(kind,))
    out = str(tmp_path / "run")
    prefix = main(cli_args(tiny, out, kind, **{"--steps": 2, "--save-every": 1,
                                               "--no-jit": True}))
    exported = str(tmp_path / "exported")
    export_main([os.path.join(out, "checkpoints", "ckpt-00000002"), "--config", tiny["config"],
                 "--vocab", tiny["vocab"], "--model", kind, "--out", exported])
    ours = checkpoint_tensors(os.path.join(exported, "bert_model.ckpt"))
    theirs = checkpoint_tensors(prefix)
    assert sorted(ours) == sorted(theirs)
    for name in theirs:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
    assert os.path.exists(os.path.join(exported, "vocab.txt"))
    # an earlier state differs, and a config of another size is refused by name
    export_checkpoint(os.path.join(out, "checkpoints", "ckpt-00000001"), tiny["config"],
                      str(tmp_path / "step1"), model=kind)
    first = checkpoint_tensors(os.path.join(tmp_path / "step1", "bert_model.ckpt"))
    assert any(not np.array_equal(first[n], theirs[n]) for n in theirs)
    bigger = tmp_path / "bigger.json"
    with open(tiny["config"]) as f:
        bigger.write_text(f.read().replace('"num_hidden_layers": 2', '"num_hidden_layers": 3'))
    with pytest.raises(ValueError, match="Transformer-2"):
        export_checkpoint(os.path.join(out, "checkpoints", "ckpt-00000002"), str(bigger),
                          str(tmp_path / "bad"), model=kind)
