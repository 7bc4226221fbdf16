"""What the digits benchmarks share: a results file that survives a restart, and mean ± sd."""
from __future__ import annotations

import json
import statistics
from pathlib import Path


class ResultsFile:
    """``<out>/results.json``: read at the start, rewritten after every run, so a restarted benchmark
    skips the runs already there. ``key`` names the fields that identify a run."""

    def __init__(self, out: Path, key: tuple[str, ...]) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path, self.key = out / "results.json", key
        self.results: list[dict] = json.loads(self.path.read_text()) if self.path.exists() else []

    def done(self, **run) -> bool:
        want = tuple(run[k] for k in self.key)
        return any(tuple(r[k] for k in self.key) == want for r in self.results)

    def add(self, result: dict) -> None:
        self.results.append(result)
        self.path.write_text(json.dumps(self.results, indent=1))


def mean_sd(values: list[float]) -> str:
    """``mean ± sd`` (three decimals); one value as it is; none as a dash."""
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"
