"""Chinese text continuation with a GPT-style language model (GPT2-ML or a
BERT trained as a left-to-right LM), decoded with a key/value cache.

Checkpoints it loads (``--model auto`` tells them apart by their variable
names):

* ``gpt2_ml``: imcaspar/gpt2-ml releases (``newslm/...`` TF checkpoints,
  e.g. the 1.5B "15亿参数" model with its ``mega.json`` config and the BERT
  Chinese ``vocab.txt``; the original bert4keras example continued articles
  with it, ``end_id`` 511 = "。", ``minlen=128``);
* ``bert``: a BERT-layout causal LM -- what ``python -m pretraining.pretraining
  --model gpt`` writes (``bert/...`` plus the MLM head, trained with
  ``application='lm'`` on ``[CLS] text [SEP]`` packs); it is built here with
  ``application='lm', with_mlm=True``, prompts start with ``[CLS]`` and
  ``[SEP]`` ends a text.

Default directory ``checkpoints/chinese_gpt_small/`` (``bert_config.json``,
``bert_model.ckpt``, ``vocab.txt``); ``--random-init`` builds the same
architecture with random weights (smoke runs: the text is noise).

Decoding: :class:`bert4keras.generation.CachedDecoder` -- all prompts in one
batch, one compiled step per token; ``--method sample`` (``--topk``,
``--topp``, ``--temperature``, ``--n``), ``beam`` (``--beams``) or ``greedy``;
``--repetition-penalty``; ``--stream`` prints tokens as they come (one
prompt, greedy or sampling).

    python examples/basic_language_model_gpt2_ml.py --prompt 今天天气不错 --n 3
    python examples/basic_language_model_gpt2_ml.py --model-dir ~/gpt2-ml-15亿 \\
        --config ~/gpt2-ml-15亿/mega.json --model gpt2_ml --end 。 --minlen 128 \\
        --max-new-tokens 256 --topp 0.95 --prompt 新华社北京
    python examples/basic_language_model_gpt2_ml.py --random-init \\
        --config checkpoints/chinese_bert_small/bert_config.json \\
        --vocab checkpoints/chinese_bert_small/vocab.txt --max-new-tokens 16
"""

import json
import os
import sys
import time

import common  # first: it loads TensorFlow without the C++ start-up log
import keras

from bert4keras.checkpoints import open_checkpoint
from bert4keras.generation import CachedDecoder
from bert4keras.models import build_transformer_model
from bert4keras.checkpoints import checkpoint_families
from bert4keras.tokenizers import Tokenizer

import release_kit

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DIR = os.path.join(os.path.dirname(HERE), "checkpoints", "chinese_gpt_small")
PROMPTS = ["中国的首都是北京", "今天天气不错，", "新华社北京１月１日电"]


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    p.add_argument("--model-dir", default=DEFAULT_DIR,
                   help="directory with the config, checkpoint and vocab.txt")
    p.add_argument("--config", default=None, help="bert_config.json / mega.json")
    p.add_argument("--checkpoint", default=None, help="TF checkpoint prefix or directory")
    p.add_argument("--vocab", default=None, help="vocab.txt")
    p.add_argument("--model", choices=["auto", "gpt2_ml", "bert"], default="auto",
                   help="checkpoint layout (auto: from the variable names; bert with "
                        "--random-init)")
    p.add_argument("--random-init", action="store_true", help="random weights (smoke runs)")
    p.add_argument("--layers", type=int, default=None, help="override num_hidden_layers")
    p.add_argument("--prompt", action="append", default=None,
                   help="a prompt (repeat for several; default: three examples)")
    release_kit.add_decoding_args(p, method="sample", max_new_tokens=64, topk=None, topp=0.95,
                                  beams=4)
    p.add_argument("--end", default=None,
                   help="token that ends a text (default [SEP] for bert, 。 for gpt2_ml)")
    p.add_argument("--cls", choices=["auto", "yes", "no"], default="auto",
                   help="start prompts with [CLS] (auto: for bert, which was trained on "
                        "[CLS] text [SEP]; not for gpt2_ml releases)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stream", action="store_true", help="print tokens as they come")
    p.add_argument("--progress", action="store_true", help="a tqdm bar per batch")
    p.add_argument("--results", default=None, help="write the texts to this JSON file")
    return p.parse_args(argv)


