"""Reading and writing BERT ``vocab.txt`` files (one token per line, the
line number its id), with the original bert4keras's ``simplified`` option
that drops tokens a Chinese model never produces and returns the
``keep_tokens`` to slice the checkpoint's embedding with."""

import os

from bert4keras.tokenizers.chars import is_cjk_character, is_punctuation, stem

__all__ = ["load_vocab", "save_vocab"]


def load_vocab(dict_path, encoding="utf-8", simplified=False, startswith=None):
    """Read a BERT ``vocab.txt`` (one token per line, id = line number).

    Follows ``load_vocab`` of bert4keras 0.11.5, with its signature and
    return values.  Each line, with only its line break removed, is a token
    (as Google's and Hugging Face's readers do: the Chinese vocabulary really
    contains U+2028 as a token, so lines are not split on other whitespace).
    A token listed twice keeps the id of its last line, as in Hugging Face.
    0.11.5 kept only a line's first whitespace-separated field (the U+2028
    line became the empty token) and numbered a repeated token by the
    dictionary's size; the ids differ from 0.11.5's only for such lines.

    Args:
        dict_path: path of the vocabulary file.
        encoding: its text encoding.
        simplified: if true, drop the tokens the tokenizer can never produce
            and renumber the rest (see Returns).
        startswith: with ``simplified``, tokens to put first, in this order,
            e.g. ``['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']``.  They are
            kept even if the filter would drop them.

    Returns:
        ``token_dict`` (token -> id), or with ``simplified=True`` a pair
        ``(new_token_dict, keep_tokens)`` where ``keep_tokens[new_id]`` is the
        token's id in the file, so ``embeddings[keep_tokens]`` slices a
        checkpoint's embedding matrix to the new vocabulary.  Dropped are the
        ``[unused*]`` tokens and every token longer than one character whose
        stem (the token without a leading ``##``) contains a CJK character or
        punctuation: the tokenizer splits those characters off on their own,
        so such tokens never come out of it.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be decoded with ``encoding``, is empty, or
            a ``startswith`` token is not in it (0.11.5: ``KeyError``).
        OSError: the file cannot be read otherwise.
    """
    path = os.fspath(dict_path)
    try:
        with open(path, encoding=encoding) as reader:
            lines = reader.read().split("\n")
    except FileNotFoundError:
        raise FileNotFoundError(f"vocabulary file not found: {path!r}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"vocabulary file {path!r} is not valid {encoding}: {err}") from None
    except OSError as err:
        raise OSError(f"cannot read vocabulary file {path!r}: {err}") from err
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise ValueError(f"vocabulary file {path!r} is empty")
    token_dict = {}
    for index, token in enumerate(lines):
        token_dict[token] = index
    if not simplified:
        return token_dict

    new_token_dict, keep_tokens = {}, []
    for token in startswith or ():
        if token not in token_dict:
            raise ValueError(f"startswith token {token!r} is not in {path!r}")
        if token not in new_token_dict:
            new_token_dict[token] = len(new_token_dict)
            keep_tokens.append(token_dict[token])
    for token, index in sorted(token_dict.items(), key=lambda item: item[1]):
        if token in new_token_dict or _is_redundant(token):
            continue
        new_token_dict[token] = len(new_token_dict)
        keep_tokens.append(index)
    return new_token_dict, keep_tokens


def _is_redundant(token):
    """True for vocabulary entries the WordPiece tokenizer never emits."""
    if token.startswith("[unused") and token.endswith("]"):
        return True
    if len(token) > 1:
        for ch in stem(token):
            if is_cjk_character(ch) or is_punctuation(ch):
                return True
    return False


def save_vocab(dict_path, token_dict, encoding="utf-8"):
    """Write ``token_dict`` as a ``vocab.txt``, one token per line by id.

    Follows ``save_vocab`` of bert4keras 0.11.5 (e.g. to save the
    ``simplified`` vocabulary next to a fine-tuned model).  The ids must be
    ``0 .. len(token_dict) - 1`` so that line number == id on reading back;
    0.11.5 wrote any ids in order and silently shifted the others.

    Args:
        dict_path: output path.
        token_dict: mapping token -> id.
        encoding: text encoding of the file.

    Raises:
        ValueError: the ids are not exactly ``0 .. n-1`` or a token contains a
            line break (it could not be read back).
    """
    items = sorted(token_dict.items(), key=lambda item: item[1])
    if [index for _, index in items] != list(range(len(items))):
        raise ValueError("token ids must be exactly 0 .. len(token_dict) - 1")
    for token, _ in items:
        if "\n" in token or "\r" in token:
            raise ValueError(f"token {token!r} contains a line break")
    with open(os.fspath(dict_path), "w", encoding=encoding, newline="\n") as writer:
        for token, _ in items:
            writer.write(token + "\n")
