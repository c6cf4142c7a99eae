"""Typed configuration: one dataclass tree for model, data, loss, train, tracking and runtime.

Recipes (``tasks/*.py``) are functions that return a :class:`Config`. The tree round-trips through plain
dicts (``to_dict`` / ``from_dict``), so the Ray driver ships it to workers as a dict and ``tasks/`` never
has to be importable there. ``flatten`` gives the dotted ``{key: value}`` that MLflow logs as params.

Every error names the dotted key: unknown keys list the valid keys at that level; wrong types name the
expected type and the value given. Defaults come from ``shared/specs/method.md`` ("[default]" there).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, Union

Task = Literal["vis", "vss", "vps", "evs"]
# the keys of gvseg.data.formats.FORMATS, the one table of datasets (a test keeps them equal)
DataFormat = Literal["vipseg", "kitti-step", "vspw", "ytvis", "ovis", "davis", "ytvos", "burst"]


class ConfigError(ValueError):
    """A bad key or value in a config; the message names the dotted key and what was expected."""


# ----------------------------------------------------------------------------------------------- model


@dataclass
class BackboneConfig:
    name: str = "resnet50"  # any timm model that supports features_only
    checkpoint: str = ""  # local weights path ("" = random init: nothing is fetched from a hub)
    out_indices: tuple[int, ...] = (1, 2, 3, 4)  # strides 4, 8, 16, 32 for ResNets; (0, 1, 2, 3) for Swin
    lr_multiplier: float = 0.1  # backbone LR = train.lr * this (all peers use 0.1)
    # BatchNorm: "frozen_bn" keeps the statistics and affine of the loaded weights fixed (timm
    # freeze_batch_norm_2d), as Mask2Former and every peer do with COCO weights: a GPU holds a few 3-frame clips,
    # too few for stable batch statistics. It needs weights (backbone.checkpoint or model.pretrained): frozen
    # random-init BN is an identity and timm's zero-initialised last gammas would stay 0. "bn" trains BatchNorm
    # (random init, the tiny CPU models). Models without BatchNorm (Swin: LayerNorm) are unaffected.
    norm: Literal["frozen_bn", "bn"] = "bn"
    # Extra timm.create_model keyword arguments as (name, value) pairs, e.g. a tiny Swin for tests:
    # (("embed_dim", 32), ("depths", (1, 1, 1, 1)), ("num_heads", (1, 2, 4, 8))).
    timm_kwargs: tuple[tuple[str, bool | int | float | str | tuple[int, ...]], ...] = ()


@dataclass
class PixelDecoderConfig:
    kind: Literal["msdeform", "dense", "fpn"] = "msdeform"  # msdeform = paper; dense = fast; fpn = tiny CPU
    dim: int = 256  # conv/mask feature dim
    num_layers: int = 6  # encoder layers over 1/8, 1/16, 1/32
    num_heads: int = 8
    num_points: int = 4  # deformable sampling points per head and level
    ffn_dim: int = 1024


@dataclass
class DescriptorConfig:
    """Shape-position descriptor H (Eq. 3-4)."""

    angle_bins: int = 36  # u (Table 4c)
    radius_bins: int = 12  # v (Table 4c)
    num_points: int = 200  # M contour points
    # "outside" = bin centre outside the valid canvas and count 0: the only reading that makes H encode
    # position (method.md). The alternatives are kept for ablation.
    outside_ref: Literal["canvas", "fg_union", "own_mask"] = "canvas"
    radius: Literal["log_abs", "lin_abs", "log_objscale"] = "log_abs"
    # Contours at 1/stride of the masks' resolution (GT masks come at the input size; predicted masks are
    # passed at 1/4 with downsample=1). 1 since issue #12: at 4 the same mask moved by 1-2 px alone gives
    # ΔH ~0.3 (pixelisation of a coarse contour), at 1 the Δt=1 median is 0.08 (descriptor_stats.json).
    contour_stride: int = 1
    # Added for issue #12 (same-object ΔH at Δt=1 was 0.6-0.7, so TCL found no positives under τ=0.2); the
    # numbers behind each default are in benchmarks/results/descriptor_stats.json and descriptor.py.
    # Eq. (3): "weighted" = every contour pixel adds M/n_c points (even sampling in expectation, no sampling
    # noise); "along" = M points evenly spaced in angle order; "raster" = M points in raster order (first version).
    sampling: Literal["weighted", "along", "raster"] = "weighted"
    # Eq. (4): "hard" = the paper's bin indicator; "linear" = each point shared between the nearest bin centres,
    # so a point crossing a bin edge moves its weight gradually.
    binning: Literal["linear", "hard"] = "linear"
    # circular [1, 2, 1]/4 passes over angle bins: objects rotate a few degrees per frame, a bin is 10 degrees
    angle_smooth: int = 1
    # negative bins: "hard" = centre outside the canvas (paper); "soft" = the fraction of a bin-sized square
    # beyond the canvas edge, so a small move changes a few bins a little instead of flipping some
    outside_edge: Literal["soft", "hard"] = "soft"


@dataclass
class DecoderConfig:
    num_layers: int = 9
    dim: int = 256  # d_model; H is interpolated to this size
    num_heads: int = 8
    ffn_dim: int = 2048
    num_queries: int = 100  # instance (thing / VIS / EVS) queries
    dropout: float = 0.0
    spa_inject: bool = True  # q <- q + 1^{l-1} H before each self-attention (Eq. 5)
    predicted_descriptor_prob: float = 0.5  # train with H from predicted masks this often (closes train/test gap)
    # How H enters a layer: "residual" = q <- q + H before SelfAttn, kept in the residual stream (Eq. 5 read
    # literally); "pos" = added to self-attention queries/keys only, like DETR's positional encoding (APE).
    spa_mode: Literal["residual", "pos"] = "residual"
    # Thing queries the layer-(l-1) matching left unmatched: "zero" = Eq. 5's 1^{l-1} H read literally;
    # "predicted" = the H of their own predicted mask, which is what every thing query gets at inference.
    # "zero" by measurement (VPS debug data, 600 CPU steps, one seed): thing VPQ_1 / VPQ_6 31.7 / 17.6 against
    # 25.4 / 5.4 for "predicted". The asymmetry that remains: at inference unmatched thing queries carry the H
    # of their own (usually near-empty, hence near-zero) predicted masks; tests/model/test_gvseg.py pins both.
    inject_unmatched: Literal["zero", "predicted"] = "zero"
    track_embed_layers: int = 3  # q-hat is a 3-layer MLP on the decoder output


@dataclass
class QueryInitConfig:
    """Task-oriented query initialisation (Eq. 7-9)."""

    task_oriented: bool = True  # False = plain learned queries (the Table 4a baseline)
    grid_level: int = 3  # VIS grid from the 1/32 level
    grid_size: int = 16  # S
    exemplar_level: int = 1  # EVS features sampled from the 1/8 level
    bank_momentum: float = 0.99  # VSS/stuff class bank
    bank_warmup: int = 1000  # iterations before the bank initialises queries
    test_seed: int = 0  # fixed grid-cell choice at test time


@dataclass
class AssociationConfig:
    """Cross-clip association (Eq. 6, Table 4d)."""

    # Cues for thing/instance association (Table 4d): "spa" = S = cos(q + H, q' + H') (Eq. 6),
    # "appearance" = cos(q, q') (prior work, Eq. 2), "position" = cos(H, H') (the shape-position cue alone).
    thing_cues: Literal["spa", "appearance", "position"] = "spa"
    # Scale of Eq. 6's sum: "unit" = q-hat and H each L2-normalised first, so ``spa_weight`` alone sets the
    # balance (q-hat is unbounded, H is O(1): ||H|| 0.76 vs ||q-hat|| 0.35 was measured, an accidental ratio);
    # "raw" = the plain sum, as Eq. 6 is printed.
    spa_norm: Literal["unit", "raw"] = "unit"
    spa_weight: float = 1.0  # weight of H against q-hat in Eq. 6 (with spa_norm="unit")
    spa_stuff: bool = False  # Table 4d: SPA on stuff hurts; stuff tracks by class identity
    clip_frames: int = 3
    # Frames shared by consecutive clips (TarViS T_ov). Kept at 0 by measurement: on three saved VPS checkpoints
    # of the learning benchmark (16 val videos of 12 frames, plain and look-alike val), overlap 1 moved thing
    # VPQ_6 by +1.1 / +1.4 / -0.0 / -0.5 / -1.2 points, no consistent gain for 1.5x the frames; the same study
    # found match_threshold 0 vs 0.2 within +-0.8 and spa_weight 2 vs 1 within -1.2..+0.4.
    clip_overlap: int = 0
    max_missing_clips: int = 5  # a track unseen this long is retired
    match_threshold: float = 0.2  # min affinity S_ij (cosine) to continue a track; below it a new track starts
    # Track embedding memory: m <- mom*m + (1-mom)*q_hat; 0 = last embedding. Kept at 0 by measurement
    # (2026-12-03, benchmarks/results/association_inference_cpu.json; 16 val videos of 12 frames = 4 clips):
    # mom 0 / 0.5 / 0.8 gave thing VPQ_6 29.64 / 29.64 / 29.64 (plain val), 12.11 / 12.28 / 12.11 (look-alike).
    memory_momentum: float = 0.0
    # Things continue a track only within their predicted class (as stuff does with spa_stuff). Off by
    # measurement (Eq. 6 has no class term): on a learning-benchmark checkpoint thing VPQ_6 went 31.3 -> 31.0
    # (plain val) and 13.4 -> 12.7 (look-alike val) with the gate; a class flicker between clips then splits
    # a track, which costs more than the cross-class swaps it prevents.
    thing_class_gate: bool = False
    # VPS things: a segment's class is its track's running vote (the argmax of the class probabilities summed
    # over the clips the track has lived so far: gvseg.video.associate.Tracker.voted_labels) instead of this clip's
    # argmax, so that a per-clip class flicker does not split a thing's tube across VPQ windows. Off by
    # measurement (2026-12-03, benchmarks/results/class_vote_cpu.json: two checkpoints x plain / look-alike
    # val, 16 videos of 12 frames): it changed the class of 1-4 segments per val set and moved thing VPQ_6 by
    # -0.0 / -0.5 / -0.0 / -0.1 (29.64 -> 29.63 on plain val): class flicker is rare here, not the limit.
    thing_class_vote: bool = False


@dataclass
class PostprocessConfig:
    """Per-task post-processing (``gvseg.video.postprocess``); each default is the named peer's."""

    # VIS. Every query whose best real-class probability exceeds this goes to the tracker in every clip. It is
    # only a noise floor (a trained model's unused queries sit near 0 because no-object takes their mass), not
    # a per-clip score cut: a track whose score dips in one clip keeps its id. 0.0 = all queries (MinVIS).
    track_min_score: float = 0.05
    vis_topk: int = 10  # (track, class) pairs kept per video: MinVIS / Mask2Former-VIS inference_video
    # Video-level score of a (track, class) pair: mean class probability x mask score (mean sigmoid inside
    # the binary mask; Mask2Former instance_inference), or the class probability alone (MinVIS).
    vis_score: Literal["class_x_mask", "class"] = "class_x_mask"
    # Binary masks: sigmoid > this (VIS masks, MinVIS `pred_masks > 0`); the panoptic per-pixel rule keeps a
    # pixel for its winning query where sigmoid >= this (Mask2Former panoptic_inference).
    mask_threshold: float = 0.5
    # VPS (and VSS in "panoptic" mode): Mask2Former panoptic_inference. A query competes for pixels only if
    # its argmax over C+1 is not no-object and that score > object_mask_threshold; it keeps a segment only if
    # the pixels it wins are >= overlap_threshold of its own mask (sigmoid >= mask_threshold).
    object_mask_threshold: float = 0.8  # Mask2Former MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD
    overlap_threshold: float = 0.8  # Mask2Former MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD
    # VSS: "semantic" = Mask2Former semantic_inference (per-pixel argmax of sum_q p(c|q) sigmoid(m_q), never
    # void); "panoptic" = the panoptic rules above, class map only, void where no query holds a pixel.
    vss_mode: Literal["semantic", "panoptic"] = "semantic"
    # Query-type gate: a query may only produce the classes its kind allows (out["query_kind"]: thing-only
    # grid queries, one-class bank queries). False = every query may produce every class (ablation).
    class_gate: bool = True
    # VSS test-time augmentation (paper 003, §2.4, Eq. 8; ``video.tta``): the clip runs at each of these scales
    # (and mirrored, with tta_flip) and the class maps are voted per pixel, ties to the higher scale. () = off;
    # ``gvseg predict --tta`` sets the paper's (0.9, 1.0, 1.1, 1.2) with flips. Costs one forward per entry.
    tta_scales: tuple[float, ...] = ()
    tta_flip: bool = True