def resolve(args):
    """``(config, checkpoint or None, vocab, family)``."""
    config = args.config
    if config is None:
        for name in ("bert_config.json", "config.json", "mega.json"):
            if os.path.exists(os.path.join(args.model_dir, name)):
                config = os.path.join(args.model_dir, name)
                break
        else:
            raise FileNotFoundError(
                "No config in %r: train a model first (see the README of examples/ or "
                "--help), or pass --config/--checkpoint/--vocab" % args.model_dir)
    checkpoint = None if args.random_init else (args.checkpoint or args.model_dir)
    vocab = args.vocab or os.path.join(args.model_dir, "vocab.txt")
    family = args.model
    if family == "auto":
        family = "bert"
        if checkpoint is not None:
            found = checkpoint_families(open_checkpoint(checkpoint))
            if "gpt2_ml" in found:
                family = "gpt2_ml"
            elif "bert" not in found:
                raise ValueError("%r holds neither a GPT2-ML nor a BERT checkpoint (found: %s)"
                                 % (checkpoint, found or "no known family"))
    return config, checkpoint, vocab, family


def build(config, checkpoint, family, layers=None):
    """The Transformer (not just the Keras model: the decoder runs its layers)."""
    kwargs = {} if layers is None else {"num_hidden_layers": layers}
    if family == "gpt2_ml":  # no segments, even if the config names a type vocabulary
        return build_transformer_model(config, checkpoint, model="gpt2_ml",
                                       segment_vocab_size=0, return_keras_model=False, **kwargs)
    return build_transformer_model(config, checkpoint, model="bert", application="lm",
                                   with_mlm=True, return_keras_model=False, **kwargs)


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    config, checkpoint, vocab, family = resolve(args)
    bert_like = family == "bert"
    # GPT2-ML releases read plain text; our pretraining packs [CLS] text [SEP]
    cls = bert_like if args.cls == "auto" else args.cls == "yes"
    tokenizer = Tokenizer(vocab, do_lower_case=True, token_start="[CLS]" if cls else None,
                          token_end=None)
    end = args.end or ("[SEP]" if bert_like else "。")
    end_id = tokenizer.token_to_id(end)
    transformer = build(config, checkpoint, family, args.layers)
    print("model: %s (%s, %s)" % (config, family, checkpoint or "random init"))
    decoder = CachedDecoder(transformer, end_id=end_id, maxlen=args.max_new_tokens,
                            minlen=args.minlen)
    prompts = args.prompt or PROMPTS
    batch = [tokenizer.encode(text)[0] for text in prompts]
    options = dict(release_kit.decoding_options(args), progress=args.progress)

    start = time.time()
    if args.stream:  # decoded once: the streamed tokens are the result
        if args.method == "beam" or len(batch) != 1 or args.n != 1:
            raise SystemExit("--stream needs one --prompt, --n 1 and greedy or sampling")
        ids, shown = [], ""
        print("--", prompts[0], end="", flush=True)
        for step in decoder.stream(batch, **{k: v for k, v in options.items()
                                            if k not in ("progress", "n")}):
            if step[0] >= 0:
                ids.append(int(step[0]))
                text = tokenizer.decode(ids)  # whole text: WordPiece joins pieces
                print(text[len(shown):] if text.startswith(shown) else text, end="", flush=True)
                shown = text
        print()
        outputs = [[ids] if args.method == "sample" else ids]
    else:
        outputs = decoder.generate(batch, **options)
    seconds = time.time() - start
    texts, tokens = [], 0
    for prompt, out in zip(prompts, outputs):
        samples = out if args.method == "sample" else [out]
        texts.append([prompt + tokenizer.decode([int(i) for i in ids]) for ids in samples])
        tokens += sum(len(ids) for ids in samples)
        if not args.stream:
            for text in texts[-1]:
                print("--", text)
    print("%d tokens in %.2f s (%.1f tokens/s, compilation included on the first call)"
          % (tokens, seconds, tokens / max(seconds, 1e-9)), file=sys.stderr)
    results = dict(family=family, config=config, checkpoint=checkpoint, method=args.method,
                   prompts=prompts, texts=texts, tokens=tokens, seconds=round(seconds, 3))
    if args.results:
        with open(args.results, "w", encoding="utf-8") as f:
            json.dump(results, f, ensure_ascii=False, indent=2)
    return results


if __name__ == "__main__":
    main()
