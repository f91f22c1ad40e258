"""Dynamics: cached == uncached sampling, save/load, and it learns where an action moves a sprite."""

import numpy as np
import pytest
import torch

from genie.models.dynamics import DynamicsConfig, DynamicsModel

GRID = 6
MOVES = {0: (-1, 0), 1: (1, 0), 2: (0, -1), 3: (0, 1), 4: (0, 0)}  # up, down, left, right, stay
SPRITE = 0


def token_world(batch: int, t: int, seed: int, vocab: int = 12):
    """A world in token space: a random static background of tokens 1..vocab-1 and one sprite
    token that moves one cell per step by its action (clipped at the borders)."""
    rng = np.random.default_rng(seed)
    tokens = np.zeros((batch, t, GRID, GRID), dtype=np.int64)
    actions = rng.integers(0, 5, size=(batch, t - 1))
    for b in range(batch):
        bg = rng.integers(1, vocab, size=(GRID, GRID))
        y, x = rng.integers(0, GRID, size=2)
        for i in range(t):
            frame = bg.copy()
            frame[y, x] = SPRITE
            tokens[b, i] = frame
            if i < t - 1:
                dy, dx = MOVES[int(actions[b, i])]
                y, x = int(np.clip(y + dy, 0, GRID - 1)), int(np.clip(x + dx, 0, GRID - 1))
    return torch.from_numpy(tokens), torch.from_numpy(actions)


def tiny_config(**kw) -> DynamicsConfig:
    base = dict(
        vocab_size=12, grid=(GRID, GRID), num_actions=5, width=64, depth=2, heads=4, max_frames=4
    )
    base.update(kw)
    return DynamicsConfig(**base)


def test_cached_and_uncached_sampling_are_identical():
    torch.manual_seed(0)
    model = DynamicsModel(tiny_config()).eval()
    tokens, actions = token_world(2, 4, seed=1)
    state = model.new_state()
    for i in range(3):
        model.append_frame(state, tokens[:, i], None if i == 0 else actions[:, i - 1])
    for temperature in (1.0, 0.0):
        g1 = torch.Generator().manual_seed(7)
        g2 = torch.Generator().manual_seed(7)
        cached = model.sample_next(
            state, actions[:, 2], temperature=temperature, generator=g1, commit=False
        )
        uncached = model.sample_next_uncached(
            tokens[:, :3], actions[:, :2], actions[:, 2], temperature=temperature, generator=g2
        )
        assert torch.equal(cached, uncached)


def test_two_stream_forward_matches_cached_logits():
    """Training's masked stream sees exactly what the cached sampler sees."""
    torch.manual_seed(0)
    model = DynamicsModel(tiny_config(mask_rate_min=1.0, mask_rate_max=1.0)).eval()
    tokens, actions = token_world(1, 4, seed=2)
    out = model(tokens, actions)  # every target token masked
    state = model.new_state()
    for i in range(3):
        model.append_frame(state, tokens[:, i], None if i == 0 else actions[:, i - 1])
    ids = torch.full((1, GRID * GRID), model.mask_id)
    x = model.embed(ids[:, None], actions[:, 2:3], state.last_tokens[:, None])[:, 0]
    logits = model.logits(model.transformer.step(x, state.cache, commit=False), state.last_tokens)
    torch.testing.assert_close(out.logits[:, 2], logits, atol=1e-4, rtol=1e-4)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = DynamicsModel(tiny_config()).eval()
    model.save_pretrained(tmp_path / "dyn")
    loaded = DynamicsModel.from_pretrained(tmp_path / "dyn")
    assert loaded.config == model.config
    tokens, actions = token_world(2, 4, seed=3)
    g = torch.Generator().manual_seed(0)
    a = model.rollout(tokens[:, :2], actions[:, :1], actions[:, 1:], generator=g)
    g = torch.Generator().manual_seed(0)
    b = loaded.rollout(tokens[:, :2], actions[:, :1], actions[:, 1:], generator=g)
    assert torch.equal(a, b)


def test_unknown_action_is_rejected():
    model = DynamicsModel(tiny_config()).eval()
    tokens, _ = token_world(1, 2, seed=0)
    state = model.new_state()
    model.append_frame(state, tokens[:, 0], None)
    with pytest.raises(ValueError, match="action ids"):
        model.sample_next(state, torch.tensor([9]))


def expected_sprite(tokens: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Where the sprite goes from frame `tokens` (B, G, G) under `actions` (B,): (B, G, G) bool."""
    out = torch.zeros_like(tokens, dtype=torch.bool)
    for b in range(tokens.shape[0]):
        y, x = (tokens[b] == SPRITE).nonzero()[0].tolist()
        dy, dx = MOVES[int(actions[b])]
        out[b, int(np.clip(y + dy, 0, GRID - 1)), int(np.clip(x + dx, 0, GRID - 1))] = True
    return out


@pytest.mark.slow
def test_learns_where_the_action_moves_the_sprite():
    torch.manual_seed(0)
    model = DynamicsModel(tiny_config(width=32, max_frames=3))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 30))
    for step in range(350):
        tokens, actions = token_world(32, 3, seed=step)
        loss, _ = model.compute_loss({"tokens": tokens, "actions": actions})
        opt.zero_grad()
        loss.backward()
        opt.step()
        warmup.step()
    model.eval()
    tokens, actions = token_world(64, 3, seed=10_000)  # held-out episodes
    context, context_actions = tokens[:, :2], actions[:, :1]

    def sprite_hit_rate(next_actions: torch.Tensor) -> float:
        g = torch.Generator().manual_seed(0)
        pred = model.rollout(
            context, context_actions, next_actions[:, None], temperature=0.0, generator=g
        )[:, 0]
        want = expected_sprite(tokens[:, 1], next_actions)
        return (pred == SPRITE)[want].float().mean().item()

    # the sprite lands where the recorded action leads ...
    assert sprite_hit_rate(actions[:, 1]) >= 0.9
    # ... and where any other action leads: the model follows the action, not the data
    other = (actions[:, 1] + 1 + torch.arange(64) % 3) % 4
    assert sprite_hit_rate(other) >= 0.85