@dataclass
class ModelConfig:
    task: Task = "vps"
    # Contiguous label space, things first: classes [0, num_thing_classes) are things, the rest stuff.
    num_classes: int = 124
    num_thing_classes: int = 58
    # Local whole-model init (the paper starts from COCO Mask2Former): a detectron2 .pkl (renamed by
    # gvseg.model.convert_d2) or a GvSeg/torch state dict. Loaded non-strictly; every skipped key is logged.
    pretrained: str = ""
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    pixel_decoder: PixelDecoderConfig = field(default_factory=PixelDecoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    descriptor: DescriptorConfig = field(default_factory=DescriptorConfig)
    queries: QueryInitConfig = field(default_factory=QueryInitConfig)
    association: AssociationConfig = field(default_factory=AssociationConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)


# ------------------------------------------------------------------------------------------------ data


@dataclass
class SyntheticConfig:
    """What ``gvseg data synth`` writes when the recipe asks for synthetic data."""

    videos: int = 8
    frames: int = 8
    height: int = 64
    width: int = 96
    seed: int = 0
    lookalike: bool = False  # same-texture instances crossing paths: only shape/position tell them apart
    thing_classes: int = 0  # use only the format's first N thing classes (0 = all): few classes, seen often
    stuff_classes: int = 0  # same for stuff classes
    val_fraction: float = 0.25  # share of the videos written to the val split


@dataclass
class DataConfig:
    format: DataFormat = "vipseg"
    root: str = ""  # dataset root on disk
    train_split: str = "train"
    val_split: str = "val"
    synthetic: bool = False  # generate `synth` into root first if it is missing
    synth: SyntheticConfig = field(default_factory=SyntheticConfig)
    clip_frames: int = 3  # key clip length T
    reference_frames: int = 3  # reference clip for TCL
    reference_range: int = 0  # 0 = anywhere in the video (TCL needs whole-video references)
    min_size: tuple[int, ...] = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)  # short side
    max_size: int = 1333  # long side
    crop: tuple[int, int] = (0, 0)  # (h, w) random crop; (0, 0) = none
    flip: bool = True
    test_size: int = 720  # short side at test time
    on_error: Literal["fail", "skip"] = "fail"  # bad videos: raise, or skip and count
    max_videos: int = 0  # 0 = all; for quick runs
    clips_per_video: int = 1  # training samples drawn from each video per epoch
    # EVS training hints, drawn from the ground truth: one per object visible in a clip's first frame, in the key
    # clip and in the reference clip alike (EVS queries come from hints and TCL pairs them by track id). Each
    # object's kind is drawn from this mix; §4.4 trains "randomly adopt[ing] mask or point exemplars", hence
    # ("mask", "point") in the EVS recipes. Add "box" for box-guided use (BURST also gives boxes). () = no hints.
    exemplar_kinds: tuple[Literal["mask", "point", "box"], ...] = ()
    exemplar_weights: tuple[float, ...] = ()  # probability of each exemplar_kinds entry (normalised); () = uniform


