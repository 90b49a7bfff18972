import json

from stage2_train.metrics import MetricsLog, read_jsonl


def _write(path, steps):
    path.write_text("".join(json.dumps({"step": s, "x": s}) + "\n" for s in steps) + '{"step": 9, "x"')  # torn tail


def test_resume_keeps_records_through_the_checkpoint_step(tmp_path):
    _write(tmp_path / "metrics.jsonl", range(6))
    log = MetricsLog(tmp_path, resume_step=3, tensorboard=False)
    log.log(4, {"x": 40})
    log.close()
    assert [(r["step"], r["x"]) for r in read_jsonl(tmp_path / "metrics.jsonl")] == [(0, 0), (1, 1), (2, 2), (3, 3),
                                                                                     (4, 40)]


def test_a_run_restarted_before_its_first_checkpoint_starts_from_empty(tmp_path):
    """Killed before the first checkpoint, `--resume` starts at step 0 again: the old
    step-0 evaluation must not be kept beside the new one."""
    _write(tmp_path / "metrics.jsonl", range(3))
    log = MetricsLog(tmp_path, resume_step=None, tensorboard=False)
    log.log(0, {"x": 100})
    log.close()
    assert read_jsonl(tmp_path / "metrics.jsonl") == [{"step": 0, "x": 100}]
