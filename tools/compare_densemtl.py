"""Compare densetasks' 3-ways decoder, xTAM and mTEB with the authors' DenseMTL code.

Usage::

    python tools/compare_densemtl.py REFERENCE_CHECKOUT [--checkout PATH]
        [--tasks semseg:16 depth:1] [--size 128 96] [--seed 0]

``REFERENCE_CHECKOUT`` is a checkout of the authors' release of Lopes, Vu & de Charette,
WACV 2023 (github.com/astra-vision/DenseMTL); importing its modules needs ``easydict`` and
``termcolor``. Nothing of it is trained or copied: the script builds, at their layer widths
(ResNet-101 features of 64 / 256 / 512 / 1024 / 2048 channels at strides 2 / 4 / 8 / 16 / 16,
decoder widths 256 / 256 / 128 / 128 / 64, mTEB at scale 1 with 128 channels, d = 128, s = 4)

* theirs: one ``DecoderHead`` per task as their ``configs/synthia/resnet101_ours_SD.yml``
  builds it (``intermediate_aspp``, rates 6 / 12 / 18, side outputs at scales 0 and 1) and
  their ``OursAtt`` (ablation ``SxTAM``, ``SA``, ``add``; exchange after scale 1);
* ours: ``three_ways`` and ``three_ways_mteb`` with the options that claim to be their
  function (:data:`OUR_OPTIONS`),

randomises their batch-norm statistics and affines and the α of xTAM (at init α = 0 would hide
the attention), copies every one of their weights into ours through :func:`name_map` (one to
one: every key of each side is used once), runs both in float64 on the same random encoder
features (a fixed stand-in for both encoders) in evaluation and training mode (the same seed
before each training forward, so their ASPP dropout draws the same masks), and prints the
largest absolute difference per module, of the parameter and input gradients of a random
linear function of the training outputs, and the parameter counts.
"""

import argparse
import contextlib
import io
import math
import re
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import torch
import yaml
from reference_tools import comparison_parser, max_diff, parse_tasks, randomise_norms
from torch import nn

ENCODER_CHANNELS = (64, 256, 512, 1024, 2048)
"""ResNet-101 (and -50) feature channels, shallow to deep, as their ``ResnetEncoder`` returns."""
ENCODER_STRIDES = (2, 4, 8, 16, 16)
"""Their encoder dilates only the last stage (``use_dilation: [False, False, True]``)."""
THEIR_DECODER_WIDTHS = [64, 128, 128, 256, 256]
"""Their ``num_ch_dec``, scale 0 first (ours list the deepest first)."""
OUR_OPTIONS = {
    "aspp": "per_task",
    "aspp_options": {"dropout": 0.5},
    "decoder_widths": THEIR_DECODER_WIDTHS[::-1],
    "supervised_scales": [1],
    "mteb_scales": [1],
    "downscale": "code",
    "s": 4,
    "upsample": "nearest",
    "pair_projection": True,
}
"""Options of ``three_ways_mteb`` that should make it the authors' function
(``three_ways`` takes the first four)."""
SELF_CHANNELS = 64
"""Width of xTAM's self-attention branch at 128 channels (half, in both codes)."""


def parse_args() -> argparse.Namespace:
    parser = comparison_parser(
        __doc__,
        "checkout of astra-vision/DenseMTL",
        ["semseg:16", "depth:1"],
        "task:channels (default: their Synthia S-D config)",
    )
    parser.add_argument("--size", nargs=2, type=int, default=[128, 96], help="image H W")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="override one of OUR_OPTIONS (YAML value), to see which differences it makes",
    )
    return parser.parse_args()


class FixedFeatures(nn.Module):
    """Stands in for an encoder: returns the same feature list for any image."""

    def __init__(self, features: list[torch.Tensor]) -> None:
        super().__init__()
        self.features = features

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        return list(self.features)


def build_theirs(tasks: dict[str, int]) -> nn.Module:
    """Their ``OursAtt`` with one ``DecoderHead`` per task, as their S-D config builds them."""
    from easydict import EasyDict
    from models.ours_xatt import OursAtt
    from vendor.monodepth2.decoder import DecoderHead

    with contextlib.redirect_stdout(io.StringIO()):
        heads = nn.ModuleDict(
            {
                task: DecoderHead(
                    np.array(ENCODER_CHANNELS),
                    channels,
                    active_scales=[0, 1],
                    aspp_rates=[6, 12, 18],
                    intermediate_aspp=True,
                    num_ch_dec=THEIR_DECODER_WIDTHS,
                )
                for task, channels in tasks.items()
            }
        )
    specs = {task: EasyDict(kwargs=EasyDict(num_out_ch=c)) for task, c in tasks.items()}
    with contextlib.redirect_stdout(io.StringIO()):  # their constructors print summaries
        return OursAtt(
            nn.Identity(),
            heads,
            specs,
            ["SxTAM", "SA", "add"],
            enc_layers=[[4, 3, 2, 1], [0]],
            stages=[1],
        )