# ------------------------------------------------------------------------------------------------ loss


@dataclass
class ContrastiveConfig:
    """Task-oriented temporal contrastive learning (Eq. 10, Table 4b/4e)."""

    enabled: bool = True
    tau: float = 0.2  # ΔH threshold for whole-video positives
    queue_size: int = 100  # N_Q per stuff/semantic class
    # Same id with ΔH >= τ: "negative" is the paper's wording (method.md's default), "ignore" leaves the pair
    # out. The measurements disagree, so the paper's reading stays: one seed each on the VPS debug data gave
    # thing VPQ_1 / VPQ_6 34.5 / 20.9 for "ignore" against 29.0 / 13.9; the learning benchmark (lookalike
    # data, benchmarks/results/learning_cpu.json) gave 27.6 / 20.1 for "negative" (1 seed) against 25.1 / 13.9
    # for "ignore" (2 seeds, VPQ_6 8.7 and 19.0: the seed spread is larger than either difference). The
    # re-run on the fixed design (plain VPS data, seed 0, 2026-12-02) favours "negative" again: thing VPQ_6
    # 31.3 against 25.9 (+5.3; VPQ_1 41.1 vs 34.4).
    far_same_id: Literal["negative", "ignore"] = "negative"
    # Table 4e, learning benchmark 2026-12-02 (2 seeds, gvseg minus arm, thing VPQ_6): "video" vs "frame"
    # -0.4 +- 3.6 (no direction); the stuff queue ("dataset") vs in-batch "frame" +2.1 +- 1.8 (Table 4e's
    # direction), stuff VPQ_6 -0.0 +- 0.2.
    thing_reference: Literal["frame", "video"] = "video"  # Table 4e
    stuff_reference: Literal["frame", "dataset"] = "dataset"  # Table 4e: FIFO queue across the dataset
    frame_window: int = 5  # thing_reference="frame": references at most this many frames from the key
    weight: float = 2.0  # multi-positive log-sum-exp term (CTVIS/IDOL)
    aux_weight: float = 3.0  # L2 on cosine
    # The reference clip's samples anchor too, against the key clip's (Eq. 10 both ways; both clips feed the
    # queues): with LossConfig.reference_segmentation the two clips of a step are then both key clips.
    # False = key clip anchors only (IDOL's one-way loss), the default by measurement
    # (benchmarks/results/tcl_reference_cpu.json, VPS learning data, 900 steps, 4 seeds, symmetric minus
    # one-way): thing VPQ_6 -1.6 +- 2.5 (-4.2, -0.5, +1.5, -3.0), VPQ_1 -0.9 +- 2.1, stuff VPQ_6 -0.5 +- 1.0,
    # STQ +0.01; the same step time. Not better on any VPQ, so one-way stays.
    symmetric: bool = False


