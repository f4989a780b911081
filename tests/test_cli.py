"""Bad input ends in one clear line and a non-zero exit, never a traceback."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from .conftest import run_env


def selfsup_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "selfsup", *args], capture_output=True, text=True, env=run_env(),
                          cwd=cwd, timeout=300)


def assert_one_line_error(r, *needles):
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("selfsup: error:")
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def corrupt_folder(tmp_path):
    d = tmp_path / "corrupt"
    d.mkdir()
    (d / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (d / "b.jpg").write_bytes(b"")
    (d / "notes.txt").write_text("hello")
    return d


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(selfsup_cli("pretrain", "--data", str(tmp_path / "empty"), "--budget", "1steps",
                                      "--out", str(tmp_path / "r")), str(tmp_path / "empty"))


def test_folder_of_corrupt_files(tmp_path, corrupt_folder):
    r = selfsup_cli("pretrain", "--data", str(corrupt_folder), "--budget", "1steps", "--out", str(tmp_path / "r"))
    assert_one_line_error(r, str(corrupt_folder), "no readable images")
    r = selfsup_cli("pretrain", "--data", str(corrupt_folder), "--strict", "--budget", "1steps",
                    "--out", str(tmp_path / "r"))
    assert_one_line_error(r, "--strict")


def test_unknown_method_dataset_encoder(tmp_path):
    assert_one_line_error(selfsup_cli("pretrain", "--method", "simclrr", "--data", "digits", "--budget", "1steps"),
                          "simclrr", "rotation", "simclr")
    assert_one_line_error(selfsup_cli("pretrain", "--data", "imagenet-xl", "--budget", "1steps"),
                          "imagenet-xl", "fashion-mnist")
    assert_one_line_error(selfsup_cli("pretrain", "--data", "digits", "--encoder", "vgg", "--budget", "1steps",
                                      "--out", str(tmp_path / "r")), "vgg", "resnet18")


def test_malformed_budget_and_flags(tmp_path):
    assert_one_line_error(selfsup_cli("pretrain", "--data", "digits", "--budget", "ten minutes"), "budget", "10m")
    assert_one_line_error(selfsup_cli("pretrain", "--batch-size", "many"), "--batch-size")
    assert_one_line_error(selfsup_cli("pretrain", "--set", "train.nope=1"), "nope")
    assert_one_line_error(selfsup_cli("eval", str(tmp_path)), "not a run folder")
    assert_one_line_error(selfsup_cli("eval", str(tmp_path), "--labels", "200%"), "200%")


def test_missing_config_and_unlabelled_eval(tmp_path):
    assert_one_line_error(selfsup_cli("pretrain", "--config", str(tmp_path / "nope.yaml")), "nope.yaml")
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(8):
        Image.new("L", (12, 12), color=i * 30).save(imgs / f"{i}.png")
    run = tmp_path / "r"
    ok = selfsup_cli("pretrain", "--data", str(imgs), "--image-size", "8", "--width", "4", "--budget", "1steps",
                     "--batch-size", "4", "--out", str(run), "--device", "cpu")
    assert ok.returncode == 0, ok.stderr
    assert_one_line_error(selfsup_cli("eval", str(run)), "no labels")


def test_list_and_help():
    r = selfsup_cli("list", "methods")
    import selfsup.methods  # noqa: F401  (registers)
    from selfsup.registry import METHODS

    image = [name for name, cls in METHODS.items() if cls.modality == "image"]
    assert {"rotation", "simclr", "jigsaw", "inpainting", "moco", "mae", "byol", "dino"} <= set(image)
    assert r.returncode == 0 and f"image: {', '.join(image)}" in r.stdout
    assert selfsup_cli("--help").returncode == 0


def test_bad_values_found_by_a_new_user_are_one_line(tmp_path):
    """From a 31-case bad-input run: these used to end in 17-24 line tracebacks."""
    base = ["pretrain", "--data", "digits", "--budget", "1steps", "--device", "cpu"]
    assert_one_line_error(selfsup_cli(*base, "--lr", "-1", "--out", str(tmp_path / "a")), "train.lr", "--lr")
    (tmp_path / "file").write_text("x")
    assert_one_line_error(selfsup_cli(*base, "--out", str(tmp_path / "file")), str(tmp_path / "file"), "--out")
    run = tmp_path / "empty-config"
    run.mkdir()
    (run / "config.yaml").write_text("")
    assert_one_line_error(selfsup_cli("eval", str(run)), "config.yaml", "empty")
    assert_one_line_error(selfsup_cli(*base, "--width", "2", "--out", str(tmp_path / "b")), "encoder.width=2")
    assert_one_line_error(selfsup_cli(*base, "--set", "encoder.dim=96", "--out", str(tmp_path / "c")),
                          "encoder.params (resnet18)", "'dim'", "width")
    assert_one_line_error(selfsup_cli(*base, "--set", "method.temperature=hot", "--out", str(tmp_path / "d")),
                          "temperature", "float")


def test_pretrain_says_how_long_it_trained(tmp_path):
    """The last line of `selfsup pretrain` gives the steps and the time spent training (a budget is for training)."""
    from selfsup.cli import _trained

    assert _trained(tmp_path) == ""  # no cost.json: nothing said
    (tmp_path / "cost.json").write_text(json.dumps({"wall_s": 120.2, "calibration_s": 4.7, "steps": 419,
                                                    "samples_per_s": 446.6}))  # fmt: skip
    assert _trained(tmp_path) == ": 419 steps in 2m00s of training (+4s timing the first steps), 447 samples/s"
