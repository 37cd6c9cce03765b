"""``qat``: LSQ/LSQ+ gradients against independent references, loss reduction over round to
nearest, bit-identical resume, frozen results that save and load, and the refusals."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from benchmark.quant import (
    QuantSpec,
    calibrate,
    load_ranges,
    needs_labels,
    quantize,
    save_ranges,
)
from benchmark.quant.algorithms.qat import (
    QatOptions,
    _task_loss,
    distillation_loss,
    run_qat,
)
from benchmark.quant.errors import QuantError
from benchmark.quant.granularity import PerTensor
from benchmark.quant.primitives import fake_quantize_ste
from benchmark.quant.qat import (
    CHECKPOINT_NAME,
    freeze_learned,
    learnable_quantizers,
    make_learnable,
)
from benchmark.quant.quantizer import ActivationQuantizer
from benchmark.quant.weight_quantizer import WeightQuantizer
from benchmark.train.recipe import make_loss
from tests.conftest import TinySegNet

FAST = {"progress": False}
CONF = Path(__file__).resolve().parents[3] / "conf" / "algorithm" / "qat.yaml"


def _lsq_reference(x, c, s, z, qmin, qmax, g):
    """LSQ/LSQ+ gradients of ``sum(c * x_hat)`` in closed form (numpy, float64)."""
    v = x / s
    codes = np.round(v) + z
    inside = (codes >= qmin) & (codes <= qmax)
    ds = np.where(inside, np.round(v) - v, np.where(codes < qmin, qmin - z, qmax - z))
    dz = np.where(inside, 0.0, -s)
    return c * inside, g * float((c * ds).sum()), g * float((c * dz).sum())


@pytest.mark.parametrize(("qmin", "qmax", "z"), [(-7, 7, 0.0), (0, 15, 5.0)])
def test_ste_gradients_equal_the_closed_form_lsq_gradients(qmin, qmax, z):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1.0, 4000)
    c = rng.normal(0, 1.0, 4000)
    s, g = 0.21, 0.125
    xt = torch.tensor(x, requires_grad=True)
    st = torch.tensor(s, dtype=torch.float64, requires_grad=True)
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    (torch.tensor(c) * fake_quantize_ste(xt, st, zt, qmin, qmax, g)).sum().backward()
    dx, ds, dz = _lsq_reference(x, c, s, z, qmin, qmax, g)
    assert 0 < (dx == 0).mean() < 0.5  # some values clipped, most inside
    np.testing.assert_allclose(xt.grad.numpy(), dx, rtol=1e-12, atol=1e-12)
    assert float(st.grad) == pytest.approx(ds, rel=1e-9)
    assert float(zt.grad) == pytest.approx(dz, rel=1e-9) and abs(dz) > 0


def test_ste_gradients_equal_finite_differences_of_the_surrogate():
    """LSQ's gradient is that of the surrogate with each rounding residual held fixed; away
    from the clamp kinks the surrogate is smooth, so central differences must match it."""
    rng = np.random.default_rng(1)
    qmin, qmax, s0, z0, g = 0, 15, 0.18, 4.3, 0.5
    x = rng.normal(0.3, 1.0, 3000)
    codes = np.round(x / s0) + np.round(z0)
    x = x[(codes != qmin) & (codes != qmax)]  # not at a kink
    c = rng.normal(0, 1.0, x.size)
    residual, residual_z = np.round(x / s0) - x / s0, np.round(z0) - z0

    def surrogate(s, z):
        q = np.clip(x / s + residual + z + residual_z, qmin, qmax)
        return float((c * (q - z - residual_z) * s).sum())

    h = 1e-6
    fd_s = (surrogate(s0 + h, z0) - surrogate(s0 - h, z0)) / (2 * h)
    fd_z = (surrogate(s0, z0 + h) - surrogate(s0, z0 - h)) / (2 * h)
    st = torch.tensor(s0, dtype=torch.float64, requires_grad=True)
    zt = torch.tensor(z0, dtype=torch.float64, requires_grad=True)
    (torch.tensor(c) * fake_quantize_ste(torch.tensor(x), st, zt, qmin, qmax, g)).sum().backward()
    assert float(st.grad) == pytest.approx(g * fd_s, rel=1e-5)
    assert float(zt.grad) == pytest.approx(g * fd_z, rel=1e-5) and abs(fd_z) > 0


def test_quantizers_scale_step_gradients_by_lsq_g():
    """g = 1 / sqrt(N q_max): N = values of one sample per activation scale, weights per
    weight scale; only the asymmetric grid learns its offset."""
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, 5, 5)
    act = ActivationQuantizer(4, PerTensor(), "asymmetric", False, "minmax")
    act.set_range(x.min().reshape(1, 1, 1, 1, 1), x.max().reshape(1, 1, 1, 1, 1), "asymmetric")
    act.make_learnable()
    c = torch.randn_like(x)
    (c * act(x)).sum().backward()
    g = 1 / np.sqrt(4 * 125 * 15)
    _, ds, dz = _lsq_reference(
        x.double().numpy(),
        c.double().numpy(),
        float(act.scale.detach()),
        float(act.offset.detach()),
        0,
        15,
        g,
    )
    assert float(act.scale.grad) == pytest.approx(ds, rel=1e-4)
    assert float(act.offset.grad) == pytest.approx(dz, rel=1e-4)
    w = torch.randn(6, 4, 3, 3, 3)
    weight_quant = WeightQuantizer(4, PerTensor(), "symmetric", "minmax")
    weight_quant.make_learnable(w)
    assert not weight_quant.offset.requires_grad
    cw = torch.randn_like(w)
    (cw * weight_quant(w)).sum().backward()
    scale = float(weight_quant.scale.detach())
    _, ds_w, _ = _lsq_reference(
        w.double().numpy(), cw.double().numpy(), scale, 0.0, -7, 7, 1 / np.sqrt(w.numel() * 7)
    )
    assert float(weight_quant.scale.grad) == pytest.approx(ds_w, rel=1e-4)


@pytest.mark.parametrize(
    ("granularity", "mapping"), [("per_tensor", "asymmetric"), ("per_channel_token", "auto")]
)
def test_frozen_model_computes_exactly_what_the_learnable_one_did(
    tiny_segnet, granularity, mapping
):
    batches = [torch.randn(2, 1, 8, 8, 8) for _ in range(2)]
    spec = QuantSpec("w4a4", granularity, act_mapping=mapping, weight_mapping="asymmetric")
    qmodel = calibrate(quantize(tiny_segnet, spec), batches)
    make_learnable(qmodel)
    with torch.no_grad():  # as if trained: moved scales, non-integer offsets, new weights
        for quantizer in learnable_quantizers(qmodel).values():
            quantizer.scale.mul_(1 + 0.1 * torch.rand_like(quantizer.scale))
            quantizer.offset.add_(torch.rand_like(quantizer.offset) - 0.5)
        qmodel.body[0].weight.add_(0.01 * torch.randn_like(qmodel.body[0].weight))
        learnable = [qmodel(x) for x in batches]
    freeze_learned(qmodel)
    assert not learnable_quantizers(qmodel)
    assert not list(qmodel.head.input_quant.parameters())
    assert qmodel.head.weight_quant.zero_point is not None
    with torch.no_grad():
        assert all(torch.equal(qmodel(x), y) for x, y in zip(batches, learnable, strict=True))


def test_the_task_loss_is_the_training_recipes():
    logits = torch.randn(2, 4, 6, 6, 6)
    labels = torch.randint(0, 4, (2, 1, 6, 6, 6))
    assert torch.equal(_task_loss()(logits, labels), make_loss()(logits, labels))
    assert float(distillation_loss(logits, logits, 2.0)) == pytest.approx(0.0, abs=1e-6)
    other = torch.randn_like(logits)
    kl = (
        F.kl_div(
            F.log_softmax(other / 2, 1),
            F.log_softmax(logits / 2, 1),
            log_target=True,
            reduction="none",
        )
        .sum(1)
        .mean()
        * 4
    )
    assert float(distillation_loss(other, logits, 2.0)) == pytest.approx(float(kl), rel=1e-5)


def _threshold_task(seed: int, n: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random volumes labelled by their local mean: above 0.25 is class 1, below -0.25 class 2."""
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for _ in range(n):
        x = torch.randn(2, 1, 12, 12, 12, generator=g)
        smooth = F.avg_pool3d(x, 3, 1, 1)
        pairs.append((x, (smooth > 0.25).long() + 2 * (smooth < -0.25).long()))
    return pairs


