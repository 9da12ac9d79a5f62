"""The device path (`--device cuda`) run on the host SIMT runtime, against the CPU backend.

$PARCHGRAD_SIM_BIN is a build of the command line configured with -DPARCHGRAD_CUDA=SIM (CTest
builds it first: the fixture test device_simt_build). In that build every layer of the device
path is the real one: device tensors from the caching arena, the kernels of kernels/cuda (ReLU
masks, max/avg/adaptive pools, residual add, bias, GAP, M/N, the seed, the data-gradient
convolution in fp32/TF32/BF16 with the ParchGrad scale fused, the map reductions) running on
CPU fibers, the tape and ParchGrad's device reduction; only the library calls (cuDNN forward
convolution and data-gradient, cuBLAS linear layers) are served by the CPU backend's kernels.
The same binary's `--device cpu` is the reference.

Since the forward pass of the SIMT device is bitwise the CPU's (same convolution, same bias
and ReLU arithmetic), float32 maps differ only by the summation order of the data-gradient
kernel: they are held to 1e-5 relative (of each map's maximum). TF32 and BF16 are held to the
GPU criterion (3e-2 relative, Spearman rank correlation above 0.98).
"""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torchvision.models.vgg import VGG, make_layers

import parity_common as pc

torch.set_num_threads(2)

SIM_BIN = os.environ.get("PARCHGRAD_SIM_BIN")
if not SIM_BIN or not os.path.exists(SIM_BIN):
    raise RuntimeError(f"PARCHGRAD_SIM_BIN={SIM_BIN!r}: the PARCHGRAD_CUDA=SIM build of parchgrad is needed "
                       "(ctest builds it in the fixture test device_simt_build)")
SRC = os.environ.get("PARCHGRAD_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_WEIGHTS = os.path.join(SRC, "assets", "default", "resnet_synth.pth")
DEFAULT_STATS = os.path.join(SRC, "assets", "default", "stats.safetensors")
EXAMPLES = os.path.join(SRC, "assets", "default", "examples")
SCRATCH = os.path.join(pc.scratch_dir(), "device_simt")
os.makedirs(SCRATCH, exist_ok=True)
ENV = dict(os.environ, PG_SIMT_THREADS="2", OMP_NUM_THREADS="2")

FP32_TOL = 1e-5


def run(args, check=True, timeout=900):
    proc = subprocess.run([SIM_BIN] + args, capture_output=True, text=True, timeout=timeout, env=ENV)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def rel(a, b):
    """Largest difference relative to the reference's largest magnitude."""
    scale = float(np.abs(b).max())
    assert scale > 0, "reference is all zeros"
    return float(np.abs(a - b).max()) / scale


def gradient_matches_cpu(label, model, weights, x, target):
    """`gradient` of x (float32 [n, 3, h, w]) for --target on the device and on the CPU backend:
    the logits bit for bit (the forward pass of the SIMT device is the CPU's), each sample's input
    gradient within FP32_TOL, and the logits within 1e-4 of PyTorch's (the CPU backend's own
    parity is tests/python/test_parity.py). Returns the input's .npy file."""
    inp = pc.save_npy(os.path.join(SCRATCH, f"{label}_x.npy"), x)
    got = {}
    for dev in ("cpu", "cuda"):
        prefix = os.path.join(SCRATCH, f"{label}_{dev}")
        run(["gradient", "--weights", weights, "--input", inp, f"--target={target}", "--device", dev,
             "--logits-out", prefix + "_logits.npy", "--grad-out", prefix + "_grad.npy"])
        got[dev] = (np.load(prefix + "_logits.npy"), np.load(prefix + "_grad.npy"))
    np.testing.assert_array_equal(got["cuda"][0], got["cpu"][0])
    for n in range(x.shape[0]):
        err = rel(got["cuda"][1][n], got["cpu"][1][n])
        assert err < FP32_TOL, f"{label} sample {n}: input gradient differs by {err:.3g}"
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert rel(got["cuda"][0], want) < 1e-4
    return inp


def masks_match(cpu_file, dev_file, label):
    """--explain-masks records of the CPU and the device: the same hooked layers, the same channels
    kept in each, M, N and beta to 1e-5. Returns the layers' names."""
    a = json.load(open(cpu_file))["layers"]
    b = json.load(open(dev_file))["layers"]
    assert [l["name"] for l in a] == [l["name"] for l in b]
    for la, lb in zip(a, b):
        assert la.get("kept") == lb.get("kept"), f"{label} {la['name']}: different H"
        for key in ("M", "N", "beta"):
            if key in la:
                assert abs(la[key] - lb[key]) <= 1e-5 * abs(la[key]), f"{label} {la['name']} {key}"
    return [l["name"] for l in a]


# ---- small models of all 13 architectures ----------------------------------------------------
# The torchvision layout of each (block type and stage depths, VGG configuration with or without
# BatchNorm, three classifier layers), with every width divided by 16 so that the SIMT runtime
# gets through them in seconds; the engine takes the widths from the weights.
RESNET_DEPTHS = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet34": ("basic", (3, 4, 6, 3)),
                 "resnet50": ("bottleneck", (3, 4, 6, 3)), "resnet101": ("bottleneck", (3, 4, 23, 3)),
                 "resnet152": ("bottleneck", (3, 8, 36, 3))}
