"""Character classes of the BERT tokenizer: whitespace, punctuation, CJK,
control characters, as single-character tests and as compiled regular
expressions for the tokenizer's hot path.

The definitions follow Hugging Face ``tokenizers`` (``BertNormalizer`` and
``BertPreTokenizer``), which differ from Google BERT's ``tokenization.py`` in
the points listed in :mod:`bert4keras.tokenizers.wordpiece`:

* whitespace: ``\\t``, ``\\n``, ``\\r`` and every character of category ``Z``;
* punctuation: printable non-alphanumeric ASCII, or category ``P``;
* CJK: the blocks of :data:`CJK_RANGES` (Hugging Face's, Extension E from
  U+2B920);
* control (dropped by the cleanup): categories ``Cc``, ``Cf``, ``Co`` and
  ``Cs`` except ``\\t``, ``\\n``, ``\\r``; NUL and U+FFFD are dropped too.

Categories come from Python's ``unicodedata`` (the running interpreter's
Unicode version). This module imports nothing from the package, so every
tokenizer module can import it.
"""

import itertools
import re
import unicodedata

__all__ = [
    "CJK_PUNCTUATION",
    "CJK_RANGES",
    "CONTROL_CATEGORIES",
    "CharTables",
    "char_tables",
    "is_cjk_character",
    "is_control",
    "is_punctuation",
    "is_space",
    "is_special",
    "stem",
]

# CJK blocks that are split into single characters, inclusive code points.
CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)
# Unicode categories removed by the cleanup (besides NUL and U+FFFD).
CONTROL_CATEGORIES = frozenset(("Cc", "Cf", "Co", "Cs"))


def _from_ranges(*ranges):
    return "".join(chr(c) for first, last in ranges for c in range(first, last + 1))


# The full-width and CJK punctuation after which bert4keras 0.11.5's decode
# removed the space, in 0.11.5's order (``Tokenizer._cjk_punctuation()``):
# full-width ASCII symbols, ideographic punctuation and brackets, dashes,
# quotation marks, ellipsis, small forms, middle dot, then ！ ？ ｡ 。.
CJK_PUNCTUATION = _from_ranges(
    (0xFF02, 0xFF0D), (0xFF0F, 0xFF0F), (0xFF1A, 0xFF1E), (0xFF20, 0xFF20),
    (0xFF3B, 0xFF40), (0xFF5B, 0xFF60), (0xFF62, 0xFF64), (0x3000, 0x3001),
    (0x3003, 0x3003), (0x3008, 0x3011), (0x3014, 0x301F), (0x3030, 0x3030),
    (0x303E, 0x303F), (0x2013, 0x2014), (0x2018, 0x2019), (0x201B, 0x201F),
    (0x2026, 0x2027), (0xFE4F, 0xFE4F), (0xFE51, 0xFE51), (0xFE54, 0xFE54),
    (0x00B7, 0x00B7), (0xFF01, 0xFF01), (0xFF1F, 0xFF1F), (0xFF61, 0xFF61),
    (0x3002, 0x3002),
)


# ---------------------------------------------------------------------------
# One character at a time
# ---------------------------------------------------------------------------


def stem(token):
    """The token without a leading ``##`` (a WordPiece continuation)."""
    return token[2:] if token[:2] == "##" else token


def is_space(ch):
    """Whitespace: ``\\t``, ``\\n``, ``\\r`` or Unicode category ``Z*``."""
    return ch in "\t\n\r" or unicodedata.category(ch)[0] == "Z"


def _is_ascii_punct(code):
    return 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126


def is_punctuation(ch):
    """Punctuation: printable non-alphanumeric ASCII or category ``P*``
    (Google BERT's definition)."""
    return _is_ascii_punct(ord(ch)) or unicodedata.category(ch)[0] == "P"


def is_cjk_character(ch):
    """A character of the CJK blocks that are split off one by one
    (:data:`CJK_RANGES`)."""
    code = ord(ch)
    for a, b in CJK_RANGES:
        if a <= code <= b:
            return True
    return False


def is_control(ch):
    """A character removed by the cleanup: category ``Cc``, ``Cf``, ``Co`` or
    ``Cs``, except ``\\t``, ``\\n``, ``\\r`` (which are whitespace).  NUL and
    U+FFFD are removed too."""
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch) in CONTROL_CATEGORIES


def is_special(token):
    """A bracketed special token such as ``[CLS]`` or ``[unused1]``."""
    return bool(token) and token[0] == "[" and token[-1] == "]" and len(token) > 2


# ---------------------------------------------------------------------------
# Whole classes as regular expressions
# ---------------------------------------------------------------------------


