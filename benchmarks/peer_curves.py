"""A peer's official val curve beside mona's run of the same method, stage by stage.

  python benchmarks/peer_curves.py PEER_LOG RUN [--iterations-per-epoch N] [--json OUT.json]

PEER_LOG is the log of an official script: BCP's or ABD's run by `benchmarks/peer_copy_paste.sh` (lines
"iteration N : mean_dice : D", one run of lines per stage, each restarting at iteration 200; ABD
logs "model1_mean_dice" and "model2_mean_dice" and student 1 is read), or UniMatch's run by
`benchmarks/peer_unimatch.sh` (one "MeanDice: D" line, in %, per epoch: give
--iterations-per-epoch, floor(unlabeled slices / batch), and epoch e is set at the end of its
iterations, compared with mona's validation nearest to it). RUN is `mona train`'s run folder of the
same method, budget and seed (its stages' metrics.jsonl). Both validate on the 20 val volumes with
the mean foreground Dice per volume (the peers on nearest- or bilinear-resized slices, mona on
bilinear-resized ones).
Prints each stage's table, then per stage the mean difference at the iterations both validated, and
the best val Dice and the mean over the last third of the stage side by side (these compare only
once both runs have finished).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

from mona.engine.run_folder import stage_folders
from mona.experiments.html import read_records

PEER_LINE = re.compile(r"iteration (\d+) : (?:model1_)?mean_dice : ([0-9.]+)")
EPOCH_LINE = re.compile(r"MeanDice: ([0-9.]+)")


def peer_stages(log: Path, iterations_per_epoch: int = 0) -> list[dict[int, float]]:
    """The peer's val Dice per iteration, one dict per stage (a new stage starts where the count falls)."""
    stages: list[dict[int, float]] = []
    epochs = 0
    for line in log.read_text(errors="replace").splitlines():
        match = (EPOCH_LINE if iterations_per_epoch else PEER_LINE).search(line)
        if match and iterations_per_epoch:
            epochs += 1
            iteration, dice = epochs * iterations_per_epoch, float(match.group(1)) / 100
        elif match:
            iteration, dice = int(match.group(1)), float(match.group(2))
        else:
            continue
        if not stages or iteration <= max(stages[-1]):
            stages.append({})
        stages[-1][iteration] = dice
    return stages


def mona_stages(run: Path) -> list[tuple[str, dict[int, float]]]:
    """Each stage of the run that has started: its name and val Dice per iteration."""
    return [(folder.name, {r["iteration"]: r["dice"] for r in read_records(folder) if r["split"] == "val"})
            for folder in stage_folders(run) if (folder / "metrics.jsonl").is_file()]


def summary(curve: dict[int, float]) -> tuple[float, float]:
    """Best val Dice and the mean over the last third of the stage's validations."""
    values = [curve[i] for i in sorted(curve)]
    return max(values), float(np.mean(values[-max(1, len(values) // 3):]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("peer_log", type=Path)
    parser.add_argument("run", type=Path)
    parser.add_argument("--iterations-per-epoch", type=int, default=0, help="UniMatch's log: steps per epoch")
    parser.add_argument("--json", type=Path, help="write the curves and summaries here")
    args = parser.parse_args()
    peers, ours = peer_stages(args.peer_log, args.iterations_per_epoch), mona_stages(args.run)
    out = []
    for (name, mine), theirs in zip(ours, peers):
        print(f"\n{name or 'run'}: val Dice % (iteration, peer | mona | mona - peer)")
        steps = np.diff(sorted(mine))
        reach = (steps.min() if len(steps) else max(mine, default=0)) / 2  # a mona point pairs within half a step
        for iteration in sorted(theirs) if mine else ():  # a stage just begun has no val record yet
            nearest = min(mine, key=lambda i: abs(i - iteration))
            if abs(nearest - iteration) > reach:
                print(f"{iteration:>6} {100 * theirs[iteration]:6.1f}      -        (mona not there yet)")
                continue
            print(f"{iteration:>6} {100 * theirs[iteration]:6.1f} {100 * mine[nearest]:6.1f} "
                  f"{100 * (mine[nearest] - theirs[iteration]):+6.1f}" + (f" (mona at {nearest})"
                                                                        if nearest != iteration else ""))
        row = {"stage": name, "peer": theirs, "mona": mine}
        common = sorted(set(mine) & set(theirs))
        if common:
            gaps = [mine[i] - theirs[i] for i in common]
            print(f"{name}: at the {len(common)} common iterations (to {common[-1]}) mona - peer "
                  f"{100 * np.mean(gaps):+.1f} on average, {sum(g > 0 for g in gaps)} of {len(gaps)} above")
        if mine and theirs:
            (peer_best, peer_late), (our_best, our_late) = summary(theirs), summary(mine)
            print(f"{name}: best {100 * peer_best:.1f} | {100 * our_best:.1f} ({100 * (our_best - peer_best):+.1f}); "
                  f"mean of the last third {100 * peer_late:.1f} | {100 * our_late:.1f} "
                  f"({100 * (our_late - peer_late):+.1f})" + ("" if max(mine) >= max(theirs) - reach else
                                                             f"; peer to {max(theirs)}, mona to {max(mine)} so far"))
            row.update(peer_best=peer_best, mona_best=our_best, peer_late=peer_late, mona_late=our_late)
        out.append(row)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
