"""Procedural outdoor scenes: the embedded default dataset, generated on the fly.

A scene is drawn deterministically from (seed, split, index) at any size. Its label map has a
horizon at a random height and tilt, clouds in the sky, a fractal mountain ridge, fields of
water, sand or grass from thresholded smooth noise (compressed towards the horizon, as in
perspective), tree clusters and a tree line, and sometimes buildings and a road. Large
uniform regions (sky, sea, a meadow) are common on purpose: that is where ordinary
normalisation washes out the semantics and SPADE helps (paper, Fig. 3).

The photo is rendered from the label map under a random global style (time of day, tint,
brightness) with class-specific textures (multi-octave value noise at class-specific
scales, a vertical gradient for the sky, ripples and a sky reflection for water), soft
shading, anti-aliased boundaries and mild sensor noise. One label map has many plausible
photos, as with real data.

Speed: everything is vectorised NumPy on float32 planes. Value noise is a small random grid
upsampled separably: rows by a gather on the grid, columns by a cached interpolation matrix,
all octaves of a field in one matrix product. Fine grain, medium texture and sensor noise are
windows of fixed tiles. About 300 scenes/s at 256x256 on one idle core (200 on a busy one).
"""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import NamedTuple, Optional, Union

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from spade_bench.data.formats import synthetic as synthetic_format
from spade_bench.errors import DataError
from spade_bench.io import check_output_folder

# The classes and their colours are declared by the format (data/formats/synthetic.py).
CLASS_NAMES: tuple[str, ...] = synthetic_format.FORMAT.class_names
SKY, CLOUD, MOUNTAIN, WATER, SAND, GRASS, TREE, ROCK, BUILDING, ROAD = range(len(CLASS_NAMES))
SYNTHETIC_PALETTE = np.array(synthetic_format.FORMAT.palette, dtype=np.uint8)

# Separate seed streams, so that the train and val splits never share a scene.
SPLIT_STREAMS = {"train": 0x5EED_0001, "val": 0x5EED_0002}

# The dataset is part of the benchmark, so every run sees the same scenes whatever its
# training seed; `spade-bench data synth --seed` can draw other ones.
DATASET_SEED = 0


class Scene(NamedTuple):
    """A generated pair: label uint8 [H, W], image uint8 [H, W, 3], instance int32 [H, W] or None."""

    label: np.ndarray
    image: np.ndarray
    instance: Optional[np.ndarray]


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of one scene; independent across seeds, splits and indices."""
    if split not in SPLIT_STREAMS:
        raise ValueError(f"split must be one of {sorted(SPLIT_STREAMS)}, got {split!r}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), SPLIT_STREAMS[split], int(index)]))


def generate_scene(seed: int, split: str, index: int, size: tuple[int, int] = (256, 256), *,
                   with_instance: bool = False) -> Scene:
    """Draw scene `index` of `split` under `seed` at size (H, W)."""
    height, width = int(size[0]), int(size[1])
    if height < 8 or width < 8:
        raise ValueError(f"scene size must be at least 8x8, got {height}x{width}")
    rng = scene_rng(seed, split, index)
    with single_thread():
        layout = _draw_layout(rng, height, width)
        image = _render(rng, layout, height, width)
    instance = _instances(layout) if with_instance else None
    return Scene(layout.label, image, instance)


@contextlib.contextmanager
def single_thread():
    """Run torch on one thread, as it does in DataLoader workers (where this changes nothing).

    Per-sample work is small matrix products and elementwise ops on one image: a thread
    pool only adds wake-ups, and on a busy machine it is many times slower (measured: a
    256x60 @ 60x256 product took 0.28 ms on one thread and 2.6 ms on two).
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ============================================================================= noise

def _fade(t: np.ndarray) -> np.ndarray:
    # Quintic fade: value noise without visible creases at the grid lines.
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


