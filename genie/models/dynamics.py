"""MaskGIT dynamics model (Genie §2.3): past frames' tokens + an action -> next frame's tokens.

Dimension letters: B batch, T frames, N = h*w tokens per frame, D width, V vocabulary
(tokenizer codes), A actions.

Design, for a world that trains and plays on two CPU cores (docs/DESIGN.md):
* one action token is *prepended* to each frame's tokens (Jasmine found this essential):
  frame t carries the action a_{t-1} that led to it; the first frame carries a null action.
* decoder-only space-time transformer with causal temporal attention and rotary temporal
  positions, so a played frame's per-layer keys/values are computed once, cached, and stay
  valid as the context window slides.
* **two-stream training**: a clean stream (frames 0..T-2, as context) and a masked stream
  (frames 1..T-1, MaskGIT-masked at a rate drawn from U(0.5, 1)) run through the same
  transformer; masked frame j attends to clean frames < j and to itself. This is exactly what
  the cached sampler sees at play time (a clean context and one partly masked frame), and
  every frame of a clip still gets a loss.
* **previous-frame neighbourhood**: each token's input also gets a 3x3 (depthwise + pointwise)
  convolution of the previous frame's token embeddings, so local motion ("the sprite was one
  cell to my left") is visible in the first layer instead of after several attention hops.
* the action is also added to every token, so "sprite was left of me" (previous-frame
  neighbourhood) and "action is right" meet in the first layer's MLP.
* **copy prior**: a learned per-token gate adds a logit bonus to the previous frame's token
  at the same position, so the model does not spend its capacity re-learning static scenes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from genie.models.blocks import KVCache, STTransformer, init_weights, neighbourhood_conv
from genie.models.layers import action_ids, two_stream_mask
from genie.models.pretrained import PretrainedMixin
from genie.utils import rng
from genie.utils.images import frame_rows, to_float
from genie.utils.metrics import psnr


@dataclass
class DynamicsConfig:
    vocab_size: int = 1024  # tokenizer codebook size V
    grid: tuple[int, int] = (8, 8)  # tokens per frame (h, w), as the tokenizer gives them
    num_actions: int = 8  # A: latent actions of the LAM, or the dataset's true actions
    width: int = 192  # D
    depth: int = 4  # space-time blocks
    heads: int = 6  # attention heads (head width D / heads)
    mlp_ratio: float = 4.0  # MLP hidden width / D
    max_frames: int = 8  # training clip length T; play keeps T-1 context frames
    mask_rate_min: float = 0.5  # training mask rate ~ U(min, max) per frame (Genie: 0.5..1)
    mask_rate_max: float = 1.0
    copy_prior: bool = True  # gate that adds a logit bonus to the previous frame's token
    copy_bias_init: float = 2.0  # initial bonus (nats) for copying, learned per token
    prev_frame_conv: bool = True  # each token also sees the previous frame's 3x3 neighbourhood
    action_to_tokens: bool = (
        True  # also add the action embedding to every token (besides the action token)
    )
    # context corruption (against drift): in training each context token is replaced by a random
    # code at a rate drawn per clip from U(0, this), the rate given to the model; play uses 0
    context_corruption: float = 0.0
    maskgit_steps: int = 4  # default sampling steps (speed vs. quality)
    temperature: float = 1.0  # default sampling temperature (0 = greedy)

    @property
    def tokens_per_frame(self) -> int:
        return self.grid[0] * self.grid[1]


@dataclass
class DynamicsOutput:
    logits: torch.Tensor  # (B, T-1, N, V) predictions for frames 1..T-1
    mask: torch.Tensor  # (B, T-1, N) bool, True where the input token was masked
    loss: torch.Tensor  # cross-entropy on masked tokens (scalar)


@dataclass
class DynamicsState:
    """What play needs between frames: the transformer cache and the last frame's tokens."""

    cache: KVCache
    last_tokens: torch.Tensor | None = None  # (B, N) tokens of the newest committed frame

    def clone(self) -> DynamicsState:
        return DynamicsState(self.cache.clone(), self.last_tokens)

    def repeat(self, n: int) -> DynamicsState:
        """A batch-1 state repeated n times (e.g. every action from one state)."""
        last = None if self.last_tokens is None else self.last_tokens.repeat(n, 1)
        return DynamicsState(self.cache.repeat(n), last)