VGG_CFGS = {"vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
            "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
            "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
            "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
                      512, 512, 512, 512, "M"]}


def small_model(arch, seed):
    if arch in RESNET_DEPTHS:
        kind, depths = RESNET_DEPTHS[arch]
        block = pc.BasicBlock if kind == "basic" else pc.Bottleneck
        return pc.build_small_resnet(block, (4, 8, 16, 32), depths, num_classes=7, seed=seed)
    base, bn = arch.replace("_bn", ""), arch.endswith("_bn")
    cfg = [c if c == "M" else c // 16 for c in VGG_CFGS[base]]
    torch.manual_seed(seed)
    model = VGG(make_layers(cfg, batch_norm=bn), num_classes=5)
    last = cfg[-2]
    model.classifier = torch.nn.Sequential(
        torch.nn.Linear(last * 49, 24), torch.nn.ReLU(True), torch.nn.Dropout(),
        torch.nn.Linear(24, 24), torch.nn.ReLU(True), torch.nn.Dropout(), torch.nn.Linear(24, 5))
    return pc._finish(model, seed)


@pytest.mark.parametrize("arch", pc.ARCHS)
def test_architecture_matches_cpu(arch):
    seed = pc.stable_seed("device", arch)
    model = small_model(arch, seed)
    weights = pc.save_weights(pc.model_state_dict(model), os.path.join(SCRATCH, f"{arch}.pth"), "zip")
    gradient_matches_cpu(arch, model, weights, pc.make_input(2, 48, 40, seed).numpy(), "top1,2")


def saliency(out, args, device, extra=()):
    shutil.rmtree(out, ignore_errors=True)
    run(["saliency", "--weights", DEFAULT_WEIGHTS, "--out", out, "--device", device] + list(args) + list(extra))
    return out



@pytest.fixture(scope="module")
def small_inputs():
    """Three example images at 96x96 as one .npy batch (the SIMT runtime is slow)."""
    names = sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".png"))[:3]
    return pc.save_npy(os.path.join(SCRATCH, "examples96.npy"), pc.small_image_batch(EXAMPLES, names, 96))


