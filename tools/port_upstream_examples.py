#!/usr/bin/env python
"""Port bert4keras 0.11.5's own example scripts to this library and measure them.

Issue 14 measures compatibility the way a user would: take the example scripts
of bert4keras 0.11.5 (and its two pretraining scripts), change only file paths
and data sizes, apply the few rules that Keras 3 itself imposes (the porting
guide in README lists them), and run them. This tool does exactly that and
nothing more, so its table is an honest measure:

1. **Rewrite** each upstream script with the rules listed as data below
   (:data:`PATH_VARIABLES`, :data:`DATA_PATHS`, :data:`SIZE_RULES`,
   :data:`SCRIPT_RULES`, :data:`KERAS3_RULES`). Nothing else in the script is
   touched. The rewritten copies and a unified diff per script are kept in the
   work directory.
2. **Generate data**: every data set a script reads is replaced by a few
   examples written in the data set's official format (SKE json lines, CLUE
   iflytek json lines, People's Daily NER ``char tag`` lines, ...) in a
   temporary directory. Weights come from the shipped checkpoints
   ``checkpoints/chinese_bert_small`` and ``checkpoints/chinese_gpt_small``;
   where a script needs weights that are not shipped (ALBERT, GPT2-ML, CPM,
   mT5) a small config of that family is written and ``checkpoint_path`` set
   to None (random initialisation), and the result says so.
3. **Run**, one script at a time, in a subprocess under ``nice`` with a
   timeout and ``TF_CPP_MIN_LOG_LEVEL=2``, and **classify** the outcome:

   ``import-fails``     an import from bert4keras failed (the name is given)
   ``missing-package``  a third-party package the script imports is absent
   ``runs``             the script ran to its end (exit code 0)
   ``fails-later``      it failed after importing (first error line, script line)
   ``timeout``          it did not finish within the timeout
   ``needs-unavailable`` it needs data or weights this machine cannot have
                         (e.g. ImageNet weights from a hub); not run

``--mode imports`` runs only each script's import statements (one probe per
imported name, so every missing name is listed, not just the first) and checks
statically which ``K.*`` / ``keras.*`` attributes and ``tokenizer._*``
attributes the scripts use; it writes the list of missing names as Markdown
(``--missing-md``). ``--mode run`` runs the rewritten scripts.

Example::

    python tools/port_upstream_examples.py --src /tmp/upstream/examples \\
        --src /tmp/upstream/pretraining --mode imports \\
        --json /tmp/port_imports.json --missing-md /tmp/missing_names.md
    python tools/port_upstream_examples.py --src /tmp/upstream/examples \\
        --mode run --timeout 300 --json /tmp/port_run.json

The upstream scripts are not part of this repository (they are bert4keras's
code); point ``--src`` at a directory holding copies of them.
"""

import argparse
import ast
import difflib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the tfrecord writer imports TensorFlow

#: Shipped checkpoints a script's ``config_path``/``checkpoint_path``/``dict_path``
#: are pointed at (key -> directory holding bert_config.json, bert_model.ckpt,
#: vocab.txt).
CHECKPOINTS = {
    "bert": REPO / "checkpoints" / "chinese_bert_small",
    "gpt": REPO / "checkpoints" / "chinese_gpt_small",
}

# --------------------------------------------------------------------------
# Rewrite rules (data). Placeholders: {ckpt} checkpoint directory, {data} the
# generated-data directory, {work} the script's work directory, {config} the
# config file to use (shipped or generated), {vocab} the shipped vocab.txt.
# --------------------------------------------------------------------------

#: Module-level ``NAME = '...'`` assignments whose string value is replaced.
PATH_VARIABLES = {
    "config_path": "{config}",
    "checkpoint_path": "{ckpt}/bert_model.ckpt",
    "dict_path": "{vocab}",
    "spm_path": "{data}/spm/sp.model",
    "keep_tokens_path": "{data}/spm/keep_tokens.json",
    "model_saved_path": "{work}/saved_model/bert_model.weights.h5",
}

#: Literal path prefixes -> generated data (a plain string replacement).
DATA_PATHS = [
    ("datasets/sentiment/", "{data}/sentiment/"),
    ("datasets/lcqmc/", "{data}/lcqmc/"),
    ("/root/CLUE-master/baselines/CLUEdataset/iflytek/", "{data}/iflytek/"),
    ("/root/金庸/", "{data}/novels/"),
    ("/root/qipu.json", "{data}/qipu.json"),
    ("/root/qa_datasets/", "{data}/qa/"),
    ("/root/kg/datasets/", "{data}/ske/"),
    ("/root/ape210k/", "{data}/ape210k/"),
    ("/root/csl/", "{data}/csl/"),
    ("/root/thuctc/THUCNews/", "{data}/thucnews/"),
    ("/root/ner/china-people-daily-ner-corpus/", "{data}/ner/"),
    ("/root/icwb2-data/", "{data}/icwb2/"),
    ("/root/caption/coco/", "{data}/coco/"),
    ("gs://xxxx/bert4keras/corpus/", "{data}/corpus/"),
    ("/home/spaces_ac_cn/corpus/", "{data}/corpus_json/"),
    # Files the scripts write next to their parent directory: keep them in
    # the script's own work directory (they differ per data set).
    ("../random_order.json", "./random_order.json"),
    ("../corpus_tfrecord/", "./corpus_tfrecord/"),
]

