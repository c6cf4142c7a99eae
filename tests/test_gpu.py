"""GPU checks (``-m gpu``; skipped without CUDA by conftest): bf16 autocast against fp32, and the descriptor on CUDA.
One unmarked test runs ``benchmarks/gpu_suite.py --smoke`` on CPU (one measurement) to guard its plumbing in CI.

Every part of the paper model (ResNet-50, msdeform pixel decoder, 9-layer masked-attention decoder, 100 queries;
random weights) runs forward and backward once in fp32 (TF32 off: the reference) and once under bf16 autocast,
from the same weights and inputs, on a small clip (2 clips x 3 frames x 160 x 224, so nothing depends on a
large GPU). Checked:

  * every output and gradient is finite;
  * forward outputs: ``||bf16 - fp32|| / ||fp32|| <= FWD_TOL`` (bf16 keeps 8 mantissa bits, ~4e-3 per rounding;
    METHOD.md expects 1e-3 to 1e-2 for one bf16 op; a deep stack accumulates, hence 3e-2);
  * gradients: cosine similarity of the flattened parameter gradients with fp32's ``>= GRAD_COS`` (0.98);
  * the decoder's final layer: masked attention thresholds the previous layer's mask logits at 0, so a few
    pixels flip between precisions and the error grows layer by layer: ``DECODER_FINAL_TOL`` (1e-1); its initial
    prediction (before any masked attention) is held to ``FWD_TOL``;
  * the full ``gvseg.engine.train_step`` (matching, point-sampled losses, TCL, grad clip, AdamW): bf16 and fp32
    total loss within ``LOSS_TOL`` (1e-1 relative: the importance-sampled points and the Hungarian matching
    depend on the predictions themselves), every loss term and every updated weight finite;
  * ``compute_descriptor`` on CUDA equals the CPU result (``atol = rtol = DESC_TOL`` = 1e-4: float rounding in
    atan2/hypot may move a contour point's linear-binning weight by an ulp, never a whole count), and so does
    ``compute_descriptor_coded`` of a code map (against the CPU descriptor of its planes).

The tolerances are first settings, not yet checked on a GPU: a failure on the first lent machine is to be
read (which part, how far off) before any tolerance is moved.

Dry run of the same checks on CPU (bf16 CPU autocast, the debug-size config)::

    PYTHONPATH=platform python tests/test_gpu.py --cpu
"""

from __future__ import annotations

import copy
import sys

import pytest
import torch

from gvseg.config import (
    BackboneConfig,
    Config,
    DecoderConfig,
    DescriptorConfig,
    LossConfig,
    ModelConfig,
    PixelDecoderConfig,
    QueryInitConfig,
    TrainConfig,
)

gpu = pytest.mark.gpu

FWD_TOL = 3e-2
GRAD_COS = 0.98
DECODER_FINAL_TOL = 1e-1
LOSS_TOL = 1e-1
DESC_TOL = 1e-4
MEASURED: list[tuple[str, str, float]] = []  # (check, quantity, value): printed by the dry run
SHAPE = (2, 3, 160, 224)  # B clips, T frames, H, W (multiples of 32: the parts see what GvSeg.forward pads to)


def model_config(small: bool = False) -> ModelConfig:
    if not small:
        return ModelConfig(task="vps")
    return ModelConfig(task="vps", num_classes=4, num_thing_classes=2, backbone=BackboneConfig(name="test_resnet"),
                       pixel_decoder=PixelDecoderConfig(kind="msdeform", dim=32, num_layers=1, num_heads=4,
                                                        num_points=2, ffn_dim=64),
                       decoder=DecoderConfig(num_layers=3, dim=32, num_heads=4, ffn_dim=64, num_queries=10),
                       descriptor=DescriptorConfig(angle_bins=12, radius_bins=6, num_points=50),
                       queries=QueryInitConfig(grid_size=4, bank_warmup=2))


# ------------------------------------------------------------------------------------------------ helpers


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    a, ref = a.detach().double(), ref.detach().double()
    return float((a - ref).norm() / ref.norm().clamp_min(1e-12))