CASES = {
    "methods": ["--compare", "grad,inputgrad,gradcam,ig,smoothgrad", "--ig-steps", "3", "--sg-samples", "2",
                "--seed", "5"],
    "parchgrad_inf": ["--compare", "grad+cls,grad+ins,inputgrad+cls", "--stats", DEFAULT_STATS, "--explain-masks"],
    "parchgrad_finite": ["--compare", "grad+cls,grad+ins", "--stats", DEFAULT_STATS, "--gamma", "2.0",
                         "--alpha", "0.05", "--layers", "ratio:1.0", "--explain-masks"],
    "parchgrad_exact": ["--compare", "grad+cls,ig+ins", "--stats", DEFAULT_STATS, "--gamma", "2.0",
                        "--exact-variance", "--ig-steps", "2", "--explain-masks"],
    "parchgrad_novc": ["--compare", "grad+ins,smoothgrad+cls", "--stats", DEFAULT_STATS, "--sg-samples", "2",
                       "--no-variance-conservation", "--layers", "layer34"],
    # Grad-CAM at a layer the model does not capture itself (the forward walked to it on the
    # device), with ParchGrad above it; IG from the blurred input.
    "gradcam_layer": ["--compare", "gradcam,gradcam+cls,ig", "--stats", DEFAULT_STATS, "--gradcam-layer", "layer3",
                      "--ig-baseline", "blurred", "--ig-blur-sigma", "4", "--ig-steps", "2"],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_saliency_matches_cpu(case, small_inputs):
    args = [small_inputs, "--target", "top1"] + CASES[case]
    cpu = pc.maps_of(saliency(os.path.join(SCRATCH, f"{case}_cpu"), args, "cpu"))
    dev = pc.maps_of(saliency(os.path.join(SCRATCH, f"{case}_cuda"), args, "cuda"))
    assert sorted(dev) == sorted(cpu) and cpu
    for name in cpu:
        err = rel(dev[name], cpu[name])
        assert err < FP32_TOL, f"{case}: {name} differs by {err:.3g}"
    # Masks: the same channels kept in every hooked layer; M, N, beta to 1e-5.
    for f in sorted(os.listdir(os.path.join(SCRATCH, f"{case}_cpu"))):
        if f.endswith(".masks.json"):
            masks_match(os.path.join(SCRATCH, f"{case}_cpu", f), os.path.join(SCRATCH, f"{case}_cuda", f), f"{case} {f}")


def test_dgrad_library_and_determinism(small_inputs):
    args = [small_inputs, "--compare", "grad,grad+cls", "--stats", DEFAULT_STATS]
    eng = pc.maps_of(saliency(os.path.join(SCRATCH, "det_a"), args, "cuda", ["--deterministic"]))
    again = pc.maps_of(saliency(os.path.join(SCRATCH, "det_b"), args, "cuda", ["--deterministic"]))
    lib = pc.maps_of(saliency(os.path.join(SCRATCH, "det_lib"), args, "cuda", ["--dgrad", "cudnn"]))
    for name in eng:
        np.testing.assert_array_equal(again[name], eng[name], err_msg=f"{name} not reproducible")
        err = rel(lib[name], eng[name])
        assert err < FP32_TOL, f"--dgrad cudnn: {name} differs by {err:.3g}"


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_reduced_precision(precision, small_inputs):
    args = [small_inputs, "--compare", "grad,grad+cls", "--stats", DEFAULT_STATS]
    ref = pc.maps_of(saliency(os.path.join(SCRATCH, "prec_fp32"), args, "cuda"))
    got = pc.maps_of(saliency(os.path.join(SCRATCH, f"prec_{precision}"), args, "cuda", ["--precision", precision]))
    worst_rel, worst_rho = 0.0, 1.0
    for name in ref:
        err = rel(got[name], ref[name])
        rho = spearmanr(got[name].ravel(), ref[name].ravel()).correlation
        worst_rel, worst_rho = max(worst_rel, err), min(worst_rho, rho)
        assert err < 3e-2, f"{precision}: {name} differs by {err:.3g}"
        assert rho > 0.98, f"{precision}: {name} rank correlation {rho:.4f}"
        assert err > 0, f"{precision}: {name} equals float32 exactly: the precision was not applied"
    print(f"{precision}: worst relative error {worst_rel:.3g}, worst Spearman {worst_rho:.5f}")


def test_stats_match_cpu():
    data = os.path.join(SCRATCH, "stats_data")
    from PIL import Image
    rng = np.random.default_rng(3)
    for c in range(3):
        os.makedirs(os.path.join(data, f"class{c}"), exist_ok=True)
        for i in range(4):
            img = (rng.uniform(0, 255, (40, 40, 3)) * (0.3 + 0.3 * c)).astype(np.uint8)
            Image.fromarray(img).save(os.path.join(data, f"class{c}", f"{i}.png"))
    out = {}
    for dev in ("cpu", "cuda"):
        path = os.path.join(SCRATCH, f"stats_{dev}.safetensors")
        run(["stats", "--weights", DEFAULT_WEIGHTS, "--data", data, "--out", path, "--device", dev, "--batch", "5"])
        out[dev] = pc.read_safetensors(path)
    t_cpu, t_dev = out["cpu"], out["cuda"]
    assert sorted(t_cpu) == sorted(t_dev) and t_cpu
    for k in t_cpu:
        a, b = np.asarray(t_dev[k], np.float64), np.asarray(t_cpu[k], np.float64)
        assert np.allclose(a, b, rtol=1e-5, atol=1e-7), f"{k}: max difference {np.abs(a - b).max():.3g}"


def test_bench_reports_the_backend():
    proc = run(["bench", "--model", "resnet18", "--batch", "2", "--size", "32", "--iters", "1", "--warmup", "0",
                "--device", "cuda", "--parchgrad", "cls", "--json"])
    j = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])
    assert j["device"] == "cuda" and j["backend"] == "simt" and j["saliency_ips"] > 0
    assert j["parchgrad_cls_ips"] > 0


