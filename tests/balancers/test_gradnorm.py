import pytest
import torch

from densetasks.balancers import create_balancer
from densetasks.engine.build import build_balancer
from densetasks.engine.config import validate_config
from densetasks.errors import ConfigError
from densetasks.models import create_model
from densetasks.models.base import Architecture


def _losses(shared: torch.nn.Parameter) -> dict[str, torch.Tensor]:
    """seg = θ0² (gradient (2θ0, 0)), depth = 2·θ1² (gradient (0, 4θ1))."""
    return {"seg": shared[0] ** 2, "depth": 2 * shared[1] ** 2}


def test_two_hand_computed_steps(two_tasks):
    balancer = create_balancer("gradnorm", two_tasks, alpha=1.5)
    shared = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    # Step 1: L = (1, 8) = L(0), ‖∇L‖ = (2, 8), G = (2, 8), Ḡ = 5, r = (1, 1), target (5, 5).
    balancer.backward(_losses(shared), [shared])
    assert balancer.task_weights.grad.tolist() == pytest.approx([-2.0, 8.0])
    assert shared.grad.tolist() == pytest.approx([2.0, 8.0])
    assert balancer.weights() == {"seg": 1.0, "depth": 1.0}

    with torch.no_grad():  # an SGD step with lr 0.1 on w, then a new θ
        balancer.task_weights -= 0.1 * balancer.task_weights.grad
        shared.copy_(torch.tensor([0.5, 2.0]))
    balancer.task_weights.grad = None
    shared.grad = None
    # Step 2: w = (1.2, 0.2) renormalised to sum 2 -> (12/7, 2/7). L = (0.25, 8),
    # L̃ = (0.25, 1), r = (0.4, 1.6); ‖∇L‖ = (1, 8), G = (12/7, 16/7), Ḡ = 2,
    # target = 2·r^1.5 = (0.506, 4.048); sign(G − target) = (+, −).
    balancer.backward(_losses(shared), [shared])
    weights = balancer.weights()
    assert [weights["seg"], weights["depth"]] == pytest.approx([12 / 7, 2 / 7])
    assert balancer.task_weights.grad.tolist() == pytest.approx([1.0, -8.0])
    assert shared.grad.tolist() == pytest.approx([12 / 7, 16 / 7])


def test_amp_scale_scales_every_gradient(two_tasks):
    balancer = create_balancer("gradnorm", two_tasks)
    shared = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    balancer.backward(_losses(shared), [shared], scale=lambda loss: 4.0 * loss)
    assert balancer.task_weights.grad.tolist() == pytest.approx([-8.0, 32.0])
    assert shared.grad.tolist() == pytest.approx([8.0, 32.0])


def test_gradient_layer_all_uses_every_shared_parameter(two_tasks):
    balancer = create_balancer("gradnorm", two_tasks, gradient_layer="all")
    first = torch.nn.Parameter(torch.tensor(3.0))
    last = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    # seg = θ0² + first (‖∇‖ = ‖(2, 0, 1)‖ = √5); depth = 2θ1² (‖∇‖ = 8); only "all" sees first.
    losses = {"seg": last[0] ** 2 + first, "depth": 2 * last[1] ** 2}
    balancer.backward(losses, [first, last])
    assert balancer.task_weights.grad.tolist() == pytest.approx([-(5**0.5), 8.0])
    with pytest.raises(ConfigError, match="gradient_layer"):
        create_balancer("gradnorm", two_tasks, gradient_layer="first")


def test_zero_loss_task_gets_no_weight_gradient_and_no_initial_loss(two_tasks):
    balancer = create_balancer("gradnorm", two_tasks)
    shared = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    balancer.backward({"seg": shared[0] ** 2, "depth": shared[1] * 0.0}, [shared])
    assert balancer.initial_losses.tolist() == [1.0, 0.0]
    # Only seg is active: it is its own average, G = target, |G − target| has subgradient 0.
    assert balancer.task_weights.grad.tolist() == pytest.approx([0.0, 0.0])


def test_state_dict_round_trip(two_tasks):
    source = create_balancer("gradnorm", two_tasks)
    shared = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    source.backward(_losses(shared), [shared])
    with torch.no_grad():
        source.task_weights.copy_(torch.tensor([0.5, 1.5]))
    target = create_balancer("gradnorm", two_tasks)
    target.load_state_dict(source.state_dict())
    assert target.task_weights.tolist() == [0.5, 1.5]
    assert target.initial_losses.tolist() == [1.0, 8.0]


