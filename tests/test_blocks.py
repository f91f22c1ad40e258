"""The shared space-time transformer: causality, cache equivalence, sliding window, VQ."""

import torch

from genie.models.blocks import STTransformer
from genie.models.quantizer import VectorQuantizer


def test_step_with_cache_equals_full_causal_forward():
    torch.manual_seed(0)
    model = STTransformer(dim=32, depth=2, heads=4).eval()
    x = torch.randn(2, 5, 6, 32)  # (B, T, N, D)
    full = model(x)
    cache = model.new_cache(max_frames=16)
    outs = [model.step(x[:, t], cache, commit=True) for t in range(5)]
    torch.testing.assert_close(torch.stack(outs, 1), full, atol=1e-5, rtol=1e-5)


def test_lookahead_does_not_change_cache():
    torch.manual_seed(0)
    model = STTransformer(dim=32, depth=2, heads=4).eval()
    x = torch.randn(1, 3, 4, 32)
    cache = model.new_cache(max_frames=16)
    for t in range(2):
        model.step(x[:, t], cache, commit=True)
    a = model.step(x[:, 2], cache, commit=False)
    b = model.step(x[:, 2], cache, commit=False)
    assert len(cache) == 2 and cache.next_index == 2
    torch.testing.assert_close(a, b)


def test_future_frames_do_not_affect_past():
    torch.manual_seed(0)
    model = STTransformer(dim=32, depth=2, heads=4).eval()
    x = torch.randn(1, 4, 4, 32)
    y = x.clone()
    y[:, 3] += 1.0
    torch.testing.assert_close(model(x)[:, :3], model(y)[:, :3])


def test_sliding_window_is_relative():
    """After the window slides, a cached frame sequence gives the same output as a fresh
    forward over just the window's frames computed at shifted positions (rotary is relative)."""
    torch.manual_seed(0)
    model = STTransformer(dim=32, depth=1, heads=4).eval()
    x = torch.randn(1, 6, 4, 32)
    cache = model.new_cache(max_frames=3)
    for t in range(5):
        model.step(x[:, t], cache, commit=True)
    out = model.step(x[:, 5], cache, commit=False)
    # one layer: cached keys of frames 2..4 depend only on their own inputs
    ref = model(x[:, 2:6], positions=torch.arange(100, 104))[:, -1]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


def test_vq_restarts_dead_codes_and_reports_usage():
    torch.manual_seed(0)
    vq = VectorQuantizer(num_codes=64, dim=8, restart_after=2).train()
    with torch.no_grad():  # a collapsed codebook: every code points the same way
        vq.codebook.copy_(torch.tensor([1.0] + [0.0] * 7).expand(64, 8))
    z = torch.randn(512, 8)
    first = vq(z).usage.item()
    for _ in range(6):
        out = vq(z)
    assert out.ids.shape == (512,) and out.quantized.shape == (512, 8)
    assert first < 0.5 and out.usage.item() > first  # dead codes were re-seeded onto the data
    assert out.usage.item() > 0.8


def test_euclidean_vq_keeps_the_origin_and_kmeans_finds_clusters():
    """Five clusters, one at the origin (a LAM's "nothing happened"): k-means puts a code on each,
    and the euclidean lookup assigns every point to its own cluster's code; the cosine lookup
    cannot tell the origin's points apart from the rest."""
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [3.0, 0.0], [-3.0, 0.0], [0.0, 3.0], [0.0, -3.0]])
    labels = torch.randint(0, 5, (1000,), generator=g)
    z = centres[labels] + 0.3 * torch.randn(1000, 2, generator=g)
    vq = VectorQuantizer(num_codes=5, dim=2, metric="euclidean")
    vq.init_kmeans(z)
    ids = vq(z).ids
    purity = sum(torch.bincount(labels[ids == k], minlength=5).max() for k in range(5)) / len(z)
    assert purity > 0.97
    assert torch.equal(vq.nearest(vq.prepare(z)), ids)
    again = VectorQuantizer(num_codes=5, dim=2, metric="euclidean")
    again.init_kmeans(z)
    assert torch.equal(again.codebook, vq.codebook)  # deterministic: processes agree

    cos = VectorQuantizer(num_codes=5, dim=2, metric="cosine")
    cos.init_kmeans(z)
    ids = cos(z).ids
    origin = ids[labels == 0]
    assert torch.bincount(origin, minlength=5).max() < 0.6 * len(origin)  # scattered
