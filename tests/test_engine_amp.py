"""``train.amp`` through CPU bfloat16 autocast: the trainer's mixed-precision step (autocast, the
grad scaler, skipped steps) is the code a CUDA float16 run executes, checked here without a GPU.
Where a GPU is visible the same tests also run on CUDA in float16 (``make gpu-check``)."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import tiny_config

from pointseg.engine.trainer import LAST, Trainer

pytestmark = pytest.mark.usefixtures("tiny_backbone")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
AMP_DTYPE = {"cpu": torch.bfloat16, "cuda": torch.float16}


def _trainer(data_root, run, device: str = "cpu", **train) -> Trainer:
    cfg = tiny_config(data_root, iterations=4, validate=False, **train)
    return Trainer(cfg, run, device=device)


def _params(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in trainer.model.named_parameters()}


@pytest.mark.parametrize("device", DEVICES)
def test_amp_step_autocasts_the_point_head_keeps_the_center_branch_float32_and_matches_fp32(data_root, tmp_path, device):
    amp = _trainer(data_root, tmp_path / "amp", device, amp=True)
    ref = _trainer(data_root, tmp_path / "fp32", device, amp=False)
    assert amp.amp and amp.amp_dtype == AMP_DTYPE[device] and amp.scaler.is_enabled()
    assert not ref.scaler.is_enabled()
    dtypes: dict[str, torch.dtype] = {}
    model = amp.model
    model.classifier.register_forward_hook(lambda m, i, o: dtypes.__setitem__("logits", o.dtype))
    # Inside the center branch autocast is off: its Linear layers would otherwise return bfloat16.
    ceco = model.aux_losses["ceco"]
    pooled = ceco.reduce.pooled  # the reduce + BatchNorm + pooling, computed on the centers

    def record_pooled(*args, **kwargs):
        out = pooled(*args, **kwargs)
        dtypes["reduce"] = out[0].dtype
        return out

    ceco.reduce.pooled = record_pooled
    ceco.projection.register_forward_hook(lambda m, i, o: dtypes.__setitem__("projection", o.dtype))

    before = _params(amp)
    assert all(torch.equal(v, ref.model.state_dict()[k]) for k, v in before.items())  # same seed, same init
    losses = amp.train_step()
    ref_losses = ref.train_step()

    assert dtypes == {"logits": AMP_DTYPE[device], "reduce": torch.float32, "projection": torch.float32}
    assert losses["loss_ceco"].dtype == torch.float32 and torch.isfinite(losses["loss"])
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay float32
    assert amp.scaler.get_scale() == 2.0**16  # no overflow: the scale is kept
    # The same batch in fp32 is the oracle: bfloat16 keeps 8 bits of mantissa (rel. error ~ 4e-3).
    for key in ("loss_cross_entropy", "loss_ceco"):
        assert float(losses[key]) == pytest.approx(float(ref_losses[key]), rel=2e-2), key
    after, ref_after = _params(amp), _params(ref)
    step = torch.cat([(after[k] - before[k]).flatten() for k in before])
    ref_step = torch.cat([(ref_after[k] - before[k]).flatten() for k in before])
    # The classifier's own update agrees to bfloat16 precision; the backbone's gradient is a sum
    # over points with much cancellation (BatchNorm, a loss at chance), so it agrees to ~25 % per
    # tensor: same direction and size, not a scaled (unscale missed) or different step.
    cls = [k for k in before if k.startswith("classifier.")]
    for k in cls:
        torch.testing.assert_close(after[k] - before[k], ref_after[k] - before[k], rtol=0, atol=2e-2 * float((ref_after[k] - before[k]).abs().max()))
    assert torch.nn.functional.cosine_similarity(step, ref_step, dim=0) > 0.95
    assert 0.8 < float(step.norm() / ref_step.norm()) < 1.25


def _overflow_once(trainer: Trainer) -> None:
    """Make one gradient element infinite in the next backward pass, as a float16 gradient that
    overflows (CPU autocast's bfloat16 has float32's range and does not overflow by itself)."""
    bias = trainer.model.classifier.bias

    def hook(grad: torch.Tensor) -> torch.Tensor:
        handle.remove()
        grad = grad.clone()
        grad[0] = float("inf")
        return grad

    handle = bias.register_hook(hook)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("grad_clip", [None, 1.0])
def test_an_overflowing_gradient_skips_the_step_and_halves_the_scale(data_root, tmp_path, grad_clip, device):
    trainer = _trainer(data_root, tmp_path / "run", device, amp=True, grad_clip=grad_clip)
    trainer.scaler = torch.amp.GradScaler(device, init_scale=2.0**16, growth_interval=1)
    before = _params(trainer)
    _overflow_once(trainer)
    losses = trainer.train_step()
    assert torch.isfinite(losses["loss"])  # the loss is fine: NonFiniteLossError is not the path
    assert all(torch.equal(p, before[k]) for k, p in trainer.model.named_parameters()), "step not skipped"
    assert all(not state for state in trainer.optimizer.state.values())  # no momentum from inf
    assert trainer.scaler.get_scale() == 2.0**15  # backoff, not growth (growth_interval=1)
    assert trainer.iteration == 1
    # The next step has finite gradients: it is taken and the scale grows back.
    trainer.train_step()
    after = _params(trainer)
    assert all(torch.isfinite(p).all() for p in after.values())
    assert any(not torch.equal(after[k], before[k]) for k in before)
    assert trainer.scaler.get_scale() == 2.0**16


def test_scaler_state_survives_a_resume(data_root, tmp_path):
    run = tmp_path / "run"
    trainer = _trainer(data_root, run, amp=True)
    _overflow_once(trainer)
    trainer.train(stop_at=1)  # one skipped step, last.pth written
    assert (run / "checkpoints" / LAST).exists()
    resumed = Trainer(tiny_config(data_root, iterations=4, validate=False, amp=True), run, resume=True, device="cpu")
    try:
        assert resumed.iteration == 1 and resumed.scaler.get_scale() == 2.0**15
    finally:
        resumed.close()
