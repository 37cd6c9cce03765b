import pytest
import torch

from benchmark.infer import predict_probabilities


def test_probabilities_sum_to_one_and_keep_volume_shape(tiny_segnet):
    image = torch.randn(1, 20, 18, 12)
    probs = predict_probabilities(tiny_segnet, image, roi_size=(8, 8, 8), overlap=0.25)
    assert probs.shape == (3, 20, 18, 12)
    torch.testing.assert_close(probs.sum(0), torch.ones(20, 18, 12))


def test_single_patch_equals_direct_forward(tiny_segnet):
    image = torch.randn(1, 8, 8, 8)
    probs = predict_probabilities(tiny_segnet, image, roi_size=(8, 8, 8), mode="constant")
    expected = torch.softmax(tiny_segnet(image[None])[0], dim=0)
    torch.testing.assert_close(probs, expected)


def test_rejects_batched_input(tiny_segnet):
    with pytest.raises(ValueError, match=r"\[C, D, H, W\]"):
        predict_probabilities(tiny_segnet, torch.randn(1, 1, 8, 8, 8), roi_size=(8, 8, 8))
