"""Few-shot text continuation with CPM-LM, Tsinghua's Chinese GPT-2 (2.6B):
its tokenizer (jieba words, then SentencePiece, spaces and newlines mapped
to special characters) and cached sampling.

Model: CPM-LM (TsinghuaAI/CPM-Generate; Zhang et al. 2020, arXiv:2012.00413)
is a GPT-2 (pre-norm blocks, learned positions, a final LayerNorm, the LM
head tied to the token embedding). The original bert4keras example loaded
bojone's TensorFlow conversion ``CPM_LM_2.6B_TF`` (``config.json``,
``model.ckpt`` with the ``gpt/embeddings/...``, ``gpt/transformer/layer_N/...``,
``gpt/output/LayerNorm`` names, ``chinese_vocab.model``) with
``build_transformer_model(..., model='gpt2')``; ``--model-dir`` takes that
directory here.

Tokenizer (CPM's own scheme): the text is cut into words by ``jieba``; in
each word a space becomes ``\\u2582`` and a newline ``\\u2583``; the words are
joined with spaces and encoded by the SentencePiece model. The piece
``\\u2583`` (a newline) is read as ``<cls>`` (id 3), which also ends a text.
Decoding reverses it: SentencePiece's text, spaces removed, ``\\u2582`` ->
space, ``\\u2583`` -> newline (:func:`cpm_tokenizer`, :func:`cpm_text`,
built on :class:`bert4keras.tokenizers.SpTokenizer`'s ``pre_tokenize`` and
``token_translate``).

Decoding: :class:`bert4keras.generation.CachedDecoder` -- all prompts in one
batch with the key/value cache; top-p sampling (``--topp 0.95``) as the
original, or beam/greedy search.

WHAT IS REAL AND WHAT IS RANDOM. Neither CPM's weights nor its
``chinese_vocab.model`` can be had on the machines this project is built on.
Without ``--model-dir``: the tokenizer *scheme* is CPM's, run by the real
``jieba`` (its dictionary) and ``sentencepiece``, but the SentencePiece
model is our own small one (4,000 pieces, CPM's special-piece layout
``<unk> <s> </s> <cls> <eod> \\u2582 \\u2583``), trained here on People's
Daily sentences (``bert4keras.datasets``); the weights are a tiny
CPM-shaped GPT-2 (2 layers, hidden 64) of random values written in the
conversion's TF format (``release_kit.write_random_checkpoint``, the
library's writer) and loaded back. The continuations are then noise.

    python examples/basic_language_model_cpm_lm.py
    python examples/basic_language_model_cpm_lm.py --model-dir CPM_LM_2.6B_TF \\
        --checkpoint CPM_LM_2.6B_TF/model.ckpt --spm CPM_LM_2.6B_TF/chinese_vocab.model
"""

import io
import os

import common  # first: it loads TensorFlow without the C++ start-up log
import keras

import release_kit
from bert4keras.datasets import load_peoples_daily_sentences
from bert4keras.generation import CachedDecoder
from bert4keras.models import build_transformer_model, find_config
from bert4keras.tokenizers import SpTokenizer
from common import write_json

SPACE, NEWLINE = "\u2582", "\u2583"
#: CPM's special pieces after ``<unk> <s> </s>``: ``<cls>`` is id 3
SPECIAL_PIECES = ["<cls>", "<eod>", SPACE, NEWLINE]
#: GPT-2 sizes of the random stand-in (CPM-LM: 32 layers, hidden 2560, 32 heads)
TINY_CPM = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=256, hidden_act="gelu", max_position_embeddings=256,
                hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                initializer_range=0.02)
PROMPTS = [
    "北京是中国的首都\n东京是日本的首都\n巴黎是",
    "上海 浦东\n广州 天河\n北京 ",
    "今天天气不错，",
]


def _jieba():
    import jieba

    jieba.setLogLevel(60)  # no "Building prefix dict" lines
    return jieba


def cpm_words(text):
    """CPM's pre-tokenization: jieba words (precise mode), each with its
    spaces as ``\\u2582`` and newlines as ``\\u2583``."""
    return [w.replace(" ", SPACE).replace("\n", NEWLINE)
            for w in _jieba().cut(text, cut_all=False)]


def cpm_tokenizer(spm_path):
    """An :class:`SpTokenizer` that tokenizes as CPM-LM does: no start or end
    token, :func:`cpm_words` first, the newline piece read as ``<cls>``."""
    return SpTokenizer(spm_path, token_start=None, token_end=None, pre_tokenize=cpm_words,
                       token_translate={NEWLINE: "<cls>"})


