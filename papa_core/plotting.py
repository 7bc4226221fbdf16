"""Grids and line plots as PNGs with Pillow alone (no plotting dependency)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[B, C, H, W] in [-1, 1] → uint8 [B, H, W, C] (C = 1 or 3)."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def image_grid(images: torch.Tensor, path: str | Path, ncol: int = 10, scale: int = 4, numbers: bool = False,
               marks: Optional[Sequence[float]] = None) -> Path:
    """Save a grid of [B, C, H, W] images in [-1, 1]; ``numbers`` labels tiles 1..B, ``marks`` draws a
    green (>0) / red (<0) frame per tile."""
    arr = to_uint8(images)
    b, h, w, c = arr.shape
    ncol = max(1, min(ncol, b))
    nrow = (b + ncol - 1) // ncol
    pad = 2 * scale
    th, tw = h * scale, w * scale
    label_h = 12 if numbers else 0
    canvas = Image.new("RGB", (ncol * (tw + pad) + pad, nrow * (th + pad + label_h) + pad), (40, 40, 40))
    draw = ImageDraw.Draw(canvas)
    for i in range(b):
        r, col = divmod(i, ncol)
        tile = Image.fromarray(arr[i][..., 0] if c == 1 else arr[i]).convert("RGB").resize((tw, th), Image.NEAREST)
        x0, y0 = pad + col * (tw + pad), pad + r * (th + pad + label_h) + label_h
        canvas.paste(tile, (x0, y0))
        if numbers:
            draw.text((x0 + 2, y0 - label_h), str(i + 1), fill=(255, 255, 255))
        if marks is not None and marks[i] != 0:
            colour = (60, 200, 60) if marks[i] > 0 else (220, 50, 50)
            draw.rectangle([x0 - 2, y0 - 2, x0 + tw + 1, y0 + th + 1], outline=colour, width=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def line_plot(series: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, title: str = "",
              xlabel: str = "", ylabel: str = "", ylim: tuple[float, float] = (0.0, 1.0),
              size: tuple[int, int] = (640, 400)) -> Path:
    """Plot named (x, y) series with axes, ticks and a legend into a PNG file."""
    img = line_plot_image(series, title, xlabel, ylabel, ylim, size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def line_plot_image(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str = "", xlabel: str = "",
                    ylabel: str = "", ylim: tuple[float, float] = (0.0, 1.0),
                    size: tuple[int, int] = (640, 400)) -> Image.Image:
    """The plot of ``line_plot`` as an RGB PIL image."""
    W, H = size
    left, right, top, bottom = 56, 16, 28, 44
    img = Image.new("RGB", size, (255, 255, 255))
    d = ImageDraw.Draw(img)
    xs = [x for xv, _ in series.values() for x in xv] or [0, 1]
    xmin, xmax = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    ymin, ymax = ylim

    def px(x, y):
        return (left + (x - xmin) / (xmax - xmin) * (W - left - right),
                H - bottom - (y - ymin) / (ymax - ymin) * (H - top - bottom))

    d.rectangle([left, top, W - right, H - bottom], outline=(0, 0, 0))
    for k in range(6):
        yv = ymin + (ymax - ymin) * k / 5
        _, yp = px(xmin, yv)
        d.line([left - 4, yp, W - right, yp], fill=(225, 225, 225))
        d.text((6, yp - 6), f"{yv:.2f}", fill=(0, 0, 0))
    for k in range(6):
        xv = xmin + (xmax - xmin) * k / 5
        xp, _ = px(xv, ymin)
        d.text((xp - 8, H - bottom + 6), f"{xv:g}", fill=(0, 0, 0))
    d.text((W // 2 - 4 * len(title), 8), title, fill=(0, 0, 0))
    d.text((W // 2 - 3 * len(xlabel), H - 18), xlabel, fill=(0, 0, 0))
    d.text((4, top - 20), ylabel, fill=(0, 0, 0))
    for n, (name, (xv, yv)) in enumerate(series.items()):
        colour = PALETTE[n % len(PALETTE)]
        pts = [px(x, y) for x, y in zip(xv, yv)]
        if len(pts) > 1:
            d.line(pts, fill=colour, width=2)
        for p in pts:
            d.ellipse([p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2], fill=colour)
        d.line([left + 10, top + 10 + 14 * n, left + 30, top + 10 + 14 * n], fill=colour, width=3)
        d.text((left + 34, top + 4 + 14 * n), name, fill=(0, 0, 0))
    return img
