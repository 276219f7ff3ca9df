import math

import numpy as np
import pytest
import torch
from PIL import Image

from pyrovae import VAE
from pyrovae.models.base import LatentVariableModel
from pyrovae.plots import (
    curve_series,
    histogram,
    interpolation_latents,
    latent_coordinates,
    save_evaluation_histograms,
    save_image_grid,
    save_interpolations,
    save_latent_scatter,
    save_reconstructions,
    save_samples,
    save_training_curves,
    save_traversals,
    selected_epoch,
    training_curves_figure,
    traversal_latents,
)


@pytest.mark.parametrize("image_shape", [(8, 8), (28, 28), (1, 28, 28), (5,), None], ids=str)
def test_image_grid_for_any_shape(tmp_path, image_shape):
    d = 5 if image_shape in ((5,), None) else int(torch.Size(image_shape).numel())
    path = save_image_grid(torch.rand(10, d), tmp_path / "grid.png", image_shape, ncols=4)
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 20


def test_image_grid_errors(tmp_path):
    with pytest.raises(ValueError, match=r"image_shape \(3, 3\) has 9 pixels, the data have 8"):
        save_image_grid(torch.rand(2, 8), tmp_path / "grid.png", (3, 3))
    with pytest.raises(ValueError, match="no images"):
        save_image_grid(torch.rand(0, 4), tmp_path / "grid.png", (2, 2))


def test_samples_and_reconstructions_are_written(tmp_path):
    vae = VAE(28 * 28, z_dim=2, hidden_dims=(16,), image_shape=(28, 28))
    save_samples(vae, tmp_path / "samples.png", n=16)
    save_reconstructions(vae, torch.bernoulli(torch.rand(5, 784)), tmp_path / "reconstructions.png")
    with Image.open(tmp_path / "samples.png") as s, Image.open(tmp_path / "reconstructions.png") as r:
        assert s.size[0] > 200 and r.size[0] > 200


@pytest.mark.parametrize("z_dim", [1, 2, 5])
def test_latent_coordinates_are_the_means_or_their_principal_components(float64, z_dim):
    vae = VAE(12, z_dim=z_dim, hidden_dims=(16,), activation="tanh")
    x = torch.bernoulli(torch.rand(200, 12))
    coords, labels = latent_coordinates(vae, x, batch_size=64)
    means = vae.encoder(x)[0].detach()
    assert coords.shape == (200, 2) and len(labels) == 2
    if z_dim == 1:
        torch.testing.assert_close(coords[:, 0], means[:, 0])
        assert (coords[:, 1] == 0).all()
    elif z_dim == 2:
        torch.testing.assert_close(coords, means)
    else:
        # PCA: uncorrelated coordinates whose variances are the two largest eigenvalues of Cov(means)
        eigenvalues = torch.linalg.eigvalsh(torch.cov(means.T, correction=0)).flip(0)
        torch.testing.assert_close(coords.var(0, unbiased=False), eigenvalues[:2], rtol=1e-10, atol=1e-12)
        cross = (coords[:, 0] * coords[:, 1]).mean()
        assert abs(cross) < 1e-12 and coords.mean(0).abs().max() < 1e-12
        assert "% of variance" in labels[0]


def test_latent_scatter_and_training_curves_are_written(tmp_path):
    vae = VAE(64, z_dim=3, hidden_dims=(16,), image_shape=(8, 8))
    x = torch.bernoulli(torch.rand(30, 64))
    path = save_latent_scatter(vae, x, tmp_path / "latent.png", labels=torch.arange(30) % 10)
    records = [{"epoch": e, "train_elbo": -40 + e, "test_elbo": -41 + e, "seconds": 0.5} for e in range(1, 6)]
    curves = save_training_curves(records, tmp_path / "curves.png")
    with Image.open(path) as latent, Image.open(curves) as image:
        assert latent.format == image.format == "PNG"
        assert image.size[0] > 1.5 * image.size[1]  # two panels side by side
    with pytest.raises(ValueError, match=r"labels must have one entry per row of x \(30\), got 4"):
        save_latent_scatter(vae, x, tmp_path / "bad.png", labels=torch.arange(4))
    with pytest.raises(ValueError, match="the metrics are empty"):
        save_training_curves([], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="missing seconds"):
        save_training_curves([{"epoch": 1, "train_elbo": -3.0}], tmp_path / "bad.png")


@pytest.mark.parametrize(
    "image_shape, expected",
    [
        ((8, 8), (5, 8, 8)),
        ((1, 28, 28), (5, 28, 28)),
        ((28, 28, 1), (5, 28, 28)),
        ((3, 4, 6), (5, 4, 6, 3)),
        ((4, 6, 3), (5, 4, 6, 3)),
        ((2, 5, 6), (5, 10, 6)),
        ((12,), (5, 1, 12)),
    ],
    ids=str,
)
def test_one_picture_per_data_point_grey_or_colour(image_shape, expected):
    from pyrovae.plots import as_images

    d = int(torch.Size(image_shape).numel())
    x = torch.arange(5 * d, dtype=torch.float32).reshape(5, d)
    images = as_images(x, image_shape)
    assert images.shape == expected
    if image_shape == (3, 4, 6):  # channel-first: pixel (0, 0) of point 1 holds its three channels
        assert images[1, 0, 0].tolist() == [d, d + 24, d + 48]


