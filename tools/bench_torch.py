#!/usr/bin/env python3
"""bench_torch: the PyTorch half of `make bench` (DESIGN §4): the computations tools/bench.c
times in mcm, with the reference implementations at the same sizes, timed the same way
(warm-up, then the median of N iterations, each between two synchronisations), written in the
same JSON schema for tools/bench_report.py.

  python3 tools/bench_torch.py --device cuda|cpu --size full|small [--iters N] [--warmup N]
                               [--only CASE[,CASE]] [--out FILE.json] [--allow-tf32] [--batch N]

Cases (fp32 rows; bf16 rows cast the model with model.to(torch.bfloat16) and its inputs, and
return fp32 as mcm does):
  unet_fwd    diffusers UNet2DConditionModel as MusicLDM configures it (tests/fixtures/
              model_unet.py: simple_projection class embedding concatenated to the time
              embedding, no encoder_hidden_states), the original's 32-channel heads given as
              per-level head counts (4, 8, 12, 20), B = 2
  unet_train  the same, trainable, forward + MSE + backward, B = 8, fp32
  vae_decode  diffusers AutoencoderKL with MusicLDM's config, decode(z), B = 1
  vocoder     transformers SpeechT5HifiGan with MusicLDM's config_16k_64, B = 1
  audiomae    AudioMAE ViT-B (tests/fixtures/model_audiomae.py's MaskedAutoencoderViT, its
              attention through F.scaled_dot_product_attention as timm's fused attention
              runs it), readouts at the adversarial taps, gradient of their sum to the fbank
  sample_cm4  4 LCM steps (999, 759, 499, 259; c_skip / c_out as diffusers' LCMScheduler),
              VAE decode of latent / scaling_factor, vocoder
Settings: torch.backends.cudnn.benchmark = True; torch.no_grad() except unet_train and
audiomae; TF32 off unless --allow-tf32 (mcm's fp32 is true fp32: cuBLAS COMPUTE_32F and cuDNN
FMA math). FLOPs: one extra iteration under torch.utils.flop_counter.FlopCounterMode, a
cross-check of mcm's own count (matrix products only).

SIZES below must stay identical to sizes_full / sizes_small in tools/bench.c: the report
compares each row's shape string and flags a difference.

On the GPU machine (PyTorch, transformers, h5py, huggingface_hub 1.x, requests, pillow there,
but no diffusers and no network): diffusers 0.33.1 is pure Python and is the only wheel to
carry. Here, once, in the repository root (.whl/ is git-ignored; the device call carries it):
    python3 -m pip download --no-deps --only-binary=:all: -d .whl diffusers==0.33.1
then, there, with .whl carried:
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
Its other requirements (filelock, huggingface-hub, numpy, regex, requests, safetensors,
Pillow) are on that machine; importlib-metadata is a requirement only below Python 3.8
(diffusers imports importlib.metadata on 3.12). Checked here: diffusers 0.33.1 imports with
huggingface_hub 1.33.0 and transformers 5.17.0, the versions listed for that machine. Without
diffusers the UNet, VAE and sampler rows are recorded as errors and the rest still runs.
"""
import argparse
import datetime
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
sys.path.insert(0, os.path.join(ROOT, "tools"))

CASES = ("unet_fwd", "unet_train", "vae_decode", "vocoder", "audiomae", "sample_cm4")
BF16 = {"unet_fwd", "vae_decode", "vocoder", "audiomae", "sample_cm4"}  # unet_train: fp32 only
GRAD = {"unet_train", "audiomae"}
SAMPLE_STEPS = 4
LCM_TIMESTEPS = (999, 759, 499, 259)  # lcm_timesteps(4) on the 50-step origin grid