class _Interp:
    """Upsampling from a grid of `size` cells to len(base) samples: sample i blends cells
    base[i] and base[i] + 1 with a faded weight. Applied as a gather on the small grid, or
    as a dense [samples, size] matrix for the one large product per noise field."""

    __slots__ = ("base", "weight", "size", "_dense")

    def __init__(self, coords: np.ndarray):
        coords = np.asarray(coords, dtype=np.float64)
        self.base = np.floor(coords).astype(np.intp)
        self.weight = _fade(coords - self.base).astype(np.float32)
        self.size = int(self.base.max()) + 2
        self._dense: Optional[np.ndarray] = None

    def apply(self, grid: np.ndarray) -> np.ndarray:
        """grid [size, ...] -> [samples, ...]."""
        low, high = grid[self.base], grid[self.base + 1]
        weight = self.weight.reshape((-1,) + (1,) * (grid.ndim - 1))
        return low + weight * (high - low)

    @property
    def dense(self) -> np.ndarray:
        if self._dense is None:
            matrix = np.zeros((self.base.size, self.size), dtype=np.float32)
            rows = np.arange(self.base.size)
            matrix[rows, self.base] = 1.0 - self.weight
            matrix[rows, self.base + 1] = self.weight
            self._dense = matrix
        return self._dense


def _interp(length: int, cell: float) -> _Interp:
    """Upsampling for a grid with one cell every `cell` pixels (cached)."""
    # Cell sizes are rounded to 2 significant digits, so random sizes hit the cache.
    return _cached_interp(int(length), float(f"{cell:.2g}"))


@functools.lru_cache(maxsize=1024)
def _cached_interp(length: int, cell: float) -> _Interp:
    return _Interp((np.arange(length) + 0.5) / cell)


def _field(rng: np.random.Generator, rows: list[_Interp], cols: list[_Interp],
           amplitudes: Optional[list[float]] = None) -> np.ndarray:
    """A 2D noise field rows(G) cols^T; with several (rows, cols) pairs, their weighted sum.

    One pair per octave. Each octave's grid is upsampled along the rows by a cheap gather;
    the columns of all octaves are then done in one stacked matrix product.
    """
    left, right = [], []
    amplitudes = amplitudes or [1.0] * len(rows)
    for row_interp, col_interp, amplitude in zip(rows, cols, amplitudes):
        grid = rng.standard_normal((row_interp.size, col_interp.size), dtype=np.float32)
        left.append(row_interp.apply(grid * np.float32(amplitude)))
        right.append(col_interp.dense)
    return _matmul(np.concatenate(left, axis=1), np.concatenate(right, axis=1).T)


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # Through torch, whose thread count single_thread() controls; NumPy's OpenBLAS keeps
    # its own pool (and starts it in every DataLoader worker).
    return (torch.from_numpy(a) @ torch.from_numpy(b)).numpy()


def _fbm(rng: np.random.Generator, height: int, width: int, cells: list[float],
         aspect: float = 1.0, gain: float = 0.55) -> np.ndarray:
    """Fractal noise with the given cell sizes (pixels, coarse first), roughly unit variance.

    aspect > 1 stretches the features horizontally.
    """
    rows = [_interp(height, c) for c in cells]
    cols = [_interp(width, c * aspect) for c in cells]
    amplitudes = [gain ** k for k in range(len(cells))]
    norm = np.float32(1.0 / np.sqrt(sum(a * a for a in amplitudes) * 0.45))
    return _field(rng, rows, cols, amplitudes) * norm


def _fbm_1d(rng: np.random.Generator, length: int, cells: list[float], gain: float = 0.5) -> np.ndarray:
    """A 1D fractal profile, roughly unit variance."""
    out = np.zeros(length, dtype=np.float32)
    total = 0.0
    for k, cell in enumerate(cells):
        interp = _interp(length, cell)
        out += interp.apply(rng.standard_normal(interp.size, dtype=np.float32) * np.float32(gain ** k))
        total += gain ** (2 * k)
    return out / np.float32(np.sqrt(total * 0.45))


# Fine grain, medium texture and sensor noise come from fixed tiles, cut at a random offset
# per image: drawing them afresh would cost more than the whole rest of the renderer.
_TILE = 1024


def _tile_side(height: int, width: int) -> int:
    """Tiles are about four images wide, at most _TILE (larger images wrap around)."""
    return int(min(_TILE, max(256, 4 * max(height, width))))


@functools.lru_cache(maxsize=8)
def _sensor_noise_tile(side: int) -> np.ndarray:
    tile = np.random.default_rng(12345).standard_normal((side, side), dtype=np.float32)
    tile.flags.writeable = False
    return tile


