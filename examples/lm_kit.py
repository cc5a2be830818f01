"""What the language-model recipes share: batches, the (conditional) LM, its
perplexity, a sampler for conditional models, and the xiangqi rules.

Used by ``task_language_model.py``, ``task_conditional_language_model.py``,
``task_language_model_chinese_chess.py`` and ``task_image_caption.py``.

* :class:`LMGenerator`: next-token batches ``([tokens, segments(, condition)],
  labels, weights)``, ``(batch, seq_len)`` int32, the loss weight 1 where the
  label is a real token;
* :func:`build_lm`: a BERT-layout Transformer with ``application='lm'`` and
  its MLM head as logits, optionally with every LayerNorm conditional on a
  vector (``layer_norm_cond``, bert4keras 0.11.5's conditional LayerNorm);
  :func:`add_training_args` / :func:`fit_lm`: the training flags and loop;
* :func:`sequence_nll` / :func:`perplexity`: per-text summed negative log
  likelihood (nats) and token perplexity;
* :class:`ConditionalSampler`: decoding a conditional LM through
  :class:`bert4keras.generation.AutoRegressiveDecoder` (the cached decoder
  runs only the plain Transformer graph, so a model with extra inputs reruns
  its whole prefix at every step, as 0.11.5 did); :func:`greedy_batch`: the
  same, greedy, for a whole test set in batches;
* :class:`Xiangqi`: the rules of Chinese chess (legal moves with check, the
  flying-general rule, checkmate/stalemate), ICCS move notation.
"""

import random
import time

import common  # first: it loads TensorFlow without the C++ start-up log
import keras
import numpy as np

from bert4keras.generation import AutoRegressiveDecoder
from bert4keras.models import build_transformer_model
from bert4keras.snippets import DataGenerator, build_for_fit

from common import adamw, pad_batch

BUCKET = 16  # pad batches to a multiple of this length: few compiled shapes

# ---------------------------------------------------------------------------
# Batches, model, scores
# ---------------------------------------------------------------------------


def lm_batch(id_lists, conditions=None, bucket=BUCKET):
    """One next-token batch.

    Args:
        id_lists: token-id lists, each ``[CLS] ... [SEP]``.
        conditions: ``None`` or one array per text (stacked into the third
            input: a label ``(1,)``, an image ``(h, w, 3)``...).

    Returns:
        ``(inputs, labels, weights)``: ``inputs = [tokens, segments]`` (+
        ``[conditions]``), tokens/segments/labels int32 ``(batch, length)``
        (length a multiple of ``bucket``), ``labels[:, i] = tokens[:, i + 1]``
        and ``weights`` float32 ``(batch, length)``, 1 where that label is a
        real token (padding and the last position 0).
    """
    tokens = pad_batch(id_lists, bucket)
    labels = np.zeros_like(tokens)
    labels[:, :-1] = tokens[:, 1:]
    weights = np.zeros(tokens.shape, "float32")
    for row, ids in zip(weights, id_lists):
        row[:len(ids) - 1] = 1.0
    inputs = [tokens, np.zeros_like(tokens)]
    if conditions is not None:
        inputs.append(np.stack([np.asarray(c) for c in conditions]))
    return inputs, labels, weights


class LMGenerator(DataGenerator):
    """Batches of :func:`lm_batch` from ``(ids, condition or None)`` items."""

    def __iter__(self, random=False):
        ids, conds = [], []
        for is_end, (item, cond) in self.sample(random):
            ids.append(item)
            conds.append(cond)
            if len(ids) == self.batch_size or is_end:
                yield lm_batch(ids, None if conds[0] is None else conds)
                ids, conds = [], []