SIZES = {
    "full": dict(
        unet=dict(boc=(128, 256, 384, 640), attn=(False, True, True, True), lpb=2, groups=32, head_channels=32,
                  class_in=512),
        vae=dict(boc=(128, 256, 512), lpb=2, groups=32, latent=8, scaling=1.0753),
        voc=dict(in_dim=64, initial=1024, rates=[5, 4, 2, 2, 2], kernels=[16, 16, 8, 4, 4], res_k=[3, 7, 11],
                 res_d=[[1, 3, 5], [1, 3, 5], [1, 3, 5]]),
        mae=dict(img=(1024, 128), patch=16, embed=768, depth=12, heads=12, taps=(-1, 2, 5, 8, 11)),
        lat=(8, 256, 16), b_fwd=2, b_train=8, b_mae=8),
    "small": dict(
        unet=dict(boc=(32, 64), attn=(False, True), lpb=1, groups=8, head_channels=16, class_in=32),
        vae=dict(boc=(32, 64), lpb=1, groups=8, latent=8, scaling=1.0753),
        voc=dict(in_dim=16, initial=32, rates=[5, 4, 2, 2, 2], kernels=[10, 8, 4, 4, 4], res_k=[3], res_d=[[1, 3]]),
        mae=dict(img=(64, 32), patch=8, embed=64, depth=4, heads=4, taps=(-1, 1, 3)),
        lat=(8, 32, 8), b_fwd=2, b_train=8, b_mae=8),
}


# ------------------------------------------------------------------ models

def make_unet(sz):
    from diffusers import UNet2DConditionModel
    u = sz["unet"]
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in u["attn"])
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(u["attn"]))
    heads = tuple(c // u["head_channels"] for c in u["boc"])  # diffusers' legacy attention_head_dim = heads
    return UNet2DConditionModel(
        sample_size=sz["lat"][1], in_channels=sz["lat"][0], out_channels=sz["lat"][0], down_block_types=down,
        up_block_types=up, block_out_channels=u["boc"], layers_per_block=u["lpb"], norm_num_groups=u["groups"],
        cross_attention_dim=list(u["boc"]), attention_head_dim=heads, class_embed_type="simple_projection",
        projection_class_embeddings_input_dim=u["class_in"], class_embeddings_concat=True)


def make_vae(sz):
    from diffusers import AutoencoderKL
    v = sz["vae"]
    n = len(v["boc"])
    return AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=v["boc"],
                         layers_per_block=v["lpb"], norm_num_groups=v["groups"], latent_channels=v["latent"],
                         scaling_factor=v["scaling"])


def make_vocoder(sz):
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig
    v = sz["voc"]
    cfg = SpeechT5HifiGanConfig(model_in_dim=v["in_dim"], sampling_rate=16000, upsample_initial_channel=v["initial"],
                                upsample_rates=v["rates"], upsample_kernel_sizes=v["kernels"],
                                resblock_kernel_sizes=v["res_k"], resblock_dilation_sizes=v["res_d"],
                                leaky_relu_slope=0.1, normalize_before=False)
    voc = SpeechT5HifiGan(cfg)
    # PyTorch's default conv init, as mcm's hifigan_init_random: transformers' N(0, 0.01) shrinks
    # the signal through the stack into denormals, which the CPU computes many times slower.
    for m in voc.modules():
        if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
            m.reset_parameters()
    return voc


def sdpa_attention_forward(self, x):
    """timm's Attention with fused_attn (its default): the same computation as the
    fixture's explicit softmax(q kᵀ) v, through F.scaled_dot_product_attention."""
    B, N, C = x.shape
    qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
    x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
    return self.proj(x.transpose(1, 2).reshape(B, N, C))


def make_audiomae(sz):
    import model_audiomae as mm
    mm.Attention.forward = sdpa_attention_forward
    m = sz["mae"]
    return mm.MaskedAutoencoderViT(img_size=m["img"], patch_size=m["patch"], in_chans=1, embed_dim=m["embed"],
                                   depth=m["depth"], num_heads=m["heads"], decoder_embed_dim=16, decoder_depth=1,
                                   decoder_num_heads=2, mlp_ratio=4.0, eps=1e-6)


def alphas_cumprod():
    """MusicLDM's schedule: scaled_linear betas 0.0015 .. 0.0195 over 1000 steps."""
    betas = torch.linspace(0.0015 ** 0.5, 0.0195 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0)


def boundary(t, sigma_data=0.5, timestep_scaling=10.0):
    st = t * timestep_scaling
    return sigma_data ** 2 / (st ** 2 + sigma_data ** 2), st / (st ** 2 + sigma_data ** 2) ** 0.5


