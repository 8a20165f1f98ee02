"""The training loop's fast paths change how batches and hooks are served, never what is
trained: the same seed gives the same batches as DataLoader(shuffle=True), and the module's
parameters, submodules and state are what nn.Module would have made of them."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from closedloop.training.module import LitClassifier
from closedloop.training.train import NoProfiler, batch_loader


def epochs(loader, n: int) -> list[list[torch.Tensor]]:
    return [[y.clone() for _, y in loader] for _ in range(n)]


@pytest.mark.parametrize("rows", [1000, 1024], ids=["short last batch", "full last batch"])
def test_shuffled_batches_and_generator_are_those_of_dataloader_shuffle(rows):
    """Three epochs: the same rows in the same batches, and the generator left in the same
    state, so the next epoch and the weights are the same too."""
    x, y = torch.arange(rows * 2.0).reshape(rows, 2), torch.arange(rows)
    theirs_gen, ours_gen = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    theirs = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True, generator=theirs_gen)
    ours = batch_loader(x, y, 64, 0, ours_gen)
    assert len(ours) == len(theirs)
    for a, b in zip(epochs(theirs, 3), epochs(ours, 3), strict=True):
        assert [t.tolist() for t in a] == [t.tolist() for t in b]
    assert torch.equal(theirs_gen.get_state(), ours_gen.get_state())


def test_unshuffled_batches_are_slices_in_order():
    x, y = torch.randn(10, 3), torch.arange(10)
    batches = list(batch_loader(x, y, 4, 0))
    assert [b[1].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batches[0][0].data_ptr() == x.data_ptr()  # views, not copies


def test_the_fast_attributes_leave_the_module_as_nn_module_makes_it():
    net = torch.nn.Linear(3, 2)
    lit = LitClassifier(net, lambda p: torch.optim.SGD(p, lr=0.1), torch.nn.CrossEntropyLoss())
    lit._current_fx_name = "training_step"
    lit._loss_sum = torch.ones(())
    lit.extra = torch.nn.Linear(2, 2)  # anything else still goes through nn.Module
    assert dict(lit.named_children()).keys() == {"model", "loss", "extra"}
    assert "_loss_sum" not in dict(lit.named_buffers())
    assert set(lit.state_dict()) == {
        "model.weight",
        "model.bias",
        "extra.weight",
        "extra.bias",
    }


def test_no_profiler_times_nothing_and_nests():
    profiler = NoProfiler()
    with profiler.profile("a"), profiler.profile("b"):
        pass
    assert profiler.summary() == ""
