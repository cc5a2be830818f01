"""Text continuation with NEZHA-Gen, Huawei's Chinese GPT: a NEZHA (relative
positions) trained left to right, loaded and decoded with a key/value cache.

Model: NEZHA-Gen (huawei-noah/Pretrained-Language-Model, ``NEZHA-Gen-TensorFlow``;
the original bert4keras example loaded its base release
``chinese_nezha_gpt_L-12_H-768_A-12``: ``config.json``, ``gpt.ckpt``,
``vocab.txt``). The checkpoint is in Google BERT's TF format (``bert/...``
with the MLM head ``cls/predictions/...``); the model has NEZHA's functional
relative positions (no position table, ``max_relative_position`` 64) and is
built as ``build_transformer_model(..., model='nezha', application='lm',
segment_vocab_size=0)``: a causal mask, the MLM head as the LM head, no
segment input. The vocabulary is Google's Chinese BERT ``vocab.txt``; a
prompt is ``[CLS] text`` (no ``[SEP]``) and ``。`` ends a text.

Decoding: :class:`bert4keras.generation.CachedDecoder` -- all prompts in one
batch, the key/value cache (NEZHA's relative position embedding and its
attention have cached steps), top-k / top-p sampling (``--topk 5`` as the
original example), beam or greedy search.

THE DEFAULT WEIGHTS ARE RANDOM. NEZHA-Gen cannot be downloaded on the
machines this project is built on; without ``--model-dir`` the script writes
a tiny NEZHA-Gen-shaped checkpoint (2 layers, hidden 64) of random weights in
the original Google TF format (``release_kit.write_random_checkpoint``,
the library's writer) beside Google's real Chinese BERT ``vocab.txt``
(fetched once from the ``cn-clip`` package), then loads it as it would load
the release. The texts are then random characters: only the pipeline is real.

    python examples/basic_language_model_nezha_gen_gpt.py --prompt 今天天气不错 --n 2
    python examples/basic_language_model_nezha_gen_gpt.py \\
        --model-dir chinese_nezha_gpt_L-12_H-768_A-12 --checkpoint \\
        chinese_nezha_gpt_L-12_H-768_A-12/gpt.ckpt --minlen 128 --max-new-tokens 256
"""

import os

import common  # first: it loads TensorFlow without the C++ start-up log
import keras

import release_kit
from basic_language_model_gpt2_ml import PROMPTS
from bert4keras.datasets import chinese_vocab_path
from bert4keras.generation import CachedDecoder
from bert4keras.models import build_transformer_model, find_config
from bert4keras.tokenizers import Tokenizer
from common import write_json

#: NEZHA-Gen's configuration keys (a BERT ``bert_config.json`` plus
#: ``max_relative_position``), sizes cut down for the random stand-in
TINY_NEZHA_GEN = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=256, hidden_act="gelu", hidden_dropout_prob=0.1,
                      attention_probs_dropout_prob=0.1, max_position_embeddings=512,
                      max_relative_position=64, type_vocab_size=2, initializer_range=0.02,
                      use_relative_position=True)


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    p.add_argument("--model-dir", default=None,
                   help="a NEZHA-Gen release (config.json, gpt.ckpt, vocab.txt); default: a "
                        "random tiny NEZHA-Gen (the texts are noise)")
    p.add_argument("--config", default=None, help="config file (default: in --model-dir)")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint prefix or directory (default: --model-dir)")
    p.add_argument("--vocab", default=None, help="vocab.txt (default: in --model-dir)")
    p.add_argument("--work-dir", default=os.path.join("runs", "nezha_gen"),
                   help="where the random checkpoint is written")
    p.add_argument("--prompt", action="append", default=None,
                   help="a prompt (repeat for several; default: three examples)")
    p.add_argument("--end", default="。", help="the token that ends a text")
    release_kit.add_decoding_args(p, method="sample", max_new_tokens=32, topk=5, topp=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", default=None, help="write the texts to this JSON file")
    return p.parse_args(argv)


def model_files(args):
    """``(config, checkpoint, vocab)``: the release, or random tiny weights."""
    if args.model_dir:
        return (args.config or find_config(args.model_dir), args.checkpoint or args.model_dir,
                args.vocab or os.path.join(args.model_dir, "vocab.txt"))
    vocab = args.vocab or chinese_vocab_path()
    with open(vocab, encoding="utf-8") as f:
        size = sum(1 for _ in f)
    directory = os.path.join(args.work_dir, "random_nezha_gen")
    config, checkpoint = release_kit.write_random_checkpoint(
        directory, dict(TINY_NEZHA_GEN, vocab_size=size), "nezha", "gpt.ckpt", seed=args.seed,
        application="lm")
    print(release_kit.RANDOM_NOTE % "NEZHA-Gen" + "; written to %s" % directory)
    return config, checkpoint, vocab


def main(argv=None):
    args = parse_args(argv)
    config, checkpoint, vocab = model_files(args)
    keras.utils.set_random_seed(args.seed)
    tokenizer = Tokenizer(vocab, do_lower_case=True)
    nezha = build_transformer_model(config, checkpoint, model="nezha", application="lm",
                                    segment_vocab_size=0, return_keras_model=False)
    print("model: %s (%s)" % (config, checkpoint))
    decoder = CachedDecoder(nezha, end_id=tokenizer.token_to_id(args.end),
                            maxlen=args.max_new_tokens, minlen=args.minlen)
    prompts = args.prompt or PROMPTS
    batch = [tokenizer.encode(text)[0][:-1] for text in prompts]  # [CLS] text
    texts, tokens, seconds = release_kit.generate_texts(
        decoder, batch, args, lambda k, ids: prompts[k] + tokenizer.decode(ids))
    for rows in texts:
        for text in rows:
            print("--", text)
    print("%d tokens in %.2f s (compilation included)%s" % (
        tokens, seconds, "" if args.model_dir else " -- RANDOM weights: the texts are noise"))
    results = dict(config=config, checkpoint=checkpoint, random_weights=not args.model_dir,
                   method=args.method, prompts=prompts, texts=texts, tokens=tokens,
                   seconds=round(seconds, 3))
    if args.results:
        write_json(args.results, results)
    return results


if __name__ == "__main__":
    main()
