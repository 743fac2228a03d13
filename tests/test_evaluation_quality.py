"""The quality estimate (mona.evaluation.quality) and `mona predict --quality/--report`: views undone
exactly, dropout samples repeatable, masks judged against training masks, the form chosen on val by
leave-one-out, the fit cached and read back, only val read to fit it, uncertainty maps in the input's
geometry, and the report page (worst case first) in a real browser."""

import csv
import json
import re
import shutil
import types

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from mona.augment.weak import resize_images
from mona.cli.main import main
from mona.evaluation import quality as quality_module
from mona.evaluation.inference import dice_per_class, predict_volume
from mona.evaluation.postprocess import keep_largest_component
from mona.evaluation.quality import (
    FORMS,
    PARTS,
    VIEWS,
    Anatomy,
    Perturbed,
    QualityModel,
    _unview,
    _view,
    case_parts,
    dropout_on,
    perturbed_predictions,
)
from mona.evaluation.report import write_csv
from test_experiments_html import CHROMIUM, chromium

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
# Rotated in-plane, anisotropic, shifted: nothing about it is the identity.
AFFINE = np.array([[0.0, -1.2, 0.0, 10.0], [1.2, 0.0, 0.0, -5.0], [0.0, 0.0, 8.0, 3.0], [0.0, 0.0, 0.0, 1.0]])
PASSES = len(VIEWS) + quality_module.MC_SAMPLES + 1  # a mean-teacher run: flips/rotations, dropout, the teacher


def test_each_view_is_undone_and_the_eight_symmetries_differ():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    seen = {tuple(x.flatten().tolist())}
    for view in VIEWS:
        assert torch.equal(_unview(_view(x, *view), *view), x)
        seen.add(tuple(_view(x, *view).flatten().tolist()))
    assert len(VIEWS) == 7 and len(seen) == 8


class Pointwise(torch.nn.Module):
    """A 1x1 convolution after input dropout: commutes with every flip and rotation."""

    def __init__(self, seed, p=0.0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(1, 3, 1)
        self.dropout = torch.nn.Dropout(p)

    def forward(self, x):
        return types.SimpleNamespace(logits=self.conv(10 * self.dropout(x)))


def test_views_of_a_pointwise_network_agree_and_dropout_samples_repeat():
    image = np.random.default_rng(0).random((3, 20, 28)).astype(np.float32)
    net, teacher = Pointwise(0, p=0.3).eval(), Pointwise(1).eval()
    base = predict_volume(net, image, 16, CPU).argmax(0).numpy()
    state = torch.random.get_rng_state()
    perturbed = perturbed_predictions(net, image, 16, CPU, teacher=teacher, mc_samples=2, batch_size=2)
    found = perturbed.labels
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random state is left alone
    assert sorted(found) == ["mc", "teacher", "tta"] and [len(found[g]) for g in ("tta", "mc", "teacher")] == [7, 2, 1]
    assert all(labels.shape == image.shape and np.array_equal(labels, base) for labels in found["tta"])
    assert not np.array_equal(found["mc"][0], base) and not np.array_equal(found["mc"][0], found["mc"][1])
    assert not np.array_equal(found["teacher"][0], base)
    again = perturbed_predictions(net, image, 16, CPU, mc_samples=2, batch_size=2)
    assert "teacher" not in again.labels and all(np.array_equal(a, b) for a, b in zip(found["mc"], again.labels["mc"]))
    # the dropout samples' mean probabilities: per chunk of 2 slices, each sample's softmax resized back
    torch.manual_seed(0)
    chunks = []
    with dropout_on(net):
        for start in (0, 2):
            chunk = resize_images(torch.from_numpy(image[start:start + 2])[:, None], (16, 16))
            samples = [resize_images(torch.softmax(net(chunk).logits, 1), (20, 28)) for _ in range(2)]
            chunks.append((samples[0] + samples[1]) / 2)
    assert perturbed.mc_probabilities.shape == (3, *image.shape)
    torch.testing.assert_close(perturbed.mc_probabilities.permute(1, 0, 2, 3), torch.cat(chunks))
    assert perturbed_predictions(net, image, 16, CPU, mc_samples=0).mc_probabilities is None
    # post-processed as the mask: each map keeps only the largest component of the classes given
    kept = perturbed_predictions(net, image, 16, CPU, teacher=teacher, mc_samples=2, batch_size=2,
                                 largest_component=(1, 2))
    for group, maps in found.items():
        for raw, post in zip(maps, kept.labels[group]):
            np.testing.assert_array_equal(post, keep_largest_component(raw, (1, 2)))
    assert any(not np.array_equal(raw, post) for raw, post in zip(found["mc"], kept.labels["mc"]))
    assert not net.dropout.training


def heart(depth=3, size=24):
    """(D, H, W) labels: an LV disc (3) in a Myo ring (2), an RV (1) beside it."""
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - 12, xx - 14)
    plane = np.where(r < 4, 3, np.where(r < 6, 2, 0)).astype(np.uint8)
    plane[9:15, 2:7] = 1
    return np.repeat(plane[None], depth, axis=0)