def test_the_given_layer_is_w_not_the_last_shared_tensor(two_tasks):
    """W = the layer's weight (1×2); the bias after it, last in the list, is not W."""
    balancer = create_balancer("gradnorm", two_tasks, alpha=1.5)
    weight = torch.nn.Parameter(torch.tensor([[1.0, 2.0]]))
    bias = torch.nn.Parameter(torch.tensor(5.0))
    balancer.use_last_shared_layer([weight])
    # seg = W00² + b, depth = 2·W01² + 3b: on W, ‖∇L‖ = (2, 8) as in the first hand step
    # (Ḡ = 5, target (5, 5), ∇w = (−2, 8)); on the bias alone it would be (1, 3).
    losses = {"seg": weight[0, 0] ** 2 + bias, "depth": 2 * weight[0, 1] ** 2 + 3 * bias}
    balancer.backward(losses, [weight, bias])
    assert balancer.task_weights.grad.tolist() == pytest.approx([-2.0, 8.0])
    assert weight.grad.flatten().tolist() == pytest.approx([2.0, 8.0])
    assert bias.grad.item() == pytest.approx(4.0)


def _model(**options):
    return create_model("hard_sharing", {"semseg": 3, "depth": 1}, encoder="tiny", **options)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"bottleneck_options": {"project": True}}, ["bottleneck.project.0.weight"]),
        (
            {},
            [f"bottleneck.branches.{index}.0.weight" for index in range(4)]
            + ["bottleneck.branches.4.project.0.weight"],
        ),
        ({"bottleneck": "none"}, ["encoder.stages.4.0.weight"]),
    ],
    ids=["aspp-projected", "aspp-concatenated", "no-bottleneck"],
)
def test_hard_sharing_names_its_last_shared_convolutions(options, expected):
    model = _model(**options)
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    assert [names[id(parameter)] for parameter in model.last_shared_layer()] == expected


def test_the_default_layer_is_the_last_shared_weight_matrix():
    class Linear(Architecture):
        def __init__(self) -> None:
            super().__init__({"a": 1})
            self.body = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.LayerNorm(3))
            self.head = torch.nn.Linear(3, 1)

        def encoder_parameters(self):
            return list(self.body.parameters())

        def shared_parameters(self):
            return list(self.body.parameters())

    model = Linear()
    assert model.last_shared_layer() == [model.body[0].weight]


def test_build_balancer_gives_gradnorm_the_models_layer(two_tasks):
    config = validate_config({"tasks": {"seg": {}, "depth": {}}, "balancer": {"name": "gradnorm"}})
    model = _model(bottleneck_options={"project": True})
    balancer = build_balancer(config, {task.name: task for task in two_tasks}, model)
    assert balancer.layer == [model.bottleneck.project[0].weight]


def test_a_step_on_hard_sharing_measures_norms_on_its_layer(two_tasks):
    """At the first step w = (1, 1), r = (1, 1) and the target is Ḡ, so |∂L_grad/∂w_t| = G_t =
    ‖∇_W L_t‖ with W every branch convolution of the concatenating ASPP."""
    torch.manual_seed(0)
    model = _model()
    outputs = model(torch.rand(2, 3, 32, 32))
    losses = {"seg": outputs["semseg"].pow(2).mean(), "depth": outputs["depth"].abs().mean()}
    layer = model.last_shared_layer()
    expected = [
        _norm(torch.autograd.grad(loss, layer, retain_graph=True)) for loss in losses.values()
    ]
    balancer = create_balancer("gradnorm", two_tasks)
    balancer.use_last_shared_layer(layer)
    balancer.backward(losses, model.shared_parameters())
    assert balancer.task_weights.grad.abs().tolist() == pytest.approx(expected, rel=1e-5)


def _norm(gradients: tuple[torch.Tensor, ...]) -> float:
    return torch.cat([gradient.flatten() for gradient in gradients]).norm().item()


def test_build_balancer_refuses_gradnorm_without_a_shared_layer(two_tasks):
    class Separate(Architecture):
        def encoder_parameters(self):
            return []

        def shared_parameters(self):
            return []

    config = validate_config({"tasks": {"seg": {}, "depth": {}}, "balancer": {"name": "gradnorm"}})
    with pytest.raises(ConfigError, match=r"gradnorm needs a shared layer: Separate has no"):
        build_balancer(config, {task.name: task for task in two_tasks}, Separate({"seg": 1}))
