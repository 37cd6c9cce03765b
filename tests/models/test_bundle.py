"""MONAI bundles: the bundle's own network, transforms and inferer, parity with ``monai.bundle run``."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import time

import monai.bundle
import nibabel as nib
import numpy as np
import pytest
import torch

from benchmark.data import open_dataset
from benchmark.models.bundle import MonaiBundle
from benchmark.models.errors import CheckpointError, CheckpointMismatchError
from tests.models.bundle_fixture import network_def, training_record, write_bundle

CASE = "phantom_001"


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """Two phantom cases at the resolution the shipped weights were trained on."""
    record = training_record()["data_config"]
    tmp = tmp_path_factory.mktemp("phantom")
    return open_dataset(
        {
            "name": "phantom",
            "format": "phantom",
            "cache_dir": str(tmp / "cache"),
            "n_cases": 2,
            "inplane_voxels": record["inplane_voxels"],
            "target_spacing_mm": record["target_spacing_mm"],
            "split": {"fractions": [0.5, 0.5, 0.0]},
        }
    )


@pytest.fixture(scope="module")
def bundle_dir(phantom, tmp_path_factory):
    stats = dataclasses.asdict(phantom.intensity_stats()[0])
    return write_bundle(tmp_path_factory.mktemp("bundle") / "phantom_swinunetr", stats)


@pytest.fixture
def bundle_copy(bundle_dir, tmp_path):
    """A private copy of the bundle that a test may break."""
    return shutil.copytree(bundle_dir, tmp_path / "bundle")


def _case_files(phantom, case_id=CASE):
    case = phantom.index.case(case_id)
    return [str(f) for f in case.images], case.label


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def _bundle_own_labels(bundle_dir, files, out):
    """The label map ``monai.bundle run`` writes for one case (its SaveImaged output, (i, j, k))."""
    monai.bundle.run(
        config_file=str(bundle_dir / "configs" / "inference.json"),
        meta_file=str(bundle_dir / "configs" / "metadata.json"),
        logging_file=False,
        bundle_root=str(bundle_dir),
        datalist=files,
        output_dir=str(out),
    )
    (saved,) = sorted(out.glob("*.nii.gz"))
    return np.asarray(nib.load(saved).dataobj)


@pytest.mark.slow
def test_predict_matches_the_bundles_own_inference(phantom, bundle_dir, tmp_path):
    files, label_file = _case_files(phantom)
    start = time.perf_counter()
    own = _bundle_own_labels(bundle_dir, files, tmp_path / "eval").transpose(2, 1, 0)
    own_s = time.perf_counter() - start

    start = time.perf_counter()
    bundle = MonaiBundle(bundle_dir)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    probs = bundle.predict(bundle.network, bundle.preprocess(files))
    ours_s = time.perf_counter() - start

    label = np.asarray(nib.load(label_file).dataobj).astype(np.int64).transpose(2, 1, 0)
    assert tuple(probs.shape) == (len(bundle.labels), *label.shape) == (9, *own.shape)
    torch.testing.assert_close(probs.sum(0), torch.ones(label.shape), atol=1e-4, rtol=0)
    ours = probs.argmax(0).numpy()
    identical = float((ours == own).mean())
    print(
        f"\n{CASE}: {100 * identical:.4f}% identical voxels ({ours.size} voxels); "
        f"monai.bundle run {own_s:.2f} s/case; MonaiBundle preprocess+predict {ours_s:.2f} s/case "
        f"(+ {load_s:.2f} s to open the bundle)"
    )
    assert identical >= 0.999
    # The trained model, not noise: the large organs are found (a wrong axis order, orientation
    # or normalisation in the bundle would lose them).
    organ_dsc = [_dice(ours == k, label == k) for k in range(1, 9)]
    assert sum(d > 0.8 for d in organ_dsc) >= 5, organ_dsc


def test_predict_returns_probabilities_on_the_file_grid_in_k_j_i_order(bundle_dir, tmp_path):
    # An LPS-oriented, anisotropic file of distinct axis lengths: any axis mix-up changes the shape.
    rng = np.random.default_rng(0)
    shape_ijk = (20, 24, 10)
    affine = np.diag([-3.2, -3.0, 4.5, 1.0])
    hu = (rng.normal(40.0, 30.0, shape_ijk)).astype(np.float32)
    nib.save(nib.Nifti1Image(hu, affine), str(tmp_path / "case_0000.nii.gz"))
    bundle = MonaiBundle(bundle_dir)
    item = bundle.preprocess(tmp_path / "case_0000.nii.gz")  # one file, not a list, also works
    x = bundle.network_input(item)
    assert type(x) is torch.Tensor and x.dtype == torch.float32 and x.shape[0] == 1
    probs = bundle.predict(bundle.network, item)
    assert tuple(probs.shape) == (9, *shape_ijk[::-1]) and probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(0), torch.ones(shape_ijk[::-1]), atol=1e-4, rtol=0)
    # The network argument is the one run (a quantized copy replaces self.network).
    other = copy.deepcopy(bundle.network)
    with torch.no_grad():
        other.out.conv.conv.bias.add_(torch.arange(9.0))
    assert not torch.allclose(bundle.predict(other, item), probs, atol=1e-3)


def test_labels_come_from_metadata_and_network_from_network_def(bundle_dir):
    bundle = MonaiBundle(bundle_dir)
    record = training_record()
    assert bundle.labels == {int(k): v for k, v in record["labels"].items()}
    shipped = torch.load(bundle_dir / "models" / "model.pt", weights_only=True)
    state = bundle.network.state_dict()
    assert type(bundle.network).__name__ == "SwinUNETR" and not bundle.network.training
    assert state.keys() == shipped.keys() and all(torch.equal(state[k], shipped[k]) for k in state)


def test_labels_are_none_without_channel_def(bundle_copy):
    (bundle_copy / "configs" / "metadata.json").write_text(json.dumps({"version": "0.1.0"}))
    assert MonaiBundle(bundle_copy).labels is None


def test_bundle_without_inference_json_names_the_file_and_what_a_bundle_needs(bundle_copy):
    config = bundle_copy / "configs" / "inference.json"
    config.rename(bundle_copy / "configs" / "inference.yaml")
    with pytest.raises(CheckpointError) as err:
        MonaiBundle(bundle_copy)
    message = str(err.value)
    assert "\n" not in message and str(config) in message
    for needed in ("network_def", "preprocessing", "inferer", "postprocessing", "models/model.pt"):
        assert needed in message
    assert "config_file='configs/inference.yaml'" in message
    # The hint works: JSON is YAML.
    assert MonaiBundle(bundle_copy, config_file="configs/inference.yaml").labels is not None


def test_missing_weights_and_config_ids_are_named(bundle_copy):
    config_file = bundle_copy / "configs" / "inference.json"
    config = json.loads(config_file.read_text())
    del config["inferer"]
    config_file.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"inference\.json: defines no \['inferer'\]"):
        MonaiBundle(bundle_copy)
    (bundle_copy / "models" / "model.pt").unlink()
    with pytest.raises(CheckpointError, match=r"models/model\.pt: missing"):
        MonaiBundle(bundle_copy)


def test_network_def_that_does_not_build_is_named(bundle_copy):
    config_file = bundle_copy / "configs" / "inference.json"
    config = json.loads(config_file.read_text())
    config["network_def"]["feature_size"] = 13  # SwinUNETR needs a multiple of 12
    config_file.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"inference\.json: cannot build 'network_def'"):
        MonaiBundle(bundle_copy)


def test_weights_that_do_not_fit_network_def_name_the_mismatch(bundle_copy):
    other = monai.bundle.ConfigParser({"net": network_def(1, 3)}).get_parsed_content("net")
    state = other.state_dict()
    state["extra.weight"] = torch.zeros(2)
    del state["encoder1.layer.conv1.conv.weight"]
    torch.save(state, bundle_copy / "models" / "model.pt")
    with pytest.raises(CheckpointMismatchError) as err:
        MonaiBundle(bundle_copy)
    message = str(err.value)
    assert "model.pt does not fit SwinUNETR" in message and "network_def" in message
    assert "\n" not in message
    assert (
        "out.conv.conv.weight: checkpoint (3, 12, 1, 1, 1) vs network (9, 12, 1, 1, 1)" in message
    )
    assert err.value.missing == ["encoder1.layer.conv1.conv.weight"]
    assert err.value.unexpected == ["extra.weight"]
    assert {k for k, _, _ in err.value.mismatched} == {"out.conv.conv.weight", "out.conv.conv.bias"}


def test_unreadable_config_and_metadata_are_named(bundle_copy):
    metadata = bundle_copy / "configs" / "metadata.json"
    metadata.write_text("{not json")
    with pytest.raises(CheckpointError, match=r"metadata\.json: not valid JSON"):
        MonaiBundle(bundle_copy)
    (bundle_copy / "configs" / "inference.json").write_text('{"network_def": ')
    with pytest.raises(CheckpointError, match=r"inference\.json: cannot read the bundle config"):
        MonaiBundle(bundle_copy)


@pytest.mark.slow
def test_a_bundle_runs_through_the_pipeline_as_it_runs_itself(phantom, bundle_dir, tmp_path):
    """``model.checkpoint=BUNDLE``: the run's saved FP32 labels equal ``monai.bundle run``'s, and a
    W8A8 run calibrates through the bundle's transforms and scores against that baseline."""
    from hydra import compose, initialize_config_dir

    from benchmark.pipeline import run_point
    from tests.run.conftest import CONF
    from tests.runs import context_of

    record = training_record()["data_config"]
    (case_id,) = phantom.split("val")
    files, _ = _case_files(phantom, case_id)
    own = _bundle_own_labels(bundle_dir, files, tmp_path / "eval")

    def run(*overrides):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(
                "config",
                overrides=[
                    "model=tiny_swinunetr",
                    f"model.checkpoint={bundle_dir}",
                    f"data.cache_dir={phantom.config.cache_dir}",
                    "data.n_cases=2",
                    f"data.inplane_voxels={record['inplane_voxels']}",
                    f"data.target_spacing_mm={list(record['target_spacing_mm'])}",
                    "data.split.fractions=[0.5,0.5,0.0]",
                    "evaluation.split=val",
                    "evaluation.save_predictions=true",
                    "calibration.n=2",
                    f"paths.cache_dir={tmp_path / 'cache'}",
                    f"paths.results_dir={tmp_path / 'results'}",
                    "run.progress=false",
                    *overrides,
                ],
            )
        context = context_of(cfg)
        return run_point(context), context

    rows, context = run("precision=fp32", "granularity=none")
    assert set(rows["case"]) == {case_id}
    ours = nib.load(context.experiment_dir / "predictions" / context.run_id / f"{case_id}.nii.gz")
    same = float((np.asarray(ours.dataobj) == own).mean())
    print(f"pipeline vs monai.bundle run: {100 * same:.4f}% identical voxels")
    assert same >= 0.999
    quantized, _ = run("precision=w8a8", "granularity=per_tensor")
    agreement = quantized[quantized["metric"] == "dsc_fp32"]["value"]
    assert len(agreement) and agreement.min() > 0.5
