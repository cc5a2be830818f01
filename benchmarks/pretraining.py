"""Whole-word-masked MLM training throughput: our ``pretraining/`` vs ``transformers``.

One optimizer step of masked-LM pretraining, in tokens per second (batch x
sequence length / step time), for our pipeline on the TensorFlow backend and
for Hugging Face ``transformers`` ``BertForMaskedLM`` (torch, CPU), at two
shapes:

* ``base``: BERT-base (12 layers, hidden 768, 12 heads, FFN 3072) with the real
  21,128-token Chinese vocabulary (``bert4keras.datasets.chinese_vocab_path``);
* ``small``: the shipped small BERT (``checkpoints/chinese_bert_small``:
  4 layers, hidden 192, vocabulary 13,585).

Data.  Real text that ships with the project's data packages: the first
``--documents`` documents of People's Daily, January 1998 (16 sentences each,
``pretraining.corpora``).  Before timing, the corpus is written to TFRecords by
our records code (``TrainingDatasetRoBERTa.process``: jieba whole words, 15 %
of tokens, 80/10/10, packed ``seq_len``-token sequences).  The same documents
are segmented by jieba, joined with spaces (so the fast tokenizer's offsets
mark the word boundaries) and tokenized once by ``BertTokenizerFast`` into
``seq_len``-token chunks for the peer's collator.

Packing (``--packing``; Liu et al. 2019, RoBERTa, section 4.2), the same
recipe on both sides:

* ``full`` (default; FULL-SENTENCES): ours ``packing='full'`` -- the
  documents of each 32-document chunk as one stream, ``[SEP]`` between two
  documents, every sequence filled to ``seq_len`` tokens and cut between
  whole words.  The peer: ``run_mlm.py``'s ``group_texts`` -- every document
  tokenized as ``[CLS] doc [SEP]``, all concatenated and cut into
  ``seq_len``-token blocks (anywhere, even inside a word), the last block
  padded rather than dropped.
* ``document`` (DOC-SENTENCES): ours ``packing='document'`` -- whole
  sentences of one document per sequence, never crossing into the next; the
  peer: each document tokenized on its own with ``return_overflowing_tokens``
  into ``[CLS] ... [SEP]`` chunks, the last chunk of every document padded.

Tokens/s counts every position (``batch x seq_len``); the table also gives
each side's share of real (non-padding) tokens -- ``[CLS]``/``[SEP]`` and the
separators count as real -- and the tokens/s per real token, the honest
throughput figure when one side pads more than the other.

Rows (each side in its own worker process, so peak RSS is per side; a worker
sleeps on its stdin while the other runs, and the parent drives both round by
round, rotating the row order every round):

* ``ours, with data``: ``model.train_function`` (what ``fit`` calls each step:
  the XLA-compiled ``train_step``) on a ``tf.data`` iterator over
  ``pretraining.inputs.training_batches`` -- TFRecords -> parse -> shuffle ->
  padded batch -> mask -> gather the masked positions -> weights, with
  ``prefetch``: exactly the input ``pretraining.pretraining`` trains on;
* ``ours, in memory``: the same compiled step on batches already in memory
  (the first ``--memory-batches`` batches of that pipeline, as tensors);
* ``HF, with data``: ``DataCollatorForLanguageModeling(whole_word_mask=True)``
  (``transformers`` 5 has no ``DataCollatorForWholeWordMask``; the flag
  replaces it) on the pre-tokenized examples, then the step, in the same
  thread (as ``Trainer`` with ``dataloader_num_workers=0``);
* ``HF, same batches``: the step on our in-memory batches (our masked ids,
  labels ``-100`` outside the masked positions, attention mask = non-padding);
* ``ours, input pipeline`` / ``HF, collator``: the input side alone (batches/s),
  to show it is not what limits either step.

The step.  Both: AdamW, the same learning rate, weight decay ``--weight-decay``
on all but biases and LayerNorm parameters, beta2 0.98, epsilon 1e-6, global
gradient-norm clipping at 1.0, dropout 0.1 (the configs' value), fp32,
constant learning rate.  Ours: ``pretraining.optimization.make_optimizer('adamw')``
and ``pretraining.model.compile_pretraining_model`` (XLA unless ``--no-jit``);
HF: ``torch.optim.AdamW(fused=True)`` (``Trainer``'s default ``adamw_torch_fused``),
``clip_grad_norm_``, default (``sdpa``) attention.

Masked positions.  Our model gathers the ``max_predictions`` (``0.15 * seq_len
+ 4``, as ``pretraining.pretraining``) masked positions before the MLM head,
as Google's ``run_pretraining.py`` does, so the head (dense + LayerNorm + the
``hidden x vocab`` output matrix and the softmax) runs on ``batch x
max_predictions`` rows.  ``BertForMaskedLM`` runs the head on all ``batch x
seq_len`` positions and its cross-entropy ignores the ``-100`` labels.  The
loss is the same function (mean cross-entropy over the masked tokens; the
script checks it on one batch with dropout off and the same weights, copied
from ours into torch), so the difference in cost is a design advantage of
ours, not a different objective.  Masking differs on the peer's with-data
row only: its whole-word mode draws each word with probability 0.15 and
always shows ``[MASK]`` (no 10 % random / 10 % kept).

Reported: the median of ``--rounds`` samples per row (a sample is the mean of
``--iters`` steps), tokens/s, the per-round ratios ours / HF (median and range),
each side's achieved GFLOP/s (matmul FLOPs it executes: 3x the forward
pass) as a fraction of its own library's fp32 matmul peak measured in the same
run (``benchlib.matmul_peak``), and each worker's peak RSS.

Usage::

    python benchmarks/pretraining.py                     # both shapes (about 10 min idle)
    python benchmarks/pretraining.py --shapes small --rounds 7
    python benchmarks/pretraining.py --quick             # smoke run, < 1 min
    python benchmarks/pretraining.py --packing document  # DOC-SENTENCES on both sides
    python benchmarks/pretraining.py --results out.json  # raw rows as JSON
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# This file is benchmarks/pretraining.py: keep its folder off the front of the
# path so ``import pretraining`` finds the package, and benchlib after it.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
sys.path.insert(0, ROOT)
sys.path.append(HERE)

import numpy as np  # noqa: E402

import benchlib  # noqa: E402

TAG = "@@bench "  # prefix of the protocol lines a worker prints on stdout
SMALL_CONFIG = os.path.join(ROOT, "checkpoints", "chinese_bert_small", "bert_config.json")
SMALL_VOCAB = os.path.join(ROOT, "checkpoints", "chinese_bert_small", "vocab.txt")
BASE_CONFIG = {
    "vocab_size": 21128, "hidden_size": 768, "num_hidden_layers": 12,
    "num_attention_heads": 12, "intermediate_size": 3072, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512, "type_vocab_size": 2, "initializer_range": 0.02,
}
ROWS = ("ours, with data", "ours, in memory", "HF, with data", "HF, same batches")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="base,small", help="comma list of base, small")
    p.add_argument("--batch-base", type=int, default=16, help="sequences per step, base shape")
    p.add_argument("--batch-small", type=int, default=32, help="sequences per step, small shape")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--packing", choices=["full", "document"], default="full",
                   help="full: sequences filled across documents on both sides "
                        "(RoBERTa FULL-SENTENCES); document: never across a document "
                        "(DOC-SENTENCES)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    p.add_argument("--iters-base", type=int, default=1, help="steps per sample, base shape")
    p.add_argument("--iters-small", type=int, default=5, help="steps per sample, small shape")
    p.add_argument("--input-iters", type=int, default=20,
                   help="batches per sample of the input-only rows")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per row")
    p.add_argument("--documents", type=int, default=40,
                   help="People's Daily documents (16 sentences each) in the corpus")
    p.add_argument("--memory-batches", type=int, default=4,
                   help="batches held in memory for the in-memory rows")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--threads", type=int, default=0,
                   help="intra-op threads of both runtimes (0: their defaults, all cores)")
    p.add_argument("--no-jit", action="store_true", help="ours without XLA (graph mode)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: small shape, batch 8, length 64, 1 round, 16 documents, "
                        "a smaller matmul for the peak")
    p.add_argument("--results", help="write the raw rows and the summary to this JSON file")
    p.add_argument("--worker", choices=["ours", "hf"], help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.shapes, args.batch_small, args.seq_len, args.rounds = "small", 8, 64, 1
        args.iters_small, args.input_iters, args.warmup, args.documents = 2, 5, 1, 16
        args.memory_batches = 2
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = sorted(set(shapes) - {"base", "small"})
    if unknown or not shapes:
        p.error("--shapes: unknown %s (base, small)" % (unknown or "empty"))
    args.shape_list = shapes
    return args


# -- the two workers ------------------------------------------------------------
def _say(**message):
    print(TAG + json.dumps(message), flush=True)


def _serve(rows):
    """Answer ``{"row": name, "iters": n}`` lines with the mean seconds per step
    (``rows[name](n)`` runs ``n`` steps and waits for the last one)."""
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("quit"):
            _say(peak_rss=benchlib.peak_rss())
            return
        run, iters = rows[request["row"]], request["iters"]
        _say(time=benchlib.timed(lambda: run(iters)) / iters)


def ours_worker(spec):
    """TensorFlow backend: our pretraining model, optimizer, compile and input."""
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import tensorflow as tf

    if spec["threads"]:
        tf.config.threading.set_intra_op_parallelism_threads(spec["threads"])
        tf.config.threading.set_inter_op_parallelism_threads(spec["threads"])
    import keras

    from pretraining.data_utils import TrainingDatasetRoBERTa
    from pretraining.inputs import training_batches
    from pretraining.model import build_pretraining_model, compile_pretraining_model
    from pretraining.optimization import make_optimizer

    peak = benchlib.matmul_peak("tensorflow", m=spec["matmul_m"])
    keras.utils.set_random_seed(spec["seed"])
    model, transformer = build_pretraining_model(spec["config"], "roberta",
                                                 spec["max_predictions"])
    optimizer = make_optimizer("adamw", spec["lr"], spec["weight_decay"], 1, 1.0)
    compile_pretraining_model(model, optimizer, jit_compile=not spec["no_jit"])
    optimizer.build(model.trainable_variables)
    dataset = training_batches(TrainingDatasetRoBERTa, spec["records"], spec["seq_len"],
                               spec["batch"], spec["seed"], spec["max_predictions"])
    batches = list(dataset.take(spec["memory_batches"]))

    # The peer gets our initial weights, our in-memory batches, and our loss on
    # the first one (dropout off) to compare with its own.
    np.savez(spec["weights"], **{name: value for name, value
                                 in transformer.checkpoint_tensors("hf").items()})
    x, labels, weights = batches[0]
    logits = model(x, training=False)
    ce = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    loss = float(tf.reduce_sum(ce * weights) / tf.reduce_sum(weights))
    np.savez(spec["batches"],
             input_ids=np.stack([b[0]["Input-Token"].numpy() for b in batches]),
             positions=np.stack([b[0]["Input-MLM-Positions"].numpy() for b in batches]),
             labels=np.stack([b[1].numpy() for b in batches]),
             weights=np.stack([b[2].numpy() for b in batches]))
    masked = [int(np.count_nonzero(b[2].numpy())) for b in batches]
    real = [int(np.count_nonzero(b[0]["Input-Token"].numpy())) for b in batches]

    model.make_train_function()
    train = model.train_function
    position = [0]

    def in_memory(iters):
        for _ in range(iters):
            logs = train(iter([batches[position[0] % len(batches)]]))
            position[0] += 1
        float(logs["loss"])

    data_iterator = iter(dataset)

    def with_data(iters):
        for _ in range(iters):
            logs = train(data_iterator)
        float(logs["loss"])

    pipe_iterator = iter(dataset)

    def pipeline(iters):
        for _ in range(iters):
            next(pipe_iterator)

    rows = {"ours, in memory": in_memory, "ours, with data": with_data,
            "ours, input pipeline": pipeline}
    start = time.perf_counter()
    for run in rows.values():
        run(spec["warmup"])  # XLA compilation, the shuffle buffer filled
    _say(ready=True, loss=loss, matmul_peak=peak, masked=masked, real_tokens=real,
         warmup_s=time.perf_counter() - start, rss=benchlib.current_rss(),
         versions={"tensorflow": tf.__version__, "keras": keras.__version__})
    _serve(rows)


def full_labels(shape, positions, labels, weights):
    """Our gathered MLM targets as ``BertForMaskedLM`` labels.

    Args:
        shape: ``(batch, seq_len)``.
        positions: int ``[batch, max_predictions]``, the gathered positions.
        labels: int ``[batch, max_predictions]``, the original token there.
        weights: float ``[batch, max_predictions]``, > 0 where the position
            was masked (the rest are filler slots).

    Returns:
        int64 ``[batch, seq_len]``: the original token at every masked
        position, ``-100`` (ignored by the loss) everywhere else.
    """
    full = np.full(shape, -100, dtype=np.int64)
    rows, cols = np.nonzero(np.asarray(weights) > 0)
    full[rows, np.asarray(positions)[rows, cols]] = np.asarray(labels)[rows, cols]
    return full


def _hf_examples(tokenizer, texts, seq_len):
    examples = []
    keys = ("input_ids", "token_type_ids", "attention_mask", "special_tokens_mask",
            "offset_mapping")
    encoded = tokenizer(texts, truncation=True, max_length=seq_len, padding="max_length",
                        return_overflowing_tokens=True, return_offsets_mapping=True,
                        return_special_tokens_mask=True)
    for i in range(len(encoded["input_ids"])):
        examples.append({k: encoded[k][i] for k in keys})
    return examples


def _hf_grouped_examples(tokenizer, texts, seq_len):
    """``run_mlm.py``'s ``group_texts``: ``[CLS] doc [SEP]`` of every text,
    concatenated and cut into ``seq_len``-token blocks; the last block padded."""
    keys = ("input_ids", "token_type_ids", "attention_mask", "special_tokens_mask",
            "offset_mapping")
    encoded = tokenizer(texts, return_offsets_mapping=True, return_special_tokens_mask=True,
                        verbose=False)
    stream = {k: [x for row in encoded[k] for x in row] for k in keys}
    examples = []
    for start in range(0, len(stream["input_ids"]), seq_len):
        example = {k: list(stream[k][start:start + seq_len]) for k in keys}
        pad = seq_len - len(example["input_ids"])
        for key, value in (("input_ids", tokenizer.pad_token_id), ("token_type_ids", 0),
                           ("attention_mask", 0), ("special_tokens_mask", 1),
                           ("offset_mapping", (0, 0))):
            example[key] += [value] * pad
        examples.append(example)
    return examples


def hf_worker(spec):
    """torch: ``BertForMaskedLM`` with our weights, its collator, ``AdamW(fused=True)``."""
    import warnings

    import torch

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    import transformers
    from transformers import (BertConfig, BertForMaskedLM, BertTokenizerFast,
                              DataCollatorForLanguageModeling)

    peak = benchlib.matmul_peak("torch", m=spec["matmul_m"])
    with open(spec["config"]) as f:
        cfg = json.load(f)
    config = BertConfig(
        vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
        num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=cfg["num_attention_heads"],
        intermediate_size=cfg["intermediate_size"], hidden_act=cfg["hidden_act"],
        hidden_dropout_prob=cfg["hidden_dropout_prob"],
        attention_probs_dropout_prob=cfg["attention_probs_dropout_prob"],
        max_position_embeddings=cfg["max_position_embeddings"],
        type_vocab_size=cfg["type_vocab_size"], layer_norm_eps=1e-12)
    torch.manual_seed(spec["seed"])
    model = BertForMaskedLM(config)
    state = {k: torch.from_numpy(v) for k, v in np.load(spec["weights"]).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("cls.predictions.decoder.")]
    if missing or unexpected:
        raise RuntimeError("weight copy to torch failed: missing %s, unexpected %s"
                           % (missing, unexpected))
    if (model.cls.predictions.decoder.weight.data_ptr()
            != model.bert.embeddings.word_embeddings.weight.data_ptr()):
        raise RuntimeError("BertForMaskedLM's decoder is not tied to the word embeddings")

    data = np.load(spec["batches"])
    batches = []
    for ids, positions, labels, weights in zip(data["input_ids"], data["positions"],
                                               data["labels"], data["weights"]):
        full = full_labels(ids.shape, positions, labels, weights)
        ids = torch.from_numpy(ids.astype(np.int64))
        batches.append({"input_ids": ids, "token_type_ids": torch.zeros_like(ids),
                        "attention_mask": (ids != 0).long(), "labels": torch.from_numpy(full)})
    model.eval()
    with torch.no_grad():
        loss = float(model(**batches[0]).loss)
    model.train()

    tokenizer = BertTokenizerFast.from_pretrained(spec["tokenizer_dir"])
    probe = tokenizer(spec["probe_text"])["input_ids"]
    if probe != spec["probe_ids"]:
        raise RuntimeError("the HF tokenizer disagrees with ours on %r: %s vs %s"
                           % (spec["probe_text"], probe, spec["probe_ids"]))
    with open(spec["texts"], encoding="utf-8") as f:
        texts = json.load(f)
    start = time.perf_counter()
    if spec["packing"] == "full":
        examples = _hf_grouped_examples(tokenizer, texts, spec["seq_len"])
    else:
        examples = _hf_examples(tokenizer, texts, spec["seq_len"])
    tokenize_s = time.perf_counter() - start
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "random replacement not supported with wwm"
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, whole_word_mask=True,
                                                   mlm_probability=0.15, seed=spec["seed"])

    decay = [p for n, p in model.named_parameters()
             if not (n.endswith("bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters()
                if n.endswith("bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": spec["weight_decay"]},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=spec["lr"], betas=(0.9, 0.98), eps=1e-6, fused=True)
    params = list(model.parameters())

    def step(batch):
        out = model(**batch)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return out.loss

    cursor = {"memory": 0, "examples": 0}
    batch_size = spec["batch"]

    def next_examples():
        i = cursor["examples"]
        if i + batch_size > len(examples):
            i = 0
        cursor["examples"] = i + batch_size
        return examples[i:i + batch_size]

    def same_batches(iters):
        for _ in range(iters):
            loss = step(batches[cursor["memory"] % len(batches)])
            cursor["memory"] += 1
        float(loss.detach())

    def with_data(iters):
        for _ in range(iters):
            loss = step(collator(next_examples()))
        float(loss.detach())

    def collate(iters):
        for _ in range(iters):
            collator(next_examples())

    rows = {"HF, same batches": same_batches, "HF, with data": with_data,
            "HF, collator": collate}
    start = time.perf_counter()
    for run in rows.values():
        run(spec["warmup"])
    sample = collator(examples[:batch_size])
    real_fraction = float(np.mean([sum(e["attention_mask"]) for e in examples])) / spec["seq_len"]
    _say(ready=True, loss=loss, matmul_peak=peak, examples=len(examples),
         tokenize_s=tokenize_s, warmup_s=time.perf_counter() - start,
         collator_masked=int((sample["labels"] != -100).sum()),
         real_tokens=int(sample["attention_mask"].sum()), real_fraction=real_fraction,
         rss=benchlib.current_rss(),
         versions={"torch": torch.__version__, "transformers": transformers.__version__})
    _serve(rows)


# -- the parent: data, workers, rounds, table -------------------------------------
class Worker:
    """A worker subprocess driven line by line (see :func:`_serve`)."""

    def __init__(self, kind, spec_path, threads):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
        if threads:
            env.update(OMP_NUM_THREADS=str(threads))
        self.kind = kind
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", kind, "--spec", spec_path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        self.info = self._read()

    def _died(self):
        rc = self.proc.wait()
        return RuntimeError("the %s worker exited (rc=%s%s); its stderr is above" % (
            self.kind, rc, ": killed, out of memory?" if rc == -9 else ""))

    def _read(self):
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise self._died()
            if line.startswith(TAG):
                return json.loads(line[len(TAG):])

    def ask(self, **request):
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise self._died() from None
        return self._read()

    def close(self):
        try:
            answer = self.ask(quit=True)
        except (BrokenPipeError, RuntimeError):
            answer = {}
        self.proc.wait(timeout=120)
        return answer.get("peak_rss")


def prepare(args, shape, workdir):
    """Write the config, the records and the peer's texts; return the spec dict."""
    import jieba
    import logging

    from bert4keras import datasets
    from bert4keras.tokenizers import Tokenizer
    from pretraining.corpora import documents
    from pretraining.data_utils import TrainingDatasetRoBERTa

    jieba.setLogLevel(logging.WARNING)
    folder = os.path.join(workdir, shape)
    os.makedirs(folder, exist_ok=True)
    if shape == "base":
        config_path, vocab = os.path.join(folder, "bert_config.json"), datasets.chinese_vocab_path()
        with open(config_path, "w") as f:
            json.dump(BASE_CONFIG, f)
        batch, iters = args.batch_base, args.iters_base
    else:
        config_path, vocab = SMALL_CONFIG, SMALL_VOCAB
        batch, iters = args.batch_small, args.iters_small
    with open(config_path) as f:
        config = json.load(f)
    docs = []
    for document in documents(["peoples_daily"]):
        docs.append(document)
        if len(docs) == args.documents:
            break
    tokenizer = Tokenizer(vocab, do_lower_case=True)
    start = time.perf_counter()
    data = TrainingDatasetRoBERTa(tokenizer, args.seq_len, packing=args.packing)
    manifest = data.process(docs, os.path.join(folder, "records", "mlm"), num_shards=2,
                            seed=args.seed, progress=False)
    records_s = time.perf_counter() - start
    if manifest["sequences"] < batch * 2:
        raise SystemExit("--documents %d gives %d sequences, fewer than two batches of %d"
                         % (args.documents, manifest["sequences"], batch))
    texts = [" ".join(" ".join(jieba.lcut(s)) for s in doc) for doc in docs]
    with open(os.path.join(folder, "texts.json"), "w", encoding="utf-8") as f:
        json.dump(texts, f, ensure_ascii=False)
    tok_dir = os.path.join(folder, "hf_tokenizer")
    os.makedirs(tok_dir, exist_ok=True)
    with open(vocab, encoding="utf-8") as src, \
            open(os.path.join(tok_dir, "vocab.txt"), "w", encoding="utf-8") as dst:
        dst.write(src.read())
    with open(os.path.join(tok_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"do_lower_case": True, "tokenizer_class": "BertTokenizer"}, f)
    probe = docs[0][0]
    return {
        "shape": shape, "config": config_path, "records": os.path.join(folder, "records"),
        "packing": args.packing,
        "batch": batch, "iters": iters, "seq_len": args.seq_len,
        "max_predictions": int(0.15 * args.seq_len) + 4,
        "lr": args.lr, "weight_decay": args.weight_decay, "seed": args.seed,
        "threads": args.threads, "no_jit": args.no_jit, "warmup": args.warmup,
        "memory_batches": args.memory_batches, "matmul_m": 512 if args.quick else 4096,
        "weights": os.path.join(folder, "weights.npz"),
        "batches": os.path.join(folder, "batches.npz"),
        "texts": os.path.join(folder, "texts.json"), "tokenizer_dir": tok_dir,
        "probe_text": probe, "probe_ids": [int(i) for i in tokenizer.encode(probe)[0]],
        "layers": config["num_hidden_layers"], "hidden": config["hidden_size"],
        "intermediate": config["intermediate_size"], "vocab_size": config["vocab_size"],
        "sequences": manifest["sequences"], "records_s": records_s,
        "real_fraction": manifest["tokens"] / (manifest["sequences"] * args.seq_len),
        "corpus_chars": sum(len(s) for d in docs for s in d),
    }


