"""The built-in synthetic dataset ("phantom"): procedural cardiac short-axis cine-MRI in the SSL4MIS layout.

`mona demo` and the tests need a dataset that is free, instant and offline, yet behaves like
ACDC: the same file layout, the same four classes (0 background, 1 RV, 2 Myo, 3 LV), about
95 % background pixels, shapes that change from base to apex, and intensities that overlap
between classes (noise, bias field, bright vessels and fat beside the blood pools), so that
one labeled patient segments clearly worse than all of them. Each patient has two frames,
end-diastole (`frame01`) and end-systole (`frame02`), like ACDC.

Everything is drawn from a `numpy.random.Generator` seeded with (seed, patient index), so a
patient's volumes depend only on the seed and its index, never on how many patients are written.

`variation` > 0 widens the differences between patients (heart size and position, tissue
contrast, noise, intensity curve) so that one labeled patient no longer covers the test
patients while the unlabeled ones do: the setting `mona demo` uses to show what unlabeled
data buys. Its draws come from a generator of their own, so `variation=0` is the phantom the
tests have always used, value for value.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import h5py
import numpy as np
from scipy.ndimage import gaussian_filter

from mona.errors import MonaError

CLASSES = ["background", "RV", "Myo", "LV"]
FRAMES = ("frame01", "frame02")  # end-diastole, end-systole


def split_counts(patients: int, held_out: tuple[int, int] | None = None) -> tuple[int, int, int]:
    """Train/val/test patient counts: `held_out` (val, test) when given, else 10 % and 20 % of the
    patients (at least one of each), the rest train."""
    val, test = held_out or (max(1, int(0.1 * patients + 0.5)), max(1, int(0.2 * patients + 0.5)))
    return patients - val - test, val, test


def _ellipse(yy, xx, cy, cx, ry, rx, angle=0.0):
    """Normalised elliptic radius (< 1 inside) of every pixel; all arguments broadcast."""
    dy, dx = yy - cy, xx - cx
    c, s = math.cos(angle), math.sin(angle)
    u, v = (c * dx + s * dy) / rx, (c * dy - s * dx) / ry
    return np.sqrt(u * u + v * v)


def _harmonic(unit: np.ndarray, k: int, phase: float) -> np.ndarray:
    """cos(k * angle + phase) from the unit complex number of the angle, without a slow arctan2."""
    power = unit
    for _ in range(k - 1):  # repeated products: numpy's complex ** is ~30x slower
        power = power * unit
    return math.cos(phase) * power.real - math.sin(phase) * power.imag


def _paint(img: np.ndarray, mask: np.ndarray, level: float) -> None:
    """Set `img` to `level` where the (broadcast) mask holds: later structures cover earlier ones."""
    np.copyto(img, np.float32(level), where=mask)


def _anatomy(rng: np.random.Generator, size: tuple[int, int]) -> dict:
    """One patient's body layout, heart geometry and tissue contrasts (shared by both frames)."""
    h, w = size
    unit = min(h, w)
    u = rng.uniform
    tissue = dict(air=0.0, muscle=u(0.3, 0.4), fat=u(0.7, 0.95), blood=u(0.8, 1.0), myo=u(0.14, 0.22),
                  liver=u(0.35, 0.5), lung=u(0.03, 0.08), bone=u(0.32, 0.45))
    kinds = ["blood", "liver", "myo", "fat", "muscle", "muscle", "muscle"]
    return dict(
        tissue=tissue,
        body=dict(cy=h * u(0.5, 0.56), cx=w * u(0.46, 0.54), ry=h * u(0.4, 0.5), rx=w * u(0.44, 0.56),
                  angle=u(-0.25, 0.25), wobble=u(0.0, 0.05, 3).tolist(), phase=u(0, 2 * np.pi, 3).tolist()),
        blobs=[dict(cy=h * u(0.25, 0.9), cx=w * u(0.1, 0.9), ry=unit * u(0.03, 0.1), rx=unit * u(0.03, 0.1),
                    angle=u(0, np.pi), level=tissue[kinds[rng.integers(len(kinds))]] * u(0.8, 1.2))
               for _ in range(rng.integers(4, 9))],
        lungs=[dict(dy=unit * u(-0.12, 0.05), dx=unit * u(0.2, 0.3), ry=h * u(0.15, 0.25), rx=w * u(0.08, 0.14)),
               dict(dy=unit * u(-0.3, -0.15), dx=unit * u(-0.35, -0.22), ry=h * u(0.1, 0.18), rx=w * u(0.08, 0.14))],
        liver=dict(dy=unit * u(0.2, 0.35), dx=unit * u(-0.3, -0.15), ry=h * u(0.14, 0.22), rx=w * u(0.18, 0.28)),
        aorta=dict(dx=unit * u(0.02, 0.14), dy=-unit * u(0.07, 0.1), r=unit * u(0.03, 0.045)),
        spine_r=unit * u(0.06, 0.08),
        lv=dict(cy=h * u(0.42, 0.52), cx=w * u(0.52, 0.6), r=unit * u(0.095, 0.12), t=unit * u(0.03, 0.04),
                ecc=u(0.82, 1.0), angle=u(0, np.pi), drift=(unit * u(-0.04, 0.04), unit * u(-0.04, 0.04)),
                wobble=u(0.0, 0.06, 3).tolist(), phase=u(0, 2 * np.pi, 3).tolist(), cavity_apex=u(0.84, 0.92)),
        rv=dict(direction=u(np.radians(140), np.radians(200)), radial=u(0.75, 0.95), tangential=u(1.3, 1.7),
                apex=u(0.6, 0.8), brightness=u(0.85, 1.0)),
        fat_rim=dict(freq=int(rng.integers(2, 5)), phase=u(0, 2 * np.pi), width=unit * u(0.01, 0.025)),
        systole=dict(lv=u(0.6, 0.75), rv=u(0.65, 0.8)),
        span=(u(-0.06, 0.04), u(0.94, 1.1)),
        noise=u(0.03, 0.07),
        bias=rng.normal(0, 0.18, 6).tolist(),
        spacing=dict(slice=float(np.round(u(5, 10) * 2) / 2), fov=u(300, 380)),
    )


