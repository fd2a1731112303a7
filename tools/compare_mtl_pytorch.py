"""Compare densetasks' cross-stitch, NDDR-CNN, MTAN, PAD-Net and MTI-Net with the code of the
survey of Vandenhende et al. (TPAMI 2021), ``SimonVandenhende/Multi-Task-Learning-PyTorch``.

Usage::

    python tools/compare_mtl_pytorch.py REFERENCE_CHECKOUT [--checkout PATH]
        [--tasks semseg:40 depth:1 normals:3] [--backbone resnet50] [--size 64 96] [--seed 0]

``REFERENCE_CHECKOUT`` is a checkout of that repository; importing its model modules needs
``easydict`` and ``termcolor``, and its ``models/resnet.py`` imports
``torchvision.models.utils``, which newer torchvision lacks: the script provides that one
name (``load_state_dict_from_url``, torch.hub's) before importing it. Nothing of it is trained
or copied. For each architecture the script builds their network as their NYUD / PASCAL
configs do and ours with the options that claim to be their function, randomises their
batch-norm statistics and affines and their cross-stitch / NDDR weights (at init the
structured values would hide a transposed index), copies every one of their weights into ours
through a name map (one to one: each of their tensors fills one of ours or one row of ours,
and every one of ours is filled), runs both in float64 in evaluation and training mode (the
same seed before each training forward, so the ASPP dropout of their DeepLab heads draws the
same masks) and prints the largest absolute difference per output, of the input gradients
and of the parameter gradients of a random linear function of the training outputs.

What is compared, exactly:

* **encoder**: their ``ResnetDilated(resnet50)`` (output stride 8) against our timm
  ``resnet50`` at output stride 8 with their weights, stage by stage.
* **cross-stitch**, **MTAN**: the whole networks (per-task ASPP + DeepLab heads) on the image;
  our columns are the timm encoder, whose stages 1 … 4 end where their layer1 … layer4 do.
* **NDDR-CNN**: (a) NDDR layers after layer1 … layer4 on our timm encoder against their
  ``nddr_stages`` without ``conv``; (b) their default, a layer also after the stem *and its
  max-pool*, against ours on an encoder whose stages are theirs (:class:`TheirStages`): our
  timm encoder's stage 0 ends before the max-pool, so our default puts that layer there.
* **PAD-Net**, **MTI-Net**: their backbone is HRNet; both networks get the same random
  feature maps instead (:class:`FixedFeatures`): for MTI-Net the four HRNet-18 branches (18 /
  36 / 72 / 144 channels at strides 4 … 32), for PAD-Net the fused HRNet-18 map (270 channels
  at stride 4), with their heads (HRNet heads for MTI-Net).
"""

import argparse
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path

import torch
from reference_tools import comparison_parser, max_diff, parse_tasks, randomise_norms
from torch import nn

HRNET18_CHANNELS = (18, 36, 72, 144)
"""HRNet-w18's four branches, strides 4 / 8 / 16 / 32 (their ``get_backbone``)."""
RESNET_CHANNELS = {"resnet18": (64, 128, 256, 512), "resnet50": (256, 512, 1024, 2048)}
"""layer1 … layer4 widths."""
THEIR_STAGES = ("conv", "layer1_without_conv", "layer2", "layer3", "layer4")
"""Their ``forward_stage`` names of NDDR-CNN's ``all_stages``."""

Keys = dict[str, tuple[str, int | None]]
"""Their state-dict key -> (our key, row of our tensor it fills or None for all of it)."""