#: Data-size reductions: (regex, replacement), applied line by line (re.M).
SIZE_RULES = [
    (r"^(\s*)epochs = \d+[ \t]*$", r"\1epochs = 1"),
    (r"^(\s*)batch_size = \d+[ \t]*$", r"\1batch_size = 4"),
    (r"^(\s*)steps_per_epoch = \d+[ \t]*$", r"\1steps_per_epoch = 2"),
    (r"^maxlen = \d+[ \t]*$", "maxlen = 32"),
    (r"\bepochs=\d+", "epochs=1"),
    (r"\bsteps_per_epoch=\d+", "steps_per_epoch=2"),
    # the layer index of the shipped 4-layer checkpoint (12 in BERT base)
    (r"^bert_layers = \d+[ \t]*$", "bert_layers = 4"),
]

#: Per-script size/setting rewrites (script stem -> [(regex, replacement)]).
SCRIPT_RULES = {
    "basic_gibbs_sampling_via_mlm": [
        (r"^steps = \d+", "steps = 12"), (r"^converged_steps = \d+", "converged_steps = 4"),
    ],
    "basic_language_model_gpt2_ml": [(r"maxlen=256", "maxlen=16"), (r"minlen=128", "minlen=4")],
    "basic_language_model_nezha_gen_gpt": [(r"maxlen=256", "maxlen=16"),
                                           (r"minlen=128", "minlen=4")],
    "basic_simple_web_serving_simbert": [(r"port=8864", "port={port}")],
    # the title decoder's 32 tokens would leave no room for the text at maxlen 32
    **{name: [(r"end_id=tokenizer\._token_end_id, maxlen=32\)",
               "end_id=tokenizer._token_end_id, maxlen=8)")]
       for name in ("task_seq2seq_autotitle", "task_seq2seq_autotitle_csl",
                    "task_seq2seq_autotitle_multigpu")},
    "task_sentiment_virtual_adversarial_training": [(r"^train_frac = [\d.]+", "train_frac = 0.5")],
    # 12 -> 3 layers upstream; the shipped checkpoint has 4, so 4 -> 1.
    "task_iflytek_bert_of_theseus": [(r"num_hidden_layers=3", "num_hidden_layers=1")],
    "task_conditional_language_model": [(r"random_sentiment\.generate\((\d), 5, 5\)",
                                         r"random_sentiment.generate(\1, 2, 5)")],
    "pretraining": [
        (r"^sequence_length = \d+", "sequence_length = 32"),
        (r"^batch_size = \d+", "batch_size = 8"),
        (r"^num_warmup_steps = \d+", "num_warmup_steps = 1"),
        (r"^num_train_steps = \d+", "num_train_steps = 4"),
        (r"^steps_per_epoch = \d+", "steps_per_epoch = 2"),
        (r"^grad_accum_steps = \d+", "grad_accum_steps = 2"),
        (r"^tpu_address = .*$", "tpu_address = None"),
    ],
    "data_utils": [
        (r"^    sequence_length = \d+", "    sequence_length = 32"),
        (r"^    workers = \d+", "    workers = 2"),
        (r"^    max_queue_size = \d+", "    max_queue_size = 16"),
    ],
}

#: The rules Keras 3 imposes, which a user applies by hand (README porting
#: guide): (name, regex, replacement, the error a user sees without it).
KERAS3_RULES = [
    ("weights-suffix", r"""(['"])([^'"\n]*?)\.weights\1""", r"\1\2.weights.h5\1",
     "ValueError: The filename must end in `.weights.h5`. Received: filepath=best_model.weights"),
    ("fit-generator", r"\.fit_generator\(", ".fit(",
     "AttributeError: 'Functional' object has no attribute 'fit_generator'"),
    ("model-save-suffix", r"""\.save\((['"])([^'"\n]*?)(?<!\.keras)(?<!\.h5)\1\)""",
     r".save(\1\2.keras\1)",
     "ValueError: Invalid filepath extension for saving. Please add either a `.keras` "
     "extension for the native Keras format (recommended) or a `.h5` extension."),
    ("get-output-at", r"\.get_output_at\(-1\)", ".output",
     "AttributeError: 'Add' object has no attribute 'get_output_at' (Keras 3 keeps one output "
     "per layer call: `.output` for a layer called once)"),
    ("predict-lists", r"\.predict\(\[(\[.*?\])\]\)", lambda m: _predict_arrays(m),
     "ValueError: Unrecognized data type: x=[[[2, 4805, ...]], [[0, 0, ...]]] (of type "
     "<class 'list'>) (Keras 3 takes NumPy arrays or tensors, not nested Python lists)"),
    ("load-model-suffix", r"""load_model\((['"])([^'"\n]*?)(?<!\.keras)(?<!\.h5)\1\)""",
     r"load_model(\1\2.keras\1)",
     "ValueError: File format not supported: filepath=test.model. Keras 3 only supports "
     "V3 `.keras` files and legacy H5 format files (`.h5` extension)."),
]

