"""Latent action model (Genie §2.2): infers a discrete action per step from raw pixels alone.

Dimension letters: B batch, T frames, H/W pixels, N = h*w patches per frame, D width,
E action-latent width, A latent actions (codebook size), P patch size.

* **Encoder**: frames x_1..x_T -> linear patch embedding + spatial positions, one learned
  *action token* added to each frame's patches -> causal `STTransformer`. The action token of
  frame t+1 sees x_1..x_{t+1} (temporal attention compares each patch with its past), so it
  can say what changed from x_t to x_{t+1} -> linear to E -> `VectorQuantizer` with A codes.
* **Decoder**: x_1..x_{T-1} patch-embedded, the quantised action a_t added to every token of
  frame t -> causal `STTransformer` -> per patch, the *change* x_{t+1} - x_t (predict_delta).
  It never sees x_{t+1}, so the only way to predict the change is through a_t: the tiny
  codebook is forced to carry "what the player did". All steps are trained in one pass.

**Latent inputs** (`inputs: "latents"`, as LAPO's inverse/forward models): instead of pixels the
LAM reads the world's frame autoencoder's tokens (B, T, N, E), the same the diffusion dynamics
predicts; the encoder embeds each token (and its change), the decoder predicts the change of
the next frame's tokens, the loss is the MSE of unit-std latents. The autoencoder is not part of
the LAM's weights: `read_through(autoencoder)` attaches the world's (`load_part` does it).

At play time the LAM is not run: the user picks one of the A codes. It labels training
clips for the dynamics (`infer_actions`) and its codes are compared with true actions by
`genie.utils.metrics.best_mapping_accuracy`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from genie.models.blocks import STTransformer, init_weights, neighbourhood_conv
from genie.models.layers import CenteredLatent, conv_stem, init_convs
from genie.models.pretrained import PretrainedMixin
from genie.models.quantizer import QuantizerOutput, VectorQuantizer
from genie.utils.images import frame_rows, to_float
from genie.utils.metrics import best_mapping_accuracy, psnr

BANK_SIZE = 4096  # warm-up latents kept for the k-means codebook initialisation


@dataclass
class LAMConfig:
    frame_size: int = 64  # H = W of the (square) frames
    patch_size: int = 8  # P: pixels per patch side
    num_actions: int = 8  # A: latent action codebook size (Genie: 8; 6 on CoinRun)
    action_dim: int = 16  # E: action latent width; small, so a code carries little but the action
    conv_widths: tuple[int, ...] | None = None  # encoder patch embedding: a conv stem with these
    # channels per 2x stage (len = log2(P)) whose convs see across patch borders; None: 16, 32,
    # 64, ... as P needs; (): linear (Genie)
    width: int = 128  # D: transformer width (encoder and decoder)
    enc_depth: int = 2  # space-time blocks of the encoder
    dec_depth: int = 2  # space-time blocks of the decoder
    heads: int = 4  # attention heads (head width D / heads)
    mlp_ratio: float = 4.0  # MLP hidden width / D
    max_frames: int = 16  # longest clip the model is trained on (rotary positions go beyond)
    vq_beta: float = 0.25  # commitment weight inside the VQ loss
    vq_weight: float = 0.02  # weight of the VQ loss: the per-pixel MSE of mostly static frames is
    # tiny, and a full-weight commitment term freezes the latents before the decoder learns to use them
    vq_restart_after: int = 50  # training steps a code may go unused before it is re-seeded (0:
    # never; after a k-means start a restart only steals part of a cluster that has its code)
    vq_metric: str = "euclidean"  # the no-op stays a point near the origin (see VectorQuantizer);
    # "cosine" (l2-normalised) is kept for worlds trained before
    vq_warmup_steps: int = 300  # first training steps pass the continuous latent to the decoder;
    # then the codebook starts as k-means centres of the latents seen (a tiny codebook trained
    # from random codes collapses onto 2-3 codes before the encoder has learned what to say)
    predict_delta: bool = True  # decoder predicts x_{t+1} - x_t (static content is free)
    dec_conv: bool = True  # decoder tokens also see their 3x3 neighbourhood of patches (a
    # depthwise + pointwise conv over the token grid): moving content to a neighbouring patch
    # is then local, instead of a relative offset learned through absolute position embeddings
    encoder_input: str = (
        "frames+diff"  # what the encoder embeds per patch: "frames" (x_t, as Genie),
    )
    # "diff" (x_t - x_{t-1}) or "frames+diff" (both): with the difference, motion is visible from step 0
    decoder_sees: str = (
        "past"  # the decoder predicting x_{t+1}: "past" = x_1..x_t (Genie), "last" =
    )
    # x_t alone. Where players hold keys (and games have momentum) the past already says where
    # things are going, so a decoder that sees it needs no action and the codes collapse; one
    # that sees x_t alone must take the motion from a_t
    inputs: str = "pixels"  # "pixels" (Genie) or "latents": the world's frame autoencoder's tokens
    latent_grid: int = 0  # latents: tokens per side of the autoencoder's grid (set from the world)
    latent_dim: int = 0  # latents: values per token (set from the world)
    # the defaults above are the settings that recovered true actions (synthetic sprite video,
    # tests/test_unlabeled_video.py; the shipped CoinRun LAM); a config.json without this field
    # is version 1, whose missing fields take the defaults of then (`LEGACY_DEFAULTS`), so older
    # worlds keep their behaviour
    config_version: int = 2

    LEGACY_DEFAULTS: ClassVar[dict[int, dict[str, Any]]] = {
        1: {"conv_widths": (), "dec_conv": False, "vq_metric": "cosine", "vq_warmup_steps": 0}
    }

    def __post_init__(self):
        if self.conv_widths is None:  # a stem of 16, 32, 64, ... channels, one stage per 2x
            stages = int(math.log2(self.patch_size))
            pow2 = 2**stages == self.patch_size
            self.conv_widths = tuple(16 * 2**i for i in range(stages)) if pow2 else ()
        if self.vq_metric not in ("cosine", "euclidean"):
            raise ValueError(f"vq_metric must be 'cosine' or 'euclidean', got {self.vq_metric!r}")
        if self.vq_warmup_steps < 0:
            raise ValueError("vq_warmup_steps must be >= 0")
        if self.decoder_sees not in ("past", "last"):
            raise ValueError(f"decoder_sees must be 'past' or 'last', got {self.decoder_sees!r}")
        if self.encoder_input not in ("frames", "diff", "frames+diff"):
            raise ValueError(
                f"encoder_input must be 'frames', 'diff' or 'frames+diff', got {self.encoder_input!r}"
            )
        if self.inputs not in ("pixels", "latents"):
            raise ValueError(f"inputs must be 'pixels' or 'latents', got {self.inputs!r}")
        if self.inputs == "latents":
            self.conv_widths = ()  # tokens are embedded one by one (the neighbourhood is in them)
        if self.frame_size % self.patch_size:
            raise ValueError(
                f"frame_size {self.frame_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.conv_widths and 2 ** len(self.conv_widths) != self.patch_size:
            raise ValueError(
                f"conv_widths needs log2(patch_size) = {math.log2(self.patch_size):g} entries"
            )

    @property
    def grid(self) -> tuple[int, int]:
        n = self.latent_grid if self.inputs == "latents" else self.frame_size // self.patch_size
        return (n, n)

    @property
    def token_dim(self) -> int:
        """Values per input token: a latent token, or a patch of P x P RGB pixels."""
        return self.latent_dim if self.inputs == "latents" else 3 * self.patch_size**2


class _Shared:
    """A reference that copies keep as it is: the frozen autoencoder a LAM reads through is the
    world's, so a copy of the LAM (the checkpoint's) shares it."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __deepcopy__(self, memo) -> _Shared:
        return self


