"""The report's figures: learning curves of a run, Dice against the label budget, and a montage of
test slices (redrawn only where the data folder and the runs' best.pt are present, so a report
folder published without its checkpoints, as in docs/results/, rebuilds and keeps its montages)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from mona.data.ssl4mis import dataset_info, load_volumes
from mona.engine.run import load_run_model
from mona.engine.run_folder import stage_folders
from mona.engine.trainer import resolve_device
from mona.evaluation.inference import predict_volume
from mona.experiments.html import read_records
from mona.experiments.runs import budget_key
from mona.experiments.statistics import seed_stats
from mona.experiments.tables import groups

MONTAGE_SLICES = 3


def plot_curves(run: dict, path: Path) -> None:
    """Training losses (log scale) and val Dice against iteration; MONA's fine-tuning follows its pre-training."""
    fig = Figure(figsize=(10, 3.6))
    losses, dice = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    offset = 0
    for stage in stage_folders(run["dir"]):
        prefix = f"{stage.name}/" if stage != run["dir"] else ""
        records = read_records(stage)
        train = [r for r in records if r["split"] == "train"]
        val = [r for r in records if r["split"] == "val"]
        keys = sorted({k for r in train for k in r} - {"iteration", "split", "lr", "sec_per_iter", "data_wait"})
        for key in keys:
            points = [(offset + r["iteration"], r[key]) for r in train if key in r and r[key] > 0]
            if points:
                losses.plot(*zip(*points), label=prefix + key, linewidth=1, marker=".")
        if val:
            dice.plot([offset + r["iteration"] for r in val], [r["dice"] for r in val], marker="o", markersize=3,
                      label=f"{prefix}val Dice")
        offset += max((r["iteration"] for r in records), default=0)
    losses.set_yscale("log")
    losses.set(xlabel="iteration", ylabel="training loss", title=run["name"])
    dice.set(xlabel="iteration", ylabel="val Dice (mean over classes)", ylim=(0, 1))
    for ax in (losses, dice):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def plot_dice_vs_budget(runs: list[dict], path: Path) -> None:
    """Test Dice (best on val) against labeled patients per method, mean ± std over seeds;
    the fully supervised upper bound is a dashed line."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    budgets = sorted({r["labeled"] for r in runs if r["labeled"] != "all"}, key=budget_key)
    by_variant: dict[str, list[tuple[str, list[dict]]]] = defaultdict(list)
    for (variant, labeled), members in groups(runs).items():
        by_variant[variant].append((labeled, members))
    for variant, entries in by_variant.items():
        points = [(budgets.index(lab), *seed_stats([100 * r["summaries"]["best"]["mean"]["dice"] for r in members]))
                  for lab, members in entries if lab != "all"]
        if points:
            x, mean, std = zip(*points)
            ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=variant)
        for lab, members in entries:
            if lab == "all":
                mean, _ = seed_stats([100 * r["summaries"]["best"]["mean"]["dice"] for r in members])
                ax.axhline(mean, linestyle="--", color="grey", label=f"{variant}, all labels")
    ax.set_xticks(range(len(budgets)), budgets)
    ax.set(xlabel="labeled patients", ylabel="test Dice % (best on val)", title="Dice against label budget")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def plot_montage(variant: str, runs: list[dict], path: Path) -> None:
    """The middle slice of the first 3 test volumes, one row per budget (first seed, best checkpoint):
    predicted contours solid, true contours dashed."""
    config = runs[0]["config"]
    info = dataset_info(config["data"]["root"], config["data"]["num_classes"])
    volumes = load_volumes(info, "test")[:MONTAGE_SLICES]
    device = resolve_device("cpu")
    colours = [colormaps["tab10"](c % 10) for c in range(info.num_classes - 1)]
    fig = Figure(figsize=(2.4 * len(volumes), 2.4 * len(runs) + 0.4), facecolor="black")
    for row, run in enumerate(runs):
        model, state = load_run_model(run["dir"], "best")
        for col, volume in enumerate(volumes):
            index = len(volume.image) // 2
            probs = predict_volume(model, volume.image[index : index + 1], state["image_size"], device)
            pred = probs.argmax(0)[0].numpy()
            ax = fig.add_subplot(len(runs), len(volumes), row * len(volumes) + col + 1)
            ax.imshow(volume.image[index], cmap="gray", interpolation="nearest")
            for cls in range(1, info.num_classes):
                for mask, style in ((pred, "solid"), (volume.label[index], "dashed")):
                    if (mask == cls).any():
                        ax.contour((mask == cls).astype(np.float32), levels=[0.5], colors=[colours[cls - 1]],
                                   linewidths=1.0, linestyles=style)
            ax.set_title(f"{volume.name} slice {index}\nlabeled {run['labeled']}", color="white", fontsize=7)
            ax.set_axis_off()
    fig.suptitle(f"{variant}: prediction solid, truth dashed ({', '.join(info.class_names[1:])})",
                 color="white", fontsize=9)
    fig.savefig(path, dpi=90, facecolor=fig.get_facecolor())
