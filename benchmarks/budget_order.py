"""A view of an SSL4MIS-layout dataset whose labeled budget is the first K patients plus chosen ones
(issue #47's judging of `mona suggest`: the same run trained on with 4 patients chosen by suggest,
at random, or SSL4MIS's next 4).

  python benchmarks/budget_order.py ../shared/data/ACDC .dev/acdc_suggest --keep 3 --add-from next/suggest.csv --count 4
  python benchmarks/budget_order.py ../shared/data/ACDC .dev/acdc_random1 --keep 3 --random 4 --seed 1
  python benchmarks/budget_order.py ../shared/data/ACDC .dev/acdc_picked --keep 3 --add patient012,patient045

The budget (`--labeled N`) is the first N patients with labels in train_slices.list order
(`mona.data.ssl4mis.split_budget`), so OUT/train_slices.list lists the first K patients' slices
as SOURCE does, then the added patients' slices, then every other slice in SOURCE's order; `data/`
is a symbolic link to SOURCE's, and val.list, test.list and mona.json are copied. Train on it with
`--labeled K+added`. `--add-from` takes the patients of a suggest.csv in rank order, each once;
`--random` draws among the patients after the first K (seeded). Nothing of SOURCE is changed.
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import sys
from pathlib import Path

from mona.data.ssl4mis import patient_of, read_list


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--keep", type=int, required=True, help="the first K patients stay in the budget")
    choice = parser.add_mutually_exclusive_group(required=True)
    choice.add_argument("--add", help="patients to add, comma-separated")
    choice.add_argument("--add-from", type=Path, metavar="CSV", help="a mona suggest OUT/suggest.csv")
    choice.add_argument("--random", type=int, metavar="N", help="add N patients drawn at random")
    parser.add_argument("--count", type=int, help="with --add-from: how many patients to take (default all)")
    parser.add_argument("--seed", type=int, default=0, help="with --random")
    args = parser.parse_args(argv)
    names = read_list(args.source / "train_slices.list")
    patients = list(dict.fromkeys(patient_of(name) for name in names))
    kept, rest = patients[:args.keep], patients[args.keep:]
    if args.add:
        added = args.add.split(",")
    elif args.add_from:
        added = list(dict.fromkeys(row["patient"] for row in csv.DictReader(open(args.add_from))))[:args.count]
    else:
        added = random.Random(args.seed).sample(rest, args.random)
    unknown = [p for p in added if p not in rest]
    if unknown:
        print(f"budget_order: not among the patients after the first {args.keep}: {', '.join(unknown)}",
              file=sys.stderr)
        return 2
    order = {patient: index for index, patient in enumerate([*kept, *added])}
    ranked = sorted(range(len(names)), key=lambda i: (order.get(patient_of(names[i]), len(order)), i))
    args.out.mkdir(parents=True)
    (args.out / "data").symlink_to((args.source / "data").resolve())
    for name in ("val.list", "test.list", "mona.json"):
        if (args.source / name).is_file():
            shutil.copy(args.source / name, args.out / name)
    (args.out / "train_slices.list").write_text("".join(f"{names[i]}\n" for i in ranked))
    print(f"{args.out}: --labeled {len(kept) + len(added)} = {', '.join(kept)} + {', '.join(added)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