def step_flops(spec, head_rows):
    """Matmul FLOPs of one training step (3x the forward pass): the encoder on
    every position plus the MLM head (dense ``h x h`` and output ``h x vocab``)
    on ``head_rows`` rows."""
    h = spec["hidden"]
    forward = benchlib.encoder_flops(spec["batch"], spec["seq_len"], spec["layers"], h,
                                     spec["intermediate"])
    forward += 2.0 * head_rows * (h * h + h * spec["vocab_size"])
    return 3.0 * forward


def run_shape(args, spec, spec_path):
    with open(spec_path, "w", encoding="utf-8") as f:
        json.dump(spec, f, ensure_ascii=False)
    tokens = spec["batch"] * spec["seq_len"]
    print("\n== %s: %d layers, hidden %d, vocab %d; batch %d x %d = %d tokens/step; "
          "corpus %d chars -> %d sequences (records written in %.1f s); packing %s"
          % (spec["shape"], spec["layers"], spec["hidden"], spec["vocab_size"], spec["batch"],
             spec["seq_len"], tokens, spec["corpus_chars"], spec["sequences"],
             spec["records_s"], spec["packing"]), flush=True)
    workers = {}
    try:
        # One at a time: each warms up (XLA compilation included) alone.
        for side in ("ours", "hf"):
            start = time.perf_counter()
            workers[side] = Worker(side, spec_path, args.threads)
            workers[side].info["start_s"] = time.perf_counter() - start
        ours, hf = workers["ours"].info, workers["hf"].info
        print("workers ready: ours in %.0f s (warm-up, XLA compilation included, %.0f s), "
              "HF in %.0f s (warm-up %.0f s)" % (ours["start_s"], ours["warmup_s"],
                                                 hf["start_s"], hf["warmup_s"]))
        print("same weights, dropout off, our batch 0: loss ours %.6f, HF %.6f (|diff| %.1e)"
              % (ours["loss"], hf["loss"], abs(ours["loss"] - hf["loss"])))
        print("masked per batch, ours records: %s of %d scored positions; HF collator: %d; "
              "real (non-pad) tokens ours %s, HF %d of %d" % (
                  ours["masked"], spec["batch"] * spec["max_predictions"],
                  hf["collator_masked"], ours["real_tokens"], hf["real_tokens"], tokens))
        rows = list(ROWS)
        inputs = {"ours, input pipeline": "ours", "HF, collator": "hf"}
        samples = {name: [] for name in rows + list(inputs)}
        for r in range(args.rounds):
            order = rows[r % len(rows):] + rows[:r % len(rows)]
            for name in order:
                side = "ours" if name.startswith("ours") else "hf"
                samples[name].append(workers[side].ask(row=name, iters=spec["iters"])["time"])
            for name, side in inputs.items():
                samples[name].append(workers[side].ask(row=name, iters=args.input_iters)["time"])
            print("round %d/%d: %s" % (r + 1, args.rounds, ", ".join(
                "%s %.3f s" % (n, samples[n][-1]) for n in order)), flush=True)
    finally:
        peaks = {side: w.close() for side, w in workers.items()}
    return summarize(args, spec, samples, peaks, ours, hf)