@functools.lru_cache(maxsize=8)
def _fine_noise_tile(cell: float, side: int) -> np.ndarray:
    tile = _fbm(np.random.default_rng(54321), side, side, [cell, cell / 2])
    tile.flags.writeable = False
    return tile


@functools.lru_cache(maxsize=8)
def _medium_noise_tile(cell: float, side: int) -> np.ndarray:
    tile = _fbm(np.random.default_rng(65432), side, side, [cell, cell / 2])
    # Relief: light from the left falls on the slopes.
    tile[:, 1:] += (tile[:, 1:] - tile[:, :-1]) * np.float32(10.0 / cell)
    tile.flags.writeable = False
    return tile


def _tile_window(rng: np.random.Generator, tile: np.ndarray, height: int, width: int) -> np.ndarray:
    """A random [.., height, width] window of a tile (wrapping around for larger images)."""
    size = tile.shape[-1]
    if height <= size and width <= size:
        top, left = (int(v) for v in rng.integers(0, (size - height + 1, size - width + 1)))
        return tile[..., top:top + height, left:left + width]
    top, left = (int(v) for v in rng.integers(0, size, 2))
    rows = (top + np.arange(height)) % size
    cols = (left + np.arange(width)) % size
    return tile[..., rows[:, None], cols[None, :]]


# ============================================================================= label map

_SCENE_KINDS = {"meadow": 0.4, "coast": 0.25, "lake": 0.2, "desert": 0.15}


def _pick(rng: np.random.Generator, odds: dict[str, float]) -> str:
    """A key of `odds`, drawn with those probabilities (rng.choice with p= is slow)."""
    draw, total = rng.random(), 0.0
    for name, p in odds.items():
        total += p
        if draw < total:
            return name
    return name

class _Layout(NamedTuple):
    label: np.ndarray          # uint8 [H, W]
    horizon: np.ndarray        # float32 [W]: horizon row per column
    building_id: np.ndarray    # int16 [W]: which building covers a column (-1: none)


def _scale(height: int, width: int) -> float:
    """Feature sizes are designed at 256x256 and scale with the image."""
    return float(np.sqrt(height * width)) / 256.0


