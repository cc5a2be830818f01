"""Text helpers: width and encoding normalisation, keyword matching, sentence
splitting (``text_segmentate``) and longest common substring / subsequence.

Names, signatures and results follow ``bert4keras.snippets`` of bert4keras
0.11.5 (Su Jianlin); differences are noted per docstring.  Python 3 only:
"unicode" and "str" are the same type here.
"""

import re
import unicodedata

# full-width forms U+FF01..U+FF5E sit 0xFEE0 above ASCII 0x21..0x7E; U+3000 is
# the ideographic (full-width) space
_FULL_TO_HALF = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)}
_FULL_TO_HALF[0x3000] = 0x20


def strQ2B(ustring):
    """Full-width characters to their half-width (ASCII) forms.

    ``'ＡＢＣ　１２３！'`` becomes ``'ABC 123!'``: U+FF01..U+FF5E map to
    U+0021..U+007E and the ideographic space U+3000 to a plain space; every
    other character is kept.  (0.11.5's version called Python 2's ``unichr``
    and raised ``NameError`` on Python 3; this is what it meant to do.)

    Args:
        ustring: ``str``.

    Returns:
        ``str`` of the same length.
    """
    return ustring.translate(_FULL_TO_HALF)


def string_matching(s, keywords):
    """Whether ``s`` contains a match of at least one of ``keywords``.

    Args:
        s: the text searched.
        keywords: iterable of regular expressions (plain strings match
            themselves unless they hold regex metacharacters), tried with
            ``re.search`` in order.

    Returns:
        ``bool``.
    """
    return any(re.search(k, s) for k in keywords)


def convert_to_unicode(text, encoding="utf-8", errors="ignore"):
    """Decode ``bytes`` to ``str``; anything else is returned unchanged.

    Args:
        text: ``bytes`` or ``str`` (or any object, passed through).
        encoding: codec of the bytes.
        errors: ``bytes.decode`` error handler (``'ignore'`` drops bad bytes).

    Returns:
        ``str`` for bytes input, else ``text`` itself.
    """
    if isinstance(text, bytes):
        text = text.decode(encoding, errors=errors)
    return text


def convert_to_str(text, encoding="utf-8", errors="ignore"):
    """The native string type of Python 3 (``str``): same as
    :func:`convert_to_unicode` (0.11.5 encoded to bytes only on Python 2)."""
    return convert_to_unicode(text, encoding, errors)


def lowercase_and_normalize(text):
    """Lower-case ``text`` and strip accents: NFD, then drop the nonspacing
    marks (Unicode category ``Mn``), as BERT's uncased vocabularies expect.

    ``'Héllo'`` becomes ``'hello'``.  Returns ``str`` (may be longer or
    shorter than ``text``: NFD decomposes, e.g. Hangul syllables into jamo).
    """
    text = unicodedata.normalize("NFD", text.lower())
    return "".join(ch for ch in text if unicodedata.category(ch) != "Mn")


def text_segmentate(text, maxlen, seps="\n", strips=None):
    """Split ``text`` into pieces no longer than ``maxlen`` characters.

    The text is split on ``seps[0]`` first; neighbouring pieces are merged
    greedily while they fit in ``maxlen``; a piece that is still too long is
    split recursively on ``seps[1:]``; a piece with no separator left is cut
    into ``maxlen``-character chunks.  Separators stay attached to the end of
    the piece they close, so with ``strips=None``
    ``''.join(text_segmentate(text, ...)) == text``.

    Follows ``text_segmentate`` of the original bert4keras (same signature),
    but the pieces can differ: whitespace is only stripped when asked
    (``strips``; 0.11.5 always stripped it, so its pieces lost their
    ``'\\n'``), the ``maxlen`` bound is always met (0.11.5 returned longer
    pieces when it ran out of separators), pieces are packed up to exactly
    ``maxlen`` (0.11.5 left one character of room and kept a run of
    repeated separators together), and an empty text gives ``[]``
    (0.11.5: ``['']``).

    Args:
        text: the string to split.
        maxlen: maximum piece length in characters (``int >= 1``).
        seps: separators in order of preference; a string is read as a
            sequence of one-character separators (``'\\n。！？'``), a list may
            hold longer ones.
        strips: if given, characters stripped from both ends of every piece
            (``str.strip(strips)``); pieces that become empty are dropped.

    Returns:
        ``list[str]``, every element with ``len <= maxlen``.

    Raises:
        ValueError: ``maxlen < 1``.
    """
    if maxlen < 1:
        raise ValueError(f"maxlen must be >= 1, got {maxlen}")
    pieces = _segmentate(text, maxlen, list(seps))
    if strips is not None:
        pieces = [p.strip(strips) for p in pieces]
    return [p for p in pieces if p]


