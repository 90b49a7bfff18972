"""The layouts real data arrives in — a verl / LUFFY multi-benchmark validation parquet
(system + user chat prompts, `extra_info.index` restarting per `data_source`), GSM8K as
published (`answer` ending in `#### N`) — and the recipe's real inputs through the real
Qwen3 tokenizer and chat template."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pipeline.data import Problem, gsm8k_gold, load_problems, problem_set_fingerprint, write_problems_jsonl
from pipeline.errors import UserError
from pipeline.prompts import render_problems, render_prompt, resolve_template

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GSM8K = FIXTURES / "gsm8k_sample.jsonl"
SYSTEM = ("Your task is to follow a systematic, thorough reasoning process before providing the final "
          "solution. Put your final answer within \\boxed{}.")
# (data_source, question, ground truth): indexes restart at 0 for every source, as verl writes them
VALIDATION = [
    ("aime", "Find the remainder when $2^{10}$ is divided by $7$.", "2"),
    ("aime", "How many positive divisors does $360$ have?", "24"),
    ("amc", "What is $\\frac{1}{2} + \\frac{1}{3}$?", "\\frac{5}{6}"),
    ("amc", "What is the smallest prime greater than $90$?", "97"),
    ("math500", "Convert the point $(0,3)$ to polar coordinates.", "\\left( 3, \\frac{\\pi}{2} \\right)"),
]


def verl_rows(items=VALIDATION, *, system: str | None = SYSTEM) -> list[dict]:
    """Rows shaped like verl's / LUFFY's validation parquet."""
    rows, seen = [], {}
    for source, question, gold in items:
        index = seen[source] = seen.get(source, -1) + 1
        prompt = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
        rows.append({"data_source": source, "prompt": prompt, "ability": "math",
                     "reward_model": {"ground_truth": gold, "style": "rule"},
                     "extra_info": {"index": index, "split": "test"}})
    return rows


def write_verl_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.fixture
def validation_parquet(tmp_path) -> Path:
    return write_verl_parquet(tmp_path / "valid.parquet", verl_rows())


# --- verl multi-benchmark validation files ----------------------------------------------


def test_multi_source_verl_parquet_loads_with_source_qualified_ids(validation_parquet):
    import pyarrow.parquet as pq

    assert pq.read_schema(validation_parquet).field("extra_info").type.field("index").type == "int64"
    problems = load_problems(str(validation_parquet))
    assert [p.id for p in problems] == ["aime/0", "aime/1", "amc/0", "amc/1", "math500/0"]
    assert [p.question for p in problems] == [q for _, q, _ in VALIDATION]
    assert [p.answer for p in problems] == [a for _, _, a in VALIDATION]
    assert [p.meta["data_source"] for p in problems] == ["aime", "aime", "amc", "amc", "math500"]
    assert {p.system for p in problems} == {SYSTEM}
    assert load_problems(str(validation_parquet), layout="verl") == problems


def test_string_indexes_are_kept_and_an_explicit_id_field_is_verbatim(validation_parquet, tmp_path):
    rows = verl_rows()
    for row in rows:
        row["extra_info"]["index"] = f"{row['data_source']}-{row['extra_info']['index']}-uuid"
    path = write_verl_parquet(tmp_path / "uuids.parquet", rows)
    assert [p.id for p in load_problems(str(path))][:2] == ["aime-0-uuid", "aime-1-uuid"]
    with pytest.raises(UserError, match=r"valid\.parquet: id '0' is used by two different questions.*id_field"):
        load_problems(str(validation_parquet), id_field="extra_info.index")
    hashed = load_problems(str(validation_parquet), id_field="")
    assert len({p.id for p in hashed}) == 5 and all(len(p.id) == 16 for p in hashed)


def test_the_id_clash_hint_names_an_option_every_stage_has():
    from pipeline.evaluate.config import EvaluateConfig
    from stage1_explore.config import ExploreConfig
    from stage2_train.config import TrainConfig

    for cls in (ExploreConfig, TrainConfig, EvaluateConfig):
        names = {f.name for f in dataclasses.fields(cls)}
        assert {"layout", "question_field", "answer_field", "id_field"} <= names, cls.__name__


def test_stage_configs_pass_id_field_and_layout_through(tmp_path, monkeypatch):
    from pipeline.config import load_stage_config
    from pipeline.evaluate.config import EvaluateConfig

    monkeypatch.chdir(tmp_path)
    cfg = load_stage_config(EvaluateConfig, "evaluate", overrides=["id_field=", "layout=gsm8k"])
    assert (cfg.id_field, cfg.layout) == ("", "gsm8k")


def test_same_question_in_two_sources_stays_in_both(tmp_path):
    items = [("aime", "What is $1+1$?", "2"), ("amc", "What is $1+1$?", "2"), ("amc", "What is $1+1$?", "2")]
    problems = load_problems(str(write_verl_parquet(tmp_path / "v.parquet", verl_rows(items))))
    assert [p.id for p in problems] == ["aime/0", "amc/0"]  # deduplicated within amc only


def test_system_text_round_trips_and_enters_the_fingerprint_only_when_present(validation_parquet, tmp_path):
    problems = load_problems(str(validation_parquet))
    copy = load_problems(str(write_problems_jsonl(problems, tmp_path / "copy.jsonl")))
    assert copy == problems and copy[0].system == SYSTEM
    bare = [dataclasses.replace(p, system=None) for p in problems]
    assert problem_set_fingerprint(bare) != problem_set_fingerprint(problems)
    plain = Problem("1", "q1", "x")
    import hashlib

    legacy = hashlib.sha256(json.dumps(["1", "q1", "x"]).encode() + b"\n").hexdigest()
    assert problem_set_fingerprint([plain]) == legacy


# --- GSM8K ---------------------------------------------------------------------------------


def test_gsm8k_layout_is_detected_and_the_gold_is_the_final_number():
    rows = [json.loads(line) for line in GSM8K.read_text().splitlines()]
    problems = load_problems(str(GSM8K))
    assert len(problems) == 40
    assert [p.answer for p in problems[:3]] == ["72", "10", "5"]
    assert rows[0]["answer"].endswith("#### 72") and problems[0].question == rows[0]["question"]
    assert {p.answer for p in problems} >= {"448000", "5250", "1080"}
    assert all(p.answer == rows[i]["answer"].rsplit("####", 1)[1].strip().replace(",", "") for i, p in enumerate(problems))
    assert load_problems(str(GSM8K), layout="gsm8k") == problems
    assert "####" in load_problems(str(GSM8K), layout="qa")[0].answer  # qa keeps the whole solution


@pytest.mark.parametrize("solution, gold", [
    ("He pays 1,000 + 234 = <<1000+234=1234>>1234.\n#### 1,234", "1234"),
    ("Loss of $3.\n#### -3", "-3"),
    ("Half.\n####0.5\n", "0.5"),
    ("No final line here: 12", None),
    ("Inline #### 5 then more text", None),
])
def test_gsm8k_gold(solution, gold):
    assert gsm8k_gold(solution) == gold


def test_gsm8k_thousands_commas_are_removed_on_a_real_row(tmp_path):
    # GSM8K train row 1,080 is written with a comma (one of 7473 rows in the published split)
    row = {"question": "Adam earns $40 daily in his job. 10% of his money is deducted as taxes. How much money "
                       "will Adam have earned after taxes after 30 days of work?",
           "answer": "The amount of money deducted from Adam's daily pay is $40 / 10 = $<<40/10=4>>4.\nSo after "
                     "deducting 10%, Adam\u2019s daily pay is $40 \u2013 $4 = $<<40-4=36>>36.\nThis means that in 30 "
                     "days he earns $36 * 30 = $<<36*30=1080>>1080.\n#### 1,080"}
    path = tmp_path / "adam.jsonl"
    path.write_text(json.dumps(row) + "\n")
    (problem,) = load_problems(str(path))
    assert problem.answer == "1080"


def test_gsm8k_row_without_a_final_line_names_the_row(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps({"question": "q1", "answer": "x\n#### 4"}) + "\n"
                    + json.dumps({"question": "q2", "answer": "the answer is 4"}) + "\n")
    with pytest.raises(UserError, match=r"g\.jsonl line 2: answer field 'answer' does not end in a '#### N' line"):
        load_problems(str(path))


# --- the real Qwen3 tokenizer and chat template ----------------------------------------

RECIPE_SOURCES = ["dapo_verl_sample", "aime24_sample", "aime25_sample", "math500_sample", "gsm8k_sample"]
IM_START, IM_END, THINK, END_THINK = 151644, 151645, 151667, 151668
NO_THINK = "<|im_start|>assistant\n<think>\n\n</think>\n\n"


@pytest.fixture(scope="module")
def qwen3(qwen3_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(qwen3_tokenizer_dir)


@pytest.fixture
def validation(tmp_path):
    return load_problems(str(write_verl_parquet(tmp_path / "valid.parquet", verl_rows())))


def test_a_verl_system_message_is_the_qwen3_system_turn(qwen3, validation):
    question = VALIDATION[0][1]
    want = (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
            f"<|im_start|>user\n{question}<|im_end|>\n" + NO_THINK)
    assert render_problems(qwen3, validation, template="auto")[0] == want
    assert render_problems(qwen3, validation, template="chat")[0] == want
    assert render_prompt(qwen3, question, template="auto", system=SYSTEM) == want


def test_a_system_message_precedes_plain_and_format_templates(qwen3, validation):
    from pipeline.prompts import DEFAULT_PLAIN_TEMPLATE

    question = VALIDATION[2][1]
    assert render_problems(qwen3, validation, template="{question}=")[2] == f"{SYSTEM}\n\n{question}="
    plain = DEFAULT_PLAIN_TEMPLATE.format(question=question)
    assert render_problems(qwen3, validation, template="plain")[2] == f"{SYSTEM}\n\n{plain}"


class RecordingEngine:
    """Remembers the prompt ids it is given; answers every sample with the gold, boxed."""

    def __init__(self, golds):
        self.golds, self.prompts = golds, []

    def generate(self, prompts, params):
        from pipeline.engines.base import Completion

        out = []
        for ids in prompts:
            self.prompts.append(list(ids))
            text = f"So the answer is \\boxed{{{self.golds[len(self.prompts) - 1]}}}."
            out.append([Completion((1, 2), text, (0.0, 0.0), "stop")] * params.n)
        return out


def _score(responses, golds):
    from pipeline.verifier import score_response

    return [score_response(r, g) for r, g in zip(responses, golds)]


def test_evaluate_and_periodic_eval_send_the_system_turn(qwen3, tmp_path):
    from pipeline.engines import SamplingParams
    from pipeline.evaluate.config import EvaluateConfig
    from pipeline.evaluate.run import Benchmark, sample_benchmark
    from pipeline.sample_score import correct_counts

    one_source = [("aime", q, a) for _, q, a in VALIDATION]  # distinct indexes 0..4: loads before and after
    path = tmp_path / "one.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in verl_rows(one_source)))
    problems = load_problems(str(path))
    want = [f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{q}<|im_end|>\n" + NO_THINK
            for _, q, _ in VALIDATION]
    engine = RecordingEngine([p.answer for p in problems])
    cfg = EvaluateConfig(template="auto", samples=2, scoring_workers=0)
    results = sample_benchmark(engine, qwen3, Benchmark("one", str(path), tuple(problems)), cfg, scorer=_score)
    assert [qwen3.decode(ids) for ids in engine.prompts] == want
    assert [r.n_correct for r in results] == [2] * 5  # \frac{5}{6} and the \left( … \right) pair included
    engine = RecordingEngine([p.answer for p in problems])  # the trainer's periodic evaluation
    counts = correct_counts(engine, qwen3, problems, SamplingParams(n=1, max_new_tokens=4), template="auto",
                            scorer=_score)
    assert [qwen3.decode(ids) for ids in engine.prompts] == want and counts.tolist() == [1] * 5


def test_evaluate_scores_a_validation_file_per_source(qwen3, validation):
    from pipeline.evaluate.config import EvaluateConfig
    from pipeline.evaluate.results import benchmark_metrics, format_metrics
    from pipeline.evaluate.run import Benchmark, sample_benchmark

    golds = [p.answer if p.meta["data_source"] != "amc" else "0" for p in validation]  # amc answered wrong
    cfg = EvaluateConfig(template="auto", samples=2, scoring_workers=0)
    results = sample_benchmark(RecordingEngine(golds), qwen3, Benchmark("valid", "v", tuple(validation)), cfg,
                               scorer=_score)
    metrics = benchmark_metrics(results, [1, 2])
    assert metrics["all"] == {"pass@1": 0.6, "pass@2": 0.6}
    assert metrics["data_source=aime"] == metrics["data_source=math500"] == {"pass@1": 1.0, "pass@2": 1.0}
    assert metrics["data_source=amc"] == {"pass@1": 0.0, "pass@2": 0.0}
    assert list(metrics) == ["all", "data_source=aime", "data_source=amc", "data_source=math500", "stats"]
    table = format_metrics({"valid": metrics}).splitlines()
    assert table[2].split() == ["valid", "all", "60.0", "60.0"] and table[4].split() == ["valid", "data_source=amc",
                                                                                         "0.0", "0.0"]


@pytest.mark.parametrize("name", RECIPE_SOURCES)
def test_recipe_sources_render_and_tokenise_with_qwen3(qwen3, name):
    resolved = resolve_template(qwen3, "auto")
    assert resolved.kind.value == "chat" and resolved.thinking_flag  # auto → chat, no-think
    problems = load_problems(str(FIXTURES / f"{name}.jsonl"))
    texts = render_problems(qwen3, problems, template="auto")
    for problem, text in zip(problems, texts):
        assert problem.system is None
        assert text == f"<|im_start|>user\n{problem.question}<|im_end|>\n" + NO_THINK
    for ids, text in zip(qwen3(texts, add_special_tokens=False)["input_ids"], texts):
        # <|im_start|> user \n … <|im_end|> \n <|im_start|> assistant \n <think> \n\n </think> \n\n
        assert ids[:3] == [IM_START, 872, 198]
        assert ids[-9:] == [IM_END, 198, IM_START, 77091, 198, THINK, 271, END_THINK, 271]
        assert ids.count(IM_START) == 2 and ids.count(IM_END) == 1 and ids.count(THINK) == 1
        assert qwen3.decode(ids) == text


@pytest.mark.parametrize("name", RECIPE_SOURCES)
def test_every_recipe_gold_accepts_its_own_boxed_and_answer_line_forms(name):
    from pipeline.verifier import score_response

    for problem in load_problems(str(FIXTURES / f"{name}.jsonl")):
        for response in (f"Thus $\\boxed{{{problem.answer}}}$.", f"Steps.\nAnswer: {problem.answer}"):
            assert score_response(response, problem.answer).correct, (problem.id, problem.answer, response)