def summarize(args, spec, samples, peaks, ours, hf):
    tokens = spec["batch"] * spec["seq_len"]
    flops = {"ours": step_flops(spec, spec["batch"] * spec["max_predictions"]),
             "hf": step_flops(spec, tokens)}
    peak = {"ours": ours["matmul_peak"], "hf": hf["matmul_peak"]}
    median = {name: benchlib.median(values) for name, values in samples.items()}
    ratio = {}
    for label, mine, theirs in (("with data", "ours, with data", "HF, with data"),
                                ("in memory / same batches", "ours, in memory",
                                 "HF, same batches")):
        per_round = [b / a for a, b in zip(samples[mine], samples[theirs])]
        ratio[label] = {"median": benchlib.median(per_round), "min": min(per_round),
                        "max": max(per_round)}
    # Non-padding share of the positions: our records vs the peer's chunks
    # (both packed as --packing says); "HF, same batches" runs on ours.
    real = {"ours": spec["real_fraction"], "hf": hf.get("real_fraction", 1.0)}
    print("\n| %s (packing %s) | s/step | tokens/s | non-pad share | non-pad tokens/s | "
          "GFLOP/s (executed) | of own fp32 matmul peak |" % (spec["shape"], spec["packing"]))
    print("|---|---|---|---|---|---|---|")
    table = []
    for name in ROWS:
        side = "ours" if name.startswith("ours") else "hf"
        fraction = real["hf"] if name == "HF, with data" else real["ours"]
        t = median[name]
        rate = flops[side] / t / 1e9
        print("| %s | %.3f | %.0f | %.3f | %.0f | %.1f | %.2f |" % (
            name, t, tokens / t, fraction, fraction * tokens / t, rate, rate / peak[side]))
        table.append({"row": name, "s_per_step": t, "tokens_per_s": tokens / t,
                      "non_pad_share": fraction,
                      "non_pad_tokens_per_s": fraction * tokens / t,
                      "gflops": rate, "fraction_of_peak": rate / peak[side],
                      "samples": samples[name]})
    for name in ("ours, input pipeline", "HF, collator"):
        print("| %s (input only) | %.4f s/batch | %.0f batches/s | | | | |"
              % (name, median[name], 1.0 / median[name]))
        table.append({"row": name, "s_per_batch": median[name], "samples": samples[name]})
    for label, r in ratio.items():
        print("ours / HF tokens/s, %s: %.2fx [%.2f-%.2f over %d rounds]"
              % (label, r["median"], r["min"], r["max"], args.rounds))
    ratio["with data, non-pad tokens"] = {
        k: v * real["ours"] / real["hf"] for k, v in ratio["with data"].items()}
    print("ours / HF non-padding tokens/s, with data: %.2fx [%.2f-%.2f] (packing %s; "
          "non-padding share: our records %.3f, HF chunks %.3f)" % (
              ratio["with data, non-pad tokens"]["median"],
              ratio["with data, non-pad tokens"]["min"],
              ratio["with data, non-pad tokens"]["max"], spec["packing"],
              real["ours"], real["hf"]))
    print("fp32 matmul peak: TF %.0f GFLOP/s, torch %.0f GFLOP/s; step FLOPs ours %.1f G, "
          "HF %.1f G (MLM head on %d vs %d rows)" % (
              peak["ours"], peak["hf"], flops["ours"] / 1e9, flops["hf"] / 1e9,
              spec["batch"] * spec["max_predictions"], tokens))
    print("peak RSS: ours %.2f GB, HF %.2f GB (each worker process)"
          % ((peaks.get("ours") or 0) / 1e9, (peaks.get("hf") or 0) / 1e9))
    return {"shape": spec["shape"], "spec": {k: v for k, v in spec.items()
                                             if k not in ("probe_ids",)},
            "rows": table, "ratios": ratio, "matmul_peak_gflops": peak,
            "step_gflop": {k: v / 1e9 for k, v in flops.items()},
            "peak_rss_bytes": peaks, "ours_info": ours, "hf_info": hf}