def parse_args() -> argparse.Namespace:
    parser = comparison_parser(
        __doc__,
        "checkout of Multi-Task-Learning-PyTorch",
        ["semseg:40", "depth:1", "normals:3"],
        "task:channels (default: NYUD's 40 classes, depth and normals)",
    )
    parser.add_argument(
        "--backbone",
        choices=sorted(RESNET_CHANNELS),
        default="resnet50",
        help="ResNet of cross-stitch, NDDR-CNN and MTAN (their NYUD configs: resnet50)",
    )
    parser.add_argument("--size", nargs=2, type=int, default=[64, 96], help="image H W")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def import_reference(path: Path) -> None:
    """Put their checkout on the path; provide ``torchvision.models.utils``."""
    shim = types.ModuleType("torchvision.models.utils")
    shim.load_state_dict_from_url = torch.hub.load_state_dict_from_url
    sys.modules.setdefault("torchvision.models.utils", shim)
    sys.path.insert(0, str(path.resolve()))


def their_config(tasks: dict[str, int]):
    """The parts of their ``p`` that the model constructors read."""
    from easydict import EasyDict

    names = list(tasks)
    task_dict = EasyDict(NAMES=names, NUM_OUTPUT=dict(tasks))
    return EasyDict(TASKS=task_dict, AUXILARY_TASKS=task_dict)


def their_resnet(backbone: str) -> nn.Module:
    """Their ``get_backbone``: a torchvision-style ResNet, dilated to output stride 8."""
    from models import resnet
    from models.resnet_dilated import ResnetDilated

    return ResnetDilated(getattr(resnet, backbone)(pretrained=False))


def their_heads(tasks: dict[str, int], channels: int) -> nn.ModuleDict:
    """Their ``DeepLabHead`` (ASPP 12 / 24 / 36 with dropout 0.5, 3×3 conv, 1×1) per task."""
    from models.aspp import DeepLabHead

    return nn.ModuleDict({task: DeepLabHead(channels, out) for task, out in tasks.items()})


class TheirStages(nn.Module):
    """Their ResNet as one of our encoders, split into their stages (:data:`THEIR_STAGES`):
    stage 0 is the stem *with* its max-pool."""

    def __init__(self, backbone: str) -> None:
        from densetasks.models.base import FeatureSpec

        super().__init__()
        self.backbone = backbone
        self.resnet = their_resnet(backbone)
        channels = RESNET_CHANNELS[backbone]
        self.feature_info = [FeatureSpec(64, 4)] + [
            FeatureSpec(c, s) for c, s in zip(channels, (4, 8, 8, 8), strict=True)
        ]

    def forward_stages(self, inputs: torch.Tensor, start: int = 0, end: int | None = None):
        features = []
        for stage in THEIR_STAGES[start : len(THEIR_STAGES) if end is None else end]:
            inputs = self.resnet.forward_stage(inputs, stage)
            features.append(inputs)
        return features

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_stages(image)

    def rebuild(self) -> "TheirStages":
        """Another column (``Encoder.rebuild``)."""
        return TheirStages(self.backbone)


class FixedFeatures(nn.Module):
    """Stands in for both backbones: the same feature maps for any image. Ours reads the list;
    theirs (``single=True``) the one map."""

    def __init__(self, features: list[torch.Tensor], strides: tuple[int, ...], single=False):
        from densetasks.models.base import FeatureSpec

        super().__init__()
        self.features = features
        self.single = single
        self.feature_info = [
            FeatureSpec(f.shape[1], s) for f, s in zip(features, strides, strict=True)
        ]

    def forward(self, image: torch.Tensor):
        return self.features[0] if self.single else list(self.features)


def randomise(model: nn.Module, generator: torch.Generator) -> None:
    """In float64 (their cross-stitch α are ``torch.FloatTensor``, float32 whatever the default
    type), with batch-norm affines and running statistics, cross-stitch α and NDDR weights
    away from their initial values."""
    model.double()
    randomise_norms(model, generator)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "cross_stitch" in name or "nddr" in name:
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach() for name, tensor in model.state_dict().items()}


