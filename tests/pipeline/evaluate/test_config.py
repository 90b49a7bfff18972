import pytest

from pipeline.config import load_stage_config
from pipeline.errors import UserError
from pipeline.evaluate.config import EvaluateConfig, Preset


def _cfg(tmp_path, *overrides):
    return load_stage_config(EvaluateConfig, "evaluate", params_path=None, overrides=list(overrides))


def test_presets_fix_the_papers_sampling_and_a_plain_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no params.yaml: dataclass defaults
    paper = _cfg(tmp_path, "preset=qwen3-nothink", "samples=16").sampling()
    assert (paper.n, paper.temperature, paper.top_p, paper.top_k, paper.presence_penalty) == (16, 0.7, 0.8, 20, 1.5)
    plain = _cfg(tmp_path).sampling()
    assert (plain.temperature, plain.top_p, plain.top_k, plain.presence_penalty) == (1.0, 1.0, 0, 0.0)
    assert Preset("plain") is Preset.PLAIN


def test_single_values_override_the_preset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = _cfg(tmp_path, "preset=qwen3-nothink", "temperature=1.0", "presence_penalty=0").sampling(seed=7)
    assert (s.temperature, s.top_p, s.top_k, s.presence_penalty, s.seed) == (1.0, 0.8, 20, 0.0, 7)


def test_ks_default_to_powers_of_two_and_label_to_out_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _cfg(tmp_path, "samples=12", "out_dir=runs/explorer")
    assert cfg.k_values == [1, 2, 4, 8, 12] and cfg.label == "explorer"
    assert _cfg(tmp_path, "ks=[4, 1, 4]", "name=x").k_values == [1, 4]


def test_null_drops_a_benchmark_and_set_adds_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _cfg(tmp_path, "benchmarks.testbed=null", "benchmarks.aime24=a.jsonl")
    assert cfg.benchmark_files == {"aime24": "a.jsonl"}


@pytest.mark.parametrize("overrides, needle", [
    (["ks=[1, 128]"], "ks has k = 128 but only samples = 64 per problem"),
    (["preset=greedy"], "evaluate.preset: 'greedy' is not one of 'qwen3-nothink', 'plain'"),
    (["benchmarks.testbed=null"], "benchmarks is empty"),
    (["top_p=0"], "0 < top_p"),
])
def test_bad_values_are_one_line_errors(tmp_path, monkeypatch, overrides, needle):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=needle.replace("(", r"\(")):
        _cfg(tmp_path, *overrides)
