"""Image captioning: a CNN reads the image, a BERT-layout LM writes a Chinese
caption, the image entering through conditional LayerNorm.

Data: **synthetic**, rendered here with NumPy (the COCO-CN / AI Challenger
captions and images 0.11.5's recipe used cannot be downloaded on this
machine, and no pretrained image weights are fetched). Each
``--image-size`` RGB image (light noisy background) holds 1 to
``--max-shapes`` shapes, each in its own quadrant, drawn from: shape
circle / square / triangle (圆形 / 正方形 / 三角形), colour red / green /
blue / yellow (红 / 绿 / 蓝 / 黄, with jitter), size big / small (大 / 小,
with jitter), position jittered inside the quadrant. The caption is written
from the rendering parameters, one clause per shape in reading order
(top-left, top-right, bottom-left, bottom-right)::

    左上角有一个红色的大圆形，右下角有一个蓝色的小三角形。

Training and test images come from different seeds (``--seed`` and
``--seed + 1``), so the test set is held out.

Model: the image goes through a CNN (``--backbone small``: three
convolution + pooling blocks, flattened so that positions survive; or any
``keras.applications`` name, e.g. ``MobileNetV2``, built with
``weights=None``: trained from scratch, no ImageNet weights) and a ``Dense``
to a ``--cond-size`` vector; every LayerNorm of the LM (``application='lm'``,
the shipped small Chinese BERT) is conditional on it (``layer_norm_cond``,
as 0.11.5's ``task_image_caption.py``). CNN and LM are trained together on
next-token cross-entropy.

Scores on the held-out images, greedy decoding (``lm_kit.greedy_batch``):
exact caption match, and the F1 of described objects (a clause counts when
its position, colour, size and shape all equal a drawn shape's).

    python examples/task_image_caption.py
    python examples/task_image_caption.py --max-shapes 1 --train-images 3000 --epochs 3
    python examples/task_image_caption.py --backbone MobileNetV2
    python examples/task_image_caption.py --random-init --train-images 64 --epochs 1
"""

import re
import time

import common  # first: it loads TensorFlow without the C++ start-up log
import keras
import numpy as np

from bert4keras.tokenizers import Tokenizer

import lm_kit
from common import add_model_args, add_run_args, describe_model, write_json

SHAPES = {"circle": "圆形", "square": "正方形", "triangle": "三角形"}
COLOURS = {"红": (0.9, 0.1, 0.1), "绿": (0.1, 0.7, 0.2), "蓝": (0.15, 0.2, 0.9),
           "黄": (0.95, 0.85, 0.1)}
SIZES = {"大": (0.34, 0.42), "小": (0.16, 0.22)}  # radius as a fraction of a quadrant
QUADRANTS = ["左上", "右上", "左下", "右下"]  # reading order
CLAUSE = re.compile("(%s)角有一个(%s)色的(%s)(%s)" % (
    "|".join(QUADRANTS), "|".join(COLOURS), "|".join(SIZES), "|".join(SHAPES.values())))


def render(rng, size, max_shapes):
    """One image and its objects.

    Returns:
        ``(image float32 (size, size, 3) in [0, 1], objects)``, objects a
        list of ``(quadrant, colour, size word, shape word)`` in reading order.
    """
    image = 0.92 + 0.05 * rng.standard_normal((size, size, 3))
    half = size / 2.0
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    count = rng.integers(1, max_shapes + 1)
    objects = []
    for q in sorted(rng.choice(4, size=count, replace=False)):
        shape = list(SHAPES)[rng.integers(len(SHAPES))]
        colour = list(COLOURS)[rng.integers(len(COLOURS))]
        big = list(SIZES)[rng.integers(len(SIZES))]
        radius = half * rng.uniform(*SIZES[big])
        margin = radius + 0.5
        cy = (q // 2) * half + rng.uniform(margin, half - margin)
        cx = (q % 2) * half + rng.uniform(margin, half - margin)
        dy, dx = yy - cy, xx - cx
        if shape == "circle":
            mask = dy ** 2 + dx ** 2 <= radius ** 2
        elif shape == "square":
            mask = (np.abs(dy) <= radius * 0.85) & (np.abs(dx) <= radius * 0.85)
        else:  # apex up, base at cy + radius / 2
            mask = (dy <= radius / 2) & (np.abs(dx) <= (dy + radius) * 0.577)
        rgb = np.clip(np.array(COLOURS[colour]) + 0.05 * rng.standard_normal(3), 0, 1)
        image[mask] = rgb
        objects.append((QUADRANTS[q], colour, big, SHAPES[shape]))
    return np.clip(image, 0, 1).astype("float32"), objects


def caption(objects):
    """The caption of a list of objects (reading order)."""
    return "，".join("%s角有一个%s色的%s%s" % o for o in objects) + "。"


def make_set(n, size, max_shapes, seed):
    """``(images (n, size, size, 3), captions, objects)``."""
    rng = np.random.default_rng(seed)
    drawn = [render(rng, size, max_shapes) for _ in range(n)]
    return (np.stack([image for image, _ in drawn]), [caption(o) for _, o in drawn],
            [o for _, o in drawn])


def object_scores(gold, predicted_texts):
    """Exact caption match and object precision / recall / F1 (a clause of
    the prediction is right when all four attributes equal a gold object's)."""
    right = n_pred = n_gold = exact = 0
    for objects, text in zip(gold, predicted_texts):
        found = set(CLAUSE.findall(text))
        right += len(found & set(objects))
        n_pred += len(found)
        n_gold += len(objects)
        exact += text == caption(objects)
    p = right / n_pred if n_pred else 0.0
    r = right / n_gold if n_gold else 0.0
    return dict(exact_match=exact / max(len(gold), 1), object_precision=p, object_recall=r,
                object_f1=2 * p * r / (p + r) if p + r else 0.0, images=len(gold))


def image_condition(size, backbone, cond_size):
    """``(Input-Image (batch, size, size, 3), vector (batch, cond_size))``."""
    image = keras.Input(shape=(size, size, 3), name="Input-Image")
    if backbone == "small":
        x = image
        for i, filters in enumerate((32, 64, 64)):
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                    name="CNN-Conv-%d" % (i + 1))(x)
            x = keras.layers.MaxPooling2D(name="CNN-Pool-%d" % (i + 1))(x)
    else:
        try:
            cls = getattr(keras.applications, backbone)
        except AttributeError:
            raise ValueError("--backbone %r: not a keras.applications model" % backbone) from None
        x = cls(include_top=False, weights=None, input_shape=(size, size, 3))(image)
    x = keras.layers.Flatten(name="CNN-Flatten")(x)
    return image, keras.layers.Dense(cond_size, activation="relu", name="Image-Vector")(x)


