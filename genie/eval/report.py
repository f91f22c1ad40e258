"""The reports of `genie eval` (report.md with its tables, a PSNR-by-horizon plot and example
GIFs: ground truth | the world under the LAM's actions | under random actions) and of
`genie playtest` (beside metrics.json: a PNG strip and a GIF per script, game above world, a
person looks at these before believing the numbers, and report.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from einops import rearrange
from PIL import Image, ImageDraw

from genie.eval.playtest import MOVE_PX, REANCHOR_PX, SCRIPTS, WINDOW
from genie.utils.images import grid
from genie.utils.video import write_video


def write_protocol_report(out: Path, metrics: dict, examples) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genie.utils.images import grid
    from genie.utils.video import write_video

    d = metrics["dynamics"]
    hs = sorted(int(h) for h in d["psnr"])
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

    tok = metrics["tokenizer"]
    lines = [
        "# World evaluation",
        "",
        f"World `{metrics['protocol']['world']}`, data `{metrics['protocol']['data']}` split "
        f"`{metrics['protocol']['split']}`: {metrics['protocol']['episodes']} episodes, one clip each, "
        f"{metrics['protocol']['context_frames']} real context frames. PSNR per frame capped at 50 dB.",
        "",
        "| part | metric | value |",
        "|---|---|---|",
        f"| {tok['kind']} | reconstruction PSNR / SSIM | {tok['psnr']:.2f} dB / {tok['ssim']:.3f} |",
        f"| {tok['kind']} | reconstruction sharpness (mean gradient, reconstruction / real) | {tok['sharpness']:.2f} |",
        f"| {tok['kind']} | codebook usage | {tok['codebook_usage']:.1%} |"
        if "codebook_usage" in tok
        else f"| {tok['kind']} | latents | continuous ({tok['representation']}) |",
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


# ---------------------------------------------------------------------- genie playtest


SHOW_LEVELS = 3  # levels shown in each strip and GIF
SCALE = 2  # nearest-neighbour upscale of 64x64 frames
GAP = 2  # pixels between frames
LABEL_W, HEADER_H = 44, 14  # room for row and column labels (strip)


def strip(
    game: np.ndarray,
    world: np.ndarray,
    columns: list[int],
    levels: list[int],
    recon: np.ndarray | None = None,
) -> np.ndarray:
    """uint8 image: per level a game row above a world row, frames at `columns` (0 = start)
    left to right, labelled. game, world: uint8 (L, K+1, H, W, 3); recon (same shape, at
    least the shown levels): the game's frames encoded and decoded by the world's tokenizer
    or autoencoder, a row between them (what the world's decoder can draw at best)."""
    n = min(SHOW_LEVELS, len(game))
    rows = [game[:n, columns]] + ([recon[:n, columns]] if recon is not None else [])
    pairs = np.stack([*rows, world[:n, columns]], 1)  # (n, 2 or 3, C, H, W, 3)
    blocks = grid(pairs, GAP, SCALE)  # (n, rows*h + gaps, C*(w + GAP) - GAP, 3)
    h, w = game.shape[2] * SCALE, game.shape[3] * SCALE
    height = HEADER_H + n * blocks.shape[1] + (n - 1) * 3 * GAP
    img = Image.new("RGB", (LABEL_W + blocks.shape[2], height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for c, t in enumerate(columns):
        draw.text((LABEL_W + c * (w + GAP) + 2, 1), "start" if t == 0 else f"t={t}", fill=(0, 0, 0))
    for i in range(n):
        y = HEADER_H + i * (blocks.shape[1] + 3 * GAP)
        img.paste(Image.fromarray(blocks[i]), (LABEL_W, y))
        draw.text((2, y + h // 2 - 12), "game", fill=(0, 0, 0))
        draw.text((2, y + h // 2), str(levels[i]), fill=(110, 110, 110))
        if recon is not None:
            draw.text((2, y + h + GAP + h // 2 - 12), "decoded", fill=(0, 0, 0))
            draw.text((2, y + h + GAP + h // 2), "game", fill=(110, 110, 110))
        draw.text((2, y + (len(rows)) * (h + GAP) + h // 2 - 6), "world", fill=(0, 0, 0))
    return np.asarray(img)


def side_by_side(game: np.ndarray, world: np.ndarray) -> np.ndarray:
    """uint8 (K+1, H', W', 3): per frame, a row per level (up to SHOW_LEVELS) of game | world."""
    n = min(SHOW_LEVELS, len(game))
    pairs = np.stack([game[:n], world[:n]], 2)  # (n, K+1, 2, H, W, 3)
    return grid(rearrange(pairs, "n k two h w c -> k n two h w c"), 2 * GAP)


def _fmt(v, spec: str) -> str:
    return "–" if v is None else format(v, spec)


ROWS = [  # (metrics key, row name, format)
    ("psnr", "world PSNR (dB)", ".2f"),
    ("hold_start_psnr", "holding the start frame, PSNR (dB)", ".2f"),
    ("ssim", "world SSIM", ".3f"),
    ("hold_start_ssim", "holding the start frame, SSIM", ".3f"),
    ("sharpness", "sharpness, world / game (mean gradient)", ".2f"),
    ("colour_drift_pct", "colour drift (% of range)", ".1f"),
    ("motion_agreement", f"motion direction agreement (game moved >= {MOVE_PX} px)", ".0%"),
    ("motion_moving", "... axes x frames where the game moved", "d"),
    ("motion_error_px", "motion error (px, mean abs.)", ".1f"),
    ("window_agreement", f"direction agreement per {WINDOW}-frame window, up to t", ".0%"),
    ("scroll_distance_ratio", "distance moved, world / game, up to t (1 = exact; median)", ".2f"),
    ("window_restarts", "... windows left out: the game restarted its level in them", "d"),
]


def table(by_h: dict, horizons: list[int]) -> list[str]:
    cols = [str(h) for h in horizons] + ["all"]
    lines = [
        "| horizon | "
        + " | ".join(f"t = {c}" if c != "all" else "all frames" for c in cols)
        + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for key, name, spec in ROWS:
        lines.append(f"| {name} | " + " | ".join(_fmt(by_h[c].get(key), spec) for c in cols) + " |")
    return lines


def write_playtest_report(
    out: Path, metrics: dict, frames: dict[str, dict[str, np.ndarray]]
) -> None:
    """report.md, strip_<script>.png and play_<script>.gif into `out`."""
    horizons, levels = metrics["horizons"], metrics["levels"]
    columns = [0, *horizons]
    for name, f in frames.items():
        Image.fromarray(strip(f["game"], f["world"], columns, levels, f.get("recon"))).save(
            out / f"strip_{name}.png"
        )
        write_video(out / f"play_{name}.gif", side_by_side(f["game"], f["world"]), fps=10, scale=2)
    c = metrics["controls"]
    keyed = [f"{d} -> {w}" for d, w in c["world_action"].items() if w is not None]
    lines = [
        "# Play test",
        "",
        f"World `{metrics.get('world', '?')}` (actions: {metrics.get('world_action_source', '?')}), "
        f"game {metrics.get('game', {}).get('env', '?')} re-played from each level seed; "
        f"{len(levels)} levels of split `{metrics.get('split', '?')}` of `{metrics.get('data', '?')}` "
        f"({levels[0]}..{levels[-1]}), {metrics['horizon']} frames each, from ONE start frame "
        f"(the game's first), seed {metrics['seed']}.",
        "",
        f"PSNR is per frame with identical frames capped at {metrics['psnr_cap_db']:.0f} dB, then "
        "averaged over levels; SSIM is pytorch-msssim's (11x11 Gaussian window). Sharpness = the "
        "world frame's mean gradient magnitude / the game frame's (blur < 1). Colour drift = "
        "|difference of per-channel means|, % of range. Scroll = content shift of frame t "
        "against the start by Fourier-domain correlation, tracked through newer anchor frames "
        f"once the content moved {REANCHOR_PX} px; direction "
        f"agreement counts axes and frames where the game moved >= {MOVE_PX} px. "
        f"Motion here: {metrics.get('motion', 'scroll')} (a sprite's motion is its centroid's "
        "offset from the start frame). 'all frames' pools t = 1..horizon. Where the game "
        "restarts its level (a death or a win puts the camera back at the start), its motion "
        "is not compared across the restart: the direction from the start stops there, and a "
        "window holding the restart is left out.",
        "",
        "## Controls",
        "",
        f"The game's distinct actions: {', '.join(c['distinct'])}. With a key in the world: "
        f"{', '.join(keyed) or 'none'}. **Without a key: {', '.join(c['missing']) or 'none'}** "
        f"(the world plays its fallback, action {c['fallback']['id']} "
        f"'{c['fallback']['label']}', where the game plays them).",
        "",
        "## Scripts",
        "",
    ]
    for name, desc in SCRIPTS.items():
        if name in metrics["scripts"]:
            restarts = metrics["scripts"][name]["restarts"]
            note = (
                f" (the game restarted the level within the horizon on {restarts})"
                if restarts
                else ""
            )
            lines.append(f"- `{name}`: {desc}{note}")
        elif name in metrics["skipped_scripts"]:
            lines.append(f"- `{name}`: skipped: {metrics['skipped_scripts'][name]}")
    if metrics["mean"]:
        lines += ["", "## Averaged over scripts", "", *table(metrics["mean"], horizons)]
    for name in metrics["scripts"]:
        lines += [
            "",
            f"## {name}",
            "",
            *table(metrics["scripts"][name], horizons),
            "",
            f"![{name}: game above world](strip_{name}.png)",
            "",
            f"[game | world, {metrics['horizon']} frames](play_{name}.gif)",
        ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
