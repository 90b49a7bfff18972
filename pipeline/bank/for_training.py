"""The bank's contract with training: what stage 2 reads of a bank and what it checks first.

A bank is usable by a learner only if the explorer's prompts are the learner's prompts,
token for token: the same tokenizer, the same template (the bank is the template's home:
a run that leaves its template unset renders with the bank's, `bank_template`), and every
drawn row's stored prompt ids equal to the learner's encoding (`check_prompt_ids`). A
mismatch is a one-line refusal naming the bank and the fix. The rest is what the bank
says about its rows: whether its log-probs are those of the sampling distribution
(truncated IS divides by them), where its responses were cut (stop tokens), and how it
rewarded truncated rows and with which verifier (a run that disagrees re-scores the rows
it draws). Stage 2 calls `open_bank_for` with plain arguments; stage 1 never imports this.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.bank.reader import BankReader
from pipeline.errors import UserError
from pipeline.rewards import BANK_DEFAULT, TruncatedReward

if TYPE_CHECKING:
    from pipeline.data import Problem

# what stage 2 reads of a bank row (stage2_train.rollout.bank_responses); the prompt comes from the learner's
# tokenizer, and the row's stored prompt ids must equal it
BANK_COLUMNS = ("prompt_token_ids", "response", "response_token_ids", "logprobs", "reward", "correct", "finish_reason")


@dataclass(frozen=True)
class TrainingBank:
    """A bank opened for one learner: its reader, the template its prompts were rendered
    with (the run's, now), and whether drawn rows must be re-scored by the run's verifier."""

    reader: BankReader
    template: str
    rescore: bool


def open_bank_for(uri: str, *, tokenizer: Any, template: str | None, problems: Sequence[Problem], prompts: str,
                  stops: tuple[int, ...], truncated_is: bool, truncated_reward: TruncatedReward,
                  echo: Callable[[str], None] = print) -> TrainingBank:
    """Open `uri` for a learner with `tokenizer` after checking the bank was made for it and
    for `problems` (from `prompts`, named in messages). `template` None = the bank's; another
    one than the bank's is refused. `truncated_is`: the loss divides by the bank's log-probs."""
    reader = BankReader.open(uri, columns=BANK_COLUMNS)
    identity = reader.files.identity
    check_tokenizer(identity, tokenizer, bank=uri)
    template = bank_template(identity) if template is None else template
    check_template(identity, tokenizer, template, bank=uri)
    check_coverage(reader.pool, problems, bank=uri, prompts=prompts, echo=echo)
    check_sampling(identity, stops, bank=uri, truncated_is=truncated_is, echo=echo)
    return TrainingBank(reader, template, needs_rescoring(identity, truncated_reward, echo=echo))


def bank_template(identity: Mapping) -> str:
    """The template the bank's prompts were rendered with (its `template.text`)."""
    text = identity.get("template", {}).get("text")
    if not isinstance(text, str):
        raise UserError("bank.json records no prompt template (template.text); set train.template to the one "
                        "the bank was explored with")
    return text


def check_tokenizer(identity: Mapping, tokenizer: Any, *, bank: str) -> None:
    from pipeline.models import tokenizer_fingerprint

    mine = tokenizer_fingerprint(tokenizer)
    if identity.get("tokenizer") != mine:
        raise UserError(f"{bank}: filled by an explorer whose tokenizer ({identity.get('tokenizer')}) differs from "
                        f"the learner's ({mine}); use a learner of the explorer's family or a bank made for it")


def check_template(identity: Mapping, tokenizer: Any, template: str, *, bank: str) -> None:
    from pipeline.prompts import template_fingerprint

    if identity.get("template", {}).get("fingerprint") != template_fingerprint(tokenizer, template):
        raise UserError(f"{bank}: prompts rendered with template {identity.get('template', {}).get('text')!r}, "
                        f"but train.template is {template!r}; leave train.template unset to use the bank's")


def check_coverage(pool: Mapping[str, np.ndarray], problems: Sequence[Problem], *, bank: str, prompts: str,
                   echo: Callable[[str], None]) -> None:
    """Refuse a bank that holds none of the training prompts; report the ones it lacks."""
    covered = sum(p.id in pool for p in problems)
    if covered == 0:
        raise UserError(f"{bank}: holds none of the {len(problems)} training prompts of {prompts}; "
                        "run `s2lpo explore` on these prompts first")
    if covered < len(problems):
        echo(f"warning: {len(problems) - covered} of {len(problems)} training prompts have no bank rows; "
             "their groups are generated online")


def check_sampling(identity: Mapping, stops: tuple[int, ...], *, bank: str, truncated_is: bool,
                   echo: Callable[[str], None]) -> None:
    """Truncated IS needs log-probs of the explorer's sampling distribution (banks from before
    bank.json recorded `logprobs: sampling` hold raw ones); a bank cut at another stop set is
    reported, since its responses may end on a token the learner does not stop on, or hold
    one it would have stopped on."""
    if truncated_is and identity.get("logprobs") != "sampling":
        raise UserError(f"{bank}: its log-probs are the explorer's raw distribution, not the one its tokens were "
                        "sampled from, which truncated IS divides by; rebuild the bank with this s2lpo version "
                        "or set loss.bank_correction to none or luffy")
    bank_stops = identity.get("sampling", {}).get("stop_token_ids")
    if bank_stops is None:
        echo(f"warning: {bank} does not record its stop tokens (made before s2lpo recorded them); "
             f"the learner stops on {list(stops)}")
    elif tuple(bank_stops) != tuple(stops):
        echo(f"warning: the bank's responses were cut at stop tokens {bank_stops}, the learner's are {list(stops)}; "
             "set train.stop_token_ids (or explore's) so they agree")


def needs_rescoring(identity: Mapping, truncated_reward: TruncatedReward, *, echo: Callable[[str], None]) -> bool:
    """Whether drawn rows must be re-scored: the bank's verifier is another version, or it
    zeroed truncated rows and this run verifies them."""
    from pipeline.verifier import VERIFIER_VERSION

    if identity.get("verifier", {}).get("version") != VERIFIER_VERSION:
        echo(f"bank rewards came from {identity.get('verifier', {}).get('version')}; re-scoring drawn rows with "
             f"{VERIFIER_VERSION}")
        return True
    if truncated_reward is TruncatedReward.VERIFY and bank_truncated_reward(identity) is TruncatedReward.ZERO:
        echo("bank rewards of truncated rows are zero (truncated_reward: zero) and train.truncated_reward is verify; "
             "re-scoring drawn rows")
        return True
    return False


def bank_truncated_reward(identity: Mapping) -> TruncatedReward:
    """How the bank rewarded truncated rows (banks from before the key: verify)."""
    return TruncatedReward(identity.get("truncated_reward", BANK_DEFAULT.value))


class PromptMismatch(UserError):
    """A bank row's stored prompt ids are not the learner's ids of that prompt."""


def check_prompt_ids(stored: Sequence[int], mine: Sequence[int], *, prompt: str, row: int, bank: str) -> None:
    """Refuse, in one line naming the prompt, a bank row whose prompt ids differ from the
    learner's: its response would be scored and trained after another context."""
    stored, mine = list(stored), list(mine)
    if stored == mine:
        return
    at = next((i for i, (a, b) in enumerate(zip(stored, mine)) if a != b), min(len(stored), len(mine)))
    raise PromptMismatch(f"{bank}: row {row} (prompt {prompt}) stores {len(stored)} prompt token ids, the learner "
                         f"encodes {len(mine)}, first difference at token {at} (bank {stored[at:at + 3]}, learner "
                         f"{mine[at:at + 3]}); the bank was tokenised differently: re-run `s2lpo explore` with the "
                         "learner's tokenizer and template")


def check_first_prompt(reader: BankReader, pool: Mapping[str, np.ndarray], problems: Sequence[Problem],
                       prompt_ids: Sequence[Sequence[int]], *, bank: str) -> None:
    """The first bank row of the first training prompt the bank holds: a bank whose prompts
    were tokenised another way is refused before the run writes anything (each step then
    checks the rows it draws)."""
    for problem, ids in zip(problems, prompt_ids):
        rows = pool.get(problem.id)
        if rows is not None and len(rows):
            stored = reader.read([int(rows[0])]).column("prompt_token_ids").to_pylist()[0]
            check_prompt_ids(stored, ids, prompt=problem.id, row=int(rows[0]), bank=bank)
            return
