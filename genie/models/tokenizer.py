"""Video tokenizer (Genie §2.1): a VQ-VAE whose decoder is an ST-ViViT.

Dimension letters: B batch, T frames, H/W pixels, N = h*w tokens per frame, D width,
E code width, C codebook size, P patch size (h = H / P).

* **Encoder, per frame**: pixels -> (h, w) grid of tokens -> spatial transformer blocks ->
  linear to E -> `VectorQuantizer` (l2-normalised codes, dead-code restart). A frame's tokens
  never depend on other frames, so a prompt image encodes alone and training can tokenize
  clips on the fly.
* **Decoder, space-time**: code vectors + learned spatial positions -> `STTransformer` with
  causal temporal attention (rotary positions) -> pixels. Frame t is decoded from its own
  tokens *and* the decoder states of the previous `max_frames - 1` frames, so unchanged
  content carries over instead of being re-quantised every frame (docs/DESIGN.md: a per-frame
  tokenizer caps rollout PSNR; Genie's ablation: ST-ViViT beats a per-frame ViT).
  `decode_step` decodes one new frame against a `KVCache` and equals `decode` of the sequence.
* `arch="conv"` (hybrid): strided-conv stem and transposed-conv upsampler around the
  transformers. `arch="vit"` (pure ST-ViViT): linear patch embedding and linear unpatchify.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from genie.models.blocks import (
    MLP,
    Attention,
    KVCache,
    LayerNorm,
    STTransformer,
    init_weights,
)
from genie.models.layers import CenteredLatent, conv_stem, conv_upsampler, init_convs
from genie.models.pretrained import PretrainedMixin
from genie.models.quantizer import VectorQuantizer
from genie.utils.images import frame_rows, to_float
from genie.utils.metrics import psnr, ssim


@dataclass
class TokenizerConfig:
    frame_size: int = 64  # H = W of the (square) frames
    patch_size: int = 8  # P: downsampling factor, a frame becomes (H/P) x (W/P) tokens
    num_codes: int = 1024  # C: codebook size = the dynamics' vocabulary
    code_dim: int = 32  # E: code width (codes are l2-normalised)
    arch: str = (
        "conv"  # "conv": conv stem + conv upsampler (hybrid); "vit": linear patch embed/unpatchify
    )
    conv_widths: tuple[int, ...] = (
        32,
        64,
        96,
    )  # conv arch: channels per 2x stage, full resolution first; len = log2(P)
    width: int = 192  # D: transformer width
    enc_depth: int = 2  # spatial (per-frame) transformer blocks in the encoder
    dec_depth: int = 2  # space-time blocks (causal temporal attention) in the decoder
    heads: int = 4  # attention heads (head width D / heads)
    mlp_ratio: float = 4.0  # MLP hidden width / D
    max_frames: int = (
        16  # decoder temporal window: a frame sees itself + max_frames-1 previous frames
    )
    vq_beta: float = 0.25  # commitment weight of the VQ loss
    vq_restart_after: int = 50  # training steps a code may go unused before it is re-seeded
    l1_weight: float = 0.0  # weight of an extra L1 reconstruction term (MSE always on)
    grad_weight: float = 0.0  # weight of an L1 term on image gradients (edges; against blur)
    latent_noise: float = (
        0.0  # continuous: std of noise on the latents the decoder sees in training
    )
    # decoder input in training: False = the VQ code (for MaskGIT's ids); True = the continuous
    # l2-normalised latent before quantisation (what a diffusion dynamics predicts); ids are
    # computed either way, so a tokenizer trained continuous still serves MaskGIT
    continuous: bool = False

    def __post_init__(self):
        if self.frame_size % self.patch_size:
            raise ValueError(
                f"frame_size {self.frame_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.arch not in ("conv", "vit"):
            raise ValueError(f"arch must be 'conv' or 'vit', got {self.arch!r}")
        if self.arch == "conv" and 2 ** len(self.conv_widths) != self.patch_size:
            raise ValueError(
                f"conv arch needs log2(patch_size) = {math.log2(self.patch_size):g} conv_widths"
            )
        if self.max_frames < 2:
            raise ValueError("max_frames must be >= 2")

    @property
    def grid(self) -> tuple[int, int]:
        n = self.frame_size // self.patch_size
        return (n, n)


@dataclass
class TokenizerOutput:
    ids: torch.Tensor  # (B, T, h, w) code ids
    recon: torch.Tensor  # (B, T, H, W, 3) reconstruction, float (unclamped; ~[0, 1])
    losses: dict[str, torch.Tensor]  # "recon", "vq" (scalars)
    perplexity: torch.Tensor  # exp(entropy) of code usage in the batch
    usage: torch.Tensor  # fraction of codes used in the batch


class SpatialBlock(nn.Module):
    """Pre-norm transformer block over the N tokens of one frame. x: (B', N, D)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1, self.attn = LayerNorm(dim), Attention(dim, heads)
        self.norm2, self.mlp = LayerNorm(dim), MLP(dim, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VideoTokenizer(nn.Module, PretrainedMixin):
    """Frames uint8 (B, T, H, W, 3) <-> code ids (B, T, h, w). See the module docstring."""

    config_class = TokenizerConfig
    model_type = "tokenizer"
    # the weights that decide a frame's code ids (what the dynamics learned to predict); the
    # rest (from_code, dec_pos, decoder, unembed) only turns ids back into pixels
    ENCODER_PREFIXES = ("embed.", "enc_pos", "encoder.", "enc_norm.", "to_code.", "center.", "vq.")

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        self.config = c = config
        h, w = c.grid
        patch_dim = 3 * c.patch_size**2
        if c.arch == "conv":
            self.embed = conv_stem(c.conv_widths, c.width)
            self.unembed = conv_upsampler(c.width, c.conv_widths)
        else:
            self.embed = nn.Linear(patch_dim, c.width)
            self.unembed = nn.Linear(c.width, patch_dim)
        self.enc_pos = nn.Parameter(torch.zeros(h * w, c.width))
        self.encoder = nn.ModuleList(
            [SpatialBlock(c.width, c.heads, c.mlp_ratio) for _ in range(c.enc_depth)]
        )
        self.enc_norm = LayerNorm(c.width)
        self.to_code = nn.Linear(c.width, c.code_dim)
        self.center = CenteredLatent(c.code_dim)
        self.vq = VectorQuantizer(
            c.num_codes, c.code_dim, beta=c.vq_beta, restart_after=c.vq_restart_after
        )
        self.from_code = nn.Linear(c.code_dim, c.width)
        self.dec_pos = nn.Parameter(torch.zeros(h * w, c.width))
        self.decoder = STTransformer(c.width, c.dec_depth, c.heads, c.mlp_ratio)
        init_weights(self)
        init_convs(self)
        nn.init.normal_(self.enc_pos, std=0.02)
        nn.init.normal_(self.dec_pos, std=0.02)
        with (
            torch.no_grad()
        ):  # codes start as unit vectors spread on the sphere (init_weights skips it)
            self.vq.codebook.normal_()

    @property
    def num_codes(self) -> int:
        return self.config.num_codes

    # ------------------------------------------------------------------ decoder-only training

    def encoder_modules(self) -> list[nn.Module]:
        return [self.embed, self.encoder, self.enc_norm, self.to_code, self.center, self.vq]

    def freeze_encoder(self) -> VideoTokenizer:
        """Train the decoder alone: the encoder, its latent statistics and the codebook stay as
        they are (no gradients, no running-statistics updates, no dead-code restarts), so every
        frame keeps its code ids and a dynamics trained on this tokenizer stays valid while the
        decoder gets better at drawing them. Not saved: a loaded tokenizer trains fully."""
        self._encoder_frozen = True
        for m in self.encoder_modules():
            m.requires_grad_(False)
        self.enc_pos.requires_grad_(False)
        return self.train(self.training)

    @property
    def encoder_frozen(self) -> bool:
        return getattr(self, "_encoder_frozen", False)

    def train(self, mode: bool = True) -> VideoTokenizer:
        super().train(mode)
        if self.encoder_frozen:
            for m in self.encoder_modules():
                m.eval()
        return self

    @property
    def grid(self) -> tuple[int, int]:
        return self.config.grid

    # ------------------------------------------------------------------ encoder

    def _check(self, frames: torch.Tensor) -> None:
        s = self.config.frame_size
        if frames.ndim != 5 or tuple(frames.shape[2:]) != (s, s, 3):
            raise ValueError(f"expected frames (B, T, {s}, {s}, 3), got {tuple(frames.shape)}")

    def _latents(self, frames: torch.Tensor, update_stats: bool = False) -> torch.Tensor:
        """frames uint8 (B, T, H, W, 3) -> centred continuous latents (B, T, N, E), each frame
        alone (update_stats: training, see `CenteredLatent`)."""
        self._check(frames)
        b, p = frames.shape[0], self.config.patch_size
        x = to_float(frames) * 2 - 1
        if self.config.arch == "conv":
            x = self.embed(rearrange(x, "b t h w c -> (b t) c h w"))  # (B*T, D, h, w)
            x = rearrange(x, "bt d h w -> bt (h w) d")
        else:
            x = self.embed(rearrange(x, "b t (h p) (w q) c -> (b t) (h w) (p q c)", p=p, q=p))
        x = x + self.enc_pos  # (B*T, N, D)
        for block in self.encoder:
            x = block(x)
        z = self.center(self.to_code(self.enc_norm(x)), update_stats)
        return rearrange(z, "(b t) n e -> b t n e", b=b)

    # ------------------------------------------------------------------ decoder

    def _embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """(..., N, E) unit code vectors -> (..., N, D) decoder inputs."""
        return self.from_code(codes) + self.dec_pos

    def _to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder states (B', N, D) -> float frames (B', H, W, 3), ~[0, 1]."""
        h, w = self.grid
        p = self.config.patch_size
        if self.config.arch == "conv":
            x = self.unembed(rearrange(x, "b (h w) d -> b d h w", h=h))  # (B', 3, H, W)
            x = rearrange(x, "b c h w -> b h w c")
        else:
            x = rearrange(self.unembed(x), "b (h w) (p q c) -> b (h p) (w q) c", h=h, p=p, q=p)
        return x * 0.5 + 0.5

    def _window_mask(self, t: int, device) -> torch.Tensor | None:
        """Causal temporal mask limited to the `max_frames` window; None (plain causal) if T fits."""
        if t <= self.config.max_frames:
            return None
        i = torch.arange(t, device=device)
        diff = i[:, None] - i[None, :]
        return (diff >= 0) & (diff < self.config.max_frames)  # (T, T), True = may attend

    def _decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, T, N, E) -> frames (B, T, H, W, 3)."""
        b, t = codes.shape[:2]
        x = self.decoder(self._embed_codes(codes), mask=self._window_mask(t, codes.device))
        return rearrange(self._to_pixels(x.flatten(0, 1)), "(b t) h w c -> b t h w c", b=b)

    # ------------------------------------------------------------------ public API

    def forward(self, frames: torch.Tensor) -> TokenizerOutput:
        """frames uint8 (B, T, H, W, 3) -> ids, reconstruction and losses."""
        h, w = self.grid
        z = self._latents(frames, update_stats=self.center.training)
        q = self.vq(z)
        if self.config.continuous:  # what a diffusion dynamics hands the decoder: near, not exact
            zn = F.normalize(z, dim=-1)
            if self.training and self.config.latent_noise > 0:
                zn = F.normalize(zn + self.config.latent_noise * torch.randn_like(zn), dim=-1)
        recon = self._decode_codes(zn if self.config.continuous else q.quantized)
        target = to_float(frames)
        losses = {"recon": F.mse_loss(recon, target), "vq": q.loss}
        if self.config.l1_weight > 0:
            losses["l1"] = self.config.l1_weight * F.l1_loss(recon, target)
        if self.config.grad_weight > 0:  # gradient difference loss: edges where the frame has them
            losses["grad"] = self.config.grad_weight * sum(
                F.l1_loss(recon.diff(dim=d), target.diff(dim=d)) for d in (-3, -2)
            )
        ids = rearrange(q.ids, "b t (h w) -> b t h w", h=h, w=w)
        return TokenizerOutput(
            ids=ids, recon=recon, losses=losses, perplexity=q.perplexity, usage=q.usage
        )

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """batch["frames"] uint8 (B, T, H, W, 3) -> (loss, metrics)."""
        out = self(batch["frames"])
        loss = sum(out.losses.values())
        with torch.no_grad():
            p = psnr(out.recon.clamp(0, 1), to_float(batch["frames"])).mean()
        metrics = {
            "loss": loss.item(),
            "recon_mse": out.losses["recon"].item(),
            "vq_loss": out.losses["vq"].item(),
            "psnr": p.item(),
            "codebook_usage": out.usage.item(),
            "perplexity": out.perplexity.item(),
        }
        return loss, metrics

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """frames uint8 (B, T, H, W, 3) -> code ids (B, T, h, w). Each frame independently."""
        h, w = self.grid
        z = F.normalize(self._latents(frames), dim=-1)  # (B, T, N, E)
        ids = (z @ self.vq.normalized_codebook().t()).argmax(-1)  # nearest code, no restarts
        return rearrange(ids, "b t (h w) -> b t h w", h=h, w=w)

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """code ids (B, T, h, w) -> frames float (B, T, H, W, 3) in [0, 1]. Frame t is decoded
        with frames t-max_frames+1..t as temporal context."""
        codes = self.vq.lookup(rearrange(ids, "b t h w -> b t (h w)"))
        return self._decode_codes(codes).clamp(0, 1)

    # ------------------------------------------------------------------ continuous latents

    @torch.no_grad()
    def encode_latents(self, frames: torch.Tensor) -> torch.Tensor:
        """frames uint8 (B, T, H, W, 3) -> continuous latents (B, T, N, E): the l2-normalised
        encoder output before quantisation (each frame alone), what a diffusion dynamics
        predicts. `decode_latents` turns them back into pixels."""
        return F.normalize(self._latents(frames), dim=-1)

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """continuous latents (B, T, N, E) -> frames float (B, T, H, W, 3) in [0, 1]."""
        return self._decode_codes(F.normalize(z, dim=-1)).clamp(0, 1)

    @torch.no_grad()
    def decode_latents_step(self, z: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """`decode_step` for continuous latents z (B, N, E) -> float (B, H, W, 3) in [0, 1]."""
        x = self.decoder.step(self._embed_codes(F.normalize(z, dim=-1)), cache, commit=True)
        return self._to_pixels(x).clamp(0, 1)

    def new_decode_cache(self, max_frames: int | None = None) -> KVCache:
        """An empty cache for `decode_step`: a frame sees itself + max_frames-1 cached frames."""
        window = max_frames or self.config.max_frames
        if window < 2:
            raise ValueError("max_frames must be >= 2")
        return self.decoder.new_cache(window - 1)

    @torch.no_grad()
    def decode_step(self, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Decode one new frame: ids (B, h, w) -> float (B, H, W, 3) in [0, 1], using the frames
        already in `cache` as context, then commit it. A sequence of steps equals `decode`."""
        codes = self.vq.lookup(rearrange(ids, "b h w -> b (h w)"))
        x = self.decoder.step(self._embed_codes(codes), cache, commit=True)  # (B, N, D)
        return self._to_pixels(x).clamp(0, 1)

    @torch.no_grad()
    def evaluate(self, batch: dict) -> dict[str, float]:
        """Reconstruction metrics of encode -> decode: per-frame PSNR (capped at 50 dB) and SSIM,
        averaged; codebook usage/perplexity of the batch; PSNR of the first frame alone."""
        was = self.training
        self.eval()
        frames = batch["frames"]
        out = self(frames)
        recon, target = out.recon.clamp(0, 1), to_float(frames)
        p = psnr(recon, target)  # (B, T)
        self.train(was)
        return {
            "psnr": p.mean().item(),
            "psnr_first": p[:, 0].mean().item(),
            "ssim": ssim(recon, target).mean().item(),
            "recon_mse": out.losses["recon"].item(),
            "codebook_usage": out.usage.item(),
            "perplexity": out.perplexity.item(),
        }

    @torch.no_grad()
    def visualize(self, batch: dict, max_clips: int = 2, max_frames: int = 8) -> np.ndarray:
        """uint8 (H', W', 3): per clip, ground truth above reconstruction, frames left to right."""
        frames = batch["frames"][:max_clips, :max_frames]
        recon = self.decode(self.encode(frames))
        return frame_rows([frames, recon])
