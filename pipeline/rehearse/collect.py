"""Read a finished rehearsal's outputs into the report's lines and checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.rehearse.findings import (ids_preview, prompt_id_mismatches, read_bank_rows, response_findings,
                                        special_token_names, text_preview)
from pipeline.rehearse.plan import Caps
from pipeline.rehearse.run import Rehearsal

ROW_COLUMNS = ("prompt_id", "prompt", "prompt_token_ids", "response", "response_token_ids", "finish_reason")


def identity_stop_ids(identity: dict) -> list[int] | None:
    """The stop ids a bank's identity records (wherever the engine block keeps them)."""
    for key, value in identity.items():
        if "stop" in key and isinstance(value, list) and all(isinstance(v, int) for v in value):
            return value
        if isinstance(value, dict) and (found := identity_stop_ids(value)) is not None:
            return found
    return None


def collect(result: Rehearsal, params: dict[str, Any]) -> dict[str, Any]:
    """findings, prompt preview, train / evaluate / plan lines and checks for `format_report`."""
    from pipeline.bank.store import open_bank
    from pipeline.models import load_tokenizer

    out: dict[str, Any] = {"plan_lines": _plan_lines(result)}
    bank = params["explore"]["bank"]
    if not Path(bank, "bank.json").is_file():
        return out
    rows = read_bank_rows(bank, ROW_COLUMNS)
    identity = open_bank(bank).identity
    explorer = load_tokenizer(params["explore"]["explorer"])
    learner = load_tokenizer(params["train"]["learner"])
    real_stops = json.loads(Path(params["explore"]["explorer"], "stand_in.json").read_text())["stop_ids"]
    recorded = identity_stop_ids(identity)
    stops = recorded if recorded is not None else ([explorer.eos_token_id] if explorer.eos_token_id is not None else [])
    f = response_findings(rows, stop_ids=stops, special_ids=special_token_names(explorer))
    out["findings"] = f
    if rows:
        out["prompt"] = (text_preview(rows[0]["prompt"]), ids_preview(rows[0]["prompt_token_ids"]))
    out["checks"] = _checks(rows, f, real_stops, recorded, learner, params)
    out["train_lines"] = _train_lines(Path(params["train"]["out_dir"])) + [
        ln.strip() for s in result.stages if s.name == "resume" and s.ok for ln in s.stdout.splitlines()
        if ln.startswith("resuming from")]
    out["eval_lines"] = _eval_lines(Path(params["evaluate"]["out_dir"]))
    return out


def _checks(rows, f, real_stops, recorded, learner, params) -> list[tuple[bool, str]]:
    from pipeline.prompts import encode_prompts

    checks = []
    missing = sorted(set(real_stops) - set(recorded or []))
    checks.append((not missing, f"the bank's stop ids {recorded} hold the tokenizer's eos and generation_config's "
                   f"({real_stops})"
                   + (f"; add {missing} to explore.stop_token_ids" if missing else "")))
    stopped = sum(v for k, v in f.ended_by.items() if k != "none")
    checks.append((stopped > 0, f"{stopped} of {f.rows} responses ended on a stop id (the stand-ins stop after "
                   f"~{Caps().max_new_tokens // 3} tokens)" + ("" if stopped else
                                                              "; the engine does not stop: check stop_token_ids")))
    stop_set = set(recorded or [])
    bad_finish = sum((r["finish_reason"] == "stop") != (r["response_token_ids"][-1:] != [] and
                                                        r["response_token_ids"][-1] in stop_set) for r in rows)
    checks.append((bad_finish == 0, f"finish_reason agrees with the last token on {f.rows - bad_finish} of {f.rows} rows"))
    bos = learner.bos_token_id
    doubled = [r["prompt_id"] for r in rows if bos is not None and r["prompt_token_ids"][:2] == [bos, bos]]
    checks.append((not doubled, "no prompt starts with a doubled BOS" if not doubled else
                   f"prompt {doubled[0]} starts with BOS twice: the template already adds it"))
    mine = encode_prompts(learner, [r["prompt"] for r in rows], template=params["train"].get("template") or params["explore"].get("template", "auto"))
    bad = prompt_id_mismatches(rows, mine)
    checks.append((not bad, "the learner tokenises every bank prompt to the bank's prompt ids" if not bad else
                   f"prompt {bad[0]}: the learner's prompt ids differ from the bank's; use the explorer's tokenizer "
                   f"and template (train.template = {params['explore'].get('template')!r})"))
    return checks


def _train_lines(out: Path) -> list[str]:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return []
    lines = []
    for rec in (json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()):
        if "g_w" in rec:
            lines.append(f"step {rec['step']}: G_w {rec['g_w']:g} from the bank, G_s {rec['g_s']:g} online; "
                         f"reward {rec['reward']:.2f}, loss {rec['loss']:.4f}, truncated {rec.get('truncated', 0):.0%}")
    ckpts = sorted(p.name for p in out.glob("checkpoints/step-*"))
    if ckpts:
        lines.append(f"checkpoints {', '.join(ckpts)}")
    return lines


def _eval_lines(out: Path) -> list[str]:
    """One line per benchmark of `s2lpo evaluate`'s metrics.json: problems, pass@1, how responses ended."""
    path = out / "metrics.json"
    if not path.is_file():
        return []
    lines = []
    for name, entry in json.loads(path.read_text()).items():
        if isinstance(entry, dict) and "stats" in entry:
            st = entry["stats"]
            lines.append(f"{name:<10} {st['problems']} problems × {st['samples']}: pass@1 "
                         f"{100 * entry['all']['pass@1']:.1f}%, mean length {st['mean_length']:.1f}, "
                         f"truncated {st['truncated']:.0%}")
    return lines


def _plan_lines(result: Rehearsal) -> list[str]:
    """Per stage of the recipe's own dry run: the GPUs planned for and each phase's total per GPU."""
    lines = []
    for s in result.stages:
        if not (s.name.startswith("plan:") and s.ok):
            continue
        phase, totals, gpus = "", [], ""
        for ln in s.stdout.splitlines():
            text = ln.strip()
            if "per GPU on" in text:
                gpus = text[text.index("per GPU on") + len("per GPU on "):].split(" (")[0]
            elif text.startswith("while "):
                phase = text.rstrip(":")
            elif text.startswith("total") and phase:
                totals.append(f"{phase} {' '.join(text.split()[1:])}")
        if totals:
            lines.append(f"{s.name[5:]:<9}{gpus}: " + "; ".join(totals))
    return lines