def _draw_layout(rng: np.random.Generator, height: int, width: int) -> _Layout:
    xs = np.arange(width, dtype=np.float32)
    ys = np.arange(height, dtype=np.float32)[:, None]
    scale = _scale(height, width)
    label = np.full((height, width), SKY, dtype=np.uint8)

    horizon_mean = float(rng.uniform(0.3, 0.62)) * height
    tilt = float(rng.normal(0.0, 0.05)) * height / width
    horizon = (horizon_mean + tilt * (xs - width / 2)).astype(np.float32)
    ground_rows = max(height - horizon_mean, 1.0)
    # Work on the band of rows that can hold ground, and the band that can hold sky.
    first_ground = int(np.clip(np.floor(horizon.min()), 0, height - 1))
    last_sky = int(np.clip(np.ceil(horizon.max()), 1, height))
    ground_label = label[first_ground:]
    ground_ys = ys[first_ground:]
    below = ground_ys >= horizon[None, :]

    # Ground fields from thresholded smooth noise. Noise rows follow the ground plane
    # (row coordinate ~ 1 / distance below the horizon), so fields flatten into bands
    # towards the horizon, as in perspective.
    kind = _pick(rng, _SCENE_KINDS)
    near_cell = float(rng.uniform(90, 170)) * scale                  # feature size at the bottom edge
    offset = 0.25 * ground_rows                                      # limits the squeeze at the horizon
    depth_k = (ground_rows + offset) ** 2 / near_cell
    row_coord = depth_k / (np.maximum(ground_ys[:, 0] - horizon_mean, 0.0) + offset)
    row_coord -= row_coord.min()
    cell_x = float(rng.uniform(110, 220)) * scale
    ground = _field(rng, [_Interp(row_coord), _Interp(row_coord * 3.0)],
                    [_interp(width, cell_x), _interp(width, cell_x / 3.0)], [1.0, 0.3])
    ground *= np.float32(1.0 / np.sqrt(0.45 * (1 + 0.3 ** 2)))

    if kind == "desert":
        field = np.where(ground > rng.uniform(1.0, 1.8), ROCK, SAND).astype(np.uint8)
    else:
        field = np.where(ground > rng.uniform(0.9, 2.0), SAND, GRASS).astype(np.uint8)
    if kind in ("meadow", "lake"):
        water_level = rng.uniform(-2.2, -1.2) if kind == "meadow" else rng.uniform(-0.5, 0.3)
        np.putmask(field, ground < water_level + rng.uniform(0.08, 0.25), SAND)  # shores
        np.putmask(field, ground < water_level, WATER)
    elif kind == "coast":
        # Sea from the horizon down to a fractal shoreline, then a beach.
        bays = _fbm_1d(rng, width, [rng.uniform(100, 200) * scale, 40 * scale, 12 * scale], gain=0.4)
        shore = horizon + (rng.uniform(0.15, 0.6) + 0.05 * bays) * ground_rows
        beach_width = rng.uniform(0.06, 0.3) * ground_rows
        beach = shore + beach_width * (1 + 0.3 * _fbm_1d(rng, width, [60 * scale, 15 * scale]))
        np.putmask(field, ground_ys < beach[None, :], SAND)
        np.putmask(field, ground_ys < shore[None, :], WATER)
    np.putmask(ground_label, below, field)

    # Scattered rocks where a finer noise peaks.
    if rng.random() < 0.4:
        rocks = _fbm(rng, height - first_ground, width, [16 * scale, 7 * scale]) > rng.uniform(1.8, 2.6)
        np.putmask(ground_label, rocks & below & (ground_label != WATER), ROCK)

    # A road in perspective, from a vanishing point on the horizon to the bottom edge.
    road = None
    if kind != "coast" and rng.random() < 0.35:
        vanish_x = rng.uniform(0.3, 0.7) * width
        bottom_x = vanish_x + rng.normal(0.0, 0.35) * width
        half_width = rng.uniform(0.12, 0.35) * width
        t = np.clip((ground_ys - horizon_mean) / ground_rows, 0.0, None)
        road = (np.abs(xs[None, :] - (vanish_x + (bottom_x - vanish_x) * t)) < half_width * t + 0.5) & below
        np.putmask(ground_label, road, ROAD)

    sky_label = label[:last_sky]
    sky_ys = ys[:last_sky]
    above = sky_ys < horizon[None, :]

    # Mountains: a fractal ridge above the horizon.
    mountain = None
    if rng.random() < 0.55:
        coarse = float(rng.uniform(110, 260)) * scale
        profile = _fbm_1d(rng, width, [coarse, coarse / 3, coarse / 9, coarse / 27], gain=0.42)
        peak = rng.uniform(0.12, 0.7) * horizon_mean
        ridge = horizon - peak * np.clip(0.55 + 0.4 * profile, 0.0, None)
        mountain = (sky_ys >= ridge[None, :]) & above

    # Clouds: stretched noise above a random threshold, thinning towards the horizon.
    if rng.random() < 0.75:
        cloud_noise = _fbm(rng, last_sky, width, [60 * scale, 24 * scale, 9 * scale], aspect=2.2)
        cloud_noise -= sky_ys * np.float32(1.3 / max(horizon_mean, 1.0))
        clouds = (cloud_noise > rng.uniform(-0.1, 1.4)) & above
        if mountain is not None:
            clouds &= ~mountain
        np.putmask(sky_label, clouds, CLOUD)
    if mountain is not None:
        np.putmask(sky_label, mountain, MOUNTAIN)

    # Buildings standing on the horizon.
    building_id = np.full(width, -1, dtype=np.int16)
    if rng.random() < 0.3:
        count = int(rng.integers(1, 8))
        centre = rng.uniform(0.15, 0.85) * width
        lefts = centre + rng.normal(0.0, 0.2, count) * width
        widths = rng.uniform(0.04, 0.18, count) * width
        heights = rng.uniform(0.1, 0.7, count) * horizon_mean
        covers = (xs[None, :] >= lefts[:, None]) & (xs[None, :] < (lefts + widths)[:, None])
        tops = np.where(covers, horizon[None, :] - heights[:, None], np.inf)
        building_top = tops.min(axis=0)
        building_id = np.where(np.isfinite(building_top), tops.argmin(axis=0), -1).astype(np.int16)
        base_row = horizon + rng.uniform(0.01, 0.05) * ground_rows
        np.putmask(label, (ys >= building_top[None, :]) & (ys < base_row[None, :]), BUILDING)

    # A tree line along the horizon, in patches, and tree clusters in the foreground.
    if rng.random() < 0.55:
        patches = _fbm_1d(rng, width, [rng.uniform(40, 120) * scale]) > rng.uniform(-0.8, 0.6)
        crowns = np.abs(_fbm_1d(rng, width, [8 * scale, 3.5 * scale]))
        top = horizon - (rng.uniform(0.03, 0.14) * horizon_mean) * (0.6 + 0.5 * crowns)
        bottom = horizon + rng.uniform(0.01, 0.04) * ground_rows
        band = slice(int(max(np.floor(top.min()), 0)), int(min(np.ceil(bottom.max()) + 1, height)))
        treeline = (ys[band] >= top[None, :]) & (ys[band] < bottom[None, :]) & patches[None, :]
        np.putmask(label[band], treeline & (label[band] != BUILDING), TREE)
    if kind != "desert" and rng.random() < 0.4:
        blobs = _fbm(rng, height - first_ground, width, [34 * scale, 12 * scale], aspect=0.8)
        # Clusters sit in the foreground: the threshold falls with distance below the horizon.
        blobs += np.float32(2.2) * np.clip((ground_ys - horizon_mean) / ground_rows, 0.0, 1.0)
        trees = (blobs > rng.uniform(2.4, 3.4)) & below & (ground_label != WATER)
        if road is not None:
            trees &= ~road
        np.putmask(ground_label, trees, TREE)

    return _Layout(label, horizon, building_id)


