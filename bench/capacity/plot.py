"""latency.png: p99 against offered load, one panel per traffic mix, every paced run of every
round (held or not; the first round steps up from half the closed loop's rate, which traces
the flat part), with the p99 limit and each server's capacity (median of the rounds)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from bench.capacity.sweep import Sweep
from bench.capacity.traffic import Mix

COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red")


def plot(found: Sweep, mixes: Sequence[Mix], workers: Sequence[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    limit = found.judgement.p99_ms
    figure, axes = plt.subplots(1, len(mixes), figsize=(5 * len(mixes), 4.5), squeeze=False)
    for axis, mix in zip(axes[0], mixes, strict=True):
        for colour, count in zip(COLOURS, workers, strict=False):
            runs = sorted(
                (run for search in found.of(mix, count) for run in search.runs),
                key=lambda run: run.offered,
            )
            if not runs:
                continue
            label = f"{count} worker{'s' if count > 1 else ''}"
            for held, marker, outcome in ((True, "o", "held"), (False, "x", "not held")):
                chosen = [run for run in runs if found.judgement.held(run) is held]
                axis.scatter(
                    [run.offered for run in chosen],
                    [run.p99_ms for run in chosen],
                    color=colour,
                    marker=marker,
                    label=f"{label}: {outcome}",
                )
            capacity = statistics.median(found.capacities(mix, count))
            if capacity:
                axis.axvline(capacity, color=colour, linestyle="--", linewidth=1)
        axis.axhline(limit, color="grey", linestyle=":", label=f"p99 limit {limit:g} ms")
        if mix.target:
            axis.axvline(mix.target, color="black", linestyle=":", label="target")
        axis.set_yscale("log")
        axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.yaxis.set_minor_formatter(NullFormatter())
        axis.set_xlim(left=0)
        axis.set_title(mix.label)
        axis.set_xlabel("offered requests/s (paced)")
        axis.set_ylabel("wrk p99, ms")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle(
        "edgemart serve: p99 against offered load (dashed: highest rate held, median of rounds)",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
