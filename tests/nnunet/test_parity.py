"""The harness's FP32 prediction of an nnU-Net folder is nnUNetPredictor's, and so are its scores."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import torch

from benchmark.config import build_point
from benchmark.pipeline import run_point
from benchmark.points.sources import open_source
from tests.runs import context_of, run_task

pytestmark = pytest.mark.slow

LABELS = list(range(1, 9))


def _reference_predictions(training, cases, out, mirroring=True):
    """nnU-Net's own inference: the trained folder, fold 0, its defaults (tile step 0.5,
    Gaussian weighting, mirroring along the checkpoint's axes unless turned off)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(
        tile_step_size=0.5,
        use_gaussian=True,
        use_mirroring=mirroring,
        perform_everything_on_device=False,
        device=torch.device("cpu"),
        allow_tqdm=False,
    )
    predictor.initialize_from_trained_model_folder(str(training.results), (0,))
    out.mkdir(parents=True, exist_ok=True)
    images = [[str(training.raw / "imagesTr" / f"{c}_0000.nii.gz")] for c in cases]
    start = time.perf_counter()
    predictor.predict_from_files_sequential(
        images, [str(out / c) for c in cases], save_probabilities=False, overwrite=True
    )
    return (time.perf_counter() - start) / len(cases)


@pytest.mark.parametrize("mirroring", ["auto", "none"])
def test_fp32_prediction_and_dsc_equal_nnunet_own(nnunet_training, folder_cfg, tmp_path, mirroring):
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    cfg = build_point(
        folder_cfg(
            "precision=fp32",
            "granularity=none",
            "evaluation.save_predictions=true",
            f"inference.mirroring={mirroring}",
        )
    )
    context = context_of(cfg)
    start = time.perf_counter()
    rows = run_point(context)
    ours_s = time.perf_counter() - start
    cases = sorted(rows["case"].unique())
    val = json.loads((nnunet_training.preprocessed / "splits_final.json").read_text())
    assert cases == sorted(val[0]["val"])  # the fold's validation cases, nothing else
    assert set(rows["mirroring"]) == {"0,1,2" if mirroring == "auto" else "none"}
    assert set(rows["fold"]) == {"0"}
    assert not rows["training_cases_scored"].any()

    ref_dir = tmp_path / "nnunet_predictor"
    ref_s = _reference_predictions(nnunet_training, cases, ref_dir, mirroring == "auto")
    ours_dir = context.experiment_dir / "predictions" / context.run_id
    io = SimpleITKIO()
    for case in cases:
        ours, _ = io.read_seg(str(ours_dir / f"{case}.nii.gz"))
        ref, _ = io.read_seg(str(ref_dir / f"{case}.nii.gz"))
        same = float((ours == ref).mean())
        agree = [float(np.mean((ours == k) == (ref == k))) for k in LABELS]
        print(
            f"mirroring={mirroring} {case}: identical voxels {same:.6f}; harness {ours_s / len(cases):.2f} s/case "
            f"(run_point: preprocessing and scoring included; inference "
            f"{rows['inference_s'].iloc[0] / len(cases):.2f}), nnUNetPredictor {ref_s:.2f} s/case; min class agreement {min(agree):.6f}"
        )
        assert same >= 0.999
        assert len(np.unique(ref)) > 2  # a prediction with structure, not one constant class

        metrics = compute_metrics(
            str(nnunet_training.raw / "labelsTr" / f"{case}.nii.gz"),
            str(ours_dir / f"{case}.nii.gz"),
            io,
            LABELS,
            None,
        )["metrics"]
        dsc = rows[(rows["case"] == case) & (rows["metric"] == "dsc")].set_index("class")["value"]
        for label in LABELS:
            theirs = metrics[label]["Dice"]
            if math.isnan(theirs):
                assert math.isnan(dsc[label]), (case, label)
            else:
                assert dsc[label] == pytest.approx(theirs, abs=1e-6), (case, label)


def test_quantized_run_calibrates_on_fold_training_cases(nnunet_training, folder_cfg, monkeypatch):
    import benchmark.data as data_layer

    real = data_layer.calibration_patches
    seen = {}

    def spy(dataset, split, **kwargs):
        seen["cases"] = dataset.split(split)
        return real(dataset, split, **kwargs)

    monkeypatch.setattr(data_layer, "calibration_patches", spy)
    cfg = build_point(folder_cfg("precision=w8a8", "granularity=per_tensor", "calibration.n=4"))
    rows = run_task(cfg)
    splits = json.loads((nnunet_training.preprocessed / "splits_final.json").read_text())
    assert seen["cases"] == sorted(splits[0]["train"])
    assert not set(seen["cases"]) & set(rows["case"])
    agreement = rows[rows["metric"] == "dsc_fp32"]["value"].dropna()
    assert len(agreement) and agreement.mean() > 0.9
    plans = json.loads((nnunet_training.results / "plans.json").read_text())
    patch = plans["configurations"]["3d_fullres"]["patch_size"]
    assert set(rows["roi"]) == {"x".join(map(str, patch))}


def test_a_case_read_back_from_the_cache_exports_identically(folder_cfg):
    source = open_source(build_point(folder_cfg("precision=fp32", "granularity=none")))
    case_id = source.dataset.split("val")[0]
    fresh = source.dataset.prepare(case_id)
    cached = source.dataset.prepare(case_id)  # arrays from .npz, properties from .json
    assert torch.equal(fresh.image, cached.image)
    assert (fresh.label_preprocessed == cached.label_preprocessed).all()
    logits = torch.randn(source.dataset.num_classes, *fresh.image.shape[1:]).half()
    torch.testing.assert_close(fresh.restore(logits), cached.restore(logits), rtol=0, atol=0)
