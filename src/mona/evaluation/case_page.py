"""The page about a user's own cases: `mona predict --report` (every case) and `mona suggest` (the
suggested ones). One slice browser per case, worst first by expected Dice: the image, the mask's
outlines, the truth's where there is one, and the uncertainty map (`mona.evaluation.quality`), built
with the report pages' browser (`mona.experiments.html`), so the page is one file with no network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from mona.data.ssl4mis import Volume3D
from mona.experiments.html import Table, slice_browser, write_page

NOTE = ("Move a slider to browse a case's slices: the image, the predicted mask's outlines, the truth's (where "
        "given) and the uncertainty map (the share of flipped, rotated, dropout and teacher predictions that "
        "disagree with the mask: transparent where all agree, yellow where none does).")


def case_browser(row: dict, image: np.ndarray, labels: np.ndarray, uncertainty: np.ndarray,
                 class_names: Sequence[str], truth: np.ndarray | None = None) -> str:
    """One case's slice browser, titled with its expected (and, with a truth, its true) Dice; arrays
    (D, H, W) in the network's order, `image` in [0, 1]."""
    heading = f"{row['case']}: expected Dice {row['quality']:.2f}"
    if row.get("dice") is not None:
        heading += f", true Dice {row['dice']:.2f}"
    return slice_browser(Volume3D(row["case"], image, truth, None), {"mask": labels}, class_names,
                         heat={"uncertainty": uncertainty}, heading=heading)


def write_case_page(path: str | Path, title: str, notes: Sequence[str], rows: Sequence[dict],
                    browsers: dict[str, str], first: Sequence[str] = ()) -> Path:
    """The page of `rows` (each with `case` and `quality`, optionally `dice`, and the `first` columns),
    in their order, a table and then each case's browser (`browsers` by case)."""
    scored = any(row.get("dice") is not None for row in rows)
    header = [*first, "case", "expected Dice", *(["true Dice"] if scored else []), "agreement", "missing classes"]
    cells = [[*(str(row[name]) for name in first), row["case"], f"{row['quality']:.3f}",
              *([f"{row['dice']:.3f}" if row.get("dice") is not None else ""] if scored else []),
              f"{row['agreement']:.3f}", f"{row['missing']:.2f}"] for row in rows]
    table = Table("Cases, worst first by expected Dice", header, cells,
                  "Expected Dice: the mean Dice over classes the quality estimate expects (fitted on the run's val "
                  "volumes); agreement: the mean Dice of the mask with its perturbed predictions; missing classes: "
                  "the share of the classes every training mask has that the mask lacks.")
    pages = [browsers[row["case"]] for row in rows if row["case"] in browsers]
    return write_page(path, title, notes, [table], [], pages, tables_heading="Cases", browsers_heading=("Slices", NOTE))