def randomise(model: nn.Module, generator: torch.Generator) -> None:
    """Batch-norm affines and running statistics and every α away from their init values."""
    randomise_norms(model, generator)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("alpha"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator))


Transform = Callable[[torch.Tensor], torch.Tensor]
Keys = dict[str, tuple[str, Transform | None]]
"""Their state-dict key -> (our key, transform of the tensor or None)."""


def unique_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state dict with each tensor once, under its first name (their ``OursAtt``
    registers the heads and exchange modules a second time under ``params``)."""
    seen: set[int] = set()
    state = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            state[name] = tensor.detach()
    return state


def _swap_self_and_xtask(weight: torch.Tensor) -> torch.Tensor:
    """Their pair projection reads ``[self, xtask]``, ours ``[xtask, self]``."""
    return torch.cat([weight[:, SELF_CHANNELS:], weight[:, :SELF_CHANNELS]], dim=1)


def _reorder_blocks(theirs: list[str], ours: list[str], width: int) -> Transform:
    """Input columns of a 1×1 conv on a concatenation of ``width``-channel blocks, from their
    source order to ours."""

    def reorder(weight: torch.Tensor) -> torch.Tensor:
        blocks = dict(zip(theirs, weight.split(width, dim=1), strict=True))
        return torch.cat([blocks[source] for source in ours], dim=1)

    return reorder


def name_map(theirs: nn.Module, tasks: list[str]) -> Keys:
    """Their state-dict key -> (our ``three_ways_mteb`` key, transform of the tensor or None)."""
    decoder = {
        ("upconv", 4, 0): None,  # their ASPP, mapped by the rules below
        **{("upconv", i, 0): f"blocks.{i}.reduce.1" for i in range(4)},
        **{("upconv", i, 1): f"blocks.{i}.fuse.1" for i in range(5)},
        ("side", 0): "outputs.0",
        ("side", 1): "outputs.1",
    }
    aspp_rules = [
        (r"convs\.([0-3])\.(\d)\.", r"branches.\1.\2."),
        (r"convs\.4\.1\.", "branches.4.project.0."),
        (r"convs\.4\.2\.", "branches.4.project.1."),
        (r"project\.([01])\.", r"project.\1."),
    ]
    keys: Keys = {}
    state = unique_state(theirs)
    for task in tasks:
        head = theirs.heads[task]
        index = {key: position for position, key in enumerate(head.convs)}
        for key, ours in decoder.items():
            prefix = f"heads.{task}.decoder.{index[key]}."
            for name in [k for k in state if k.startswith(prefix)]:
                rest = name[len(prefix) :]
                if ours is None:
                    for pattern, replacement in aspp_rules:
                        if re.match(pattern, rest):
                            mapped = re.sub(pattern, replacement, rest, count=1)
                            keys[name] = (f"decoders.{task}.blocks.4.reduce.aspp.{mapped}", None)
                else:
                    rest = rest.removeprefix("block.0.conv.")
                    keys[name] = (f"decoders.{task}.{ours}.{rest}", None)
    pair_rules = [
        (r"extract_(\w+?)\.0\.", "directional.0."),
        (r"SA_(\w+?)\.attention\.0\.", "self_attention.mask."),
        (r"SA_(\w+?)\.conv\.", "self_attention.features."),
        (r"SxTAM_(\w+?)\.alpha$", "correlations.0.alpha"),
        (r"SxTAM_(\w+?)\.conv_b\.", "correlations.0.target_projection."),
        (r"SxTAM_(\w+?)\.conv_c\.", "correlations.0.source_projection."),
        (r"SxTAM_(\w+?)\.conv_d\.", "correlations.0.value_projection."),
        (r"proj_(\w+?)\.", "projection."),
    ]
    for name in state:
        match = re.match(r"m\.(\w+?)\.1\.(.*)$", name)
        if match is None:
            continue
        target, rest = match.groups()
        if rest.startswith("post."):
            # their OursAtt concatenates the sources in the order of a set
            order = list({source for source in theirs.tasks if source != target})
            ours = [source for source in tasks if source != target]
            transform = _reorder_blocks(order, ours, 128) if rest == "post.0.weight" else None
            keys[name] = (f"exchanges.1.fuse.{target}.{rest.removeprefix('post.')}", transform)
            continue
        for pattern, replacement in pair_rules:
            pair = re.match(pattern, rest)
            if pair:
                suffix = rest[pair.end() :]
                swap = _swap_self_and_xtask if rest == f"proj_{pair.group(1)}.0.weight" else None
                xtam = f"exchanges.1.xtams.{pair.group(1)}_to_{target}"
                keys[name] = (f"{xtam}.{replacement}{suffix}", swap)
    unmapped = sorted(set(state) - set(keys))
    if unmapped:
        raise SystemExit(f"name_map leaves their keys unmapped: {unmapped}")
    return keys


def load_into(ours: nn.Module, theirs: nn.Module, keys: Keys) -> None:
    """Copy their weights into ``ours`` (strict: every one of our keys gets exactly one)."""
    state = unique_state(theirs)
    wanted = set(ours.state_dict())
    mapped = {}
    for name, (key, transform) in keys.items():
        if key in wanted:
            mapped[key] = state[name] if transform is None else transform(state[name])
    if len(mapped) != len({key for key, _ in keys.values() if key in wanted}):
        raise SystemExit("name_map maps two of their keys onto one of ours")
    try:
        ours.load_state_dict(mapped, strict=True)
    except RuntimeError as error:
        raise SystemExit(f"their weights do not fit ours one to one: {error}") from error


class Report:
    """Prints one row per comparison and keeps the largest difference."""

    def __init__(self) -> None:
        self.worst = 0.0

    def row(self, module: str, mode: str, difference: float, scale: float) -> None:
        """``difference``: max |ours − theirs|; ``scale``: max |theirs|, for reading it."""
        self.worst = max(self.worst, difference)
        print(f"{module:<46} {mode:<6} {difference:10.2e} {scale:10.2e}")


def hooked(modules: dict[str, nn.Module]) -> tuple[dict[str, torch.Tensor], list]:
    """Forward hooks that store each module's output under its name, and their handles."""
    outputs: dict[str, torch.Tensor] = {}
    handles = [
        module.register_forward_hook(
            lambda _m, _i, output, name=name: outputs.__setitem__(name, output)
        )
        for name, module in modules.items()
    ]
    return outputs, handles


