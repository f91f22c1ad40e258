"""`VectorQuantizer`: the codebook of the VQ tokenizer and of the latent action model, with
k-means seeding, dead-code restart and usage statistics (perplexity, share of codes used).
Dimension letters: C codebook size, E code width."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # (..., dim) straight-through quantized vectors
    ids: torch.Tensor  # (...) code indices
    loss: torch.Tensor  # commitment + codebook loss (scalar)
    perplexity: torch.Tensor  # exp(entropy) of code usage in this batch (scalar)
    usage: torch.Tensor  # fraction of codes used in this batch (scalar)


class VectorQuantizer(nn.Module):
    """VQ with dead-code restart: codes unused for `restart_after` training steps are re-seeded
    from the batch's encoder outputs (0: never). Both metrics defend against codebook collapse:

    * "cosine": l2-normalised codes and latents (as in ViT-VQGAN); the tokenizer's default;
    * "euclidean": raw codes and latents, nearest by l2 distance. A latent near the origin
      (the LAM's "nothing happened") stays a point of its own, which the cosine metric would
      scatter over random directions. Pair it with `init_kmeans` on the latents of a warmed-up
      encoder (what the LAM does)."""

    def __init__(
        self,
        num_codes: int,
        dim: int,
        beta: float = 0.25,
        restart_after: int = 50,
        metric: str = "cosine",
    ):
        super().__init__()
        if metric not in ("cosine", "euclidean"):
            raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
        self.num_codes = num_codes
        self.dim = dim
        self.beta = beta
        self.restart_after = restart_after
        self.metric = metric
        self.codebook = nn.Parameter(torch.randn(num_codes, dim))
        self.register_buffer(
            "steps_unused", torch.zeros(num_codes, dtype=torch.long), persistent=False
        )

    def normalized_codebook(self) -> torch.Tensor:
        """The codes as the lookup uses them: l2-normalised (cosine) or as they are (euclidean)."""
        return F.normalize(self.codebook, dim=-1) if self.metric == "cosine" else self.codebook

    def prepare(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (..., dim) as the metric compares them (l2-normalised for cosine)."""
        return F.normalize(z, dim=-1) if self.metric == "cosine" else z

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """(..., dim) prepared latents -> (...) ids of the nearest codes (no restarts, no loss)."""
        # in fp32 even under autocast: in bf16, |z|^2 - 2 z.c + |c|^2 cancels and can pick the
        # wrong one of two close codes (the product is tiny; its cost does not show)
        with torch.autocast(z.device.type, enabled=False):
            z, codes = z.float(), self.normalized_codebook().float()
            if self.metric == "cosine":
                return (z @ codes.t()).argmax(dim=-1)
            d = (z * z).sum(-1, keepdim=True) - 2 * z @ codes.t() + (codes * codes).sum(-1)
            return d.argmin(dim=-1)

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (...) -> (..., dim)"""
        return F.embedding(ids, self.normalized_codebook())

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """z: (..., dim) continuous latents."""
        shape = z.shape
        flat = self.prepare(z.reshape(-1, self.dim))  # (M, dim)
        ids = self.nearest(flat)  # (M,)
        q = self.normalized_codebook()[ids]
        loss = F.mse_loss(q, flat.detach()) + self.beta * F.mse_loss(flat, q.detach())
        q_st = flat + (q - flat).detach()  # straight-through estimator
        counts = torch.bincount(ids, minlength=self.num_codes).float()
        probs = counts / counts.sum()
        perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
        usage = (counts > 0).float().mean()
        if self.training and self.restart_after:
            self._restart_dead(counts, flat.detach())
        return QuantizerOutput(
            quantized=q_st.reshape(shape),
            ids=ids.reshape(shape[:-1]),
            loss=loss,
            perplexity=perplexity,
            usage=usage,
        )

    @torch.no_grad()
    def init_kmeans(self, z: torch.Tensor, iters: int = 30, seed: int = 0) -> None:
        """Set the codes to k-means centres (k-means++ seeding) of latents z (M, dim), e.g. those
        of an encoder trained for a while without quantisation. Deterministic given z and seed,
        so processes that pass the same (gathered) latents get the same codebook."""
        x = self.prepare(z.reshape(-1, self.dim).float())
        g = torch.Generator(device="cpu").manual_seed(seed)
        centres = x[torch.randint(0, len(x), (1,), generator=g).to(x.device)]
        for _ in range(self.num_codes - 1):
            d = torch.cdist(x, centres).min(dim=1).values.pow(2) + 1e-12
            pick = torch.multinomial(d.cpu(), 1, generator=g).to(x.device)
            centres = torch.cat([centres, x[pick]])
        for _ in range(iters):
            assign = torch.cdist(x, centres).argmin(dim=1)
            sums = torch.zeros_like(centres).index_add_(0, assign, x)
            counts = torch.bincount(assign, minlength=self.num_codes).float()[:, None]
            centres = torch.where(counts > 0, sums / counts.clamp_min(1), centres)
        self.codebook.data.copy_(self.prepare(centres))
        self.steps_unused.zero_()

    @torch.no_grad()
    def _restart_dead(self, counts: torch.Tensor, flat: torch.Tensor) -> None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if distributed:  # all processes agree on which codes are dead
            counts = counts.clone()
            torch.distributed.all_reduce(counts)
        self.steps_unused.add_(1).masked_fill_(counts > 0, 0)
        dead = (self.steps_unused >= self.restart_after).nonzero().squeeze(-1)
        if dead.numel() == 0:
            return
        if distributed:
            # every process must restart the same codes with the same vectors
            gathered = [torch.empty_like(flat) for _ in range(torch.distributed.get_world_size())]
            torch.distributed.all_gather(gathered, flat.contiguous())
            flat = torch.cat(gathered)
            g = torch.Generator(device="cpu").manual_seed(int(self.steps_unused.sum().item()))
            pick = torch.randint(0, flat.shape[0], (dead.numel(),), generator=g).to(flat.device)
        else:
            pick = torch.randint(0, flat.shape[0], (dead.numel(),), device=flat.device)
        noise = 0.01 * torch.randn(dead.numel(), self.dim, device=flat.device)
        self.codebook.data[dead] = flat[pick] + noise
        self.steps_unused[dead] = 0
