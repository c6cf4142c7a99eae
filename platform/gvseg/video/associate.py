"""Cross-clip association for one video (GvSeg Eq. 6, Table 4d): SPA for things, class identity for stuff.

Contract
--------
``Tracker(cfg).update(embeds [Q, D], descriptors_first [Q, u*v], descriptors_last [Q, u*v], scores [Q],
labels [Q], is_stuff [Q], keep [Q]) -> track ids [Q]`` int64 on the inputs' device, -1 where not kept.
Call it once per clip, in order; track ids start at 1 and are never reused.

* Things / instances (kept, not stuff): affinity S_ij = cos(q_i + H_i, q_j + H_j) (Eq. 6) between each live
  track's memory (its embedding and the descriptor of **its last frame**) and this clip's queries (their
  embedding and the descriptor of **this clip's first frame**); H is embedded to D by
  ``descriptor_to_embedding``. With ``spa_norm="unit"`` q-hat and H are each L2-normalised before the sum and
  H is weighted by ``spa_weight``, so the balance of appearance against shape-position is a setting, not an
  accident of their norms. Hungarian maximises S; a pair below ``match_threshold`` is not a match.
  ``thing_cues="appearance"`` drops H (cos(q, q'): Table 4d row 1), ``"position"`` drops q-hat (cos(H, H')).
* Unmatched kept queries start new tracks (ids in order of descending score). A track unmatched for more
  than ``max_missing_clips`` consecutive clips is retired and never matched again.
* Memory: embedding = the last matched q-hat (``memory_momentum`` > 0 blends: m <- mom*m + (1-mom)*q);
  descriptor = the last frame of the last matched clip.
* Stuff (and every VSS query): identity = class, one track per class for the whole video, no SPA.
  ``spa_stuff=True`` (Table 4d row 3) matches stuff like things instead, but only within the same class.
* ``thing_class_gate=True``: a thing track continues only as a query of the class it last had.
* Class vote: with ``class_probs`` [Q, C] given to ``update``, each track sums the class probabilities of the
  queries it continued as; :meth:`Tracker.voted_labels` gives a track's argmax of that running sum, so a
  thing whose per-clip class flickers keeps one class from the clip where the vote settles on
  (``AssociationConfig.thing_class_vote``; streaming: only past and present clips vote).
* ``state_dict()`` / ``load_state_dict()`` hold everything needed to resume a stream (CPU tensors + ints).
* Q = 0 or nothing kept: returns an empty / all -1 tensor and only ages the live tracks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from gvseg import counters
from gvseg.config import AssociationConfig
from gvseg.model.descriptor import descriptor_to_embedding

_BLOCKED = -1e4  # affinity of pairs that may not match (other class); always below any threshold


class Tracker:
    def __init__(self, cfg: AssociationConfig):
        self.cfg = cfg
        self.reset()

    def reset(self) -> None:
        self.next_id = 1
        self.clips_seen = 0
        # live tracks that go through embedding matching (things, and stuff when spa_stuff)
        self.ids = torch.zeros(0, dtype=torch.int64)  # [N]
        self.embeds: torch.Tensor | None = None  # [N, D]
        self.desc: torch.Tensor | None = None  # [N, u*v]
        self.labels = torch.zeros(0, dtype=torch.int64)  # [N]
        self.stuff = torch.zeros(0, dtype=torch.bool)  # [N]
        self.missing = torch.zeros(0, dtype=torch.int64)  # [N] consecutive clips unmatched
        self.class_sum: torch.Tensor | None = None  # [N, C] summed class probabilities (the class vote)
        self.class_tracks: dict[int, int] = {}  # stuff class -> its track id (spa_stuff=False)

    @property
    def num_live(self) -> int:
        return int(self.ids.numel())

    # ----------------------------------------------------------------------------------------- update

    @torch.no_grad()
    def update(
        self,
        embeds: torch.Tensor,
        descriptors_first: torch.Tensor,
        descriptors_last: torch.Tensor,
        scores: torch.Tensor,
        labels: torch.Tensor,
        is_stuff: torch.Tensor,
        keep: torch.Tensor,
        class_probs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        q = embeds.shape[0]
        for name, x in (("descriptors_first", descriptors_first), ("descriptors_last", descriptors_last)):
            if x.shape[0] != q:
                raise ValueError(f"Tracker.update: {name} has {x.shape[0]} rows for {q} queries")
        for name, x in (("scores", scores), ("labels", labels), ("is_stuff", is_stuff), ("keep", keep)):
            if x.shape != (q,):
                raise ValueError(f"Tracker.update: {name} has shape {tuple(x.shape)}, expected ({q},)")
        device = embeds.device
        # Everything below is small (Q <= a few hundred): work on CPU, where the Hungarian solver runs.
        emb = embeds.detach().float().cpu()
        d_first, d_last = descriptors_first.float().cpu(), descriptors_last.float().cpu()
        scores, labels = scores.float().cpu(), labels.long().cpu()
        is_stuff, keep = is_stuff.bool().cpu(), keep.bool().cpu()
        probs = class_probs.float().cpu() if class_probs is not None else torch.zeros(q, 0)  # [Q, C] | [Q, 0]
        if probs.shape[0] != q:
            raise ValueError(f"Tracker.update: class_probs has {probs.shape[0]} rows for {q} queries")
        if self.class_sum is not None and self.class_sum.shape[1] != probs.shape[1]:
            raise ValueError(f"Tracker.update: class_probs has {probs.shape[1]} classes, earlier clips had "
                             f"{self.class_sum.shape[1]}")
        out = torch.full((q,), -1, dtype=torch.int64)
        if self.embeds is not None and self.embeds.device != emb.device:
            self._to_cpu()

        by_class = keep & is_stuff & (not self.cfg.spa_stuff)
        stuff_rows = torch.nonzero(by_class).flatten().tolist()
        counters.add("assoc/stuff_by_class", len(stuff_rows))
        for i in stuff_rows:  # stuff: one track per class
            c = int(labels[i])
            if c not in self.class_tracks:
                self.class_tracks[c] = self._new_id()
            out[i] = self.class_tracks[c]

        matched_tracks = torch.zeros(self.num_live, dtype=torch.bool)
        new_rows: list[int] = []
        pools = [(keep & ~is_stuff, False, self.cfg.thing_cues)]
        if self.cfg.spa_stuff:
            pools.append((keep & is_stuff, True, "spa"))
        for query_mask, stuff_pool, cues in pools:
            qi = torch.nonzero(query_mask).flatten()  # this pool's queries
            ti = torch.nonzero(self.stuff == stuff_pool).flatten() if self.num_live else torch.zeros(0, dtype=torch.int64)
            pairs = self._match(emb[qi], d_first[qi], labels[qi], ti, cues,
                                gate_class=stuff_pool or self.cfg.thing_class_gate)
            taken = torch.zeros(qi.numel(), dtype=torch.bool)
            for a, b in pairs:  # track ti[a] continues as query qi[b]
                t, i = int(ti[a]), int(qi[b])
                out[i] = self.ids[t]
                m = self.cfg.memory_momentum
                self.embeds[t] = m * self.embeds[t] + (1.0 - m) * emb[i] if m > 0 else emb[i]
                self.desc[t] = d_last[i]
                self.labels[t] = labels[i]
                self.class_sum[t] += probs[i]
                matched_tracks[t] = True
                taken[b] = True
            rest = qi[~taken]
            new_rows += rest[torch.argsort(-scores[rest], stable=True)].tolist()

        # age and retire unmatched tracks, then append the new ones
        self.missing = torch.where(matched_tracks, torch.zeros_like(self.missing), self.missing + 1)
        alive = self.missing <= self.cfg.max_missing_clips
        self._select(alive)
        counters.add("assoc/new_tracks", len(new_rows))
        if new_rows:
            rows = torch.tensor(new_rows, dtype=torch.int64)
            new_ids = torch.tensor([self._new_id() for _ in new_rows], dtype=torch.int64)
            out[rows] = new_ids
            self._append(new_ids, emb[rows], d_last[rows], labels[rows], is_stuff[rows], probs[rows])
        self.clips_seen += 1
        return out.to(device)

    def voted_labels(self, track_ids: torch.Tensor, classes: int | None = None) -> torch.Tensor:
        """[S] track ids -> [S] int64 argmax of each live matched track's summed class probabilities over its
        first ``classes`` columns (e.g. the thing classes), -1 for an id with no vote (stuff by class, unknown,
        or no ``class_probs`` given)."""
        out = torch.full(track_ids.shape, -1, dtype=torch.int64)
        if self.class_sum is None or self.class_sum.shape[1] == 0 or track_ids.numel() == 0:
            return out.to(track_ids.device)
        ids = track_ids.cpu()
        hit = ids[:, None] == self.ids[None]  # [S, N]
        found = hit.any(1)
        votes = self.class_sum[:, :classes].argmax(1)  # [N]
        out[found] = votes[hit[found].float().argmax(1)]
        return out.to(track_ids.device)

    def _match(self, q_emb, q_desc, q_lab, ti, cues: str, gate_class: bool) -> list[tuple[int, int]]:
        """Hungarian on S [n_tracks, n_queries] (Eq. 6); pairs (track row in ti, query row) above threshold."""
        if ti.numel() == 0 or q_emb.shape[0] == 0:
            return []
        counters.add(f"assoc/{cues}_calls")
        counters.add("assoc/candidate_pairs", int(ti.numel()) * int(q_emb.shape[0]))
        sim = F.normalize(self._key(self.embeds[ti], self.desc[ti], cues), dim=-1) \
            @ F.normalize(self._key(q_emb, q_desc, cues), dim=-1).T  # [n_t, n_q]
        if gate_class:
            sim = torch.where(self.labels[ti][:, None] == q_lab[None], sim, torch.full_like(sim, _BLOCKED))
        rows, cols = linear_sum_assignment(sim.numpy(), maximize=True)
        pairs = [(int(r), int(c)) for r, c in zip(rows, cols) if sim[r, c] >= self.cfg.match_threshold]
        counters.add("assoc/matched", len(pairs))
        return pairs

    def _key(self, emb: torch.Tensor, desc: torch.Tensor, cues: str) -> torch.Tensor:
        """[N, D] vector whose cosine is the affinity: q-hat + w H (Eq. 6), q-hat alone, or H alone."""
        if cues == "appearance":
            return emb
        h = descriptor_to_embedding(desc, emb.shape[1])  # [N, D]
        if self.cfg.spa_norm == "unit":
            emb, h = F.normalize(emb, dim=-1), F.normalize(h, dim=-1)
        return h if cues == "position" else emb + self.cfg.spa_weight * h

    # -------------------------------------------------------------------------------------- bookkeeping

    def _new_id(self) -> int:
        i = self.next_id
        self.next_id += 1
        return i

    def _select(self, keep: torch.Tensor) -> None:
        self.ids, self.labels, self.stuff, self.missing = (x[keep] for x in (self.ids, self.labels, self.stuff, self.missing))
        if self.embeds is not None:
            self.embeds, self.desc, self.class_sum = self.embeds[keep], self.desc[keep], self.class_sum[keep]

    def _append(self, ids, emb, desc, labels, stuff, probs) -> None:
        if self.embeds is None:
            self.embeds, self.desc = emb.new_zeros(0, emb.shape[1]), desc.new_zeros(0, desc.shape[1])
            self.class_sum = probs.new_zeros(0, probs.shape[1])
        self.class_sum = torch.cat([self.class_sum, probs])
        self.ids = torch.cat([self.ids, ids])
        self.embeds = torch.cat([self.embeds, emb])
        self.desc = torch.cat([self.desc, desc])
        self.labels = torch.cat([self.labels, labels])
        self.stuff = torch.cat([self.stuff, stuff])
        self.missing = torch.cat([self.missing, torch.zeros_like(ids)])

    def _to_cpu(self) -> None:
        self.embeds, self.desc, self.class_sum = self.embeds.cpu(), self.desc.cpu(), self.class_sum.cpu()

    # ----------------------------------------------------------------------------------- checkpointing

    def state_dict(self) -> dict:
        classes = sorted(self.class_tracks)
        return {
            "next_id": self.next_id,
            "clips_seen": self.clips_seen,
            "ids": self.ids.clone(),
            "embeds": None if self.embeds is None else self.embeds.clone(),
            "desc": None if self.desc is None else self.desc.clone(),
            "class_sum": None if self.class_sum is None else self.class_sum.clone(),
            "labels": self.labels.clone(),
            "stuff": self.stuff.clone(),
            "missing": self.missing.clone(),
            "stuff_classes": torch.tensor(classes, dtype=torch.int64),
            "stuff_track_ids": torch.tensor([self.class_tracks[c] for c in classes], dtype=torch.int64),
        }

    def load_state_dict(self, state: dict) -> None:
        self.next_id = int(state["next_id"])
        self.clips_seen = int(state["clips_seen"])
        self.ids = state["ids"].cpu().long()
        self.embeds = None if state["embeds"] is None else state["embeds"].cpu().float()
        self.desc = None if state["desc"] is None else state["desc"].cpu().float()
        cs = state.get("class_sum")  # absent in a stream state saved before the class vote
        self.class_sum = cs.cpu().float() if cs is not None else (
            None if self.embeds is None else torch.zeros(self.embeds.shape[0], 0))
        self.labels = state["labels"].cpu().long()
        self.stuff = state["stuff"].cpu().bool()
        self.missing = state["missing"].cpu().long()
        self.class_tracks = {int(c): int(i) for c, i in zip(state["stuff_classes"], state["stuff_track_ids"])}
