"""Train a method on a dataset in the SSL4MIS layout.

  mona train --data DIR --method mean_teacher --labeled 7 --config cpu-small --out runs/mt7
  mona train --data DIR --method supervised --labeled all train.iterations=5000
  mona train --resume runs/mt7 [--iterations 5000]
  mona train --init runs/mt7 --data DIR2 --method mean_teacher --config cpu-small --out runs/mt7_more
  mona train --gpus 4 --data DIR --method mona --labeled 3 --config paper
      (= torchrun --nproc_per_node 4 -m mona train ...)

Settings come from the defaults, then each --config (a preset name: paper, cpu-small,
demo; or a YAML file), then the flags, then key=value overrides (e.g. optim.lr=0.02),
which may stand anywhere on the line. The resolved config is saved as RUN/config.yaml
(absolute paths); RUN/best.pt is the best checkpoint on the val split, RUN/last.pt the
latest (MONA: in RUN/pretrain and RUN/finetune), RUN/train.log what the console showed.

MONA trains two stages: --iterations (train.iterations) sets stage 2's iterations, and
stage 1 runs mona.pretrain_iterations (the cpu-small preset: 1000, paper: 30000; 0 = as many
as stage 2), e.g. `--iterations 120 mona.pretrain_iterations=20`. The run says both when it
starts and records them in RUN/stages.json. BCP and ABD also train two stages (RUN/pretrain, then
RUN/selftrain from stage 1's best checkpoint on val): stage 1 runs bcp.pretrain_iterations (abd.*),
whose 0 (the default) means a third of --iterations, the ratio of their code (10000 : 30000).
UniMatch, supervised and mean teacher train one stage. The peers' settings: docs/methods/peers.md.

--init RUN (config key `init`; Python: mona.load_config(..., ["init=RUN", ...])) trains on from
a finished run, e.g. after more masks were drawn and the dataset prepared again: any method
starts from RUN's best model on val (its last stage's best.pt; or a checkpoint file given
instead of RUN), loading the student and every other network RUN has under the same name
(teacher, heads, ABD's second student); the others start as when a stage starts from an earlier
student (the teacher and ABD's second student as copies of the student, a new head), and memory
banks start empty. A two-stage method (mona, bcp, abd) trains only its last stage from that
model, for --iterations: its stage 1 only makes a student to start from, and RUN's model takes
its place. The run says what it loaded (train.log: `init: loaded student, teacher from ...`) and
records the checkpoint as `init` in RUN/config.yaml. The settings (method, --config, --labeled)
are this command's own, not RUN's; --config RUN/config.yaml replays RUN's. A run of another
number of classes, or one still training, is refused; val cases that trained RUN (a dataset
prepared again splits its patients anew) are named in a note. mona.init_from is MONA's alone: stage 2
from another run's stage 1 (e.g. --stage finetune mona.init_from=RUN/pretrain, for ablations),
refused for other methods and together with --init.

A run folder belongs to one run: a new run needs an empty --out (or --overwrite, which
deletes the earlier run there), and a second process on a folder in use is refused.
Ctrl-C finishes the current step, saves last.pt and exits 130; --resume RUN continues it
(a stage folder is mapped to its run) and refuses a changed method, data, budget, image
size or seed. last.pt is also saved every train.checkpoint_every seconds.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import torch

from mona.config import DataConfig, load_config, preset_names
from mona.engine import distributed
from mona.engine.run import resume_config, train
from mona.errors import MonaError
from mona.methods import METHODS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", metavar="DIR", help="dataset folder (SSL4MIS layout)")
    parser.add_argument("--method", choices=tuple(METHODS), help="training method (default supervised)")
    parser.add_argument("--labeled", metavar="N", help="labeled patients: the first N labeled ones of "
                        f"train_slices.list, or 'all' (default {DataConfig.labeled}: every labeled case)")
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help=f"YAML file or preset ({', '.join(preset_names())}); may repeat")
    parser.add_argument("--out", metavar="RUN_DIR", help="run folder (default runs/<method>_<labeled>)")
    parser.add_argument("--iterations", type=int, metavar="N",
                        help="training iterations (train.iterations); MONA: of stage 2 only, stage 1 runs "
                        "mona.pretrain_iterations (cpu-small: 1000; 0 = as many as stage 2)")
    parser.add_argument("--seed", type=int, help="random seed (train.seed)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="training device (train.device)")
    parser.add_argument("--amp", action="store_true", default=None, help="bf16 autocast (train.amp)")
    parser.add_argument("--stage", choices=("both", "pretrain", "finetune"), help="MONA: which stage(s) to run")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    parser.add_argument("--init", metavar="RUN_DIR", help="start from the best model of the finished run in RUN_DIR "
                        "(or a checkpoint file); a two-stage method trains only its last stage (init)")
    parser.add_argument("--overwrite", action="store_true",
                        help="train into a folder that holds an earlier run, deleting that run's files first")
    parser.add_argument("--gpus", type=int, metavar="N",
                        help="data-parallel on N GPUs: relaunches itself under torchrun")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=0.02")


def flag_overrides(args: argparse.Namespace) -> list[str]:
    pairs = {
        "data.root": args.data, "method": args.method, "data.labeled": args.labeled, "out": args.out,
        "train.iterations": args.iterations, "train.seed": args.seed, "train.device": args.device,
        "train.amp": args.amp, "mona.stage": args.stage, "init": args.init,
    }
    overrides = [f"{key}={value}" for key, value in pairs.items() if value is not None]
    if args.no_progress:
        overrides.append("train.progress=false")
    return overrides + list(args.overrides)


def launch_torchrun(processes: int) -> int:
    """Run this same command under torchrun with one process per GPU (without --gpus)."""
    argv, skip = [], False
    for item in sys.argv[1:]:
        if skip or item == "--gpus" or item.startswith("--gpus="):
            skip = item == "--gpus"
            continue
        argv.append(item)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "mona", *argv]
    return subprocess.call(command)


def run(args: argparse.Namespace) -> int:
    if args.gpus is not None and args.gpus > 1 and distributed.world_size() == 1:
        available = torch.cuda.device_count()
        if args.gpus > available:
            raise MonaError(f"--gpus {args.gpus}: this machine has {available} CUDA GPU(s); for several CPU "
                            "processes use torchrun directly")
        return launch_torchrun(args.gpus)
    if args.resume and args.overwrite:
        raise MonaError("--resume continues a run and --overwrite replaces it: give one of them")
    if args.resume:
        config = resume_config(args.resume, flag_overrides(args))
    else:
        config = load_config(args.config, flag_overrides(args))
        if not config.data.root:
            raise MonaError("--data DIR is required (or data.root in a --config file)")
        if not config.out:
            config.out = f"runs/{config.method}_{config.data.labeled}"
    train(config, resume=bool(args.resume), overwrite=args.overwrite)
    return 0
