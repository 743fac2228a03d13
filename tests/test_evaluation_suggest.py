"""`mona suggest`: the unlabeled training cases ranked by expected Dice, one per patient first, into
suggest.csv and a page; the cases of the labeled budget are never suggested."""

import csv
import re

import pytest

from mona.cli.main import main
from mona.evaluation.suggest import diverse_order

pytestmark = pytest.mark.usefixtures("one_thread")


def test_each_patients_worst_case_comes_before_any_second_case():
    rows = [{"case": case, "quality": q} for case, q in (("p1_frame01", 0.1), ("p1_frame02", 0.2), ("p2_frame01", 0.5),
                                                         ("p3_frame07", 0.4), ("scan9", 0.3), ("p2_frame02", 0.6))]
    assert [row["case"] for row in diverse_order(rows)] == ["p1_frame01", "scan9", "p3_frame07", "p2_frame01",
                                                            "p1_frame02", "p2_frame02"]


def test_suggest_ranks_the_unlabeled_cases_into_a_csv_and_a_page(teacher_run, tmp_path, capsys):
    root, run = teacher_run
    out = tmp_path / "next"
    assert main(["suggest", str(run), "-o", str(out), "--n", "3", "--no-progress"]) == 0
    rows = list(csv.DictReader(open(out / "suggest.csv")))
    assert [row["rank"] for row in rows] == ["1", "2", "3"] and list(rows[0])[:4] == ["rank", "case", "patient",
                                                                                         "quality"]
    # the budget is the first 2 training patients; 3 and 4 are unlabeled, one frame of each comes first
    assert {row["patient"] for row in rows[:2]} == {"phantom003", "phantom004"}
    assert all(row["case"].startswith(row["patient"] + "_frame") for row in rows)
    assert float(rows[0]["quality"]) <= float(rows[1]["quality"])
    assert all(row["agreement"] and row["tta"] and row["teacher"] for row in rows)  # every part of a suggestion
    text = (out / "index.html").read_text()
    assert re.findall(r"<h3>([^:<]+): expected Dice", text) == [row["case"] for row in rows]
    assert "<figcaption>uncertainty</figcaption>" in text and "<figcaption>truth</figcaption>" not in text
    assert "3 suggestions" in capsys.readouterr().out


def test_suggest_refuses_an_output_that_is_a_file(teacher_run, tmp_path, capsys):
    _, run = teacher_run
    (tmp_path / "file").write_text("")
    assert main(["suggest", str(run), "-o", str(tmp_path / "file")]) == 2
    assert "output folder is a file" in capsys.readouterr().err
