"""A peer's official val curve beside mona's run of the same method, stage by stage.

  python benchmarks/peer_curves.py PEER_LOG RUN [--json OUT.json]

PEER_LOG is the log of BCP's or ABD's official script run by `benchmarks/peer_bcp.sh` (its lines
"iteration N : mean_dice : D", one run of lines per stage, each restarting at iteration 200; ABD
logs "model1_mean_dice" and "model2_mean_dice" and student 1 is read); RUN is `mona train`'s run
folder of the same method, budget and seed (its stages' metrics.jsonl). Both validate every 200
iterations on the 20 val volumes with the mean foreground Dice per volume (the peer on
nearest-resized slices, mona on bilinear-resized ones), so the curves compare point by point.
Prints each stage's table, then per stage the best val Dice and the mean over the last third of
the stage, each side by side with their difference.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

from mona.engine.run_folder import stage_folders

PEER_LINE = re.compile(r"iteration (\d+) : (?:model1_)?mean_dice : ([0-9.]+)")


def peer_stages(log: Path) -> list[dict[int, float]]:
    """The peer's val Dice per iteration, one dict per stage (a new stage starts where the count falls)."""
    stages: list[dict[int, float]] = []
    for line in log.read_text(errors="replace").splitlines():
        match = PEER_LINE.search(line)
        if not match:
            continue
        iteration, dice = int(match.group(1)), float(match.group(2))
        if not stages or iteration <= max(stages[-1]):
            stages.append({})
        stages[-1][iteration] = dice
    return stages


def mona_stages(run: Path) -> list[tuple[str, dict[int, float]]]:
    """Each stage of the run: its name and val Dice per iteration."""
    result = []
    for folder in stage_folders(run):
        records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        result.append((folder.name, {r["iteration"]: r["dice"] for r in records if r["split"] == "val"}))
    return result


def summary(curve: dict[int, float]) -> tuple[float, float]:
    """Best val Dice and the mean over the last third of the stage's validations."""
    values = [curve[i] for i in sorted(curve)]
    return max(values), float(np.mean(values[-max(1, len(values) // 3):]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("peer_log", type=Path)
    parser.add_argument("run", type=Path)
    parser.add_argument("--json", type=Path, help="write the curves and summaries here")
    args = parser.parse_args()
    peers, ours = peer_stages(args.peer_log), mona_stages(args.run)
    out = []
    for (name, mine), theirs in zip(ours, peers):
        print(f"\n{name}: val Dice % every 200 iterations (peer | mona | mona - peer)")
        for iteration in sorted(set(mine) & set(theirs)):
            print(f"{iteration:>6} {100 * theirs[iteration]:6.1f} {100 * mine[iteration]:6.1f} "
                  f"{100 * (mine[iteration] - theirs[iteration]):+6.1f}")
        row = {"stage": name, "peer": theirs, "mona": mine}
        if set(mine) & set(theirs):
            (peer_best, peer_late), (our_best, our_late) = summary(theirs), summary(mine)
            print(f"{name}: best {100 * peer_best:.1f} | {100 * our_best:.1f} ({100 * (our_best - peer_best):+.1f}); "
                  f"mean of the last third {100 * peer_late:.1f} | {100 * our_late:.1f} "
                  f"({100 * (our_late - peer_late):+.1f})")
            row.update(peer_best=peer_best, mona_best=our_best, peer_late=peer_late, mona_late=our_late)
        out.append(row)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