def vocoder_len(sz, frames):
    """Output samples of SpeechT5HifiGan for `frames` mel frames (what the model returns)."""
    n = frames
    for u, k in zip(sz["voc"]["rates"], sz["voc"]["kernels"]):
        n = (n - 1) * u - 2 * ((k - u) // 2) + k
    return n


# ------------------------------------------------------------------ cases
# Each builder returns (shape string, prep, run) on device dev in dtype dt; inputs are fp32
# and cast at each model's boundary, as mcm's models take and return fp32.

def build(case, sz, dev, dt, batch):
    C, H, W = sz["lat"]
    f = 2 ** (len(sz["vae"]["boc"]) - 1)
    frames, bins = H * f, W * f
    g = torch.Generator(device="cpu").manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(dev)

    if case in ("unet_fwd", "unet_train"):
        B = batch or (sz["b_fwd"] if case == "unet_fwd" else sz["b_train"])
        unet = make_unet(sz).to(dev, dt)
        x, cond = randn(B, C, H, W), randn(B, sz["unet"]["class_in"])
        t = torch.full((B,), 500.0, device=dev)
        shape = f"B={B} x {C}x{H}x{W} emb {sz['unet']['class_in']}"
        if case == "unet_fwd":
            unet.eval().requires_grad_(False)
            return shape, None, lambda: unet(x.to(dt), t, None, class_labels=cond.to(dt)).sample.float()
        target = randn(B, C, H, W)
        unet.train()

        def step():
            out = unet(x, t, None, class_labels=cond).sample  # no encoder_hidden_states: MusicLDM
            F.mse_loss(out, target).backward()
        return shape, lambda: unet.zero_grad(set_to_none=True), step

    if case == "vae_decode":
        vae = make_vae(sz).to(dev, dt).eval().requires_grad_(False)
        z = randn(1, sz["vae"]["latent"], H, W)
        return (f"B=1 z {sz['vae']['latent']}x{H}x{W} -> mel {frames}x{bins}", None,
                lambda: vae.decode(z.to(dt)).sample.float())

    if case == "vocoder":
        voc = make_vocoder(sz).to(dev, dt).eval().requires_grad_(False)
        mel = randn(1, frames, sz["voc"]["in_dim"])
        return (f"B=1 mel {frames}x{sz['voc']['in_dim']} -> {vocoder_len(sz, frames)} samples", None,
                lambda: voc(mel.to(dt)).float())

    if case == "audiomae":
        B = batch or sz["b_mae"]
        m = sz["mae"]
        mae = make_audiomae(sz).to(dev, dt).eval().requires_grad_(False)
        fbank = randn(B, 1, *m["img"]).requires_grad_(True)
        taps = m["taps"]

        def step():
            outs, _ = mae.forward_encoder_taps(fbank.to(dt), taps)
            sum(o.float().sum() for o in outs.values()).backward()
        return f"B={B} fbank {m['img'][0]}x{m['img'][1]} taps {','.join(map(str, taps))}", None, step

    if case == "sample_cm4":
        unet = make_unet(sz).to(dev, dt).eval().requires_grad_(False)
        vae = make_vae(sz).to(dev, dt).eval().requires_grad_(False)
        voc = make_vocoder(sz).to(dev, dt).eval().requires_grad_(False)
        acp = alphas_cumprod()
        x_T, cond = randn(1, C, H, W), randn(1, sz["unet"]["class_in"]).to(dt)
        scaling = sz["vae"]["scaling"]

        def sample():
            x = x_T
            for i, t in enumerate(LCM_TIMESTEPS):
                eps = unet(x.to(dt), torch.full((1,), float(t), device=dev), None, class_labels=cond).sample.float()
                a = acp[t].item()
                x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
                c_skip, c_out = boundary(t)
                x = c_skip * x + c_out * x0
                if i + 1 < len(LCM_TIMESTEPS):
                    a = acp[LCM_TIMESTEPS[i + 1]].item()
                    x = math.sqrt(a) * x + math.sqrt(1 - a) * torch.randn_like(x)
            mel = vae.decode((x / scaling).to(dt)).sample  # (1, 1, T, M)
            return voc(mel[:, 0]).float()
        return (f"B=1 {SAMPLE_STEPS} steps z {C}x{H}x{W} -> {vocoder_len(sz, frames)} samples", None, sample)
    raise ValueError(case)


def count_flops(run, grad):
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc, torch.set_grad_enabled(grad):
        run()
    return float(fc.get_total_flops())


def run_row(case, dtype, args, sz, dev):
    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    grad = case in GRAD
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with torch.set_grad_enabled(grad):
        shape, prep, run = build(case, sz, dev, dt, args.batch)
        for _ in range(args.warmup):
            if prep:
                prep()
            run()
            sync()
        times = []
        for _ in range(args.iters):
            if prep:
                prep()
            sync()
            t0 = time.perf_counter()
            run()
            sync()
            times.append(1e3 * (time.perf_counter() - t0))
    row = dict(case=case, dtype=dtype, shape=shape, ms=sorted(times)[len(times) // 2], ms_min=min(times),
               ms_max=max(times), times_ms=times, flops=None)
    if not args.no_flops:
        try:
            if prep:
                prep()
            row["flops"] = count_flops(run, grad)
        except Exception as e:  # informative only: never lose the timing for it
            row["flops_error"] = f"{type(e).__name__}: {e}"
    if dev.type == "cuda":
        row["peak_mem_bytes"] = torch.cuda.max_memory_allocated()
    return row


def versions():
    v = [f"torch {torch.__version__}"]
    for name in ("diffusers", "transformers"):
        try:
            v.append(f"{name} {__import__(name).__version__}")
        except Exception as e:
            v.append(f"{name} missing ({type(e).__name__})")
    if torch.cuda.is_available() and torch.backends.cudnn.is_available():
        v.append(f"cuDNN {torch.backends.cudnn.version()}")
    return ", ".join(v)


def parse():
    p = argparse.ArgumentParser(description="PyTorch side of make bench (see the module docstring)")
    p.add_argument("--device", required=True, choices=("cpu", "cuda"))
    p.add_argument("--size", required=True, choices=("full", "small"))
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--only", action="append", default=[], help="cases, comma-separated or repeated")
    p.add_argument("--out", help="JSON output file")
    p.add_argument("--allow-tf32", action="store_true", help="TF32 in fp32 matmuls and convolutions (mcm: never)")
    p.add_argument("--batch", type=int, default=0, help="every case at this batch (as bench --batch)")
    p.add_argument("--no-flops", action="store_true", help="skip the FlopCounterMode iteration")
    a = p.parse_args()
    only = [c for s in a.only for c in s.split(",") if c]
    bad = [c for c in only if c not in CASES]
    if bad:
        p.error(f"--only: unknown case '{bad[0]}' (cases: {', '.join(CASES)})")
    a.cases = [c for c in CASES if not only or c in only]
    if a.iters < 1 or a.warmup < 0 or a.batch < 0:
        p.error("--iters must be >= 1, --warmup and --batch >= 0")
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: PyTorch sees no CUDA device (torch.cuda.is_available() is False)")
    return a


def main():
    args = parse()
    dev = torch.device(args.device)
    sz = SIZES[args.size]
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = args.allow_tf32
    torch.backends.cudnn.allow_tf32 = args.allow_tf32
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    out = dict(impl="pytorch", version=versions(), device_kind=args.device, size=args.size, iters=args.iters,
               warmup=args.warmup, date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
               device=name, tf32=args.allow_tf32, cases=[])
    print(f"PyTorch bench ({args.size} size, {name}, median of {args.iters} after {args.warmup} warm-up; "
          f"{out['version']})", flush=True)
    out["complete"] = False
    for case in args.cases:
        for dtype in ("fp32", "bf16") if case in BF16 else ("fp32",):
            try:
                row = run_row(case, dtype, args, sz, dev)
            except Exception as e:  # a missing package or an OOM loses one row, not the run
                row = dict(case=case, dtype=dtype, error=f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")
                print(f"{case:<11} {dtype:<4} ERROR {row['error']}", flush=True)
                out["cases"].append(row)
                write(args.out, out)
                continue
            gf = f"{row['flops'] * 1e-9:8.2f} GFLOP" if row["flops"] is not None else "      ? GFLOP"
            print(f"{case:<11} {dtype:<4} {row['ms']:10.3f} ms  (min {row['ms_min']:.3f}, max {row['ms_max']:.3f})  "
                  f"{gf}  [{row['shape']}]", flush=True)
            out["cases"].append(row)
            write(args.out, out)
    out["complete"] = True
    write(args.out, out)
    return 1 if any("error" in r for r in out["cases"]) else 0


def write(path, out):
    """Atomically, after every row: a run stopped by a timeout keeps the rows it finished."""
    if path:
        with open(path + ".tmp", "w") as fh:
            json.dump(out, fh, indent=1)
            fh.write("\n")
        os.replace(path + ".tmp", path)


if __name__ == "__main__":
    sys.exit(main())
