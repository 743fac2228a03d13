"""Run folders are never mixed, lost or silently reused (one test per scenario, through the CLI)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mona.cli.main import main
from mona.data.phantom import write_phantom
from mona.engine.run import run_checkpoint
from mona.engine.run_folder import read_stages, run_root, stage_folders

PUBLISHED_GRID_RUNS = Path(__file__).resolve().parents[1] / "docs" / "results" / "2026-11-27-acdc-cpu-small" / "runs"

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--device", "cpu", "--no-progress", "data.image_size=32", "train.channels_last=false",
        "data.batch_labeled=2", "data.batch_unlabeled=2", "train.log_every=1"]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return write_phantom(tmp_path_factory.mktemp("runfolder") / "ds", patients=4, size=(32, 32), slices=(3, 4))


def train_args(phantom, out, *extra, method="mean_teacher", iterations=2):
    return ["train", "--data", str(phantom), "--out", str(out), "--method", method, "--labeled", "1",
            "--iterations", str(iterations), "train.val_every=2", *TINY, *extra]


def error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


@pytest.fixture(scope="module")
def finished_run(phantom, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(train_args(phantom, out)) == 0
    return out


def copy_run(finished_run, tmp_path):
    return shutil.copytree(finished_run, tmp_path / "run")


def test_run_folder_records_its_stages_environment_and_log(finished_run):
    assert read_stages(finished_run) == [{"name": "", "iterations": 2}]
    environment = json.loads((finished_run / "environment.json").read_text())
    assert environment[-1]["torch"] == torch.__version__ and environment[-1]["precision"] in ("fp32", "bf16")
    assert {"mona", "commit", "cpu", "cpu_flags", "threads", "device"} <= environment[-1].keys()
    log = (finished_run / "train.log").read_text()
    assert "val Dice" in log and "done:" in log and "\r" not in log  # the console lines, no progress bars
    config = yaml.safe_load((finished_run / "config.yaml").read_text())
    assert os.path.isabs(config["data"]["root"]) and os.path.isabs(config["out"])
    assert not (finished_run / ".lock").exists()


def test_a_new_run_into_a_finished_one_is_refused(finished_run, phantom, capsys):
    before = (finished_run / "metrics.jsonl").read_text()
    assert main(train_args(phantom, finished_run)) == 2
    line = error_line(capsys)
    assert "not empty" in line and "--resume" in line and "--overwrite" in line
    assert (finished_run / "metrics.jsonl").read_text() == before


def test_overwrite_replaces_the_earlier_run(finished_run, phantom, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path)
    (run / "eval_test_best").mkdir(exist_ok=True)
    assert main(train_args(phantom, run, "--overwrite", method="supervised", iterations=1)) == 0
    assert "deleted the earlier run" in capsys.readouterr().out
    assert not (run / "eval_test_best").exists()
    assert torch.load(run / "last.pt", weights_only=True)["method_name"] == "supervised"


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(phantom, tmp_path, capsys):
    folder = tmp_path / "documents"
    folder.mkdir()
    (folder / "thesis.tex").write_text("keep me")
    assert main(train_args(phantom, folder, "--overwrite")) == 2
    assert "not" in error_line(capsys) and (folder / "thesis.tex").read_text() == "keep me"


def test_a_folder_in_use_by_a_live_process_is_refused(finished_run, phantom, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".lock").write_text(f"{sleeper.pid} {os.uname().nodename}\n")
        assert main(["train", "--resume", str(run), "--iterations", "3"]) == 2
        assert f"in use by process {sleeper.pid}" in error_line(capsys)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert main(["train", "--resume", str(run), "--iterations", "3"]) == 0  # its lock is now stale
    assert "taking over the lock of a process that is gone" in capsys.readouterr().out
    assert torch.load(run / "last.pt", weights_only=True)["iteration"] == 3
    assert not (run / ".lock").exists()


@pytest.mark.parametrize("flag, key", [(["--method", "supervised"], "method"), (["--labeled", "2"], "data.labeled"),
                                       (["data.image_size=64"], "data.image_size"), (["--seed", "3"], "train.seed"),
                                       (["--iterations", "1"], "may add iterations, not remove them")])
def test_resume_refuses_another_setup(finished_run, tmp_path, capsys, flag, key):
    run = copy_run(finished_run, tmp_path)
    assert main(["train", "--resume", str(run), *flag]) == 2
    assert key in error_line(capsys)


def test_resume_may_add_iterations_from_any_folder(finished_run, tmp_path, monkeypatch):
    run = copy_run(finished_run, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["train", "--resume", str(run), "--iterations", "4"]) == 0
    assert torch.load(run / "last.pt", weights_only=True)["iteration"] == 4
    assert len(json.loads((run / "environment.json").read_text())) == 2  # the start and the resume


def test_a_stage_folder_maps_to_its_run(tmp_path):
    run = tmp_path / "run"
    (run / "pretrain").mkdir(parents=True)
    (run / "config.yaml").write_text("method: mona\n")
    (run / "stages.json").write_text(json.dumps([{"name": "pretrain"}, {"name": "finetune"}]))
    assert run_root(run / "pretrain") == run and run_root(run) == run
    assert run_checkpoint(run / "pretrain", "best") == run / "finetune" / "best.pt"


def test_a_moved_dataset_is_named_with_the_way_to_point_at_it(finished_run, phantom, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path)
    moved = tmp_path / "moved"
    shutil.copytree(phantom, moved)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"]["root"] = str(tmp_path / "gone")
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--resume", str(run), "--iterations", "3"]) == 2
    line = error_line(capsys)
    assert str(tmp_path / "gone") in line and "--data" in line
    assert main(["train", "--resume", str(run), "--iterations", "3", "--data", str(moved)]) == 0
    assert main(["evaluate", str(run), "--split", "val", "--data", str(moved)]) == 0


def test_stale_temporary_files_are_removed_on_resume(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    (run / ".last.pt.1234abcd.tmp.pt").write_bytes(b"half a checkpoint")
    assert main(["train", "--resume", str(run), "--iterations", "3"]) == 0
    assert not list(run.glob(".*.tmp*"))


@pytest.mark.parametrize("override, key", [
    ("optim.lr=-1", "optim.lr"), ("data.image_size=0", "data.image_size"),
    ("data.batch_labeled=0", "data.batch_labeled"),
    ("train.val_every=0", "train.val_every"), ("mona.queue_size=0", "mona.queue_size"),
    ("train.iterations=-5", "train.iterations"), ("train.iterations=0", "train.iterations"), ("mona.ema=2", "mona.ema"),
    ("mona.patch_size=1000", "mona.patch_size"), ("mean_teacher.rampup=1.5", "mean_teacher.rampup"),
    ("train.checkpoint_every=-1", "train.checkpoint_every"), ("mona.eqv_pixels=all", "mona.eqv_pixels"),
])
def test_bad_config_values_name_the_key_and_leave_no_folder(phantom, tmp_path, capsys, override, key):
    out = tmp_path / "run"
    assert main(train_args(phantom, out, "mona.patch_size=16", override, method="mona")) == 2
    line = error_line(capsys)
    assert key in line and ("range" in line or "one of" in line)
    assert not out.exists()


def test_overrides_may_stand_anywhere_among_the_flags(phantom, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--data", str(phantom), "optim.lr=0.02", "--labeled", "1", "optim.momentum=0.8",
            "--out", str(out), "--method", "supervised", "--iterations", "1", *TINY]
    assert main(args) == 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["optim"]["lr"] == 0.02 and config["optim"]["momentum"] == 0.8


@pytest.mark.parametrize("verb", ["train", "evaluate", "predict"])
def test_an_output_path_that_is_a_file_is_one_clear_error(finished_run, phantom, tmp_path, capsys, verb):
    blocker = tmp_path / "FILE"
    blocker.write_text("")
    if verb == "train":
        args = train_args(phantom, blocker)
    elif verb == "predict":
        args = ["predict", "-m", str(finished_run), "-i", str(phantom / "data"), "-o", str(blocker), "--no-progress"]
    else:
        args = ["evaluate", "--pred", str(phantom / "data"), "--truth", str(phantom / "data"), "--num-classes", "4",
                "--json", str(blocker / "x.json")]
    assert main(args) == 2
    assert str(blocker) in error_line(capsys)


def test_gpus_beyond_the_machine_are_refused(phantom, tmp_path, capsys):
    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine has two GPUs")
    assert main(train_args(phantom, tmp_path / "run", "--gpus", "2")) == 2
    assert "--gpus 2" in error_line(capsys) and not (tmp_path / "run").exists()


def test_ctrl_c_exits_130_with_a_command_that_works(phantom, tmp_path):
    """A real SIGINT to a real `mona train`: it saves, exits 130, and its hint resumes the run."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "mona", *train_args(phantom, out, "train.checkpoint_every=0", iterations=100000)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    metrics = out / "metrics.jsonl"
    for _ in range(600):
        if metrics.is_file() and metrics.read_text().count("\n") >= 2:
            break
        subprocess.run(["sleep", "0.1"])
    process.send_signal(2)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    hint = err.strip().splitlines()[-1].split("Continue with: ")[1]
    assert hint == f"mona train --resume {out}"
    stopped = torch.load(out / "last.pt", weights_only=True)["iteration"]
    assert stopped >= 2
    assert main(hint.split()[1:] + ["--iterations", str(stopped + 1)]) == 0
    assert torch.load(out / "last.pt", weights_only=True)["iteration"] == stopped + 1