@pytest.fixture(scope="module")
def trained():
    """A TinySegNet trained in FP32 on the threshold task, with training and held-out data."""
    torch.manual_seed(0)
    train, held = _threshold_task(1), _threshold_task(2)
    model, loss = TinySegNet(width=8), make_loss()
    optimiser = torch.optim.Adam(model.parameters(), 1e-2)
    for step in range(100):
        x, y = train[step % len(train)]
        optimiser.zero_grad()
        loss(model(x), y).backward()
        optimiser.step()
    return model.eval(), train, held


def _mean_loss(model, pairs) -> float:
    loss = make_loss()
    with torch.no_grad():
        return float(np.mean([float(loss(model(x), y)) for x, y in pairs]))


def test_qat_lowers_the_quantized_loss_on_training_and_held_out_batches(trained):
    model, train, held = trained
    images = [x for x, _ in train]
    rtn = calibrate(quantize(model, QuantSpec("w4a4", "per_tensor")), images)
    qmodel = calibrate(quantize(model, QuantSpec("w4a4", "per_tensor")), images)
    options = {"epochs": 4, "lr_weights": 1e-3, "lr_quant": 1e-2, "distill_weight": 0.0}
    run_qat(qmodel, train, **options, **FAST)
    assert not qmodel.training and float(qmodel.qat_wall_s) > 0
    for pairs in (train, held):
        before, after = _mean_loss(rtn, pairs), _mean_loss(qmodel, pairs)
        assert after < before - 0.03, (before, after)
    assert _mean_loss(model, held) < _mean_loss(rtn, held)  # quantization did hurt
    scales = (qmodel.head.input_quant.scale, rtn.head.input_quant.scale)
    assert not torch.equal(*scales)


