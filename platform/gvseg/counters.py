"""Mechanism counters: how often each GvSeg mechanism actually fired.

A mechanism that exists in code but never runs is a stub, so every one of them counts its firings here:
the gated matcher (thing targets on thing queries), SPA injection (Eq. 5), the class bank (Eq. 9), TCL
positives and negatives (Eq. 10) and its queues, SPA association (Eq. 6) and class-identity association at
inference. The training loop logs them to MLflow as ``mech/<name>`` every ``train.log_every`` steps
(:func:`derived` adds the ratios people read), and evaluation reports the inference ones beside the metrics.

A process-wide tally: each Ray worker and each local run has its own. Counts are plain Python ints (callers
add what they already hold on the host; nothing here forces a device sync), gauges the last value set.
``take()`` returns the tally since the last take and starts a new one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

_counts: Counter[str] = Counter()
_gauges: dict[str, float] = {}


def add(name: str, n: int | float = 1) -> None:
    """Add ``n`` firings of mechanism ``name`` (e.g. ``"spa/inject_slots"``)."""
    _counts[name] += n


def gauge(name: str, value: float) -> None:
    """Record the current level of something (e.g. the TCL queue fill)."""
    _gauges[name] = float(value)


def peek() -> dict[str, float]:
    """The tally so far, without resetting it."""
    return {**{k: float(v) for k, v in _counts.items()}, **_gauges}


def take() -> dict[str, float]:
    """The tally since the last ``take`` (counts, gauges and :func:`derived` ratios); resets the counts."""
    out = peek()
    _counts.clear()
    return {**out, **derived(out)}


def reset() -> None:
    _counts.clear()
    _gauges.clear()


@contextmanager
def scope() -> Iterator[dict[str, float]]:
    """Count a piece of work on its own (e.g. an evaluation in the middle of training): the yielded dict is
    filled with the scope's tally on exit, and the tally from before the scope is restored untouched."""
    saved_counts, saved_gauges = Counter(_counts), dict(_gauges)
    reset()
    result: dict[str, float] = {}
    try:
        yield result
    finally:
        result.update(take())
        reset()
        _counts.update(saved_counts)
        _gauges.update(saved_gauges)


_RATIOS = {  # name: (numerator, denominator)
    "match/thing_on_thing_frac": ("match/thing_gt_on_thing_q", "match/thing_gt"),
    "match/stuff_on_stuff_frac": ("match/stuff_gt_on_stuff_q", "match/stuff_gt"),
    "tcl/thing_anchor_pos_frac": ("tcl/thing_anchors_with_pos", "tcl/thing_anchors"),
    "tcl/thing_pos_per_anchor": ("tcl/thing_pos", "tcl/thing_anchors"),
    "tcl/thing_neg_per_anchor": ("tcl/thing_neg", "tcl/thing_anchors"),
    "tcl/stuff_pos_per_anchor": ("tcl/stuff_pos", "tcl/stuff_anchors"),
    "tcl/stuff_neg_per_anchor": ("tcl/stuff_neg", "tcl/stuff_anchors"),
    "spa/inject_slots_per_call": ("spa/inject_slots", "spa/inject_calls"),
}


def derived(tally: dict[str, float]) -> dict[str, float]:
    """Ratios of counts, where the denominator is non-zero."""
    return {name: tally.get(num, 0.0) / tally[den] for name, (num, den) in _RATIOS.items() if tally.get(den)}
