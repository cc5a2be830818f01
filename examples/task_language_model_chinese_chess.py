"""Chinese chess (xiangqi) as language modelling: a left-to-right LM reads a
game's moves and predicts the next move; how often is that move legal?

Moves are written in ICCS coordinates (``h2e2``: from file h rank 2 to file
e rank 2; files a-i from red's left, ranks 0-9 from red's side), four tokens
per move, a game ``[CLS] h2e2h9g7...``. The vocabulary is cut to those 23
tokens (``[PAD] [UNK] [CLS] [SEP] 0-9 a-i``) with ``keep_tokens``, their
embedding rows taken from the checkpoint, as bert4keras 0.11.5's
``task_language_model_chinese_chess.py`` did.

Data: 0.11.5 trained on a collection of about 90k recorded games that
cannot be downloaded here. These games are instead **generated**: self-play
of uniformly random legal moves (``--games`` games of at most
``--max-plies`` plies, seeded), split 90/10 by game; the four hand-written
opening lines in :data:`OPENINGS` (central cannon against screen horses,
etc.) are checked for legality and used as extra prompts. Random play has
no strategy to learn, so the task measures exactly one thing: whether the
LM learns the rules (where the pieces are, how each moves) from move
sequences alone.

Rules: ``lm_kit.Xiangqi``, our own move generator (checks, the
flying-general rule, blocked horses and elephants, cannon screens),
verified by the published perft counts and, once, against the ``cchess``
package (LGPL; not a dependency).

Model: the shipped small Chinese BERT with ``application='lm'`` (or
``--random-init``), next-token cross-entropy. Score: for positions drawn
from the held-out games (and after each opening line), the LM's greedy next
move (four tokens, :class:`bert4keras.generation.CachedDecoder`) is checked
with the rules: the fraction well-formed and the fraction legal; and
``--samples`` moves drawn from the LM's distribution per position, the
fraction legal (an estimate of the probability the LM gives to legal
moves); before and after training, next to the chance of a uniformly random
well-formed move being legal.

    python examples/task_language_model_chinese_chess.py
    python examples/task_language_model_chinese_chess.py --games 800 --epochs 2  # 4x shorter
    python examples/task_language_model_chinese_chess.py --random-init --games 64 --epochs 1
"""

import random
import time

import common  # first: it loads TensorFlow without the C++ start-up log
import numpy as np

from bert4keras.generation import CachedDecoder
from bert4keras.tokenizers import load_vocab

import lm_kit
from common import add_model_args, add_run_args, describe_model, write_json

TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + list("0123456789" + lm_kit.FILES)
#: hand-written opening lines (ICCS), each checked move by move by the rules
OPENINGS = {
    "central cannon vs screen horses (中炮对屏风马)": "h2e2 h9g7 h0g2 i9h9 i0h0 b9c7",
    "same-direction cannons (顺手炮)": "h2e2 h7e7 h0g2 h9g7 i0h0 i9h9",
    "elephant opening (飞相局)": "c0e2 h7e7 h0g2 h9g7 i0h0 i9h9",
    "pawn opening vs pawn (仙人指路对卒)": "g3g4 c6c5 h0g2 b9c7 b2e2 h9g7",
}


class MoveCodec:
    """ICCS move text <-> ids of the 23-token vocabulary."""

    def __init__(self):
        self.ids = {t: i for i, t in enumerate(TOKENS)}
        self.cls = self.ids["[CLS]"]

    def encode(self, moves):
        """``[CLS]`` + four ids per move."""
        return [self.cls] + [self.ids[c] for move in moves for c in move]

    def decode(self, ids):
        """Generated ids -> text, ``?`` for a special token."""
        return "".join(TOKENS[int(i)] if len(TOKENS[int(i)]) == 1 else "?" for i in ids)


def positions_after(moves):
    """The position after playing ``moves`` (each checked)."""
    game = lm_kit.Xiangqi()
    for move in moves:
        game.play(move)
    return game


