"""Pretraining from scratch: corpus -> TFRecord shards -> training -> checkpoint.

* :mod:`pretraining.data_utils` turns a text corpus into TFRecord shards for
  masked LM (RoBERTa-style whole-word masking), left-to-right LM (GPT) and
  sequence-to-sequence LM (UniLM), and loads them back as ``tf.data``
  pipelines ready for ``keras.Model.fit``.  Run
  ``python -m pretraining.data_utils --help`` for the command line.

Nothing is imported here, so ``python -m pretraining.data_utils`` runs the
module exactly once.
"""