def load_into(ours: nn.Module, theirs: nn.Module, keys: Keys) -> None:
    """Copy their tensors into ours; every one of ours must be filled exactly once (a whole
    tensor, or each of its rows)."""
    their_state, our_state = state(theirs), ours.state_dict()
    unmapped = sorted(set(their_state) - set(keys))
    if unmapped:
        raise SystemExit(f"the name map leaves their keys unmapped: {unmapped[:8]}")
    filled: dict[str, set] = {}
    with torch.no_grad():
        for name, (key, row) in keys.items():
            if key not in our_state:
                raise SystemExit(f"their {name} maps to {key}, which ours does not have")
            target = our_state[key] if row is None else our_state[key][row]
            if target.shape != their_state[name].shape:
                raise SystemExit(
                    f"their {name} {tuple(their_state[name].shape)} does not fit our {key} "
                    f"{tuple(target.shape)}"
                )
            target.copy_(their_state[name])
            filled.setdefault(key, set()).add(row)
    for key, value in our_state.items():
        rows = filled.get(key, set())
        expected = {None} if row_count(value, rows) is None else set(range(len(value)))
        if rows != expected:
            raise SystemExit(f"our {key} is filled {sorted(rows, key=str)}, not once")


def row_count(value: torch.Tensor, rows: set) -> int | None:
    """None when ``value`` is filled whole (or not at all), else its number of rows."""
    return None if not rows or rows == {None} else len(value)


class Report:
    """Prints one row per comparison and keeps the largest difference per architecture."""

    def __init__(self) -> None:
        self.worst: dict[str, float] = {}

    def row(self, network: str, what: str, mode: str, difference: float, scale: float) -> None:
        self.worst[network] = max(self.worst.get(network, 0.0), difference)
        print(f"{network:<14} {what:<38} {mode:<6} {difference:10.2e} {float(scale):10.2e}")


Outputs = Callable[[torch.Tensor], dict[str, torch.Tensor]]


def compare(
    report: Report,
    network: str,
    theirs: tuple[nn.Module, Outputs],
    ours: tuple[nn.Module, Outputs],
    keys: Keys,
    make_input: Callable[[bool], tuple[torch.Tensor, torch.Tensor]],
    seed: int,
    generator: torch.Generator,
) -> None:
    """Outputs in eval and train mode, then input and parameter gradients of a random linear
    function of the training outputs. ``make_input(requires_grad)`` gives (their input, our
    input), equal tensors that gradients flow into separately."""
    their_model, their_forward = theirs
    our_model, our_forward = ours
    for mode in ("eval", "train"):
        training = mode == "train"
        load_into(our_model, their_model, keys)  # training moved their running statistics
        their_model.train(training)
        our_model.train(training)
        their_in, our_in = make_input(training)
        with torch.set_grad_enabled(training):
            torch.manual_seed(seed)
            reference = their_forward(their_in)
            torch.manual_seed(seed)
            outputs = our_forward(our_in)
        if sorted(outputs) != sorted(reference):
            raise SystemExit(f"{network} {mode}: outputs {sorted(outputs)} vs {sorted(reference)}")
        for key in sorted(outputs):
            difference = max_diff(outputs[key], reference[key])
            report.row(network, key, mode, difference, reference[key].detach().abs().max())
        if not training:
            continue
        weights = {k: torch.randn(v.shape, generator=generator) for k, v in outputs.items()}
        sum((outputs[k] * w).sum() for k, w in weights.items()).backward()
        sum((reference[k] * w).sum() for k, w in weights.items()).backward()
        report.row(
            network,
            "d/d(input)",
            mode,
            max_diff(our_in.grad, their_in.grad),
            their_in.grad.abs().max(),
        )
        ours_parameters = dict(our_model.named_parameters())
        worst, largest = 0.0, 0.0
        for name, parameter in their_model.named_parameters():
            key, row = keys[name]
            ours_grad = ours_parameters[key].grad
            ours_grad = ours_grad if row is None else ours_grad[row]
            worst = max(worst, max_diff(ours_grad, parameter.grad))
            largest = max(largest, parameter.grad.abs().max().item())
        report.row(network, "d/d(parameters)", mode, worst, largest)
        their_model.zero_grad(set_to_none=True)
        our_model.zero_grad(set_to_none=True)