#: Weights per script: 'bert'/'gpt' (shipped checkpoint) or ('random', family,
#: why) when the script's own weights are not shipped. Default 'bert'.
WEIGHTS = {
    "basic_language_model_nezha_gen_gpt": "gpt",
    "basic_language_model_gpt2_ml": ("random", "gpt2_ml", "GPT2-ML weights are not shipped"),
    "basic_language_model_cpm_lm": ("random", "gpt2", "CPM-LM 2.6B weights are not shipped"),
    "task_sentiment_albert": ("random", "albert", "albert_small_zh_google weights are not shipped"),
    "task_sentiment_integrated_gradients": ("random", "albert",
                                            "albert_small_zh_google weights are not shipped"),
    "task_seq2seq_autotitle_csl_mt5": ("random", "t5", "mT5 base weights are not shipped"),
    "basic_simple_web_serving_simbert": ("random", "bert", "SimBERT weights are not shipped and "
                                         "the shipped small BERT has no pooler"),
    "task_sentence_similarity_lcqmc": ("random", "bert", "with_pool=True needs "
                                       "bert/pooler/dense, absent from the shipped small BERT"),
}

#: Scripts that cannot run here at all: stem -> reason (they are import-probed).
NEEDS_UNAVAILABLE = {
    "task_image_caption": "MobileNetV2 ImageNet weights (downloaded from a hub at run time) "
                          "and COCO images; also needs cv2",
}

#: Scripts that run in another script's work directory, after it (they import
#: it and load the weights it saved).
DEPENDS = {"task_sentiment_integrated_gradients": "task_sentiment_albert"}

#: Scripts that serve HTTP forever: the harness queries the route, then stops it.
SERVE = {"basic_simple_web_serving_simbert": "/gen_synonyms?text=%E8%8B%B9%E6%9E%9C&n=2&k=1"}

