"""Real ACDC (skipped when ../shared/data/ACDC is absent): a short supervised run on the first
labeled patient (patient099) learns, read through a small SSL4MIS-layout folder of symlinks."""

import json
from pathlib import Path

import pytest
import torch

from mona.config import load_config
from mona.data.ssl4mis import dataset_info, load_volumes, read_list, split_budget
from mona.engine.run import train

ACDC = Path(__file__).parents[1].parent / "shared/data/ACDC"
pytestmark = [pytest.mark.skipif(not (ACDC / "train_slices.list").is_file(), reason="shared ACDC data is absent"),
              pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def small_acdc(tmp_path_factory):
    """patient099's 32 training slices and one val volume, linked (read only) from the shared copy."""
    root = tmp_path_factory.mktemp("acdc") / "ACDC"
    (root / "data" / "slices").mkdir(parents=True)
    names = read_list(ACDC / "train_slices.list")
    labeled, _ = split_budget(names, "1")
    first = [names[i] for i in labeled]
    for name in first:
        (root / "data" / "slices" / f"{name}.h5").symlink_to(ACDC / "data" / "slices" / f"{name}.h5")
    val = read_list(ACDC / "val.list")[0]
    (root / "data" / f"{val}.h5").symlink_to(ACDC / "data" / f"{val}.h5")
    (root / "train_slices.list").write_text("".join(n + "\n" for n in first))
    (root / "val.list").write_text(val + "\n")
    return root


def test_small_acdc_reads(small_acdc):
    info = dataset_info(small_acdc)
    assert info.num_classes == 4 and info.class_names == ["background", "RV", "Myo", "LV"]
    assert len(read_list(small_acdc / "train_slices.list")) == 32
    (volume,) = load_volumes(info, "val")
    assert volume.image.ndim == 3 and volume.label.max() == 3 and volume.spacing is None


def test_supervised_loss_falls_on_patient099(small_acdc, tmp_path):
    out = tmp_path / "run"
    config = load_config([], [
        f"data.root={small_acdc}", f"out={out}", "method=supervised", "data.labeled=1", "data.image_size=64",
        "data.batch_labeled=4", "train.iterations=20", "train.log_every=5", "train.val_every=20",
        "train.device=cpu", "train.progress=false", "optim.lr=0.05",
    ])
    result = train(config)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["split"] == "train"]
    assert len(losses) == 4
    assert losses[-1] < 0.85 * losses[0], losses
    assert result["last"]["iteration"] == 20 and 0.0 <= result["last"]["dice"] <= 1.0
    assert torch.load(out / "best.pt", weights_only=True)["image_size"] == 64
