"""Shared tiny synthetic clips for the model tests (no files, CPU, 64x64)."""

from __future__ import annotations

import torch

from gvseg.structures import Clip, ClipExemplars, Targets

torch.set_num_threads(1)


def synthetic_targets(t: int, h: int, w: int, k: int = 3, shift: int = 0) -> Targets:
    """Up to 3 tubes: two moving rectangles (things 0, 1) and the background (stuff class 3)."""
    masks = torch.zeros(3, t, h, w, dtype=torch.bool)
    for f in range(t):
        dx = shift * f
        masks[0, f, 4:h // 3, 4 + dx:w // 2 + dx] = True
        masks[1, f, h // 2:h - 4, w // 2:w - 4] = True
    masks[2] = ~(masks[0] | masks[1])
    labels = torch.tensor([0, 1, 3])
    return Targets(masks[:k], labels[:k], torch.tensor([1, 2, 3])[:k], torch.tensor([True, True, False])[:k])


def make_clip(task: str = "vps", b: int = 2, t: int = 3, h: int = 64, w: int = 64, k: int = 3,
              seed: int = 0) -> Clip:
    g = torch.Generator().manual_seed(seed)
    targets = [synthetic_targets(t, h, w, k) for _ in range(b)]
    frames = torch.randn(b, t, 3, h, w, generator=g)
    for i, tg in enumerate(targets):  # make objects visible in the pixels
        for j in range(tg.masks.shape[0]):
            frames[i, :, j % 3] += 2.0 * tg.masks[j].float()
    exemplars = None
    if task == "evs":
        exemplars = []
        for tg in targets:
            n = tg.masks.shape[0]
            kinds = (["point", "box", "mask"] * 2)[:n]
            pts = torch.zeros(n, 2)
            boxes = torch.zeros(n, 4)
            for j in range(n):
                ys, xs = tg.masks[j, 0].nonzero(as_tuple=True)
                pts[j] = torch.stack([xs.float().mean(), ys.float().mean()]).round()
                boxes[j] = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
            exemplars.append(ClipExemplars(kinds, torch.zeros(n, dtype=torch.long), pts, boxes,
                                           tg.masks[:, 0].clone(), tg.ids.clone()))
    return Clip(frames, torch.tensor([[h, w]] * b), torch.arange(t).repeat(b, 1), [f"v{i}" for i in range(b)],
                targets, exemplars)