#: Small configs (bert4keras format) for the families whose weights are absent.
RANDOM_CONFIGS = {
    "bert": json.loads((CHECKPOINTS["bert"] / "bert_config.json").read_text()),
    "albert": {"vocab_size": 13585, "hidden_size": 64, "embedding_size": 32,
               "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128,
               "hidden_act": "gelu", "max_position_embeddings": 512, "type_vocab_size": 2,
               "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1},
    "gpt2_ml": {"vocab_size": 13585, "hidden_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 2, "intermediate_size": 128, "hidden_act": "gelu",
                "max_position_embeddings": 512, "hidden_dropout_prob": 0.1,
                "attention_probs_dropout_prob": 0.1},
    "gpt2": {"vocab_size": None, "hidden_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 2, "intermediate_size": 128, "hidden_act": "gelu",
             "max_position_embeddings": 512, "hidden_dropout_prob": 0.1,
             "attention_probs_dropout_prob": 0.1},
    "t5": {"vocab_size": None, "hidden_size": 64, "num_hidden_layers": 2,
           "num_attention_heads": 2, "attention_head_size": 32, "intermediate_size": 128,
           "hidden_act": ["gelu", "linear"], "hidden_dropout_prob": 0.1,
           "attention_probs_dropout_prob": 0.1, "relative_attention_num_buckets": 32},
}

# --------------------------------------------------------------------------
# Generated data in the official formats.
# --------------------------------------------------------------------------

SENTENCES = [
    "今天天气很好，我们去公园散步。", "这本书写得很好，我很喜欢。",
    "酒店的服务很差，房间也不干净。",
    "北京是中国的首都。", "手机的电池不太好，用了一天就没电了。", "这家店的菜很好吃，价格也不贵。",
    "张三在上海工作，他是一名医生。", "李四出生于广州，现在住在北京。",
    "科学技术是第一生产力。", "我想买一台新的电脑。", "老师说明天要考试。",
    "他们在学校里学习数学。",
]


def _write(path, text, encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)


def generate_data(data, vocab_path):
    """Write every data set the upstream scripts read, a few examples each.

    Args:
        data: the directory to write into (``{data}`` in the rules).
        vocab_path: the shipped vocab.txt (the keep-tokens list of the
            generated SentencePiece model must index into a vocabulary).
    """
    data = Path(data)
    lines = ["%s\t%d" % (s, i % 2) for i, s in enumerate(SENTENCES)]
    for split in ("train", "valid", "test"):
        _write(data / "sentiment" / ("sentiment.%s.data" % split), "\n".join(lines) + "\n")
        pairs = ["%s\t%s\t%d" % (SENTENCES[i], SENTENCES[(i + k) % 12], int(k == 0))
                 for i in range(8) for k in (0, 1)]
        _write(data / "lcqmc" / ("lcqmc.%s.data" % split), "\n".join(pairs) + "\n")
    for split in ("train", "dev", "test"):
        rows = [json.dumps({"id": i, "label": str(i % 3), "label_des": "x", "sentence": s},
                           ensure_ascii=False) for i, s in enumerate(SENTENCES)]
        _write(data / "iflytek" / ("%s.json" % split), "\n".join(rows) + "\n")
    for book in ("射雕", "天龙"):
        _write(data / "novels" / book / "1.txt", "".join(SENTENCES * 2) + "\n", encoding="gbk")
    moves = "h2e2h9g7b0c2b9c7"
    _write(data / "qipu.json", "\n".join(json.dumps({"fen": "", "items": {"棋局结果": "2"},
                                                     "iccs": moves}, ensure_ascii=False)
                                          for _ in range(4)) + "\n")
    qa = [{"id": "q%d" % i, "question": "谁在上海工作？" if i % 2 else "北京是哪个国家的首都？",
           "passages": [{"passage": SENTENCES[6], "answer": "张三" if i % 2 else ""},
                        {"passage": SENTENCES[3], "answer": "" if i % 2 else "中国"}]}
          for i in range(6)]
    for name in ("WebQA.json", "SogouQA.json"):
        _write(data / "qa" / name, json.dumps(qa, ensure_ascii=False))
    spo = [{"text": "张三出生于广州，现在住在北京。",
            "spo_list": [{"subject": "张三", "predicate": "出生地", "object": "广州",
                          "subject_type": "人物", "object_type": "地点"}]},
           {"text": "李四的妻子是王五。",
            "spo_list": [{"subject": "李四", "predicate": "妻子", "object": "王五",
                          "subject_type": "人物", "object_type": "人物"}]}] * 3
    for name in ("train_data.json", "dev_data.json"):
        _write(data / "ske" / name,
               "\n".join(json.dumps(d, ensure_ascii=False) for d in spo) + "\n")
    _write(data / "ske" / "all_50_schemas", "\n".join(
        json.dumps({"object_type": o, "predicate": p, "subject_type": "人物"}, ensure_ascii=False)
        for p, o in (("出生地", "地点"), ("妻子", "人物"))) + "\n")
    ape = [{"id": str(i),
            "original_text": "小明有%d个苹果，又买了%d个，现在有多少个？" % (i + 2, i + 1),
            "equation": "x=%d+%d" % (i + 2, i + 1), "ans": str(2 * i + 3)} for i in range(8)]
    for split in ("train", "valid", "test"):
        _write(data / "ape210k" / ("%s.ape.json" % split),
               "\n".join(json.dumps(d, ensure_ascii=False) for d in ape) + "\n")
        _write(data / "csl" / ("%s.tsv" % ("val" if split == "valid" else split)),
               "\n".join("%s\t%s" % (s[:6], s + SENTENCES[(i + 1) % 12])
                         for i, s in enumerate(SENTENCES[:8])) + "\n")
    for i, s in enumerate(SENTENCES[:8]):
        _write(data / "thucnews" / ("体育" if i % 2 else "科技") / ("%d.txt" % i),
               "%s\n%s%s\n" % (s[:6], s, SENTENCES[(i + 3) % 12]))
    ner = []
    for text, ents in (("张三在上海工作。", [(0, 2, "PER"), (3, 5, "LOC")]),
                       ("李四住在北京。", [(0, 2, "PER"), (4, 6, "LOC")]),
                       ("王五去了广州。", [(0, 2, "PER"), (4, 6, "LOC")])):
        tags = ["O"] * len(text)
        for start, end, label in ents:
            tags[start] = "B-" + label
            for k in range(start + 1, end):
                tags[k] = "I-" + label
        ner.append("\n".join("%s %s" % (c, t) for c, t in zip(text, tags)))
    for split in ("train", "dev", "test"):
        # blocks separated by a blank line; no newline after the last one
        _write(data / "ner" / ("example.%s" % split), "\n\n".join(ner * 2))
    words = ["今天 天气 很 好 ， 我们 去 公园 散步 。", "北京 是 中国 的 首都 。",
             "科学 技术 是 第一 生产力 。", "他们 在 学校 里 学习 数学 。"] * 5
    _write(data / "icwb2" / "training" / "pku_training.utf8", "\n".join(words) + "\n")
    for i in range(3):
        _write(data / "corpus_json" / "a" / "b" / ("%d.json" % i),
               "\n".join(json.dumps({"text": "".join(SENTENCES)}, ensure_ascii=False)
                         for _ in range(3)) + "\n")
    _write_sentencepiece(data / "spm")


def _write_sentencepiece(spm_dir):
    """Train a tiny SentencePiece model (with ``<cls>``, ``</s>`` pieces) and
    its keep-tokens list (identity), as CPM/mT5 scripts expect."""
    import sentencepiece as spm  # only needed here

    spm_dir.mkdir(parents=True, exist_ok=True)
    corpus = spm_dir / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES * 20) + "\n狗 dog 猫 cat 猪 pig 鸟 bird\n",
                      encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(spm_dir / "sp"), vocab_size=200, hard_vocab_limit=False,
        character_coverage=1.0, model_type="unigram", user_defined_symbols=["<cls>"],
        pad_id=0, unk_id=2, bos_id=-1, eos_id=1, pad_piece="<pad>", eos_piece="</s>",
        minloglevel=2)
    size = spm.SentencePieceProcessor(model_file=str(spm_dir / "sp.model")).get_piece_size()
    (spm_dir / "keep_tokens.json").write_text(json.dumps(list(range(size))))
    return size