def _instances(layout: _Layout) -> np.ndarray:
    """Instance ids in the Cityscapes convention: the class id for stuff, class*1000+k for buildings."""
    instance = layout.label.astype(np.int32)
    ids = np.broadcast_to(BUILDING * 1000 + np.maximum(layout.building_id, 0).astype(np.int32)[None, :],
                          instance.shape)
    np.copyto(instance, ids, where=layout.label == BUILDING)
    return instance


# ============================================================================= rendering

# Base colours per class (display RGB in 0..1).
_BASE_COLOURS = np.array([
    (0.0, 0.0, 0.0),       # sky (its gradient is added separately)
    (0.93, 0.93, 0.95),    # cloud
    (0.44, 0.42, 0.42),    # mountain
    (0.06, 0.17, 0.24),    # water (plus the sky's reflection)
    (0.84, 0.75, 0.56),    # sand
    (0.33, 0.50, 0.17),    # grass
    (0.12, 0.26, 0.10),    # tree
    (0.47, 0.46, 0.44),    # rock
    (0.66, 0.58, 0.50),    # building (one of _BUILDING_COLOURS)
    (0.30, 0.30, 0.32),    # road
], dtype=np.float32)
_BUILDING_COLOURS = np.array([(0.66, 0.58, 0.50), (0.60, 0.60, 0.62), (0.58, 0.36, 0.28), (0.85, 0.82, 0.74)],
                             dtype=np.float32)
# Texture per class: amplitudes of the medium (with relief) and fine value-noise bands.
_TEXTURE = np.array([
    # medium fine
    (0.00, 0.00),   # sky (its gradient is added after shading)
    (0.08, 0.03),   # cloud
    (0.14, 0.06),   # mountain
    (0.00, 0.00),   # water (ripples instead)
    (0.03, 0.05),   # sand
    (0.07, 0.10),   # grass
    (0.22, 0.18),   # tree
    (0.18, 0.12),   # rock
    (0.01, 0.03),   # building
    (0.01, 0.07),   # road
], dtype=np.float32).T.copy()
# Soft shading from the coarse band, the same for every class.
_SOFT_SHADING = 0.08
# Clouds are lit by the sky's colour.
_CLOUD_SKY_LIGHT = 0.3
# Haze at the horizon covers everything but the sky, which is haze-coloured already;
# mountains are distant, so they take this much of the horizon colour on top.
_HAZE = 0.4
_MOUNTAIN_HAZE = 0.3

