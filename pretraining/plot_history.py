"""Plot a pretraining run's loss / accuracy (and learning rate) curves to a PNG.

Usage::

    python -m pretraining.plot_history runs/mlm_small            # -> runs/mlm_small/history.png
    python -m pretraining.plot_history runs/mlm_small/logs --out curves.png
    python -m pretraining.plot_history a/history.csv b/history.csv --labels adamw tiger

A source is a run directory (its ``history.csv``, else its TensorBoard
``logs``), a ``history.csv`` (the per-step file of :mod:`pretraining.pretraining`,
or an older per-epoch Keras ``CSVLogger`` file), or a TensorBoard log
directory / event file.  Several sources are drawn on the same axes.  When a
step appears more than once (a resumed run re-logs the steps after its last
checkpoint in TensorBoard), the last value wins.
"""

if __name__ == "__main__" and not __package__:
    # run as a file: import this module from the package instead (see _as_script)
    import _as_script

    _as_script.run("pretraining.plot_history")

import argparse
import csv
import io
import os

import numpy as np

from bert4keras import fileio

#: Curves drawn, one panel each, in this order (when present).
PANELS = (("loss", "loss"), ("accuracy", "accuracy"), ("learning_rate", "learning rate"))


def _float(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def read_csv(path):
    """``{metric: (steps, values)}`` from a ``history.csv``.

    The x axis is ``step`` (per-step files) or ``epoch + 1`` (Keras
    ``CSVLogger`` files; the x label then says epochs).
    """
    rows = list(csv.DictReader(io.StringIO(fileio.read_text(path), newline="")))
    if not rows:
        return {}, "step"
    axis = "step" if "step" in rows[0] else "epoch"
    series = {}
    for row in rows:
        x = _float(row.get(axis))
        if x is None:
            continue
        x = x if axis == "step" else x + 1
        for key, text in row.items():
            value = _float(text)
            if key in (axis, "wall_time") or value is None:
                continue
            series.setdefault(key, {})[x] = value  # later rows win
    return _sorted(series), axis


def _event_files(path):
    if fileio.isfile(path):
        return [path]
    if not fileio.isdir(path):
        return []
    return [f for f in fileio.walk_files(path)
            if fileio.basename(f).startswith("events.out.tfevents.")]


def read_tensorboard(path):
    """``{metric: (steps, values)}`` from TensorBoard event files under ``path``.

    Scalars written with ``tf.summary.scalar`` (stored as tensors) and
    Keras' ``epoch_*`` / ``batch_*`` names are both read; the ``epoch_`` /
    ``batch_`` prefix is dropped.
    """
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    series = {}
    files = _event_files(path)
    events = []
    for name in files:
        for event in EventFileLoader(name).Load():
            if event.HasField("summary"):
                events.append(event)
    events.sort(key=lambda e: e.wall_time)  # later writes win
    for event in events:
        for value in event.summary.value:
            if value.HasField("tensor"):
                number = tensor_util.make_ndarray(value.tensor)
                if number.size != 1:
                    continue
                number = float(number.reshape(()))
            elif value.HasField("simple_value"):
                number = float(value.simple_value)
            else:
                continue
            tag = value.tag
            for prefix in ("epoch_", "batch_"):
                if tag.startswith(prefix):
                    tag = tag[len(prefix):]
            series.setdefault(tag, {})[float(event.step)] = number
    return _sorted(series), "step"


def _sorted(series):
    out = {}
    for key, points in series.items():
        steps = np.array(sorted(points))
        out[key] = (steps, np.array([points[s] for s in steps]))
    return out


def read_history(source):
    """``({metric: (steps, values)}, axis)`` for a run dir, CSV, log dir or event file.

    Raises:
        FileNotFoundError: nothing readable at ``source``.
    """
    if fileio.isdir(source):
        csv_path = fileio.join(source, "history.csv")
        if fileio.isfile(csv_path):
            return read_csv(csv_path)
        logs = fileio.join(source, "logs")
        if _event_files(logs):
            return read_tensorboard(logs)
        if _event_files(source):
            return read_tensorboard(source)
        raise FileNotFoundError("no history.csv nor TensorBoard events under %r" % source)
    if not fileio.exists(source):
        raise FileNotFoundError("no such file: %r" % source)
    if source.endswith(".csv"):
        return read_csv(source)
    return read_tensorboard(source)


def plot(sources, out, labels=None, smooth=1):
    """Draw the curves of ``sources`` into the PNG ``out``; return ``out``.

    Args:
        sources: paths accepted by :func:`read_history`.
        out: PNG path.
        labels: legend labels (default: the source paths).
        smooth: moving-average window over logged points (1 = raw).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(labels or sources)
    histories = [read_history(s) for s in sources]
    panels = [(key, title) for key, title in PANELS if any(key in h for h, _ in histories)]
    if not panels:
        raise ValueError("none of %s has loss, accuracy or learning_rate values" % (sources,))
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.6 * len(panels)), sharex=True,
                             squeeze=False)
    for ax, (key, title) in zip(axes[:, 0], panels):
        for (history, _), label in zip(histories, labels):
            if key not in history:
                continue
            steps, values = history[key]
            if smooth > 1 and len(values) >= smooth:
                values = np.convolve(values, np.ones(smooth) / smooth, mode="valid")
                steps = steps[smooth - 1:]
            ax.plot(steps, values, label=label, linewidth=1.2)
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("epoch" if all(a == "epoch" for _, a in histories) else "step")
    if len(sources) > 1:
        axes[0, 0].legend()
    fig.tight_layout()
    out = os.fspath(out)
    fileio.makedirs(fileio.dirname(os.path.abspath(out) if fileio.is_local(out) else out))
    image = io.BytesIO()
    fig.savefig(image, dpi=120, format="png")
    plt.close(fig)
    fileio.write_bytes(out, image.getvalue())  # local, gs://, ram:// (tf.io.gfile)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sources", nargs="+",
                   help="run directory, history.csv, TensorBoard log directory or event file")
    p.add_argument("--out", default=None,
                   help="PNG path (default: history.png in the first run directory)")
    p.add_argument("--labels", nargs="+", default=None)
    p.add_argument("--smooth", type=int, default=1, help="moving-average window")
    args = p.parse_args(argv)
    out = args.out
    if out is None:
        first = args.sources[0]
        base = first if fileio.isdir(first) else fileio.dirname(first) or "."
        out = fileio.join(base, "history.png")
    plot(args.sources, out, args.labels, args.smooth)
    print("Wrote %s" % out)
    return out


if __name__ == "__main__":
    main()