def _write_tfrecords(corpus_dir, sequence_length=32, files=10, records=16):
    """RoBERTa-mode pretraining records as upstream's data_utils writes them:
    int64 features ``token_ids`` and ``mask_ids`` of ``sequence_length``."""
    import numpy as np
    import tensorflow as tf

    corpus_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for f in range(files):
        with tf.io.TFRecordWriter(str(corpus_dir / ("corpus.%d.tfrecord" % f))) as writer:
            for _ in range(records):
                ids = [2] + list(rng.integers(100, 5000, sequence_length - 2)) + [3]
                mask = [int(t) + 1 if rng.random() < 0.15 else 0 for t in ids]
                feats = {k: tf.train.Feature(int64_list=tf.train.Int64List(value=v))
                         for k, v in (("token_ids", ids), ("mask_ids", mask))}
                writer.write(tf.train.Example(features=tf.train.Features(feature=feats))
                             .SerializeToString())


# --------------------------------------------------------------------------
# Rewriting.
# --------------------------------------------------------------------------


def _split_top_level(text):
    """Split ``text`` at the commas that are outside brackets."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def _predict_arrays(match):
    """``.predict([[a], [b]])`` -> ``.predict([np.array([a]), np.array([b])])``
    (Keras 3 does not take nested Python lists as model inputs)."""
    items = _split_top_level(match.group(1))
    if not all(i.startswith("[") and i.endswith("]") for i in items):
        return match.group(0)
    return ".predict([%s])" % ", ".join("np.array(%s)" % i for i in items)


def rewrite(source, stem, paths):
    """Apply the rules to one script's source.

    Args:
        source: the upstream script text.
        stem: its file name without ``.py`` (selects :data:`SCRIPT_RULES`,
            :data:`WEIGHTS`).
        paths: dict with ``ckpt``, ``config``, ``data``, ``work``, ``port``
            (strings) filled into the placeholders; ``ckpt`` None means random
            initialisation (``checkpoint_path = None``).

    Returns:
        ``(new_source, applied)`` where ``applied`` lists the names of the
        rules that changed something.
    """
    applied = []

    def fill(template):
        return template.format(**{k: ("" if v is None else v) for k, v in paths.items()})

    text = source
    for name, template in PATH_VARIABLES.items():
        pattern = re.compile(r"^([ \t]*%s[ \t]*=[ \t]*)(['\"]).*?\2(.*)$" % name, re.M)
        if name == "checkpoint_path" and paths.get("ckpt") is None:
            new = pattern.sub(lambda m: m.group(1) + "None" + m.group(3), text)
        else:
            value = repr(fill(template))
            new = pattern.sub(lambda m, v=value: m.group(1) + v + m.group(3), text)
        if new != text:
            applied.append("path:" + name)
            text = new
    for old, template in DATA_PATHS:
        if old in text:
            text = text.replace(old, fill(template))
            applied.append("data:" + old)
    for pattern, repl in SIZE_RULES + SCRIPT_RULES.get(stem, []):
        new = re.sub(pattern, fill(repl), text, flags=re.M)
        if new != text:
            applied.append("size:" + pattern)
            text = new
    for name, pattern, repl, _ in KERAS3_RULES:
        new = re.sub(pattern, repl, text)
        if new != text:
            applied.append("keras3:" + name)
            text = new
    return text, applied


# --------------------------------------------------------------------------
# Import probes and static attribute checks.
# --------------------------------------------------------------------------


def import_statements(source):
    """Every import in ``source`` as ``(lineno, code, module, name, nested)``;
    one entry per imported name (``name`` None for ``import x``)."""
    tree = ast.parse(source)
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        nested = id(node) not in top
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.append((node.lineno, "import %s" % alias.name, alias.name, None, nested))
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            for alias in node.names:
                out.append((node.lineno, "from %s import %s" % (node.module, alias.name),
                            node.module, alias.name, nested))
    return sorted(out, key=lambda s: s[0])


PROBE = r'''
import json, sys, traceback
sys.path.append(%(extra)r)
results = []
for lineno, code, module, name, nested in %(stmts)r:
    try:
        exec(code, {})
        results.append([lineno, code, module, name, nested, None])
    except BaseException as exc:  # noqa: BLE001 - report every failure
        results.append([lineno, code, module, name, nested,
                        "%%s: %%s" %% (type(exc).__name__,
                                       str(exc).splitlines()[0] if str(exc) else "")])
attrs = {}
try:
    from bert4keras.backend import K, keras
    for n in %(k_names)r:
        attrs["K." + n] = hasattr(K, n)
    for chain in %(keras_chains)r:
        obj, ok = keras, True
        for part in chain.split(".")[1:]:
            if not hasattr(obj, part):
                ok = False
                break
            obj = getattr(obj, part)
        attrs[chain] = ok
except BaseException as exc:  # noqa: BLE001
    attrs["<backend>"] = "%%s: %%s" %% (type(exc).__name__, exc)
try:
    from bert4keras.tokenizers import Tokenizer
    tok = Tokenizer(%(vocab)r, do_lower_case=True)
    for n in %(tok_names)r:
        attrs["Tokenizer()." + n] = hasattr(tok, n)
except BaseException as exc:  # noqa: BLE001
    attrs["<tokenizer>"] = "%%s: %%s" %% (type(exc).__name__, exc)
try:
    from bert4keras.snippets import AutoRegressiveDecoder
    for n in %(decoder_names)r:
        attrs["AutoRegressiveDecoder." + n] = hasattr(AutoRegressiveDecoder, n)
except BaseException as exc:  # noqa: BLE001
    attrs["<decoder>"] = "%%s: %%s" %% (type(exc).__name__, exc)
print("@@PROBE@@" + json.dumps({"imports": results, "attrs": attrs}))
'''


def static_names(source):
    """Attribute names a script uses on ``K``, ``keras``, a tokenizer and an
    AutoRegressiveDecoder subclass (found by regular expressions)."""
    k_names = sorted(set(re.findall(r"\bK\.([A-Za-z_]\w*)", source)))
    keras_chains = sorted(set(re.findall(r"\b(keras(?:\.[A-Za-z_]\w*)+)", source)))
    keras_chains = [c for c in keras_chains if not c.startswith("keras.layers.")]
    tok_names = sorted(set(re.findall(r"\btokenizer\.(_\w+)", source)))
    # methods only: end_id, maxlen, ... are set per instance in __init__
    decoder_names = sorted(set(re.findall(r"\bself\.(beam_search|random_sample|last_token)\b",
                                          source)))
    return k_names, keras_chains, tok_names, decoder_names


def probe_imports(script, sources, extra_path, timeout):
    """Run ``script``'s imports (each name separately) in a subprocess.

    Sibling scripts (modules that are files in one of ``sources``) that would
    *run* another example are skipped; pure modules (``data_utils``) are
    imported from the script's directory.
    """
    source = script.read_text(encoding="utf-8")
    siblings = {p.stem for d in sources for p in Path(d).glob("*.py")}
    stmts = []
    skipped = []
    for lineno, code, module, name, nested in import_statements(source):
        if module.split(".")[0] in siblings and module != "data_utils":
            skipped.append(code)
            continue
        stmts.append((lineno, code, module, name, nested))
    k_names, keras_chains, tok_names, decoder_names = static_names(source)
    code = PROBE % {"extra": extra_path or "", "stmts": stmts, "k_names": k_names,
                    "keras_chains": keras_chains, "tok_names": tok_names,
                    "decoder_names": decoder_names,
                    "vocab": str(CHECKPOINTS["bert"] / "vocab.txt")}
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(script.parent))
    proc = subprocess.run(["nice", "-n", "10", sys.executable, "-c", code], cwd=script.parent,
                          env=env, capture_output=True, text=True, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("@@PROBE@@"):
            result = json.loads(line[len("@@PROBE@@"):])
            result["skipped"] = skipped
            return result
    return {"imports": [], "attrs": {}, "skipped": skipped,
            "error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}


def classify_imports(result):
    """Status of an import probe: ``import-fails`` (bert4keras names),
    ``missing-package`` (third-party), or ``imports``."""
    ours = [r for r in result["imports"] if r[5] and r[2].split(".")[0] == "bert4keras"]
    theirs = [r for r in result["imports"] if r[5] and r[2].split(".")[0] != "bert4keras"]
    if result.get("error"):
        return "import-fails", result["error"]
    if ours:
        return "import-fails", "; ".join("%s (%s)" % (r[1], r[5]) for r in ours)
    if theirs:
        return "missing-package", "; ".join("%s (%s)" % (r[1], r[5]) for r in theirs)
    return "imports", ""


# --------------------------------------------------------------------------
# Running.
# --------------------------------------------------------------------------

RUNNER = ("import runpy, sys; sys.argv = [%(script)r]; sys.path.insert(0, %(dir)r); "
          "sys.path.append(%(extra)r); runpy.run_path(%(script)r, run_name='__main__')")

FRAME = re.compile(r'^  File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>.+)$')


def parse_traceback(stderr, script):
    """First error line of the last traceback, the failing script line and the
    deepest bert4keras frame (``file:line``), from a stderr text."""
    lines = stderr.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent")]
    if not starts:
        tail = [line for line in lines if line.strip()]
        return {"error": tail[-1] if tail else "", "script_line": None, "library_frame": None}
    block = lines[starts[-1]:]
    frames, i = [], 1
    error = ""
    while i < len(block):
        m = FRAME.match(block[i])
        if m:
            code = block[i + 1].strip() if i + 1 < len(block) and not FRAME.match(block[i + 1]) \
                else ""
            frames.append((m.group("file"), int(m.group("line")), code))
            i += 1
            continue
        if block[i] and not block[i].startswith(" "):
            error = block[i]
            break
        i += 1
    script_line = next(("%d: %s" % (ln, code) for f, ln, code in reversed(frames)
                        if f == str(script)), None)
    lib = str(REPO / "bert4keras")
    library_frame = next(("%s:%d" % (os.path.relpath(f, REPO), ln) for f, ln, _ in reversed(frames)
                          if f.startswith(lib)), None)
    return {"error": error[:400], "script_line": script_line, "library_frame": library_frame}


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_script(script, work, extra_path, timeout, serve_query=None, port=None):
    """Run one rewritten script; returns a dict with status and details."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)
    code = RUNNER % {"script": str(script), "dir": str(script.parent), "extra": extra_path or ""}
    out_path, err_path = work / (script.stem + ".stdout"), work / (script.stem + ".stderr")
    start = time.time()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(["nice", "-n", "10", sys.executable, "-c", code], cwd=work,
                                env=env, stdout=out, stderr=err, start_new_session=True)
        served = None
        try:
            if serve_query:
                served = _poll_server(proc, port, serve_query, timeout)
                proc.terminate()
                proc.wait(30)
            else:
                proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            seconds = round(time.time() - start)
            info = parse_traceback(err_path.read_text(errors="replace"), script)
            if "Traceback" in err_path.read_text(errors="replace"):
                # failed, then hung (a non-daemon thread kept the process alive)
                info["error"] += " (then did not exit within %d s)" % timeout
                return {"status": "fails-later", "seconds": seconds, **info}
            return {"status": "timeout", "seconds": seconds,
                    "detail": "no exit within %d s" % timeout}
    seconds = round(time.time() - start)
    stderr = err_path.read_text(errors="replace")
    if serve_query:
        if served is not None:
            return {"status": "runs", "seconds": seconds,
                    "detail": "served %s -> %s" % (serve_query, served[:200])}
        info = parse_traceback(stderr, script)
        return {"status": "fails-later", "seconds": seconds, **info}
    if proc.returncode == 0:
        return {"status": "runs", "seconds": seconds, "detail": ""}
    info = parse_traceback(stderr, script)
    status = "fails-later"
    m = re.match(r"(ModuleNotFoundError|ImportError): (.*)", info["error"])
    if m and "bert4keras" not in m.group(2):
        status = "missing-package"
    elif m:
        status = "import-fails"
    return {"status": status, "seconds": seconds, **info}