@dataclass
class MVCConfig:
    """Masked video consistency (paper 003): random patch masking, λ·L^M."""

    weight: float = 0.0  # λ; 0 disables
    patch: int = 32
    ratio: float = 0.5


@dataclass
class LossConfig:
    class_weight: float = 2.0
    no_object_weight: float = 0.1
    mask_weight: float = 5.0  # BCE
    dice_weight: float = 5.0
    num_points: int = 12544  # importance-sampled points per mask
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    deep_supervision: bool = True
    # The TCL reference clip is forwarded anyway: also supervise its segmentation (the set losses of key and
    # reference clip averaged), as IDOL and CTVIS train both frames of a pair. False = the reference feeds TCL
    # only. Default by measurement (VPS debug data, 600 CPU steps, one seed): thing VPQ_1 / VPQ_6 37.1 / 28.1
    # against 31.7 / 17.6, for ~1.2x the step time (the reference forward and backward run for TCL anyway).
    reference_segmentation: bool = True
    # False: the reference clip is forwarded without autograd (torch.no_grad): Eq. (10) needs its embeddings
    # only as the fixed positives/negatives k+ / k- of the key anchors v, log(1 + sum exp(v.k- - v.k+)), so no
    # backward runs through it (a forward instead of a forward and a backward). Needs
    # reference_segmentation=False and contrastive.symmetric=False (both put gradients through the reference).
    # True by measurement (benchmarks/results/tcl_reference_cpu.json, VPS learning data): False with
    # reference_segmentation=False is 0.80x HF per key frame against 0.56x (train_step_cpu.json) but thing
    # VPQ_6 -6.4 at equal steps (1 seed) and -2.4 +- 0.4 at equal CPU time (1400 vs 900 steps, 2 seeds).
    reference_backward: bool = True
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    mvc: MVCConfig = field(default_factory=MVCConfig)