def compare_exchange(
    report: Report,
    theirs: nn.Module,
    ours_model: nn.Module,
    keys: Keys,
    tasks: list[str],
    size: list[int],
    generator: torch.Generator,
) -> None:
    """xTAM pair blocks and the mTEB on random scale-1 features (128 channels, 1/2 size)."""
    height, width = size[0] // 2, size[1] // 2
    code = {t: torch.randn(2, 128, height, width, generator=generator) for t in tasks}
    block = ours_model.exchanges["1"]
    pairs = [(s, t) for t in tasks for s in tasks if s != t]
    for mode in ("eval", "train"):
        load_into(ours_model, theirs, keys)
        theirs.train(mode == "train")
        block.train(mode == "train")
        their_pairs, their_handles = hooked(
            {f"{s}->{t}": theirs.m[t]["1"][f"proj_{s}"] for s, t in pairs}
        )
        our_pairs, our_handles = hooked({f"{s}->{t}": block.xtams[f"{s}_to_{t}"] for s, t in pairs})
        with torch.no_grad():
            their_out = theirs.distillation_block(dict(code), stage=1)
            our_out = block(dict(code))
        for handle in their_handles + our_handles:
            handle.remove()
        for pair in our_pairs:
            difference = max_diff(our_pairs[pair], their_pairs[pair])
            report.row(f"xTAM {pair} (pair block)", mode, difference, their_pairs[pair].abs().max())
        for task in tasks:
            difference = max_diff(our_out[task], their_out[task])
            report.row(f"mTEB -> {task}", mode, difference, their_out[task].abs().max())