def legal_rate(decoder, codec, prompts, batch_size, samples=0, seed=0):
    """The LM's next move after each prompt (a list of moves), checked by
    the rules.

    Returns:
        ``dict(well_formed, legal, sampled_legal, chance, predictions)``:
        the fractions of prompts whose greedy move (four argmax tokens) is
        well-formed / legal; the fraction of ``samples`` moves drawn per
        prompt from the LM's full distribution that are legal (an estimate
        of the probability the LM gives to legal moves; ``None`` without
        samples); ``chance``, the mean over prompts of (legal moves / 8,100
        well-formed moves); the greedy moves.
    """
    formed = legal = drawn_legal = drawn = 0
    chance, predictions = [], []
    for b in range(0, len(prompts), batch_size):
        chunk = prompts[b:b + batch_size]
        encoded = [codec.encode(p) for p in chunk]
        outputs = decoder.generate(encoded, max_new_tokens=4)
        draws = (decoder.generate(encoded, method="sample", n=samples, seed=seed + b,
                                  max_new_tokens=4) if samples else [[]] * len(chunk))
        for moves, ids, rows in zip(chunk, outputs, draws):
            text = codec.decode(ids)
            legal_moves = {lm_kit.iccs(m) for m in positions_after(moves).legal_moves()}
            chance.append(len(legal_moves) / 8100.0)
            try:
                lm_kit.parse_iccs(text)
                formed += 1
            except ValueError:
                pass
            legal += text in legal_moves
            drawn_legal += sum(codec.decode(r) in legal_moves for r in rows)
            drawn += len(rows)
            predictions.append(text)
    n = max(len(prompts), 1)
    return dict(well_formed=formed / n, legal=legal / n,
                sampled_legal=drawn_legal / drawn if drawn else None,
                chance=float(np.mean(chance)), predictions=predictions)


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    add_model_args(p)
    p.add_argument("--games", type=int, default=4000, help="random self-play games generated")
    p.add_argument("--max-plies", type=int, default=24, help="plies per game at most")
    lm_kit.add_training_args(p, batch_size=16, epochs=4, lr=5e-4)
    p.add_argument("--eval-positions", type=int, default=300,
                   help="held-out positions whose next move is predicted")
    p.add_argument("--samples", type=int, default=8,
                   help="moves sampled per position (0: greedy only)")
    add_run_args(p, limit=None, output=False)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    config, checkpoint, vocab = lm_kit.start_run(args)
    vocabulary = load_vocab(vocab)
    missing = [t for t in TOKENS if t not in vocabulary]
    if missing:
        raise ValueError("%s lacks the tokens %s" % (vocab, missing))
    keep_tokens = [vocabulary[t] for t in TOKENS]
    codec = MoveCodec()
    for line in OPENINGS.values():
        positions_after(line.split())  # raises if a hand-written move is illegal

    rng = random.Random(args.seed)
    start = time.time()
    games = [lm_kit.random_game(rng, args.max_plies) for _ in range(args.games)]
    n_train = max(len(games) * 9 // 10, 1)
    train, test = games[:n_train], games[n_train:] or games[:1]
    prompts = [g[:rng.randrange(len(g))] for g in (rng.choice(test) for _ in
                                                   range(args.eval_positions))]
    openings = [line.split() for line in OPENINGS.values()]
    print("%d random games (%d train, %d held out), %.1f plies on average, generated in %.0f s"
          % (len(games), len(train), len(test), np.mean([len(g) for g in games]),
             time.time() - start))

    transformer = lm_kit.build_lm(config, checkpoint, keep_tokens=keep_tokens)
    model = transformer.model
    print("model: %s, application='lm', %d tokens" % (describe_model(config, checkpoint),
                                                      len(TOKENS)))
    decoder = CachedDecoder(transformer, end_id=None, maxlen=4)
    batch = 64
    before = legal_rate(decoder, codec, prompts, batch, args.samples, args.seed)
    print("before training: greedy move well-formed %.3f, legal %.3f; sampled moves legal %s "
          "(a random well-formed move: %.4f)" % (before["well_formed"], before["legal"],
                                                 before["sampled_legal"], before["chance"]))

    items = [(codec.encode(g), None) for g in train]
    losses, train_seconds = lm_kit.fit_lm(model, items, args)

    after = legal_rate(decoder, codec, prompts, batch, args.samples, args.seed)
    opening = legal_rate(decoder, codec, openings, batch)
    print("after training (%.0f s): greedy move well-formed %.3f, legal %.3f (before %.3f); "
          "sampled moves legal %s (before %s); a random well-formed move %.4f"
          % (train_seconds, after["well_formed"], after["legal"], before["legal"],
             after["sampled_legal"], before["sampled_legal"], after["chance"]))
    for (name, line), move in zip(OPENINGS.items(), opening["predictions"]):
        print("  %s: %s -> %s" % (name, line, move))
    results = dict(legal_before=before["legal"], legal_after=after["legal"],
                   sampled_legal_before=before["sampled_legal"],
                   sampled_legal_after=after["sampled_legal"],
                   well_formed_before=before["well_formed"],
                   well_formed_after=after["well_formed"], random_move_legal=after["chance"],
                   openings_legal=opening["legal"], opening_moves=opening["predictions"],
                   samples=args.samples,
                   positions=len(prompts), train_loss=losses,
                   train_seconds=round(train_seconds, 1), games=len(games),
                   max_plies=args.max_plies, epochs=args.epochs, lr=args.lr,
                   batch_size=args.batch_size, config=config, checkpoint=checkpoint,
                   seed=args.seed)
    if args.results:
        write_json(args.results, results)
    return results


if __name__ == "__main__":
    main()
