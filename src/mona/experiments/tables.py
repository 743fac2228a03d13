"""The report's tables: test metrics per method and budget (mean ± std over seeds, the paper's Dice
beside them), per class, and the paired per-volume comparisons; results.csv and markdown.

Aggregates are the mean and sample std (n-1) over seeds of each run's test summary (itself the
mean over cases, then classes). Seed means hide how often a method wins: the paired table
compares two methods volume by volume on the test split (Dice averaged over classes and over the
seeds both have run). The paper's ACDC Dice is shown beside ours when the dataset is ACDC and the
budget is one the paper reports; elsewhere "-". The tables add the best checkpoint post-processed
as chosen on val (RUN/eval_test_best_postprocessed/) for the runs that have it; the paired table
scores the raw argmax, as the paper does.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from mona.data.io import atomic_path
from mona.evaluation.report import METRICS
from mona.experiments.html import Table
from mona.experiments.runs import CHECKPOINTS, variant_key
from mona.experiments.statistics import paired_comparison, seed_stats
from mona.methods import METHODS

CSV_COLUMNS = ("run", "method", "labeled", "seed", "checkpoint", "class", *METRICS, "unit", "sec_per_iter")
# MONA_SPEC section 8 (ACDC test Dice %, 1 / 3 / 7 labeled patients; UNet with all labels) and
# section 7 (ablations at 1 patient)
PAPER_ACDC_DICE = {
    ("supervised", "1"): 40.3, ("supervised", "3"): 51.7, ("supervised", "7"): 79.5, ("supervised", "all"): 91.5,
    ("mean_teacher", "1"): 42.9, ("mean_teacher", "3"): 58.3, ("mean_teacher", "7"): 80.1,
    ("mona", "1"): 82.6, ("mona", "3"): 86.9, ("mona", "7"): 87.7,
    ("mona_no_tailness", "1"): 60.9, ("mona_no_diversity", "1"): 75.2,
    # peers' published figures (docs/methods/peers.md): UniMatch's README (checkpoint chosen on val + test),
    # BCP's paper as TraCoCo's results table quotes it; ABD's could not be read from its paper or repository
    ("unimatch", "1"): 85.4, ("unimatch", "3"): 88.9, ("unimatch", "7"): 89.9,
    ("bcp", "3"): 87.6, ("bcp", "7"): 88.8,
}


def write_results_csv(runs: list[dict], path: Path) -> None:
    """One row per run x checkpoint x class, and the class mean as class `mean`."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for run in runs:
            for checkpoint, summary in run["summaries"].items():
                base = {"run": run["name"], "method": run["variant"], "labeled": run["labeled"], "seed": run["seed"],
                        "checkpoint": checkpoint, "unit": summary["unit"], "sec_per_iter": run["sec_per_iter"]}
                for entry in summary["classes"]:
                    writer.writerow({**base, "class": entry["name"], **{m: entry[m]["mean"] for m in METRICS}})
                writer.writerow({**base, "class": "mean", **summary["mean"]})


def cell(values: list[float], scale: float, decimals: int) -> str:
    """`mean ± std` over seeds, or the value alone for a single seed."""
    mean, std = seed_stats(values)
    return f"{mean * scale:.{decimals}f}" + (f" ± {std * scale:.{decimals}f}" if len(values) > 1 else "")