# ----------------------------------------------------------------------------------------------- train


@dataclass
class FaultConfig:
    """Fault injection, for testing recovery paths. Leave empty in real runs."""

    nan_at_steps: tuple[int, ...] = ()  # the loss at these steps is made NaN
    # the last rank exits abruptly once at each of these steps, as it reaches their checkpoint (so only
    # steps that are multiples of train.checkpoint_every, or the last step, fire)
    crash_at_steps: tuple[int, ...] = ()
    crash_marker: str = ""  # file that records each crash (one line a step), so the restarted worker goes on


@dataclass
class TrainConfig:
    lr: float = 1e-4  # the paper says 1e-3; every peer uses 1e-4 (method.md)
    weight_decay: float = 0.05
    grad_clip: float = 0.01
    batch_size: int = 16  # clips, global
    max_iters: int = 10000
    lr_steps: tuple[int, ...] = (7000,)  # ×0.1 at each
    lr_gamma: float = 0.1
    warmup_iters: int = 0
    amp: Literal["bf16", "off"] = "bf16"  # autocast on GPU only
    seed: int = 0
    log_every: int = 20
    checkpoint_every: int = 1000
    eval_every: int = 0  # 0 = only at the end
    num_to_keep: int = 3
    max_nonfinite: int = 10  # consecutive non-finite losses before the run fails
    # glibc keeps freed blocks in the process (gvseg.host_memory): the step's large activations are reused
    # instead of being unmapped and faulted in again every step. Results are identical (allocation only).
    # Measured (benchmarks/results/host_memory_cpu_run1.json / _run2, demo_time.json, idle 2-core AMD EPYC,
    # interleaved): 1.08x CPU on the VPS TCL step when the default faulted 112k pages a step, 1.006x when it
    # faulted 18k, make demo within noise (152.5 vs 155.8 s); peak RSS +0-3%. True: it pays when faults are
    # expensive and costs little otherwise. False = glibc's defaults.
    keep_freed_memory: bool = True
    fault: FaultConfig = field(default_factory=FaultConfig)