def test_a_mask_like_the_training_masks_is_plausible_and_each_defect_is_seen():
    mask = heart()
    anatomy = Anatomy.from_masks([mask, list(mask[:2])], 4)
    assert anatomy.presence == [1.0, 1.0, 1.0]
    assert anatomy.plausibility(mask) == pytest.approx({"missing": 0, "fragments": 0, "share": 0, "contacts": 0},
                                                       abs=1e-12)
    no_rv = anatomy.plausibility(np.where(mask == 1, 0, mask))
    assert no_rv["missing"] == pytest.approx(1 / 3) and no_rv["share"] > 0 and no_rv["contacts"] > 0
    island = mask.copy()
    island[:, 0:2, 20:22] = 3  # an LV island far from the heart
    assert 0 < anatomy.plausibility(island)["fragments"] < 0.2
    assert anatomy.plausibility(np.zeros_like(mask)) == {"missing": 1, "fragments": 1, "share": 1, "contacts": 1}


def test_parts_are_dice_with_the_perturbed_masks_and_uncertainty_the_share_that_disagrees():
    mask = heart()
    other = mask.copy()
    other[0] = 0
    probs = torch.full((4, *mask.shape), 0.1)
    probs.scatter_(0, torch.from_numpy(mask[None]).long(), 0.7)
    mc = torch.full((4, *mask.shape), 0.5 / 3)  # the dropout samples' mean: less sure than the network
    mc.scatter_(0, torch.from_numpy(mask[None]).long(), 0.5)
    parts, uncertainty = case_parts(mask, probs, Perturbed({"tta": [mask, other], "mc": [mask, mask]}, mc),
                                    Anatomy.from_masks([mask], 4))
    assert list(parts) == [p for p in PARTS if p != "teacher"]
    # the soft Dice of the mask against the dropout mean: 2 * 0.5 |c| / (|c| + 0.5 |c| + 0.5 / 3 (N - |c|)) per class
    sizes, total = np.array([(mask == c).sum() for c in (1, 2, 3)]), mask.size
    assert parts["expected"] == pytest.approx(np.mean(sizes / (1.5 * sizes + 0.5 / 3 * (total - sizes))))
    assert parts["class_confidence"] == pytest.approx(0.7)
    assert parts["mc"] == 1 and parts["tta"] == pytest.approx((1 + dice_per_class(mask, other, 4).mean()) / 2)
    assert parts["agreement"] == pytest.approx((parts["tta"] + 1) / 2)
    assert parts["confidence"] == pytest.approx(0.7)
    assert parts["entropy"] == pytest.approx(-(3 * 0.1 * np.log(0.1) + 0.7 * np.log(0.7)) / np.log(4))
    assert uncertainty.dtype == np.float32
    np.testing.assert_array_equal(uncertainty, np.where((mask > 0) & (np.arange(3) == 0)[:, None, None], 0.25, 0))


def test_the_form_with_the_lowest_leave_one_out_error_is_kept_and_the_estimate_clipped():
    rng = np.random.default_rng(0)
    rows = [{part: float(rng.random()) for part in PARTS} for _ in range(20)]
    dice = [0.1 + 0.8 * row["tta"] + 0.02 * rng.standard_normal() for row in rows]
    model = QualityModel.fit(rows, dice)
    assert set(model.forms) == set(FORMS)
    assert model.forms[model.form]["loo_mae"] == min(score["loo_mae"] for score in model.forms.values()) < 0.05
    assert "tta" in model.features and model.forms["line on confidence"]["loo_mae"] > 0.1
    assert model.predict({**rows[0], "tta": 10.0}) == 1.0 and model.predict({**rows[0], "tta": -10.0}) == 0.0
    few = QualityModel.fit(rows[:5], dice[:5])  # too few to choose: the expected Dice as it is
    assert few.form == "expected Dice" and few.predict({**rows[0], "expected": 0.42}) == 0.42
    rows = [{part: value for part, value in row.items() if part != "expected"} for row in rows]
    few = QualityModel.fit(rows[:5], dice[:5])  # without it (no dropout samples): the agreement, scaled
    raw = np.array([row["agreement"] * (1 - row["missing"]) for row in rows[:5]])
    assert few.form == "scaled agreement" and few.predict(rows[0]) == pytest.approx(
        min(1.0, raw[0] * (raw @ dice[:5]) / (raw @ raw)))


