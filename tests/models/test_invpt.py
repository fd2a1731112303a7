"""InvPT (Ye & Xu, ECCV 2022; the authors' code): preliminary predictions at stride 32 as
training-only auxiliary outputs, grids the authors' code cannot take, the cross-task attention
and its cross-scale message passing computed by hand, what is shared, gradients reaching
every weight and a short training run (every balancer: test_partial_sharing_balancers.py).

Equality with the authors' code is checked by tools/compare_invpt.py (docs/models.md); the
registry-wide tests train, resume, predict and export it on ``test_vit``.
"""

import pytest
import torch
from torch.nn import functional as F

from densetasks.errors import ConfigError
from densetasks.models import create_model
from densetasks.models.architectures.invpt import CrossTaskAttention
from densetasks.tasks.registry import create_task

from .sharing import synthetic_batch

TASKS = {"semseg": 5, "depth": 1, "normals": 3}
NARROW = {"embed_channels": 16, "prediction_channels": 8}

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: fastest on one thread


def invpt(tasks: dict[str, int] = TASKS, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("invpt", tasks, encoder="test_vit", **{**NARROW, **options})


@pytest.mark.parametrize(
    ("size", "preliminary"),
    [((64, 96), (2, 3)), ((48, 80), (2, 3)), ((24, 32), (1, 1))],
)
def test_preliminary_predictions_at_stride_32_are_auxiliary_outputs_in_training_only(
    size, preliminary
):
    """64×96: the token grid 4×6 halved; 48×80 (grid 3×5) and 24×32 (padded to grid 2×2),
    which the authors' code (image sides multiples of 64) cannot take, halved rounding up."""
    model = invpt(aux_weight=0.4)
    image = torch.randn(2, 3, *size)
    outputs = model.train()(image)
    for task, channels in TASKS.items():
        assert outputs[task].shape == (2, channels, *size)
        assert outputs[f"{task}@preliminary"].shape == (2, channels, *preliminary)
    declared = {aux.key: aux.weight for aux in model.auxiliary_outputs}
    assert declared == {f"{task}@preliminary": 0.4 for task in TASKS}
    assert set(outputs) == set(TASKS) | set(declared)
    with torch.no_grad():
        assert set(model.eval()(image)) == set(TASKS)


def test_the_stage_widths_and_the_encoder_skips_follow_the_authors_spec():
    """D = 512 + 64 by default, stages D, D/2, D/4 with 2 heads; the skips from block 12
    (stride 16, D/2) and block 6 (transposed conv to stride 8, D/4) of a ViT-L's four."""
    model = create_model("invpt", {"depth": 1}, encoder="test_vit")
    assert [norm.normalized_shape[0] for norm in model.stage_norms] == [576, 288, 144]
    assert [stage.attention.heads for stage in model.stages] == [2, 2, 2]
    assert [stage.mlp[0].out_features for stage in model.stages] == [2304, 1152, 576]
    assert [stage.attention.pool.kernel_size for stage in model.stages] == [2, 4, 8]
    assert model.encoder_skips[0].out_channels == 288
    assert model.encoder_skips[1].out_channels == 144
    assert model.encoder_skips[1].stride == (2, 2)


def test_attention_runs_over_every_tasks_tokens_as_computed_by_hand():
    """Two heads of width 4: ``softmax(q kᵀ / √8) v`` (scaled by the whole width 8, as the
    authors' code does) with the queries of both tasks (depthwise conv + BN, stride 2, then
    the shared linear) against the keys of both (2×2 average pooling): task ``a``'s output
    moves when only task ``b``'s map does."""
    torch.manual_seed(0)
    attention = CrossTaskAttention(["a", "b"], 8, heads=2, pooling=2, fuse=False).eval()
    maps = {"a": torch.randn(1, 8, 4, 6), "b": torch.randn(1, 8, 4, 6)}

    def heads(x: torch.Tensor) -> torch.Tensor:  # [1, L, 8] -> [1, 2, L, 4]
        return x.reshape(1, -1, 2, 4).transpose(1, 2)

    with torch.no_grad():
        outputs, (scores, grid) = attention(maps, None)
        queries = torch.cat([attention.queries[t](maps[t]).flatten(2) for t in maps], 2)
        keys = torch.cat([F.avg_pool2d(maps[t], 2).flatten(2) for t in maps], 2)
        q, k, v = (
            heads(layer(x.transpose(1, 2)))
            for layer, x in ((attention.q, queries), (attention.k, keys), (attention.v, keys))
        )
        expected_scores = q @ k.transpose(2, 3) / 8**0.5
        mixed = (torch.softmax(expected_scores, -1) @ v).transpose(1, 2).reshape(1, 12, 8)
        mixed = attention.proj(mixed)
        for index, task in enumerate(maps):
            rows = mixed[:, 6 * index : 6 * (index + 1)].transpose(1, 2).reshape(1, 8, 2, 3)
            expected = F.interpolate(rows, (4, 6), mode="bilinear", align_corners=False)
            torch.testing.assert_close(outputs[task], expected)
        assert grid == (2, 3) and scores.shape == (1, 2, 12, 12)
        torch.testing.assert_close(scores, expected_scores)
        moved, _ = attention({"a": maps["a"], "b": maps["b"] + 1}, None)
    assert not torch.allclose(moved["a"], outputs["a"])


def test_the_previous_stages_scores_are_resized_per_task_and_fused_over_the_heads():
    """With the 1×1 fuse passing only the previous scores, this stage's scores are each
    task's rows of the previous ones resized bilinearly from its query grid to this one."""
    torch.manual_seed(0)
    attention = CrossTaskAttention(["a", "b"], 8, heads=2, pooling=4, fuse=True).eval()
    with torch.no_grad():
        attention.fuse.weight.zero_()
        attention.fuse.bias.zero_()
        attention.fuse.weight[0, 2, 0, 0] = 1.0  # head 0 <- previous head 0
        attention.fuse.weight[1, 3, 0, 0] = 1.0
        previous = torch.randn(1, 2, 2 * 6, 12)  # two tasks' 2×3 query grids, 2 × 6 keys
        maps = {"a": torch.randn(1, 8, 8, 12), "b": torch.randn(1, 8, 8, 12)}
        _, (scores, grid) = attention(maps, (previous, (2, 3)))
    assert grid == (4, 6)
    for index in range(2):
        rows = previous[:, :, 6 * index : 6 * (index + 1)].reshape(2, 2, 3, 12)
        resized = F.interpolate(rows.permute(0, 3, 1, 2), (4, 6), mode="bilinear")
        expected = resized.permute(0, 2, 3, 1).reshape(1, 2, 24, 12)
        torch.testing.assert_close(scores[:, :, 24 * index : 24 * (index + 1)], expected)


def test_a_cnn_encoder_and_bad_widths_are_refused():
    with pytest.raises(ConfigError, match="InvPT decodes a plain ViT's tokens.*TinyEncoder"):
        create_model("invpt", TASKS, encoder="tiny")
    with pytest.raises(ConfigError, match="divisible by 4 × heads.*got 16 \\+ 6, heads 2"):
        create_model("invpt", TASKS, encoder="test_vit", embed_channels=16, prediction_channels=6)
    with pytest.raises(ConfigError, match="aux_weight >= 0"):
        invpt(aux_weight=-1.0)


def test_every_weight_gets_a_gradient_and_the_preliminary_branches_are_each_tasks_own():
    """Every parameter moves the training loss; every task's loss reaches the stages, the
    mixes and the skips (declared shared, the stages' last MLP is GradNorm's layer), while a
    task's final convs and head are reached by its loss only."""
    model = invpt().train()
    outputs = model(torch.randn(2, 3, 64, 64))
    sum((value - 1).square().mean() for value in outputs.values()).backward()
    zero = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert zero == []
    shared = {id(p) for p in model.shared_parameters()}
    names = {n for n, p in model.named_parameters() if id(p) in shared}
    assert {n.split(".")[0] for n in names} == {
        "encoder",
        "encoder_norm",
        "mix",
        "encoder_skips",
        "stages",
        "stage_norms",
    }
    assert model.last_shared_layer() == [model.stages[2].mlp[2].weight]
    model.zero_grad(set_to_none=True)
    model(torch.randn(2, 3, 64, 64))["depth"].mean().backward()
    assert all(p.grad is not None for p in model.shared_parameters())
    for task in ("semseg", "normals"):
        assert all(p.grad is None for p in model.heads[task].parameters())
        assert all(p.grad is None for p in model.fuse[task].parameters())
        assert model.preliminary[task].predict.weight.grad is not None  # read by depth


def test_a_short_training_run_lowers_the_loss():
    """30 Adam steps on two 64 px synthetic scenes (preliminary outputs 2×2, supervised too):
    the loss falls to about half (4.75 -> 2.44 when written)."""
    model = invpt({"semseg": 8, "depth": 1}).train()
    batch = synthetic_batch(["semseg", "depth"], size=64)
    tasks = {"semseg": create_task("semseg", num_classes=8), "depth": create_task("depth")}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        outputs = model(batch["image"])
        loss = 0.0
        for name, task in tasks.items():
            for key in (name, f"{name}@preliminary"):
                output = task.resize_output(outputs[key], batch["image"].shape[-2:])
                loss = loss + task.loss(output, task.target(batch))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses
