import pytest

from selfsup.config import Budget, RunConfig, load_yaml, parse_budget, parse_labels, save_yaml, set_field
from selfsup.errors import UserError


@pytest.mark.parametrize(
    "text, expected",
    [("90s", Budget("time", 90)), ("10m", Budget("time", 600)), ("2h", Budget("time", 7200)),
     ("1.5m", Budget("time", 90)), ("500steps", Budget("steps", 500)), ("1step", Budget("steps", 1)),
     ("3epochs", Budget("epochs", 3)), (" 7 min ", Budget("time", 420))],
)
def test_budget_forms(text, expected):
    assert parse_budget(text) == expected


@pytest.mark.parametrize("text", ["10x", "", "steps", "-5m", "0s", "1.5steps", "10 m m"])
def test_malformed_budget_names_the_field(text):
    with pytest.raises(UserError, match="budget"):
        parse_budget(text)


def test_labels():
    assert parse_labels("1%,10%,100%") == [0.01, 0.1, 1.0]
    assert parse_labels("0.5") == [0.5]
    for bad in ("0%", "150%", "abc", "1%,,x"):
        with pytest.raises(UserError):
            parse_labels(bad)


def test_yaml_roundtrip(tmp_path):
    cfg = RunConfig()
    set_field(cfg, "train.batch_size", "64")
    set_field(cfg, "method.temperature", 0.2)
    set_field(cfg, "eval.labels", "1%,100%")
    set_field(cfg, "data.image_size", "none")
    save_yaml(cfg, tmp_path / "c.yaml")
    back = load_yaml(tmp_path / "c.yaml")
    assert back == cfg
    assert back.train.batch_size == 64 and back.method.params == {"temperature": 0.2}
    assert back.eval.labels == [0.01, 1.0]


def test_bad_config_fields(tmp_path):
    with pytest.raises(UserError, match="bach_size"):
        set_field(RunConfig(), "train.bach_size", 3)
    with pytest.raises(UserError, match="train.batch_size"):
        set_field(RunConfig(), "train.batch_size", "many")
    (tmp_path / "bad.yaml").write_text("train:\n  bach_size: 3\n")
    with pytest.raises(UserError, match="bach_size"):
        load_yaml(tmp_path / "bad.yaml")
    (tmp_path / "broken.yaml").write_text("train: [\n")
    with pytest.raises(UserError, match="broken.yaml"):
        load_yaml(tmp_path / "broken.yaml")
    with pytest.raises(UserError, match="missing.yaml"):
        load_yaml(tmp_path / "missing.yaml")


def test_a_config_written_before_later_replans_loads_as_lists(tmp_path):
    """train.first_plan / replanned_at were one int each; a run's old config.yaml still loads (as lists of one),
    and lists that disagree are one clear error."""
    cfg = RunConfig()
    cfg.train.steps, cfg.train.first_plan, cfg.train.replanned_at = 300, [200], [50]
    save_yaml(cfg, tmp_path / "c.yaml")
    old = (tmp_path / "c.yaml").read_text().replace("first_plan:\n  - 200", "first_plan: 200")
    old = old.replace("replanned_at:\n  - 50", "replanned_at: 50")
    assert "first_plan: 200" in old and "replanned_at: 50" in old
    (tmp_path / "old.yaml").write_text(old)
    loaded = load_yaml(tmp_path / "old.yaml")
    assert loaded.train.first_plan == [200] and loaded.train.replanned_at == [50] and loaded == load_yaml(
        tmp_path / "c.yaml")  # fmt: skip
    (tmp_path / "bad.yaml").write_text(old.replace("replanned_at: 50", "replanned_at: [50, 80]"))
    with pytest.raises(UserError, match="train.first_plan=.*same length"):
        load_yaml(tmp_path / "bad.yaml")
