"""Image oracles: classifier quality, JPEG compressibility, brightness, bad inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vardbio_oracles.image import Brightness, DigitProbability, JpegCompressibility, load_digit_classifier


def _digits():
    sklearn = pytest.importorskip("sklearn.datasets")
    d = sklearn.load_digits()
    return d.images / 16.0, d.target


def test_shipped_classifier_recognises_digits():
    images, labels = _digits()
    assert float(load_digit_classifier()["test_accuracy"]) > 0.95
    probs = np.stack([DigitProbability(0, value_range=(0, 1)).probabilities(x) for x in images])
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-9)
    assert (probs.argmax(1) == labels).mean() > 0.97
    # the oracle value is the probability of its digit, and [-1, 1] inputs are rescaled
    o = DigitProbability(3)
    x = images[labels == 3][0]
    assert o.score([2 * x - 1]).values[0] == pytest.approx(probs[labels == 3][0][3])
    assert o.score([2 * x - 1]).values[0] > 0.9
    # a larger rendering is area-resampled to 8x8 first
    assert o.score([np.kron(2 * x - 1, np.ones((4, 4)))]).values[0] > 0.9


def test_jpeg_compressibility():
    rng = np.random.default_rng(0)
    flat, noise = np.zeros((8, 8)), rng.uniform(-1, 1, (8, 8))
    o = JpegCompressibility()
    v = o.score([flat, noise, rng.uniform(-1, 1, (3, 8, 8))]).values
    assert v[0] > v[1] and (v < 0).all()
    # upsampling is what makes the content count: at size 8 the header dominates
    big = JpegCompressibility(size=64).score([noise]).values[0]
    small = JpegCompressibility(size=8).score([noise]).values[0]
    assert big < small
    assert JpegCompressibility().score([torch.tensor(noise)]).values[0] == v[1]


def test_brightness_and_value_range():
    img = np.full((8, 8), 0.5)
    assert Brightness().score([img]).values[0] == pytest.approx(0.75)
    assert Brightness(value_range=(0, 1)).score([img]).values[0] == pytest.approx(0.5)
    assert Brightness().score([np.full((8, 8), 3.0)]).values[0] == 1.0  # clipped
    with pytest.raises(ValueError, match="value_range"):
        Brightness(value_range=(1, 0))
    with pytest.raises(ValueError, match="digit"):
        DigitProbability(10)


@pytest.mark.parametrize("oracle", [Brightness(), JpegCompressibility(), DigitProbability(1)])
def test_bad_images_give_nan_with_reason(oracle):
    nan_img = np.zeros((8, 8))
    nan_img[2, 2] = np.nan
    res = oracle.score([nan_img, np.zeros((2, 8, 8)), np.zeros(5), "img", np.zeros((0, 8))])
    assert np.isnan(res.values).all() and all(res.reasons)
    assert "non-finite" in res.reasons[0]


def test_batch_equals_singles():
    rng = np.random.default_rng(3)
    imgs = [rng.uniform(-1, 1, (8, 8)) for _ in range(4)]
    for o in (Brightness(), JpegCompressibility(), DigitProbability(7)):
        np.testing.assert_array_equal(o.score(imgs).values,
                                      [o.score([x]).values[0] for x in imgs])


@pytest.mark.parametrize("oracle", [Brightness(), JpegCompressibility(), DigitProbability(4)])
def test_plugin_contract(oracle):
    from vardbio.testing import check_oracle_contract

    rng = np.random.default_rng(0)
    good = [rng.uniform(-1, 1, (8, 8)), rng.uniform(-1, 1, (3, 16, 16)), np.zeros((1, 8, 8))]
    check_oracle_contract(oracle, good, [np.full((8, 8), np.nan), np.zeros(4), None])