def their_outputs(theirs: nn.Module, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """Their ``{(task, scale): tensor}`` under our keys (``task``, ``task@scale1``)."""
    outputs = theirs({("color_aug", 0, 0): image})
    return {t if s == 0 else f"{t}@scale{s}": value for (t, s), value in outputs.items()}


def compare_networks(
    report: Report,
    theirs: nn.Module,
    ours_models: dict[str, nn.Module],
    keys: Keys,
    tasks: list[str],
    size: list[int],
    generator: torch.Generator,
    seed: int,
) -> None:
    """The 3-ways decoders (no exchange) and the whole network, eval and train, and the
    gradients of a random linear function of the training outputs."""
    features = [
        torch.randn(2, c, math.ceil(size[0] / s), math.ceil(size[1] / s), generator=generator)
        for c, s in zip(ENCODER_CHANNELS, ENCODER_STRIDES, strict=True)
    ]
    image = torch.zeros(2, 3, *size)
    for label, ours in ours_models.items():
        exchange = label == "network"
        for mode in ("eval", "train"):
            training = mode == "train"
            their_in = [f.clone().requires_grad_(training) for f in features]
            our_in = [f.clone().requires_grad_(training) for f in features]
            theirs.backbone = FixedFeatures(their_in)
            ours.encoder = FixedFeatures(our_in)
            load_into(ours, theirs, keys)  # their running statistics moved in training mode
            theirs.train(training)
            ours.train(training)
            with torch.set_grad_enabled(training):
                torch.manual_seed(seed)
                if exchange:
                    reference = their_outputs(theirs, image)
                else:
                    reference = {}
                    for task in tasks:
                        head = theirs.heads[task](enc_outs=their_in)
                        reference |= {task: head[0], f"{task}@scale1": head[1]}
                torch.manual_seed(seed)
                outputs = ours(image)
            for key in sorted(outputs):
                what = f"{'3-ways + mTEB' if exchange else '3-ways decoder'} {key}"
                report.row(
                    what, mode, max_diff(outputs[key], reference[key]), reference[key].abs().max()
                )
            if not training:
                continue
            weights = {k: torch.randn(v.shape, generator=generator) for k, v in outputs.items()}
            sum((outputs[k] * w).sum() for k, w in weights.items()).backward()
            sum((reference[k] * w).sum() for k, w in weights.items()).backward()
            name = "3-ways + mTEB" if exchange else "3-ways decoder"
            report.row(
                f"{name}: d/d(features)",
                mode,
                max(max_diff(a.grad, b.grad) for a, b in zip(our_in, their_in, strict=True)),
                max(b.grad.abs().max() for b in their_in),
            )
            ours_parameters = dict(ours.named_parameters())
            worst, largest = 0.0, 0.0
            for their_name, parameter in theirs.named_parameters():
                key, transform = keys[their_name]
                if key not in ours_parameters or parameter.grad is None:
                    continue
                grad = parameter.grad if transform is None else transform(parameter.grad)
                worst = max(worst, max_diff(ours_parameters[key].grad, grad))
                largest = max(largest, grad.abs().max().item())
            report.row(f"{name}: d/d(parameters)", mode, worst, largest)
            theirs.zero_grad(set_to_none=True)
            ours.zero_grad(set_to_none=True)


def count(module: nn.Module) -> int:
    """Number of parameters."""
    return sum(parameter.numel() for parameter in module.parameters())


def main() -> None:
    args = parse_args()
    sys.path.insert(0, str(args.checkout.resolve()))
    sys.path.insert(0, str(args.reference.resolve()))
    from densetasks.models import create_model

    torch.set_default_dtype(torch.float64)
    tasks = parse_tasks(args.tasks)
    options = dict(OUR_OPTIONS)
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in options:
            raise SystemExit(f"--set {item}: {key!r} is none of {sorted(options)}")
        options[key] = yaml.safe_load(value)
    names = list(tasks)
    commit = subprocess.run(
        ["git", "-C", str(args.reference), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(f"reference: {args.reference} at {commit or 'unknown commit'}")
    print(f"tasks: {tasks}; image {args.size[0]}x{args.size[1]}; float64; seed {args.seed}")
    print(f"our options: {options}")

    torch.manual_seed(args.seed)
    theirs = build_theirs(tasks)
    generator = torch.Generator().manual_seed(args.seed)
    randomise(theirs, generator)
    keys = name_map(theirs, names)
    mteb = create_model("three_ways_mteb", tasks, encoder="resnet101", **options)
    plain_keys = ("aspp", "aspp_options", "decoder_widths", "supervised_scales")
    plain = create_model(
        "three_ways", tasks, encoder="resnet101", **{k: options[k] for k in plain_keys}
    )
    shared = create_model("three_ways", tasks, encoder="resnet101")  # our defaults
    for model in (mteb, plain, shared):
        model.encoder = nn.Identity()

    print(f"\n{'module':<46} {'mode':<6} {'max |Δ|':>10} {'max |ref|':>10}")
    report = Report()
    compare_exchange(report, theirs, mteb, keys, names, args.size, generator)
    networks = {"decoder": plain, "network": mteb}
    compare_networks(report, theirs, networks, keys, names, args.size, generator, args.seed)
    print(f"\nlargest |Δ| over all rows: {report.worst:.2e}")

    print("\nparameters (decoders and exchange; the encoder excluded)")
    their_heads, their_block = count(theirs.heads), count(theirs.m)
    print(f"  theirs: decoders with per-task ASPP {their_heads:,}; mTEB {their_block:,}")
    print(
        f"  ours aspp: per_task: decoders {count(plain.decoders):,}; mTEB {count(mteb.exchanges):,}"
    )
    shared_total = count(shared.bottleneck) + count(shared.decoders)
    print(
        f"  ours aspp: shared (default): ASPP {count(shared.bottleneck):,} + decoders "
        f"{count(shared.decoders):,} = {shared_total:,}"
    )


if __name__ == "__main__":
    main()