def grad_vector(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.detach().double().flatten() for p in module.parameters() if p.grad is not None])


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def projection_loss(tensors: list[torch.Tensor], seed: int = 0) -> torch.Tensor:
    """A scalar that reaches every element: sum of <t, fixed random weights>, computed in fp32."""
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for t in tensors:
        w = torch.randn(t.shape, generator=g).to(t.device)
        total = total + (t.float() * w).sum() / t.numel() ** 0.5
    return total


def run_twice(module: torch.nn.Module, fn, device: torch.device):
    """fn(module, amp) -> list of output tensors; returns (outs_fp32, grads_fp32, outs_bf16, grads_bf16)."""
    results = []
    for amp in (False, True):
        module.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            outs = fn(module)
        projection_loss(outs).backward()
        results += [[o.detach().float() for o in outs], grad_vector(module)]
    return results


def check(name: str, outs32, g32, outs16, g16, tol: float = FWD_TOL) -> None:
    for i, (a, ref) in enumerate(zip(outs16, outs32)):
        assert torch.isfinite(a).all(), f"{name} output {i}: non-finite under bf16"
        err = rel_err(a, ref)
        MEASURED.append((name, f"output {i} rel err", err))
        assert err <= tol, f"{name} output {i}: relative error {err:.3g} > {tol}"
    assert torch.isfinite(g16).all(), f"{name}: non-finite gradient under bf16"
    cos = cosine(g16, g32)
    MEASURED.append((name, "grad cosine", cos))
    assert cos >= GRAD_COS, f"{name}: gradient cosine {cos:.4f} < {GRAD_COS}"


@pytest.fixture
def dev():
    return torch.device("cuda")


