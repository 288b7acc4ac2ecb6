"""Evaluation harness of lifecycle prediction on a synthetic workload with known behaviour
(used by `python -m bench state` and tests/test_patterns.py; not part of the package)."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sessioncache.prediction import choose_model
from sessioncache.statistics import histogram_bucket


def synthetic_gaps(
    users: int = 200, gaps_per_user: int = 40, seed: int = 7
) -> dict[str, list[float]]:
    """Known behaviour: each user's gaps are log-normal around the user's own typical gap,
    and typical gaps differ between users by orders of magnitude (1 minute to 1 day)."""
    rng = random.Random(seed)
    out: dict[str, list[float]] = {}
    for u in range(users):
        typical = math.exp(rng.uniform(math.log(60), math.log(86400)))
        out[f"user{u}"] = [rng.lognormvariate(math.log(typical), 0.5) for _ in range(gaps_per_user)]
    return out


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Mean absolute error (seconds) of next-activity time: the model against two baselines."""

    predictions: int
    mae_model_s: float
    mae_population_s: float
    mae_last_gap_s: float

    @property
    def improvement(self) -> float:
        """Model error as a fraction of the population baseline's (lower is better)."""
        return self.mae_model_s / self.mae_population_s if self.mae_population_s else 0.0


def evaluate_next_activity(
    histories: Mapping[str, Sequence[float]], *, warmup: int = 10, min_samples: int = 5
) -> Evaluation:
    """Walk forward through each user's gaps: predict gap i from gaps before it.

    Model: choose_model() on the user's history, falling back to the population (as the
    platform histogram would). Baselines: the population's mean gap, and the user's last gap.
    """
    pooled = [g for gaps in histories.values() for g in gaps[:warmup]]
    population_mean = sum(pooled) / len(pooled)
    population_hist: dict[int, int] = Counter(histogram_bucket(g * 1000) for g in pooled)
    err_model = err_pop = err_last = 0.0
    n = 0
    for gaps in histories.values():
        for i in range(warmup, len(gaps)):
            model = choose_model(gaps[:i], population_hist, min_samples)
            guess = model.conditional_median(0.0) if model else population_mean
            err_model += abs(guess - gaps[i])
            err_pop += abs(population_mean - gaps[i])
            err_last += abs(gaps[i - 1] - gaps[i])
            n += 1
    return Evaluation(n, err_model / n, err_pop / n, err_last / n)