def build_lm(config, checkpoint, condition=None, keep_tokens=None, cond_hidden=None,
             cond_act=None):
    """A left-to-right LM (``application='lm'``, MLM head as logits) on a
    BERT-layout checkpoint (Google TF or HF directory; ``None``: random
    init), as a :class:`~bert4keras.models.Transformer`.

    Args:
        condition: ``None`` or ``(inputs, vector)``: a ``keras.Input`` (or a
            list of them) and a tensor ``(batch, dim)`` computed from it;
            every LayerNorm becomes conditional on ``vector`` (its gamma/beta
            shifted by zero-initialised projections, so the loaded model
            starts unchanged) and the inputs join the Keras model's
            ``[Input-Token, Input-Segment]``.
        keep_tokens: ids of the checkpoint's vocabulary to keep (a smaller
            vocabulary, rows taken from the checkpoint).
        cond_hidden, cond_act: ``layer_norm_cond_hidden_size`` / ``_act``.

    Returns:
        The Transformer; ``.model`` maps the inputs to logits
        ``(batch, seq_len, vocab)``.
    """
    kwargs = dict(application="lm", with_mlm="linear", return_keras_model=False,
                  keep_tokens=keep_tokens)
    if condition is not None:
        inputs, vector = condition
        kwargs.update(layer_norm_cond=vector, additional_input_layers=inputs,
                      layer_norm_cond_hidden_size=cond_hidden,
                      layer_norm_cond_hidden_act=cond_act)
    return build_transformer_model(config, checkpoint, **kwargs)


def compile_lm(model, lr, steps):
    """Compile for next-token training: cross-entropy on logits weighted by
    :func:`lm_batch`'s weights, token accuracy, :func:`common.adamw`."""
    model.compile(optimizer=adamw(lr, steps),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])


def add_training_args(parser, batch_size=32, epochs=1, lr=2e-4):
    """Add ``--batch-size --epochs --lr`` with the recipe's defaults."""
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--lr", type=float, default=lr, help="peak learning rate (AdamW, "
                        "linear decay to 0)")
    return parser


def fit_lm(model, items, args):
    """Train ``model`` on ``items`` (``(ids, condition or None)``) for
    ``args.epochs`` epochs of ``args.batch_size`` (:func:`compile_lm` at
    ``args.lr``; progress by :func:`common.fit_progress`).

    Returns:
        ``(losses per epoch, seconds)``.
    """
    batches = LMGenerator(items, batch_size=args.batch_size)
    compile_lm(model, args.lr, len(batches) * args.epochs)
    start = time.time()
    data = batches.forfit()
    build_for_fit(model, data)  # one trace of the training step on TensorFlow
    history = model.fit(data, steps_per_epoch=len(batches), epochs=args.epochs,
                        shuffle=False, **common.fit_progress(args))
    return [float(x) for x in history.history["loss"]], time.time() - start


_SCORERS = {}


def token_log_probs(model):
    """A Keras model with ``model``'s inputs plus ``Input-Label`` ``(batch,
    seq_len)`` int32 whose output is ``log p(label_i | tokens_<=i)``
    ``(batch, seq_len)`` (log-softmax of the logits; computed in the graph,
    so only that matrix leaves it). Built once per model."""
    if id(model) not in _SCORERS:
        labels = keras.Input(shape=(None,), dtype="int32", name="Input-Next-Token")
        logp = keras.ops.log_softmax(keras.ops.cast(model.outputs[0], "float32"), axis=-1)
        picked = keras.ops.take_along_axis(logp, keras.ops.expand_dims(labels, -1), axis=-1)
        _SCORERS[id(model)] = keras.Model(list(model.inputs) + [labels], picked[..., 0])
    return _SCORERS[id(model)]


def sequence_nll(model, items, batch_size=32):
    """Summed negative log-likelihood (nats) of each text and its number of
    predicted tokens (every token after ``[CLS]``, ``[SEP]`` included).

    Args:
        model: a model of :func:`build_lm` (logits ``(batch, seq_len, vocab)``).
        items: ``(ids, condition or None)`` pairs as :class:`LMGenerator`'s.

    Returns:
        ``(nll, counts)``: float64 ``(n,)`` and int ``(n,)``.
    """
    scorer = token_log_probs(model)
    nll, counts = [], []
    for b in range(0, len(items), batch_size):
        chunk = items[b:b + batch_size]
        conds = None if chunk[0][1] is None else [c for _, c in chunk]
        inputs, labels, weights = lm_batch([i for i, _ in chunk], conds)
        picked = np.asarray(scorer.predict_on_batch(inputs + [labels]), "float64")
        nll.extend(-(picked * weights).sum(axis=1))
        counts.extend(weights.sum(axis=1).astype(int))
    return np.asarray(nll), np.asarray(counts)


