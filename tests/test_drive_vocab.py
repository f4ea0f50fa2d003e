"""The trajectory vocabulary's k-means (scikit-learn KMeans, k-means++) and its member-mean poses."""

import numpy as np
import pytest

from trajmoe.drive.vocab import kmeans_vocab


def _groups(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Three groups of 4 s futures: straight at 5, 10 and 15 m/s (headings near 0 and near +-pi)."""
    t = np.arange(1, 41) * 0.1
    means = []
    samples = []
    for speed, heading in ((5.0, 0.0), (10.0, 0.0), (15.0, np.pi - 0.01)):
        mean = np.stack([speed * t, np.zeros(40), np.full(40, heading)], -1)
        means.append(mean)
        for _ in range(30):
            s = mean + rng.normal(0, 0.05, mean.shape)
            s[:, 2] = (s[:, 2] + np.pi) % (2 * np.pi) - np.pi  # some headings wrap to -pi
            samples.append(s)
    return np.stack(samples), np.stack(means)


def test_kmeans_vocab_finds_the_groups_and_is_seeded():
    samples, means = _groups(np.random.default_rng(0))
    vocab = kmeans_vocab(samples, 3, iters=20, seed=1)
    assert vocab.shape == (3, 40, 3) and vocab.dtype == np.float32
    order = np.argsort(vocab[:, -1, 0])  # by distance travelled
    np.testing.assert_allclose(vocab[order][..., :2], means[..., :2], atol=0.05)
    # circular mean: headings around +-pi average to ~pi, not to ~0
    np.testing.assert_allclose(np.abs(vocab[order][2, :, 2]), np.pi - 0.01, atol=0.05)
    np.testing.assert_array_equal(vocab, kmeans_vocab(samples, 3, iters=20, seed=1))


def test_kmeans_vocab_errors():
    samples, _ = _groups(np.random.default_rng(0))
    with pytest.raises(ValueError, match="exceeds the 90 trajectory samples"):
        kmeans_vocab(samples, 91)
    with pytest.raises(ValueError, match=r"vocabulary size must be in \[2, 65536\], got 1"):
        kmeans_vocab(samples, 1)
