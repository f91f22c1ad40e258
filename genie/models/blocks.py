"""Building blocks shared by the tokenizer, the latent action model and the dynamics model.

Dimension letters used throughout: B batch, T time (frames), N tokens per frame, D width,
H heads, K key length, C codebook size.

* `STTransformer`: space-time transformer (Genie §2.1, ST-ViViT). Each block does spatial
  attention among the N tokens of one frame, then causal temporal attention among the T
  tokens at the same position, then an MLP. Temporal positions are rotary (relative), so
  per-frame states cached during play stay valid when the context window slides.
* `KVCache`: the temporal keys/values of frames already seen, per layer. Spatial attention
  never looks at other frames, so only temporal attention needs a cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

# ----------------------------------------------------------------------------- rotary


def rotary_cos_sin(positions: torch.Tensor, dim: int, base: float = 10_000.0):
    """cos/sin tables for rotary embeddings. positions: (K,) float -> two (K, dim) tensors."""
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, device=positions.device).float() / dim))
    angles = positions.float()[:, None] * inv_freq[None, :]  # (K, dim/2)
    angles = torch.cat([angles, angles], dim=-1)  # (K, dim)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (..., K, dim); cos/sin: (K, dim). Rotate-half form (GPT-NeoX)."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # bf16 q/k stay bf16 (no fp32 pass and cast)
    return x * cos + rotated * sin


# ----------------------------------------------------------------------------- norm


def cpu_bf16_autocast() -> bool:
    """True inside `torch.autocast("cpu", dtype=torch.bfloat16)`."""
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


class LayerNorm(nn.LayerNorm):
    """`nn.LayerNorm` (same weights and state dict) that under bf16 autocast on a CPU normalises
    bf16 values (the kernel accumulates in fp32, the weights stay fp32) instead of autocast's
    fp32 pass: its output feeds a bf16 matmul either way, and the fp32 pass, its backward and
    the casts around it cost about 6% of a diffusion training step (genie bench train)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and cpu_bf16_autocast():
            with torch.autocast("cpu", enabled=False):
                return F.layer_norm(
                    x.to(torch.bfloat16), self.normalized_shape, self.weight, self.bias, self.eps
                )
        return super().forward(x)


# ----------------------------------------------------------------------------- attention


SHORT_KEYS = 32  # fewer keys than this: `_bf16_cpu_attention` takes its softmax transposed


