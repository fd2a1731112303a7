"""Compare densetasks' InvPT with the authors' code (Ye & Xu, ECCV 2022),
``prismformore/Multi-Task-Transformer``, folder ``InvPT``.

Usage::

    python tools/compare_invpt.py REFERENCE_CHECKOUT [--checkout PATH]
        [--tasks semseg:40 depth:1 normals:3 edges:1] [--size 64 128] [--embed 32]
        [--prediction 16] [--seed 0]

``REFERENCE_CHECKOUT`` is a checkout of that repository (the script imports its ``InvPT``
folder; nothing of it is trained or copied); importing it needs ``einops``, ``easydict`` and
timm. Their batch norms are ``nn.SyncBatchNorm``, which runs on one process only on a GPU:
the script sets their modules' ``BATCHNORM`` to ``nn.BatchNorm2d`` before building (the
comment beside it in their code names that alternative).

The whole networks are compared on the image: their ``TransformerNet`` (their
``VisionTransformer`` with ``select_list``, ``TransformerDecoder``, ``MLPHead`` per task) and
ours on timm's ``test_vit`` (width 64, 6 blocks, 2 heads; their ViT built with the same
layout and the same four blocks: 1, 3, 4 and the normed 6), with the decoder's
``embed_dim`` / ``PRED_OUT_NUM_CONSTANT`` at ``--embed`` / ``--prediction`` (512 / 64 in their
NYUD config) and their spec otherwise. Their batch-norm statistics and affines and layer-norm
affines are randomised (the initial ones would hide a swapped norm), every one of their
weights copied into ours through a one-to-one name map (every one of ours filled once), and
both run in float64, in evaluation and training mode: every output (their ``inter_preds``
against our ``"<task>@preliminary"`` resized to the image as their ``TransformerNet`` does),
then the input and parameter gradients of a random linear function of the training outputs.
Four of their modules take no part in their forward and are not in ours (``scale_embed.2``,
``redu_chan.0``, ``norm_mt``, stage 1's ``fuse_attn``): the script checks that their gradients
stay ``None``.
"""

import argparse
import re
import subprocess
import sys

import torch
from reference_tools import comparison_parser, max_diff, parse_tasks, randomise_norms
from torch import nn
from torch.nn import functional as F

UNUSED = (
    "multi_task_decoder.scale_embed.2.",
    "multi_task_decoder.invpt.redu_chan.0.",
    "multi_task_decoder.invpt.norm_mt.",
    "multi_task_decoder.invpt.invpt_stages.0.blocks.0.attn.fuse_attn.",
)
"""Their modules that their forward never calls."""

NAME_MAP = [
    (r"backbone\.norm\.", "encoder_norm."),
    (r"backbone\.", "encoder.model."),
    (
        r"multi_task_decoder\.preliminary_decoder\.(\w+)\.(\d)\.conv\.",
        r"preliminary.\1.refine.\2.0.",
    ),
    (
        r"multi_task_decoder\.preliminary_decoder\.(\w+)\.(\d)\.bn1\.",
        r"preliminary.\1.refine.\2.1.",
    ),
    (r"multi_task_decoder\.intermediate_head\.(\w+)\.", r"preliminary.\1.predict."),
    (r"multi_task_decoder\.scale_embed\.0\.", "encoder_skips.1."),
    (r"multi_task_decoder\.scale_embed\.1\.", "encoder_skips.0."),
    (r"multi_task_decoder\.invpt\.mix_proj\.(\w+)\.0\.", r"mix.\1."),
    (r"(?:.*)invpt_stages\.(\d)\.patch_embed\.(\d+)\.proj\.1\.", r"stages.\1.up.T\2.convs.0.0."),
    (r"(?:.*)invpt_stages\.(\d)\.patch_embed\.(\d+)\.proj\.2\.", r"stages.\1.up.T\2.convs.0.1."),
    (r"(?:.*)invpt_stages\.(\d)\.patch_embed\.(\d+)\.proj\.4\.", r"stages.\1.up.T\2.convs.1.0."),
    (r"(?:.*)invpt_stages\.(\d)\.patch_embed\.(\d+)\.proj\.5\.", r"stages.\1.up.T\2.convs.1.1."),
    (r"(?:.*)invpt_stages\.(\d)\.blocks\.0\.norm(\d)\.", r"stages.\1.norm\2."),
    (r"(?:.*)invpt_stages\.(\d)\.blocks\.0\.mlp\.fc1\.", r"stages.\1.mlp.0."),
    (r"(?:.*)invpt_stages\.(\d)\.blocks\.0\.mlp\.fc2\.", r"stages.\1.mlp.2."),
    (
        r"(?:.*)invpt_stages\.(\d)\.blocks\.0\.attn\.conv_proj_q\.(\d+)\.conv\.",
        r"stages.\1.attention.queries.T\2.0.",
    ),
    (
        r"(?:.*)invpt_stages\.(\d)\.blocks\.0\.attn\.conv_proj_q\.(\d+)\.bn\.",
        r"stages.\1.attention.queries.T\2.1.",
    ),
    (r"(?:.*)invpt_stages\.(\d)\.blocks\.0\.attn\.proj_([qkv])\.", r"stages.\1.attention.\2."),
    (r"(?:.*)invpt_stages\.(\d)\.blocks\.0\.attn\.proj\.", r"stages.\1.attention.proj."),
    (r"(?:.*)invpt_stages\.(\d)\.blocks\.0\.attn\.fuse_attn\.", r"stages.\1.attention.fuse."),
    (r"multi_task_decoder\.invpt\.norm_mts\.(\d)\.", r"stage_norms.\1."),
    (r"multi_task_decoder\.invpt\.redu_chan\.(\d)\.(\d+)\.", r"reduce.R\1.T\2."),
    (r"multi_task_decoder\.invpt\.mt_proj\.(\w+)\.(\d)\.", r"fuse.\1.\2."),
    (r"heads\.(\w+)\.linear_pred\.", r"heads.\1."),
]
"""Their state-dict prefix (a regular expression) -> ours; ``T<i>`` is task ``i``'s name,
``R<i>`` their reduction of stage ``i`` (our ``reduce[i - 1]``)."""