def _vary(anat: dict, rng: np.random.Generator, variation: float, size: tuple[int, int]) -> None:
    """Spread patients apart by `variation` (0 = unchanged): heart scale x0.65-1.55 and shift by up
    to 10 % of the image, brighter or darker myocardium, more noise, and a gamma curve of 0.45-2.2
    on the final image (a different sequence or scanner), all drawn per patient."""
    unit = min(size)
    lv, tis = anat["lv"], anat["tissue"]
    scale = math.exp(variation * rng.uniform(-0.43, 0.43))
    lv["r"] *= scale
    lv["t"] *= scale
    lv["cy"] += variation * rng.uniform(-0.1, 0.1) * unit
    lv["cx"] += variation * rng.uniform(-0.1, 0.1) * unit
    tis["myo"] += variation * rng.uniform(-0.06, 0.2)
    anat["noise"] += variation * rng.uniform(0.0, 0.06)
    anat["gamma"] = math.exp(variation * rng.uniform(-0.8, 0.8))


def _background(anat: dict, z: np.ndarray, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Intensities of everything but the heart: body with a fat rim, lungs with vessels, liver,
    spine, descending aorta (a bright disc like the LV) and other organs."""
    tis, b = anat["tissue"], anat["body"]
    unit = min(yy.shape)
    img = np.zeros((len(z), *yy.shape), np.float32)

    theta = (xx - b["cx"]) + 1j * (yy - b["cy"])
    theta /= np.abs(theta) + 1e-6
    outline = 1 + sum(a * _harmonic(theta, k + 2, p) for k, (a, p) in enumerate(zip(b["wobble"], b["phase"])))
    body = _ellipse(yy, xx, b["cy"], b["cx"], b["ry"], b["rx"], b["angle"]) / outline
    _paint(img, body < 1, tis["fat"])
    _paint(img, body < 1 - 0.035 * unit / min(b["ry"], b["rx"]), tis["muscle"])
    inner = body < 0.9
    cy, cx = anat["lv"]["cy"], anat["lv"]["cx"]
    lungs = np.zeros_like(inner)
    for lung in anat["lungs"]:
        lungs |= (_ellipse(yy, xx, cy + lung["dy"], cx + lung["dx"], lung["ry"], lung["rx"]) < 1) & inner
    _paint(img, lungs, tis["lung"])
    vessels = gaussian_filter((rng.random(img.shape, np.float32) < 0.004).astype(np.float32), (0, 0.7, 0.7)) > 0.08
    _paint(img, vessels & lungs, tis["blood"] * 0.8)
    grow = 0.5 + 0.7 * np.clip(z, 0, 1)  # the liver dome rises into the apical slices
    lvr = anat["liver"]
    liver = _ellipse(yy, xx, cy + lvr["dy"], cx + lvr["dx"], lvr["ry"] * grow, lvr["rx"] * grow) < 1
    _paint(img, liver & inner, tis["liver"])
    for blob in anat["blobs"]:
        organ = _ellipse(yy, xx, blob["cy"], blob["cx"], blob["ry"], blob["rx"], blob["angle"]) < 1
        _paint(img, organ & inner, blob["level"])
    sy, sx = b["cy"] + 0.78 * b["ry"], b["cx"]
    spine = _ellipse(yy, xx, sy, sx, anat["spine_r"], anat["spine_r"])
    _paint(img, spine < 1, 0.1)  # dark cortical bone around the vertebral body
    _paint(img, spine < 0.8, tis["bone"])
    ao = anat["aorta"]
    _paint(img, _ellipse(yy, xx, sy - anat["spine_r"] + ao["dy"], sx + ao["dx"], ao["r"], ao["r"]) < 1, tis["blood"])
    return img


def _volume(anat: dict, depth: int, systole: bool, rng: np.random.Generator, size: tuple[int, int]):
    """Image (float32 in [0, 1]) and label (uint8) of one frame, all slices at once (float32, no
    per-slice loop: this is what keeps 20 patients within a couple of seconds)."""
    h, w = size
    unit = min(h, w)
    tis, lv, rvp = anat["tissue"], anat["lv"], anat["rv"]
    z = np.linspace(*anat["span"], depth, dtype=np.float32)[:, None, None]  # 0 = base, 1 = apex
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = _background(anat, z, rng, yy, xx)

    # Heart: LV cavity (half-ellipsoid towards the apex), myocardium, RV crescent, per-slice jitter.
    jitter = rng.normal(0, 0.006 * unit, (2, depth, 1, 1)).astype(np.float32)
    hy = lv["cy"] + lv["drift"][0] * z + jitter[0]
    hx = lv["cx"] + lv["drift"][1] * z + jitter[1]
    dy, dx = yy - hy, xx - hx
    c, s = math.cos(lv["angle"]), math.sin(lv["angle"])
    uu, vv = c * dx + s * dy, (c * dy - s * dx) / lv["ecc"]
    rho = np.sqrt(uu * uu + vv * vv) + 1e-6
    around = (uu + 1j * vv) / rho  # unit complex angle in the LV's own frame, for its shape
    wobble = 1 + sum(a * _harmonic(around, k + 2, p) for k, (a, p) in enumerate(zip(lv["wobble"], lv["phase"])))
    r_lv, t = lv["r"], lv["t"]
    if systole:  # the cavity contracts and the wall thickens, keeping the wall area about constant
        r_es = r_lv * anat["systole"]["lv"]
        t = math.sqrt((r_lv + t) ** 2 - r_lv**2 + r_es**2) - r_es
        r_lv = r_es
    zc = np.clip(z, 0, None)
    cavity = r_lv * np.sqrt(np.clip(1 - (zc / lv["cavity_apex"]) ** 2, 0, None))
    epi_r = np.maximum((r_lv + t) * np.sqrt(np.clip(1 - zc**2, 0, None)), np.where(cavity > 0, cavity + 0.6 * t, 0))
    lv_mask = rho < cavity * wobble
    epi = rho < epi_r * (1 + 0.5 * (wobble - 1))

    direction = rvp["direction"]
    rv_scale = np.sqrt(np.clip(1 - (zc / rvp["apex"]) ** 2, 0, None)) * (anat["systole"]["rv"] if systole else 1.0)
    rv_cy, rv_cx = hy + 0.75 * epi_r * math.sin(direction), hx + 0.75 * epi_r * math.cos(direction)
    radial = np.maximum(rvp["radial"] * (r_lv + t) * rv_scale, 1e-3)
    tangential = np.maximum(rvp["tangential"] * (r_lv + t) * rv_scale, 1e-3)
    rv_mask = (_ellipse(yy, xx, rv_cy, rv_cx, tangential, radial, direction) < 1) & ~epi
    wall = 0.018 * unit  # the RV free wall: dark like myocardium, but background
    rv_wall = _ellipse(yy, xx, rv_cy, rv_cx, tangential + wall, radial + wall, direction) < 1
    rv_wall &= ~rv_mask & ~epi & (rv_scale > 0)

    r_img = np.sqrt(dx * dx + dy * dy) + 1e-6
    toward = (dx + 1j * dy) / r_img  # unit complex angle in the image frame
    rim = anat["fat_rim"]  # patchy epicardial fat, bright like blood on bSSFP
    fat = (rho < epi_r + rim["width"]) & ~epi & ~rv_mask & ~rv_wall & (epi_r > 0)
    _paint(img, fat & (_harmonic(toward, rim["freq"], rim["phase"]) > 0.2), tis["fat"])
    _paint(img, rv_wall, tis["myo"])
    _paint(img, rv_mask, tis["blood"] * rvp["brightness"])
    _paint(img, epi, tis["myo"])
    _paint(img, lv_mask, tis["blood"])
    papillary = np.zeros_like(lv_mask)  # dark muscles inside the cavity, labeled LV as in ACDC
    for angle in (lv["angle"] + 1.0, lv["angle"] + 2.2):
        py, px = hy + 0.6 * cavity * math.sin(angle), hx + 0.6 * cavity * math.cos(angle)
        papillary |= (yy - py) ** 2 + (xx - px) ** 2 < (0.14 * cavity) ** 2
    _paint(img, papillary & lv_mask & (zc > 0.15), tis["myo"])
    # Base: the myocardial ring opens towards the outflow tract; the blood there is unlabeled.
    outflow = (_harmonic(toward, 1, 0.6 - direction) > 0.55) & epi & ~lv_mask & (z < 0.1)
    _paint(img, outflow, tis["blood"])

    label = np.zeros((depth, h, w), np.uint8)
    label[rv_mask] = 1
    label[epi & ~outflow] = 2
    label[lv_mask] = 3

    # Acquisition: texture, partial-volume blur, smooth bias field, Rician noise, per-volume min-max.
    texture = gaussian_filter(rng.standard_normal(img.shape, np.float32), (0, 1.5 * unit / 96, 1.5 * unit / 96))
    img *= 1 + 0.07 / (texture.std() + 1e-6) * texture
    img = gaussian_filter(img, (0, 0.6 * unit / 96, 0.6 * unit / 96))
    ny, nx = (yy / h - 0.5) * 2, (xx / w - 0.5) * 2
    c = anat["bias"]
    img *= np.exp(c[0] * nx + c[1] * ny + c[2] * nx * ny + c[3] * nx**2 + c[4] * ny**2 + c[5] * z)
    sigma = np.float32(anat["noise"] * tis["blood"])
    real = img + sigma * rng.standard_normal(img.shape, np.float32)
    imag = sigma * rng.standard_normal(img.shape, np.float32)
    img = np.sqrt(real * real + imag * imag)
    img = (img - img.min()) / (img.max() - img.min())
    if anat.get("gamma", 1.0) != 1.0:
        img = img ** np.float32(anat["gamma"])
    return img.astype(np.float32), label


def _write_h5(path: Path, image: np.ndarray, label: np.ndarray) -> None:
    """One SSL4MIS h5 file with `image` and `label`."""
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=image)
        f.create_dataset("label", data=label)


def write_phantom(out: Path, patients: int = 20, seed: int = 0, slices: tuple[int, int] = (8, 12),
                  size: tuple[int, int] = (96, 96), *, variation: float = 0.0,
                  held_out: tuple[int, int] | None = None) -> Path:
    """Write a phantom dataset of `patients` patients (two frames each) to the new folder `out`.

    Volumes have between `slices[0]` and `slices[1]` slices (inclusive) of `size` (H, W) pixels;
    `variation` in [0, 1] widens the differences between patients (module docstring); `held_out`
    (val, test) sets how many of the last patients are val and test ones (`split_counts`).
    The settings are recorded under `phantom` in `mona.json`.
    Training patients are written as shuffled 2D slices grouped by patient (so the first rows of
    `train_slices.list` are the first patients, the labeled budget), val/test patients as 3D volumes.
    The folder is built beside `out` and renamed into place, so `out` is complete or absent.
    """
    out = Path(out)
    if not 2 <= slices[0] <= slices[1]:
        raise MonaError(f"slice range must satisfy 2 <= min <= max, got {slices}", out)
    if min(size) < 32:
        raise MonaError(f"image size must be at least 32x32, got {size}", out)
    if not 0 <= variation <= 1:
        raise MonaError(f"variation must be in [0, 1], got {variation}", out)
    n_train, n_val, n_test = split_counts(patients, held_out)
    if min(n_train, n_val, n_test) < 1:
        raise MonaError(f"the phantom needs at least one train, val and test patient; {patients} patients with "
                        f"{n_val} val and {n_test} test leave {n_train} to train", out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MonaError("already exists and is not empty; choose a new folder", out)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "data" / "slices").mkdir(parents=True)
        lists = {"train_slices": [], "val": [], "test": []}
        cases = {}
        for p in range(patients):
            rng = np.random.default_rng([seed, p])
            anat = _anatomy(rng, size)
            if variation:
                _vary(anat, np.random.default_rng([seed, p, 1]), variation, size)
            depth = int(rng.integers(slices[0], slices[1] + 1))
            split = "train_slices" if p < n_train else "val" if p < n_train + n_val else "test"
            spacing = round(anat["spacing"]["fov"] / max(size), 4)
            for frame in FRAMES:
                case = f"phantom{p + 1:03d}_{frame}"
                image, label = _volume(anat, depth, frame == "frame02", rng, size)
                cases[case] = {"spacing": [anat["spacing"]["slice"], spacing, spacing],
                               "original_shape": [depth, *size]}
                if split == "train_slices":
                    for i in rng.permutation(depth):
                        name = f"{case}_slice_{i}"
                        _write_h5(tmp / "data" / "slices" / f"{name}.h5", image[i], label[i])
                        lists[split].append(name)
                else:
                    _write_h5(tmp / "data" / f"{case}.h5", image, label)
                    lists[split].append(case)
        for split, names in lists.items():
            (tmp / f"{split}.list").write_text("".join(f"{n}\n" for n in names))
        meta = {"name": "phantom", "classes": CLASSES, "num_classes": len(CLASSES), "modality": "MRI",
                "normalisation": "minmax", "slicing_axis": 0, "cases": cases,
                "phantom": {"patients": patients, "seed": seed, "slices": list(slices), "size": list(size),
                            "variation": variation, "held_out": [n_val, n_test]}}
        (tmp / "mona.json").write_text(json.dumps(meta, indent=1))
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