def _bf16_cpu_attention(q, k, v, mask=None, is_causal: bool = False) -> torch.Tensor:
    """Attention under bf16 autocast on a CPU: the two products as bf16 matmuls, the softmax in
    fp32. PyTorch's CPU flash attention is slower in bf16 than in fp32 (its backward ~6x,
    docs/DESIGN.md); for the short sequences here (a frame's tokens, a position's frames) the
    plain products in bf16 measured 1.4-1.9x faster than fp32 flash attention, forward+backward.
    Over a few keys (a position's frames) the logits are taken as (keys, queries): a softmax
    over an innermost axis of 14 runs 4x slower than over an outer one, and the attention
    forward+backward measured 24.3 -> 14.5 ms (780 x 6 heads x 14 frames); over a frame's 65
    tokens the usual layout is faster (29.6 vs 41.4 ms).
    q, k, v: (B', H, L, Dh); mask: bool (L, K), True = may attend."""
    if is_causal:
        mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
    if k.shape[-2] < SHORT_KEYS:  # transposed: the softmax runs over a non-innermost axis
        logits = (k @ q.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B', H, K, L)
        if mask is not None:
            logits = logits.masked_fill(~mask.transpose(-2, -1), float("-inf"))
        return logits.float().softmax(-2).transpose(-2, -1) @ v
    logits = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B', H, L, K)
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return logits.float().softmax(-1) @ v


class Attention(nn.Module):
    """Multi-head self-attention over the second-to-last axis with torch's SDPA."""

    def __init__(self, dim: int, heads: int, qk_norm: bool = True):
        super().__init__()
        assert dim % heads == 0, "width must be divisible by heads"
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim)
        # qk-norm keeps attention logits bounded: stabler training at higher learning rates
        self.q_norm = LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = LayerNorm(self.head_dim) if qk_norm else nn.Identity()

    def project(self, x: torch.Tensor):
        """x: (B', L, D) -> q, k, v each (B', H, L, Dh)."""
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.heads)
        return self.q_norm(q), self.k_norm(k), v

    def attend_heads(self, q, k, v, mask=None, is_causal=False) -> torch.Tensor:
        """q, k, v (B', H, L, Dh) -> each head's output (B', H, L, Dh), before `out`."""
        if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            return _bf16_cpu_attention(q, k, v, mask, is_causal)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)

    def attend(self, q, k, v, mask=None, is_causal=False) -> torch.Tensor:
        out = self.attend_heads(q, k, v, mask, is_causal)
        return self.out(rearrange(out, "b h l d -> b l (h d)"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Full (bidirectional) attention. x: (B', L, D)."""
        q, k, v = self.project(x)
        return self.attend(q, k, v)


class MLP(nn.Module):
    def __init__(self, dim: int, ratio: float = 4.0):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        # tanh GELU as trained; under bf16 autocast the exact (erf) form, whose bf16 CPU kernel
        # runs 4x faster forward and 2x backward (measured, 6.3 M values); the two differ by
        # under 1e-3, below bf16's rounding of these activations
        return self.fc2(F.gelu(h, approximate="none" if h.dtype == torch.bfloat16 else "tanh"))


# ----------------------------------------------------------------------------- cache


@dataclass
class KVCache:
    """Temporal keys/values of committed frames, per layer.

    keys[l], values[l]: (B*N, H, K, Dh), rotary already applied at each frame's absolute index.
    Rotary makes attention depend only on index differences, so dropping the oldest frame
    (sliding window) leaves the remaining entries valid.
    """

    max_frames: int  # window: the oldest frames are dropped beyond this many
    keys: list[torch.Tensor | None] = field(default_factory=list)
    values: list[torch.Tensor | None] = field(default_factory=list)
    # absolute frame index of the next committed frame; one per batch row (a tuple) when the
    # rows are players at different frames stepped together (genie.serve.batcher)
    next_index: int | tuple[int, ...] = 0

    def __len__(self) -> int:
        if not self.keys or self.keys[0] is None:
            return 0
        return self.keys[0].shape[2]

    def layer(self, i: int):
        if i >= len(self.keys):
            return None, None
        return self.keys[i], self.values[i]

    def store(self, i: int, k: torch.Tensor, v: torch.Tensor) -> None:
        while len(self.keys) <= i:
            self.keys.append(None)
            self.values.append(None)
        old_k, old_v = self.keys[i], self.values[i]
        if old_k is not None:
            k = torch.cat([old_k, k], dim=2)[:, :, -self.max_frames :]
            v = torch.cat([old_v, v], dim=2)[:, :, -self.max_frames :]
        self.keys[i], self.values[i] = k, v

    def clone(self) -> KVCache:
        return KVCache(self.max_frames, list(self.keys), list(self.values), self.next_index)

    def repeat(self, n: int) -> KVCache:
        """The cached batch tiled n times (B*N rows -> n*B*N; a batch of 1 -> n copies)."""
        tile = [None if k is None else k.repeat(n, 1, 1, 1) for k in self.keys]
        vals = [None if v is None else v.repeat(n, 1, 1, 1) for v in self.values]
        index = self.next_index if isinstance(self.next_index, int) else self.next_index * n
        return KVCache(self.max_frames, tile, vals, index)

    def advance(self) -> None:
        i = self.next_index
        self.next_index = i + 1 if isinstance(i, int) else tuple(j + 1 for j in i)


# ----------------------------------------------------------------------------- ST block


class STBlock(nn.Module):
    """Spatial attention (within a frame) -> causal temporal attention (same position) -> MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm_s = LayerNorm(dim)
        self.spatial = Attention(dim, heads)
        self.norm_t = LayerNorm(dim)
        self.temporal = Attention(dim, heads)
        self.norm_m = LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio)

    def _spatial(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, N, D)
        b = x.shape[0]
        h = rearrange(self.norm_s(x), "b t n d -> (b t) n d")
        return x + rearrange(self.spatial(h), "(b t) n d -> b t n d", b=b)

    def forward(self, x: torch.Tensor, cos, sin, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, T, N, D); cos/sin: (T, Dh); mask: (T, T) bool (True = may attend) or None = causal.
        The temporal projections run in the (B, T, N) layout and only q, k, v and the heads'
        output change layout: two copies of the activations fewer than transposing the input and
        the output (the same values, bit for bit; a bf16 training step about 3% faster)."""
        b = x.shape[0]
        x = self._spatial(x)
        a = self.temporal
        qkv = a.qkv(self.norm_t(x))  # (B, T, N, 3D)
        q, k, v = rearrange(qkv, "b t n (three h d) -> three (b n) h t d", three=3, h=a.heads)
        q, k = a.q_norm(q), a.k_norm(k)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        att = a.attend_heads(q, k, v, mask=mask, is_causal=mask is None)  # (B*N, H, T, Dh)
        x = x + a.out(rearrange(att, "(b n) h t d -> b t n (h d)", b=b))
        return x + self.mlp(self.norm_m(x))

    def step(self, x: torch.Tensor, cos, sin, cache: KVCache, index: int, commit: bool):
        """One new frame against the cache. x: (B, 1, N, D); cos/sin: (1, Dh) for the new frame."""
        b, _, n, _ = x.shape
        x = self._spatial(x)
        h = rearrange(self.norm_t(x), "b t n d -> (b n) t d")
        q, k, v = self.temporal.project(h)  # (B*N, H, 1, Dh)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        past_k, past_v = cache.layer(index)
        if past_k is not None:
            keys, vals = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        else:
            keys, vals = k, v
        att = self.temporal.attend(q, keys, vals)  # the new frame sees all cached frames + itself
        if commit:
            cache.store(index, k, v)
        x = x + rearrange(att, "(b n) t d -> b t n d", b=b, n=n)
        return x + self.mlp(self.norm_m(x))


class STTransformer(nn.Module):
    """A stack of `STBlock`s with a final LayerNorm. Input and output: (B, T, N, D)."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.blocks = nn.ModuleList([STBlock(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = LayerNorm(dim)

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (B, T, N, D); positions: (T,) frame indices (default 0..T-1);
        mask: (T, T) bool temporal mask (True = may attend), default causal."""
        t = x.shape[1]
        if positions is None:
            positions = torch.arange(t, device=x.device)
        cos, sin = rotary_cos_sin(positions, self.head_dim)
        for block in self.blocks:
            x = block(x, cos, sin, mask)
        return self.norm(x)

    def new_cache(self, max_frames: int) -> KVCache:
        return KVCache(max_frames=max_frames)

    def step(self, x: torch.Tensor, cache: KVCache, commit: bool) -> torch.Tensor:
        """Process one new frame x: (B, N, D) given the cached past; returns (B, N, D).

        commit=True appends this frame's keys/values to the cache (it becomes context);
        commit=False is a look-ahead (e.g. a MaskGIT step on a partly masked frame)."""
        cos, sin = self._rotary_at(cache.next_index, x.shape[1], x.device)
        h = x[:, None]  # (B, 1, N, D)
        for i, block in enumerate(self.blocks):
            h = block.step(h, cos, sin, cache, i, commit)
        if commit:
            cache.advance()
        return self.norm(h[:, 0])

    def _rotary_at(self, index: int | tuple[int, ...], tokens: int, device):
        """cos/sin of the new frame: (1, Dh) at one index, or (B*N, 1, 1, Dh) with each row's own
        index (rows of `tokens` tokens). Each row's table is computed as a batch of one computes
        it, so a row's numbers do not depend on the rows stepped with it."""
        if isinstance(index, int):
            return rotary_cos_sin(torch.tensor([index], device=device), self.head_dim)
        tables = {
            i: rotary_cos_sin(torch.tensor([i], device=device), self.head_dim) for i in set(index)
        }
        cos = torch.cat([tables[i][0] for i in index]).repeat_interleave(tokens, 0)
        sin = torch.cat([tables[i][1] for i in index]).repeat_interleave(tokens, 0)
        return cos[:, None, None], sin[:, None, None]  # (B*N, 1, 1, Dh)


# ----------------------------------------------------------------------------- token-grid conv, init


class NeighbourhoodConv(nn.Sequential):
    """(B', D, h, w) -> (B', D, h, w): each token mixes its 3x3 neighbourhood of the token grid
    (depthwise 3x3, then pointwise). Moving content by one patch is then a local operation."""

    def __init__(self, width: int):
        super().__init__(
            nn.Conv2d(width, width, 3, padding=1, groups=width),
            nn.Conv2d(width, width, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a token grid rearranged from (B, T, N, D) arrives channels-last, and then the 1x1 conv's
        # rounding depends on the batch size; contiguous, a batch of B players computes exactly
        # what each computes alone (and batch 1 computes what it always did)
        return super().forward(x.contiguous())


def neighbourhood_conv(width: int) -> NeighbourhoodConv:
    return NeighbourhoodConv(width)


def init_weights(module: nn.Module) -> None:
    """GPT-style init: normal(0, 0.02) for linear/embedding weights, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