def parse_args() -> argparse.Namespace:
    parser = comparison_parser(
        __doc__,
        "checkout of Multi-Task-Transformer",
        ["semseg:40", "depth:1", "normals:3", "edges:1"],
        "task:channels (default: their NYUD tasks)",
    )
    parser.add_argument(
        "--size", nargs=2, type=int, default=[64, 128], help="image H W (multiples of 64)"
    )
    parser.add_argument("--embed", type=int, default=32, help="their embed_dim (NYUD: 512)")
    parser.add_argument(
        "--prediction", type=int, default=16, help="their PRED_OUT_NUM_CONSTANT (NYUD: 64)"
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def build_theirs(tasks: dict[str, int], size: list[int], args, encoder) -> nn.Module:
    """Their ``TransformerNet`` as their ``get_model`` builds it, with their ViT in ``test_vit``'s
    layout and the same blocks as ``encoder``'s."""
    import models.transformers.invpt as their_invpt
    import models.transformers.transformer_decoder as their_decoder
    from easydict import EasyDict

    their_invpt.BATCHNORM = nn.BatchNorm2d
    their_decoder.BATCHNORM = nn.BatchNorm2d
    from models.transformer_net import TransformerNet
    from models.transformers.vit import VisionTransformer

    vit = encoder.model
    blocks = encoder.blocks
    if blocks[-1] != len(vit.blocks) - 1:
        raise SystemExit("their ViT's last feature is its last block, normed")
    width = encoder.token_channels
    grid = [side // 16 for side in size]
    p = EasyDict(
        TASKS=EasyDict(NAMES=list(tasks), NUM_OUTPUT=dict(tasks)),
        embed_dim=args.embed,
        PRED_OUT_NUM_CONSTANT=args.prediction,
        mtt_resolution_downsample_rate=2,
        spatial_dim=[grid] * 4,
        backbone_channels=[width] * 4,
    )
    backbone = VisionTransformer(
        select_list=[block + 1 for block in blocks[:3]],
        img_size=tuple(size),
        patch_size=16,
        embed_dim=width,
        depth=len(vit.blocks),
        num_heads=vit.blocks[0].attn.num_heads,
        mlp_ratio=vit.blocks[0].mlp.fc1.out_features / width,
        qkv_bias=True,
    )
    heads = nn.ModuleDict(
        {
            task: their_decoder.MLPHead(args.embed + args.prediction, out)
            for task, out in tasks.items()
        }
    )
    return TransformerNet(p, backbone, [width] * 4, heads)


def our_name(name: str, tasks: list[str]) -> str | None:
    """Our state-dict key of their ``name`` (None for their unused modules)."""
    if name.startswith(UNUSED):
        return None
    for pattern, replacement in NAME_MAP:
        match = re.match(pattern, name)
        if match:
            prefix = match.expand(replacement)
            prefix = re.sub(r"T(\d+)", lambda m: tasks[int(m.group(1))], prefix)
            prefix = re.sub(r"R(\d+)", lambda m: str(int(m.group(1)) - 1), prefix)
            return prefix + name[match.end() :]
    raise SystemExit(f"the name map has no rule for their {name}")


def load_into(ours: nn.Module, theirs: nn.Module, tasks: list[str]) -> dict[str, str]:
    """Copy each of their tensors into ours; every one of ours filled exactly once. Returns
    their parameter name -> ours."""
    our_state = ours.state_dict()
    filled: dict[str, str] = {}
    with torch.no_grad():
        for name, value in theirs.state_dict().items():
            key = our_name(name, tasks)
            if key is None:
                continue
            if key not in our_state:
                raise SystemExit(f"their {name} maps to {key}, which ours does not have")
            if key in filled:
                raise SystemExit(f"their {name} and {filled[key]} both map to our {key}")
            if our_state[key].shape != value.shape:
                raise SystemExit(
                    f"their {name} {tuple(value.shape)} does not fit our {key} "
                    f"{tuple(our_state[key].shape)}"
                )
            our_state[key].copy_(value)
            filled[key] = name
    missing = sorted(set(our_state) - set(filled))
    if missing:
        raise SystemExit(f"ours has tensors none of theirs fills: {missing[:8]}")
    return {name: key for key, name in filled.items()}


def row(what: str, mode: str, difference: float, scale: float) -> float:
    print(f"{what:<32} {mode:<6} {difference:10.2e} {float(scale):10.2e}")
    return difference


def main() -> None:
    args = parse_args()
    sys.path.insert(0, str(args.checkout.resolve()))
    sys.path.insert(0, str((args.reference / "InvPT").resolve()))
    from densetasks.models import create_model

    torch.set_default_dtype(torch.float64)
    tasks = parse_tasks(args.tasks)
    names = list(tasks)
    commit = subprocess.run(
        ["git", "-C", str(args.reference), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(f"reference: {args.reference} at {commit or 'unknown commit (not a git checkout)'}")
    print(
        f"tasks: {tasks}; test_vit; embed {args.embed} + prediction {args.prediction}; image "
        f"{args.size[0]}x{args.size[1]}; float64; seed {args.seed}"
    )
    torch.manual_seed(args.seed)
    ours = create_model(
        "invpt",
        tasks,
        encoder="test_vit",
        embed_channels=args.embed,
        prediction_channels=args.prediction,
    )
    ours.encoder.set_input_size(tuple(args.size))  # position embeddings on this grid
    theirs = build_theirs(tasks, args.size, args, ours.encoder)
    generator = torch.Generator().manual_seed(args.seed)
    randomise_norms(theirs, generator)
    image = torch.randn(2, 3, *args.size, generator=generator)

    def our_outputs(x: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = ours(x)
        return {
            key.replace("@preliminary", "@inter_preds"): F.interpolate(
                value, x.shape[-2:], mode="bilinear"
            )
            if key.endswith("@preliminary")
            else value
            for key, value in outputs.items()
        }

    def their_outputs(x: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = theirs(x)
        inter = outputs.pop("inter_preds")
        result = {task: outputs[task] for task in names}
        if theirs.training:
            result.update({f"{task}@inter_preds": value for task, value in inter.items()})
        return result

    print(f"\n{'output':<32} {'mode':<6} {'max |Δ|':>10} {'max |ref|':>10}")
    worst = 0.0
    for mode in ("eval", "train"):
        training = mode == "train"
        parameters = load_into(ours, theirs, names)  # training moved their running statistics
        theirs.train(training)
        ours.train(training)
        their_in = image.clone().requires_grad_(training)
        our_in = image.clone().requires_grad_(training)
        with torch.set_grad_enabled(training):
            reference = their_outputs(their_in)
            outputs = our_outputs(our_in)
        if sorted(outputs) != sorted(reference):
            raise SystemExit(f"{mode}: outputs {sorted(outputs)} vs {sorted(reference)}")
        for key in sorted(outputs):
            difference = max_diff(outputs[key], reference[key])
            scale = reference[key].detach().abs().max()
            worst = max(worst, row(key, mode, difference, scale))
        if not training:
            continue
        weights = {k: torch.randn(v.shape, generator=generator) for k, v in outputs.items()}
        sum((outputs[k] * w).sum() for k, w in weights.items()).backward()
        sum((reference[k] * w).sum() for k, w in weights.items()).backward()
        difference = max_diff(our_in.grad, their_in.grad)
        worst = max(worst, row("d/d(input)", mode, difference, their_in.grad.abs().max()))
        our_parameters = dict(ours.named_parameters())
        largest, parameter_worst = 0.0, 0.0
        for name, parameter in theirs.named_parameters():
            if name.startswith(UNUSED):
                if parameter.grad is not None:
                    raise SystemExit(f"their {name} takes part in their forward")
                continue
            ours_grad = our_parameters[parameters[name]].grad
            parameter_worst = max(parameter_worst, max_diff(ours_grad, parameter.grad))
            largest = max(largest, parameter.grad.abs().max().item())
        worst = max(worst, row("d/d(parameters)", mode, parameter_worst, largest))
    mapped = sum(p.numel() for n, p in theirs.named_parameters() if not n.startswith(UNUSED))
    unused = sum(p.numel() for n, p in theirs.named_parameters() if n.startswith(UNUSED))
    print(
        f"\nparameters: ours {sum(p.numel() for p in ours.parameters())}, theirs {mapped} "
        f"mapped + {unused} in modules their forward never calls"
    )
    print(f"largest |Δ| (outputs and gradients, eval and train): {worst:.2e}")


if __name__ == "__main__":
    main()