def _poll_server(proc, port, query, timeout):
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            return None
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, query), timeout=60) as r:
                return r.read().decode("utf-8", "replace")
        except OSError:
            time.sleep(2)
    return None


def prepare(scripts, root, extra_path):
    """Rewrite every script into its work directory; generate data and configs.

    Returns ``{stem: (rewritten_path, applied_rules, weights_note)}``.
    """
    data = root / "data"
    generate_data(data, CHECKPOINTS["bert"] / "vocab.txt")
    spm_size = len(json.loads((data / "spm" / "keep_tokens.json").read_text()))
    configs = {}
    for family, cfg in RANDOM_CONFIGS.items():
        cfg = dict(cfg)
        if cfg["vocab_size"] is None:
            cfg["vocab_size"] = spm_size
        configs[family] = data / "configs" / ("%s.json" % family)
        _write(configs[family], json.dumps(cfg, indent=2))
    if any(s.stem == "pretraining" for s in scripts):
        _write_tfrecords(data / "corpus")
    prepared = {}
    for script in scripts:
        stem = script.stem
        work = root / DEPENDS.get(stem, stem)
        work.mkdir(parents=True, exist_ok=True)
        weights = WEIGHTS.get(stem, "bert")
        if isinstance(weights, tuple):
            ckpt, config = None, configs[weights[1]]
            note = "random-init %s (%s)" % (weights[1], weights[2])
            ckpt_dir = CHECKPOINTS["bert"]  # vocab.txt still comes from here
        else:
            ckpt_dir = CHECKPOINTS[weights]
            ckpt, config = str(ckpt_dir), ckpt_dir / "bert_config.json"
            note = "shipped %s" % ckpt_dir.name
        port = _free_port()
        paths = {"ckpt": ckpt, "config": str(config), "data": str(data), "work": str(work),
                 "port": str(port), "vocab": str(ckpt_dir / "vocab.txt")}
        source = script.read_text(encoding="utf-8")
        new, applied = rewrite(source, stem, paths)
        # every sibling goes into each work directory (some scripts import one)
        for sibling in scripts:
            if sibling.parent == script.parent and sibling != script:
                target = work / sibling.name
                if not target.exists():
                    sib_new, _ = rewrite(sibling.read_text(encoding="utf-8"), sibling.stem, paths)
                    target.write_text(sib_new, encoding="utf-8")
        out = work / script.name
        out.write_text(new, encoding="utf-8")
        diff = difflib.unified_diff(source.splitlines(True), new.splitlines(True),
                                    "upstream/" + script.name, "ported/" + script.name)
        (work / (stem + ".diff")).write_text("".join(diff), encoding="utf-8")
        prepared[stem] = (out, applied, note, port)
    return prepared


