"""Math word problems with UniLM on BERT: write the equation, check its value.

Task: Ape210k (Zhao et al. 2020, "Ape210K: A Large-Scale and Template-Rich
Dataset of Math Word Problems", arXiv:2009.11506): Chinese primary-school
word problems, each with an equation ``x=...`` and its answer. The model
reads the problem and writes the right-hand side of the equation; a problem
counts as solved when the value of the generated expression equals the
answer.

Data: the official JSON lines (``train.ape.json``, ``valid.ape.json``,
``test.ape.json``), one problem per line::

    {"id": "1", "original_text": "...", "segmented_text": "...",
     "equation": "x=(47.5*8)-(60.8*5)", "ans": "76"}

Numbers in the text and the equation may be fractions ``(1/3)``, mixed
numbers ``2(1/2)`` (two and a half), percentages ``25%``; answers may be
written ``(3)/(2)``. As the original bert4keras recipe, the problems are
normalised before training (:func:`normalise_problem`): mixed numbers become
``(2+1/2)``, fractions in the text lose their brackets, percentages in the
equation become ``(25/100)``, ``:`` (ratio) becomes ``/``, ``x=`` is dropped,
brackets that do not change the value are removed, and a problem whose
equation does not give its answer is left out.

By default the script runs on ``examples/data/ape210k_sample/`` (40 problems
in the official format, train 28 / valid 6 / test 6, written by us: sample
only).

Values are computed without ``eval``: :func:`evaluate_expression` parses the
expression with :mod:`ast`, accepts only numbers, ``+ - * / **`` (``^`` too),
unary signs and parentheses, and computes with exact fractions, so generated
text can never run code (a name, a call or an attribute is rejected) and
``0.1+0.2`` equals ``0.3``; exponents are bounded.

Model: UniLM (``application='unilm'``): ``[CLS] problem [SEP]`` then
``equation [SEP]``; loss on the equation tokens; beam search with the
key/value cache. Score: answer accuracy (and the share of generated
equations that can be computed). The original recipe (UER's mixed-corpus
BERT base, maxlen 192) reported accuracy above 70% on Ape210k's test set.

    python examples/task_seq2seq_ape210k_math_word_problem.py        # sample only
    python examples/task_seq2seq_ape210k_math_word_problem.py --model-dir BERT_DIR \\
        --train ape210k/train.ape.json --valid ape210k/valid.ape.json \\
        --test ape210k/test.ape.json --epochs 100 --lr 2e-5 --batch-size 32
"""

import ast
import fractions
import math
import operator
import os
import re
import time
import warnings

import common  # first: it loads TensorFlow without the C++ start-up log

from common import write_json
from seq2seq_kit import (Seq2seqDecoder, add_seq2seq_args, build_for_training, encode_source,
                         encode_target, fit_best, run_record, setup)

SAMPLE_DIR = os.path.join(common.HERE, "data", "ape210k_sample")

# ---------------------------------------------------------------------------
# Computing an expression safely
# ---------------------------------------------------------------------------

MAX_EXPRESSION_CHARS = 400
MAX_EXPONENT = 64  # |n| of an integer power; larger ones could take unbounded time
MAX_BITS = 4096  # bits of a power's numerator or denominator (about 1,200 digits)
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.Pow: None}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)%")
_MIXED = re.compile(r"(\d+)\((\d+/\d+)\)")


class ExpressionError(ValueError):
    """An expression cannot be computed: a syntax error, something that is
    not arithmetic (a name, a call, ...), a division by zero or a power out
    of bounds. The message quotes the expression."""


def rewrite_expression(text):
    """The Ape210k notation as plain arithmetic: full-width symbols
    (``（）×÷＋－``) to ASCII, ``^`` to ``**``, ``2(1/2)`` (a mixed number) to
    ``(2+1/2)``, ``25%`` to ``(25/100)``, ``:`` to ``/``; spaces and a
    leading ``x=`` dropped."""
    for wide, narrow in zip("（）×÷＋－：", "()*/+-:"):
        text = text.replace(wide, narrow)
    text = text.replace(" ", "")
    if text[:2] in ("x=", "X="):
        text = text[2:]
    text = _MIXED.sub(r"(\1+\2)", text)
    text = _PERCENT.sub(r"(\1/100)", text)
    return text.replace("^", "**").replace(":", "/")


