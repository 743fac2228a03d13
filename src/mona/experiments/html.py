"""Self-contained HTML report pages: one file, every image a base64 PNG inside it, no network.

A page holds metrics tables, learning curves (training loss and val Dice against iteration, each
run's stages one after the other, from their `metrics.jsonl`) and, per test volume, a slice
browser: a range slider that switches the image, the truth and each method's predicted contours
to another slice (a few lines of JavaScript, the slices' PNGs embedded as data URIs).
`mona demo` and `mona report` both build their `report.html` here.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image  # matplotlib's own PNG writer; imsave cannot write 8-bit grey
from scipy.ndimage import binary_erosion

from mona.data.io import atomic_path
from mona.data.ssl4mis import Volume3D
from mona.engine.run import load_run_model
from mona.engine.run_folder import stage_folders
from mona.evaluation.inference import predict_volume
from mona.evaluation.postprocess import labels_from_probabilities

CPU = torch.device("cpu")
PANEL_PIXELS = 192  # a browser panel's longer side on the page, in CSS pixels (enlarged pixelated)
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
caption { text-align: left; font-weight: bold; margin-bottom: 0.3em; }
.browser { margin: 1em 0 2em; }
.panels { display: flex; flex-wrap: wrap; gap: 6px; }
.panels figure { margin: 0; text-align: center; }
.panels img { image-rendering: pixelated; display: block; }
.stack { position: relative; }
.stack .layer { position: absolute; left: 0; top: 0; }
.legend span { display: inline-block; margin-right: 1em; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.3em; vertical-align: middle; }
input[type=range] { width: 360px; vertical-align: middle; }
"""
SCRIPT = """
for (const browser of document.querySelectorAll('.browser')) {
  const frames = JSON.parse(browser.querySelector('script.frames').textContent);
  const slider = browser.querySelector('input[type=range]');
  const bases = browser.querySelectorAll('.panels img.base');
  const layers = browser.querySelectorAll('.panels img.layer');
  const shown = browser.querySelector('output');
  const show = () => {
    const k = Number(slider.value);
    bases.forEach((img) => { img.src = frames[k][0]; });
    layers.forEach((img, column) => { img.src = frames[k][column + 1]; });
    shown.textContent = `slice ${k + 1} of ${frames.length}`;
  };
  slider.addEventListener('input', show);
  show();
}
"""


@dataclass
class Table:
    """A metrics table: a caption, column names, rows of already formatted cells and an optional note."""

    caption: str
    header: Sequence[str]
    rows: list[Sequence[str]]
    note: str = ""


def png_uri(write) -> str:
    """A `data:` URI of the PNG that `write(buffer)` saves."""
    buffer = io.BytesIO()
    write(buffer)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def class_colours(num_classes: int) -> list[tuple[float, float, float]]:
    """The colour of each foreground class (tab10, as in the PNG montages); index 0 is class 1."""
    return [colormaps["tab10"](c % 10)[:3] for c in range(num_classes - 1)]


def read_records(stage: Path) -> list[dict]:
    path = stage / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []


def learning_curves(runs: dict[str, Path], title: str = "") -> str:
    """PNG URI of training loss (log scale) and val Dice against iteration, one line per run.

    A run's later stages (MONA's fine-tuning) continue where the earlier ones stopped; a dotted
    vertical line marks where each new stage begins.
    """
    fig = Figure(figsize=(11, 3.8))
    loss_ax, dice_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for index, (name, run_dir) in enumerate(runs.items()):
        colour = colormaps["tab10"](index % 10)
        offset, loss, dice = 0, [], []
        for stage in stage_folders(run_dir):
            records = read_records(stage)
            if offset:
                loss_ax.axvline(offset, color=colour, linestyle=":", linewidth=1)
                dice_ax.axvline(offset, color=colour, linestyle=":", linewidth=1)
            loss += [(offset + r["iteration"], r["loss"]) for r in records if r["split"] == "train" and r["loss"] > 0]
            dice += [(offset + r["iteration"], 100 * r["dice"]) for r in records if r["split"] == "val"]
            offset += max((r["iteration"] for r in records), default=0)
        if loss:
            loss_ax.plot(*zip(*loss), color=colour, linewidth=1.2, label=name)
        if dice:
            dice_ax.plot(*zip(*dice), color=colour, marker="o", markersize=3, label=name)
    loss_ax.set_yscale("log")
    loss_ax.set(xlabel="iteration (stages one after the other)", ylabel="training loss", title="training loss")
    dice_ax.set(xlabel="iteration (stages one after the other)", ylabel="val Dice % (mean over classes)",
                ylim=(0, 100), title="validation Dice")
    for ax in (loss_ax, dice_ax):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return png_uri(lambda buffer: fig.savefig(buffer, format="png", dpi=80))


def predicted_labels(run_dir: Path, volumes: Sequence[Volume3D], checkpoint: str = "best") -> list[np.ndarray]:
    """Each volume's label map predicted by a run's checkpoint (on the CPU), as `evaluate_run` scores it."""
    model, state = load_run_model(run_dir, checkpoint)
    return [labels_from_probabilities(predict_volume(model, volume.image, state["image_size"], CPU))
            for volume in volumes]