def test_colour_grid_is_written(tmp_path):
    path = save_image_grid(torch.rand(6, 3 * 5 * 5), tmp_path / "rgb.png", (5, 5, 3))
    with Image.open(path) as image:
        assert image.mode in ("RGBA", "RGB") and min(image.size) > 20


# -- training curves -------------------------------------------------------------------------------
def _records(epochs=4, terms=False, validation=(-34.0, -31.0, -31.0, -32.0)):
    """Hand-written metrics.jsonl records, with the per-epoch reconstruction and KL terms if asked."""
    records = []
    for e in range(1, epochs + 1):
        record = {"epoch": e, "step": 10 * e, "train_elbo": -40.0 + e, "test_elbo": -41.0 + e, "seconds": 0.5}
        if validation is not None:
            record["validation_elbo"] = validation[e - 1]
        if terms:
            for split in ("test", "validation"):
                record[f"{split}_reconstruction"] = -30.0 + e + (split == "test")
                record[f"{split}_kl"] = 5.0 + 0.5 * e
        records.append(record)
    return records


def test_the_selected_epoch_is_the_first_best_validation_elbo():
    assert selected_epoch(_records()) == 2  # -31 at epochs 2 and 3: the first one, as ModelSelection keeps
    assert selected_epoch(_records(validation=None)) is None
    assert selected_epoch([{"epoch": 1, "validation_elbo": None}, {"epoch": 2, "validation_elbo": -3.0}]) == 2


def test_curve_series_takes_each_split_present_and_leaves_gaps_where_a_record_lacks_it():
    records = _records(terms=True)
    del records[0]["test_kl"]
    series = curve_series(records, "kl")
    assert list(series) == ["validation", "test"]
    assert math.isnan(series["test"][0]) and series["test"][1:] == [6.0, 6.5, 7.0]
    assert curve_series(_records(), "kl") == {}
    assert list(curve_series(_records(), "elbo")) == ["train", "validation", "test"]


def _lines(ax):
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}


@pytest.mark.parametrize("terms", [False, True], ids=["elbo-only", "with-reconstruction-and-kl"])
def test_training_curves_draw_every_split_the_selected_epoch_and_integer_epochs(tmp_path, terms):
    records = _records(terms=terms)
    figure = training_curves_figure(records)
    figure.draw_without_rendering()
    axes = figure.get_axes()
    assert len(axes) == (4 if terms else 2)  # ELBO by epoch, [reconstruction, KL by epoch,] ELBO by time
    by_epoch = _lines(axes[0])
    assert by_epoch["validation"] == ([1, 2, 3, 4], [-34.0, -31.0, -31.0, -32.0])
    assert by_epoch["test"][1] == [r["test_elbo"] for r in records]
    assert by_epoch["selected epoch 2"][0] == [2, 2]
    for ax in axes[:-1]:
        ticks = [t for t in ax.get_xticks() if 1 <= t <= 4]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    if terms:
        assert _lines(axes[1])["test"][1] == [r["test_reconstruction"] for r in records]
        assert _lines(axes[2])["validation"][1] == [r["validation_kl"] for r in records]
    assert _lines(axes[-1])["train"][0] == [0.5, 1.0, 1.5, 2.0]  # cumulative seconds
    path = save_training_curves(records, tmp_path / "training_curves.png")
    with Image.open(path) as image:  # 5 x 4 inches a panel at 80 dots per inch
        assert image.format == "PNG" and image.size == ((4 if terms else 2) * 400, 320)


# -- reconstructions beside the originals -----------------------------------------------------------
def test_reconstructions_are_drawn_under_the_grey_originals_of_binarized_images(tmp_path):
    vae = VAE(64, z_dim=2, hidden_dims=(8,), image_shape=(8, 8))
    grey = torch.rand(10, 64)
    binary = torch.bernoulli(grey)
    three = save_reconstructions(vae, binary, tmp_path / "three.png", originals=grey)
    two = save_reconstructions(vae, binary, tmp_path / "two.png")
    same = save_reconstructions(vae, grey, tmp_path / "same.png", originals=grey)  # not binarized: two rows
    sizes = {}
    for path in (three, two, same):
        with Image.open(path) as image:
            sizes[path.stem] = image.size
    assert sizes == {"three": (768, 320), "two": (768, 224), "same": (768, 224)}  # 8 x 1.2 in; rows x 1.2 + 0.4
    with pytest.raises(ValueError, match=r"originals must have the shape of x, \(8, 64\), got \(8, 63\)"):
        save_reconstructions(vae, binary, tmp_path / "bad.png", originals=grey[:, :63])


