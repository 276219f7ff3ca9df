import pytest
import torch

from pyrovae.data import apply_binarization, load_dataset, load_digits, minibatches, validate_data


def test_digits_shapes_range_and_fixed_split():
    data = load_digits()
    assert data.train.shape == (1438, 64) and data.test.shape == (359, 64)
    assert data.image_shape == (8, 8)
    assert data.train.min() == 0 and data.train.max() == 1
    assert data.train_labels.shape == (1438,) and set(data.test_labels.tolist()) == set(range(10))
    again = load_digits()
    assert torch.equal(again.train, data.train) and torch.equal(again.test_labels, data.test_labels)


def test_static_binarization_is_fixed_and_binary():
    a, b = load_dataset("digits", "static"), load_dataset("digits", "static")
    for x in (a.train, a.test):
        assert ((x == 0) | (x == 1)).all()
    assert torch.equal(a.train, b.train) and torch.equal(a.test, b.test)
    assert not a.dynamic_binarization
    # the fraction of ones equals the mean grey level (a draw, not a threshold)
    assert a.train.mean().item() == pytest.approx(load_digits().train.mean().item(), abs=0.01)


def test_dynamic_binarization_keeps_grey_train_and_a_fixed_binary_test():
    data = load_dataset("digits", "dynamic")
    assert data.dynamic_binarization
    assert torch.equal(data.train, load_digits().train)
    assert torch.equal(data.test, load_dataset("digits", "static").test)


def test_binarization_refuses_values_outside_the_unit_interval():
    data = load_digits()
    from dataclasses import replace

    with pytest.raises(ValueError, match=r"grey levels in \[0, 1\]; the train set has values in \[0, 16\]"):
        apply_binarization(replace(data, train=data.train * 16), "static")
    with pytest.raises(ValueError, match="binarize must be one of"):
        apply_binarization(data, "threshold")
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_dataset("cifar")


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
def test_minibatches_cover_every_row_once(shuffle, drop_last):
    x = torch.arange(23.0).unsqueeze(1)
    batches = list(minibatches(x, 5, shuffle=shuffle, drop_last=drop_last))
    assert [len(b) for b in batches] == ([5] * 4 if drop_last else [5] * 4 + [3])
    rows = torch.cat(batches).squeeze(1)
    assert len(set(rows.tolist())) == len(rows)
    if not drop_last:
        assert sorted(rows.tolist()) == list(range(23))
    if not shuffle:
        assert rows.tolist() == list(range(len(rows)))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        next(minibatches(x, 0))


@pytest.mark.parametrize(
    "x, likelihood, message",
    [
        (torch.zeros(3, 4, dtype=torch.long), "gaussian", "floating-point tensor"),
        (torch.zeros(3, 5), "gaussian", r"shape \(N, 4\), got \(3, 5\)"),
        (torch.zeros(0, 4), "gaussian", "empty"),
        (torch.tensor([[0.0, float("nan"), 0, 0]]), "gaussian", "NaN or infinite"),
        (torch.tensor([[0.0, 0.5, 1, 0]]), "bernoulli", "not all 0 or 1.*--binarize"),
    ],
)
def test_validate_data_errors(x, likelihood, message):
    with pytest.raises(ValueError, match=message):
        validate_data(x, 4, likelihood)


def test_validate_data_accepts_grey_levels_for_dynamic_binarization():
    validate_data(torch.tensor([[0.0, 0.5, 1, 0]]), 4, "bernoulli", grey_levels=True)
    with pytest.raises(ValueError, match=r"values in \[0, 2\]; dynamic binarization needs \[0, 1\]"):
        validate_data(torch.tensor([[0.0, 0.5, 2, 0]]), 4, "bernoulli", grey_levels=True)


def test_digits_are_scikit_learns_read_without_importing_it():
    import subprocess
    import sys

    import numpy as np
    from sklearn.datasets import load_digits as sklearn_digits

    import pyrovae.data.datasets as datasets

    table = np.loadtxt(datasets._digits_file(), delimiter=",")
    bunch = sklearn_digits()
    assert np.array_equal(table[:, :-1], bunch.data) and np.array_equal(table[:, -1], bunch.target)
    data = datasets.load_digits()
    rows = torch.cat([data.train, data.test]).double() * 16
    assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, bunch.data.tolist()))
    code = "import sys; from pyrovae.data import load_digits; load_digits(); print('sklearn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout == "False\n"
