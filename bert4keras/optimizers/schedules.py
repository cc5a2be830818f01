"""Piecewise-linear learning-rate schedules: :func:`piecewise_linear` and
:class:`PiecewiseLinear` (``{step: value}`` warm-up and decay)."""

import keras
from keras import ops

from bert4keras.optimizers.base import _PACKAGE


def _schedule_points(schedule, from_zero):
    """Sorted ``[(step, value)]`` from a dict or pairs; validates them."""
    items = schedule.items() if isinstance(schedule, dict) else schedule
    try:
        points = sorted((float(step), float(value)) for step, value in items)
    except (TypeError, ValueError) as exc:
        raise ValueError("schedule must map steps to numbers, got %r" % (schedule,)) from exc
    if not points:
        raise ValueError("schedule is empty; give at least one {step: value}")
    steps = [s for s, _ in points]
    if len(set(steps)) != len(steps):
        raise ValueError("schedule has a repeated step: %r" % (steps,))
    if steps[0] < 0:
        raise ValueError("schedule steps must be >= 0, got %r" % steps[0])
    if from_zero and steps[0] != 0:
        points.insert(0, (0.0, 0.0))
    return points


def piecewise_linear(step, schedule, from_zero=True):
    """Piecewise linear function of the step, as a ``keras.ops`` float32 tensor.

    Follows ``piecewise_linear`` of the original bert4keras / Tiger code: the
    value moves linearly between the given points, stays at the first value
    before the first point and at the last value after the last point.

    Args:
        step: scalar step (int or float tensor), e.g. ``optimizer.iterations``.
        schedule: ``{step: value}`` dict (or ``[(step, value), ...]``), e.g.
            ``{1000: 1.0, 10000: 0.1}``. Keys may be strings (JSON).
        from_zero: if true and no point is at step 0, a point ``(0, 0.0)`` is
            added, so the schedule starts with a linear warm-up from 0.

    Returns:
        float32 scalar tensor.

    Raises:
        ValueError: empty schedule, repeated or negative step, non-numbers.
    """
    points = _schedule_points(schedule, from_zero)
    return _interpolate(step, points)


def _interpolate(step, points):
    t = ops.cast(step, "float32")
    value = ops.cast(points[0][1], "float32") + ops.zeros_like(t)
    for (t0, v0), (t1, v1) in zip(points[:-1], points[1:]):
        segment = v0 + (v1 - v0) * (t - t0) / (t1 - t0)
        value = ops.where(ops.greater_equal(t, t0), segment, value)
    t_last, v_last = points[-1]
    return ops.where(ops.greater_equal(t, t_last), ops.cast(v_last, "float32"), value)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PiecewiseLinear(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate ``scale * piecewise_linear(step, schedule)``.

    Two ways to read it, both supported:

    - the learning rate itself: ``PiecewiseLinear({1000: 2e-5, 10000: 0})``
      warms up from 0 to 2e-5 over 1000 steps, then decays to 0 at 10000;
    - a multiplier of a base learning rate (the original bert4keras /
      Tiger ``lr_schedule`` convention):
      ``PiecewiseLinear({1000: 1, 10000: 0.1}, scale=2e-5)``.

    ``step`` is the optimizer's step counter as Keras passes it to schedules:
    with ``gradient_accumulation_steps=k`` (Keras) or ``Tiger(grad_accum_steps=k)``
    it counts micro-batches, so a warm-up of N updates is written as ``N * k``.

    Args:
        schedule: ``{step: value}`` dict or ``[(step, value), ...]``.
        scale: float multiplying every value (default 1.0).
        from_zero: add a point ``(0, 0.0)`` if no point is at step 0 (default
            true, as in bert4keras).

    Raises:
        ValueError: see :func:`piecewise_linear`.

    Serializable: ``get_config`` stores the points as a list of pairs, so the
    schedule survives JSON (``.keras`` files) unchanged.
    """

    def __init__(self, schedule, scale=1.0, from_zero=True):
        self.points = _schedule_points(schedule, from_zero)
        self.scale = float(scale)
        self.from_zero = bool(from_zero)

    def __call__(self, step):
        return self.scale * _interpolate(step, self.points)

    def get_config(self):
        return {
            "schedule": [[s, v] for s, v in self.points],
            "scale": self.scale,
            "from_zero": self.from_zero,
        }
