"""Training helpers: the memoised distillation teacher gives the same fine-tune as the plain one."""

from dataclasses import replace

import pytest
import torch

import amc
from amc.data import load_dataset
from amc.finetune import DEFAULT_CONFIG
from amc.models import create
from amc.train import MemoizedTeacher, train


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _teacher():
    return create("digits_cnn", num_classes=10, weights=amc.models.bundled_weights("digits_cnn"))


def _finetune(digits, teacher, out, seed=0):
    torch.manual_seed(1)
    student = create("digits_cnn", num_classes=10)  # untrained: the teacher's logits matter
    config = replace(DEFAULT_CONFIG, epochs=2, precision="fp32", distill_alpha=0.5, seed=seed, batch_size=64)
    final = train(student, digits, out, config, teacher=teacher)
    return student.state_dict(), final


def test_memoized_teacher_trains_the_same_student_and_computes_each_batch_once(digits, tmp_path):
    plain_state, plain_final = _finetune(digits, _teacher(), tmp_path / "a.pt")
    memo = MemoizedTeacher(_teacher())
    first_state, first_final = _finetune(digits, memo, tmp_path / "b.pt")
    batches = memo.misses
    assert batches > 10 and memo.hits == 0  # two epochs of distinct augmented batches
    second_state, _ = _finetune(digits, memo, tmp_path / "c.pt")  # the same data order: every batch remembered
    assert memo.misses == batches and memo.hits == batches
    for state in (first_state, second_state):
        assert state.keys() == plain_state.keys()
        assert all(torch.equal(state[k], plain_state[k]) for k in plain_state)
    assert first_final["test_top1"] == plain_final["test_top1"]
    _finetune(digits, memo, tmp_path / "d.pt", seed=1)  # another data order: new batches
    assert memo.misses > batches


def test_memoized_teacher_keys_on_the_batch_and_the_autocast_state():
    memo = MemoizedTeacher(torch.nn.Linear(4, 2)).eval()
    x = torch.randn(3, 4)
    assert torch.equal(memo(x), memo(x.clone())) and (memo.hits, memo.misses) == (1, 1)
    memo(x + 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        memo(x)
    assert (memo.hits, memo.misses) == (1, 3)
    again = MemoizedTeacher(memo.teacher, memo.computed()).eval()  # shared with a later run
    again(x)
    assert (again.hits, again.misses) == (1, 0) and again.computed() == {}
    memo.train()
    memo(x)  # a training teacher is never remembered
    assert (memo.hits, memo.misses) == (1, 3)