def test_rows_round_trip_through_csv(tmp_path):
    write_csv([{"case": "a,b", "quality": 0.123456}, {"case": "c", "quality": 1.0, "dice": 0.5}], tmp_path / "q.csv",
              columns=None, decimals=4)
    assert list(csv.DictReader(open(tmp_path / "q.csv"))) == [
        {"case": "a,b", "quality": "0.1235", "dice": ""}, {"case": "c", "quality": "1.0000", "dice": "0.5000"}]


@pytest.fixture(scope="module")
def reported(teacher_run, tmp_path_factory):
    """`mona predict --report` on a NIfTI scan with its truth and an h5 volume without one; the fit on val
    made afresh, recording which splits it read."""
    root, run = teacher_run
    tmp = tmp_path_factory.mktemp("reported")
    first, second = (root / "test.list").read_text().split()[:2]
    with h5py.File(root / "data" / f"{first}.h5") as f:
        image, label = f["image"][()], f["label"][()]
    (tmp / "in").mkdir()
    (tmp / "truth").mkdir()
    nib.save(nib.Nifti1Image((image * 900 + 100).transpose(2, 1, 0).astype(np.int16), AFFINE),
             tmp / "in" / f"{first}.nii.gz")
    nib.save(nib.Nifti1Image(label.transpose(2, 1, 0).astype(np.uint8), AFFINE), tmp / "truth" / f"{first}.nii.gz")
    with h5py.File(root / "data" / f"{second}.h5") as source, h5py.File(tmp / "in" / f"{second}.h5", "w") as f:
        f["image"] = source["image"][()]
    (run / "quality_model.json").unlink(missing_ok=True)
    splits = []
    with pytest.MonkeyPatch.context() as patch:
        load = quality_module.load_volumes
        patch.setattr(quality_module, "load_volumes", lambda info, split: splits.append(split) or load(info, split))
        code = main(["predict", "-m", str(run), "-i", str(tmp / "in"), "-o", str(tmp / "out"), "--truth",
                     str(tmp / "truth"), "--report", "--no-progress"])
    return code, tmp, run, (first, second), splits


def test_quality_csv_holds_every_case_worst_first_with_its_parts(reported):
    code, tmp, _, cases, _ = reported
    assert code == 0
    rows = list(csv.DictReader(open(tmp / "out" / "quality.csv")))
    assert sorted(row["case"] for row in rows) == sorted(cases)
    assert list(rows[0])[:2] == ["case", "quality"] and set(PARTS) <= set(rows[0])
    qualities = [float(row["quality"]) for row in rows]
    assert qualities == sorted(qualities) and all(0 <= q <= 1 for q in qualities)
    scored = {row["case"]: row["dice"] for row in rows}
    summary = json.loads((tmp / "out" / "summary.json").read_text())
    assert float(scored[cases[0]]) == pytest.approx(summary["mean"]["dice"], abs=1e-4) and scored[cases[1]] == ""


def test_uncertainty_maps_have_the_inputs_geometry(reported):
    _, tmp, _, (first, second), _ = reported
    scan, mask = nib.load(tmp / "in" / f"{first}.nii.gz"), nib.load(tmp / "out" / f"{first}.nii.gz")
    for name, reference in ((first, scan), (second, None)):
        img = nib.load(tmp / "out" / "uncertainty" / f"{name}.nii.gz")
        values = np.asanyarray(img.dataobj)
        assert values.dtype == np.float32 and 0 <= values.min() and values.max() <= 1
        np.testing.assert_allclose(values * PASSES, np.round(values * PASSES), atol=1e-4)  # a share of the passes
        if reference is not None:
            assert img.shape == scan.shape == mask.shape
            np.testing.assert_allclose(img.affine, scan.affine)
    with h5py.File(tmp / "in" / f"{second}.h5") as f:
        assert nib.load(tmp / "out" / "uncertainty" / f"{second}.nii.gz").shape == f["image"].shape[::-1]