def perplexity(model, items, batch_size=32):
    """``exp(total NLL / total tokens)`` of :func:`sequence_nll`."""
    nll, counts = sequence_nll(model, items, batch_size)
    return float(np.exp(nll.sum() / max(counts.sum(), 1)))


class ConditionalSampler(AutoRegressiveDecoder):
    """Decode a model whose inputs are ``[tokens, segments, condition]``.

    ``inputs`` of the searches is ``[condition]`` (one item, no batch axis);
    the output starts with ``start_id`` (``[CLS]``). At every step the whole
    prefix is rerun, right-padded to a multiple of :data:`BUCKET` (the
    causal mask keeps padding invisible), and the logits of its last real
    position are returned.
    """

    def __init__(self, model, start_id, end_id, maxlen, minlen=1):
        super().__init__(start_id, end_id, maxlen, minlen)
        self.model = model

    @AutoRegressiveDecoder.wraps(default_rtype="logits")
    def predict(self, inputs, output_ids, states):
        length = output_ids.shape[1]
        tokens = pad_batch(list(output_ids), BUCKET)
        logits = self.model.predict_on_batch([tokens, np.zeros_like(tokens), inputs[0]])
        return np.asarray(logits)[:, length - 1]


def greedy_batch(model, conditions, start_id, end_id, maxlen, batch_size=64):
    """Greedy decoding of a conditional LM for many conditions at once.

    :class:`ConditionalSampler` decodes one condition at a time (the
    :class:`~bert4keras.generation.AutoRegressiveDecoder` API); scoring a
    test set wants all rows of a batch in one forward pass per step. Each
    step reruns the prefix ``[start_id] + generated`` (no cache).

    Args:
        model: inputs ``[tokens, segments, condition]``, logits out.
        conditions: array ``(n, ...)``, one condition per output.
        start_id, end_id: first token of every prefix; the token that ends
            a row (rows that ended are padded with it).
        maxlen: most tokens generated per row.

    Returns:
        A list of ``n`` id lists (without ``start_id``, ``end_id`` dropped).
    """
    out = []
    for b in range(0, len(conditions), batch_size):
        cond = np.asarray(conditions[b:b + batch_size])
        ids = np.full((len(cond), 1), start_id, "int32")
        done = np.zeros(len(cond), bool)
        for step in range(maxlen):
            tokens = pad_batch(list(ids), BUCKET)
            logits = np.asarray(model.predict_on_batch([tokens, np.zeros_like(tokens), cond]))
            nxt = np.where(done, end_id, logits[:, step].argmax(-1)).astype("int32")
            ids = np.concatenate([ids, nxt[:, None]], 1)
            done |= nxt == end_id
            if done.all():
                break
        for row in ids[:, 1:]:
            row = list(row)
            out.append(row[:row.index(end_id)] if end_id in row else row)
    return out


def set_seeds(seed):
    """Seed Python, NumPy and Keras."""
    random.seed(seed)
    keras.utils.set_random_seed(seed)


def start_run(args):
    """Seed with ``args.seed`` (:func:`set_seeds`) and resolve the model flags.

    Returns:
        ``(config, checkpoint, vocab)`` paths of :func:`common.resolve_paths`.

    Raises:
        FileNotFoundError: as :func:`common.resolve_paths` (no config or
            vocabulary under ``--model-dir``).
    """
    set_seeds(args.seed)
    return common.resolve_paths(args)


# ---------------------------------------------------------------------------
# Xiangqi rules
# ---------------------------------------------------------------------------

FILES = "abcdefghi"
#: the start position, rank 0 (red's back rank) first; upper case red, lower case black.
#: K general, A advisor, B elephant, N horse, R chariot, C cannon, P soldier.
START = ["RNBAKABNR", ".........", ".C.....C.", "P.P.P.P.P", ".........",
         ".........", "p.p.p.p.p", ".c.....c.", ".........", "rnbakabnr"]
ORTHOGONAL = ((1, 0), (-1, 0), (0, 1), (0, -1))
DIAGONAL = ((1, 1), (1, -1), (-1, 1), (-1, -1))
HORSE = ((2, 1), (2, -1), (-2, 1), (-2, -1), (1, 2), (1, -2), (-1, 2), (-1, -2))