def _ranges_to_class(ranges):
    """Inclusive ``(first, last)`` code point ranges -> the inside of a regex
    character class (adjacent ranges merged)."""
    merged = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    return "".join("\\U%08x" % a if a == b else "\\U%08x-\\U%08x" % (a, b) for a, b in merged)


_ASTRAL = "\\U00010000-\\U0010ffff"


def _split_bmp(ranges):
    bmp, astral = [], []
    for first, last in ranges:
        if first <= 0xFFFF:
            bmp.append((first, min(last, 0xFFFF)))
        if last > 0xFFFF:
            astral.append((max(first, 0x10000), last))
    return _ranges_to_class(bmp), _ranges_to_class(astral)


def _one_of(ranges):
    """Regex for one character in ``ranges``.

    Python's ``re`` tests the characters of a class below U+10000 with one
    bitmap lookup but the ranges above it one after the other, for every
    character of the text.  Testing the astral ranges only for astral
    characters makes cleanup several times faster on ordinary text.
    """
    bmp, astral = _split_bmp(ranges)
    if not astral:
        return "[%s]" % bmp
    if not bmp:
        return "(?=[%s])[%s]" % (_ASTRAL, astral)
    return "(?:[%s]|(?=[%s])[%s])" % (bmp, _ASTRAL, astral)


def _none_of(ranges):
    """Regex for one character not in ``ranges`` (see :func:`_one_of`)."""
    bmp, astral = _split_bmp(ranges)
    return "(?:[^%s%s]|(?=[%s])[^\\x00-\\uffff%s])" % (bmp, _ASTRAL, _ASTRAL, astral)


def _subtract(ranges, hole):
    """Inclusive ranges minus the inclusive range ``hole``."""
    out = []
    for first, last in ranges:
        if last < hole[0] or first > hole[1]:
            out.append((first, last))
            continue
        if first < hole[0]:
            out.append((first, hole[0] - 1))
        if last > hole[1]:
            out.append((hole[1] + 1, last))
    return out


class CharTables:
    """Regex character classes for the cleanup and splitting rules.

    Built once (a fraction of a second) from ``unicodedata`` by one scan over
    all code points; the classes are exactly the single-character tests of
    this module (:func:`is_control` etc.) applied to every code point.

    Attributes:
        drop, space, punct, marks, cjk: the inside of a regex character class
            (``'[%s]' % tables.space`` matches one whitespace character);
            ``marks`` is category ``Mn`` (removed when stripping accents).
        drop_re: matches runs of characters the cleanup removes.
        drop_marks_re: the same plus combining marks.
    """

    def __init__(self):
        # runs of equal category over all code points (a few thousand runs)
        cats = map(unicodedata.category, map(chr, range(0x110000)))
        drop, space, punct, marks = [(0xFFFD, 0xFFFD)], [(9, 10), (13, 13)], [], []
        start = 0
        for cat, run in itertools.groupby(cats):
            end = start + sum(1 for _ in run) - 1
            if cat in CONTROL_CATEGORIES:
                drop.append((start, end))
            elif cat[0] == "Z":
                space.append((start, end))
            elif cat[0] == "P":
                punct.append((start, end))
            elif cat == "Mn":
                marks.append((start, end))
            start = end + 1
        # ASCII symbols count as punctuation (Google BERT); \t \n \r are kept
        punct.extend(((33, 47), (58, 64), (91, 96), (123, 126)))
        drop = _subtract(_subtract(drop, (9, 10)), (13, 13))
        cjk = list(CJK_RANGES)
        # plain classes (the single-character tests' definitions, used by the tests)
        self.drop = _ranges_to_class(drop)
        self.space = _ranges_to_class(space)
        self.punct = _ranges_to_class(punct)
        self.marks = _ranges_to_class(marks)
        self.cjk = _ranges_to_class(cjk)
        # fast regexes: see _one_of
        self.drop_re = re.compile(_one_of(drop) + "+")
        self.drop_marks_re = re.compile(_one_of(drop + marks) + "+")
        self._word_res = {
            split_cjk: re.compile("%s|%s+" % (_one_of(single), _none_of(single + space)))
            for split_cjk, single in ((True, punct + cjk), (False, punct))
        }

    def word_re(self, split_cjk):
        """Regex whose ``findall`` gives the words of cleaned text: a single
        CJK character (when ``split_cjk``), a single punctuation character, or
        a maximal run of other non-space characters."""
        return self._word_res[bool(split_cjk)]


_TABLES = None


def char_tables():
    """The :class:`CharTables`, built on first use and shared."""
    global _TABLES
    if _TABLES is None:
        _TABLES = CharTables()
    return _TABLES