def image_input(size: list[int], generator: torch.Generator):
    image = torch.randn(2, 3, *size, generator=generator)
    return lambda grad: (image.clone().requires_grad_(grad), image.clone().requires_grad_(grad))


# -- name maps -------------------------------------------------------------------------------

ASPP_HEAD = [
    ("0.convs.4.1.", "bottleneck.branches.4.project.0."),
    ("0.convs.4.2.", "bottleneck.branches.4.project.1."),
    ("0.convs.", "bottleneck.branches."),
    ("0.project.", "bottleneck.project."),
    ("1.", "head.hidden.0."),
    ("2.", "head.hidden.1."),
    ("4.", "head.classifier."),
]
"""Their ``DeepLabHead`` (ASPP, conv, BN, ReLU, conv) -> our ``TaskHead`` (ASPP + DeepLab
head); the first matching prefix wins."""


def by_prefix(name: str, rules: list[tuple[str, str]]) -> str:
    for theirs, ours in rules:
        if name.startswith(theirs):
            return ours + name[len(theirs) :]
    raise SystemExit(f"no rule maps their {name}")


def head_keys(their_state: dict, prefix: str, ours: str) -> Keys:
    """Their ``{prefix}{task}.…`` DeepLab heads -> our ``{ours}{task}.…`` task heads."""
    keys = {}
    for name in their_state:
        if name.startswith(prefix):
            task, rest = name[len(prefix) :].split(".", 1)
            keys[name] = (f"{ours}{task}.{by_prefix(rest, ASPP_HEAD)}", None)
    return keys


def cross_stitch_keys(theirs: nn.Module, tasks: list[str]) -> Keys:
    their_state = state(theirs)
    keys = head_keys(their_state, "heads.", "heads.")
    for name in their_state:
        if name.startswith("backbone."):
            task, rest = name[len("backbone.") :].split(".", 1)
            keys[name] = (f"columns.{task}.model.{rest}", None)
        elif name.startswith("cross_stitch."):
            _, stage, _, target, source, _ = name.split(".")
            keys[name] = (f"units.{stage[-1]}.alpha.{target}", tasks.index(source))
    return keys


def nddr_keys(theirs: nn.Module, stage_index: dict[str, int], column: str) -> Keys:
    """``column``: the prefix of our column's parameters (``model.`` for a timm encoder,
    ``resnet.`` for :class:`TheirStages`)."""
    their_state = state(theirs)
    keys = head_keys(their_state, "heads.", "heads.")
    for name in their_state:
        if name.startswith("backbone."):
            task, rest = name[len("backbone.") :].split(".", 1)
            keys[name] = (f"columns.{task}.{column}{rest}", None)
        elif name.startswith("nddr."):
            _, stage, _, task, rest = name.split(".", 4)
            keys[name] = (f"units.{stage_index[stage]}.layers.{task}.{rest}", None)
    return keys


def mtan_keys(theirs: nn.Module) -> Keys:
    their_state = state(theirs)
    keys = head_keys(their_state, "heads.", "heads.")
    for name in their_state:
        if name.startswith("backbone."):
            keys[name] = (f"encoder.model.{name[len('backbone.') :]}", None)
        elif name.startswith("attention_"):
            stage, task, rest = name[len("attention_") :].split(".", 2)
            keys[name] = (f"attention.{stage}.{task}.{rest}", None)
        elif name.startswith("refine_"):
            stage, rest = name[len("refine_") :].split(".", 1)
            keys[name] = (f"refine.{stage}.{rest}", None)
    return keys


def distillation_keys(their_state: dict, prefix: str, ours: str) -> Keys:
    """Their ``self_attention.{target}.{source}.{attention.0|conv}`` -> our PAD-Net messages."""
    keys = {}
    for name in their_state:
        if name.startswith(prefix):
            target, source, rest = name[len(prefix) :].split(".", 2)
            part = {"attention.0.weight": "mask.weight", "conv.weight": "features.weight"}[rest]
            keys[name] = (f"{ours}{source}_to_{target}.{part}", None)
    return keys


