"""UniMatch's training losses, the official run's beside mona's runs, around given iterations.

  python unimatch_losses.py PEER_RUN_LOG RUN... [--at 200,400,...] [--steps-per-epoch 311]

The official log prints running means over the epoch ("Loss x", "Loss s", "Loss w_fp", "Mask ratio" every
len // 8 steps); two consecutive ones give the mean over the steps between them. mona's metrics.jsonl
holds means over each 20-iteration logging window (`sup`, `strong`, `fp`, `confident`: the same four
quantities). For each iteration asked, the window that holds it is printed.
"""
import argparse
import json
import re

LINE = re.compile(r"Iters: (\d+), Total loss: [\d.]+, Loss x: ([\d.]+), Loss s: ([\d.]+), "
                  r"Loss w_fp: ([\d.]+), Mask ratio: ([\d.]+)")


def official_windows(log, steps_per_epoch):
    """(first, last iteration, [x, s, fp, mask] means) of each window between two logged running means."""
    windows, previous, epoch = [], None, -1
    for line in open(log):
        match = LINE.search(line)
        if not match:
            continue
        step, values = int(match[1]), [float(match[k]) for k in range(2, 6)]
        if step == 0:
            epoch += 1
        elif previous is not None:
            start, means = previous
            window = [(v * (step + 1) - p * (start + 1)) / (step - start) for v, p in zip(values, means)]
            windows.append((epoch * steps_per_epoch + start + 1, epoch * steps_per_epoch + step, window))
        previous = (step, values)
    return windows


def mona_windows(run):
    rows = [json.loads(line) for line in open(f"{run}/metrics.jsonl")]
    return [(r["iteration"] - 19, r["iteration"], [r["sup"], r["strong"], r["fp"], r["confident"]])
            for r in rows if r["split"] == "train"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("peer_log")
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--at", default="100,200,300,400,600,800,1000,1200")
    parser.add_argument("--steps-per-epoch", type=int, default=311)
    args = parser.parse_args()
    sources = [("official", official_windows(args.peer_log, args.steps_per_epoch))]
    sources += [(run.rstrip("/").split("/")[-1], mona_windows(run)) for run in args.runs]
    print("iteration  source: window  labeled (CE+Dice)/2, strong Dice, fp Dice, confident share")
    for at in (int(i) for i in args.at.split(",")):
        for name, windows in sources:
            found = [w for w in windows if w[0] <= at <= w[1]]
            if found:
                first, last, (x, s, fp, mask) = found[0]
                print(f"{at:>9}  {name}: {first}-{last}  {x:.3f}  {s:.3f}  {fp:.3f}  {mask:.3f}")


if __name__ == "__main__":
    main()