# Times of day: zenith colour, horizon colour, sunlight tint.
_STYLES = {
    "day": np.array([(0.22, 0.45, 0.85), (0.70, 0.82, 0.95), (1.00, 1.00, 0.97)], dtype=np.float32),
    "haze": np.array([(0.40, 0.55, 0.80), (0.82, 0.86, 0.90), (1.00, 0.98, 0.95)], dtype=np.float32),
    "golden": np.array([(0.25, 0.40, 0.70), (0.98, 0.78, 0.50), (1.08, 0.92, 0.74)], dtype=np.float32),
    "dusk": np.array([(0.15, 0.18, 0.40), (0.90, 0.50, 0.40), (0.80, 0.64, 0.62)], dtype=np.float32),
    "overcast": np.array([(0.58, 0.61, 0.66), (0.78, 0.80, 0.82), (0.85, 0.87, 0.90)], dtype=np.float32),
}
_STYLE_ODDS = {"day": 0.45, "haze": 0.15, "golden": 0.15, "dusk": 0.1, "overcast": 0.15}


def _render(rng: np.random.Generator, layout: _Layout, height: int, width: int) -> np.ndarray:
    """The photo (uint8 [H, W, 3]) of a label map, under a random global style."""
    label = layout.label
    scale = _scale(height, width)
    zenith, horizon_colour, sunlight = _STYLES[_pick(rng, _STYLE_ODDS)]
    tint = (1.0 + rng.normal(0.0, 0.04, 3)).astype(np.float32)
    zenith, horizon_colour = zenith * tint, horizon_colour * tint
    light = sunlight * tint * np.float32(rng.uniform(0.85, 1.12))

    colours = _BASE_COLOURS * (1.0 + rng.normal(0.0, 0.04, (len(CLASS_NAMES), 3))).astype(np.float32)
    colours *= (1.0 + rng.normal(0.0, 0.08, (len(CLASS_NAMES), 1))).astype(np.float32)
    dryness = np.float32(rng.uniform(0.0, 0.5))                       # from lush to dry grass
    colours[GRASS] = colours[GRASS] * (1 - dryness) + np.array([0.55, 0.53, 0.28], np.float32) * dryness
    colours[BUILDING] = _BUILDING_COLOURS[rng.integers(len(_BUILDING_COLOURS))]
    colours *= light
    colours[CLOUD] = np.minimum(colours[CLOUD], 1.0) * (0.78 + 0.22 * light / light.max())
    colours[MOUNTAIN] += (horizon_colour - colours[MOUNTAIN]) * np.float32(_MOUNTAIN_HAZE)
    # Work in units of 255/16 (16: the gain of the unnormalised blur at the end), so the
    # last steps need no rescaling pass.
    unit = np.float32(255.0 / 16.0)
    colours = (colours * unit).T.copy()                               # [3, classes]
    zenith, horizon_colour = zenith * unit, horizon_colour * unit

    shade = _shading(rng, label, height, width, scale)
    image = np.empty((3, height, width), dtype=np.float32)
    for c in range(3):
        np.take(colours[c], label, out=image[c], mode="clip")
        image[c] *= shade

    rows = np.arange(height, dtype=np.float32)
    horizon_row = float(layout.horizon.mean())
    _add_sky(image, label, rows, layout.horizon, zenith, horizon_colour)
    _add_water(rng, image, label, layout.horizon, rows, horizon_row, zenith, horizon_colour, scale)
    if layout.building_id.max() >= 0:
        _add_windows(rng, image, label, rows, scale)

    # Haze: the colour of the horizon, strongest near the horizon (mountains took more above).
    falloff = np.float32(rng.uniform(0.3, 1.0)) / (np.abs(rows - horizon_row) * np.float32(4.0 / height) + 1.0) ** 2
    haze = (label != SKY) * (falloff[:, None] * np.float32(_HAZE))
    keep = 1.0 - haze
    for c in range(3):
        image[c] *= keep
        image[c] += haze * horizon_colour[c]

    # Sensor noise (mostly in luminance); then a 3x3 binomial blur, which anti-aliases
    # label boundaries and makes the noise slightly correlated, as after demosaicing.
    noise = _tile_window(rng, _sensor_noise_tile(_tile_side(height, width)), height, width)
    noise = noise * (unit * np.float32(rng.uniform(0.006, 0.018)))
    noise += np.float32(0.5 / 16.0)                                   # rounds to nearest after the blur
    for c in range(3):
        image[c] += noise
    _binomial_blur_x16(image)
    np.clip(image, 0.0, 255.0, out=image)
    return np.dstack(image.astype(np.uint8))


