"""The language-model recipes (issue 15): examples/task_language_model.py,
task_conditional_language_model.py, task_language_model_chinese_chess.py,
task_image_caption.py and their kit examples/lm_kit.py.

Smoke runs call each script's ``main`` in-process for a few steps (a one-layer
random model where the checkpoint does not matter); the mechanisms are
checked against independent references: the xiangqi rules against published
perft counts and hand-set positions, perplexity against a NumPy log-softmax
of the model's logits, batched greedy decoding against the library's
``AutoRegressiveDecoder.greedy_search``."""

import importlib
import json
import math
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
VOCAB = os.path.join(ROOT, "checkpoints", "chinese_bert_small", "vocab.txt")


def load(name):
    if EXAMPLES not in sys.path:
        sys.path.insert(0, EXAMPLES)
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    """A one-layer BERT config with the shipped vocabulary's size."""
    path = tmp_path_factory.mktemp("lm") / "bert_config.json"
    path.write_text(json.dumps(dict(
        vocab_size=13585, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, hidden_act="gelu", hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, max_position_embeddings=256, type_vocab_size=2)))
    return ["--config", str(path), "--vocab", VOCAB, "--random-init"]


# ---------------------------------------------------------------------------
# Xiangqi rules
# ---------------------------------------------------------------------------


def board(*pieces):
    """An empty board with ``(rank, file, piece)`` placed."""
    rows = [["."] * 9 for _ in range(10)]
    for r, f, p in pieces:
        rows[r][f] = p
    return ["".join(row) for row in rows]


def moves_of(game, square):
    kit = load("lm_kit")
    return sorted(kit.iccs(m) for m in game.legal_moves() if m[0] == square)


def test_xiangqi_perft_matches_published_counts():
    kit = load("lm_kit")
    game = kit.Xiangqi()
    assert game.perft(1) == 44
    assert game.perft(2) == 1920  # the standard xiangqi perft table: 44, 1920, 79666, ...


def test_xiangqi_rules_on_hand_set_positions():
    kit = load("lm_kit")
    X = kit.Xiangqi
    # a horse blocked at the leg: b0 horse with b1 occupied cannot go to a2/c2
    game = X(board((0, 4, "K"), (9, 3, "k"), (0, 1, "N"), (1, 1, "P")))
    assert moves_of(game, (0, 1)) == ["b0d1"]
    # an elephant blocked at the eye, and never across the river
    game = X(board((0, 4, "K"), (9, 3, "k"), (4, 2, "B"), (3, 1, "P")))
    assert moves_of(game, (4, 2)) == ["c4e2"]
    # a cannon captures over exactly one screen, moves without capturing otherwise
    game = X(board((0, 4, "K"), (9, 3, "k"), (2, 0, "C"), (5, 0, "p"), (7, 0, "r")))
    assert moves_of(game, (2, 0)) == ["a2a0", "a2a1", "a2a3", "a2a4", "a2a7"] + [
        "a2%s2" % f for f in "bcdefghi"]
    # a soldier moves sideways only across the river, never back
    game = X(board((0, 4, "K"), (9, 3, "k"), (3, 2, "P"), (5, 6, "P")))
    assert moves_of(game, (3, 2)) == ["c3c4"]
    assert moves_of(game, (5, 6)) == ["g5f5", "g5g6", "g5h5"]
    # flying general: the only piece between the generals may not leave the file
    game = X(board((0, 4, "K"), (9, 4, "k"), (4, 4, "N")))
    assert moves_of(game, (4, 4)) == []
    game = X(board((0, 4, "K"), (9, 3, "k"), (4, 4, "N")))
    assert len(moves_of(game, (4, 4))) == 8
    # the general may not step into the open file of the other general
    game = X(board((0, 3, "K"), (9, 4, "k")))
    assert moves_of(game, (0, 3)) == ["d0d1"]
    # checkmate: no legal move at all (two chariots, one on each rank of the palace edge)
    game = X(board((0, 4, "K"), (9, 3, "k"), (9, 0, "R"), (8, 8, "R")), red=False)
    assert game.legal_moves() == []
    with pytest.raises(ValueError, match="'d9d8' is not a legal move for black"):
        game.play("d9d8")
    with pytest.raises(ValueError, match="not an ICCS move"):
        kit.parse_iccs("z9d8")


def test_openings_and_random_games_are_legal():
    kit = load("lm_kit")
    chess = load("task_language_model_chinese_chess")
    for line in chess.OPENINGS.values():
        chess.positions_after(line.split())
    import random
    game_moves = kit.random_game(random.Random(0), 30)
    assert len(game_moves) == 30
    chess.positions_after(game_moves)  # replayed through the legality check


# ---------------------------------------------------------------------------
# Kit: perplexity, batched greedy decoding
# ---------------------------------------------------------------------------