@pytest.mark.parametrize("flags,message", [
    (["--device", "tpu"], "--device: 'tpu' is not cpu or cuda"),
    (["--device", "cuda", "--precision", "fp16"], "--precision: 'fp16' is not fp32, tf32 or bf16"),
    (["--precision", "bf16"], "--precision bf16 needs --device cuda"),
    (["--device", "cuda", "--dgrad", "winograd"], "--dgrad: 'winograd' is not engine or cudnn"),
    (["--device", "cuda", "--gpu", "3"], "device 3 does not exist"),
])
def test_bad_device_flags(flags, message, small_inputs):
    out = os.path.join(SCRATCH, "bad_flags")
    proc = run(["saliency", "--weights", DEFAULT_WEIGHTS, "--out", out, small_inputs] + flags, check=False)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not os.path.exists(out) or not any(f.endswith(".npy") for f in os.listdir(out))


def test_images_normalised_on_device():
    """PNG inputs on the device go up as uint8 and are normalised by the device kernel: the
    same maps as the CPU (IG rebuilds its inputs on the host from the device's tensor), and
    the same overlay strip up to the 8-bit rounding of maps that differ by float32 rounding
    (the data-gradient kernel sums in another order than the CPU's OpenBLAS, whose kernels
    depend on the processor): at most one level, on at most 1% of the values."""
    files = [os.path.join(EXAMPLES, "star.png")]
    args = files + ["--compare", "grad,ig,gradcam", "--ig-steps", "1"]
    cpu_dir = saliency(os.path.join(SCRATCH, "png_cpu"), args, "cpu")
    dev_dir = saliency(os.path.join(SCRATCH, "png_cuda"), args, "cuda")
    cpu, dev = pc.maps_of(cpu_dir), pc.maps_of(dev_dir)
    assert sorted(cpu) == sorted(dev) and len(cpu) == 3
    for name in cpu:
        err = rel(dev[name], cpu[name])
        assert err < FP32_TOL, f"{name} differs by {err:.3g}"
    from PIL import Image
    for stem in ("star",):
        a = np.asarray(Image.open(os.path.join(cpu_dir, stem + ".compare.png")), np.int16)
        b = np.asarray(Image.open(os.path.join(dev_dir, stem + ".compare.png")), np.int16)
        assert a.shape == b.shape, f"{stem}.compare.png: {a.shape} against {b.shape}"
        d = np.abs(a - b)
        assert d.max() <= 1, f"{stem}.compare.png differs by {d.max()} levels"
        assert (d > 0).mean() < 0.01, f"{stem}.compare.png: {100 * (d > 0).mean():.2f}% of the values differ"


def test_eval_matches_cpu(small_inputs):
    # Two of the 96x96 example tensors, one per class folder (eval's masked copies are many).
    data = os.path.join(SCRATCH, "eval_data")
    x = np.load(small_inputs)
    for i in range(2):
        os.makedirs(os.path.join(data, f"c{i}"), exist_ok=True)
        pc.save_npy(os.path.join(data, f"c{i}", f"s{i}.npy"), x[i])
    recs = {}
    for dev in ("cpu", "cuda"):
        out = os.path.join(SCRATCH, f"eval_{dev}")
        if os.path.exists(out + ".jsonl"):
            os.remove(out + ".jsonl")
        run(["eval", "--weights", DEFAULT_WEIGHTS, "--stats", DEFAULT_STATS, "--data", data,
             "--methods", "grad,grad+cls", "--auc-steps", "4", "--out", out, "--device", dev])
        recs[dev] = [json.loads(line) for line in open(out + ".jsonl")]
    assert len(recs["cpu"]) == len(recs["cuda"]) == 4

    def numbers(v, path=""):
        if isinstance(v, dict):
            for k, x in v.items():
                yield from numbers(x, path + "." + k)
        elif isinstance(v, list):
            for i, x in enumerate(v):
                yield from numbers(x, f"{path}[{i}]")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            yield path, float(v)

    for a, b in zip(recs["cpu"], recs["cuda"]):
        na, nb = dict(numbers(a)), dict(numbers(b))
        assert na.keys() == nb.keys()
        for k in na:
            if "seconds" in k or "time" in k:
                continue
            assert abs(na[k] - nb[k]) <= 1e-4 * max(1.0, abs(na[k])), f"{a['method']} {k}: {na[k]} vs {nb[k]}"