def _shading(rng: np.random.Generator, label: np.ndarray, height: int, width: int, scale: float) -> np.ndarray:
    """Per-pixel brightness from class-specific texture bands, with relief on the medium band."""
    coarse = _fbm(rng, height, width, [70 * scale, 35 * scale])
    side = _tile_side(height, width)
    # Finer grain would only alias: small images keep grains of at least 2 and 4 pixels.
    medium = _tile_window(rng, _medium_noise_tile(max(round(14 * scale, 1), 4.0), side), height, width)
    fine = _tile_window(rng, _fine_noise_tile(max(round(3.5 * scale, 2), 2.0), side), height, width)
    shade = coarse * np.float32(_SOFT_SHADING)
    shade += np.take(_TEXTURE[0], label, mode="clip") * medium
    shade += np.take(_TEXTURE[1], label, mode="clip") * fine
    shade += 1.0
    return shade


def _add_sky(image: np.ndarray, label: np.ndarray, rows: np.ndarray, horizon: np.ndarray,
             zenith: np.ndarray, horizon_colour: np.ndarray) -> None:
    """A vertical gradient from the horizon colour up to the zenith colour; clouds take some of it."""
    horizon_row = float(horizon.mean())
    last = int(np.clip(np.ceil(horizon.max()) + 1, 1, image.shape[1]))
    sky_label = label[:last]
    weight = (sky_label == SKY).astype(np.float32)
    weight += (sky_label == CLOUD) * np.float32(_CLOUD_SKY_LIGHT)
    t = np.sqrt(np.clip((horizon_row - rows[:last]) / max(horizon_row, 1.0), 0.0, 1.0))[:, None]
    for c in range(3):
        image[c, :last] += weight * (horizon_colour[c] + t * (zenith[c] - horizon_colour[c]))


def _add_water(rng: np.random.Generator, image: np.ndarray, label: np.ndarray, horizon: np.ndarray,
               rows: np.ndarray, horizon_row: float, zenith: np.ndarray, horizon_colour: np.ndarray,
               scale: float) -> None:
    """The sky mirrored in the water, perturbed by ripples that flatten towards the horizon."""
    first = int(np.clip(np.floor(horizon.min()), 0, image.shape[1] - 1))
    rows_with_water = np.flatnonzero((label[first:] == WATER).any(axis=1))
    if rows_with_water.size == 0:
        return
    band = slice(first + int(rows_with_water[0]), first + int(rows_with_water[-1]) + 1)
    is_water = label[band] == WATER
    below = np.maximum(rows[band] - horizon_row, 0.0)
    ripple_rows = _Interp(30.0 * scale / (below + 5.0 * scale))
    ripples = _field(rng, [ripple_rows], [_interp(image.shape[2], 28 * scale)])
    ground_rows = max(image.shape[1] - horizon_row, 1.0)
    depth = np.clip((rows[band, None] - horizon[None, :]) * np.float32(1.0 / ground_rows), 0.0, 1.0)
    mirror = np.sqrt(np.clip(depth * 0.8 + 0.08 * ripples, 0.0, 1.0))
    fresnel = (0.75 - 0.45 * depth) * is_water
    keep = (1.0 - fresnel) * (1.0 + 0.12 * ripples * is_water)
    fresnel *= 1.0 + 0.12 * ripples
    for c in range(3):
        channel = image[c, band]
        channel *= keep
        channel += fresnel * (horizon_colour[c] + mirror * (zenith[c] - horizon_colour[c]))