def grey_png(image: np.ndarray) -> str:
    """PNG URI of a 2D image in [0, 1] as 8-bit grey."""
    return png_uri(lambda buffer: Image.fromarray(np.round(255 * np.clip(image, 0, 1)).astype(np.uint8)).save(
        buffer, format="png"))


def outline_png(labels: np.ndarray | None, colours: Sequence[tuple]) -> str:
    """PNG URI of a transparent layer with each class's outline (its boundary pixels) in its colour;
    fully transparent for `None`. Drawn over the grey slice by the page, so a slice's noisy image is
    stored once, not once per method (a fifth of the page)."""
    rgba = np.zeros((*labels.shape, 4) if labels is not None else (1, 1, 4), np.uint8)
    for cls, colour in enumerate(colours, start=1):
        mask = labels == cls
        rgba[mask & ~binary_erosion(mask)] = [round(255 * v) for v in colour] + [255]
    return png_uri(lambda buffer: Image.fromarray(rgba).save(buffer, format="png"))


def heat_png(values: np.ndarray) -> str:
    """PNG URI of a transparent layer showing a 2D map in [0, 1] (an uncertainty) in the `plasma`
    colours, opaque in proportion to the value, so 0 leaves the grey slice as it is."""
    values = np.clip(values, 0, 1)
    rgba = np.round(255 * colormaps["plasma"](values)).astype(np.uint8)
    rgba[..., 3] = np.round(255 * values).astype(np.uint8)
    return png_uri(lambda buffer: Image.fromarray(rgba).save(buffer, format="png"))


def slice_browser(volume: Volume3D, predictions: dict[str, np.ndarray], class_names: Sequence[str],
                  heat: dict[str, np.ndarray] | None = None, heading: str = "") -> str:
    """The HTML of one volume's slice browser: image, truth (when the volume has one), each prediction
    and each `heat` map in [0, 1] (an uncertainty) side by side, a slider choosing the slice (it starts
    in the middle). Each slice's frame lists its grey image, then one layer per column. `heading`
    replaces the volume's name as the title."""
    colours = class_colours(len(class_names))
    columns = {"image": None, **({"truth": volume.label} if volume.label is not None else {}), **predictions}
    heat = heat or {}
    frames = [[grey_png(volume.image[k])] + [outline_png(None if labels is None else labels[k], colours)
                                             for labels in columns.values()]
              + [heat_png(values[k]) for values in heat.values()] for k in range(len(volume.image))]
    columns.update(heat)
    middle = len(frames) // 2
    height, width = volume.image.shape[1:]
    scale = PANEL_PIXELS / max(height, width)
    size = f'width="{round(width * scale)}" height="{round(height * scale)}"'
    figures = "".join(f'<figure><div class="stack"><img class="base" alt="{html.escape(name)}" {size} '
                      f'src="{frames[middle][0]}"><img class="layer" alt="" {size} src="{frames[middle][c + 1]}">'
                      f"</div><figcaption>{html.escape(name)}</figcaption></figure>" for c, name in enumerate(columns))
    legend = "".join(f'<span><i class="swatch" style="background: rgb({", ".join(str(round(255 * v)) for v in rgb)})">'
                     f"</i>{html.escape(name)}</span>" for name, rgb in zip(class_names[1:], colours))
    return (f'<section class="browser"><h3>{html.escape(heading or volume.name)}</h3>'
            f'<p class="legend">{legend}</p><div class="panels">{figures}</div>'
            f'<p><input type="range" min="0" max="{len(frames) - 1}" value="{middle}" '
            f'aria-label="slice of {html.escape(volume.name)}"> <output></output></p>'
            f'<script type="application/json" class="frames">{json.dumps(frames)}</script></section>')


def table_html(table: Table) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in table.header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in table.rows)
    note = f"<p>{html.escape(table.note)}</p>" if table.note else ""
    return f"{note}<table><caption>{html.escape(table.caption)}</caption><tr>{head}</tr>{body}</table>"


BROWSERS = ("Test volumes", "Move a slider to browse a volume's slices: the image, the truth and each method's "
            "predicted outlines (best checkpoint on val).")


def write_page(path: str | Path, title: str, notes: Sequence[str], tables: Sequence[Table],
               figures: Sequence[tuple[str, str]], browsers: Sequence[str], *, tables_heading: str = "Test metrics",
               browsers_heading: tuple[str, str] = BROWSERS) -> Path:
    """Write the page (atomically): title, notes, tables, figures (caption, PNG URI; the heading only
    when there are some), slice browsers under (heading, note)."""
    parts = [f"<h1>{html.escape(title)}</h1>", "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>",
             f"<h2>{html.escape(tables_heading)}</h2>", *map(table_html, tables)]
    if figures:
        parts += ["<h2>Figures</h2>", *(f'<figure><img alt="{html.escape(caption)}" src="{uri}"><figcaption>'
                                        f"{html.escape(caption)}</figcaption></figure>" for caption, uri in figures)]
    if browsers:
        parts += [f"<h2>{html.escape(browsers_heading[0])}</h2>", f"<p>{html.escape(browsers_heading[1])}</p>",
                  *browsers]
    head = f'<meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style>'
    page = (f'<!doctype html>\n<html lang="en"><head>{head}</head><body>\n' + "\n".join(parts)
            + f"\n<script>{SCRIPT}</script></body></html>\n")
    with atomic_path(path) as tmp:
        tmp.write_text(page)
    return Path(path)