# --------------------------------------------------------------------------
# Reports.
# --------------------------------------------------------------------------


def table(rows):
    """Markdown table of ``rows`` (dicts with script, status, detail...)."""
    out = ["| script | status | detail |", "|---|---|---|"]
    for r in rows:
        detail = r.get("detail") or ""
        if r.get("error"):
            detail = r["error"]
            if r.get("script_line"):
                detail += " — at line %s" % r["script_line"]
            if r.get("library_frame"):
                detail += " — in %s" % r["library_frame"]
        if r.get("weights") and not r["weights"].startswith("shipped"):
            detail = ("[%s] " % r["weights"]) + detail
        out.append("| %s | %s | %s |" % (r["script"], r["status"],
                                           detail.replace("|", "\\|").replace("\n", " ")))
    return "\n".join(out)


def missing_markdown(rows):
    """Markdown listing every missing bert4keras name with the scripts using it."""
    by_name, packages, attrs = {}, {}, {}
    for r in rows:
        for _lineno, _code, module, name, _nested, err in r["probe"]["imports"]:
            if not err:
                continue
            key = "%s.%s" % (module, name) if name else module
            target = by_name if module.split(".")[0] == "bert4keras" else packages
            target.setdefault(key, {"error": err, "scripts": []})["scripts"].append(r["script"])
        for key, ok in r["probe"]["attrs"].items():
            if ok is not True:
                attrs.setdefault(key, {"error": ok, "scripts": []})["scripts"].append(r["script"])
    lines = ["# Missing names: bert4keras 0.11.5 example scripts on this library", "",
             "Generated by `tools/port_upstream_examples.py --mode imports` (%s)." %
             time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "",
             "## Imports from bert4keras that fail (one probe per imported name)", ""]
    for key in sorted(by_name, key=lambda k: (-len(by_name[k]["scripts"]), k)):
        v = by_name[key]
        lines.append("- `%s` — %d script(s): %s — `%s`" % (key, len(v["scripts"]),
                                                           ", ".join(v["scripts"]), v["error"]))
    if not by_name:
        lines.append("- none")
    lines += ["", "## Attributes used by the scripts that are missing (static scan)", ""]
    for key in sorted(attrs, key=lambda k: (-len(attrs[k]["scripts"]), k)):
        v = attrs[key]
        err = "" if v["error"] is False else " — `%s`" % v["error"]
        lines.append("- `%s` — %d script(s): %s%s" % (key, len(v["scripts"]),
                                                      ", ".join(v["scripts"]), err))
    if not attrs:
        lines.append("- none")
    lines += ["", "## Third-party packages the scripts import that are absent here", ""]
    for key in sorted(packages):
        v = packages[key]
        lines.append("- `%s` — %s — `%s`" % (key, ", ".join(v["scripts"]), v["error"]))
    if not packages:
        lines.append("- none")
    return "\n".join(lines) + "\n"


