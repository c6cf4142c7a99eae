"""Procedural videos with exact panoptic ground truth, for tests, debug recipes and controlled ablations.

A video is planned first (:func:`plan_video`, a small picklable description) and then rendered
(:func:`render_frame`), so tests can look at *why* a frame looks the way it does.

Content of one video (everything a GvSeg component has to cope with):
  * **stuff**: the canvas is split into a few regions (a warped Voronoi partition) of distinct stuff
    classes; each class has its own procedural texture (stripes / checks / dots / quantised waves) in its
    own colours, identical across videos so that it can be learned. The regions and their textures pan
    slowly with a virtual camera. Region borders are 1 px of unlabelled (id 0) pixels, like real
    annotations. Formats without stuff classes get a grey textured background with id 0.
  * **things**: instances of several classes. A class fixes the shape family (ellipse, rectangle, triangle,
    star, diamond, cross, hexagon, ring) and the texture; an instance jitters colours and texture phase.
    Instances move (linear + wobble), scale, rotate and occlude each other in painter's order. At least
    one instance enters through a border and one leaves through a border when the video has >= 3 frames.
  * ``lookalike=True``: one thing class gets 2-3 instances with *exactly* the same texture, colours and
    shape family (different aspect ratios) on paths that cross mid-video: appearance alone cannot keep
    identities, only shape and position can (what SPA matching is for, Eq. 5-6).

Output: :class:`gvseg.structures.SyntheticVideo`. Segments never overlap; segment ids are 1..S for stuff
(one per stuff class) and S+1.. for things (one per instance, stable over the video). A thing that is fully
occluded or off-screen in a frame simply has no pixels there. Everything is deterministic given the seed;
drawing is vectorised numpy on a meshgrid (no per-pixel Python loops).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gvseg.structures import Category, SyntheticVideo

SHAPES = ("ellipse", "rectangle", "triangle", "star", "diamond", "cross", "hexagon", "ring")
TEXTURES = ("stripes", "checks", "dots", "waves")


# ------------------------------------------------------------------------------------------ appearance


@dataclass(frozen=True)
class Texture:
    """A two- or three-colour procedural pattern; evaluated in pixel offsets (dx, dy) from an anchor."""

    kind: str  # one of TEXTURES
    palette: tuple[tuple[int, int, int], ...]  # RGB colours the pattern picks from
    period: float  # pixels
    angle: float  # radians, orientation of stripes / waves
    phase: tuple[float, float] = (0.0, 0.0)  # pixel offset added to (dx, dy)

    def jittered(self, rng: np.random.Generator, amount: int = 40) -> Texture:
        """Same pattern, colours shifted by one random RGB offset and a random phase (per instance)."""
        shift = rng.integers(-amount, amount + 1, size=3)
        pal = tuple(tuple(int(v) for v in np.clip(np.array(c) + shift, 0, 255)) for c in self.palette)
        return Texture(self.kind, pal, self.period, self.angle,
                       (float(rng.uniform(0, self.period)), float(rng.uniform(0, self.period))))


def class_texture(category: Category, thing: bool) -> Texture:
    """The texture of a class: a function of its id and name only, so it is the same in every video."""
    rng = np.random.default_rng(zlib.crc32(f"{category.id}:{category.name}".encode()))
    kind = TEXTURES[int(rng.integers(len(TEXTURES)))]
    base = np.array(category.color if category.color is not None else rng.integers(40, 216, size=3), float)
    other = np.clip(base + rng.choice([-1, 1], size=3) * rng.integers(50, 90, size=3), 0, 255)
    palette = [base, other]
    if kind == "waves":
        palette.append((base + other) / 2 + rng.integers(-30, 31, size=3))
    pal = tuple(tuple(int(v) for v in np.clip(c, 0, 255)) for c in palette)
    period = float(rng.uniform(3.0, 7.0) if thing else rng.uniform(5.0, 14.0))
    return Texture(kind, pal, period, float(rng.uniform(0, np.pi)))


def render_texture(tex: Texture, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """[N] offsets -> [N, 3] uint8 colours (vectorised)."""
    x, y = dx + tex.phase[0], dy + tex.phase[1]
    c, s = np.cos(tex.angle), np.sin(tex.angle)
    u, v = c * x + s * y, -s * x + c * y  # pattern-aligned coordinates
    p = tex.period
    if tex.kind == "stripes":
        idx = np.floor(u / p).astype(np.int64) % 2
    elif tex.kind == "checks":
        idx = (np.floor(u / p) + np.floor(v / p)).astype(np.int64) % 2
    elif tex.kind == "dots":
        fu, fv = np.mod(u, 2 * p) - p, np.mod(v, 2 * p) - p
        idx = (fu * fu + fv * fv < (0.6 * p) ** 2).astype(np.int64)
    else:  # waves: sum of sinusoids quantised to the palette (a deterministic "noise")
        w = np.sin(u / p) + np.sin(v / (1.7 * p) + 1.3) + np.sin((u + v) / (2.3 * p))
        idx = np.clip(((w + 3.0) / 6.0 * len(tex.palette)).astype(np.int64), 0, len(tex.palette) - 1)
    return np.asarray(tex.palette, np.uint8)[idx]


# ---------------------------------------------------------------------------------------------- shapes


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test in the unit frame of a shape (u, v in [-1, 1] span the object's extent)."""
    if shape == "ellipse":
        return u * u + v * v <= 1.0
    if shape == "rectangle":
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    if shape == "triangle":  # apex at (0, -1), base at v = 1
        return (v <= 1.0) & (v >= 2.0 * np.abs(u) - 1.0)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.35) & (av <= 1.0)) | ((au <= 1.0) & (av <= 0.35))
    if shape == "hexagon":
        au, av = np.abs(u), np.abs(v)
        return np.maximum(au * 0.866 + av * 0.5, av) <= 0.866
    r = np.sqrt(u * u + v * v)
    if shape == "star":  # five points
        theta = np.arctan2(v, u)
        return r <= 0.55 + 0.45 * np.cos(5.0 * theta)
    if shape == "ring":
        return (r <= 1.0) & (r >= 0.5)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


