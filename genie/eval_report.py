"""The report of `genie eval`: report.md with its tables, a PSNR-by-horizon plot and example
GIFs (ground truth | the world under the LAM's actions | under random actions)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genie.evaluate import HORIZONS


def write_report(out: Path, metrics: dict, examples) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genie.images import grid
    from genie.video import write_video

    d = metrics["dynamics"]
    hs = list(HORIZONS)
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    ax.plot(hs, [d["psnr"][str(h)] for h in hs], "o-", label="world model (LAM actions)")
    ax.plot(hs, [d["baseline_copy_last_psnr"][str(h)] for h in hs], "s--", label="copy last frame")
    ax.set_xlabel("generated frames (horizon)")
    ax.set_ylabel("PSNR (dB, capped at 50)")
    ax.set_xticks(hs)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "psnr_by_horizon.png")
    plt.close(fig)

    gifs = []
    if examples:  # uint8 truth (B, T, H, W, 3), generated (B, K, ...), random (B, R, ...)
        truth, gen, rand, c = examples
        k = gen.shape[1]
        for i in range(truth.shape[0]):
            held = np.concatenate([rand[i], np.repeat(rand[i, -1:], k - rand.shape[1], 0)])
            row = np.stack([truth[i, c : c + k], gen[i], held], axis=1)  # (K, 3, H, W, 3)
            name = f"example_{i}.gif"
            write_video(out / name, grid(row[:, None]), fps=6, scale=3)  # side by side
            gifs.append(name)

    lines = [
        "# World evaluation",
        "",
        f"World `{metrics['protocol']['world']}`, data `{metrics['protocol']['data']}` split "
        f"`{metrics['protocol']['split']}`: {metrics['protocol']['episodes']} episodes, one clip each, "
        f"{metrics['protocol']['context_frames']} real context frames. PSNR per frame capped at 50 dB.",
        "",
        "| part | metric | value |",
        "|---|---|---|",
        f"| tokenizer | PSNR / SSIM | {metrics['tokenizer']['psnr']:.2f} dB / {metrics['tokenizer']['ssim']:.3f} |",
        f"| tokenizer | codebook usage | {metrics['tokenizer']['codebook_usage']:.1%} |",
        f"| LAM | next-frame PSNR | {metrics['lam']['psnr']:.2f} dB |"
        if "psnr" in metrics["lam"]
        else f"| LAM | none | {metrics['lam'].get('absent', '')} |",
    ]
    if "action_accuracy" in metrics["lam"]:
        lam = metrics["lam"]
        lines.append(
            f"| LAM | latent -> true action accuracy on {lam['action_transitions']:,} transitions "
            "(fitted / held-out levels ± s.e. / shuffled latents, held-out / most frequent action) | "
            f"{lam['action_accuracy']:.1%} / {lam['action_accuracy_held_out']:.1%} "
            f"± {lam['action_accuracy_held_out_stderr']:.1%} / "
            f"{lam['action_accuracy_held_out_shuffled']:.1%} / {lam['action_accuracy_chance']:.1%} |"
        )
        lines.append(f"| LAM | latent action names | {', '.join(lam['latent_names'])} |")
    lines.append(f"| dynamics | ΔtPSNR@4 | {d['delta_psnr_4']:+.2f} dB |")
    lines += [
        "",
        "| horizon | model PSNR | copy-last PSNR | model SSIM | copy-last SSIM |",
        "|---|---|---|---|---|",
    ]
    for h in hs:
        lines.append(
            f"| {h} | {d['psnr'][str(h)]:.2f} | {d['baseline_copy_last_psnr'][str(h)]:.2f} | "
            f"{d['ssim'][str(h)]:.3f} | {d['baseline_copy_last_ssim'][str(h)]:.3f} |"
        )
    lines += [
        "",
        "![PSNR by horizon](psnr_by_horizon.png)",
        "",
        "Examples (left: ground truth, middle: generated with the LAM's actions, right: random actions for 4 frames):",
        "",
    ]
    lines += [f"![example]({g})" for g in gifs]
    (out / "report.md").write_text("\n".join(lines) + "\n")
