import os

import pytest
import torch

from pyrovae import VAE, load_checkpoint, load_vae, save_checkpoint


def test_round_trip_is_exact_in_float64(tmp_path):
    vae = VAE(10, z_dim=3, hidden_dims=(6,), likelihood="gaussian", learn_sigma=True, image_shape=(2, 5)).double()
    path = save_checkpoint(tmp_path / "checkpoint.pt", vae, config={"seed": 3}, history=[{"epoch": 1}])
    payload = torch.load(path, weights_only=True)  # plain tensors: safe to load
    assert payload["config"] == {"seed": 3} and payload["history"] == [{"epoch": 1}]
    loaded = load_vae(tmp_path)  # a run directory works as well as the file
    assert loaded.dtype == torch.float64 and loaded.image_shape == (2, 5)
    for (name, a), (_, b) in zip(vae.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    x = torch.rand(4, 10, dtype=torch.float64)
    assert torch.equal(vae.reconstruct(x), loaded.reconstruct(x))


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    vae = VAE(4, z_dim=2, hidden_dims=(3,))
    save_checkpoint(tmp_path / "checkpoint.pt", vae)
    save_checkpoint(tmp_path / "checkpoint.pt", vae)
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "pyrovae-checkpoint", "payload": _Exploit()}, path, pickle_protocol=2)
    with pytest.raises(ValueError, match="refused to load"):
        load_checkpoint(path)


def test_truncated_foreign_and_missing_files_give_clear_errors(tmp_path):
    good = save_checkpoint(tmp_path / "checkpoint.pt", VAE(4, z_dim=2, hidden_dims=(3,)))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="cannot read .*truncated.pt"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(2)}, foreign)
    with pytest.raises(ValueError, match="not a pyrovae checkpoint"):
        load_checkpoint(foreign)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="cannot read|refused"):
        load_checkpoint(text)
    with pytest.raises(ValueError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing")