def _add_windows(rng: np.random.Generator, image: np.ndarray, label: np.ndarray, rows: np.ndarray,
                 scale: float) -> None:
    """Rows of darker windows on buildings."""
    period_x = rng.uniform(6, 14) * scale
    period_y = period_x * rng.uniform(1.0, 1.6)
    xs = np.arange(image.shape[2], dtype=np.float32)
    window_x = ((xs / period_x) % 1.0) < 0.5
    window_y = ((rows / period_y) % 1.0) < 0.55
    windows = window_y[:, None] & window_x[None, :] & (label == BUILDING)
    factor = 1.0 - windows * np.float32(rng.uniform(0.4, 0.65))
    image *= factor[None]


def _binomial_blur_x16(image: np.ndarray) -> None:
    """In place: 16 times a separable [1, 2, 1] / 4 blur of a [C, H, W] image (the renderer
    works in units of 1/16 so that no division is needed).

    Edge rows and columns are only scaled. The horizontal pass runs on the flattened image,
    which is several times faster than on 2D slices; it then repairs the first and last
    columns, which the flat pass mixed with the neighbouring rows.
    """
    pairs = np.empty_like(image)
    np.add(image[:, :-1], image[:, 1:], out=pairs[:, :-1])
    np.add(pairs[:, :-2], pairs[:, 1:-1], out=image[:, 1:-1])
    image[:, 0] *= 4.0
    image[:, -1] *= 4.0
    first, last = image[:, :, 0] * 4.0, image[:, :, -1] * 4.0
    flat, flat_pairs = image.reshape(-1), pairs.reshape(-1)
    np.add(flat[:-1], flat[1:], out=flat_pairs[:-1])
    np.add(flat_pairs[:-2], flat_pairs[1:-1], out=flat[1:-1])
    image[:, :, 0] = first
    image[:, :, -1] = last


# ============================================================================= writing to disk

def write_scenes(out_dir: Union[str, Path], count: int, *, size: int = 256, seed: int = DATASET_SEED, split: str = "train",
                 image_format: str = "png", overwrite: bool = False, progress: bool = True) -> int:
    """Write `count` scenes as OUT/images/NNNNN.<format> and OUT/labels/NNNNN.png, readable by the
    `folder` format (label_nc 10). Labels are palette PNGs: the pixel values are the class ids.

    Returns the number of pairs written.
    """
    if image_format not in ("png", "jpg"):
        raise DataError(f"image format must be png or jpg, got {image_format!r}")
    if split not in SPLIT_STREAMS:
        raise DataError(f"--split must be one of {', '.join(SPLIT_STREAMS)}, got {split!r}")
    if size < 8:
        raise DataError(f"--size must be at least 8, got {size}")
    if count < 1:
        raise DataError(f"--n must be at least 1, got {count}")
    out = check_output_folder(Path(out_dir), what="dataset folder (--out)")   # before the first file
    image_dir, label_dir = out / "images", out / "labels"
    existing = [p for d in (image_dir, label_dir) if d.is_dir() for p in d.iterdir() if not p.name.startswith(".")]
    if existing and not overwrite:
        raise DataError(f"{out}: images/ or labels/ already hold {len(existing)} files; choose an empty --out "
                        f"or pass --overwrite")
    for path in existing:
        if path.is_file() and path.stem.isdigit():
            path.unlink()
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:len(SYNTHETIC_PALETTE)] = SYNTHETIC_PALETTE
    with single_thread():
        for index in tqdm(range(count), desc=f"synth {split}", unit="pair", disable=not progress):
            _write_scene(generate_scene(seed, split, index, (size, size)), f"{index:05d}", image_dir, label_dir,
                         image_format, palette)
    (out / "label_names.txt").write_text("".join(f"{i} {name}\n" for i, name in enumerate(CLASS_NAMES)))
    return count


def _write_scene(scene: Scene, name: str, image_dir: Path, label_dir: Path, image_format: str,
                 palette: np.ndarray) -> None:
    if image_format == "png":
        Image.fromarray(scene.image).save(image_dir / f"{name}.png", compress_level=1)
    else:
        Image.fromarray(scene.image).save(image_dir / f"{name}.jpg", quality=95)
    label = Image.fromarray(scene.label)
    label.putpalette(palette.ravel().tolist())                       # "L" -> "P", values unchanged
    label.save(label_dir / f"{name}.png")
