"""Reproduce the paper's comparison: train every method x label budget x seed, score each run's
`best` (chosen on val) and `last` checkpoints on the test split (and `best` post-processed as
chosen on val), and write a report.

  mona reproduce --data DIR --methods supervised,mean_teacher,mona --labeled 1,3,7 \\
      --seeds 0,1,2 --protocol cpu-small --out grid [--ablate 1] [key=value ...]
  mona reproduce --data DIR --methods mona --labeled 3 --seeds 0 --no-upper-bound --out one-cell

Runs go to OUT/runs/<method>_l<labeled>_s<seed>; the fully supervised upper bound
(supervised_lall_s<seed>) is added unless --no-upper-bound, and --ablate N adds MONA at N labeled patients
with each component off in turn (mona.pretrain, tailness, consistency, diversity, strong_aug).
Running the same command again skips finished runs and resumes an interrupted one from its
last checkpoint. Processes started on the same OUT share it out: each skips the runs another is
training (their .lock), so on a 2-core CPU two runs go side by side, one thread each, with
`OMP_NUM_THREADS=1 mona reproduce ... &` started twice. The report is OUT/report.md (tables,
paper numbers for ACDC, a paired per-volume comparison of the methods with a Wilcoxon test,
figures) and OUT/results.csv; `mona report OUT` rebuilds them (each process writes it when it ends,
unless --no-report: a grid still under way can then be trained without its test figures in view).

Protocols (presets):
  cpu-small  for 2 CPU cores: 128x128 slices, 4 labeled + 4 unlabeled per batch, bf16
             autocast, 6000 iterations with validation every 200 (MONA: 1000 pre-training
             + 6000 fine-tuning, pixel embeddings at 1/4 resolution). With two runs side
             by side on 2 cores, one thread each, a run takes: supervised 9-13 min, mean
             teacher 19-29, MONA 68-89 on a CPU with native bf16 (Intel Xeon with AMX,
             AMD Zen 5); at 3000 iterations an AVX2-only CPU (fp32) took 2.5-3.5x as
             long as an AVX512-BF16 one. Supervised, mean teacher and MONA at 3 budgets x 3
             seeds are 16 h of training (8 h in two lanes); MONA's Dice is 2-5 points under
             the paper's. UniMatch, BCP and ABD add about 22 h (docs/methods/peers.md).
  paper      MONA_SPEC's protocol: 256x256, 12 + 12 per batch (MONA 3+3 then 4+4),
             30000 iterations per stage; for a GPU.
Extra key=value overrides apply to every run (e.g. train.iterations=1000 train.device=cuda).

On a SLURM cluster, `--slurm grid.sbatch` writes a job-array script instead of training: one array
task per run (`--cell i` of this same command), then `sbatch grid.sbatch`. Each task trains and
scores its run; the task that finds every run of the grid finished writes the report.
  mona reproduce --data DIR --protocol paper --out grid --slurm grid.sbatch --gpus 1 --time 12:00:00 \\
      --partition gpu train.device=cuda
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mona.config import preset_names
from mona.errors import MonaError
from mona.experiments.grid import exclusive, grid_finished, plan, run_grid, slurm_script
from mona.experiments.report import build_report
from mona.methods import METHODS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DIR", help="dataset folder (SSL4MIS layout)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated methods (default: all, {','.join(METHODS)})")
    parser.add_argument("--labeled", default="1,3,7", help="comma-separated labeled-patient budgets (default 1,3,7)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--protocol", default="cpu-small",
                        help=f"preset or YAML file ({', '.join(preset_names())}; default cpu-small)")
    parser.add_argument("--out", required=True, metavar="DIR", help="grid folder (runs, report)")
    parser.add_argument("--ablate", metavar="N", help="add MONA ablations at N labeled patients")
    parser.add_argument("--no-upper-bound", action="store_true",
                        help="leave out the fully supervised runs (supervised_lall_s<seed>)")
    parser.add_argument("--no-report", action="store_true",
                        help="train and score the runs but write no report (later: mona report OUT)")
    parser.add_argument("--slurm", metavar="FILE", help="write a SLURM job-array script (one task per run) "
                                                        "instead of training")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs per array task (--slurm; default 1, 0: none)")
    parser.add_argument("--time", default="24:00:00", help="time limit per array task (--slurm; default 24:00:00)")
    parser.add_argument("--partition", help="SLURM partition (--slurm; default: the cluster's)")
    parser.add_argument("--cell", type=int, metavar="I", help="train and score only run I (0-based) of the grid, "
                        "as an array task does; the report is written once every run is finished")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")


def run(args: argparse.Namespace) -> int:
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise MonaError(f"unknown methods {unknown} (choose from {', '.join(METHODS)})")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        raise MonaError(f"--seeds must be comma-separated integers, not {args.seeds!r}") from None
    specs = plan(methods, [b for b in args.labeled.split(",") if b], seeds, args.ablate,
                 upper_bound=not args.no_upper_bound)
    if args.slurm:
        return _write_slurm(args, len(specs))
    if args.cell is not None and not 0 <= args.cell < len(specs):
        raise MonaError(f"--cell {args.cell} is not a run of this grid (0 to {len(specs) - 1})")
    print(f"{len(specs)} runs in {args.out}/runs" + ("" if args.cell is None else f"; this is run {args.cell}"))
    run_grid(args.data, specs, args.protocol, args.out, args.overrides, args.cell)
    if args.no_report:
        return 0
    if args.cell is None:
        print(f"report: {build_report(args.out)}")
        return 0
    with exclusive(Path(args.out) / ".report.lock"):  # the last cells may end together
        if grid_finished(args.out, specs):
            print(f"every run is finished; report: {build_report(args.out)}")
    return 0


def _write_slurm(args: argparse.Namespace, cells: int) -> int:
    """The job-array script of this command: the same `mona reproduce`, with absolute paths, one `--cell` per task."""
    protocol = str(Path(args.protocol).absolute()) if Path(args.protocol).is_file() else args.protocol
    command = [sys.executable, "-m", "mona", "reproduce", "--data", str(Path(args.data).absolute()),
               "--methods", args.methods, "--labeled", args.labeled, "--seeds", args.seeds, "--protocol", protocol,
               "--out", str(Path(args.out).absolute())]
    command += (["--ablate", args.ablate] if args.ablate else []) + (["--no-upper-bound"] if args.no_upper_bound
                                                                      else [])
    command += (["--no-report"] if args.no_report else []) + list(args.overrides)
    out = Path(args.out)
    (out / "slurm").mkdir(parents=True, exist_ok=True)  # SLURM writes the tasks' logs there but makes no folder
    script = Path(args.slurm)
    script.write_text(slurm_script(command, cells, out, args.gpus, args.time, args.partition))
    print(f"{script}: {cells} array tasks, one run each; submit with: sbatch {script}")
    return 0
