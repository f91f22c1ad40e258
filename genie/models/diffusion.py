"""Diffusion dynamics (EDM, Karras et al. 2022): past frames' continuous latents + an action ->
the next frame's latents, denoised in a few steps. The second dynamics backend beside MaskGIT
(`genie/models/dynamics.py`), with the same space-time transformer, cache and action token.

Dimension letters: B batch, T frames, N = h*w latents per frame, E latent width (the
tokenizer's code width), D model width, A actions.

Why continuous: with 8x8-pixel patches a one-pixel scroll turns most tokens into other codes,
so a token model must learn a code-to-code map for every sub-patch shift; in the tokenizer's
continuous latent space (`VideoTokenizer.encode_latents`: the l2-normalised encoder output
before quantisation) the same scroll is a small, smooth change a denoiser predicts directly.

* **EDM preconditioning and sampling from diffusers** (`EDMEulerScheduler`): the network F sees
  c_in(s) x and c_noise(s); the denoised frame is c_skip x + c_out F. Training draws s from a
  log-normal per frame; play runs `diffusion_steps` Euler steps (1-4) from s_max.
* **Two-stream training, as the MaskGIT dynamics**: a context stream (frames 0..T-2) and a
  noisy stream (frames 1..T-1, each at its own noise level: diffusion forcing) run through one
  transformer; noisy frame j attends to context frames < j and to itself: what the cached
  sampler sees at play time, and every frame of a clip gets a loss.
* **Context noise augmentation** (GameNGen, DIAMOND's successors): the context frames are
  noised at a level drawn per clip from U(0, context_noise_max), the level given to the model
  through the same noise embedding, so a generated frame's small errors look like noise it
  was trained to see through, instead of compounding into drift.
* The action is a prepended token per frame and is also added to every latent; each latent
  also sees a 3x3 neighbourhood of the previous frame (local motion in the first layer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import EDMEulerScheduler
from einops import rearrange
from torch import nn

from genie.models.blocks import KVCache, STTransformer, init_weights, neighbourhood_conv
from genie.models.edm_sampling import SOLVERS, EDMSampling  # noqa: F401  (SOLVERS: re-export)
from genie.models.layers import action_ids, two_stream_mask
from genie.models.pretrained import PretrainedMixin
from genie.utils import rng
from genie.utils.images import frame_rows, to_float
from genie.utils.metrics import psnr


@dataclass
class DiffusionConfig:
    latent_dim: int = 32  # E: the tokenizer's code width (its continuous latents)
    grid: tuple[int, int] = (8, 8)  # latents per frame (h, w), as the tokenizer gives them
    num_actions: int = 8  # A: latent actions of the LAM, or the dataset's true actions
    width: int = 192  # D
    depth: int = 4  # space-time blocks
    heads: int = 6  # attention heads (head width D / heads)
    mlp_ratio: float = 4.0  # MLP hidden width / D
    max_frames: int = 8  # training clip length T; play keeps T-1 context frames
    latent_scale: float = 2.83  # unit-norm latents (elements ~0.18) x this -> std ~ sigma_data
    sigma_data: float = 0.5  # EDM: std of the (scaled) data
    sigma_min: float = 0.002  # EDM sampling range
    sigma_max: float = 5.0  # few-step sampling starts here (DIAMOND uses 5 for 64x64 Atari)
    rho: float = 7.0  # Karras schedule curvature
    p_mean: float = -0.4  # training noise levels: log(sigma) ~ N(p_mean, p_std^2)
    p_std: float = 1.2
    context_noise_max: float = 0.3  # training: context noise level ~ U(0, this) per clip
    context_noise: float = 0.0  # play: noise level of each generated frame as context
    diffusion_steps: int = 2  # default sampling steps per generated frame
    solver: str = "euler"  # play: "euler" or "heun" (second order, ~2x the network passes)
    churn: float = 0.0  # play: EDM S_churn (0 = deterministic steps from the starting noise)
    fused_commit: bool = False  # play: the last denoising pass also commits its input (the frame
    # at the last step's noise level, e.g. 0.28 of 2 steps) as context: one network pass a frame
    # fewer than committing the finished frame (`context_noise` is then not used)
    prev_frame_conv: bool = True  # each latent also sees the previous frame's 3x3 neighbourhood
    # training: tokens weighted by how much they change from the previous frame, 1 + this x
    # (change / the frame's mean change), renormalised to a mean of 1 per frame: a game whose
    # moving sprites cover a few tokens (Boxing's boxers) spends the loss on them, not on the
    # ring; 0 = every token alike
    motion_weight: float = 0.0
    # training: the share of clips whose context frames after the first are the model's own
    # one-pass predictions of them (no gradient; from the true frames before, at a noise level
    # log-uniform in self_context_sigma): at play the world's context is its own frames, softer
    # than the game's, and a model that only saw the game's learns to continue what it is
    # given, blur included; 0 = always the game's frames
    self_context: float = 0.0
    self_context_sigma: tuple[float, float] = (0.2, 1.0)

    @property
    def tokens_per_frame(self) -> int:
        return self.grid[0] * self.grid[1]


@dataclass
class DiffusionOutput:
    denoised: torch.Tensor  # (B, T-1, N, E) predictions of frames 1..T-1 (scaled latents)
    sigma: torch.Tensor  # (B, T-1) noise level of each predicted frame
    loss: torch.Tensor  # EDM-weighted denoising loss (scalar)


@dataclass
class DiffusionState:
    """What play needs between frames: the transformer cache and the newest context frame."""

    cache: KVCache
    last: torch.Tensor | None = (
        None  # (B, N, E) newest committed frame, scaled, as the model saw it
    )

    def clone(self) -> DiffusionState:
        return DiffusionState(self.cache.clone(), self.last)

    def repeat(self, n: int) -> DiffusionState:
        """A batch-1 state repeated n times (e.g. every action from one state)."""
        last = None if self.last is None else self.last.repeat(n, 1, 1)
        return DiffusionState(self.cache.repeat(n), last)


class NoiseEmbedding(nn.Module):
    """c_noise (...) -> (..., D): random Fourier features of the log noise level, then an MLP."""

    def __init__(self, width: int, features: int = 64):
        super().__init__()
        self.register_buffer("freqs", torch.randn(features // 2) * 4.0)
        self.mlp = nn.Sequential(nn.Linear(features, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        angles = c_noise[..., None].float() * self.freqs * 2 * np.pi
        return self.mlp(torch.cat([angles.cos(), angles.sin()], dim=-1))


class DiffusionDynamics(nn.Module, PretrainedMixin, EDMSampling):
    """Predicts frame t+1's latents (B, N, E) from frames <= t and action a_t. See the module doc."""

    config_class = DiffusionConfig
    model_type = "diffusion-dynamics"
    representation = "latents"  # the engine encodes frames with tokenizer.encode_latents

    def __init__(self, config: DiffusionConfig):
        super().__init__()
        self.config = c = config
        self.null_action = c.num_actions  # extra embedding row for "no action yet"
        self.in_proj = nn.Linear(c.latent_dim, c.width)
        self.prev_proj = nn.Linear(c.latent_dim, c.width) if c.prev_frame_conv else None
        self.prev_conv = neighbourhood_conv(c.width) if c.prev_frame_conv else None
        self.noise_emb = NoiseEmbedding(c.width)
        self.action_emb = nn.Embedding(c.num_actions + 1, c.width)
        self.pos_emb = nn.Parameter(torch.zeros(c.tokens_per_frame + 1, c.width))
        self.transformer = STTransformer(c.width, c.depth, c.heads, c.mlp_ratio)
        self.out = nn.Linear(c.width, c.latent_dim)
        init_weights(self)
        nn.init.normal_(self.pos_emb, std=0.02)
        nn.init.zeros_(self.out.weight)  # F starts at 0: the denoiser starts as c_skip x
        self.scheduler = EDMEulerScheduler(
            sigma_min=c.sigma_min,
            sigma_max=c.sigma_max,
            sigma_data=c.sigma_data,
            rho=c.rho,
            prediction_type="epsilon",  # diffusers' name for EDM's F-parametrisation
        )

    # ------------------------------------------------------------------ world interface

    @staticmethod
    def fixed_config(tokenizer, num_actions: int) -> dict:
        """Config fields the world's frozen parts decide."""
        fixed = {
            "latent_dim": tokenizer.config.code_dim,
            "grid": list(tokenizer.grid),
            "num_actions": num_actions,
        }
        hint = getattr(tokenizer, "latent_scale_hint", None)  # a frame autoencoder's latent std
        if hint:  # scaled so the latents' std is sigma_data, as EDM assumes
            fixed["latent_scale"] = DiffusionConfig.sigma_data / hint
        return fixed

    def tokenizer_mismatch(self, tokenizer) -> str | None:
        c = self.config
        if c.latent_dim != tokenizer.config.code_dim:
            return f"diffusion dynamics predicts {c.latent_dim}-wide latents but the tokenizer's are {tokenizer.config.code_dim}"
        if tuple(c.grid) != tuple(tokenizer.grid):
            return f"dynamics expects {tuple(c.grid)} latents per frame, tokenizer gives {tuple(tokenizer.grid)}"
        return None

    def sampling_defaults(self) -> dict:
        """world.json "sampling" written on export."""
        return {
            "diffusion_steps": self.config.diffusion_steps,
            "context_noise": self.config.context_noise,
            "solver": self.config.solver,
            "churn": self.config.churn,
            "fused_commit": self.config.fused_commit,
        }

    @staticmethod
    @torch.no_grad()
    def make_batch(batch: dict, tokenizer, lam=None) -> dict:
        """Frames -> training batch: continuous latents of the frozen tokenizer, and actions from
        the frozen LAM or the dataset's true actions (lam None)."""
        frames = batch["frames"]
        latents = tokenizer.encode_latents(frames)  # (B, T, N, E)
        if lam is not None:  # a LAM reading this world's autoencoder takes the latents as they are
            actions = lam.infer_actions(frames, latents if lam.reads_latents else None)
        else:
            if batch.get("actions") is None:
                raise ValueError("this dataset has no action labels: use LAM actions")
            actions = batch["actions"][:, :-1]
        return {"latents": latents, "actions": actions.long(), "frames": frames}

    # ------------------------------------------------------------------ the network

    def _c_noise(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.scheduler.precondition_noise(sigma.clamp(min=self.config.sigma_min))

    def embed(
        self,
        x_in: torch.Tensor,
        sigma: torch.Tensor,
        actions: torch.Tensor,
        prev: torch.Tensor | None,
    ) -> torch.Tensor:
        """x_in: (B, T, N, E) noisy scaled latents times c_in(sigma) (the scheduler's
        `precondition_inputs` / `scale_model_input`); sigma: (B, T) their noise levels; actions:
        (B, T) ids (null allowed); prev: (B, T, N, E) each frame's previous frame (as context)
        -> (B, T, 1+N, D) with the action token first."""
        h = self.in_proj(x_in)  # (B, T, N, D)
        if self.prev_conv is not None and prev is not None:
            gh, gw = self.config.grid
            p = rearrange(self.prev_proj(prev), "b t (h w) d -> (b t) d h w", h=gh, w=gw)
            h = h + rearrange(self.prev_conv(p), "(b t) d h w -> b t (h w) d", b=x_in.shape[0])
        cond = self.action_emb(actions) + self.noise_emb(self._c_noise(sigma))  # (B, T, D)
        h = h + cond[:, :, None]
        return torch.cat([cond[:, :, None], h], dim=2) + self.pos_emb

    def _pre(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """c_in(sigma) x for x (B, T, N, E), sigma (B, T)."""
        return self.scheduler.precondition_inputs(x, sigma[..., None, None])

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """EDM output: x (..., N, E) noisy, sigma (...), transformer output h (..., 1+N, D)."""
        s = sigma[..., None, None]
        return self.scheduler.precondition_outputs(x, self.out(h[..., 1:, :]).float(), s)

    # ------------------------------------------------------------------ training

    def forward(
        self, latents: torch.Tensor, actions: torch.Tensor, generator=None
    ) -> DiffusionOutput:
        """latents: (B, T, N, E) unit-norm tokenizer latents; actions: (B, T-1), actions[:, t]
        leads from frame t to t+1."""
        b, t = latents.shape[:2]
        if t < 2:
            raise ValueError("dynamics training needs clips of at least 2 frames")
        c, dev = self.config, latents.device
        z = latents * c.latent_scale
        null = torch.full((b, 1), self.null_action, device=dev, dtype=torch.long)
        frame_actions = torch.cat([null, actions.long()], dim=1)  # (B, T) action into frame t
        n = t - 1

        def randn(*shape):
            return torch.randn(*shape, device=dev, generator=generator)

        # context: frames 0..T-2, noised at one level per clip (augmentation, given to the model)
        s_ctx = torch.rand(b, 1, device=dev, generator=generator) * c.context_noise_max
        s_ctx = s_ctx.expand(b, n)
        ctx = z[:, :-1] + s_ctx[..., None, None] * randn(b, n, *z.shape[2:])
        if c.self_context > 0 and self.training and n > 1:
            ctx = self._own_context(z, ctx, s_ctx, frame_actions, randn, generator)
        # targets: frames 1..T-1, each at its own log-normal noise level (diffusion forcing)
        sigma = (randn(b, n) * c.p_std + c.p_mean).exp()
        noisy = z[:, 1:] + sigma[..., None, None] * randn(b, n, *z.shape[2:])
        denoised = self._two_stream(ctx, s_ctx, noisy, sigma, frame_actions)  # (B, T-1, N, E)
        # EDM weighting lambda(s) = (s^2 + sd^2) / (s sd)^2 makes every level's loss O(1)
        weight = (sigma**2 + c.sigma_data**2) / (sigma * c.sigma_data) ** 2
        err = (denoised - z[:, 1:]).pow(2).mean(dim=-1)  # (B, T-1, N)
        if c.motion_weight > 0:
            err = err * self.motion_weights(z)
        loss = (weight * err.mean(dim=-1)).mean()
        return DiffusionOutput(denoised=denoised, sigma=sigma, loss=loss)

    def _two_stream(self, ctx, s_ctx, noisy, sigma, frame_actions) -> torch.Tensor:
        """One pass over the context stream ctx (B, n, N, E) at s_ctx (B, n) and the target
        stream noisy (B, n, N, E) at sigma (B, n) -> the denoised targets (B, n, N, E)."""
        n, dev = ctx.shape[1], ctx.device
        prev_ctx = torch.cat([ctx[:, :1], ctx[:, :-1]], dim=1)  # frame 0's previous is itself
        x = torch.cat(
            [
                self.embed(self._pre(ctx, s_ctx), s_ctx, frame_actions[:, :-1], prev_ctx),
                self.embed(self._pre(noisy, sigma), sigma, frame_actions[:, 1:], ctx),
            ],
            dim=1,
        )
        positions = torch.cat([torch.arange(n), torch.arange(1, n + 1)]).to(dev)
        h = self.transformer(x, positions=positions, mask=two_stream_mask(n, dev))
        return self.denoise(noisy, sigma, h[:, n:])

    def _own_context(self, z, ctx, s_ctx, frame_actions, randn, generator) -> torch.Tensor:
        """The context of `self_context` of the clips replaced by the model's own predictions
        of frames 1..T-2 (frame 0 stays the game's, as a prompt at play), renoised at s_ctx."""
        c, (b, n) = self.config, ctx.shape[:2]
        lo, hi = (math.log(v) for v in c.self_context_sigma)
        rand = torch.rand(b, 1, device=z.device, generator=generator)
        s_gen = (lo + (hi - lo) * rand).exp().expand(b, n)
        with torch.no_grad():
            noisy = z[:, 1:] + s_gen[..., None, None] * randn(b, n, *z.shape[2:])
            own = self._two_stream(ctx, s_ctx, noisy, s_gen, frame_actions).to(z.dtype)
        use = torch.rand(b, device=z.device, generator=generator) < c.self_context
        src = torch.cat(
            [z[:, :1], torch.where(use[:, None, None, None], own[:, :-1], z[:, 1:-1])], 1
        )
        return src + s_ctx[..., None, None] * randn(b, n, *z.shape[2:])

    def motion_weights(self, z: torch.Tensor) -> torch.Tensor:
        """Per-token loss weights (B, T-1, N) of frames 1..T-1 of z (B, T, N, E), mean 1 per
        frame: 1 + motion_weight x each token's change from the previous frame over the
        frame's mean change (`DiffusionConfig.motion_weight`)."""
        change = (z[:, 1:] - z[:, :-1]).pow(2).mean(dim=-1)  # (B, T-1, N)
        mean = change.mean(dim=-1, keepdim=True).clamp(min=1e-8)
        w = 1 + self.config.motion_weight * change / mean
        return w / w.mean(dim=-1, keepdim=True)

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """batch: {"latents": (B, T, N, E), "actions": (B, T-1)}."""
        out = self(batch["latents"], batch["actions"])
        with torch.no_grad():
            z = batch["latents"] * self.config.latent_scale
            mse = (out.denoised - z[:, 1:]).pow(2).mean().item()
        return out.loss, {"loss": out.loss.item(), "denoise_mse": mse}

    # ------------------------------------------------------------------ play (cached)

    def new_state(self, max_context: int | None = None) -> DiffusionState:
        """max_context: context frames kept (default T-1, as in training)."""
        return DiffusionState(self.transformer.new_cache(max_context or self.config.max_frames - 1))

    def _action_ids(self, action, b: int, device) -> torch.Tensor:
        return action_ids(action, b, self.config.num_actions, device)  # as MaskGIT's

    @torch.no_grad()
    def append_frame(
        self,
        state: DiffusionState,
        latents: torch.Tensor,
        action,
        noise: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        """Commit a frame to the context. latents: (B, N, E) unit-norm (tokenizer latents or a
        generated frame); action: (B,) the action that led to it, or None for a prompt frame;
        noise: the context noise level it is committed at."""
        z = latents.reshape(latents.shape[0], self.config.tokens_per_frame, -1)
        z = z * self.config.latent_scale
        if noise > 0:
            z = z + noise * rng.randn(z.shape, generator, z.device)  # a generator per row allowed
        b = z.shape[0]
        act = self._action_ids(action, b, z.device)
        sigma = torch.full((b, 1), float(noise), device=z.device)
        prev = z if state.last is None else state.last
        x = self.embed(self._pre(z[:, None], sigma), sigma, act[:, None], prev[:, None])[:, 0]
        self.transformer.step(x, state.cache, commit=True)
        state.last = z

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def rollout(self, context, context_actions, future_actions, steps=None, generator=None):
        """context (B, t, N, E); context_actions (B, t-1); future_actions (B, K) -> (B, K, N, E)."""
        state = self.new_state()
        for i in range(context.shape[1]):
            a = None if i == 0 else context_actions[:, i - 1]
            self.append_frame(state, context[:, i], a)
        out = [
            self.sample_next(state, future_actions[:, k], steps, generator=generator)
            for k in range(future_actions.shape[1])
        ]
        return torch.stack(out, dim=1)

    @torch.no_grad()
    def evaluate(self, batch: dict, tokenizer=None) -> dict[str, float]:
        """Denoising loss at fixed seeds and, with a tokenizer, PSNR of the last frame generated
        from the true context beside the copy-last-frame baseline."""
        g = torch.Generator(device=batch["latents"].device).manual_seed(0)
        out = self(batch["latents"], batch["actions"], generator=g)
        metrics = {"loss": out.loss.item()}
        if tokenizer is not None and "frames" in batch:
            z, actions = batch["latents"], batch["actions"]
            pred = self.rollout(z[:, :-1], actions[:, :-1], actions[:, -1:], generator=g)
            frames = tokenizer.decode_latents(torch.cat([z[:, :-1], pred], dim=1))[:, -1]
            truth, last = to_float(batch["frames"][:, -1]), to_float(batch["frames"][:, -2])
            metrics["psnr_1step"] = psnr(frames, truth).mean().item()
            metrics["psnr_copy_last"] = psnr(last, truth).mean().item()
        return metrics

    @torch.no_grad()
    def visualize(self, batch: dict, tokenizer, max_clips: int = 2) -> np.ndarray:
        """Rows per clip: ground truth, then frames 1.. generated from frame 0 with the clip's
        actions. Returns uint8 (H', W', 3)."""
        z, actions = batch["latents"][:max_clips], batch["actions"][:max_clips]
        g = torch.Generator(device=z.device).manual_seed(0)
        gen = self.rollout(z[:, :1], actions[:, :0], actions, generator=g)
        frames = tokenizer.decode_latents(torch.cat([z[:, :1], gen], dim=1))
        return frame_rows([batch["frames"][:max_clips], frames])
