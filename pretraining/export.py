"""Write a Google-format checkpoint from a training checkpoint of :mod:`pretraining.pretraining`.

``pretraining.pretraining`` writes ``bert_model.ckpt`` only when a run ends; every
``--save-every`` steps it keeps a full training state in
``OUT_DIR/checkpoints/ckpt-NNNNNNNN`` (``meta.json`` + ``state.npz``, see
:mod:`pretraining.resume`). This turns any of those into the same files the end of a run
writes -- ``bert_model.ckpt.*`` (Google's BERT names, MLM head included),
``bert_config.json`` and ``vocab.txt`` -- so an intermediate model can be fine-tuned or
probed while training goes on, or a run stopped early can be used::

    python -m pretraining.export runs/mlm/checkpoints/ckpt-00002500 \\
        --config bert_config.json --vocab vocab.txt --out runs/mlm_step2500
"""

if __name__ == "__main__" and not __package__:
    # run as a file: import this module from the package instead (see _as_script)
    import _as_script

    _as_script.run("pretraining.export")

import argparse
import json
import os

from bert4keras import fileio
from bert4keras.models import build_transformer_model
from pretraining.resume import CheckpointManager

APPLICATIONS = {"roberta": "encoder", "gpt": "lm", "unilm": "unilm"}


def export_checkpoint(checkpoint_dir, config_path, out_dir, vocab_path=None, model="roberta"):
    """Write ``out_dir/bert_model.ckpt`` from a training checkpoint directory.

    Every path may be local, ``gs://`` or ``ram://`` (``tf.io.gfile``).

    Args:
        checkpoint_dir: ``.../checkpoints/ckpt-NNNNNNNN`` (a directory, or the
            pointer file that names one on object stores; verified against its
            SHA-256).
        config_path: the ``bert_config.json`` the run was trained with (copied to ``out_dir``).
        out_dir: output directory (created).
        vocab_path: ``vocab.txt`` to copy beside the checkpoint (optional).
        model: the run's ``--model`` (``roberta``, ``gpt`` or ``unilm``).

    Returns:
        The checkpoint prefix written (``out_dir/bert_model.ckpt``).

    Raises:
        ValueError: the checkpoint is incomplete or corrupt, or lacks a weight of the model
            built from ``config_path`` (the weight's name is given), or a shape differs.
    """
    if model not in APPLICATIONS:
        raise ValueError("model must be one of %s, got %r" % (sorted(APPLICATIONS), model))
    meta, arrays = CheckpointManager.read(checkpoint_dir)
    by_name = {}
    for index, (name, _, _) in enumerate(meta["variables"]):
        by_name.setdefault(name, arrays["v%05d" % index])
    transformer = build_transformer_model(config_path, None, application=APPLICATIONS[model],
                                          with_mlm=True, return_keras_model=False)
    for weight in transformer.model.weights:
        value = by_name.get(weight.path)
        if value is None:
            raise ValueError("%s holds no weight %r (is --config the run's config?)"
                             % (checkpoint_dir, weight.path))
        if tuple(value.shape) != tuple(weight.shape):
            raise ValueError("%s: weight %r has shape %s in the checkpoint, %s in the model "
                             "built from %s" % (checkpoint_dir, weight.path, tuple(value.shape),
                                               tuple(weight.shape), config_path))
        weight.assign(value)
    fileio.makedirs(out_dir)
    prefix = fileio.join(out_dir, "bert_model.ckpt")
    transformer.save_weights_as_checkpoint(prefix)
    fileio.copy(config_path, fileio.join(out_dir, "bert_config.json"))
    if vocab_path:
        fileio.copy(vocab_path, fileio.join(out_dir, "vocab.txt"))
    source = os.fspath(checkpoint_dir)
    fileio.write_text(fileio.join(out_dir, "export_info.json"), json.dumps(
        {"checkpoint": os.path.abspath(source) if fileio.is_local(source) else source,
         "model": model, "batches": meta.get("batches"), "sha256": meta.get("sha256")},
        indent=2))
    return prefix


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint_dir", help="OUT_DIR/checkpoints/ckpt-NNNNNNNN")
    p.add_argument("--config", required=True, help="the run's bert_config.json")
    p.add_argument("--vocab", default=None, help="vocab.txt to copy beside the checkpoint")
    p.add_argument("--model", default="roberta", choices=sorted(APPLICATIONS))
    p.add_argument("--out", required=True, help="output directory")
    args = p.parse_args(argv)
    prefix = export_checkpoint(args.checkpoint_dir, args.config, args.out, args.vocab, args.model)
    print("wrote %s" % prefix)


if __name__ == "__main__":
    main()
