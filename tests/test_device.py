import numpy as np
import pytest
import torch

from skflow._device import (
    check_dtype_on_device,
    device_available,
    draw_seed,
    resolve_device,
    standardized_tensor,
    training_data_device,
)


@pytest.fixture
def no_accelerator(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, no_accelerator):
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_explicit_devices(monkeypatch, no_accelerator):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="MPS is not available"):
        resolve_device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match="has 1 CUDA device"):
        resolve_device("cuda:1")


def test_unknown_device_name():
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("gpu-please")


def test_device_available(monkeypatch, no_accelerator):
    assert device_available(torch.device("cpu"))
    assert not device_available(torch.device("cuda:0"))
    assert not device_available(torch.device("mps"))


def test_float64_is_refused_on_mps():
    with pytest.raises(ValueError, match="MPS does not support float64"):
        check_dtype_on_device(torch.float64, torch.device("mps"))
    check_dtype_on_device(torch.float32, torch.device("mps"))


def test_draw_seed_is_reproducible():
    assert draw_seed(0) == draw_seed(0)
    assert draw_seed(0) != draw_seed(1)
    assert 0 <= draw_seed(None) < 2**31


def test_standardized_tensor_is_built_block_by_block_without_changing_values():
    X = np.random.RandomState(0).normal(size=(1000, 3)) * [1, 10, 100]
    mean, scale = X.mean(0), X.std(0)
    data = standardized_tensor(X, mean, scale, torch.device("cpu"), torch.float64, 64)
    np.testing.assert_array_equal(data.numpy(), (X - mean) / scale)


def test_training_data_stay_on_the_cpu_when_too_large_for_the_accelerator():
    cpu = torch.device("cpu")
    assert training_data_device(2**40, cpu) == cpu
    # A backend whose free memory cannot be queried gets a 1 GiB budget.
    other = torch.device("meta")
    assert training_data_device(2**20, other) == other
    assert training_data_device(2**31, other) == cpu