def main(args):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["KERAS_BACKEND"] = "tensorflow"
    if args.worker:
        with open(args.spec, encoding="utf-8") as f:
            spec = json.load(f)
        (ours_worker if args.worker == "ours" else hf_worker)(spec)
        return None
    start = time.perf_counter()
    print(benchlib.machine_line())
    print("load average at start: %s" % " ".join("%.1f" % x for x in os.getloadavg()))
    print("ours: pretraining/ on TensorFlow (%s); HF: transformers BertForMaskedLM, torch; "
          "threads: %s" % ("graph mode" if args.no_jit else "XLA",
                           args.threads or "runtime defaults"))
    results = {"machine": benchlib.machine(), "args": {k: v for k, v in vars(args).items()
                                                       if k not in ("worker", "spec")},
               "shapes": []}
    with tempfile.TemporaryDirectory(prefix="bench_pretraining_") as workdir:
        for shape in args.shape_list:
            spec = prepare(args, shape, workdir)
            results["shapes"].append(run_shape(args, spec,
                                               os.path.join(workdir, shape, "spec.json")))
    results["load_average_end"] = os.getloadavg()
    results["wall_s"] = time.perf_counter() - start
    print("\nload average at end: %s; wall time %.0f s"
          % (" ".join("%.1f" % x for x in os.getloadavg()), results["wall_s"]))
    if args.results:
        with open(args.results, "w") as f:
            json.dump(results, f, indent=1, default=float)
    return results


if __name__ == "__main__":
    main(parse_args())