def groups(runs: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """Runs by (variant, labeled budget), in table order."""
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for run in runs:
        grouped[(run["variant"], run["labeled"])].append(run)
    return grouped


def metric_cells(summaries: list[dict], pick) -> list[str]:
    """Dice and Jaccard in %, HD95 and ASD in the summary's unit, each mean ± std over seeds."""
    return [cell([pick(s)[m] for s in summaries], scale, decimals)
            for m, scale, decimals in zip(METRICS, (100.0, 100.0, 1.0, 1.0), (1, 1, 2, 2))]


def tables(runs: list[dict], acdc: bool) -> list[Table]:
    """The mean-over-classes table (with the paper's Dice and per-class Dice) and the per-class table."""
    first = runs[0]["summaries"]["best"]
    names = [c["name"] for c in first["classes"]]
    unit = first["unit"]
    overall = Table("Test metrics, mean over classes (mean ± std over seeds)",
                    ["method", "labeled", "checkpoint", "seeds", "Dice %", "paper Dice %", "Jaccard %",
                     f"HD95 ({unit})", f"ASD ({unit})", *(f"Dice {n} %" for n in names), "training min a run"], [],
                    note="Training minutes a run (the steps of every stage, without validation) on the run's own "
                         "machine: runs that trained on different CPUs or precisions (hardware.txt) do not compare.")
    per_class = Table("Test metrics per class (mean ± std over seeds)",
                      ["method", "labeled", "checkpoint", "class", "Dice %", "Jaccard %", f"HD95 ({unit})",
                       f"ASD ({unit})"], [])
    for (variant, labeled), members in groups(runs).items():
        paper = PAPER_ACDC_DICE.get((variant, labeled)) if acdc else None
        for checkpoint, label in CHECKPOINTS.items():
            summaries = [r["summaries"][checkpoint] for r in members if checkpoint in r["summaries"]]
            if not summaries:
                continue
            class_dice = [cell([s["classes"][k]["dice"]["mean"] for s in summaries], 100.0, 1)
                          for k in range(len(names))]
            means = metric_cells(summaries, lambda s: s["mean"])
            minutes = cell([r["train_seconds"] / 60 for r in members if checkpoint in r["summaries"]], 1.0, 0)
            overall.rows.append([variant, labeled, label, str(len(summaries)), means[0],
                                 str(paper) if paper is not None else "-", *means[1:], *class_dice, minutes])
            for k, name in enumerate(names):
                cells = metric_cells(summaries, lambda s, k=k: {m: s["classes"][k][m]["mean"] for m in METRICS})
                per_class.rows.append([variant, labeled, label, name, *cells])
    return [overall, per_class]


def markdown(table: Table) -> list[str]:
    """A table as markdown lines: its caption as a heading, its note, the rows."""
    note = [table.note, ""] if table.note else []
    return [f"## {table.caption}", "", *note, "| " + " | ".join(table.header) + " |",
            "| --- " * len(table.header) + "|", *("| " + " | ".join(row) + " |" for row in table.rows)]


def paired_table(runs: list[dict]) -> Table | None:
    """Each variant against each of `METHODS` before it in table order, at every budget both ran; MONA
    always on the left, so that its rows against the peers after it (UniMatch, BCP, ABD) read as MONA's gain."""
    keys = list(groups(runs))
    rows = []
    for method, labeled in keys:
        for earlier in METHODS:
            if (earlier, labeled) not in keys or variant_key(earlier) >= variant_key(method):
                continue
            variant, reference = (earlier, method) if earlier == "mona" else (method, earlier)
            result = paired_comparison(runs, variant, reference, labeled)
            if result is None:
                continue
            p_value, seed_p_value = ("-" if p is None else f"{p:.2g}"
                                     for p in (result["p_value"], result["seed_p_value"]))
            seed_gains = " / ".join(f"{100 * g:+.1f}" for g in result["seed_gains"])
            rows.append([labeled, variant, reference, ",".join(map(str, result["seeds"])), str(result["volumes"]),
                         f"{100 * result['gain']:+.1f}", seed_gains, f"{result['ahead']}/{result['volumes']}",
                         p_value, seed_p_value])
    if not rows:
        return None
    return Table("Paired comparison per test volume (best on val)",
                 ["labeled", "method", "against", "seeds", "volumes", "mean gain (Dice points)", "gain per seed",
                  "ahead on", "Wilcoxon p (volumes)", "t-test p (seeds)"], rows,
                 note="Dice averaged over classes and over the seeds both methods ran, per test volume; "
                      "two-sided Wilcoxon signed-rank test over the volumes. That test sees volumes, not seeds: "
                      "where the seeds' gains differ in sign, the difference is within seed-to-seed noise "
                      "whatever its p. The last column tests the seeds' gains (one per seed, two-sided "
                      "one-sample t-test against 0); with 3 seeds only a large, steady gain reaches p < 0.05.")