def test_convnext_matches_cpu():
    """A narrow torchvision ConvNeXt (widths 8/16/32/64, one or two CNBlocks per stage: the
    engine infers it from the weights) on the device path: LayerNorm, GELU and the depthwise
    7x7 data gradient on the device kernels, the blocks' Linear layers as 1x1 convs; logits bit
    for bit and input gradients within FP32_TOL of the CPU backend, logits within 1e-4 of PyTorch."""
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt
    torch.manual_seed(3)
    model = ConvNeXt([CNBlockConfig(8, 16, 1), CNBlockConfig(16, 32, 1), CNBlockConfig(32, 64, 2),
                      CNBlockConfig(64, None, 1)], num_classes=5)
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layer_scale") or name.endswith("bias"):
                p.copy_(torch.rand(p.shape, generator=gen) * 0.5 + 0.25)
    model = pc._finish(model, 4)
    weights = pc.save_weights(pc.model_state_dict(model), os.path.join(SCRATCH, "convnext_small_widths.safetensors"),
                              "safetensors")
    gradient_matches_cpu("convnext", model, weights, pc.make_input(2, 48, 40, 4).numpy(), "top1,2")


# The last block's depthwise conv, SE convs and projection and the last conv: at 32x32 all of
# them have a 1x1 output (every conv would cost the SIMT runtime 20 s).
SE_MODEL_LAYERS = {
    "efficientnet_b0": "features.7.0.block.1.0,features.7.0.block.2.fc1,features.7.0.block.2.fc2,"
                       "features.7.0.block.3.0,features.8.0",
    "mobilenet_v3_small": "features.11.block.1.0,features.11.block.2.fc1,features.11.block.2.fc2,"
                          "features.11.block.3.0,features.12.0"}


@pytest.mark.parametrize("arch", sorted(SE_MODEL_LAYERS))
def test_efficientnet_mobilenet_v3_match_cpu(arch):
    """efficientnet_b0 and mobilenet_v3_small (random weights, 32x32, one image) on the device
    path: SiLU/sigmoid or hardswish/hardsigmoid and the squeeze-and-excitation product on the
    device kernels, the depthwise data gradient; logits bit for bit and input gradients within
    FP32_TOL of the CPU backend, logits within 1e-4 of PyTorch; and grad with class-wise
    ParchGrad on convs with a 1x1 output (SE_MODEL_LAYERS: M and N of a single position on the
    device's reduction) against the CPU: maps within FP32_TOL, the same channels kept, M, N and
    beta to 1e-5."""
    import parchgrad_ref as ref
    seed = pc.stable_seed("device", arch)
    model = pc.build_model(arch, 5, seed)
    x = pc.make_input(1, 32, 32, seed)
    pc.calibrate_logits(model, x)
    weights = pc.save_weights(pc.model_state_dict(model), os.path.join(SCRATCH, f"{arch}.safetensors"), "safetensors")
    inp = gradient_matches_cpu(arch, model, weights, x.numpy(), "top1")
    for m in model.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    stats = ref.write_stats(ref.random_stats(model, 5, x, seed), os.path.join(SCRATCH, f"{arch}_stats.safetensors"),
                            arch, 5, write=pc.write_safetensors)
    outs = {}
    for dev in ("cpu", "cuda"):
        out = os.path.join(SCRATCH, f"{arch}_pg_{dev}")
        shutil.rmtree(out, ignore_errors=True)
        run(["saliency", "--weights", weights, "--method", "grad", "--parchgrad", "cls", "--stats", stats,
             "--gamma", "2", "--layers", SE_MODEL_LAYERS[arch], "--target", "top1", "--explain-masks", "--device", dev,
             "--out", out, inp])
        outs[dev] = out
    cpu, dev = pc.maps_of(outs["cpu"]), pc.maps_of(outs["cuda"])
    assert sorted(dev) == sorted(cpu) and cpu
    for name in cpu:
        err = rel(dev[name], cpu[name])
        assert err < FP32_TOL, f"{arch} ParchGrad: {name} differs by {err:.3g}"
    masks = [f for f in os.listdir(outs["cpu"]) if f.endswith(".masks.json")]
    assert len(masks) == 1
    names = masks_match(os.path.join(outs["cpu"], masks[0]), os.path.join(outs["cuda"], masks[0]), arch)
    assert names == SE_MODEL_LAYERS[arch].split(",")