def _power(base, exponent, expression):
    if exponent.denominator == 1:
        if abs(exponent) > MAX_EXPONENT:
            raise ExpressionError("%r: exponent %s out of bounds (|n| <= %d)"
                                  % (expression, exponent, MAX_EXPONENT))
        if base == 0 and exponent < 0:
            raise ExpressionError("%r: zero to a negative power" % expression)
        bits = max(base.numerator.bit_length(), base.denominator.bit_length()) * abs(exponent)
        if bits > MAX_BITS:
            raise ExpressionError("%r: a power of about %d bits (at most %d)"
                                  % (expression, bits, MAX_BITS))
        return base ** int(exponent)
    if base < 0:
        raise ExpressionError("%r: a negative number to a fractional power" % expression)
    value = float(base) ** float(exponent)
    return fractions.Fraction(value)


def _compute(node, expression):
    if isinstance(node, ast.Expression):
        return _compute(node.body, expression)
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ExpressionError("%r: %r is not a number" % (expression, value))
        if isinstance(value, float) and not math.isfinite(value):
            raise ExpressionError("%r: %r is not a finite number" % (expression, value))
        # from the decimal digits, so that 0.1 is exactly 1/10
        return fractions.Fraction(repr(value)) if isinstance(value, float) else \
            fractions.Fraction(value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _compute(node.left, expression), _compute(node.right, expression)
        if isinstance(node.op, ast.Pow):
            return _power(left, right, expression)
        if isinstance(node.op, ast.Div) and right == 0:
            raise ExpressionError("%r: division by zero" % expression)
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_compute(node.operand, expression))
    raise ExpressionError("%r: %s is not allowed (only numbers, + - * / ** and parentheses)"
                          % (expression, type(node).__name__))


def evaluate_expression(text):
    """The exact value of an arithmetic expression in Ape210k notation.

    Args:
        text: e.g. ``'x=(1/3)*90'``, ``'120*(1-25%)'``, ``'2(1/2)*4'``,
            ``'3^2'`` (see :func:`rewrite_expression`).

    Returns:
        A :class:`fractions.Fraction` (exact for ``+ - * /`` and integer
        powers; a fractional power is computed in floating point).

    Raises:
        ExpressionError: anything but numbers, ``+ - * / **``, unary signs
            and parentheses (names, calls, attributes, comparisons, ...); a
            syntax error; a division by zero; an integer exponent beyond
            ``MAX_EXPONENT`` or a power beyond ``MAX_BITS`` bits; an
            expression longer than
            ``MAX_EXPRESSION_CHARS``.
    """
    expression = rewrite_expression(text)
    if not expression:
        raise ExpressionError("%r: empty expression" % text)
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ExpressionError("expression of %d characters (at most %d)"
                              % (len(expression), MAX_EXPRESSION_CHARS))
    try:
        with warnings.catch_warnings():  # "invalid decimal literal" and the like
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(expression, mode="eval")
    except (SyntaxError, ValueError) as error:
        raise ExpressionError("%r: not an arithmetic expression (%s)" % (text, error)) from None
    try:
        return _compute(tree, text)
    except (OverflowError, RecursionError) as error:
        raise ExpressionError("%r: %s" % (text, error)) from None


def same_value(a, b, tolerance=1e-6):
    """Whether two values agree within ``tolerance`` relative to the larger
    magnitude (absolute below 1): generated equations often round
    differently from the reference (``3.33`` against ``10/3``: not equal)."""
    a, b = float(a), float(b)
    return abs(a - b) <= tolerance * max(1.0, abs(a), abs(b))


def try_value(text):
    """:func:`evaluate_expression`, or ``None`` when it cannot be computed."""
    try:
        return evaluate_expression(text)
    except ExpressionError:
        return None


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def _bracket_pairs(expression):
    stack, pairs = [], []
    for i, char in enumerate(expression):
        if char == "(":
            stack.append(i)
        elif char == ")" and stack:
            pairs.append((stack.pop(), i))
    return pairs


def drop_redundant_brackets(expression):
    """``expression`` without the pairs of brackets whose removal leaves its
    value unchanged (e.g. ``(47.5*8)-(60.8*5)`` -> ``47.5*8-60.8*5``), so the
    model learns one spelling per equation. Pairs are tried innermost-first
    by their closing position; a removal is kept only when the result still
    parses and has the same value."""
    value = evaluate_expression(expression)
    changed = True
    while changed:
        changed = False
        for left, right in sorted(_bracket_pairs(expression), key=lambda p: p[1]):
            candidate = expression[:left] + expression[left + 1:right] + expression[right + 1:]
            new = try_value(candidate)
            if new is not None and new == value:
                expression, changed = candidate, True
                break
    return expression


def normalise_problem(text, equation, answer):
    """``(question, equation, answer value)`` ready for training, or ``None``
    when the equation cannot be computed or does not give the answer.

    The question keeps its numbers but ``2(1/2)`` becomes ``(2+1/2)`` and
    ``(1/3)`` becomes ``1/3``; the equation is :func:`rewrite_expression`'s
    plain form with redundant brackets dropped."""
    question = _MIXED.sub(r"(\1+\2)", text)
    question = re.sub(r"\((\d+/\d+)\)", r"\1", question)
    expression = rewrite_expression(equation)
    value, gold = try_value(expression), try_value(answer)
    if value is None or gold is None or not same_value(value, gold):
        return None
    return question, drop_redundant_brackets(expression), gold