def test_help_names_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default supervised" in text and "default all" in text


def test_published_run_folders_still_load():
    """Run folders written before stages.json (docs/results/) map to the same stage folders."""
    from mona.experiments.runs import load_run

    mona_run, supervised_run = PUBLISHED_GRID_RUNS / "mona_l7_s0", PUBLISHED_GRID_RUNS / "supervised_l7_s0"
    assert [p.name for p in stage_folders(mona_run)] == ["pretrain", "finetune"]
    assert stage_folders(supervised_run) == [supervised_run]
    assert run_root(mona_run / "finetune") == mona_run
    assert run_checkpoint(mona_run, "best") == mona_run / "finetune" / "best.pt"
    loaded = load_run(mona_run)
    assert loaded["train_seconds"] > 0 and loaded["summaries"]["best"]["cases"] == 40


def test_a_run_saved_before_a_key_existed_resumes_as_it_ran(tmp_path):
    """The published grid's MONA runs predate the spec-faithful switches: read back, they keep the
    settings they trained with, not today's defaults."""
    from mona.config import ADDED_KEYS
    from mona.engine.run import resume_config

    published = PUBLISHED_GRID_RUNS / "mona_l7_s0"
    run = tmp_path / "run"
    shutil.copytree(published, run)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert not set(saved["mona"]) & {key.split(".")[1] for key in ADDED_KEYS}
    config = resume_config(run)
    for dotted, earlier in ADDED_KEYS.items():
        assert getattr(config.mona, dotted.split(".")[1]) == earlier