def padnet_keys(theirs: nn.Module) -> Keys:
    their_state = state(theirs)
    keys = distillation_keys(
        their_state, "multi_modal_distillation.self_attention.", "distillation.messages."
    )
    for name in their_state:
        if name.startswith("initial_task_prediction_heads.layers."):
            keys[name] = ("initial." + name.split(".", 2)[2], None)
        elif name.startswith("initial_task_prediction_heads.conv_out."):
            keys[name] = ("initial_outputs." + name.split(".", 2)[2], None)
        elif name.startswith("heads."):
            task, index, rest = name[len("heads.") :].split(".", 2)
            our = f"0.{index}" if index in "01" else "1"
            keys[name] = (f"heads.{task}.{our}.{rest}", None)
    return keys


def mti_keys(theirs: nn.Module) -> Keys:
    their_state = state(theirs)
    keys: Keys = {}
    for s in range(4):
        keys |= distillation_keys(
            their_state, f"distillation_scale_{s}.self_attention.", f"distillation.{s}.messages."
        )
    rules = [
        ("scale_{s}.refinement.", "initial.{s}.refine."),
        ("scale_{s}.decoders.", "initial.{s}.predict."),
        ("fpm_scale_{s}.non_linear.", "propagation.{s}.non_linear."),
        ("fpm_scale_{s}.dimensionality_reduction.", "propagation.{s}.reduce."),
        ("fpm_scale_{s}.se.", "propagation.{s}.excite."),
    ]
    for name in their_state:
        if name.startswith("heads."):
            keys[name] = (name.replace(".last_layer.", ".fuse."), None)
            continue
        for s in range(4):
            for theirs_prefix, ours_prefix in rules:
                prefix = theirs_prefix.format(s=s)
                if name.startswith(prefix):
                    keys[name] = (ours_prefix.format(s=s) + name[len(prefix) :], None)
    return keys


# -- the comparisons -------------------------------------------------------------------------


def compare_encoder(report: Report, backbone: str, size: list[int], generator) -> None:
    """Their dilated ResNet against our timm encoder with their weights, stage by stage."""
    from densetasks.models import create_encoder

    theirs = their_resnet(backbone)
    randomise(theirs, generator)
    ours = create_encoder(backbone, output_stride=8)
    keys = {name: (f"model.{name}", None) for name in state(theirs)}
    load_into(ours, theirs, keys)
    image = torch.randn(2, 3, *size, generator=generator)
    for mode in ("eval", "train"):
        theirs.train(mode == "train")
        ours.train(mode == "train")
        load_into(ours, theirs, keys)
        with torch.no_grad():
            features = ours(image)
            x = image
            for index, stage in enumerate(("layer1", "layer2", "layer3", "layer4"), start=1):
                x = theirs.forward_stage(x, stage)
                difference = max_diff(features[index], x)
                report.row("encoder", f"{backbone} {stage}", mode, difference, x.abs().max())


def compare_cross_stitch(report, tasks, backbone, size, seed, generator) -> None:
    import copy

    from models.cross_stitch import CrossStitchNetwork

    from densetasks.models import create_model

    channels = RESNET_CHANNELS[backbone]
    stages = ["layer1", "layer2", "layer3", "layer4"]
    resnet = their_resnet(backbone)
    theirs = CrossStitchNetwork(
        their_config(tasks),
        nn.ModuleDict({task: copy.deepcopy(resnet) for task in tasks}),
        their_heads(tasks, channels[-1]),
        stages,
        dict(zip(stages, channels, strict=True)),
        alpha=0.9,
        beta=0.1,
    )
    randomise(theirs, generator)
    ours = create_model(
        "cross_stitch",
        tasks,
        encoder=backbone,
        output_stride=8,
        bottleneck_options={"dropout": 0.5},
    )
    compare(
        report,
        "cross-stitch",
        (theirs, theirs),
        (ours, ours),
        cross_stitch_keys(theirs, list(tasks)),
        image_input(size, generator),
        seed,
        generator,
    )


