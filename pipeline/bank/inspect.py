"""`s2lpo bank info` and `s2lpo bank verify`: what a bank holds, and whether it is sound."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.bank.reader import BankReader
from pipeline.bank.schema import BANK_SCHEMA
from pipeline.bank.store import BankFiles, fingerprint
from pipeline.errors import UserError
from pipeline.passk import mean_pass_at_k

SUMMARY_COLUMNS = ["prompt_id", "correct", "finish_reason", "response_length"]


def _summary_table(reader: BankReader) -> pa.Table:
    files = reader.files
    tables = [reader.shard_file(i).read(columns=SUMMARY_COLUMNS) for i in range(len(files.shards))]
    return pa.concat_tables(tables) if tables else BANK_SCHEMA.empty_table().select(SUMMARY_COLUMNS)


def bank_info(reader: BankReader, ks: tuple[int, ...] = (1, 2, 4, 8, 16, 32)) -> dict:
    """Counts, identity, per-prompt pass-rate histogram, the explorer's pass@k, lengths."""
    files = reader.files
    t = _summary_table(reader)
    info: dict = {"fingerprint": fingerprint(files.identity), "identity": files.identity,
                  "rows": t.num_rows, "shards": len(files.shards), "prompts": len(reader.pool)}
    if t.num_rows == 0:
        return info
    grouped = t.group_by("prompt_id").aggregate([("correct", "count"), ("correct", "sum")])
    n = grouped.column("correct_count").to_numpy()
    c = grouped.column("correct_sum").to_numpy().astype(int)
    info["samples_per_prompt"] = {"min": int(n.min()), "max": int(n.max())}
    rates = c / n
    hist, edges = np.histogram(rates, bins=10, range=(0.0, 1.0))
    info["pass_rate_histogram"] = {f"{lo:.1f}-{hi:.1f}": int(h) for lo, hi, h in zip(edges[:-1], edges[1:], hist)}
    info["all_wrong_prompts"] = int((c == 0).sum())
    info["all_right_prompts"] = int((c == n).sum())
    info["pass_at_k"] = {str(k): round(v, 4) for k, v in mean_pass_at_k(n, c, [k for k in ks if k <= n.min()]).items()}
    lengths = t.column("response_length").to_numpy()
    info["mean_response_tokens"] = round(float(lengths.mean()), 2)
    info["truncation_rate"] = round(float(pc.mean(pc.equal(t.column("finish_reason"), "length")).as_py()), 4)
    return info


def format_info(info: dict) -> str:
    ident = info["identity"]
    lines = [f"bank {info['fingerprint']}: {info['rows']} rows, {info['prompts']} prompts, {info['shards']} shards",
             f"explorer  {ident['explorer']['model']} @ {ident['explorer']['revision']}",
             f"sampling  {ident['sampling']}", f"verifier  {ident['verifier']['version']}",
             f"rewards   truncated responses: {ident.get('truncated_reward', 'verify')}   "
             f"log-probs: {ident.get('logprobs', 'raw')} distribution"]
    if info["rows"]:
        spp = info["samples_per_prompt"]
        lines += [f"samples per prompt  {spp['min']}..{spp['max']}",
                  f"explorer pass@k     " + "  ".join(f"@{k} {100 * v:.1f}%" for k, v in info["pass_at_k"].items()),
                  f"prompts all wrong   {info['all_wrong_prompts']}   all right {info['all_right_prompts']}",
                  f"mean length         {info['mean_response_tokens']} tokens   truncated "
                  f"{100 * info['truncation_rate']:.1f}%", "per-prompt pass rate:"]
        top = max(info["pass_rate_histogram"].values()) or 1
        for bucket, count in info["pass_rate_histogram"].items():
            lines.append(f"  {bucket}  {count:6d} {'#' * round(40 * count / top)}")
    return "\n".join(lines)


def misplaced_stops(table: pa.Table, stops) -> int:
    """Rows where the stop set and `finish_reason` disagree: a "stop" row must end with its
    only stop token, a "length" row must hold none (pipeline.engines.stops)."""
    ids = table.column("response_token_ids").combine_chunks()
    offsets, flat = ids.offsets.to_numpy(), ids.values.to_numpy()
    is_stop = np.isin(flat, np.asarray(stops, dtype=flat.dtype))
    cum = np.concatenate([[0], np.cumsum(is_stop)])
    per_row = cum[offsets[1:]] - cum[offsets[:-1]]
    lengths = offsets[1:] - offsets[:-1]
    last_is_stop = np.zeros(len(lengths), dtype=bool)
    last_is_stop[lengths > 0] = is_stop[offsets[1:][lengths > 0] - 1]
    stopped = np.asarray(table.column("finish_reason").to_pylist()) == "stop"
    ok = np.where(stopped, last_is_stop & (per_row == 1), per_row == 0)
    return int((~ok).sum())


def verify_bank(files: BankFiles, expected_per_prompt: int | None = None) -> list[str]:
    """Every problem found, as one line each (empty = sound)."""
    problems: list[str] = []
    try:
        reader = BankReader(files)
    except UserError as exc:  # an unreadable shard or a manifest/shard row-count mismatch
        return [str(exc)]
    names = [s.file for s in files.shards]
    problems += [f"{f}: named by {k} manifests" for f, k in Counter(names).items() if k > 1]
    for i, shard in enumerate(files.shards):
        pf = reader.shard_file(i)
        if not pf.schema_arrow.equals(BANK_SCHEMA, check_metadata=False):
            problems.append(f"{shard.file}: schema differs from the bank schema")
            continue
        t = pf.read(columns=["response_token_ids", "logprobs", "response_length", "reward", "finish_reason"])
        ids_len = pc.list_value_length(t.column("response_token_ids"))
        bad = pc.sum(pc.not_equal(ids_len, pc.list_value_length(t.column("logprobs")))).as_py() or 0
        bad_len = pc.sum(pc.not_equal(ids_len, pc.cast(t.column("response_length"), pa.int32()))).as_py() or 0
        if bad or bad_len:
            problems.append(f"{shard.file}: {bad} rows with token ids/log-probs length mismatch, "
                            f"{bad_len} with a wrong response_length")
        stops = files.identity.get("sampling", {}).get("stop_token_ids")
        wrong = 0 if stops is None else misplaced_stops(t, stops)  # banks made before the stop set was recorded
        if wrong:
            problems.append(f"{shard.file}: {wrong} rows whose stop tokens disagree with finish_reason "
                            f"(stop set {stops}: a 'stop' row ends with exactly one, a 'length' row has none)")
        rewards = t.column("reward").to_numpy()
        if not np.isfinite(rewards).all():
            problems.append(f"{shard.file}: {int((~np.isfinite(rewards)).sum())} rows with a non-finite reward "
                            "(stage 2 refuses them); re-run explore into a fresh bank")
    keys = Counter(zip(reader.prompt_ids.tolist(), reader.sample_index.tolist()))
    dups = sum(1 for k in keys.values() if k > 1)
    if dups:
        problems.append(f"{dups} duplicated (prompt_id, sample_index) pairs")
    if expected_per_prompt is not None:
        off = {p: len(r) for p, r in reader.pool.items() if len(r) != expected_per_prompt}
        if off:
            pid, n = next(iter(off.items()))
            problems.append(f"{len(off)} prompts without exactly {expected_per_prompt} rows (e.g. {pid}: {n})")
    return problems
