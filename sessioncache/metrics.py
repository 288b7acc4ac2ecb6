"""In-process performance metrics: per-operation latency histograms, counts and errors.

Recording is a dict lookup, a log and three increments (no lock: asyncio runs one coroutine at a
time, and a rare lost increment between threads is acceptable for monitoring). An optional
Prometheus collector exposes the same histograms (``pip install sessioncache[prometheus]``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .statistics import bucket_range, histogram_bucket

_BUCKETS = 4 * 27  # microseconds, 4 buckets per octave: 0 .. ~134 s


def _bucket(seconds: float) -> int:
    index = histogram_bucket(max(0.0, seconds) * 1e6)
    return index if index < _BUCKETS else _BUCKETS - 1


def _upper(index: int) -> float:
    """Upper bound (seconds) of a bucket."""
    return bucket_range(index)[1] / 1e6


@dataclass(slots=True)
class OperationStats:
    """Histogram of one operation's latencies (bucket i holds values up to 2^(i/4) us)."""

    count: int = 0
    errors: int = 0
    total_s: float = 0.0
    max_s: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * _BUCKETS)

    def quantile(self, q: float) -> float:
        """Approximate quantile in seconds (the upper bound of its bucket: within +19%)."""
        if not self.count:
            return 0.0
        rank = q * self.count
        seen = 0
        for index, n in enumerate(self.buckets):
            seen += n
            if seen >= rank and n:
                return min(_upper(index), self.max_s)
        return self.max_s

    def summary(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "errors": self.errors,
            "mean_ms": round(self.total_s / self.count * 1000, 4) if self.count else 0.0,
            "p50_ms": round(self.quantile(0.50) * 1000, 4),
            "p95_ms": round(self.quantile(0.95) * 1000, 4),
            "p99_ms": round(self.quantile(0.99) * 1000, 4),
            "max_ms": round(self.max_s * 1000, 4),
        }


class Metrics:
    """Latency histograms keyed by operation name."""

    def __init__(self) -> None:
        self._ops: dict[str, OperationStats] = {}

    def observe(self, operation: str, seconds: float, error: bool = False) -> None:
        stats = self._ops.get(operation)
        if stats is None:
            stats = self._ops[operation] = OperationStats()
        stats.count += 1
        stats.total_s += seconds
        if seconds > stats.max_s:
            stats.max_s = seconds
        stats.buckets[_bucket(seconds)] += 1
        if error:
            stats.errors += 1

    def measure(self, operation: str) -> Timer:
        """``with metrics.measure("op"):`` records the block's latency (an error if it raised)."""
        return Timer(self, operation)

    def operations(self) -> Iterator[tuple[str, OperationStats]]:
        return iter(sorted(self._ops.items()))

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per operation: count, errors, mean/p50/p95/p99/max in ms."""
        return {name: stats.summary() for name, stats in self.operations()}

    def reset(self) -> None:
        self._ops.clear()


class Timer:
    """One measurement in progress (a fresh object per call, so concurrent tasks never share)."""

    __slots__ = ("_began", "_metrics", "_operation")

    def __init__(self, metrics: Metrics, operation: str) -> None:
        self._metrics = metrics
        self._operation = operation
        self._began = 0.0

    def __enter__(self) -> Timer:
        self._began = time.perf_counter()
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        self._metrics.observe(self._operation, time.perf_counter() - self._began, kind is not None)


class PrometheusCollector:
    """A prometheus_client collector reading the same histograms (no second copy of the data)."""

    def __init__(self, metrics: Metrics, prefix: str = "sessioncache") -> None:
        self.metrics = metrics
        self.prefix = prefix

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        latency = HistogramMetricFamily(
            f"{self.prefix}_operation_seconds",
            "Latency of sessioncache operations",
            labels=["operation"],
        )
        errors = CounterMetricFamily(
            f"{self.prefix}_operation_errors",
            "Operations that raised",
            labels=["operation"],
        )
        for name, stats in self.metrics.operations():
            cumulative, seen = [], 0
            for index, n in enumerate(stats.buckets):
                seen += n
                if n or index == _BUCKETS - 1:
                    cumulative.append((repr(_upper(index)), seen))
            cumulative.append(("+Inf", stats.count))
            latency.add_metric([name], cumulative, sum_value=stats.total_s)
            errors.add_metric([name], stats.errors)
        yield latency
        yield errors


def start_prometheus_exporter(
    metrics: Metrics, port: int, addr: str = "127.0.0.1", registry: Any = None
) -> tuple[Any, Any]:
    """Register a collector and serve /metrics over HTTP in a daemon thread.

    Returns (registry, server); ``server.shutdown()`` stops it.
    """
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError as exc:
        from .errors import ValidationError

        raise ValidationError(
            "the Prometheus exporter needs prometheus-client: pip install sessioncache[prometheus]"
        ) from exc
    registry = registry or CollectorRegistry()
    registry.register(PrometheusCollector(metrics))
    server, _ = start_http_server(port, addr=addr, registry=registry)
    return registry, server
