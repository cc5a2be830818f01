"""Issue 14: a bert4keras 0.11.5-style UniLM seq2seq script runs on this library.

The script below is ours, written in the old API only (``backend.K``,
``layers.Loss`` with ``compute_loss(inputs, mask)`` and ``output_axis``,
``build_transformer_model(..., application='unilm')``, ``optimizers.Adam``,
``snippets.sequence_padding`` and an ``AutoRegressiveDecoder`` subclass with
``@AutoRegressiveDecoder.wraps`` and ``beam_search``). It fine-tunes the shipped
small BERT on four source/title pairs through the ``Loss`` layer
(``compile`` without a loss, ``fit(x, None)``) and decodes each source with
beam search; it runs in a fresh process, as a user runs a script.
"""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = '# A bert4keras 0.11.5-style UniLM seq2seq script (our own, written in the old API):\n# a Loss subclass for training and an AutoRegressiveDecoder subclass with beam search.\nimport json\nimport sys\n\nimport numpy as np\nfrom bert4keras.backend import keras, K\nfrom bert4keras.layers import Loss\nfrom bert4keras.models import build_transformer_model\nfrom bert4keras.optimizers import Adam\nfrom bert4keras.snippets import sequence_padding, AutoRegressiveDecoder\nfrom bert4keras.tokenizers import Tokenizer\n\nconfig_path = \'checkpoints/chinese_bert_small/bert_config.json\'\ncheckpoint_path = \'checkpoints/chinese_bert_small/bert_model.ckpt\'\ndict_path = \'checkpoints/chinese_bert_small/vocab.txt\'\nsteps = int(sys.argv[1]) if len(sys.argv) > 1 else 120\n\npairs = [(u\'今天北京下了一场大雪\', u\'北京降雪\'), (u\'上海的股市今天大涨\', u\'股市大涨\'),\n         (u\'我们的球队赢得了比赛\', u\'球队获胜\'), (u\'这家工厂明年要扩大生产\', u\'工厂扩产\')]\ntokenizer = Tokenizer(dict_path, do_lower_case=True)\n\n\nclass CrossEntropy(Loss):\n    """Cross entropy on the target segment only (its segment ids are 1)."""\n\n    def compute_loss(self, inputs, mask=None):\n        y_true, y_mask, y_pred = inputs\n        y_true = y_true[:, 1:]\n        y_mask = y_mask[:, 1:]\n        y_pred = y_pred[:, :-1]\n        loss = K.sparse_categorical_crossentropy(y_true, y_pred)\n        return K.sum(loss * y_mask) / K.sum(y_mask)\n\n\nmodel = build_transformer_model(config_path, checkpoint_path, application=\'unilm\')\noutput = CrossEntropy(2)(model.inputs + model.outputs)\nmodel = keras.models.Model(model.inputs, output)\nmodel.compile(optimizer=Adam(1e-3))\n\ntoken_ids, segment_ids = [], []\nfor source, target in pairs:\n    t, s = tokenizer.encode(source, target, maxlen=64)\n    token_ids.append(t)\n    segment_ids.append(s)\ntoken_ids, segment_ids = sequence_padding(token_ids), sequence_padding(segment_ids)\nhistory = model.fit([token_ids, segment_ids], None, batch_size=4, epochs=steps, verbose=0)\nlosses = history.history[\'loss\']\n\n\nclass AutoTitle(AutoRegressiveDecoder):\n    @AutoRegressiveDecoder.wraps(default_rtype=\'probas\')\n    def predict(self, inputs, output_ids, states):\n        token_ids, segment_ids = inputs\n        token_ids = np.concatenate([token_ids, output_ids], 1)\n        segment_ids = np.concatenate([segment_ids, np.ones_like(output_ids)], 1)\n        return self.last_token(model).predict([token_ids, segment_ids], verbose=0)\n\n    def generate(self, text, topk=2):\n        token_ids, segment_ids = tokenizer.encode(text, maxlen=64)\n        output_ids = self.beam_search([token_ids, segment_ids], topk=topk)\n        return tokenizer.decode(output_ids)\n\n\nautotitle = AutoTitle(start_id=None, end_id=tokenizer._token_end_id, maxlen=8)\ntitles = [autotitle.generate(source) for source, _ in pairs]\nprint(json.dumps({\'first_loss\': losses[0], \'last_loss\': losses[-1], \'titles\': titles},\n                 ensure_ascii=False))\n'


def test_old_style_unilm_seq2seq_trains_and_beam_decodes(tmp_path):
    path = tmp_path / "old_style_seq2seq.py"
    path.write_text(SCRIPT, encoding="utf-8")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, str(path), "60"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["last_loss"] < 0.1 * report["first_loss"], report
    # four pairs learnt by heart: beam search must give each title back
    assert report["titles"] == ["北京降雪", "股市大涨", "球队获胜", "工厂扩产"], report


def test_random_sample_topp_of_one_or_more_keeps_every_token():
    """0.11.5 scripts pass ``topp`` >= 1 (e.g. ``random_sample(inputs, n, topk, topp=5)``):
    no nucleus cut, the same draws as without ``topp``; a negative ``topp`` raises."""
    import numpy as np
    import pytest

    from bert4keras.snippets import AutoRegressiveDecoder

    probs = np.array([[0.1, 0.2, 0.3, 0.4]], "float32")

    class Fixed(AutoRegressiveDecoder):
        @AutoRegressiveDecoder.wraps(default_rtype="probas")
        def predict(self, inputs, output_ids, states):
            return np.repeat(probs, len(output_ids), 0)

    decoder = Fixed(start_id=None, end_id=None, maxlen=6)
    plain = decoder.random_sample([np.array([1])], 3, seed=7)
    wide = decoder.random_sample([np.array([1])], 3, topp=5, seed=7)
    assert [list(x) for x in wide] == [list(x) for x in plain]
    with pytest.raises(ValueError):
        decoder.random_sample([np.array([1])], 3, topp=-0.5, seed=7)
