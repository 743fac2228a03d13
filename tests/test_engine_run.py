"""Training on from a finished run (`mona train --init RUN`, `init=RUN`; engine/run.py): any method
starts from the run's best model, every network it shares with that run loaded, and says so."""

import json
import shutil

import pytest
import torch
import yaml

import mona
from mona.cli.main import main
from mona.config import load_config
from mona.data.phantom import write_phantom
from mona.engine.run import carry_networks, seen_val_cases
from mona.engine.run_folder import read_stages
from mona.methods.abd import ABDSelfTrain
from mona.methods.mona import MonaFinetune
from mona.methods.supervised import Supervised

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--device", "cpu", "--no-progress", "--labeled", "1", "--iterations", "1", "data.image_size=32",
        "train.channels_last=false", "data.batch_labeled=2", "data.batch_unlabeled=2", "train.val_every=1",
        "mona.finetune_batch_labeled=2", "mona.finetune_batch_unlabeled=2", "mona.num_queries=16",
        "mona.num_negatives=16", "mona.bank_size=256", "mona.background_bank_size=256", "mona.patch_size=16"]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return write_phantom(tmp_path_factory.mktemp("init") / "ds", patients=4, size=(32, 32), slices=(3, 4))


@pytest.fixture(scope="module")
def source(phantom, tmp_path_factory):
    """A finished mean-teacher run (2 iterations), the run the tests train on from."""
    out = tmp_path_factory.mktemp("source") / "mt"
    assert main(["train", "--data", str(phantom), "--out", str(out), "--method", "mean_teacher", *TINY,
                 "--iterations", "2"]) == 0
    return out


def error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def first_step_weights(monkeypatch, method_class, networks):
    """What `method_class`'s networks hold when its first training step begins (filled in by training)."""
    captured = {}
    original = method_class.training_step

    def capture(self, *args):
        if not captured:
            for name in networks:
                captured.update({f"{name}.{k}": v.clone() for k, v in getattr(self, name).state_dict().items()})
        return original(self, *args)

    monkeypatch.setattr(method_class, "training_step", capture)
    return captured


def source_line(best, loaded, rest=""):
    state = torch.load(best, weights_only=True)
    return (f"init: loaded {loaded} from {best} (mean_teacher run, iteration {state['iteration']}, val Dice "
            f"{state['metrics']['best']['dice']:.4f}){rest}")


def test_a_two_stage_method_trains_its_last_stage_from_the_runs_student_and_teacher(phantom, source, tmp_path,
                                                                                  monkeypatch, capsys):
    """MONA from a mean-teacher run: stage 1 is skipped, stage 2 starts from the run's student and
    teacher (its representation head is new), and config.yaml records the checkpoint."""
    captured = first_step_weights(monkeypatch, MonaFinetune, ("model", "teacher"))
    out = tmp_path / "mona"
    capsys.readouterr()
    assert main(["train", "--data", str(phantom), "--out", str(out), "--method", "mona", "--init", str(source),
                 *TINY]) == 0
    best = source / "best.pt"
    assert source_line(best, "student, teacher", "; not in that run: rep_head, teacher_rep_head (set as when a stage "
                       "starts from an earlier student); stage pretrain skipped: this model takes its place") in \
        capsys.readouterr().out.splitlines()
    saved = torch.load(best, weights_only=True)["method"]
    assert captured.keys() == {key for key in saved if key.startswith(("model.", "teacher."))}
    assert all(torch.equal(captured[key], saved[key]) for key in captured)
    assert any(not torch.equal(saved[f"teacher.{key[6:]}"], saved[key]) for key in saved if key.startswith("model."))
    assert [stage["name"] for stage in read_stages(out)] == ["finetune"] and not (out / "pretrain").exists()
    assert yaml.safe_load((out / "config.yaml").read_text())["init"] == str(best)
    assert "init: loaded student, teacher from" in (out / "train.log").read_text()


def test_the_loaded_teacher_is_kept_without_the_ema_warm_up(phantom, source, tmp_path, monkeypatch):
    """From scratch, the first EMA update copies the student into the teacher (decay 0: the warm-up);
    from --init, the teacher is a trained one and moves at the configured decay from the first step."""
    from mona.engine import trainer as trainer_module

    decays = []
    original = trainer_module.ema_update

    def record(teacher, student, decay):
        decays.append(decay)
        original(teacher, student, decay)

    monkeypatch.setattr(trainer_module, "ema_update", record)
    for name, init in (("scratch", []), ("init", ["--init", str(source)])):
        assert main(["train", "--data", str(phantom), "--out", str(tmp_path / name), "--method", "mean_teacher",
                     *init, *TINY, "mean_teacher.ema=0.95"]) == 0
    assert decays == [0.0, 0.95]


def test_the_python_api_trains_on_from_a_run_and_records_its_origin(phantom, source, tmp_path, monkeypatch):
    """`mona.load_config(..., ["init=RUN"])` + `mona.train`, with both training patients labeled: the same
    code path; the origin travels in the checkpoint."""
    captured = first_step_weights(monkeypatch, Supervised, ("model",))
    config = mona.load_config([], [f"data.root={phantom}", f"out={tmp_path / 'sup'}", "method=supervised",
                                   f"init={source}", "data.labeled=2", "train.iterations=1", "train.val_every=1",
                                   "data.image_size=32", "data.batch_labeled=2", "data.batch_unlabeled=2",
                                   "train.device=cpu", "train.progress=false", "train.channels_last=false"])
    mona.train(config)
    saved = torch.load(source / "best.pt", weights_only=True)["method"]
    assert captured and all(torch.equal(value, saved[key]) for key, value in captured.items())
    state = torch.load(tmp_path / "sup" / "best.pt", weights_only=True)
    assert state["config"]["init"] == str(source / "best.pt") and state["config"]["data"]["labeled"] == "2"