def test_distillation_only_qat_runs_through_calibrate_and_is_cached(trained, tmp_path):
    model, train, held = trained
    images = [x for x, _ in train]
    options = {"epochs": 3, "lr_weights": 1e-3, "lr_quant": 1e-2, **FAST}
    spec = QuantSpec("w4a4", "per_tensor", algorithm="qat", algorithm_options=options)
    qmodel = calibrate(quantize(model, spec), images)
    rtn = calibrate(quantize(model, QuantSpec("w4a4", "per_tensor")), images)

    def kd(m):
        with torch.no_grad():
            return float(np.mean([float(distillation_loss(m(x), model(x))) for x, _ in held]))

    assert kd(qmodel) < 0.9 * kd(rtn)
    loaded = load_ranges(quantize(model, spec), save_ranges(qmodel, tmp_path / "qat.pt"))
    assert float(loaded.qat_wall_s) == float(qmodel.qat_wall_s) > 0
    assert torch.equal(loaded.body[2].weight_quant.scale, qmodel.body[2].weight_quant.scale)
    with torch.no_grad():
        assert all(torch.equal(loaded(x), qmodel(x)) for x, _ in held)


def test_labelled_qat_through_calibrate_is_run_qat_on_image_calibrated_ranges(trained):
    """Pairs reach the labelled method, images the observers: the same model bit for bit as
    calibrating on the images and then calling run_qat on the pairs."""
    model, train, held = trained
    options = {"epochs": 2, "lr_weights": 1e-3, "lr_quant": 1e-2, "distill_weight": 0.0, **FAST}
    spec = QuantSpec("w4a4", "per_tensor", algorithm="qat", algorithm_options=options)
    assert needs_labels(spec) and not needs_labels(QuantSpec("w4a4", algorithm="brecq"))
    through_calibrate = calibrate(quantize(model, spec), train)
    plain = QuantSpec("w4a4", "per_tensor")
    by_hand = run_qat(calibrate(quantize(model, plain), [x for x, _ in train]), train, **options)
    with torch.no_grad():
        assert all(torch.equal(through_calibrate(x), by_hand(x)) for x, _ in held)
    # a method composed with it still gets the images (it would fail on pairs)
    composed = QuantSpec(
        "w4a4",
        "per_tensor",
        algorithm="bias_correction+qat",
        algorithm_options={"qat": options},
    )
    calibrate(quantize(model, composed), train)


class _Interrupt(RuntimeError):
    """Raised from a forward hook: the process dying in the middle of an epoch."""


def test_resume_after_an_interruption_ends_bit_identical(trained, tmp_path):
    model, train, _ = trained
    images = [x for x, _ in train[:4]]
    pairs = train[:4]
    options = {"epochs": 3, "lr_weights": 1e-3, "lr_quant": 1e-2, "distill_weight": 0.5, **FAST}
    spec = QuantSpec("w4a4", "per_tensor", act_mapping="asymmetric")

    def fresh():
        return calibrate(quantize(model, spec), images)

    reference = run_qat(fresh(), pairs, **options)
    folder = tmp_path / "ckpt"
    calls = []

    def crash(module, args):
        if torch.is_grad_enabled():  # the FP32 teacher, a copy with this hook, runs without
            calls.append(1)
        if len(calls) == 2 * len(pairs) + 2:  # inside the third epoch
            raise _Interrupt

    interrupted = fresh()
    handle = interrupted.register_forward_pre_hook(crash)
    with pytest.raises(_Interrupt):
        run_qat(interrupted, pairs, checkpoint_dir=str(folder), **options)
    handle.remove()
    saved = torch.load(folder / CHECKPOINT_NAME, weights_only=True)
    assert saved["epoch"] == 2
    resumed, steps = fresh(), []
    resumed.register_forward_pre_hook(lambda module, args: steps.append(torch.is_grad_enabled()))
    run_qat(resumed, pairs, checkpoint_dir=str(folder), **options)
    assert sum(steps) == len(pairs)  # only the third epoch ran again
    expected, state = reference.state_dict(), resumed.state_dict()
    assert expected.keys() == state.keys()
    for key in expected:
        if key != "qat_wall_s":
            assert torch.equal(expected[key], state[key]), key
    # the final checkpoint holds the learnable model; the frozen one computes the same numbers
    learnable = fresh()
    make_learnable(learnable)
    learnable.register_buffer("qat_wall_s", torch.zeros((), dtype=torch.float64))
    learnable.load_state_dict(torch.load(folder / CHECKPOINT_NAME, weights_only=True)["model"])
    with torch.no_grad():
        assert all(torch.equal(learnable(x), resumed(x)) for x in images)
    with pytest.raises(QuantError, match="another QAT run"):
        run_qat(fresh(), pairs, checkpoint_dir=str(folder), **{**options, "seed": 1})


