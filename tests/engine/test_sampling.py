import functools
import operator

import torch

from densetasks.engine.sampling import SeededSamples, StepSampler, shard_indices


def indices(sampler):
    return [index for index, _ in sampler]


def test_each_epoch_is_a_permutation():
    order = indices(StepSampler(5, batch_size=2, steps=5, seed=0))
    assert len(order) == 10
    assert sorted(order[:5]) == list(range(5)) and sorted(order[5:]) == list(range(5))


def test_resuming_at_a_step_continues_the_same_sequence():
    full = list(StepSampler(7, batch_size=3, steps=6, seed=4))
    resumed = list(StepSampler(7, batch_size=3, steps=6, seed=4, start_step=4))
    assert resumed == full[4 * 3 :]


def test_ranks_split_each_global_batch():
    single = list(StepSampler(10, batch_size=4, steps=3, seed=1))
    ranks = [
        list(StepSampler(10, batch_size=2, steps=3, seed=1, rank=r, world_size=2)) for r in (0, 1)
    ]
    for step in range(3):
        merged = ranks[0][2 * step : 2 * step + 2] + ranks[1][2 * step : 2 * step + 2]
        assert merged == single[4 * step : 4 * step + 4]


def test_different_seeds_give_different_orders():
    assert indices(StepSampler(50, 10, 5, seed=0)) != indices(StepSampler(50, 10, 5, seed=1))


class NoisyDataset:
    def __len__(self):
        return 3

    def __getitem__(self, index):
        return index, torch.rand(())


def test_sample_randomness_is_a_function_of_its_seed_and_spares_the_global_stream():
    samples = SeededSamples(NoisyDataset())
    torch.manual_seed(0)
    first = samples[(1, 42)][1]
    after = torch.rand(())
    torch.manual_seed(0)
    assert samples[(2, 42)][1] == first
    assert samples[(2, 43)][1] != first
    assert torch.rand(()) == after


def test_shards_cover_every_sample_once():
    shards = [shard_indices(7, rank, 3) for rank in range(3)]
    assert sorted(functools.reduce(operator.iadd, shards, [])) == list(range(7))