def iccs(move):
    """``((rank, file), (rank, file))`` -> ICCS text, e.g. ``'h2e2'`` (file
    letter a-i from red's left, rank digit 0-9 from red's back rank)."""
    (r0, f0), (r1, f1) = move
    return "%s%d%s%d" % (FILES[f0], r0, FILES[f1], r1)


def parse_iccs(text):
    """ICCS text -> ``((rank, file), (rank, file))``.

    Raises:
        ValueError: not four characters of the form file-rank-file-rank.
    """
    if (len(text) != 4 or text[0] not in FILES or text[2] not in FILES
            or not text[1].isdigit() or not text[3].isdigit()):
        raise ValueError("%r is not an ICCS move (e.g. 'h2e2')" % text)
    return (int(text[1]), FILES.index(text[0])), (int(text[3]), FILES.index(text[2]))


class Xiangqi:
    """A xiangqi position: ``board[rank][file]`` (``'.'`` empty), ``red`` to
    move or not. The basic rules: the general and advisors stay in the
    palace, elephants on their side of the river and are blocked at the eye,
    horses are blocked at the leg, cannons capture over exactly one screen,
    soldiers also move sideways once across the river; a move may not leave
    one's own general attacked, nor the two generals facing each other on an
    open file. A side without a legal move has lost (checkmate or
    stalemate). Repetition rules are not modelled.

    Checked against published perft counts (44, 1,920, 79,666, 3,290,240
    leaves at depths 1-4 from the start) and, once, against the ``cchess``
    package's move generator on 7,139 positions of random games (no
    difference).
    """

    def __init__(self, board=None, red=True):
        self.board = [list(row) for row in (board or START)]
        self.red = red

    def copy(self):
        """An independent copy of the position."""
        return Xiangqi(["".join(row) for row in self.board], self.red)

    @staticmethod
    def own(piece, red):
        """Whether ``piece`` (a board character) belongs to that side."""
        return piece != "." and piece.isupper() == red

    @staticmethod
    def on_board(r, f):
        """Whether ``(rank, file)`` is on the 10 x 9 board."""
        return 0 <= r < 10 and 0 <= f < 9

    @staticmethod
    def in_palace(r, f, red):
        """Whether ``(rank, file)`` is in that side's palace (files d-f)."""
        return 3 <= f <= 5 and (0 <= r <= 2 if red else 7 <= r <= 9)

    def pseudo_moves(self, red):
        """Moves by the pieces' movement rules, ignoring checks."""
        board, moves = self.board, []
        for r in range(10):
            for f in range(9):
                piece = board[r][f]
                if piece == "." or piece.isupper() != red:
                    continue
                kind, targets = piece.upper(), []
                if kind in "RC":
                    for dr, df in ORTHOGONAL:
                        rr, ff, screen = r + dr, f + df, False
                        while self.on_board(rr, ff):
                            there = board[rr][ff]
                            if not screen:
                                if there == ".":
                                    targets.append((rr, ff))
                                else:
                                    if kind == "R":
                                        targets.append((rr, ff))
                                        break
                                    screen = True
                            elif there != ".":
                                targets.append((rr, ff))
                                break
                            rr, ff = rr + dr, ff + df
                elif kind == "N":
                    for dr, df in HORSE:
                        leg = (r + dr // 2, f) if abs(dr) == 2 else (r, f + df // 2)
                        if self.on_board(r + dr, f + df) and board[leg[0]][leg[1]] == ".":
                            targets.append((r + dr, f + df))
                elif kind == "B":
                    for dr, df in DIAGONAL:
                        rr, ff = r + 2 * dr, f + 2 * df
                        if (self.on_board(rr, ff) and (rr <= 4 if red else rr >= 5)
                                and board[r + dr][f + df] == "."):
                            targets.append((rr, ff))
                elif kind in "AK":
                    for dr, df in DIAGONAL if kind == "A" else ORTHOGONAL:
                        if self.in_palace(r + dr, f + df, red):
                            targets.append((r + dr, f + df))
                else:  # P
                    forward = 1 if red else -1
                    steps = [(forward, 0)]
                    if (r >= 5) if red else (r <= 4):
                        steps += [(0, 1), (0, -1)]
                    targets = [(r + dr, f + df) for dr, df in steps
                               if self.on_board(r + dr, f + df)]
                moves.extend(((r, f), t) for t in targets if not self.own(board[t[0]][t[1]], red))
        return moves

    def general(self, red):
        """``(rank, file)`` of that side's general.

        Raises:
            ValueError: it is not on the board.
        """
        target = "K" if red else "k"
        for r in range(10):
            for f in range(3, 6):
                if self.board[r][f] == target:
                    return r, f
        raise ValueError("no %s general on the board" % ("red" if red else "black"))

    def attacked(self, square, by_red):
        """Whether a piece of side ``by_red`` attacks ``(rank, file)`` (the
        generals facing each other counts as an attack by the general)."""
        board, (r, f) = self.board, square
        enemy = (lambda p: p.isupper()) if by_red else (lambda p: p.islower())
        for dr, df in ORTHOGONAL:  # chariots, cannons, the facing general
            rr, ff, screens = r + dr, f + df, 0
            while self.on_board(rr, ff):
                piece = board[rr][ff]
                if piece != ".":
                    if enemy(piece):
                        kind = piece.upper()
                        if screens == 0 and (kind == "R" or (kind == "K" and df == 0)):
                            return True
                        if screens == 1 and kind == "C":
                            return True
                    screens += 1
                    if screens > 1:
                        break
                rr, ff = rr + dr, ff + df
        for dr, df in HORSE:  # a horse at (r - dr, f - df) moving by (dr, df)
            hr, hf = r - dr, f - df
            if self.on_board(hr, hf) and enemy(board[hr][hf]) and board[hr][hf].upper() == "N":
                leg = (hr + dr // 2, hf) if abs(dr) == 2 else (hr, hf + df // 2)
                if board[leg[0]][leg[1]] == ".":
                    return True
        back = -1 if by_red else 1  # soldiers: from behind, or sideways once across the river
        for pr, pf in ((r + back, f), (r, f - 1), (r, f + 1)):
            if self.on_board(pr, pf) and enemy(board[pr][pf]) and board[pr][pf].upper() == "P":
                crossed = pr >= 5 if by_red else pr <= 4
                if pf == f or crossed:
                    return True
        return False

    def make(self, move):
        """Play ``move`` (legality not checked); returns the captured piece."""
        (r0, f0), (r1, f1) = move
        captured = self.board[r1][f1]
        self.board[r1][f1], self.board[r0][f0] = self.board[r0][f0], "."
        self.red = not self.red
        return captured

    def unmake(self, move, captured):
        """Take back :meth:`make`."""
        (r0, f0), (r1, f1) = move
        self.board[r0][f0], self.board[r1][f1] = self.board[r1][f1], captured
        self.red = not self.red

    def legal_moves(self):
        """The side to move's legal moves, ``[((r0, f0), (r1, f1)), ...]``."""
        side, out = self.red, []
        for move in self.pseudo_moves(side):
            captured = self.make(move)
            if not self.attacked(self.general(side), not side):
                out.append(move)
            self.unmake(move, captured)
        return out

    def play(self, text):
        """Play an ICCS move after checking it is legal.

        Raises:
            ValueError: malformed, or not a legal move here (the move and the
                side are named).
        """
        move = parse_iccs(text)
        if move not in self.legal_moves():
            raise ValueError("%r is not a legal move for %s here"
                             % (text, "red" if self.red else "black"))
        self.make(move)

    def perft(self, depth):
        """Leaf count of the legal-move tree ``depth`` plies deep."""
        if depth == 0:
            return 1
        total = 0
        for move in self.legal_moves():
            captured = self.make(move)
            total += self.perft(depth - 1)
            self.unmake(move, captured)
        return total


def random_game(rng, max_plies):
    """A game of uniformly random legal moves (ICCS list), stopping at
    ``max_plies`` or when the side to move has no legal move."""
    game, moves = Xiangqi(), []
    for _ in range(max_plies):
        legal = game.legal_moves()
        if not legal:
            break
        move = legal[rng.randrange(len(legal))]
        moves.append(iccs(move))
        game.make(move)
    return moves