def find_scripts(sources, only):
    scripts = []
    for src in sources:
        scripts += sorted(Path(src).glob("*.py"))
    if only:
        wanted = set(only.split(","))
        scripts = [s for s in scripts if s.stem in wanted or s.name in wanted]
    return scripts


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Rules applied: see PATH_VARIABLES, DATA_PATHS, SIZE_RULES, SCRIPT_RULES, "
               "KERAS3_RULES at the top of this file.")
    parser.add_argument("--src", action="append", required=True,
                        help="directory of upstream scripts (repeatable)")
    parser.add_argument("--mode", choices=("imports", "run", "rewrite"), default="imports",
                        help="imports: probe imports only; run: rewrite and run; "
                             "rewrite: only write the ported scripts and diffs")
    parser.add_argument("--only", help="comma-separated script stems to process")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per script")
    parser.add_argument("--work", help="work directory (default: a new temp dir, kept)")
    parser.add_argument("--extra-path", default="",
                        help="directory appended to sys.path (third-party packages "
                             "installed with pip --target)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--missing-md", help="(imports mode) write the missing names here")
    parser.add_argument("--table-md", help="write the Markdown table here")
    args = parser.parse_args(argv)

    scripts = find_scripts(args.src, args.only)
    if not scripts:
        parser.error("no scripts found in %s" % args.src)
    root = Path(args.work or tempfile.mkdtemp(prefix="port_upstream_"))
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    if args.mode == "imports":
        for script in scripts:
            probe = probe_imports(script, args.src, args.extra_path, args.timeout)
            status, detail = classify_imports(probe)
            if script.stem in NEEDS_UNAVAILABLE and status == "imports":
                detail = "imports; cannot run here: " + NEEDS_UNAVAILABLE[script.stem]
            rows.append({"script": script.stem, "status": status, "detail": detail,
                         "probe": probe})
            print("%-50s %s %s" % (script.stem, status, detail[:150]), flush=True)
        if args.missing_md:
            Path(args.missing_md).write_text(missing_markdown(rows), encoding="utf-8")
    else:
        prepared = prepare(scripts, root, args.extra_path)
        order = sorted(prepared, key=lambda s: (s in DEPENDS, s))
        for stem in order:
            out, applied, note, port = prepared[stem]
            row = {"script": stem, "weights": note, "rules": applied, "work": str(out.parent)}
            if args.mode == "rewrite":
                row.update(status="rewritten", detail=", ".join(applied))
            elif stem in NEEDS_UNAVAILABLE:
                row.update(status="needs-unavailable", detail=NEEDS_UNAVAILABLE[stem])
            else:
                row.update(run_script(out, out.parent, args.extra_path, args.timeout,
                                      SERVE.get(stem), port))
            rows.append(row)
            print("%-50s %-17s %4ss %s" % (stem, row["status"], row.get("seconds", "-"),
                                           (row.get("error") or row.get("detail") or "")[:150]),
                  flush=True)
    md = table(rows)
    print()
    print(md)
    print("\nwork directory: %s" % root)
    if args.table_md:
        Path(args.table_md).write_text(md + "\n", encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps({"mode": args.mode, "work": str(root),
                                               "results": rows}, indent=1, ensure_ascii=False),
                                   encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