def test_a_saved_run_config_replays_the_keys_it_predates(phantom, tmp_path):
    """#46.12: `mona train --config RUN/config.yaml` reads an archived run's config as `--resume` does:
    the keys added after it trained take the values it trained with, not today's defaults."""
    from mona.config import ADDED_KEYS

    published = PUBLISHED_GRID_RUNS / "mona_l7_s0" / "config.yaml"
    out = tmp_path / "replay"
    assert main(["train", "--config", str(published), "--data", str(phantom), "--out", str(out), "--method",
                 "supervised", "--labeled", "1", "--iterations", "1", "train.val_every=1", *TINY]) == 0
    replayed = yaml.safe_load((out / "config.yaml").read_text())
    assert {key: replayed["mona"][key.split(".")[1]] for key in ADDED_KEYS} == ADDED_KEYS
    assert replayed["mona"]["rampup"] == 0.2 and replayed["train"]["amp"] is True  # the archived values


def test_init_from_is_refused_for_a_method_that_ignores_it(phantom, tmp_path, capsys):
    """#46.6: only MONA reads mona.init_from; another method is refused before any folder is made."""
    out = tmp_path / "run"
    assert main(train_args(phantom, out, f"mona.init_from={tmp_path}", method="supervised")) == 2
    assert error_line(capsys) == ("mona train: error: mona.init_from starts MONA's stage 2 from another run's stage 1; "
                                  "method supervised does not read it: remove mona.init_from (--init RUN starts any "
                                  "method from a finished run)")
    assert not out.exists()


def test_the_python_api_is_told_its_own_way_to_continue_or_replace(finished_run, phantom):
    """#46.11: `mona.train` into a used folder names its keywords, not only the command's flags."""
    import mona

    config = mona.load_config([], [f"data.root={phantom}", f"out={finished_run}", "train.device=cpu"])
    with pytest.raises(mona.MonaError) as info:
        mona.train(config)
    assert str(info.value) == (f"{finished_run}: the run folder is not empty: continue it with --resume (Python: "
                               "mona.train(config, resume=True)), replace it with --overwrite (overwrite=True; "
                               "deletes the earlier run's checkpoints and logs), or choose another --out (config.out)")
