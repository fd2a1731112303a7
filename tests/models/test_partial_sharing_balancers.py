"""Every balancer takes a training step on every architecture that shares only part of its
network (columns joined by units, attention over a shared encoder, distillation between task
branches, InvPT's preliminary decoders): each balancer reads ``shared_parameters()`` or the
last shared layer, which these architectures define differently from hard sharing. Their
end-to-end runs and exports are in ``test_every_architecture.py`` and ``tests/test_export.py``;
their own behaviour in ``test_<architecture>.py``."""

import pytest
import torch

from densetasks.balancers import BALANCERS
from densetasks.models import create_model

from .sharing import NEEDS_CVXPY, SMALL, step_with_balancer, synthetic_batch

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: fastest on one thread

PARTLY_SHARED = {
    "cross_stitch": ("tiny", SMALL),
    "nddr_cnn": ("tiny", SMALL),
    "mtan": ("tiny", SMALL),
    "mti_net": ("tiny", {"output_stride": 32}),
    "invpt": ("test_vit", {"embed_channels": 16, "prediction_channels": 8}),
}
"""Architecture -> (encoder, options): small widths, the same structure."""
BATCH = synthetic_batch(["semseg", "depth"])


@pytest.mark.parametrize("balancer", BALANCERS.names())
@pytest.mark.parametrize("architecture", sorted(PARTLY_SHARED))
def test_a_training_step_with_every_balancer(architecture: str, balancer: str) -> None:
    if balancer in NEEDS_CVXPY:
        pytest.importorskip("cvxpy")
    torch.manual_seed(0)
    encoder, options = PARTLY_SHARED[architecture]
    model = create_model(architecture, {"semseg": 8, "depth": 1}, encoder=encoder, **options)
    assert torch.isfinite(torch.tensor(step_with_balancer(model, balancer, BATCH)))
