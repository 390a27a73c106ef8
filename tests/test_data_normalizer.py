"""Min-max normaliser: range, round trip, constant dimensions, torch and safetensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ractd_cli.data import Normalizer


def _data() -> np.ndarray:
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(500, 3)) * [1.0, 50.0, 1.0]).astype(np.float32)
    x[:, 2] = 4.2  # a constant dimension
    return x


def test_range_and_round_trip_numpy():
    x = _data()
    norm = Normalizer.fit(x)
    y = norm.normalize(x)
    assert y.min() >= -1 - 1e-6 and y.max() <= 1 + 1e-6
    np.testing.assert_allclose(y[:, :2].min(axis=0), -1, atol=1e-6)
    np.testing.assert_allclose(y[:, :2].max(axis=0), 1, atol=1e-6)
    np.testing.assert_allclose(norm.unnormalize(y), x, rtol=1e-5, atol=1e-4)


def test_constant_dimension_maps_to_zero_and_round_trips():
    x = _data()
    norm = Normalizer.fit(x)
    y = norm(x)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y[:, 2], 0.0, atol=1e-6)
    np.testing.assert_allclose(norm.unnormalize(y)[:, 2], 4.2, rtol=1e-6)
    # a value off the constant still round-trips (scale 1 in that dimension)
    z = np.array([[0.0, 0.0, 5.2]], np.float32)
    np.testing.assert_allclose(norm.unnormalize(norm.normalize(z)), z, atol=1e-5)


def test_torch_tensors_and_batched_shapes():
    x = _data()
    norm = Normalizer.fit(torch.from_numpy(x))
    t = torch.from_numpy(x).reshape(50, 10, 3)  # (..., D)
    y = norm.normalize(t)
    assert isinstance(y, torch.Tensor) and y.shape == t.shape and y.dtype == torch.float32
    torch.testing.assert_close(norm.unnormalize(y), t, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(y.numpy(), norm.normalize(x.reshape(50, 10, 3)), atol=1e-6)


def test_state_dict_round_trip_through_safetensors(tmp_path):
    from safetensors.torch import load_file, save_file

    norm = Normalizer.fit(_data())
    sd = norm.state_dict()
    assert set(sd) == {"min", "max"} and all(v.dtype == torch.float32 for v in sd.values())
    save_file({f"state_norm.{k}": v for k, v in sd.items()}, str(tmp_path / "n.safetensors"))
    loaded = load_file(str(tmp_path / "n.safetensors"))
    again = Normalizer.from_state_dict({k.split(".", 1)[1]: v for k, v in loaded.items()})
    x = _data()
    np.testing.assert_array_equal(again.normalize(x), norm.normalize(x))


def test_rejects_bad_bounds():
    with pytest.raises(ValueError):
        Normalizer([0.0, 1.0], [1.0, 0.0])
    with pytest.raises(ValueError):
        Normalizer.fit(np.zeros((0, 2)))
