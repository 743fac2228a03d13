"""The README's Python example runs as written (on a tiny phantom, with a tiny training length)."""

import re
from pathlib import Path

import mona
from mona.data.phantom import write_phantom

README = Path(__file__).resolve().parents[1] / "README.md"
TINY = ["train.iterations=2", "train.val_every=2", "data.image_size=32", "data.batch_labeled=2",
        "data.batch_unlabeled=2", "train.device=cpu", "train.progress=false", "train.channels_last=false"]


def test_python_example_runs_as_written(tmp_path, monkeypatch, capsys):
    (example,) = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    monkeypatch.chdir(tmp_path)
    write_phantom(tmp_path / "mona-demo" / "data", patients=4, size=(32, 32), slices=(3, 4))
    load_config = mona.load_config
    monkeypatch.setattr(mona, "load_config", lambda sources, overrides: load_config(sources, [*overrides, *TINY]),
                        raising=False)
    exec(compile(example, "README.md", "exec"), {})
    line = capsys.readouterr().out.strip().splitlines()[-1]
    name, dice = line.split()[0], line.split()[-1]
    assert name.endswith(".h5") and ", 32, 32)" in line and 0.0 <= float(dice) <= 1.0
    assert (tmp_path / "runs" / "api" / "best.pt").is_file()
