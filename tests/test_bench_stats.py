"""The bench's statistics: the median's confidence interval that its verdicts rest on."""

from __future__ import annotations

import random

from test_fastpaths import _bench_module


def test_the_median_interval_is_the_textbook_order_statistics():
    bench = _bench_module()
    # n = 20: the 6th and 15th smallest (binomial tables: P(X <= 5) = 0.0207 <= 0.025 < P(X <= 6)).
    values = [float(v) for v in range(1, 21)]
    random.Random(0).shuffle(values)
    assert bench.median_ci(values) == [6.0, 15.0]
    assert bench.median_ci([float(v) for v in range(1, 52)]) == [19.0, 33.0]  # n = 51
    assert bench.median_ci([3.0, 1.0, 2.0]) == [1.0, 3.0]  # too few for 95%: the whole range


def test_a_verdict_needs_the_whole_interval_on_one_side_of_the_goal():
    bench = _bench_module()
    assert bench.verdict([0.96, 1.01], 0.95) == "met"
    assert bench.verdict([0.90, 0.94], 0.95) == "missed"
    assert bench.verdict([0.93, 0.99], 0.95) == "within the noise"
