import numpy as np
import pytest
import torch

from pipeline.testbed import task
from pipeline.testbed.sft import IGNORE_INDEX, SFTSettings, collate, demonstration_batch, lr_at, train_sft


def test_collate_masks_prompt_and_padding():
    ids, mask, labels = collate([[1, 5, 6], [1, 7]], [[8, 2], [9, 10, 2]], pad_id=0)
    assert ids.tolist() == [[1, 5, 6, 8, 2], [1, 7, 9, 10, 2]]
    assert labels.tolist() == [[IGNORE_INDEX] * 3 + [8, 2], [IGNORE_INDEX] * 2 + [9, 10, 2]]
    assert mask.tolist() == [[1] * 5, [1] * 5]
    ids, mask, labels = collate([[1, 5]], [[2]], pad_id=0)
    ids2, mask2, labels2 = collate([[1, 5], [1, 5, 6, 7]], [[2], [2]], pad_id=0)
    assert ids2[0].tolist() == [1, 5, 2, 0, 0] and mask2[0].tolist() == [1, 1, 1, 0, 0]
    assert labels2[0].tolist() == [IGNORE_INDEX, IGNORE_INDEX, 2, IGNORE_INDEX, IGNORE_INDEX]


def test_lr_schedule_warmup_then_cosine_to_zero():
    s = SFTSettings(lr=1.0, warmup_steps=10)
    assert lr_at(0, 110, s) == pytest.approx(0.1)
    assert lr_at(9, 110, s) == pytest.approx(1.0)
    assert lr_at(60, 110, s) == pytest.approx(0.5)
    assert lr_at(110, 110, s) == pytest.approx(0.0)


def test_demonstrations_avoid_excluded_problems():
    spec = task.TaskSpec(low=10, high=11)  # only 8 distinct problems
    excluded = frozenset({(10, 10, 10), (11, 11, 11)})
    pairs = demonstration_batch(np.random.default_rng(0), 50, spec, excluded)
    assert len(pairs) == 50
    assert not {p for p, _ in pairs} & {"10+10+10=", "11+11+11="}


def test_sft_lowers_loss_and_changes_every_parameter(char_tokenizer):
    from pipeline.testbed.model import ModelShape, build_model

    model = build_model(ModelShape(1, 64), char_tokenizer, seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = train_sft(model, char_tokenizer, steps=40, settings=SFTSettings(batch_size=16, warmup_steps=5),
                       spec=task.TaskSpec(), seed=0)
    assert len(losses) == 40 and np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.6 * losses[0]
    for name, p in model.named_parameters():
        assert not torch.equal(p, before[name]), name
