"""SLICER's k-mix: log-mixup-exp with partners from the farthest cluster, and its k-means."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clar_ray import kmix as K


def _log_mels(b: int = 8, f: int = 6, t: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, f, t, generator=torch.Generator().manual_seed(seed))


def test_kmix_is_log_mixup_exp_with_its_partners_and_weights() -> None:
    x = _log_mels()
    out = K.kmix(x, torch.Generator().manual_seed(3))
    partners, weights = K.kmix_partners(K.kmix_embedding(x), K.kmix_embedding(x),
                                        torch.Generator().manual_seed(3))
    assert out.shape == x.shape
    assert torch.all((weights >= 0) & (weights <= 0.4)) and weights.std() > 0
    assert torch.all(partners != torch.arange(8))
    lam = weights[:, None, None]
    expected = torch.log((1 - lam) * x.exp() + lam * x[partners].exp())
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_kmix_scales_agree_and_zero_ratio_is_identity() -> None:
    x = _log_mels()
    from_db = K.kmix(x * 10 / np.log(10), torch.Generator().manual_seed(1), scale="db")
    from_log = K.kmix(x, torch.Generator().manual_seed(1))
    torch.testing.assert_close(from_db * np.log(10) / 10, from_log, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(K.kmix(x, torch.Generator(), max_ratio=0.0), x)
    linear = K.kmix(x, torch.Generator().manual_seed(1), scale="linear")
    partners, weights = K.kmix_partners(K.kmix_embedding(x), K.kmix_embedding(x),
                                        torch.Generator().manual_seed(1))
    lam = weights[:, None, None]
    torch.testing.assert_close(linear, (1 - lam) * x + lam * x[partners])
    assert torch.equal(K.kmix(x[:1], torch.Generator()), x[:1])  # no partner but itself


def test_kmix_partners_come_from_the_farthest_cluster() -> None:
    directions = torch.eye(3)  # three clusters along the axes; cluster 2 is farthest from 0
    centroids = torch.stack([directions[0], directions[0] * 0.6 + directions[1] * 0.8,
                             -directions[0]])
    x = torch.cat([directions[0].repeat(4, 1), -directions[0].repeat(2, 1)])
    x = x[:, :, None].repeat(1, 1, 5)  # (6, 3, 5): time-constant spectra
    partners, _ = K.kmix_partners(K.kmix_embedding(x), K.kmix_embedding(x),
                                  torch.Generator().manual_seed(0), centroids=centroids)
    assert set(partners[:4].tolist()) <= {4, 5}  # rows in cluster 0 mix with cluster 2
    assert set(partners[4:].tolist()) <= {0, 1, 2, 3}
    only = K.kmix_partners(K.kmix_embedding(x), K.kmix_embedding(x), torch.Generator(),
                           centroids=centroids, top_k=1)[0]
    assert only[:4].tolist() == [4, 4, 4, 4]


def test_kmix_with_a_memory_and_determinism() -> None:
    x, memory = _log_mels(4), _log_mels(16, seed=1)
    first = K.kmix(x, torch.Generator().manual_seed(7), memory=memory)
    again = K.kmix(x, torch.Generator().manual_seed(7), memory=memory)
    assert torch.equal(first, again)
    assert not torch.equal(first, K.kmix(x, torch.Generator().manual_seed(8), memory=memory))
    with pytest.raises(ValueError, match="memory items must be shaped like x's"):
        K.kmix(x, torch.Generator(), memory=memory[:, :3])


def test_spherical_kmeans_finds_separated_clusters() -> None:
    gen = torch.Generator().manual_seed(0)
    centres = torch.eye(4)[:3] * 5
    points = torch.cat([c + 0.1 * torch.randn(20, 4, generator=gen) for c in centres])
    centroids = K.spherical_kmeans(points, 3, torch.Generator().manual_seed(1))
    assert centroids.shape == (3, 4)
    torch.testing.assert_close(centroids.norm(dim=1), torch.ones(3))
    assert set((points @ centroids.T).argmax(dim=1).reshape(3, 20)[:, 0].tolist()) == {0, 1, 2}
