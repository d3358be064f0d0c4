"""WeightEMA: the bias-corrected exponential moving average of the trainable weights, and swapping it in."""

from __future__ import annotations

import pytest
import torch

from hf_soups import SoupError
from hf_soups.ema import WeightEMA, check_decay


def trajectory(steps: int) -> tuple[torch.nn.Module, list[torch.Tensor]]:
    """A model and the weights it had after each of ``steps`` updates (random walks of its weight)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    return model, [torch.randn(2, 3) for _ in range(steps)]


@pytest.mark.parametrize("decay", [0.5, 0.9, 0.999])
@pytest.mark.parametrize("steps", [1, 3, 20])
def test_the_ema_is_the_decay_weighted_mean_of_the_weights_after_each_step(decay, steps):
    model, weights = trajectory(steps)
    ema = WeightEMA(model, decay)
    for w in weights:
        model.weight.data.copy_(w)
        ema.update(model)
    coefficients = torch.tensor([decay ** (steps - s) for s in range(1, steps + 1)], dtype=torch.float64)
    expected = (coefficients[:, None, None] * torch.stack(weights).double()).sum(0) / coefficients.sum()
    assert ema.names == ["weight", "bias"] and ema.steps == steps
    torch.testing.assert_close(ema.shadow[0].double(), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ema.shadow[1], model.bias.detach())  # never moved: its average is itself


def test_only_trainable_parameters_are_averaged_and_applied_restores_the_live_weights():
    model, weights = trajectory(2)
    model.bias.requires_grad_(False)
    ema = WeightEMA(model, 0.5)
    for w in weights:
        model.weight.data.copy_(w)
        ema.update(model)
    live = model.weight.detach().clone()
    average = ema.shadow[0].clone()
    with ema.applied(model) as applied:
        assert applied is model and torch.equal(model.weight, average)
    assert ema.names == ["weight"] and torch.equal(model.weight, live) and torch.equal(ema.shadow[0], average)


def test_a_bf16_model_is_averaged_in_fp32_and_restored_exactly():
    model, weights = trajectory(3)
    model.to(torch.bfloat16)
    ema = WeightEMA(model, 0.9)
    for w in weights:
        model.weight.data.copy_(w)
        ema.update(model)
    live = model.weight.detach().clone()
    assert ema.shadow[0].dtype == torch.float32
    with ema.applied(model):
        assert torch.equal(model.weight, ema.shadow[0].to(torch.bfloat16))
    assert torch.equal(model.weight, live)


@pytest.mark.parametrize("decay", [0, 1, 1.5, -0.1, float("nan"), True, "0.9"])
def test_a_decay_outside_0_1_is_refused(decay):
    with pytest.raises(SoupError, match="ema decay"):
        check_decay(decay)