class DynamicsModel(nn.Module, PretrainedMixin):
    config_class = DynamicsConfig
    model_type = "dynamics"
    representation = "ids"  # the engine encodes frames with tokenizer.encode (code ids)

    def __init__(self, config: DynamicsConfig):
        super().__init__()
        self.config = config
        c = config
        self.mask_id = c.vocab_size  # extra embedding row for [MASK]
        self.null_action = c.num_actions  # extra embedding row for "no action yet"
        self.token_emb = nn.Embedding(c.vocab_size + 1, c.width)
        self.action_emb = nn.Embedding(c.num_actions + 1, c.width)
        self.pos_emb = nn.Parameter(
            torch.zeros(c.tokens_per_frame + 1, c.width)
        )  # action slot first
        self.transformer = STTransformer(c.width, c.depth, c.heads, c.mlp_ratio)
        self.head = nn.Linear(c.width, c.vocab_size)
        self.copy_gate = nn.Linear(c.width, 1) if c.copy_prior else None
        self.prev_conv = neighbourhood_conv(c.width) if c.prev_frame_conv else None
        # the corruption rate r of a context frame enters as r * this vector (0 at play)
        self.corruption_emb = nn.Parameter(torch.zeros(c.width)) if c.context_corruption else None
        init_weights(self)
        nn.init.normal_(self.pos_emb, std=0.02)
        if self.copy_gate is not None:
            nn.init.zeros_(self.copy_gate.weight)
            nn.init.constant_(self.copy_gate.bias, c.copy_bias_init)

    # ------------------------------------------------------------------ world interface

    @staticmethod
    def fixed_config(tokenizer, num_actions: int) -> dict:
        """Config fields the world's frozen parts decide."""
        return {
            "vocab_size": tokenizer.num_codes,
            "grid": list(tokenizer.grid),
            "num_actions": num_actions,
        }

    def tokenizer_mismatch(self, tokenizer) -> str | None:
        c = self.config
        if c.vocab_size != tokenizer.num_codes:
            return f"dynamics was trained on a {c.vocab_size}-code vocabulary but the tokenizer has {tokenizer.num_codes} codes"
        if tuple(c.grid) != tuple(tokenizer.grid):
            return f"dynamics expects {tuple(c.grid)} tokens per frame, tokenizer gives {tuple(tokenizer.grid)}"
        return None

    def sampling_defaults(self) -> dict:
        """world.json "sampling" written on export (carry settings are the world's own)."""
        return {"maskgit_steps": self.config.maskgit_steps, "temperature": self.config.temperature}

    @staticmethod
    def make_batch(batch: dict, tokenizer, lam=None) -> dict:
        return make_dynamics_batch(batch, tokenizer, lam)

    # ------------------------------------------------------------------ shared pieces

    def embed(
        self, tokens: torch.Tensor, actions: torch.Tensor, prev: torch.Tensor | None
    ) -> torch.Tensor:
        """tokens: (B, T, N) ids (mask_id allowed); actions: (B, T) ids (null_action allowed);
        prev: (B, T, N) ids of each frame's previous frame, or None (first frame)
        -> (B, T, 1+N, D) with the action token first."""
        x = self.token_emb(tokens)  # (B, T, N, D)
        if self.prev_conv is not None and prev is not None:
            h, w = self.config.grid
            p = rearrange(self.token_emb(prev), "b t (h w) d -> (b t) d h w", h=h, w=w)
            x = x + rearrange(self.prev_conv(p), "(b t) d h w -> b t (h w) d", b=x.shape[0])
        a = self.action_emb(actions)[:, :, None]  # (B, T, 1, D)
        if self.config.action_to_tokens:
            x = x + a
        return torch.cat([a, x], dim=2) + self.pos_emb

    def logits(self, h: torch.Tensor, prev_tokens: torch.Tensor | None) -> torch.Tensor:
        """h: (..., 1+N, D) transformer output; prev_tokens: (..., N) -> (..., N, V)."""
        h = h[..., 1:, :]  # drop the action slot
        logits = self.head(h)
        if self.copy_gate is not None and prev_tokens is not None:
            bonus = self.copy_gate(h)  # (..., N, 1): added to the logit of each token's previous id
            # (the same sum as adding bonus * one_hot(prev), without the (..., N, V) one-hot)
            assert prev_tokens.shape == logits.shape[:-1], (prev_tokens.shape, logits.shape)
            logits = logits.scatter_add(-1, prev_tokens[..., None], bonus.to(logits.dtype))
        return logits

    # ------------------------------------------------------------------ training

    def forward(
        self, tokens: torch.Tensor, actions: torch.Tensor, generator=None
    ) -> DynamicsOutput:
        """tokens: (B, T, h, w) ids; actions: (B, T-1), actions[:, t] leads from frame t to t+1."""
        b, t = tokens.shape[:2]
        if t < 2:
            raise ValueError("dynamics training needs clips of at least 2 frames")
        ids = rearrange(tokens, "b t h w -> b t (h w)")
        dev = ids.device
        null = torch.full((b, 1), self.null_action, device=dev, dtype=torch.long)
        frame_actions = torch.cat(
            [null, actions.long()], dim=1
        )  # (B, T) action that led to frame t

        clean, target = ids[:, :-1], ids[:, 1:]  # context frames 0..T-2, targets 1..T-1
        c = self.config
        corrupt_rate = None
        if c.context_corruption > 0 and self.training:
            corrupt_rate = torch.rand(b, 1, 1, device=dev, generator=generator)
            corrupt_rate = corrupt_rate * c.context_corruption  # (B, 1, 1) per clip
            hit = torch.rand(clean.shape, device=dev, generator=generator) < corrupt_rate
            noise = torch.randint(0, c.vocab_size, clean.shape, device=dev, generator=generator)
            clean = torch.where(hit, noise, clean)
        rate = torch.empty(b, t - 1, 1, device=dev).uniform_(
            c.mask_rate_min, c.mask_rate_max, generator=generator
        )
        mask = torch.rand(target.shape, device=dev, generator=generator) < rate  # (B, T-1, N)
        masked = target.masked_fill(mask, self.mask_id)

        # the previous frame of clean frame 0 does not exist: it repeats frame 0 (as at play start)
        prev_clean = torch.cat([clean[:, :1], clean[:, :-1]], dim=1)
        ctx = self.embed(clean, frame_actions[:, :-1], prev_clean)  # (B, T-1, 1+N, D)
        if corrupt_rate is not None:
            ctx = ctx + corrupt_rate[..., None] * self.corruption_emb
        x = torch.cat([ctx, self.embed(masked, frame_actions[:, 1:], clean)], dim=1)
        n = t - 1
        positions = torch.cat([torch.arange(n), torch.arange(1, n + 1)]).to(dev)
        h = self.transformer(x, positions=positions, mask=two_stream_mask(n, dev))
        logits = self.logits(h[:, n:], prev_tokens=clean)  # (B, T-1, N, V)
        loss = F.cross_entropy(logits[mask], target[mask]) if mask.any() else logits.sum() * 0
        return DynamicsOutput(logits=logits, mask=mask, loss=loss)

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """batch: {"tokens": (B, T, h, w), "actions": (B, T-1)}."""
        out = self(batch["tokens"], batch["actions"])
        with torch.no_grad():
            target = rearrange(batch["tokens"][:, 1:], "b t h w -> b t (h w)")
            pred = out.logits.argmax(-1)
            acc = (pred == target)[out.mask].float().mean().item() if out.mask.any() else 0.0
            prev = rearrange(batch["tokens"][:, :-1], "b t h w -> b t (h w)")
            copy_acc = (prev == target)[out.mask].float().mean().item() if out.mask.any() else 0.0
        return out.loss, {"loss": out.loss.item(), "masked_acc": acc, "copy_acc": copy_acc}

    # ------------------------------------------------------------------ play (cached)

    def new_state(self, max_context: int | None = None) -> DynamicsState:
        """max_context: context frames kept (default T-1, as in training)."""
        return DynamicsState(
            cache=self.transformer.new_cache(max_context or self.config.max_frames - 1)
        )

    @torch.no_grad()
    def append_frame(
        self, state: DynamicsState, tokens: torch.Tensor, action: torch.Tensor | None
    ) -> None:
        """Commit a frame to the context. tokens: (B, h, w) or (B, N); action: (B,) the action
        that led to it, or None for a first/prompt frame."""
        ids = tokens.reshape(tokens.shape[0], -1)
        act = self._action_ids(action, ids.shape[0], ids.device)
        prev = ids if state.last_tokens is None else state.last_tokens
        x = self.embed(ids[:, None], act[:, None], prev[:, None])[:, 0]  # (B, 1+N, D)
        self.transformer.step(x, state.cache, commit=True)
        state.last_tokens = ids

    def _action_ids(self, action, b: int, device) -> torch.Tensor:
        return action_ids(action, b, self.config.num_actions, device)

    def commit_frame(self, state: DynamicsState, tokens: torch.Tensor, action, **_) -> None:
        """What `sample_next(commit=True)` does after sampling, on its own: tokens (B, h, w) of a
        frame sampled with commit=False join the context (the engine runs it beside decoding)."""
        self.append_frame(state, tokens, action)

    @torch.no_grad()
    def sample_next(
        self,
        state: DynamicsState,
        action,
        steps: int | None = None,
        temperature: float | None = None,
        generator: rng.Generators = None,
        commit: bool = True,
    ) -> torch.Tensor:
        """Generate the next frame's tokens (B, h, w) with MaskGIT, using only the cache.
        commit=True also adds the frame to the context (one extra pass on the clean frame).
        generator: one for the batch, or one per row (`genie.utils.rng`)."""
        if state.last_tokens is None:
            raise ValueError("append a context frame before sampling")
        b = state.last_tokens.shape[0]
        act = self._action_ids(action, b, state.last_tokens.device)

        def run(ids: torch.Tensor) -> torch.Tensor:  # ids (B, N) -> logits (B, N, V)
            x = self.embed(ids[:, None], act[:, None], state.last_tokens[:, None])[:, 0]
            h = self.transformer.step(x, state.cache, commit=False)
            return self.logits(h, state.last_tokens)

        ids = self._maskgit(run, b, state.last_tokens.device, steps, temperature, generator)
        if commit:
            self.append_frame(state, ids, act)
        h, w = self.config.grid
        return ids.reshape(b, h, w)

    @torch.no_grad()
    def sample_next_uncached(
        self,
        context: torch.Tensor,
        context_actions: torch.Tensor,
        action,
        steps: int | None = None,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Reference sampler that recomputes the whole context every MaskGIT step.
        context: (B, t, h, w); context_actions: (B, t-1) actions between context frames."""
        b, t = context.shape[:2]
        ctx = rearrange(context, "b t h w -> b t (h w)")
        act = self._action_ids(action, b, ctx.device)
        null = torch.full((b, 1), self.null_action, device=ctx.device, dtype=torch.long)
        frame_actions = torch.cat([null, context_actions.long(), act[:, None]], dim=1)  # (B, t+1)

        def run(ids: torch.Tensor) -> torch.Tensor:
            seq = torch.cat([ctx, ids[:, None]], dim=1)
            prev = torch.cat([ctx[:, :1], ctx], dim=1)  # frame 0's previous is itself
            x = self.embed(seq, frame_actions, prev)
            h = self.transformer(x)  # causal: the new frame sees all context frames
            return self.logits(h[:, -1], ctx[:, -1])

        ids = self._maskgit(run, b, ctx.device, steps, temperature, generator)
        h, w = self.config.grid
        return ids.reshape(b, h, w)

    def _maskgit(self, run, b: int, device, steps, temperature, generator) -> torch.Tensor:
        """MaskGIT decoding (Chang et al. 2022): start fully masked; each step sample every masked
        token, keep the most confident ones, re-mask the rest by a cosine schedule."""
        c = self.config
        steps = steps or c.maskgit_steps
        temperature = c.temperature if temperature is None else temperature
        n = c.tokens_per_frame
        ids = torch.full((b, n), self.mask_id, dtype=torch.long, device=device)
        masked = torch.ones(b, n, dtype=torch.bool, device=device)
        for s in range(steps):
            logits = run(ids).float()  # (B, N, V)
            if temperature > 0:
                probs = F.softmax(logits / temperature, dim=-1)
                sampled = rng.multinomial(probs, generator)  # (B, N), one generator per row allowed
            else:
                probs = F.softmax(logits, dim=-1)
                sampled = probs.argmax(-1)
            conf = probs.gather(-1, sampled[..., None])[..., 0]
            conf = conf.masked_fill(~masked, -1.0)  # only masked slots compete
            keep_masked = math.floor(n * math.cos(math.pi / 2 * (s + 1) / steps))
            num_reveal = masked.sum(-1) - keep_masked  # (B,)
            order = conf.argsort(dim=-1, descending=True)
            rank = torch.empty_like(order)
            rank.scatter_(1, order, torch.arange(n, device=device).expand(b, n))
            reveal = masked & (rank < num_reveal[:, None])
            ids = torch.where(reveal, sampled, ids)
            masked = masked & ~reveal
        return ids

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def rollout(
        self,
        context_tokens,
        context_actions,
        future_actions,
        steps=None,
        temperature=None,
        generator=None,
    ):
        """Autoregressive rollout. context_tokens (B, t, h, w); context_actions (B, t-1);
        future_actions (B, K) -> generated tokens (B, K, h, w)."""
        state = self.new_state()
        for i in range(context_tokens.shape[1]):
            self.append_frame(
                state, context_tokens[:, i], None if i == 0 else context_actions[:, i - 1]
            )
        out = []
        for k in range(future_actions.shape[1]):
            out.append(self.sample_next(state, future_actions[:, k], steps, temperature, generator))
        return torch.stack(out, dim=1)

    @torch.no_grad()
    def evaluate(self, batch: dict, tokenizer=None) -> dict[str, float]:
        """Masked-token accuracy (fixed seed) and, with a tokenizer, one-step PSNR of the last
        frame generated from the true context, beside the copy-last-frame baseline."""
        g = torch.Generator(device=batch["tokens"].device).manual_seed(0)
        out = self(batch["tokens"], batch["actions"], generator=g)
        target = rearrange(batch["tokens"][:, 1:], "b t h w -> b t (h w)")
        acc = (out.logits.argmax(-1) == target)[out.mask].float().mean().item()
        metrics = {"loss": out.loss.item(), "masked_acc": acc}
        if tokenizer is not None and "frames" in batch:
            tokens, actions = batch["tokens"], batch["actions"]
            pred = self.rollout(tokens[:, :-1], actions[:, :-1], actions[:, -1:], generator=g)
            seq = torch.cat([tokens[:, :-1], pred], dim=1)
            frames = tokenizer.decode(seq)[:, -1]  # (B, H, W, 3) in [0, 1]
            truth, last = to_float(batch["frames"][:, -1]), to_float(batch["frames"][:, -2])
            metrics["psnr_1step"] = psnr(frames, truth).mean().item()
            metrics["psnr_copy_last"] = psnr(last, truth).mean().item()
        return metrics

    @torch.no_grad()
    def visualize(self, batch: dict, tokenizer, max_clips: int = 2) -> np.ndarray:
        """Rows per clip: ground truth, then frames 1.. generated autoregressively from frame 0
        with the clip's actions. Returns uint8 (H', W', 3)."""
        tokens, actions = batch["tokens"][:max_clips], batch["actions"][:max_clips]
        g = torch.Generator(device=tokens.device).manual_seed(0)
        gen = self.rollout(tokens[:, :1], actions[:, :0], actions, generator=g)
        frames = tokenizer.decode(torch.cat([tokens[:, :1], gen], dim=1))
        truth = batch["frames"][:max_clips] if "frames" in batch else tokenizer.decode(tokens)
        return frame_rows([truth, frames])


@torch.no_grad()
def make_dynamics_batch(batch: dict, tokenizer, lam=None) -> dict:
    """Frames -> the dynamics' training batch: tokens from the (frozen) tokenizer, actions from
    the (frozen) LAM, or the dataset's true actions when lam is None."""
    frames = batch["frames"]
    tokens = tokenizer.encode(frames)
    if lam is not None:
        actions = lam.infer_actions(frames)
    else:
        if batch.get("actions") is None:
            raise ValueError("this dataset has no action labels: train the dynamics on LAM actions")
        actions = batch["actions"][:, :-1]
    return {"tokens": tokens, "actions": actions.long(), "frames": frames}