def test_a_binarized_data_set_keeps_its_grey_test_images():
    from pyrovae.data import load_dataset

    grey = load_dataset("digits")
    for binarization in ("static", "dynamic"):
        data = load_dataset("digits", binarization=binarization)
        assert torch.equal(data.test_originals, grey.test)
        assert set(data.test.unique().tolist()) == {0.0, 1.0}
    assert grey.test_originals is None


# -- traversals and interpolations ------------------------------------------------------------------
def test_a_traversal_moves_one_active_coordinate_per_row_around_the_posterior_mean():
    torch.manual_seed(0)
    means = torch.randn(50, 5) * torch.tensor([0.1, 3.0, 0.01, 1.0, 2.0])
    z, order, offsets = traversal_latents(means, index=7, coordinates=3, steps=5, span=2.0)
    spread = means.std(0)
    assert order == [1, 4, 3]  # the largest spread of the posterior means first
    assert z.shape == (3, 5, 5) and offsets.tolist() == [-2.0, -1.0, 0.0, 1.0, 2.0]
    for row, j in enumerate(order):
        others = [c for c in range(5) if c != j]
        assert torch.equal(z[row][:, others], means[7, others].expand(5, 4))
        torch.testing.assert_close(z[row, :, j], means[7, j] + offsets * spread[j])
    assert torch.equal(z[:, 2], means[7].expand(3, 5))  # the middle column is the image's own mean
    with pytest.raises(ValueError, match="at least 2 points"):
        traversal_latents(means[:1])


def test_an_interpolation_runs_along_the_segment_between_two_means():
    a, b = torch.tensor([0.0, 2.0, -1.0]), torch.tensor([4.0, 2.0, 1.0])
    z = interpolation_latents(a, b, steps=5)
    assert z.shape == (5, 3) and torch.equal(z[0], a) and torch.equal(z[-1], b)
    torch.testing.assert_close(z[2], (a + b) / 2)
    torch.testing.assert_close(z[1:] - z[:-1], ((b - a) / 4).expand(4, 3))


def test_decode_is_the_decoders_mean_and_the_generic_one_agrees(float64):
    vae = VAE(12, z_dim=3, hidden_dims=(8,))
    x = torch.bernoulli(torch.rand(6, 12))
    z = vae.posterior_mean(x)
    torch.testing.assert_close(vae.decode(z), vae.reconstruct(x))
    torch.testing.assert_close(LatentVariableModel.decode(vae, z), vae.decode(z))  # through model(), traced


def test_traversal_and_interpolation_pictures_are_written(tmp_path):
    vae = VAE(64, z_dim=4, hidden_dims=(8,), image_shape=(8, 8))
    x = torch.bernoulli(torch.rand(20, 64))
    with Image.open(save_traversals(vae, x, tmp_path / "traversals.png")) as image:
        assert image.format == "PNG" and image.size == (864, 416)  # 9 columns; 4 rows (z_dim) x 1.2 + 0.4 in
    with Image.open(save_interpolations(vae, x, tmp_path / "interpolations.png")) as image:
        assert image.size == (1056, 416)  # 9 steps and the two ends; 4 pairs


# -- histograms -------------------------------------------------------------------------------------
def test_histogram_counts_are_numpys_of_the_finite_values():
    values = [1.0, 2.5, None, 3.0, float("inf"), -2.0, 2.5]
    counts, edges, left_out = histogram(values, bins=4)
    expected, expected_edges = np.histogram([1.0, 2.5, 3.0, -2.0, 2.5], bins=4)
    assert counts.tolist() == expected.tolist() and np.array_equal(edges, expected_edges) and left_out == 2
    with pytest.raises(ValueError, match="no finite value to draw among 2"):
        histogram([None, float("nan")])


def test_evaluation_histograms_are_written_for_the_columns_present(tmp_path):
    per_point = {"log_px": [-30.0, -31.5, -29.0], "khat": [0.2, None, 0.9]}
    paths = save_evaluation_histograms(per_point, tmp_path, 0.7)
    assert [p.name for p in paths] == ["log_px_histogram.png", "khat_histogram.png"]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (480, 320)
    other = tmp_path / "no-khat"
    other.mkdir()
    assert [p.name for p in save_evaluation_histograms({**per_point, "khat": None}, other, 0.7)] == [
        "log_px_histogram.png"
    ]


def test_a_two_level_model_decodes_with_its_lower_level_at_its_conditional_mean():
    from pyrovae.models import make_vae

    vae = make_vae(64, latents=2, z_dim=3, hidden_dims=(8,), image_shape=(8, 8))
    z2 = torch.randn(5, 3)
    first = vae.decode(z2)
    assert first.shape == (5, 64) and torch.equal(first, vae.decode(z2))  # no draw of z1: the same twice
    assert not torch.allclose(first[0], first[1])  # each row decodes its own z2


def test_each_split_keeps_its_colour_in_every_panel():
    axes = training_curves_figure(_records(terms=True)).get_axes()
    colours = [{line.get_label(): line.get_color() for line in ax.get_lines()} for ax in axes]
    for split in ("validation", "test"):
        assert len({panel[split] for panel in colours}) == 1, split
