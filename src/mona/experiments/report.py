"""The report of a grid folder (OUT/runs/<run>): results.csv, report.md and its PNG figures, report.html.
OUT may also be a folder of run folders, or one run folder (a user's own run): the report goes there.

It gathers the finished runs (`experiments.runs`), their tables (`experiments.tables`, with the
paired statistics of `experiments.statistics`) and figures (`experiments.figures`), and says under
which protocol, on which machines and how completely the runs were trained.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

from mona.data.io import atomic_path
from mona.data.ssl4mis import dataset_info, load_volumes
from mona.engine.environment import describe, one_line
from mona.engine.run import run_checkpoint
from mona.engine.trainer import resolve_device
from mona.experiments.figures import plot_curves, plot_dice_vs_budget, plot_montage
from mona.experiments.html import Table, learning_curves, png_uri, predicted_labels, slice_browser, write_page
from mona.experiments.runs import acdc_like, budget_key, collect
from mona.experiments.tables import markdown, paired_table, tables, write_results_csv

PROTOCOL_KEYS = ("data.image_size", "data.batch_labeled", "data.batch_unlabeled", "train.iterations",
                 "train.val_every", "train.amp", "optim.lr", "mona.pretrain_iterations",
                 "mona.finetune_batch_labeled", "mona.finetune_batch_unlabeled", "mona.representation_stride")
PAPER_SOURCE = "You et al., Mine yOur owN Anatomy, TPAMI 2024 (arXiv 2209.13476), ACDC tables"
BROWSER_VOLUMES = 3  # test volumes with a slice browser in report.html


def protocol_lines(out: Path, runs: list[dict]) -> list[str]:
    """The preset named at `mona reproduce` (OUT/grid.json) and the settings the runs used."""
    grid = out / "grid.json"
    preset = f"`{json.loads(grid.read_text())['protocol']}` preset" if grid.is_file() else "the runs' config.yaml"
    settings = []
    for key in PROTOCOL_KEYS:
        section, name = key.split(".")
        relevant = [r for r in runs if section != "mona" or r["config"]["method"] == "mona"]
        values = sorted({str(r["config"][section][name]) for r in relevant})
        if values:
            settings.append(f"{key}={'/'.join(values)}")
    data = sorted({os.path.normpath(r["config"]["data"]["root"]) for r in runs})
    return [f"- Protocol: {preset}; " + ", ".join(settings),
            f"- Data: {', '.join(data)}; checkpoints chosen on val Dice only (`best on val`), `last` = final "
            "iteration; `post-processed on val`: each class keeps only its largest connected component where "
            "that raised its val Dice (the masks `mona predict` writes); every other row is the raw argmax"]


def unfinished_lines(out: Path, runs: list[dict]) -> list[str]:
    """The runs OUT/grid.json plans that are not finished yet: a partial grid says what it lacks."""
    grid = out / "grid.json"
    planned = [r["name"] for r in json.loads(grid.read_text())["runs"]] if grid.is_file() else []
    finished = {r["name"] for r in runs}
    missing = [name for name in planned if name not in finished]
    if not missing:
        return []
    return [f"- Not finished yet ({len(missing)} of {len(planned)} planned runs): {', '.join(missing)}"]


def build_report(out: str | Path) -> Path:
    """Write OUT/results.csv, OUT/report.md and its figures from the finished runs; returns report.md."""
    out = Path(out)
    runs = collect(out)
    write_results_csv(runs, out / "results.csv")
    first = runs[0]
    acdc = acdc_like(first["config"]["data"]["root"], [c["name"] for c in first["summaries"]["best"]["classes"]])
    here = one_line(describe(resolve_device("auto"), "fp32"))
    hardware_lines = (sorted({r["hardware"] for r in runs if r["hardware"]})
                      or [f"{here} (the report's machine: the runs recorded none)"])
    total = sum(r["train_seconds"] for r in runs)
    lines = [f"# Results of {len(runs)} finished runs", "", *protocol_lines(out, runs), *unfinished_lines(out, runs),
             *(f"- Hardware: {h}" for h in hardware_lines),
             f"- Total training wall time: {total / 3600:.2f} h ({total:.0f} s, sum of the runs' train_seconds)",
             f"- Paper Dice: {PAPER_SOURCE}{'' if acdc else '; not ACDC, so not shown'}"]
    table_list = tables(runs, acdc) + [t for t in [paired_table(runs)] if t is not None]
    lines += ["", *(line for table in table_list for line in markdown(table) + [""]), "## Figures", ""]
    (out / "dice_vs_budget.png").unlink(missing_ok=True)  # an earlier build's, of other runs
    if len({run["labeled"] for run in runs}) > 1:  # one budget draws no curve
        plot_dice_vs_budget(runs, out / "dice_vs_budget.png")
        lines += ["![Dice against label budget](dice_vs_budget.png)", ""]
    data_here = Path(first["config"]["data"]["root"]).is_dir()
    by_variant: dict[str, dict[str, dict]] = defaultdict(dict)
    for run in runs:
        by_variant[run["variant"]].setdefault(run["labeled"], run)  # runs are sorted by seed: the first seed
    for variant, by_budget in by_variant.items():
        png = out / f"montage_{variant}.png"
        if data_here and all(run_checkpoint(run["dir"], "best").is_file() for run in by_budget.values()):
            plot_montage(variant, list(by_budget.values()), png)
            lines += [f"![{variant} test slices]({png.name})", ""]
        elif png.is_file():
            lines += [f"![{variant} test slices]({png.name})",
                      "(kept from an earlier build: the data folder or the runs' best.pt are not here)", ""]
        else:
            lines += [f"(no {variant} montage: it needs the data folder and the runs' best.pt)", ""]
    lines += ["### Learning curves", ""]
    for run in runs:
        plot_curves(run, out / f"curves_{run['name']}.png")
        lines += [f"![{run['name']}](curves_{run['name']}.png)", ""]
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines))
    notes = [line[2:].replace("`", "") for line in lines if line.startswith("- ")]
    write_html(out, runs, notes, table_list)
    return out / "report.md"


def write_html(out: Path, runs: list[dict], notes: list[str], table_list: list[Table]) -> Path:
    """OUT/report.html: the report's tables, Dice against budget, the learning curves of each budget
    and slice browsers of the first test volumes with the first seed of each method and budget
    (where the data folder and those runs' best.pt are here)."""
    budget_plot = out / "dice_vs_budget.png"
    figures = [("Dice against label budget", png_uri(lambda buffer: buffer.write(budget_plot.read_bytes())))
               ] if budget_plot.is_file() else []
    for labeled in sorted({r["labeled"] for r in runs}, key=budget_key):
        members = {r["name"]: r["dir"] for r in runs if r["labeled"] == labeled}
        figures.append((f"learning curves, {labeled} labeled", learning_curves(members, f"{labeled} labeled")))
    first_seed: dict[tuple[str, str], dict] = {}
    for run in runs:
        first_seed.setdefault((run["variant"], run["labeled"]), run)
    config = runs[0]["config"]
    browsers = []
    if Path(config["data"]["root"]).is_dir() and all(run_checkpoint(r["dir"], "best").is_file()
                                                     for r in first_seed.values()):
        info = dataset_info(config["data"]["root"], config["data"]["num_classes"])
        volumes = load_volumes(info, "test")[:BROWSER_VOLUMES]
        predictions = {f"{variant}, {labeled} labeled": predicted_labels(run["dir"], volumes)
                       for (variant, labeled), run in first_seed.items()}
        browsers = [slice_browser(volume, {name: labels[i] for name, labels in predictions.items()}, info.class_names)
                    for i, volume in enumerate(volumes)]
    else:
        notes = notes + ["No slice browsers: they need the data folder and the runs' best.pt"]
    return write_page(out / "report.html", f"Results of {len(runs)} finished runs", notes, table_list, figures,
                      browsers)
