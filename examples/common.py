"""What every example script shares: the model-location flags and their resolution.

Every example takes the same way of naming a BERT-family checkpoint:

* ``--model-dir DIR``: a directory holding ``bert_config.json`` (or Hugging
  Face's ``config.json``), the weights (Google TF checkpoint or HF
  ``model.safetensors``) and ``vocab.txt``; default the small Chinese BERT
  that ships in ``checkpoints/chinese_bert_small/``;
* ``--config`` / ``--checkpoint`` / ``--vocab``: override any one of them;
* ``--random-init``: the same architecture without pretrained weights;
* ``--cased``: do not lower-case (Chinese BERT vocabularies are uncased).

Scripts run as ``python examples/NAME.py`` find this module beside them.
"""

import os

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_DIR = os.path.join(REPO, "checkpoints", "chinese_bert_small")


def add_model_args(parser, default_dir=DEFAULT_DIR):
    """Add ``--model-dir --config --checkpoint --vocab --random-init --cased``."""
    parser.add_argument("--model-dir", default=None,
                        help="directory with config, checkpoint and vocab.txt (Google or HF); "
                             "default %s" % os.path.relpath(default_dir, os.getcwd()))
    parser.add_argument("--config", default=None, help="bert_config.json / config.json")
    parser.add_argument("--checkpoint", default=None, help="TF checkpoint prefix/dir or HF dir")
    parser.add_argument("--vocab", default=None, help="vocab.txt")
    parser.add_argument("--random-init", action="store_true",
                        help="same architecture, no pretrained weights")
    parser.add_argument("--cased", action="store_true",
                        help="do not lowercase (default lowercases)")
    parser.set_defaults(_default_model_dir=default_dir)
    return parser


def resolve_paths(args):
    """``(config_path, checkpoint_path or None, vocab_path)`` from the flags.

    Raises:
        FileNotFoundError: the model directory has neither ``bert_config.json``
            nor ``config.json``, or the vocabulary file does not exist.
    """
    model_dir = args.model_dir or getattr(args, "_default_model_dir", DEFAULT_DIR)
    config = args.config
    if config is None:
        for name in ("bert_config.json", "config.json"):
            if os.path.exists(os.path.join(model_dir, name)):
                config = os.path.join(model_dir, name)
                break
        else:
            raise FileNotFoundError("No bert_config.json or config.json in %r" % model_dir)
    checkpoint = None if args.random_init else (args.checkpoint or model_dir)
    vocab = args.vocab or os.path.join(model_dir, "vocab.txt")
    if not os.path.exists(vocab):
        raise FileNotFoundError("Vocabulary file %r not found (pass --vocab)" % vocab)
    return config, checkpoint, vocab


class CharEncoder:
    """Token id of every character, one token per character, so that
    character-level tags and tokens line up one to one (Chinese BERT
    vocabularies hold single characters); characters the vocabulary lacks,
    or that WordPiece would split, become ``[UNK]``.

    ``encoder(text)`` -> ``[CLS] ids [SEP]`` as ``list[int]`` of length
    ``len(text) + 2``.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.unk = tokenizer.token_to_id("[UNK]")
        self.cls, self.sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        self.cache = {}

    def char_id(self, char):
        """The id of one character (cached)."""
        if char not in self.cache:
            ids = self.tokenizer.encode(char)[0][1:-1]
            self.cache[char] = ids[0] if len(ids) == 1 else self.unk
        return self.cache[char]

    def __call__(self, text):
        return [self.cls] + [self.char_id(c) for c in text] + [self.sep]


def pad_batch(id_lists, bucket=32, fill=0):
    """``int32 (batch, length)``: the lists right-padded with ``fill`` to the
    longest rounded up to a multiple of ``bucket`` (few distinct shapes, so
    few recompilations)."""
    from bert4keras.snippets import sequence_padding

    length = -(-max(map(len, id_lists)) // bucket) * bucket
    return sequence_padding(id_lists, length=length, value=fill).astype("int32")


class DataFormatError(ValueError):
    """A line of a data file does not follow its official format (the
    message names the file, the line and the field at fault)."""


def read_json_lines(path, what="data"):
    """``(line_number, object)`` for every non-blank line of a JSON-lines file
    (one JSON object per line, as the LIC2020 / CCKS releases are written;
    a UTF-8 byte-order mark is accepted).

    Raises:
        FileNotFoundError: no file at ``path`` (``what`` names the kind of file).
        DataFormatError: a line is not valid JSON or not a JSON object.
    """
    import json

    if not os.path.exists(path):
        raise FileNotFoundError("%s file %r not found" % (what, path))
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataFormatError("%s, line %d: invalid JSON (%s)" % (path, number, error))
            if not isinstance(obj, dict):
                raise DataFormatError("%s, line %d: expected a JSON object, got %s"
                                      % (path, number, type(obj).__name__))
            yield number, obj


def write_json_lines(path, records):
    """Write ``records`` one JSON object per line (UTF-8, not ASCII-escaped),
    creating the directory."""
    import json

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