def build_their_nddr(tasks, backbone, nddr_stages, generator):
    import copy

    from models.nddr_cnn import NDDRCNN

    channels = dict(zip(THEIR_STAGES, (64, *RESNET_CHANNELS[backbone]), strict=True))
    resnet = their_resnet(backbone)
    theirs = NDDRCNN(
        their_config(tasks),
        nn.ModuleDict({task: copy.deepcopy(resnet) for task in tasks}),
        their_heads(tasks, RESNET_CHANNELS[backbone][-1]),
        list(THEIR_STAGES),
        list(nddr_stages),
        channels,
        alpha=0.9,
        beta=0.1,
    )
    randomise(theirs, generator)
    return theirs


def compare_nddr(report, tasks, backbone, size, seed, generator) -> None:
    from densetasks.models import create_model
    from densetasks.models.architectures.nddr_cnn import NDDR

    stage_index = {stage: index for index, stage in enumerate(THEIR_STAGES)}
    theirs = build_their_nddr(tasks, backbone, THEIR_STAGES[1:], generator)
    ours = create_model(
        "nddr_cnn",
        tasks,
        encoder=backbone,
        output_stride=8,
        layers=[1, 2, 3, 4],
        bottleneck_options={"dropout": 0.5},
    )
    keys = nddr_keys(theirs, stage_index, "model.")
    inputs = image_input(size, generator)
    compare(report, "NDDR l1-l4", (theirs, theirs), (ours, ours), keys, inputs, seed, generator)

    theirs = build_their_nddr(tasks, backbone, THEIR_STAGES, generator)
    ours = NDDR(tasks, TheirStages(backbone), bottleneck_options={"dropout": 0.5})
    keys = nddr_keys(theirs, stage_index, "resnet.")
    compare(report, "NDDR all", (theirs, theirs), (ours, ours), keys, inputs, seed, generator)


def compare_mtan(report, tasks, backbone, size, seed, generator) -> None:
    from models.mtan import MTAN

    from densetasks.models import create_model

    channels = RESNET_CHANNELS[backbone]
    stages = ["layer1", "layer2", "layer3", "layer4"]
    theirs = MTAN(
        their_config(tasks),
        their_resnet(backbone),
        their_heads(tasks, channels[-1]),
        stages,
        dict(zip(stages, channels, strict=True)),
        {"layer1": True, "layer2": False, "layer3": False, "layer4": False},
    )
    randomise(theirs, generator)
    ours = create_model(
        "mtan", tasks, encoder=backbone, output_stride=8, bottleneck_options={"dropout": 0.5}
    )
    inputs = image_input(size, generator)
    keys = mtan_keys(theirs)
    compare(report, "MTAN", (theirs, theirs), (ours, ours), keys, inputs, seed, generator)


def feature_inputs(shapes, generator, single=False):
    """Random features; returns the stand-ins' setter: each call gives fresh leaves."""
    features = [torch.randn(2, *shape, generator=generator) for shape in shapes]

    def make(grad: bool):
        theirs = [f.clone().requires_grad_(grad) for f in features]
        ours = [f.clone().requires_grad_(grad) for f in features]
        return theirs, ours

    return make


class StackedInput:
    """Makes the feature list of a stand-in look like one tensor to :func:`compare` (for the
    gradient rows): ``grad`` is the concatenation of the flattened gradients."""

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        self.tensors = tensors

    @property
    def grad(self) -> torch.Tensor:
        return torch.cat([t.grad.flatten() for t in self.tensors])


