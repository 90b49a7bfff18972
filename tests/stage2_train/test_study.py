import json

import pytest

from pipeline.errors import UserError
from stage2_train.report import format_table, summarise, write_report
from stage2_train.study import StudyConfig, check_arms, command, run_dirs


def _records(flawed, rest, tokens_per_step):
    recs = []
    for i, (f, r) in enumerate(zip(flawed, rest)):
        step = 10 * i
        recs.append({"step": step, "eval/pass@1": (f + r) / 2, "eval/flawed/pass@1": f, "eval/rest/pass@1": r,
                     "online_tokens": tokens_per_step * step, "time/step": 1.0})
    return recs


def test_comparisons_against_the_baseline_by_hand():
    arms = {
        "grpo": [_records([0.0, 0.1, 0.2], [0.9, 0.9, 0.9], 100), _records([0.0, 0.1, 0.4], [0.9, 0.9, 0.9], 100)],
        "s2lpo": [_records([0.0, 0.35, 0.5], [0.9, 0.8, 0.9], 50), _records([0.0, 0.35, 0.5], [0.9, 0.84, 0.9], 50)],
    }
    s = summarise(arms, "grpo")
    assert s["grpo"]["eval/flawed/pass@1"] == pytest.approx((0.3, 0.1))
    assert s["s2lpo"]["steps_to_baseline_final"] == 10  # 0.35 ≥ GRPO's final mean 0.3 at step 10
    assert s["s2lpo"]["worst_rest_gap"] == pytest.approx(-8.0)  # 0.82 vs 0.90
    assert s["s2lpo"]["token_ratio"] == pytest.approx(0.5)
    assert "| s2lpo | 2 |" in format_table(s)


def test_write_report_needs_finished_runs(tmp_path):
    with pytest.raises(UserError, match="no finished runs"):
        write_report(tmp_path)
    run = tmp_path / "grpo" / "seed0"
    run.mkdir(parents=True)
    (run / "summary.json").write_text("{}")
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _records([0, 0.5], [1, 1], 10)))
    table = write_report(tmp_path)
    assert "| grpo | 1 |" in table and (tmp_path / "curves.png").stat().st_size > 0


def test_commands_and_arm_checks(tmp_path):
    cfg = StudyConfig(out_root=str(tmp_path), seeds=(0, 1), arms={"grpo": {"anneal": {"initial_rate": 0.0}},
                                                                  "hot": {"temperature": 1.2}})
    runs = run_dirs(cfg)
    assert [(a, s) for a, s, _ in runs] == [("grpo", 0), ("grpo", 1), ("hot", 0), ("hot", 1)]
    cmd = command(cfg, "grpo", 1, runs[1][2], None)
    assert "anneal.initial_rate=0.0" in cmd and "seed=1" in cmd and "--resume" not in cmd
    runs[1][2].mkdir(parents=True)
    (runs[1][2] / "config.json").write_text("{}")
    assert "--resume" in command(cfg, "grpo", 1, runs[1][2], None)
    check_arms(cfg, None)
    with pytest.raises(UserError, match=r"study.arms.bad: .*train.temprature: unknown key"):
        check_arms(StudyConfig(arms={"bad": {"temprature": 1.2}}), None)
    with pytest.raises(UserError, match="not arms"):
        run_dirs(StudyConfig(arms={"a": {}}, only=("b",)))


def test_run_one_checks_arm_and_seed_and_skips_finished_runs(tmp_path, monkeypatch):
    from stage2_train import study

    cfg = StudyConfig(out_root=str(tmp_path), seeds=(0, 1), arms={"grpo": {"anneal": {"initial_rate": 0.0}}})
    with pytest.raises(UserError, match=r"'hot': not an arm of this study; pick from \['grpo'\]"):
        study.run_one(cfg, "hot", 0)
    with pytest.raises(UserError, match=r"seed 5: not one of this study's seeds \[0, 1\]"):
        study.run_one(cfg, "grpo", 5)
    launched = []
    monkeypatch.setattr(study.subprocess, "run", lambda cmd: launched.append(cmd) or type("P", (), {"returncode": 0}))
    out = study.run_one(cfg, "grpo", 1, threads=None, progress=True)
    assert out == tmp_path / "grpo" / "seed1" and len(launched) == 1
    cmd = launched[0]
    assert "--no-progress" not in cmd and "threads=null" in cmd and "seed=1" in cmd
    (out / "summary.json").write_text("{}")
    study.run_one(cfg, "grpo", 1)  # finished: nothing launched
    assert len(launched) == 1
    monkeypatch.setattr(study.subprocess, "run", lambda cmd: type("P", (), {"returncode": 3}))
    with pytest.raises(UserError, match="the run failed"):
        study.run_one(cfg, "grpo", 0)