def _segmentate(text, maxlen, seps):
    if len(text) <= maxlen:
        return [text]
    if not seps:
        return [text[i : i + maxlen] for i in range(0, len(text), maxlen)]
    sep, rest = seps[0], seps[1:]
    parts = text.split(sep)
    # Re-attach the separator to the piece it ends.
    parts = [p + sep for p in parts[:-1]] + [parts[-1]]
    out, current = [], ""
    for part in parts:
        if len(current) + len(part) <= maxlen:
            current += part
            continue
        if current:
            out.append(current)
        if len(part) <= maxlen:
            current = part
        else:
            out.extend(_segmentate(part, maxlen, rest))
            current = ""
    if current:
        out.append(current)
    return out


def longest_common_substring(source, target):
    """Longest common contiguous run of ``source`` and ``target``.

    Dynamic programming over all end positions, ``O(len(source) *
    len(target))`` time.  Among several runs of the maximal length the one
    found first is returned: smallest end in ``source``, then smallest end in
    ``target`` (the same choice as 0.11.5).

    Args:
        source: a sequence (``str``, list of tokens, ...); items compared
            with ``==``.
        target: another sequence.

    Returns:
        ``(length, (i0, i1, j0, j1))`` with ``source[i0:i1] ==
        target[j0:j1]`` the run (``(0, (0, 0, 0, 0))`` when nothing is common).
    """
    best, span = 0, (0, 0, 0, 0)
    previous = [0] * (len(target) + 1)  # run lengths ending at (i - 1, j)
    for i, s in enumerate(source, 1):
        current = [0] * (len(target) + 1)
        for j, t in enumerate(target, 1):
            if s == t:
                run = current[j] = previous[j - 1] + 1
                if run > best:
                    best, span = run, (i - run, i, j - run, j)
        previous = current
    return best, span


def longest_common_subsequence(source, target):
    """Longest common (not necessarily contiguous) subsequence.

    The classic dynamic programme (``O(len(source) * len(target))`` time and
    memory), then a walk back from the two ends that takes a match whenever
    the current items are equal and otherwise moves in ``source`` unless the
    table says moving in ``target`` keeps more (the same choice among equal
    answers as 0.11.5).

    Args:
        source: a sequence; items compared with ``==``.
        target: another sequence.

    Returns:
        ``(length, mapping)`` with ``mapping`` the list of ``(i, j)`` index
        pairs, increasing in both, such that ``source[i] == target[j]``.
    """
    n, m = len(source), len(target)
    # table[i][j]: LCS length of source[:i] and target[:j]
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        row, above, s = table[i], table[i - 1], source[i - 1]
        for j in range(1, m + 1):
            if s == target[j - 1]:
                row[j] = above[j - 1] + 1
            else:
                row[j] = max(row[j - 1], above[j])
    length, mapping = table[n][m], []
    i, j = n - 1, m - 1
    while len(mapping) < length:
        if source[i] == target[j]:
            mapping.append((i, j))
            i, j = i - 1, j - 1
        elif table[i + 1][j] > table[i][j + 1]:
            j -= 1
        else:
            i -= 1
    return length, mapping[::-1]