# ------------------------------------------------------------------------------------------------ plan


@dataclass
class ThingTrack:
    """One thing instance over the whole video; frame t's pose is a closed-form function of t."""

    segment_id: int
    category_id: int
    shape: str
    texture: Texture
    start: tuple[float, float]  # centre (x, y) at t = 0, pixels (may be off-screen)
    velocity: tuple[float, float]  # pixels / frame
    radius: tuple[float, float]  # half extents (rx, ry) at t = 0
    growth: float  # radius(t) = radius * (1 + growth * t / (T - 1))
    angle: float  # rotation at t = 0
    spin: float  # radians / frame
    wobble: float  # amplitude (pixels) of a sinusoidal deviation across the path
    first: int = 0  # frames outside [first, last] do not show the instance
    last: int = 1 << 30
    z: float = 0.0  # painter's order: larger z is drawn later (on top)
    role: str = "plain"  # plain | enter | leave | lookalike

    def pose(self, t: int, frames: int) -> tuple[float, float, float, float, float]:
        """(cx, cy, rx, ry, angle) at frame t."""
        vx, vy = self.velocity
        speed = max(np.hypot(vx, vy), 1e-6)
        nx, ny = -vy / speed, vx / speed  # unit normal to the path, for the wobble
        w = self.wobble * np.sin(0.9 * t)
        cx = self.start[0] + vx * t + nx * w
        cy = self.start[1] + vy * t + ny * w
        g = 1.0 + self.growth * t / max(frames - 1, 1)
        return cx, cy, self.radius[0] * g, self.radius[1] * g, self.angle + self.spin * t


@dataclass
class StuffLayout:
    """Warped Voronoi regions; ``classes[k]`` fills cell k (segment id k + 1)."""

    category_ids: list[int]
    textures: list[Texture]
    seeds: np.ndarray  # [S, 2] cell centres (x, y) at t = 0
    pan: tuple[float, float]  # camera pan, pixels / frame (seeds and textures move together)
    warp: tuple[float, float, float]  # amplitude, frequency, phase of the boundary warp


@dataclass
class VideoPlan:
    video_id: str
    frames: int
    height: int
    width: int
    stuff: StuffLayout | None
    background: Texture  # used where there is no stuff class
    things: list[ThingTrack] = field(default_factory=list)
    segment_category: dict[int, int] = field(default_factory=dict)