def compare_on_features(
    report, network, theirs, ours, keys, shapes, strides, single, seed, generator, image
) -> None:
    make = feature_inputs(shapes, generator)

    def inputs(grad: bool):
        their_features, our_features = make(grad)
        theirs.backbone = FixedFeatures(their_features, strides, single=single)
        ours.encoder = FixedFeatures(our_features, strides)
        return StackedInput(their_features), StackedInput(our_features)

    def rename_theirs(outputs: dict) -> dict:
        renamed = {}
        for key, value in outputs.items():
            if key == "deep_supervision":
                for scale, predictions in value.items():
                    renamed |= {
                        f"{t}@scale{scale[-1]}": p
                        for t, p in predictions.items()
                        if not t.startswith("features_")
                    }
            elif key.startswith("initial_"):
                renamed[f"{key[len('initial_') :]}@initial"] = value
            else:
                renamed[key] = value
        return renamed

    def their_forward(_):
        outputs = rename_theirs(theirs(image))
        if not theirs.training:  # their auxiliary outputs exist in eval mode too; ours do not
            outputs = {k: v for k, v in outputs.items() if "@" not in k}
        return outputs

    compare(
        report,
        network,
        (theirs, their_forward),
        (ours, lambda _: ours(image)),
        keys,
        inputs,
        seed,
        generator,
    )


def compare_padnet(report, tasks, size, seed, generator) -> None:
    from models.padnet import PADNet

    from densetasks.models.architectures.three_ways import PadNet

    channels = sum(HRNET18_CHANNELS)
    theirs = PADNet(their_config(tasks), nn.Identity(), channels)
    randomise(theirs, generator)
    shapes = [(channels, size[0] // 4, size[1] // 4)]
    ours = PadNet(tasks, FixedFeatures([torch.zeros(1, *shapes[0])], (4,)))
    image = torch.zeros(2, 3, *size)
    compare_on_features(
        report, "PAD-Net", theirs, ours, padnet_keys(theirs), shapes, (4,), True, seed,
        generator, image,
    )  # fmt: skip


def compare_mti_net(report, tasks, size, seed, generator) -> None:
    from models.mti_net import MTINet as TheirMTINet
    from models.seg_hrnet import HighResolutionHead

    from densetasks.models.architectures.mti_net import MTINet

    channels = list(HRNET18_CHANNELS)
    strides = (4, 8, 16, 32)
    heads = nn.ModuleDict({task: HighResolutionHead(channels, out) for task, out in tasks.items()})
    theirs = TheirMTINet(their_config(tasks), nn.Identity(), channels, heads)
    randomise(theirs, generator)
    shapes = [(c, size[0] // s, size[1] // s) for c, s in zip(channels, strides, strict=True)]
    stand_in = FixedFeatures([torch.zeros(1, *shape) for shape in shapes], strides)
    ours = MTINet(tasks, stand_in)
    image = torch.zeros(2, 3, *size)
    compare_on_features(
        report, "MTI-Net", theirs, ours, mti_keys(theirs), shapes, strides, False, seed,
        generator, image,
    )  # fmt: skip


def count(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def main() -> None:
    args = parse_args()
    sys.path.insert(0, str(args.checkout.resolve()))
    import_reference(args.reference)
    torch.set_default_dtype(torch.float64)
    tasks = parse_tasks(args.tasks)
    commit = subprocess.run(
        ["git", "-C", str(args.reference), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(f"reference: {args.reference} at {commit or 'unknown commit (not a git checkout)'}")
    print(
        f"tasks: {tasks}; {args.backbone} at output stride 8; image {args.size[0]}x"
        f"{args.size[1]}; float64; seed {args.seed}"
    )
    print(f"\n{'network':<14} {'output':<38} {'mode':<6} {'max |Δ|':>10} {'max |ref|':>10}")
    report = Report()
    generator = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    compare_encoder(report, args.backbone, args.size, generator)
    compare_cross_stitch(report, tasks, args.backbone, args.size, args.seed, generator)
    compare_nddr(report, tasks, args.backbone, args.size, args.seed, generator)
    compare_mtan(report, tasks, args.backbone, args.size, args.seed, generator)
    compare_padnet(report, tasks, args.size, args.seed, generator)
    compare_mti_net(report, tasks, args.size, args.seed, generator)
    print("\nlargest |Δ| per network (outputs and gradients, eval and train):")
    for network, worst in report.worst.items():
        print(f"  {network:<14} {worst:.2e}")


if __name__ == "__main__":
    main()