def test_resume_keeps_the_origin(phantom, source, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(phantom), "--out", str(out), "--method", "supervised", "--init", str(source),
                 *TINY]) == 0
    assert main(["train", "--resume", str(out), "--iterations", "2", "--no-progress"]) == 0
    assert torch.load(out / "last.pt", weights_only=True)["iteration"] == 2
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--init", str(phantom)]) == 2
    assert error_line(capsys) == (f"mona train: error: {out / 'config.yaml'}: --resume continues a run as it was "
                                  f"started: init is {str(source / 'best.pt')!r} there, not {str(phantom)!r} (start a "
                                  "new run with another --out)")


def test_a_run_of_another_class_count_is_refused_before_any_folder(phantom, source, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(phantom), "--out", str(out), "--init", str(source), *TINY,
                 "data.num_classes=5"]) == 2
    assert error_line(capsys) == (f"mona train: error: {source / 'best.pt'}: --init: this run segments 4 classes and "
                                  f"the dataset {phantom} 5: start from a run trained on the same classes")
    assert not out.exists()


def test_an_unfinished_run_or_a_folder_that_is_no_run_is_refused(phantom, source, tmp_path, capsys):
    unfinished = shutil.copytree(source, tmp_path / "unfinished")
    (unfinished / "stages.json").write_text(json.dumps([{"name": "", "iterations": 5}]))
    out = tmp_path / "run"
    for init, expected in (
        (unfinished, f"{unfinished}: --init starts from a finished run, and this one is unfinished (training at "
                     f"iteration 2 of 5): finish it (mona train --resume {unfinished}), or start from its checkpoint "
                     f"so far (--init {unfinished / 'best.pt'})"),
        (phantom, f"{phantom}: --init: not a run folder (no config.yaml or checkpoint); give the folder `mona train "
                  "--out` wrote, or a checkpoint file"),
        (tmp_path / "absent", f"{tmp_path / 'absent'}: --init: no such run folder or checkpoint file"),
    ):
        assert main(["train", "--data", str(phantom), "--out", str(out), "--init", str(init), *TINY]) == 2
        assert error_line(capsys) == f"mona train: error: {expected}"
        assert not out.exists()
    assert main(["train", "--data", str(phantom), "--out", str(out), "--init", str(unfinished / "best.pt"),
                 *TINY]) == 0  # its checkpoint so far, given as a file


@pytest.mark.parametrize("overrides, message", [
    (["method=mona", "mona.init_from=x"], "init and mona.init_from both say where training starts: give one (--init "
     "RUN starts from a finished run's best model, mona.init_from from another run's stage 1)"),
    (["method=mona", "mona.stage=pretrain"], "init starts MONA's stage 2 from a finished run, and "
     "mona.stage=pretrain trains only stage 1: drop one of them"),
])
def test_settings_that_contradict_init_are_refused(overrides, message):
    with pytest.raises(mona.MonaError) as info:
        load_config([], ["init=runs/x", *overrides])
    assert str(info.value) == message


def test_carry_networks_loads_the_networks_of_the_same_name_and_shape():
    """ABD from an ABD model: both students and the teacher; a head of another shape stays as it was."""
    config = load_config([], ["method=abd"]).abd
    torch.manual_seed(0)
    saved = ABDSelfTrain(4, config).weights()
    torch.manual_seed(1)
    target = ABDSelfTrain(4, config)
    assert carry_networks(target, saved, "x.pt") == (["teacher", "model_2"], [])
    carried = {key: value for key, value in target.weights().items() if not key.startswith("model.")}
    assert all(torch.equal(value, saved[key]) for key, value in carried.items())
    mona_config = load_config([], ["method=mona"]).mona
    finetune = MonaFinetune(4, mona_config)
    saved = {**finetune.weights(), "rep_head.project.3.weight": torch.zeros(3, 3)}
    before = finetune.rep_head.state_dict()["project.3.weight"].clone()
    assert carry_networks(finetune, saved, "x.pt") == (["teacher", "teacher_rep_head"], ["rep_head"])
    assert torch.equal(finetune.rep_head.state_dict()["project.3.weight"], before)


def test_val_cases_that_trained_the_run_are_named(phantom):
    """A budget of 1 patient: patient 1 trained with its masks, patient 2 as unlabeled scans."""
    state = {"config": {"data": {"root": str(phantom), "labeled": "1"}}}
    val = ["phantom001_frame02", "phantom002_frame01", "phantom003_frame01"]
    assert seen_val_cases(state, val) == [
        f"note: val cases trained the run this one starts from (its dataset {phantom}): 1 with their masks "
        "(phantom001_frame02), 1 as unlabeled scans (phantom002_frame01); val Dice, and the best checkpoint chosen "
        "by it, may overstate how the model segments unseen scans"]
    assert seen_val_cases(state, ["phantom003_frame01"]) == []