def load_problems(path, limit=None):
    """The normalised problems of an Ape210k file (see
    :func:`normalise_problem`) and the number of lines left out.

    Raises:
        FileNotFoundError, DataFormatError: see :func:`common.read_json_lines`;
            or a line without a string ``original_text``, ``equation`` or
            ``ans`` (file and line named).
    """
    problems, dropped = [], 0
    for number, obj in common.read_json_lines(path, "Ape210k", "{path}:{line}"):
        if limit and len(problems) >= limit:
            break
        where = "%s:%d" % (path, number)
        text = common.require(obj, "original_text", str, where)
        equation = common.require(obj, "equation", str, where)
        answer = common.require(obj, "ans", (str, int, float), where)
        problem = normalise_problem(text, equation, str(answer))
        if problem is None:
            dropped += 1
        else:
            problems.append(problem)
    return problems, dropped


# ---------------------------------------------------------------------------
# Solving
# ---------------------------------------------------------------------------


def solve(decoder, tokenizer, questions, args):
    """The generated equation (text, spaces removed) of every question."""
    sources = [encode_source(tokenizer, q, maxlen=args.max_source) for q in questions]
    outputs = decoder.generate(sources, batch_size=args.batch_size, beams=args.beams)
    return [tokenizer.decode(ids).replace(" ", "") for ids in outputs]


def accuracy(decoder, tokenizer, problems, args):
    """``({'accuracy', 'computable', 'count'}, equations)``: the share of
    problems whose generated equation has the answer's value, and of those
    whose equation could be computed at all."""
    equations = solve(decoder, tokenizer, [q for q, _, _ in problems], args)
    right = computable = 0
    for (_, _, gold), equation in zip(problems, equations):
        value = try_value(equation)
        computable += value is not None
        right += value is not None and same_value(value, gold)
    count = max(len(problems), 1)
    return dict(accuracy=right / count, computable=computable / count,
                count=len(problems)), equations


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    p.add_argument("--train", default=os.path.join(SAMPLE_DIR, "train.ape.json"))
    p.add_argument("--valid", default=os.path.join(SAMPLE_DIR, "valid.ape.json"))
    p.add_argument("--test", default=os.path.join(SAMPLE_DIR, "test.ape.json"),
                   help="test problems ('' for none)")
    add_seq2seq_args(p, epochs=10, lr=1e-4, batch_size=8, beams=4, max_source=192,
                     max_target=64, limit="problems per file")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    tokenizer, config, checkpoint = setup(args)
    data, dropped = {}, {}
    for split in ("train", "valid", "test"):
        path = getattr(args, split)
        data[split], dropped[split] = load_problems(path, args.limit) if path else ([], 0)
    print("problems: " + ", ".join("%s %d (%d left out)" % (k, len(data[k]), dropped[k])
                                   for k in data))
    pairs = [(encode_source(tokenizer, q, maxlen=args.max_source),
              encode_target(tokenizer, equation, args.max_target))
             for q, equation, _ in data["train"]]
    transformer, train = build_for_training(args, config, checkpoint, pairs)
    decoder = Seq2seqDecoder(transformer, tokenizer.token_to_id("[SEP]"), args.max_target,
                             jit_compile=False if args.eager else "auto")
    valid = data["valid"][:args.eval_limit or None]
    evaluator, train_seconds = fit_best(
        args, transformer.model, train, lambda: accuracy(decoder, tokenizer, valid, args)[0],
        key=lambda s: s["accuracy"],
        report=lambda s, best: "valid accuracy=%.4f computable=%.3f (best %.4f)"
        % (s["accuracy"], s["computable"], best))
    results = run_record(args, evaluator, train_seconds, config, checkpoint,
                         problems={k: len(v) for k, v in data.items()}, left_out=dropped)
    if data["test"]:
        start = time.time()
        test, equations = accuracy(decoder, tokenizer, data["test"], args)
        results.update(test=test, test_seconds=round(time.time() - start, 1))
        for (question, equation, _), generated in list(zip(data["test"], equations))[:args.show]:
            print("  problem: %s\n  equation: %s\n  generated: %s" % (question, equation,
                                                                     generated))
        print("test (%d problems): accuracy=%.4f computable=%.3f"
              % (test["count"], test["accuracy"], test["computable"]))
    if args.results:
        write_json(args.results, results)
    return results


if __name__ == "__main__":
    main()