@dataclass
class LAMOutput:
    actions: torch.Tensor  # (B, T-1) latent action ids; a_t explains frame t -> t+1
    recon: torch.Tensor  # predictions of frames 2..T, unclamped: float (B, T-1, H, W, 3) in [0, 1],
    # or latent tokens (B, T-1, N, E) for a LAM that reads latents
    losses: dict[str, torch.Tensor]  # "recon", "vq" (scalars)
    perplexity: torch.Tensor  # exp(entropy) of action usage in the batch
    usage: torch.Tensor  # fraction of the A codes used in the batch


class LatentActionModel(nn.Module, PretrainedMixin):
    """Frames uint8 (B, T, H, W, 3) -> latent actions (B, T-1). See the module docstring."""

    config_class = LAMConfig
    model_type = "lam"

    def __init__(self, config: LAMConfig):
        super().__init__()
        self.config = c = config
        h, w = c.grid
        if c.inputs == "latents" and not (c.latent_grid and c.latent_dim):
            raise ValueError("a LAM that reads latents needs latent_grid and latent_dim")
        patch_dim = c.token_dim
        in_ch = 6 if c.encoder_input == "frames+diff" else 3
        both = 2 if c.encoder_input == "frames+diff" else 1
        if c.conv_widths:
            self.enc_embed = conv_stem(tuple(c.conv_widths), c.width, in_ch)
        else:
            self.enc_embed = nn.Linear(patch_dim * both, c.width)
        # latents: each token also sees its 3x3 neighbourhood (as the pixel stem's convs see
        # across patch borders): where a sprite went is then local to its new token
        self.enc_mix = neighbourhood_conv(c.width) if c.inputs == "latents" else None
        self._encoder_ref: _Shared | None = None  # latents: the world's autoencoder (not saved)
        self.enc_pos = nn.Parameter(torch.zeros(h * w + 1, c.width))  # patches + action token
        self.action_token = nn.Parameter(torch.zeros(c.width))
        self.encoder = STTransformer(c.width, c.enc_depth, c.heads, c.mlp_ratio)
        self.to_action = nn.Linear(c.width, c.action_dim)
        self.center = CenteredLatent(c.action_dim)  # without it the tiny codebook collapses
        self.vq = VectorQuantizer(
            c.num_actions,
            c.action_dim,
            beta=c.vq_beta,
            restart_after=c.vq_restart_after,
            metric=c.vq_metric,
        )
        if c.vq_warmup_steps:  # saved with the weights, so a resumed run knows where it is
            self.register_buffer("trained_steps", torch.zeros((), dtype=torch.long))
            self.register_buffer(
                "latent_bank", torch.zeros(BANK_SIZE, c.action_dim), persistent=False
            )
            self.bank_fill = 0
        self.dec_embed = nn.Linear(patch_dim, c.width)
        self.dec_pos = nn.Parameter(torch.zeros(h * w, c.width))
        self.from_action = nn.Linear(c.action_dim, c.width)
        self.dec_mix = neighbourhood_conv(c.width) if c.dec_conv else None
        self.decoder = STTransformer(c.width, c.dec_depth, c.heads, c.mlp_ratio)
        self.to_patch = nn.Linear(c.width, patch_dim)
        init_weights(self)
        init_convs(self)
        for p in (self.enc_pos, self.action_token, self.dec_pos):
            nn.init.normal_(p, std=0.02)
        if c.predict_delta:  # start as "copy the last frame": learning begins with what changed
            nn.init.zeros_(self.to_patch.weight)
        with torch.no_grad():
            self.vq.codebook.normal_()

    @property
    def num_actions(self) -> int:
        return self.config.num_actions

    @property
    def reads_latents(self) -> bool:
        return self.config.inputs == "latents"

    def read_through(self, autoencoder) -> LatentActionModel:
        """Attach the frozen frame autoencoder whose latents this LAM reads (not saved with it)."""
        c = self.config
        if getattr(autoencoder, "num_codes", None) != 0:
            raise ValueError("a LAM that reads latents needs a continuous frame autoencoder")
        (gh, gw), dim = autoencoder.grid, autoencoder.config.code_dim
        if (gh, gw) != c.grid or dim != c.latent_dim:
            raise ValueError(
                f"this LAM reads {c.grid[0]}x{c.grid[1]} tokens of {c.latent_dim} values but the "
                f"autoencoder gives {gh}x{gw} of {dim}"
            )
        self._encoder_ref = _Shared(autoencoder)  # not a submodule: not saved, not copied
        return self

    @property
    def frame_encoder(self) -> nn.Module | None:
        """The attached frame autoencoder (latents), or None."""
        return None if self._encoder_ref is None else self._encoder_ref.module

    def _apply(self, fn, recurse=True):
        """`.to()`, `.cuda()`, `.float()` also move the attached autoencoder."""
        if self.frame_encoder is not None:
            self.frame_encoder._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def _inputs(self, frames: torch.Tensor, latents: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 frames (B, T, H, W, 3) -> what the LAM reads: pixels (B, T, H, W, 3) in [-1, 1],
        or the autoencoder's tokens (B, T, N, E) (`latents` when the caller has them)."""
        if not self.reads_latents:
            return to_float(frames) * 2 - 1
        if latents is None:
            if self.frame_encoder is None:
                raise ValueError(
                    "this LAM reads a frame autoencoder's latents: load it with its world "
                    "(genie.world.folder.load_part) or call read_through(autoencoder)"
                )
            latents = self.frame_encoder.encode_latents(frames)
        return latents.float()

    def _mix(self, conv: nn.Module, h: torch.Tensor) -> torch.Tensor:
        """Tokens (B, T, N, D) plus `conv` of each token's neighbourhood on the token grid."""
        g = rearrange(h, "b t (h w) d -> (b t) d h w", h=self.config.grid[0])
        return h + rearrange(conv(g), "(b t) d h w -> b t (h w) d", b=h.shape[0])

    def _patches(self, x: torch.Tensor) -> torch.Tensor:
        """float frames (B, T, H, W, C) -> patches (B, T, N, P*P*C)."""
        p = self.config.patch_size
        return rearrange(x, "b t (h p) (w q) c -> b t (h w) (p q c)", p=p, q=p)

    def _check(self, frames: torch.Tensor) -> None:
        s = self.config.frame_size
        if frames.ndim != 5 or tuple(frames.shape[2:]) != (s, s, 3) or frames.shape[1] < 2:
            raise ValueError(f"expected frames (B, T>=2, {s}, {s}, 3), got {tuple(frames.shape)}")

    def _encode(self, x: torch.Tensor, update_stats: bool) -> torch.Tensor:
        """frames (B, T, H, W, 3) in [-1, 1] or latent tokens (B, T, N, E) -> centred action
        latents (B, T-1, E).
        update_stats: normalise with batch statistics and update the running ones (training)."""
        b, t = x.shape[:2]
        mode = self.config.encoder_input
        if mode != "frames":
            diff = torch.cat([torch.zeros_like(x[:, :1]), x.diff(dim=1)], dim=1)
            x = diff if mode == "diff" else torch.cat([x, diff], dim=-1)  # (B, T, ..., 3 or 6)
        if self.reads_latents:
            h = self._mix(self.enc_mix, self.enc_embed(x))  # (B, T, N, D)
        elif self.config.conv_widths:
            h = self.enc_embed(rearrange(x, "b t h w c -> (b t) c h w"))  # (B*T, D, h, w)
            h = rearrange(h, "(b t) d h w -> b t (h w) d", b=b)
        else:
            h = self.enc_embed(self._patches(x))  # (B, T, N, D)
        tok = self.action_token.expand(b, t, 1, -1)
        h = torch.cat([tok, h], dim=2) + self.enc_pos  # (B, T, 1+N, D)
        h = self.encoder(h)
        z = self.to_action(h[:, 1:, 0])  # action token of frames 2..T: (B, T-1, E)
        return self.center(z, update_stats)

    def forward(self, frames: torch.Tensor, latents: torch.Tensor | None = None) -> LAMOutput:
        """frames uint8 (B, T, H, W, 3) (and, for a LAM that reads latents, optionally their
        tokens (B, T, N, E)) -> latent actions and predictions of frames 2..T."""
        self._check(frames)
        x = self._inputs(frames, latents)  # pixels in [-1, 1] or tokens
        tokens = x if self.reads_latents else self._patches(x)  # (B, T, N, F)
        q = self._quantize(self._encode(x, update_stats=self.training))  # (B, T-1, E)
        h = self.dec_embed(tokens[:, :-1]) + self.dec_pos  # (B, T-1, N, D)
        h = h + self.from_action(q.quantized)[:, :, None]  # a_t added to every token of frame t
        if self.dec_mix is not None:
            h = self._mix(self.dec_mix, h)
        if self.config.decoder_sees == "last":  # each frame alone: no past motion to extend
            b = h.shape[0]
            h = self.decoder(rearrange(h, "b t n d -> (b t) 1 n d"))
            h = rearrange(h, "(b t) 1 n d -> b t n d", b=b)
        else:
            h = self.decoder(h)
        out = self.to_patch(h)  # (B, T-1, N, F)
        if self.reads_latents:  # unit-std tokens: the change (or the tokens) directly
            recon = tokens[:, :-1] + out if self.config.predict_delta else out
            target = tokens[:, 1:]
        else:
            gh, gw = self.config.grid
            p = self.config.patch_size
            out = rearrange(
                out * 0.5, "b t (h w) (p q c) -> b t (h p) (w q) c", h=gh, w=gw, p=p, q=p
            )  # [-1,1] -> [0,1] scale
            x01 = to_float(frames)  # [0, 1], exactly
            recon = x01[:, :-1] + out if self.config.predict_delta else out + 0.5
            target = x01[:, 1:]
        losses = {"recon": F.mse_loss(recon, target), "vq": self.config.vq_weight * q.loss}
        return LAMOutput(
            actions=q.ids, recon=recon, losses=losses, perplexity=q.perplexity, usage=q.usage
        )

    def predicted_frames(self, out: LAMOutput) -> torch.Tensor:
        """The decoder's predictions of frames 2..T as float pixels (B, T-1, H, W, 3) in [0, 1]."""
        if not self.reads_latents:
            return out.recon.clamp(0, 1)
        return self.frame_encoder.decode_latents(out.recon)

    def _quantize(self, z: torch.Tensor) -> QuantizerOutput:
        """Latents (B, T-1, E) -> VQ output; during the warm-up steps of training the continuous
        latents pass through (ids are still reported), and the last of them seed the codebook."""
        if not (self.training and self.config.vq_warmup_steps):
            return self.vq(z)
        self.trained_steps += 1
        if self.trained_steps > self.config.vq_warmup_steps:
            return self.vq(z)
        flat = z.detach().reshape(-1, z.shape[-1])[-BANK_SIZE:]
        n = len(flat)
        self.latent_bank = torch.cat([self.latent_bank[n:], flat])  # newest last
        self.bank_fill = min(self.bank_fill + n, BANK_SIZE)
        if self.trained_steps == self.config.vq_warmup_steps:
            self._init_codebook()
        ids = self.vq.nearest(self.vq.prepare(z.detach()))
        counts = torch.bincount(ids.reshape(-1), minlength=self.num_actions).float()
        probs = counts / counts.sum()
        return QuantizerOutput(
            quantized=z,
            ids=ids,
            loss=z.new_zeros(()),
            perplexity=torch.exp(-(probs * torch.log(probs + 1e-10)).sum()),
            usage=(counts > 0).float().mean(),
        )

    @torch.no_grad()
    def _init_codebook(self) -> None:
        """k-means codebook from the bank of warm-up latents (gathered from every process, so
        all processes compute the same codes)."""
        bank = self.latent_bank[BANK_SIZE - self.bank_fill :]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            parts = [
                torch.empty_like(self.latent_bank)
                for _ in range(torch.distributed.get_world_size())
            ]
            torch.distributed.all_gather(parts, self.latent_bank.contiguous())
            bank = torch.cat([p[BANK_SIZE - self.bank_fill :] for p in parts])
        self.vq.init_kmeans(bank)

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """batch["frames"] uint8 (B, T, H, W, 3) -> (loss, metrics)."""
        frames = batch["frames"]
        out = self(frames, batch.get("latents"))
        loss = sum(out.losses.values())
        metrics = {
            "loss": loss.item(),
            "recon_mse": out.losses["recon"].item(),
            "vq_loss": out.losses["vq"].item(),
            "action_usage": out.usage.item(),
            "perplexity": out.perplexity.item(),
        }
        if not self.reads_latents:  # pixels: PSNR for free (latents: decoding costs, see evaluate)
            with torch.no_grad():
                metrics["psnr"] = psnr(out.recon.clamp(0, 1), to_float(frames)[:, 1:]).mean().item()
        return loss, metrics

    @torch.no_grad()
    def infer_actions(
        self, frames: torch.Tensor, latents: torch.Tensor | None = None
    ) -> torch.Tensor:
        """frames uint8 (B, T, H, W, 3) -> latent action ids (B, T-1); a_t: frame t -> t+1.
        latents: the frames' tokens from the LAM's autoencoder, when the caller has them."""
        self._check(frames)
        z = self._encode(self._inputs(frames, latents), update_stats=False)
        return self.vq.nearest(self.vq.prepare(z))  # nearest code, no restarts

    @torch.no_grad()
    def evaluate(self, batch: dict) -> dict[str, float]:
        """PSNR of the predicted next frames (capped at 50 dB; a LAM reading latents: decoded by its
        autoencoder, copying beside it decoded too) beside copying the last frame,
        action usage/perplexity and, when the batch has true actions, the accuracy of the best
        latent -> true mapping fitted on this batch (in-sample)."""
        was = self.training
        self.eval()
        out = self(batch["frames"], batch.get("latents"))
        self.train(was)
        x = to_float(batch["frames"])
        if self.reads_latents:  # copying the last frame, drawn by the same autoencoder
            tokens = self._inputs(batch["frames"], batch.get("latents"))
            copy = self.frame_encoder.decode_latents(tokens[:, :-1])
        else:
            copy = x[:, :-1]
        metrics = {
            "psnr": psnr(self.predicted_frames(out), x[:, 1:]).mean().item(),
            "psnr_copy_last": psnr(copy, x[:, 1:]).mean().item(),
            "recon_mse": out.losses["recon"].item(),
            "action_usage": out.usage.item(),
            "perplexity": out.perplexity.item(),
        }
        if batch.get("actions") is not None:
            true = batch["actions"][:, :-1]
            acc, _ = best_mapping_accuracy(out.actions, true, self.num_actions, int(true.max()) + 1)
            metrics["true_action_acc"] = acc
        return metrics

    @torch.no_grad()
    def visualize(self, batch: dict, max_clips: int = 2, max_frames: int = 8) -> np.ndarray:
        """uint8 (H', W', 3): per clip, true frames 2..T above the decoder's predictions of them."""
        frames = batch["frames"][:max_clips, :max_frames]
        was = self.training
        self.eval()
        recon = self.predicted_frames(self(frames))
        self.train(was)
        return frame_rows([frames[:, 1:], recon])
