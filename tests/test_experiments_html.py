"""The self-contained HTML report: slice browsers, learning curves over stages, one page with no
outside reference, and (where Chromium is installed) a real browser loading it and moving a slider."""

import base64
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from matplotlib.image import imread

from mona.data.ssl4mis import Volume3D
from mona.experiments.html import Table, learning_curves, outline_png, slice_browser, write_page

CLASSES = ["background", "RV", "Myo", "LV"]


def volume(depth=5, size=24):
    """A volume whose slices differ: a bright square growing with the slice index, labeled LV."""
    image = np.zeros((depth, size, size), np.float32)
    label = np.zeros((depth, size, size), np.uint8)
    for k in range(depth):
        image[k, 4 : 6 + 2 * k, 4 : 6 + 2 * k] = 1.0
        label[k, 4 : 6 + 2 * k, 4 : 6 + 2 * k] = 3
    return Volume3D("case01", image, label, None)


def decode(uri):
    assert uri.startswith("data:image/png;base64,")
    return imread(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])), format="png")


def test_outline_layer_marks_each_class_boundary_in_its_colour():
    labels = np.zeros((8, 8), np.uint8)
    labels[2:6, 2:6] = 1
    rgba = decode(outline_png(labels, [(1.0, 0.0, 0.0)]))
    assert rgba.shape == (8, 8, 4)
    red = (rgba[..., 0] == 1) & (rgba[..., 1] == 0) & (rgba[..., 3] == 1)
    assert red[2, 2:6].all() and red[2:6, 5].all()  # the boundary pixels of the square
    assert rgba[3:5, 3:5, 3].max() == 0 and rgba[0, :, 3].max() == 0  # transparent inside and outside
    assert decode(outline_png(None, [(1.0, 0.0, 0.0)]))[..., 3].max() == 0


def test_slice_browser_has_one_frame_per_slice_and_a_layer_per_column():
    vol = volume()
    section = slice_browser(vol, {"supervised": vol.label, "mona": np.zeros_like(vol.label)}, CLASSES)
    frames = json.loads(re.search(r'<script type="application/json" class="frames">(.*?)</script>', section)[1])
    assert len(frames) == 5 and all(len(row) == 1 + 4 for row in frames)  # grey image, then image, truth, 2 methods
    assert re.findall(r"<figcaption>(.*?)</figcaption>", section) == ["image", "truth", "supervised", "mona"]
    assert '<input type="range" min="0" max="4" value="2"' in section
    grey = decode(frames[4][0])
    assert grey.ndim == 2 and grey.max() == 1 and grey[0, 0] == 0  # the slice itself, 8-bit grey
    assert frames[0][0] != frames[4][0] and frames[0][2] != frames[4][2]  # the slices differ
    assert frames[2][2] == frames[2][3]  # truth and a perfect prediction draw the same outlines
    assert decode(frames[2][4])[..., 3].max() == 0  # an empty prediction draws nothing


def write_metrics(folder, records):
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_learning_curves_read_every_stage(tmp_path):
    mona, supervised = tmp_path / "mona", tmp_path / "supervised"
    mona.mkdir()
    (mona / "stages.json").write_text(json.dumps([{"name": "pretrain"}, {"name": "finetune"}]))
    for stage in ("pretrain", "finetune"):
        write_metrics(mona / stage, [{"iteration": 2, "split": "train", "loss": 1.0},
                                     {"iteration": 2, "split": "val", "dice": 0.5}])
    write_metrics(supervised, [{"iteration": 4, "split": "train", "loss": 0.5}, {"iteration": 4, "split": "val",
                                                                                  "dice": 0.6}])
    rgb = decode(learning_curves({"supervised": supervised, "mona": mona}))
    assert rgb.shape[1] > 600 and rgb[..., :3].std() > 0.05


def page(tmp_path):
    vol = volume()
    table = Table("Test", ["method", "Dice %"], [["mona <b>", "80.0"]], note="a & b")
    return write_page(tmp_path / "report.html", "demo", ["note 1"], [table], [],
                      [slice_browser(vol, {"mona": vol.label}, CLASSES)])


def test_page_is_self_contained_and_escaped(tmp_path):
    text = page(tmp_path).read_text()
    sources = re.findall(r'src="([^"]*)"', text)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http" not in text and "<link" not in text
    assert "<td>mona &lt;b&gt;</td>" in text and "<p>a &amp; b</p>" in text
    assert not list(tmp_path.glob(".*"))  # written through a temporary name


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def chromium(tmp_path, *args):
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
               *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian package chromium)")
def test_real_browser_loads_the_page_and_the_slider_moves(tmp_path):
    """Headless Chromium runs the page's script: the panels show the middle slice (and the script
    writes its number); an `input` event on the slider (what dragging it fires) at its last position
    shows the last slice; a screenshot of the page is not blank."""
    path = page(tmp_path)
    text = path.read_text()
    frames = json.loads(re.search(r'class="frames">(.*?)</script>', text)[1])
    moved = tmp_path / "moved.html"
    moved.write_text(text.replace("</body>", "<script>const s = document.querySelector('input[type=range]'); "
                                  "s.value = s.max; s.dispatchEvent(new Event('input'));</script></body>"))
    for file, index in ((path, 2), (moved, 4)):
        dom = chromium(tmp_path, "--dump-dom", file.as_uri())
        bases = re.findall(r'<img class="base" alt="[^"]*" width="192" height="192" src="([^"]*)"', dom)
        layers = re.findall(r'<img class="layer" alt="" width="192" height="192" src="([^"]*)"', dom)
        assert bases == [frames[index][0]] * 3 and layers == frames[index][1:]
        assert f"<output>slice {index + 1} of 5</output>" in dom
    shot = tmp_path / "page.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1000,800", "--hide-scrollbars", path.as_uri())
    rgb = imread(shot)
    assert rgb.shape[:2] == (800, 1000) and rgb[..., :3].std() > 0.05
