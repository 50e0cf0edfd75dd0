"""Rendering explanations as pictures a person can look at (PNG bytes, HTML snippets).

- **Image overlay** (``overlay_png``): the per-pixel score is the attribution summed over
  channels, then made non-negative by ``normalization``: ``abs`` (|score|, default: where
  the model looks, whatever the sign), ``positive`` (only evidence for the target).
  It is divided by its ``percentile``-th percentile (default 99, so a few extreme pixels
  do not wash out the rest) and clipped to [0, 1], coloured with the matplotlib
  ``colormap`` (default ``inferno``), resized to the original image (bilinear) and blended:
  ``out = (1 - alpha * heat) * image + alpha * heat * colour`` with ``alpha`` 0.6, so
  unattributed pixels keep the photo and strongly attributed ones take the colour.
  The PNG has the original image's size (the model-input size when no original is given).
- **Tokens** (``token_png``, ``token_html``): each token on a background from the diverging
  ``RdBu_r`` colormap scaled by the largest |score| of that item (red: for the target, blue:
  against, white: neutral); the HTML carries the exact score in each span's ``title``.
- **Attention** (``attention_grid_png``): one cell per layer (rows) and head (columns),
  each the (query x key) map of the real tokens, ``viridis``, rows of each map sum to 1.
  ``rollout_png``: the rollout matrix with token labels.

Everything draws with Pillow or matplotlib's object API on the Agg canvas (no pyplot, so it
is safe in worker threads).
"""

from __future__ import annotations

import functools
import html
import io
from collections.abc import Sequence
from typing import Literal

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont
from pydantic import Field, field_validator

from explain.params import MethodParams


class RenderParams(MethodParams):
    colormap: str = Field(default="inferno", max_length=64, description="matplotlib colormap of the image heatmap")
    alpha: float = Field(default=0.6, ge=0.0, le=1.0, description="heatmap opacity where the score is 1")
    normalization: Literal["abs", "positive"] = Field(default="abs", description="how signed scores become heat")
    percentile: float = Field(default=99.0, gt=0.0, le=100.0, description="score percentile mapped to full heat")
    render_png: bool = Field(
        default=True, description="draw the PNG views (false: attributions and scores only, no rendering cost)"
    )

    @field_validator("colormap")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in colormaps:
            raise ValueError("not a matplotlib colormap name (e.g. inferno, viridis, jet, turbo)")
        return name


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)  # ~4x faster than the default 6, ~15 % larger
    return buf.getvalue()


def heat(scores: np.ndarray, normalization: str = "abs", percentile: float = 99.0) -> np.ndarray:
    """(H, W) signed scores -> (H, W) heat in [0, 1]."""
    values = np.abs(scores) if normalization == "abs" else np.maximum(scores, 0.0)
    top = float(np.percentile(values, percentile)) if values.size else 0.0
    if top <= 0.0:
        top = float(values.max()) if values.size and values.max() > 0 else 1.0
    return np.clip(values / top, 0.0, 1.0)


@functools.lru_cache(maxsize=16)
def _colour_table(name: str) -> np.ndarray:
    """The colormap sampled at 256 levels: (256, 3) float32 in [0, 255]."""
    return (colormaps[name](np.arange(256))[:, :3] * 255.0).astype(np.float32)


def overlay_png(attributions: np.ndarray, image: np.ndarray, params: RenderParams | None = None) -> bytes:
    """attributions (C, h, w) or (h, w); image uint8 (H, W, 3) or (H, W) -> PNG of size (W, H)."""
    p = params or RenderParams()
    scores = attributions.sum(axis=0) if attributions.ndim == 3 else attributions  # (h, w)
    photo = Image.fromarray(image).convert("RGB")
    h_map = heat(scores.astype(np.float64), p.normalization, p.percentile)  # (h, w) in [0, 1]
    resized = Image.fromarray((h_map * 255).astype(np.uint8)).resize(photo.size, Image.Resampling.BILINEAR)
    level = np.asarray(resized)  # (H, W) uint8
    colour = _colour_table(p.colormap)[level]  # (H, W, 3)
    weight = (p.alpha / 255.0) * level[..., None].astype(np.float32)  # (H, W, 1)
    blended = (1.0 - weight) * np.asarray(photo, dtype=np.float32) + weight * colour  # (H, W, 3)
    return png_bytes(Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8)))


def denormalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A model-input image (C, H, W) float back to uint8 (H, W, 3) pixels (grey images repeated)."""
    c = image.shape[0]
    pixels = image * np.asarray(std, dtype=np.float32).reshape(c, 1, 1) + np.asarray(mean, dtype=np.float32).reshape(
        c, 1, 1
    )  # (C, H, W) in [0, 1]
    rgb = np.repeat(pixels, 3, axis=0) if c == 1 else pixels[:3]
    return (np.clip(rgb.transpose(1, 2, 0), 0.0, 1.0) * 255).round().astype(np.uint8)  # (H, W, 3)


def _token_colours(scores: np.ndarray) -> np.ndarray:
    """(n,) signed scores -> (n, 3) uint8 RdBu_r colours, 0 -> white-ish."""
    top = float(np.abs(scores).max()) if scores.size else 0.0
    unit = scores / top if top > 0 else np.zeros_like(scores)  # [-1, 1]
    return (colormaps["RdBu_r"]((unit + 1.0) / 2.0)[:, :3] * 255).astype(np.uint8)


def _font(size: int = 14) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def token_html(tokens: Sequence[str], scores: np.ndarray) -> str:
    """An HTML snippet: one ``<span>`` per token, background by score, exact score in ``title``."""
    spans = []
    for token, score, rgb in zip(tokens, scores, _token_colours(scores), strict=True):
        r, g, b = (int(v) for v in rgb)
        spans.append(
            f'<span class="ls-token" title="{score:+.4g}" data-score="{score:.6g}" '
            f'style="background:rgb({r},{g},{b});padding:1px 3px;margin:1px;border-radius:3px;'
            f'display:inline-block;font-family:monospace">{html.escape(token)}</span>'
        )
    return '<div class="ls-tokens" style="line-height:1.8">' + "".join(spans) + "</div>"


def token_png(tokens: Sequence[str], scores: np.ndarray, *, width: int = 640) -> bytes:
    """The same strip as a PNG: boxes wrap onto new lines at ``width`` pixels."""
    font = _font(14)
    pad, gap, line_h = 4, 3, 22
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widths = [int(probe.textlength(t, font=font)) + 2 * pad for t in tokens]
    x, y, places = gap, gap, []
    for w in widths:
        if x + w + gap > width and x > gap:
            x, y = gap, y + line_h + gap
        places.append((x, y, w))
        x += w + gap
    image = Image.new("RGB", (width, y + line_h + gap), "white")
    draw = ImageDraw.Draw(image)
    for (bx, by, w), token, rgb in zip(places, tokens, _token_colours(scores), strict=True):
        fill = tuple(int(v) for v in rgb)
        draw.rounded_rectangle((bx, by, bx + w, by + line_h), radius=3, fill=fill)
        ink = "white" if sum(fill) < 300 else "black"
        draw.text((bx + pad, by + 3), token, fill=ink, font=font)
    return png_bytes(image)


def attention_grid_png(attention: np.ndarray, *, cell: int | None = None) -> bytes:
    """attention (layers, heads, n, n) of the real tokens -> one PNG, layers as rows, heads as columns."""
    layers, heads, n, _ = attention.shape
    size = cell or int(np.clip(6 * n, 48, 160))
    label_w, label_h, gap = 28, 16, 4
    width = label_w + heads * (size + gap)
    height = label_h + layers * (size + gap)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = _font(11)
    cmap = colormaps["viridis"]
    for head in range(heads):
        draw.text((label_w + head * (size + gap) + size // 2 - 6, 2), f"H{head}", fill="black", font=font)
    for layer in range(layers):
        top = label_h + layer * (size + gap)
        draw.text((2, top + size // 2 - 6), f"L{layer}", fill="black", font=font)
        for head in range(heads):
            a = attention[layer, head]  # (n, n)
            scaled = a / a.max() if a.max() > 0 else a
            tile = Image.fromarray((cmap(scaled)[..., :3] * 255).astype(np.uint8)).resize(
                (size, size), Image.Resampling.NEAREST
            )
            image.paste(tile, (label_w + head * (size + gap), top))
    return png_bytes(image)


def rollout_png(rollout: np.ndarray, tokens: Sequence[str]) -> bytes:
    """rollout (n, n) -> a labelled heatmap (rows: query token, columns: key token)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(tokens)
    side = float(np.clip(0.28 * n + 1.8, 3.0, 12.0))
    fig = Figure(figsize=(side + 0.8, side), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    shown = ax.imshow(rollout, cmap="viridis", vmin=0.0)
    ax.set_xticks(range(n), list(tokens), rotation=90, fontsize=7)
    ax.set_yticks(range(n), list(tokens), fontsize=7)
    ax.set_title("attention rollout (rows sum to 1)", fontsize=9)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
