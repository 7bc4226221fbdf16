"""What the digits benchmarks share: a results file that survives a restart, and mean ± sd."""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Optional


class ResultsFile:
    """``<out>/results.json``: read at the start, rewritten after every run, so a restarted benchmark
    skips the runs already there. ``key`` names the fields that identify a run."""

    def __init__(self, out: Path, key: tuple[str, ...]) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path, self.key = out / "results.json", key
        self.results: list[dict] = json.loads(self.path.read_text()) if self.path.exists() else []

    def done(self, settings: Optional[dict] = None, **run) -> bool:
        """Whether a run with these key fields is already in the file. A skipped run is named on stderr:
        the file may hold runs of an older engine, and a re-run that prints them unchanged must not pass
        for a new measurement. A stored run whose ``settings`` fields (e.g. the update config) differ
        is refused with what to do, never mixed into the new ones."""
        want = tuple(run[k] for k in self.key)
        found = next((r for r in self.results if tuple(r[k] for k in self.key) == want), None)
        if found is None:
            return False
        name = ", ".join(f"{k} {run[k]}" for k in self.key)
        settings = json.loads(json.dumps(settings or {}))  # as the file stores them: tuples become lists
        differ = sorted(k for k, v in settings.items() if found.get(k) != v)
        if differ:
            raise SystemExit(f"{self.path} already holds the run {name} made with other {', '.join(differ)}: "
                             "move that file away or give another --out to measure these settings")
        print(f"{self.path}: {name} is already there, skipped (delete the file or give another --out to "
              "measure it again)", file=sys.stderr, flush=True)
        return True

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
