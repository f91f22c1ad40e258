"""Sampling the diffusion dynamics' next frame (Karras et al. 2022, EDM, algorithm 2): Euler or
Heun steps down the Karras noise levels of diffusers' `EDMEulerScheduler`, optional churn, with
only the cached context (`sample_next`) or recomputing it (`sample_next_uncached`, the reference
the cached sampler is tested against). A mixin of `genie.models.diffusion.DiffusionDynamics`,
kept apart as DIAMOND keeps its denoiser and its sampler apart.
"""

from __future__ import annotations

import torch
from diffusers import EDMEulerScheduler

from genie.utils import rng

SOLVERS = ("euler", "heun")


class EDMSampling:
    """Needs from the model: `config` (latent_scale, diffusion_steps, solver, churn,
    context_noise, tokens_per_frame), `scheduler`, `transformer`, `embed`, `_pre`, `denoise`,
    `append_frame`, `_action_ids`, `null_action`."""

    @torch.no_grad()
    def sample_next(
        self,
        state,  # the model's DiffusionState (cache + newest frame)
        action,
        steps: int | None = None,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
        commit: bool = True,
        context_noise: float | None = None,
        solver: str | None = None,
        churn: float | None = None,
        fused_commit: bool | None = None,
    ) -> torch.Tensor:
        """Generate the next frame's latents (B, N, E) in `steps` steps down the Karras noise
        levels of the diffusers EDM scheduler, using only the cache (Karras et al. 2022, alg. 2).
        solver: "euler" (one network pass a step) or "heun" (two, except the last step: the
        second-order correction that keeps detail a few Euler steps average away). churn: EDM's
        S_churn: each step first raises the noise level by a factor 1 + min(churn/steps, 0.41)
        with fresh noise, so the sampler commits to one future instead of their mean (Boxing's
        opponent). temperature scales the starting noise (1: the trained distribution).
        commit=True also adds the frame to the context."""
        if state.last is None:
            raise ValueError("append a context frame before sampling")
        c = self.config
        solver = (solver or c.solver).lower()
        if solver not in SOLVERS:
            raise ValueError(f"unknown solver '{solver}' (use one of {', '.join(SOLVERS)})")
        churn = c.churn if churn is None else float(churn)
        fused = commit and (c.fused_commit if fused_commit is None else bool(fused_commit))
        b, dev = state.last.shape[0], state.last.device
        act = self._action_ids(action, b, dev)
        sigmas = self._sampler(steps or c.diffusion_steps).sigmas.to(dev)  # (steps + 1,), ends at 0
        n = len(sigmas) - 1
        # fused only where the last step's input is a context frame training has seen (1 step
        # would commit pure noise at sigma_max): else the usual commit pass
        gamma = min(churn / n, 2**0.5 - 1) if churn > 0 else 0.0
        fused = fused and sigmas[n - 1].item() * (1 + gamma) <= c.context_noise_max
        temp = 1.0 if temperature is None else float(temperature)
        x = rng.randn(state.last.shape, generator, dev) * sigmas[0].item() * temp
        for i in range(n):
            sigma, nxt = sigmas[i].item(), sigmas[i + 1].item()
            if gamma > 0:  # churn: climb to sigma_hat with fresh noise
                hat = sigma * (1 + gamma)
                x = x + (hat**2 - sigma**2) ** 0.5 * rng.randn(x.shape, generator, dev)
                sigma = hat
            last = i == n - 1
            if last and fused:  # this pass's input becomes the context frame
                state_last = x
            d = (x - self._denoised(state, x, sigma, act, commit=last and fused)) / sigma
            x_next = x + (nxt - sigma) * d
            if solver == "heun" and nxt > 0:  # second order: average the slopes at both ends
                d_next = (x_next - self._denoised(state, x_next, nxt, act)) / nxt
                x_next = x + (nxt - sigma) * (d + d_next) / 2
            x = x_next
        latents = x / c.latent_scale
        if fused:
            state.last = state_last  # the committed frame, as the next frame's "previous"
        elif commit:
            self.commit_frame(state, latents, act, generator, context_noise)
        return latents

    def commit_frame(
        self, state, latents: torch.Tensor, action, generator=None, context_noise=None, **_
    ) -> None:
        """What `sample_next(commit=True)` does after sampling, on its own (not fused): latents
        (B, N, E) of a frame sampled with commit=False join the context at `context_noise`
        (the engine runs it beside decoding)."""
        noise = self.config.context_noise if context_noise is None else context_noise
        self.append_frame(state, latents, action, noise, generator)

    def _denoised(
        self, state, x: torch.Tensor, sigma: float, act: torch.Tensor, commit: bool = False
    ) -> torch.Tensor:
        """D(x; sigma): the denoised frame (B, N, E) from noisy scaled latents x at level sigma,
        one look-ahead pass against the cached context (commit: x at sigma joins the context)."""
        s = torch.full((x.shape[0], 1), sigma, device=x.device)
        x_in = self._pre(x[:, None], s)  # c_in(sigma) x, (B, 1, N, E)
        h = self.transformer.step(
            self.embed(x_in, s, act[:, None], state.last[:, None])[:, 0], state.cache, commit=commit
        )
        return self.denoise(x, s[:, 0], h)

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
        """Reference sampler recomputing the whole (clean) context every step.
        context: (B, t, N, E) unit-norm latents; context_actions: (B, t-1)."""
        c = self.config
        b, t = context.shape[:2]
        ctx = context.reshape(b, t, c.tokens_per_frame, -1) * c.latent_scale
        act = self._action_ids(action, b, ctx.device)
        null = torch.full((b, 1), self.null_action, device=ctx.device, dtype=torch.long)
        frame_actions = torch.cat([null, context_actions.long(), act[:, None]], dim=1)
        sched = self._sampler(steps or c.diffusion_steps)
        temp = 1.0 if temperature is None else float(temperature)
        x = torch.randn(ctx[:, 0].shape, generator=generator, device=ctx.device)
        x = x * sched.sigmas[0].item() * temp
        prev = torch.cat([ctx[:, :1], ctx], dim=1)  # (B, t+1, N, E)
        zeros = torch.zeros(b, t, device=ctx.device)
        ctx_in = self._pre(ctx, zeros)
        for i, step_t in enumerate(sched.timesteps):
            s = torch.cat([zeros, sched.sigmas[i].to(ctx.device).expand(b, 1)], dim=1)
            x_in = sched.scale_model_input(x, step_t)
            seq = torch.cat([ctx_in, x_in[:, None]], dim=1)
            h = self.transformer(self.embed(seq, s, frame_actions, prev))
            x = sched.step(self.out(h[:, -1, 1:]), step_t, x).prev_sample
        return x / c.latent_scale

    def _sampler(self, steps: int) -> EDMEulerScheduler:
        """A fresh scheduler for `steps` Euler steps. The Karras ramp is cut before sigma_min
        (the scheduler appends 0): with few steps the default schedule spends its last step at
        sigma_min, where nothing is left to denoise (2 steps would act as 1); cut, 2 steps
        go sigma_max -> 0.28 -> 0."""
        if steps < 1:
            raise ValueError("diffusion steps must be >= 1")
        sched = EDMEulerScheduler.from_config(self.scheduler.config)
        sched.set_timesteps(sigmas=torch.linspace(0, 1, steps + 1)[:-1])
        return sched