@pytest.fixture(autouse=True)
def _fp32_reference():
    """fp32 means fp32: no TF32 matmuls or convolutions in the reference run."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def built(device: torch.device, small: bool = False):
    from gvseg.model.gvseg import build_gvseg

    torch.manual_seed(0)
    return build_gvseg(model_config(small)).to(device).train()


def frames(device: torch.device, seed: int = 1) -> torch.Tensor:
    b, t, h, w = SHAPE
    return torch.randn(b * t, 3, h, w, generator=torch.Generator().manual_seed(seed)).to(device)


# ------------------------------------------------------------------------------------------------ checks


def check_backbone(device: torch.device, small: bool = False) -> None:
    model = built(device, small)
    x = frames(device)
    out = run_twice(model.backbone, lambda m: [f for _, f in sorted(m(x).items())], device)
    check("backbone", *out)


def check_pixel_decoder(device: torch.device, small: bool = False) -> None:
    model = built(device, small)
    with torch.no_grad():
        feats = {k: v.detach() for k, v in model.backbone(frames(device)).items()}

    def fn(m):
        mask_features, memories = m(feats)
        return [mask_features, *memories]

    check("pixel_decoder", *run_twice(model.pixel_decoder, fn, device))


def check_decoder(device: torch.device, small: bool = False) -> None:
    model = built(device, small)
    b, t, h, w = SHAPE
    with torch.no_grad():
        feats = model.backbone(frames(device))
        mask_features, memories = model.pixel_decoder(feats)
        qs = model.query_init(feats, b, t, (h, w), torch.tensor([[h, w]] * b, device=device))
    content, pos = qs.content.detach(), qs.pos.detach()
    mask_features, memories = mask_features.detach(), [m.detach() for m in memories]

    def fn(m):
        out = m(content, pos, memories, mask_features, t, None)
        first = out["aux_outputs"][0]
        return [first["pred_logits"], first["pred_masks"], out["pred_logits"], out["pred_masks"], out["pred_embeds"]]

    o32, g32, o16, g16 = run_twice(model.decoder, fn, device)
    check("decoder (initial prediction)", o32[:2], g32, o16[:2], g16)
    check("decoder (final layer)", o32[2:], g32, o16[2:], g16, tol=DECODER_FINAL_TOL)


def check_train_step(device: torch.device, small: bool = False) -> None:
    from gvseg import engine
    from gvseg.structures import Clip, Targets

    b, t, h, w = SHAPE
    h, w = h - 8, w - 24  # not multiples of 32: GvSeg pads
    mcfg = model_config(small)
    g = torch.Generator().manual_seed(2)

    def clip(start: int) -> Clip:
        targets = []
        for _ in range(b):
            k = 4
            masks = torch.zeros(k, t, h, w, dtype=torch.bool)
            for j in range(k):
                y, x = int(torch.randint(0, h // 2, (1,), generator=g)), int(torch.randint(0, w // 2, (1,), generator=g))
                for f in range(t):
                    masks[j, f, y + 2 * f: y + 2 * f + h // 3, x + 3 * f: x + 3 * f + w // 3] = True
            labels = torch.tensor([0, 1, mcfg.num_thing_classes, mcfg.num_classes - 1])
            targets.append(Targets(masks, labels, torch.arange(1, k + 1), labels < mcfg.num_thing_classes))
        return Clip(torch.randn(b, t, 3, h, w, generator=g), torch.tensor([[h, w]] * b),
                    (torch.arange(t) + start).repeat(b, 1), [f"v{i}" for i in range(b)], targets).to(device)

    key = clip(0)
    key.reference = clip(6)
    results = {}
    state = None
    for amp in ("off", "bf16"):
        cfg = Config(model=mcfg, loss=LossConfig(num_points=2048), train=TrainConfig(amp=amp))
        engine.seed_everything(0)
        parts = engine.build_parts(cfg, device)
        if state is None:
            state = copy.deepcopy(parts.model.state_dict())
        else:
            parts.model.load_state_dict(state)
        if device.type == "cpu" and amp == "bf16":  # train_step autocasts on CUDA only: the dry run does it here
            with torch.autocast("cpu", dtype=torch.bfloat16):
                res = engine.train_step(parts, key, cfg)
        else:
            torch.manual_seed(0)
            res = engine.train_step(parts, key, cfg)
        assert res.finite, f"train_step amp={amp}: non-finite loss"
        assert all(torch.isfinite(torch.tensor(v)) for v in res.losses.values()), res.losses
        bad = [n for n, p in parts.model.named_parameters() if not torch.isfinite(p).all()]
        assert not bad, f"train_step amp={amp}: non-finite weights after the step: {bad[:5]}"
        results[amp] = res
    rel = abs(results["bf16"].loss - results["off"].loss) / abs(results["off"].loss)
    MEASURED.append(("train_step", "loss rel diff", rel))
    assert rel <= LOSS_TOL, f"train_step: bf16 loss {results['bf16'].loss:.4f} vs fp32 {results['off'].loss:.4f}"


def check_descriptor(device: torch.device) -> None:
    from gvseg.model.descriptor import compute_descriptor

    g = torch.Generator().manual_seed(3)
    for n, (h, w), down, prob in ((100, (720, 1280), None, False), (300, (180, 320), 1, False),
                                  (50, (180, 320), 1, True), (7, (97, 131), 2, False)):
        cy, cx = torch.rand(n, generator=g) * h, torch.rand(n, generator=g) * w
        ry, rx = 2 + torch.rand(n, generator=g) * h / 4, 2 + torch.rand(n, generator=g) * w / 4
        yy, xx = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
        d2 = ((yy - cy[:, None, None]) / ry[:, None, None]) ** 2 + ((xx - cx[:, None, None]) / rx[:, None, None]) ** 2
        masks = (1.5 - d2).clamp(0, 1) if prob else d2 <= 1
        masks[0] = False if not prob else 0.0  # one empty mask
        canvas = torch.tensor([[h, w]] * n)
        cfg = DescriptorConfig()
        cpu = compute_descriptor(masks, canvas, cfg, 256, downsample=down)
        got = compute_descriptor(masks.to(device), canvas.to(device), cfg, 256, downsample=down)
        assert got.device.type == device.type
        torch.testing.assert_close(got.cpu(), cpu, atol=DESC_TOL, rtol=DESC_TOL,
                                   msg=lambda m, n=n, h=h, w=w: f"descriptor {n} masks {h}x{w}: {m}")


def check_coded_descriptor(device: torch.device) -> None:
    """The code-map descriptor (the clip pipeline's targets) on ``device`` equals the CPU planes' descriptor."""
    from gvseg.model.descriptor import compute_descriptor, compute_descriptor_coded

    g = torch.Generator().manual_seed(4)
    h, w = 480, 832
    code = torch.randint(0, 40, (h // 16, w // 16), generator=g).to(torch.uint8)
    code = code.repeat_interleave(16, 0).repeat_interleave(16, 1).contiguous()  # [h, w] blocks of 40 codes
    code[:64, :64] = 255  # void
    tube_codes = torch.tensor([3, 0, 39, 17, 200], dtype=torch.uint8)  # 200: absent
    canvas = torch.tensor([[h, w]] * 5)
    cfg = DescriptorConfig()
    cpu = compute_descriptor(code[None] == tube_codes[:, None, None], canvas, cfg, 256)
    got = compute_descriptor_coded([code.to(device)], [tube_codes.to(device)], canvas.to(device), cfg, 256)
    assert got.device.type == device.type
    torch.testing.assert_close(got.cpu(), cpu, atol=DESC_TOL, rtol=DESC_TOL)


# ------------------------------------------------------------------------------------------------ tests


@gpu
def test_backbone_bf16_matches_fp32(dev):
    check_backbone(dev)


@gpu
def test_pixel_decoder_bf16_matches_fp32(dev):
    check_pixel_decoder(dev)


@gpu
def test_decoder_bf16_matches_fp32(dev):
    check_decoder(dev)


@gpu
def test_train_step_bf16_matches_fp32(dev):
    check_train_step(dev)


@gpu
def test_descriptor_cuda_equals_cpu(dev):
    check_descriptor(dev)


@gpu
def test_coded_descriptor_cuda_equals_cpu_planes(dev):
    check_coded_descriptor(dev)


@pytest.mark.slow
def test_gpu_suite_smoke_runs_on_cpu(tmp_path):
    """The device suite's plumbing on CPU (no GPU needed): one cheap measurement, the rest skipped with a reason;
    at most 8 files, each naming the machine."""
    import json
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root / "platform"), "GVSEG_NO_PEER": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "gpu_suite.py"), "--smoke", "--only", "descriptor",
                          "--out", str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) <= 8 and "summary.json" in files and "descriptor.json" in files, files
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["measurements"]["descriptor"]["status"] == "ok", summary
    assert {m["status"] for k, m in summary["measurements"].items() if k != "descriptor"} == {"skipped"}
    rec = json.loads((tmp_path / "descriptor.json").read_text())
    assert {"gpu", "driver", "torch", "cuda"} <= set(rec["machine"]), rec["machine"]
    assert len(rec["raw"]["sec_per_call"]["gt_100_masks"]) == rec["settings"]["repeats"]


if __name__ == "__main__":  # CPU dry run of the check code (not of the tolerances: CPU autocast covers fewer ops)
    if "--cpu" not in sys.argv:
        raise SystemExit("usage: PYTHONPATH=platform python tests/test_gpu.py --cpu   (or pytest -m gpu on CUDA)")
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    SHAPE = (1, 3, 64, 96)
    for fn in (check_backbone, check_pixel_decoder, check_decoder, check_train_step):
        try:
            fn(cpu, small=True)
            print(f"{fn.__name__}: ok", flush=True)
        except AssertionError as e:
            print(f"{fn.__name__}: assertion (CPU bf16 numbers, informative only): {e}", flush=True)
    print("check_descriptor (cpu vs cpu): ", end="", flush=True)
    check_descriptor(cpu)
    check_coded_descriptor(cpu)
    print("ok")
    for name, what, value in MEASURED:
        print(f"  {name:30s} {what:18s} {value:.3g}")