def test_dynamic_scales_are_refused_by_name_or_kept_dynamic(tiny_segnet):
    batches = [torch.randn(1, 1, 8, 8, 8) for _ in range(2)]
    spec = QuantSpec("w4a4", "adaptive")  # the 1x1x1 head gets dynamic per-voxel scales
    qmodel = calibrate(quantize(tiny_segnet, spec), batches)
    with pytest.raises(
        QuantError, match=r"dynamic activation quantizer\(s\) head.input_quant"
    ) as e:
        run_qat(qmodel, batches, **FAST)
    assert "\n" not in str(e.value) and "dynamic=keep" in str(e.value)
    head_weight = qmodel.head.weight.clone()
    run_qat(qmodel, batches, epochs=1, lr_weights=1e-2, dynamic="keep", **FAST)
    assert qmodel.head.input_quant.dynamic and qmodel.head.input_quant.scale is None
    assert qmodel.body[0].input_quant.scale is not None
    assert not torch.equal(qmodel.head.weight, head_weight)  # gradients passed through


def test_bad_inputs_are_one_line_errors(tiny_segnet):
    batches = [torch.randn(1, 1, 8, 8, 8)]
    qmodel = calibrate(quantize(tiny_segnet, QuantSpec("w4a4")), batches)
    with pytest.raises(QuantError, match="distill_weight=0: nothing to train on"):
        run_qat(qmodel, batches, distill_weight=0.0, **FAST)
    typo = QuantSpec("w4a4", algorithm="qat", algorithm_options={"epoch": 2})
    with pytest.raises(QuantError, match=r"qat options \['epoch'\] are unknown; allowed: epochs"):
        calibrate(quantize(tiny_segnet, typo), batches)
    fp8 = calibrate(quantize(tiny_segnet, QuantSpec("fp8_e4m3")), batches)
    with pytest.raises(QuantError, match="not FP8 or block formats"):
        run_qat(fp8, batches, **FAST)
    uncalibrated = quantize(tiny_segnet, QuantSpec("w4a4"))
    with pytest.raises(QuantError, match="not calibrated"):
        run_qat(uncalibrated, batches, **FAST)


def test_the_conf_file_lists_the_engine_defaults():
    assert yaml.safe_load(CONF.read_text())["options"] == dataclasses.asdict(QatOptions())


def test_the_default_distillation_reference_is_the_fp32_model(tiny_segnet):
    batches = [torch.randn(1, 1, 8, 8, 8) for _ in range(3)]
    options = {"epochs": 2, "lr_weights": 1e-3, **FAST}

    def trained_state(**extra):
        qmodel = calibrate(quantize(tiny_segnet, QuantSpec("w4a4")), batches)
        state = run_qat(qmodel, batches, **options, **extra).state_dict()
        return {k: v for k, v in state.items() if k != "qat_wall_s"}

    default, explicit = trained_state(), trained_state(fp32_model=tiny_segnet)
    assert all(torch.equal(default[k], explicit[k]) for k in default)
    assert not torch.equal(default["head.weight"], tiny_segnet.head.weight)


def test_qat_trains_when_calibrate_is_called_under_inference_mode(tiny_segnet):
    spec = QuantSpec("w4a4", algorithm="qat", algorithm_options={"epochs": 1, **FAST})
    qmodel = quantize(tiny_segnet, spec)
    with torch.inference_mode():  # batches and calibrated ranges are inference tensors
        batches = [torch.randn(1, 1, 8, 8, 8) for _ in range(2)]
        calibrate(qmodel, batches)
    assert float(qmodel.qat_wall_s) > 0
    assert not torch.equal(qmodel.head.weight, tiny_segnet.head.weight)