def parse_args(argv=None):
    p = common.ArgumentParser(__doc__)
    add_model_args(p)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--max-shapes", type=int, default=2)
    p.add_argument("--train-images", type=int, default=4000)
    p.add_argument("--test-images", type=int, default=200)
    p.add_argument("--backbone", default="small",
                   help="'small' or a keras.applications name (built with weights=None)")
    p.add_argument("--cond-size", type=int, default=256)
    p.add_argument("--cond-hidden", type=int, default=128,
                   help="layer_norm_cond_hidden_size")
    lm_kit.add_training_args(p, batch_size=32, epochs=4, lr=1e-3)
    p.add_argument("--show", type=int, default=4, help="print this many test captions")
    add_run_args(p, limit=None, output=False)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    config, checkpoint, vocab = lm_kit.start_run(args)
    tokenizer = Tokenizer(vocab, do_lower_case=not args.cased)
    start = time.time()
    train_x, train_text, _ = make_set(args.train_images, args.image_size, args.max_shapes,
                                      args.seed)
    test_x, test_text, test_objects = make_set(args.test_images, args.image_size,
                                               args.max_shapes, args.seed + 1)
    print("synthetic images: train %d, test %d (%dx%d, rendered in %.0f s); e.g. %s"
          % (len(train_x), len(test_x), args.image_size, args.image_size, time.time() - start,
             train_text[0]))

    condition = image_condition(args.image_size, args.backbone, args.cond_size)
    transformer = lm_kit.build_lm(config, checkpoint, condition=condition,
                                  cond_hidden=args.cond_hidden, cond_act="relu")
    model = transformer.model
    print("model: %s, application='lm', LayerNorm conditional on a %s CNN (no pretrained "
          "image weights)" % (describe_model(config, checkpoint), args.backbone))

    items = [(tokenizer.encode(text)[0], image) for text, image in zip(train_text, train_x)]
    losses, train_seconds = lm_kit.fit_lm(model, items, args)

    start = time.time()
    longest = max(len(tokenizer.encode(t)[0]) for t in train_text)
    outputs = lm_kit.greedy_batch(model, test_x, tokenizer.token_to_id("[CLS]"),
                                  tokenizer.token_to_id("[SEP]"), maxlen=longest)
    predicted = [tokenizer.decode(ids).replace(" ", "") for ids in outputs]
    decode_seconds = time.time() - start
    scores = object_scores(test_objects, predicted)
    for gold, pred in list(zip(test_text, predicted))[:args.show]:
        print("  gold: %s\n  pred: %s" % (gold, pred))
    print("test (%d images): exact caption %.3f, object P/R/F1 %.3f/%.3f/%.3f; training %.0f s, "
          "decoding %.0f s" % (scores["images"], scores["exact_match"],
                               scores["object_precision"], scores["object_recall"],
                               scores["object_f1"], train_seconds, decode_seconds))
    results = dict(test=scores, examples=list(zip(test_text, predicted))[:args.show],
                   train_loss=losses, train_seconds=round(train_seconds, 1),
                   decode_seconds=round(decode_seconds, 1), config=config, checkpoint=checkpoint,
                   backbone=args.backbone, image_size=args.image_size, epochs=args.epochs,
                   lr=args.lr, batch_size=args.batch_size, train_images=args.train_images,
                   test_images=args.test_images, seed=args.seed)
    if args.results:
        write_json(args.results, results)
    return results


if __name__ == "__main__":
    main()