# ----------------------------------------------------------------------------------- tracking, runtime


@dataclass
class TrackingConfig:
    tracking_uri: str = ""  # "" = sqlite:///<cwd>/mlflow.db
    experiment: str = "gvseg"
    run_name: str = ""  # "" = derived from the recipe; the same name resumes
    registered_model: str = ""  # "" = do not register
    log_system_metrics: bool = True
    image_every: int = 0  # log prediction overlays every N steps; 0 = at eval only
    # Ground-truth baselines (gvseg.baselines) scored on the val split beside the final model and logged as
    # baseline/<name>/<metric>: "redrawn_ids" (perfect masks, no association across clips) and "copy_first"
    # (no motion model) frame the model's number. Each costs one metric pass over the val split.
    baselines: tuple[str, ...] = ()


@dataclass
class RuntimeConfig:
    address: str = ""  # "" = embedded local Ray on loopback; "auto" or "ray://..." for a cluster
    local: bool = False  # one process, no Ray
    num_workers: int = 2
    use_gpu: bool = False
    gpus_per_worker: float = 1.0
    cpus_per_worker: float = 1.0
    storage_path: str = ""  # "" = <cwd>/runs; use shared or cloud storage on a cluster
    max_failures: int = 2
    # Embedded Ray starts its dashboard on 127.0.0.1 for training: Ray Train's placement-group cleaner needs
    # the state API it serves (gvseg.runtime.ray_init.init_embedded). False saves ~0.2 GB PSS (1 GB RSS) and ~1.3 s of
    # start-up (benchmarks/results/ray_start_cpu.json).
    dashboard: bool = True


@dataclass
class Config:
    name: str = "gvseg"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


# ------------------------------------------------------------------------------------- dict round trip

