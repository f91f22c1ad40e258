"""What every layer shares and nothing in it depends on: the one-line user error
(`errors`), image loading and conversion (`images`), the metrics every report uses
(`metrics`: PSNR, SSIM, sharpness, colour drift, scroll tracking, action mapping), per-row
random generators (`rng`) and video/GIF/strip writing (`video`). Imports nothing from genie."""