def test_the_fit_reads_only_val_and_is_cached_for_the_next_call(reported, monkeypatch):
    code, tmp, run, _, splits = reported
    assert splits == ["val"]
    saved = json.loads((run / "quality_model.json").read_text())
    assert saved["model"]["form"] in FORMS and len(saved["val"]) == 6 and saved["key"]["tta"] is False
    assert not list(run.glob(".*quality*"))  # written through a temporary name

    def refuse(*args):
        raise AssertionError("fitted again")

    monkeypatch.setattr(QualityModel, "fit", refuse)
    assert main(["predict", "-m", str(run), "-i", str(tmp / "in"), "-o", str(tmp / "again"), "--quality",
                 "--no-progress"]) == 0
    first = {row["case"]: row["quality"] for row in csv.DictReader(open(tmp / "out" / "quality.csv"))}
    again = {row["case"]: row["quality"] for row in csv.DictReader(open(tmp / "again" / "quality.csv"))}
    assert first == again and not (tmp / "again" / "index.html").exists()


def test_the_report_shows_every_case_worst_first(reported):
    _, tmp, _, _, _ = reported
    text = (tmp / "out" / "index.html").read_text()
    order = [row["case"] for row in csv.DictReader(open(tmp / "out" / "quality.csv"))]
    assert re.findall(r"<h3>([^:<]+): expected Dice", text) == order
    assert all(s.startswith("data:image/png;base64,") for s in re.findall(r'src="([^"]*)"', text))
    assert "<figcaption>uncertainty</figcaption>" in text and "<figcaption>truth</figcaption>" in text


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian package chromium)")
def test_real_browser_loads_the_report_and_the_slider_moves(reported, tmp_path):
    """Headless Chromium runs the page's script: the first case shows its middle slice; an `input` event
    on its slider at the last position shows the last slice, with its mask and uncertainty layers."""
    _, tmp, _, _, _ = reported
    path = tmp_path / "index.html"
    shutil.copy(tmp / "out" / "index.html", path)
    text = path.read_text()
    frames = json.loads(re.search(r'class="frames">(.*?)</script>', text)[1])
    moved = tmp_path / "moved.html"
    moved.write_text(text.replace("</body>", "<script>const s = document.querySelector('input[type=range]'); "
                                  "s.value = s.max; s.dispatchEvent(new Event('input'));</script></body>"))
    for file, index in ((path, len(frames) // 2), (moved, len(frames) - 1)):
        dom = chromium(tmp_path, "--dump-dom", file.as_uri())
        first = dom.split('<section class="browser">')[1]
        layers = re.findall(r'<img class="layer" alt="" [^>]*src="([^"]*)"', first)
        assert layers == frames[index][1:] and len(layers) in (3, 4)  # (truth,) mask, uncertainty and the image's
        assert f"<output>slice {index + 1} of {len(frames)}</output>" in first


def test_the_python_api_gives_the_quality_the_cli_wrote(reported):
    _, tmp, run, (first, _), _ = reported
    import mona

    predictor = mona.load_predictor(run)
    estimator = mona.load_quality_estimator(predictor, run)  # the fit the CLI cached
    scan = nib.load(tmp / "in" / f"{first}.nii.gz")
    found = predictor.segmentation(scan.get_fdata(), affine=scan.affine)
    assessment = estimator.assess(found, first)
    written = {row["case"]: row["quality"] for row in csv.DictReader(open(tmp / "out" / "quality.csv"))}
    assert f"{assessment.quality:.4f}" == written[first]
    assert assessment.uncertainty.shape == found.labels.shape


def test_a_form_without_perturbed_parts_is_scored_without_the_extra_passes(reported, monkeypatch):
    _, tmp, run, (first, _), _ = reported
    import mona

    predictor = mona.load_predictor(run)
    estimator = mona.load_quality_estimator(predictor, run)
    scan = nib.load(tmp / "in" / f"{first}.nii.gz")
    found = predictor.segmentation(scan.get_fdata(), affine=scan.affine)
    dice = [row["dice"] for row in estimator.val]
    needs = {"expected Dice": True, "raw agreement": True, "agreement + plausibility": True,
             "line on class confidence": False, "line on confidence": False}
    for form, expected in needs.items():
        estimator.model = QualityModel.fit_form(form, FORMS[form], estimator.val, dice)
        assert estimator.model.needs_perturbations is expected
        full = estimator.assess(found, first).quality
        if not expected:  # the cheap path must not run a perturbed pass, and must give the same number
            with monkeypatch.context() as patch:
                patch.setattr(quality_module, "perturbed_predictions", lambda *a, **k: pytest.fail("perturbed"))
                assert estimator.quality(found) == full
        else:
            assert estimator.quality(found) == full