C = TypeVar("C")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (tuples become lists, so it is JSON- and YAML-safe)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            v = to_dict(v)
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    return out


def from_dict(cls: type[C], data: dict[str, Any], prefix: str = "") -> C:
    """Build ``cls`` from a nested dict, checking every key and value. Missing keys take defaults."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or '<root>'}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(_unknown(prefix, key, names))
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}")
    return cls(**kwargs)


def flatten(cfg: Any) -> dict[str, Any]:
    """``{"train.lr": 1e-4, ...}``: the params MLflow logs."""
    out: dict[str, Any] = {}

    def walk(d: dict[str, Any], prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                out[f"{prefix}{k}"] = v

    walk(to_dict(cfg), "")
    return out


# ------------------------------------------------------------------------------------ dotted overrides


def _split(assignment: str) -> tuple[str, Any]:
    """``"a.b.c=value"`` -> ("a.b.c", the value parsed as a Python literal where it can be, else the string)."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r}: expected KEY=VALUE, e.g. train.lr=1e-4")
    key, raw = assignment.split("=", 1)
    return key.strip(), _parse_literal(raw.strip())


def set_values(cfg: C, values: dict[str, Any]) -> C:
    """A copy of ``cfg`` with typed values set at dotted keys (``{"train.lr": 1e-4}``), every key checked and
    the whole tree type-checked once (``from_dict``): one round trip for any number of keys, and values keep
    their Python type (a sweep's trial values never pass through strings)."""
    if not values:
        return cfg
    tree = to_dict(cfg)
    for key, value in values.items():
        node, cls, prefix = tree, type(cfg), ""
        parts = key.split(".")
        for part in parts[:-1]:
            names = [f.name for f in dataclasses.fields(cls)]
            if part not in names:
                raise ConfigError(_unknown(prefix, part, names))
            sub = typing.get_type_hints(cls)[part]
            if not dataclasses.is_dataclass(sub):
                raise ConfigError(f"{prefix}{part}: is a {_type_name(sub)} value, not a section; cannot set {key}")
            node, cls, prefix = node[part], sub, f"{prefix}{part}."
        leaf = parts[-1]
        names = [f.name for f in dataclasses.fields(cls)]
        if leaf not in names:
            raise ConfigError(_unknown(prefix, leaf, names))
        if dataclasses.is_dataclass(typing.get_type_hints(cls)[leaf]):
            raise ConfigError(f"{key}: is a section; set one of its keys, e.g. {key}.<name>=...")
        node[leaf] = value
    return from_dict(type(cfg), tree)


def override(cfg: C, assignment: str) -> C:
    """Return a copy of ``cfg`` with one ``"a.b.c=value"`` applied. Values parse as Python literals
    where they can (``1e-4``, ``true``, ``(3, 5)``), else as strings."""
    return set_values(cfg, dict([_split(assignment)]))


def apply_overrides(cfg: C, assignments: list[str] | tuple[str, ...]) -> C:
    """Every ``"a.b.c=value"`` applied in order (a later one of the same key wins), in one round trip."""
    return set_values(cfg, dict(_split(a) for a in assignments))


def _parse_literal(raw: str) -> Any:
    import ast

    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


# ------------------------------------------------------------------------------------------ type check


def _unknown(prefix: str, key: str, names: list[str]) -> str:
    where = prefix.rstrip(".") or "<root>"
    return f"{prefix}{key}: unknown key in {where}; valid keys: {', '.join(names)}"


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        inner = f"{_type_name(args[0])}, ..." if len(args) == 2 and args[1] is Ellipsis else ", ".join(_type_name(a) for a in args)
        return f"tuple[{inner}]"
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, key: str) -> Any:
    def bad() -> ConfigError:
        return ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")

    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, prefix=f"{key}.")
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad()
        return value
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(arg, value, key)
            except ConfigError:
                pass
        raise bad()
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad()
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise bad()
        return tuple(_coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp is type(None):
        if value is not None:
            raise bad()
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad()
        return value
    if tp is Any:
        return value
    raise ConfigError(f"{key}: unsupported config type {tp!r}")
