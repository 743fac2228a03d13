"""Markdown tables from `collect_results.py`'s results.json: test metrics per run and class.

  python benchmarks/results_table.py results.json
"""

from __future__ import annotations

import json
import sys


def run_rows(entry: dict) -> list[str]:
    stages = entry["stages"]
    done = ", ".join(f"{name} {s['iteration']}/{s['total']} at {s['sec_per_iter']:.3f} s/it"
                     for name, s in stages.items())
    rows = []
    for checkpoint in ("best", "last"):
        summary = entry.get(f"test_{checkpoint}", {})
        if "mean" not in summary:
            rows.append(f"| {entry['run']} | {checkpoint} | - | {summary.get('error', 'not scored')} | | | | {done} |")
            continue
        per_class = " / ".join(f"{100 * c['dice']['mean']:.1f}" for c in summary["classes"])
        mean = summary["mean"]
        rows.append(
            f"| {entry['run']} | {checkpoint} (it {summary['iteration']}) | {100 * mean['dice']:.1f} | {per_class} | "
            f"{100 * mean['jaccard']:.1f} | {mean['hd95']:.2f} | {mean['asd']:.2f} | {done} |"
        )
    return rows


def main() -> None:
    results = json.loads(open(sys.argv[1]).read())
    print("| run | checkpoint | Dice % | Dice RV / Myo / LV | Jaccard % | HD95 | ASD | iterations done |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for entry in results["runs"]:
        print("\n".join(run_rows(entry)))


if __name__ == "__main__":
    main()