def test_sequence_nll_matches_numpy(tiny_config):
    import keras

    kit = load("lm_kit")
    keras.utils.set_random_seed(0)
    model = kit.build_lm(tiny_config[1], None).model
    items = [([2, 100, 200, 300, 3], None), ([2, 400, 500, 3], None)]
    nll, counts = kit.sequence_nll(model, items)
    for (ids, _), got, count in zip(items, nll, counts):
        x = np.asarray(model.predict_on_batch([np.array([ids]), np.zeros((1, len(ids)), int)]),
                       "float64")[0]
        logp = x - x.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        want = -sum(logp[i, ids[i + 1]] for i in range(len(ids) - 1))
        assert got == pytest.approx(want, rel=1e-4) and count == len(ids) - 1
    assert kit.perplexity(model, items) == pytest.approx(math.exp(nll.sum() / counts.sum()))


def test_greedy_batch_matches_the_library_decoder(tiny_config):
    import keras

    kit = load("lm_kit")
    cond = load("task_conditional_language_model")
    keras.utils.set_random_seed(1)
    model = kit.build_lm(tiny_config[1], None, condition=cond.label_condition(8)).model
    for w in model.weights:  # nonzero condition projections: the label changes the output
        if "gamma_dense" in w.path or "beta_dense" in w.path:
            w.assign(np.random.default_rng(2).normal(0, 0.5, w.shape))
    labels = np.array([[0], [1]])
    batched = kit.greedy_batch(model, labels, start_id=2, end_id=3, maxlen=6)
    sampler = kit.ConditionalSampler(model, start_id=2, end_id=3, maxlen=6)
    for label, ids in zip(labels, batched):
        one = [int(i) for i in sampler.greedy_search([label])[1:]]
        assert ids == (one[:-1] if one and one[-1] == 3 else one)
    assert batched[0] != batched[1]


# ---------------------------------------------------------------------------
# The scripts
# ---------------------------------------------------------------------------


def test_language_model_smoke():
    """Shipped BERT as an LM: a few steps lower the validation perplexity,
    and sampling (cached decoder) returns text for every prompt."""
    lm = load("task_language_model")
    r = lm.main(["--limit", "32", "--batch-size", "16", "--maxlen", "32", "--valid-limit", "16",
                 "--max-new-tokens", "4", "--n", "2", "--prompt", "这本书", "--log-every", "0"])
    assert 1 < r["valid_perplexity_after"] < r["valid_perplexity_before"] < 13585 * 10
    assert list(r["samples_after"]) == ["这本书"] and len(r["samples_after"]["这本书"]) == 2


def test_conditional_language_model_smoke(tiny_config):
    cond = load("task_conditional_language_model")
    r = cond.main(tiny_config + ["--limit", "32", "--batch-size", "16", "--maxlen", "32",
                                 "--test-limit", "16", "--n", "2", "--max-new-tokens", "4",
                                 "--lr", "1e-2", "--log-every", "0"])
    # zero-initialised projections: before training the label changes nothing
    assert r["before"]["ppl_right_label"] == pytest.approx(r["before"]["ppl_wrong_label"],
                                                           rel=1e-6)
    assert r["after"]["ppl_right_label"] != r["after"]["ppl_wrong_label"]
    assert 0.0 <= r["after"]["lm_classifier_accuracy"] <= 1.0
    assert [len(r["generated"][k]) for k in ("positive", "negative")] == [2, 2]


def test_chinese_chess_smoke(tiny_config):
    chess = load("task_language_model_chinese_chess")
    r = chess.main(tiny_config + ["--games", "20", "--max-plies", "8", "--epochs", "1",
                                  "--eval-positions", "8", "--samples", "3",
                                  "--log-every", "0"])
    for key in ("legal_before", "legal_after", "well_formed_after", "openings_legal",
                "sampled_legal_before", "sampled_legal_after"):
        assert 0.0 <= r[key] <= 1.0
    assert 0.0 < r["random_move_legal"] < 0.01
    assert len(r["opening_moves"]) == len(chess.OPENINGS)
    assert all(len(m) == 4 for m in r["opening_moves"])


def test_image_caption_smoke_and_scores(tiny_config):
    caption = load("task_image_caption")
    _, texts, objects = caption.make_set(20, 32, 2, seed=0)
    # the caption reads back to exactly the drawn objects
    for text, objs in zip(texts, objects):
        assert caption.CLAUSE.findall(text) == objs
    scores = caption.object_scores(objects[:2], [texts[0], "左上角有一个红色的大圆形。"])
    want_right = len(set(objects[1]) & {("左上", "红", "大", "圆形")})
    assert scores["exact_match"] == 0.5
    assert scores["object_recall"] == pytest.approx(
        (len(objects[0]) + want_right) / (len(objects[0]) + len(objects[1])))
    r = caption.main(tiny_config + ["--train-images", "16", "--test-images", "4", "--epochs", "1",
                                    "--batch-size", "8", "--log-every", "0"])
    assert r["test"]["images"] == 4
    assert 0.0 <= r["test"]["object_f1"] <= 1.0 and 0.0 <= r["test"]["exact_match"] <= 1.0