def test_report_can_be_written_elsewhere(tmp_path):
    run = tmp_path / "study" / "grpo" / "seed0"
    run.mkdir(parents=True)
    (run / "summary.json").write_text("{}")
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _records([0, 0.5], [1, 1], 10)))
    write_report(tmp_path / "study", out_dir=tmp_path / "report")
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["arms", "curves", "curves.png", "report.md",
                                                                        "results.json"]
    assert not (tmp_path / "study" / "report.md").exists()


def test_report_of_chosen_arms(tmp_path):
    for arm in ("grpo", "s2lpo", "noise"):
        run = tmp_path / arm / "seed0"
        run.mkdir(parents=True)
        (run / "summary.json").write_text("{}")
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _records([0, 0.5], [1, 1], 10)))
    table = write_report(tmp_path, out_dir=tmp_path / "r", only=("s2lpo", "grpo"))
    rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ") and "seeds" not in line]
    assert rows == ["s2lpo", "grpo"]
    with pytest.raises(UserError, match=r"no finished runs of \['tis'\]"):
        write_report(tmp_path, only=("tis",))


def test_max_k_is_the_largest_k_every_run_evaluated():
    from stage2_train.report import max_k

    runs = [[{"eval/pass@1": 0.5, "eval/pass@8": 0.9, "eval/flawed/pass@16": 1.0}],
            [{"eval/pass@1": 0.5, "eval/pass@4": 0.8, "eval/pass@8": 0.9}]]
    assert max_k(runs) == 8
    assert max_k([[{"step": 3}]]) is None


def test_without_a_flawed_subset_the_gap_is_on_all_problems():
    def recs(overall):
        return [{"step": 10 * i, "eval/pass@1": v, "online_tokens": 10 * i, "time/step": 1.0}
                for i, v in enumerate(overall)]

    s = summarise({"grpo": [recs([0.9, 0.9, 0.95])], "s2lpo": [recs([0.9, 0.87, 0.97])]}, "grpo")
    assert s["s2lpo"]["worst_rest_gap"] == pytest.approx(-3.0)
    assert "steps_to_baseline_final" not in s["s2lpo"]


@pytest.mark.slow  # write_report draws curves.png (~10 s on a loaded 2-core CPU)
def test_dvc_views_hold_the_mean_curves_and_few_final_numbers(tmp_path):
    """curves/ARM.csv (what `dvc plots` reads) and arms/ARM.json (what `dvc metrics show` prints)."""
    for seed, flawed in ((0, [0.0, 0.2]), (1, [0.1, 0.4])):
        run = tmp_path / "grpo" / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "summary.json").write_text("{}")
        recs = _records(flawed, [0.9, 0.8], 100)
        recs[-1]["eval/pass@4"] = 0.95
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (tmp_path / "arms").mkdir()
    (tmp_path / "arms" / "gone.json").write_text("{}")  # an arm no longer in the study
    write_report(tmp_path)
    assert (tmp_path / "curves" / "grpo.csv").read_text().splitlines() == [
        "step,online_ktokens,pass1,flawed_pass1,rest_pass1", "0,0.0,47.5,5.0,90.0", "10,1.0,55.0,30.0,80.0"]
    assert json.loads((tmp_path / "arms" / "grpo.json").read_text()) == {
        "pass@1": 55.0, "flawed": 30.0, "rest": 80.0, "pass@4": 95.0, "tokens/baseline": 1.0}
    assert sorted(p.name for p in (tmp_path / "arms").iterdir()) == ["grpo.json"]


def test_the_table_shows_only_milestones_that_were_evaluated():
    every_20 = [{**r, "step": 2 * r["step"]} for r in _records([0.0, 0.1, 0.2], [0.9, 0.9, 0.9], 100)]  # 0, 20, 40
    table = format_table(summarise({"grpo": [every_20]}, "grpo"))
    head, rule, row = table.splitlines()[:3]
    assert "flawed @20 | flawed @40 |" in head and "flawed @10" not in head
    assert head.count("|") == rule.count("|") == row.count("|")
    assert "| 10.0 | 20.0 |" in row