def plan_video(video_id: str, categories: list[Category], *, frames: int, height: int, width: int,
               seed: int, lookalike: bool = False) -> VideoPlan:
    """Draw everything random about one video (classes, layout, trajectories) from ``seed``."""
    if frames < 1 or height < 8 or width < 8:
        raise ValueError(f"{video_id}: need frames >= 1 and a canvas of at least 8x8, got {frames}x{height}x{width}")
    rng = np.random.default_rng(seed)
    things_c = [c for c in categories if c.isthing]
    stuff_c = [c for c in categories if not c.isthing]
    seg: dict[int, int] = {}

    # --- stuff: 2-4 distinct classes, one Voronoi cell each
    stuff = None
    if stuff_c:
        n = int(rng.integers(min(2, len(stuff_c)), min(4, len(stuff_c)) + 1))
        chosen = [stuff_c[i] for i in rng.choice(len(stuff_c), size=n, replace=False)]
        seeds = rng.uniform([0, 0], [width, height], size=(n, 2))
        pan = tuple(float(v) for v in rng.uniform(-0.6, 0.6, size=2))
        warp = (float(rng.uniform(2, 6)), float(rng.uniform(0.03, 0.12)), float(rng.uniform(0, 2 * np.pi)))
        stuff = StuffLayout([c.id for c in chosen], [class_texture(c, False) for c in chosen], seeds, pan, warp)
        for k, c in enumerate(chosen):
            seg[k + 1] = c.id
    background = Texture("waves", ((110, 110, 110), (130, 130, 130), (95, 95, 95)), 9.0, 0.4)

    # --- things
    tracks: list[ThingTrack] = []
    next_id = len(seg) + 1
    size = min(height, width)
    if things_c:
        n_classes = int(rng.integers(1, min(3, len(things_c)) + 1))
        cls_idx = rng.choice(len(things_c), size=n_classes, replace=False)
        pool = [things_c[i] for i in cls_idx]

        def shape_of(c: Category) -> str:  # the class fixes the shape family
            return SHAPES[things_c.index(c) % len(SHAPES)]

        def new_track(c: Category, role: str, tex: Texture | None = None) -> ThingTrack:
            nonlocal next_id
            r = size * rng.uniform(0.08, 0.16)
            aspect = rng.uniform(0.7, 1.4)
            t = ThingTrack(
                segment_id=next_id, category_id=c.id, shape=shape_of(c),
                texture=tex if tex is not None else class_texture(c, True).jittered(rng),
                start=(float(rng.uniform(0.15, 0.85) * width), float(rng.uniform(0.15, 0.85) * height)),
                velocity=tuple(float(v) for v in rng.uniform(-1, 1, size=2) * size * 0.04),
                radius=(float(r * aspect), float(r / aspect)), growth=float(rng.uniform(-0.3, 0.5)),
                angle=float(rng.uniform(0, 2 * np.pi)), spin=float(rng.uniform(-0.08, 0.08)),
                wobble=float(rng.uniform(0, 0.03) * size), z=float(rng.uniform(0, 1)), role=role,
            )
            seg[next_id] = c.id
            next_id += 1
            return t

        for _ in range(int(rng.integers(2, 5))):
            tracks.append(new_track(pool[int(rng.integers(len(pool)))], "plain"))
        # some instances appear / vanish mid-video (e.g. dis-occlusion in the real world)
        for tr in tracks:
            if frames >= 4 and rng.uniform() < 0.3:
                tr.first = int(rng.integers(1, frames // 2 + 1))
            elif frames >= 4 and rng.uniform() < 0.3:
                tr.last = int(rng.integers(frames // 2, frames - 1))
        if frames >= 3:
            # one instance enters through the left/right border, one leaves through it; drawn on top so that
            # the enter/leave event is visible in the id maps whatever else happens.
            span = max(frames - 1, 1)
            for role in ("enter", "leave"):
                tr = new_track(pool[int(rng.integers(len(pool)))], role)
                rx = max(tr.radius) * (1 + max(tr.growth, 0)) * 1.5 + tr.wobble + 2  # fully outside
                side = int(rng.integers(2))
                outside = -rx if side == 0 else width + rx
                inside = width * (0.35 if side == 0 else 0.65)
                y = float(rng.uniform(0.25, 0.75) * height)
                if role == "enter":  # off-screen at t=0, inside by mid-video
                    x0, x1, t1 = outside, inside, span / 2
                else:  # inside at t=0, off-screen at the last frame
                    x0, x1, t1 = inside, outside, span
                tr.start, tr.velocity = (x0, y), ((x1 - x0) / t1, 0.0)
                tr.wobble, tr.z = 0.0, 2.0 + len(tracks)
                tracks.append(tr)
        if lookalike:
            # 2-3 identical-looking instances (same texture object, same shape family) crossing at the centre
            # mid-video; only shape (aspect) and position differ (Eq. 3-4).
            c = pool[0]
            tex = class_texture(c, True)
            k = int(rng.integers(2, 4))
            centre = np.array([width / 2, height / 2])
            base = rng.uniform(0, np.pi)
            for j in range(k):
                tr = new_track(c, "lookalike", tex)
                phi = base + np.pi * j / k
                d = np.array([np.cos(phi), np.sin(phi)]) * size * 0.35 * (1 if j % 2 == 0 else -1)
                mid = (frames - 1) / 2
                vel = -d / max(mid, 1)
                tr.start = tuple(float(v) for v in centre + d)
                tr.velocity = tuple(float(v) for v in vel)
                r = size * 0.11
                aspect = (0.65, 1.0, 1.5)[j]
                tr.radius = (r * aspect, r / aspect)
                tr.growth, tr.spin, tr.wobble, tr.angle = 0.0, 0.0, 0.0, 0.0
                tr.z = 1.0 + j * 0.1
                tracks.append(tr)
            for tr in tracks:  # every instance of that class looks the same, not only the crossing ones
                if tr.category_id == c.id:
                    tr.texture = tex
    return VideoPlan(video_id, frames, height, width, stuff, background, tracks, seg)


# ---------------------------------------------------------------------------------------------- render


def render_frame(plan: VideoPlan, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame t of a plan -> (image [H, W, 3] uint8 RGB, id map [H, W] int64)."""
    h, w = plan.height, plan.width
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    image = np.empty((h, w, 3), np.uint8)
    ids = np.zeros((h, w), np.int64)

    st = plan.stuff
    if st is None:
        image[:] = render_texture(plan.background, xx.ravel(), yy.ravel()).reshape(h, w, 3)
    else:
        ox, oy = st.pan[0] * t, st.pan[1] * t  # camera pan moves regions and their textures together
        amp, freq, ph = st.warp
        wx = xx - ox + amp * np.sin(freq * (yy - oy) + ph)  # warped boundaries look less like polygons
        wy = yy - oy + amp * np.sin(freq * (xx - ox) + 1.7 * ph)
        d = (wx[None] - st.seeds[:, 0, None, None]) ** 2 + (wy[None] - st.seeds[:, 1, None, None]) ** 2
        d = np.sqrt(d)  # [S, H, W]
        cell = np.argmin(d, axis=0)
        for k, tex in enumerate(st.textures):
            m = cell == k
            image[m] = render_texture(tex, xx[m] - ox, yy[m] - oy)
            ids[m] = k + 1
        if len(st.textures) > 1:  # 1 px unlabelled border between regions, like real annotations
            two = np.partition(d, 1, axis=0)[:2]
            ids[two[1] - two[0] < 1.0] = 0

    for tr in sorted(plan.things, key=lambda a: a.z):  # painter's order
        if not (tr.first <= t <= tr.last):
            continue
        cx, cy, rx, ry, ang = tr.pose(t, plan.frames)
        ext = max(rx, ry) * 1.5
        x0, x1 = int(max(np.floor(cx - ext), 0)), int(min(np.ceil(cx + ext) + 1, w))
        y0, y1 = int(max(np.floor(cy - ext), 0)), int(min(np.ceil(cy + ext) + 1, h))
        if x0 >= x1 or y0 >= y1:
            continue  # off-screen
        dx, dy = xx[y0:y1, x0:x1] - cx, yy[y0:y1, x0:x1] - cy
        c, s = np.cos(ang), np.sin(ang)
        u, v = (c * dx + s * dy) / max(rx, 1e-3), (-s * dx + c * dy) / max(ry, 1e-3)
        m = shape_mask(tr.shape, u, v)
        if not m.any():
            continue
        # the texture is anchored to the object (object-local, rotating with it), so it moves with it
        lx, ly = (c * dx + s * dy)[m], (-s * dx + c * dy)[m]
        image[y0:y1, x0:x1][m] = render_texture(tr.texture, lx, ly)
        ids[y0:y1, x0:x1][m] = tr.segment_id
    return image, ids


def generate_video(video_id: str, categories: list[Category], *, frames: int, height: int, width: int,
                   seed: int, lookalike: bool = False) -> SyntheticVideo:
    """Plan and render one video (see the module docstring)."""
    plan = plan_video(video_id, categories, frames=frames, height=height, width=width, seed=seed,
                      lookalike=lookalike)
    out = [render_frame(plan, t) for t in range(frames)]
    return SyntheticVideo(video_id=video_id, frames=[o[0] for o in out], id_maps=[o[1] for o in out],
                          segment_category=dict(plan.segment_category), categories=list(categories))


def select_categories(categories: list[Category], thing_classes: int = 0, stuff_classes: int = 0) -> list[Category]:
    """The first ``thing_classes`` things and ``stuff_classes`` stuff of a format (0 = all of them), so a small
    synthetic set covers a few classes often instead of 124 classes once."""
    things = [c for c in categories if c.isthing]
    stuff = [c for c in categories if not c.isthing]
    if thing_classes > 0:
        things = things[:thing_classes]
    if stuff_classes > 0:
        stuff = stuff[:stuff_classes]
    keep = {c.id for c in things} | {c.id for c in stuff}
    return [c for c in categories if c.id in keep]


def synthetic_label_space(format: str, thing_classes: int = 0, stuff_classes: int = 0) -> tuple[int, int]:
    """(num_classes, num_thing_classes) that the reader gives a synthetic set of ``format`` drawn from the first
    ``thing_classes`` / ``stuff_classes`` classes (0 = all): what the model must be sized to. The writers list
    the categories they draw from, except where the format fixes its label space (``Format.label_space``)."""
    from gvseg.data import formats

    fixed = formats.format_of(format).label_space
    if fixed is not None:
        return fixed
    cats = select_categories(formats.categories_for(format), thing_classes, stuff_classes)
    return len(cats), sum(c.isthing for c in cats)


def video_seed(seed: int, index: int) -> int:
    """Per-video seed: independent streams for (seed, index) pairs."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def generate_split(categories: list[Category], *, videos: int, frames: int, height: int, width: int,
                   seed: int, lookalike: bool = False, start_index: int = 0,
                   progress: bool = False) -> list[SyntheticVideo]:
    """``videos`` videos named ``<index>_synth<seed>`` (VIPSeg-style ``<num>_<name>`` ids), indices from
    ``start_index`` so that train and val never share an id. Each video draws from its own seed."""
    from tqdm import tqdm

    out = []
    for i in tqdm(range(start_index, start_index + videos), desc="synth", disable=not progress):
        out.append(generate_video(f"{i}_synth{seed}", categories, frames=frames, height=height, width=width,
                                  seed=video_seed(seed, i), lookalike=lookalike))
    return out


def synth_dataset(format: str, out_dir: str | Path, *, videos: int, frames: int, height: int, width: int,
                  seed: int, lookalike: bool = False, corrupt: bool = False, val_fraction: float = 0.25,
                  thing_classes: int = 0, stuff_classes: int = 0, progress: bool = True) -> dict[str, int]:
    """Write a train/val synthetic dataset in ``format`` under ``out_dir`` (what ``gvseg data synth`` runs).

    ``round(videos * val_fraction)`` videos (at least 1 when ``videos >= 2`` and ``val_fraction > 0``) go to
    the validation split, the rest to train. The validation split has the release's own name
    (``formats.val_split``: ``valid`` for YouTube-VOS, else ``val``). With ``corrupt`` the format's corrupt-file
    fixtures are added as well. Returns ``{"train": n_train, <val split>: n_val}``.
    """
    from gvseg.data import formats  # the readers/writers; imported late so this module stands alone

    if videos < 1:
        raise ValueError(f"{out_dir}: need at least one video, got videos={videos}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"{out_dir}: val_fraction must be in [0, 1), got {val_fraction}")
    cats = select_categories(formats.categories_for(format), thing_classes, stuff_classes)
    n_val = int(round(videos * val_fraction))
    if videos >= 2 and val_fraction > 0:
        n_val = max(n_val, 1)
    n_val = min(n_val, videos - 1)
    n_train = videos - n_val
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kw = dict(frames=frames, height=height, width=width, seed=seed, lookalike=lookalike, progress=progress)
    train = generate_split(cats, videos=n_train, start_index=0, **kw)
    formats.write_synthetic(format, out, train, "train", progress=progress)
    val_name = formats.val_split(format)
    if n_val:
        val = generate_split(cats, videos=n_val, start_index=n_train, **kw)
        formats.write_synthetic(format, out, val, val_name, progress=progress)
    if corrupt:
        from gvseg.data.formats import corrupt as corrupt_mod

        corrupt_mod.write_corrupt(format, out)
    return {"train": n_train, val_name: n_val}
