from dataclasses import dataclass, field
from enum import Enum
from typing import Literal, Optional

import pytest

from pipeline.config import from_mapping, load_params, load_stage_config, parse_overrides, to_dict
from pipeline.errors import UserError


class Color(Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Inner:
    a: int = 1
    b: float = 2.0


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    flag: bool = False
    inner: Inner = field(default_factory=Inner)
    color: Color = Color.RED
    mode: Literal["fast", "slow"] = "fast"
    maybe: Optional[int] = None
    ks: tuple[int, ...] = (1, 2)


def test_defaults_and_nested_partial_override():
    cfg = from_mapping(Outer, {"inner": {"b": 3}}, where="p: s")
    assert cfg.inner == Inner(a=1, b=3.0) and isinstance(cfg.inner.b, float)
    assert cfg.name == "x" and cfg.ks == (1, 2)


def test_enum_literal_optional_tuple():
    cfg = from_mapping(Outer, {"color": "blue", "mode": "slow", "maybe": 4, "ks": [4, 8]}, where="p: s")
    assert (cfg.color, cfg.mode, cfg.maybe, cfg.ks) == (Color.BLUE, "slow", 4, (4, 8))
    assert to_dict(cfg)["color"] == "blue" and to_dict(cfg)["ks"] == [4, 8]


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"nme": "y"}, "p: s.nme: unknown key; valid keys are"),
        ({"inner": {"c": 1}}, "p: s.inner.c: unknown key"),
        ({"flag": "yes"}, "p: s.flag: expected bool, got str"),
        ({"inner": {"a": 1.5}}, "p: s.inner.a: expected int, got float"),
        ({"inner": {"a": True}}, "p: s.inner.a: expected int, got bool"),
        ({"color": "green"}, "p: s.color: 'green' is not one of 'red', 'blue'"),
        ({"mode": "medium"}, "p: s.mode: 'medium' is not one of 'fast', 'slow'"),
        ({"ks": 3}, "p: s.ks: expected a list"),
        ({"ks": [1, "a"]}, "p: s.ks[1]: expected int"),
        ({"inner": 5}, "p: s.inner: expected a mapping"),
    ],
)
def test_bad_keys_and_types_name_the_key(data, needle):
    with pytest.raises(UserError) as err:
        from_mapping(Outer, data, where="p: s")
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_float_accepts_int_and_yaml_exponent_string():
    assert from_mapping(Inner, {"b": 1}, where="w").b == 1.0
    assert from_mapping(Inner, {"b": "1e-3"}, where="w").b == pytest.approx(1e-3)


def test_parse_overrides_nested_and_typed():
    assert parse_overrides(["inner.a=5", "name=abc", "ks=[1, 2]", "flag=true"]) == {
        "inner": {"a": 5}, "name": "abc", "ks": [1, 2], "flag": True}
    with pytest.raises(UserError, match="expected KEY=VALUE"):
        parse_overrides(["novalue"])


def test_load_stage_config_from_file_with_overrides(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("other: {x: 1}\nmine:\n  name: fromfile\n  inner: {a: 7}\n")
    cfg = load_stage_config(Outer, "mine", params_path=p, overrides=["inner.b=0.5"])
    assert cfg == Outer(name="fromfile", inner=Inner(a=7, b=0.5))
    assert load_stage_config(Outer, "absent", params_path=p) == Outer()


def test_load_stage_config_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match="missing.yaml: params file not found"):
        load_stage_config(Outer, "s", params_path=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(UserError, match=r"bad.yaml \(line \d+\): not valid YAML"):
        load_params(bad)
    flat = tmp_path / "flat.yaml"
    flat.write_text("mine: 3\n")
    with pytest.raises(UserError, match="section 'mine' must be a mapping"):
        load_stage_config(Outer, "mine", params_path=flat)


def test_default_params_path_falls_back_to_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_stage_config(Outer, "mine", overrides=["name=z"]) == Outer(name="z")


def test_shipped_params_yaml_builds_prepare_config():
    from pathlib import Path

    from pipeline.testbed.config import PrepareConfig

    root = Path(__file__).resolve().parents[2]
    cfg = load_stage_config(PrepareConfig, "prepare", params_path=root / "params.yaml")
    assert cfg.learner.hidden > cfg.explorer.hidden and cfg.task.flaw_offset == 10


@dataclass(frozen=True)
class Generates:
    generate_batch_size: int = 8


@dataclass(frozen=True)
class OwnBatch:  # a section whose own key is `batch_size` (e.g. prepare.sft)
    batch_size: int = 8


def test_a_renamed_key_is_refused_with_its_new_name(tmp_path):
    from pipeline.config import RENAMED_KEYS

    assert RENAMED_KEYS["batch_size"] == "generate_batch_size"
    p, empty = tmp_path / "params.yaml", tmp_path / "empty.yaml"
    p.write_text("mine:\n  batch_size: 64\n")
    empty.write_text("mine: {}\n")
    for path, overrides in ((p, []), (empty, ["batch_size=64"])):  # in the file, or by --set
        with pytest.raises(UserError) as err:
            load_stage_config(Generates, "mine", params_path=path, overrides=overrides)
        assert str(err.value) == (f"{path}: mine.batch_size: renamed to generate_batch_size (same meaning); "
                                  "set that key instead")
    # only where the new name is a key of the section: elsewhere batch_size is an ordinary key or unknown
    assert load_stage_config(OwnBatch, "mine", params_path=p) == OwnBatch(batch_size=64)
    with pytest.raises(UserError, match="mine.batch_size: unknown key; valid keys are"):
        load_stage_config(Inner, "mine", params_path=p)
    assert load_stage_config(Generates, "x", params_path=p, overrides=["generate_batch_size=3"]) == Generates(3)