def cpm_text(decoded):
    """The text of ``tokenizer.decode(ids)``: the spaces SentencePiece puts
    between jieba words removed, ``\\u2582`` -> space, ``\\u2583`` -> newline."""
    return decoded.replace(" ", "").replace(SPACE, " ").replace(NEWLINE, "\n")


def train_stand_in_spm(path, sentences=2000, vocab_size=4000):
    """Train the stand-in SentencePiece model (unigram, CPM's special-piece
    layout) on the first ``sentences`` People's Daily sentences, pre-tokenized
    by :func:`cpm_words`; written to ``path`` (kept if it exists)."""
    if os.path.exists(path):
        return path
    import sentencepiece as spm

    lines = [" ".join(cpm_words(s)) for s in load_peoples_daily_sentences()[:sentences]]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model,
                                   vocab_size=vocab_size, model_type="unigram",
                                   user_defined_symbols=SPECIAL_PIECES,
                                   character_coverage=1.0, num_threads=1, minloglevel=2)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(model.getvalue())
    return path


def model_files(args):
    """``(config, checkpoint, spm)``: the release, or the stand-ins."""
    if args.model_dir:
        return (args.config or find_config(args.model_dir), args.checkpoint or args.model_dir,
                args.spm or os.path.join(args.model_dir, "chinese_vocab.model"))
    directory = os.path.join(args.work_dir, "random_cpm_lm")
    spm = args.spm or train_stand_in_spm(os.path.join(directory, "chinese_vocab.model"))
    size = SpTokenizer(spm).vocab_size
    config, checkpoint = release_kit.write_random_checkpoint(
        directory, dict(TINY_CPM, vocab_size=size), "gpt2", "model.ckpt", seed=args.seed)
    print(release_kit.RANDOM_NOTE % "CPM-LM" + "; the SentencePiece model is our own, trained "
          "on People's Daily; written to %s" % directory)
    return config, checkpoint, spm


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    p.add_argument("--model-dir", default=None,
                   help="CPM_LM_2.6B_TF (config.json, model.ckpt, chinese_vocab.model); "
                        "default: random tiny weights and our own SentencePiece model")
    p.add_argument("--config", default=None, help="config file (default: in --model-dir)")
    p.add_argument("--checkpoint", default=None, help="checkpoint (default: --model-dir)")
    p.add_argument("--spm", default=None, help="SentencePiece model (default: in --model-dir)")
    p.add_argument("--work-dir", default=os.path.join("runs", "cpm_lm"),
                   help="where the random checkpoint and stand-in SentencePiece model go")
    p.add_argument("--prompt", action="append", default=None,
                   help="a prompt (repeat for several; default: three few-shot examples)")
    release_kit.add_decoding_args(p, method="sample", max_new_tokens=16, topp=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", default=None, help="write the texts to this JSON file")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    config, checkpoint, spm = model_files(args)
    keras.utils.set_random_seed(args.seed)
    tokenizer = cpm_tokenizer(spm)
    gpt2 = build_transformer_model(config, checkpoint, model="gpt2", return_keras_model=False)
    print("model: %s (%s), tokenizer %s" % (config, checkpoint, spm))
    end_id = tokenizer.token_to_id("<cls>")  # a newline ends the answer
    decoder = CachedDecoder(gpt2, end_id=end_id, maxlen=args.max_new_tokens, minlen=args.minlen)
    prompts = args.prompt or PROMPTS
    batch = [tokenizer.encode(text)[0] for text in prompts]
    texts, tokens, seconds = release_kit.generate_texts(
        decoder, batch, args, lambda k, ids: cpm_text(tokenizer.decode(batch[k] + ids)))
    for rows in texts:
        for text in rows:
            print("--", text.replace("\n", " / "))
    print("%d tokens in %.2f s (compilation included)%s" % (
        tokens, seconds, "" if args.model_dir else " -- RANDOM weights: the texts are noise"))
    results = dict(config=config, checkpoint=checkpoint, spm=spm,
                   random_weights=not args.model_dir, method=args.method, prompts=prompts,
                   prompt_ids=batch, texts=texts, tokens=tokens, seconds=round(seconds, 3))
    if args.results:
        write_json(args.results, results)
    return results


if __name__ == "__main__":
    main()
