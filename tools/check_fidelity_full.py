#!/usr/bin/env python3
"""Full-size fidelity check, run by hand: mcm's networks against the reference implementations
(diffusers / transformers, and a ViT built like AudioMAE's) at the released sizes, on random
inputs of the released shapes, with the real weights. Prints the relative L2 error
‖mcm − ref‖ / ‖ref‖ of every output (and the largest absolute error) and exits 1 if one is
above --tol (default 1e-4, fp32 on both sides).

Usage (from the repository root, after `make`; needs torch, diffusers, transformers, h5py):

  python tools/check_fidelity_full.py --pipeline PATH/TO/musicldm \\
      [--original-ckpt musicldm-ckpt.ckpt] [--audiomae-ckpt pretrained.pth] \\
      [--work /tmp/mcm_fidelity] [--device cpu|cuda] [--components unet,vae-encode,...] \\
      [--run-component build/cpu/tools/run_component] [--threads N] [--tol 1e-4] [--json results.json]

  --pipeline       the diffusers MusicLDM folder (ucsd-reach/musicldm: model_index.json, unet/,
                   vae/, vocoder/, text_encoder/, tokenizer/); converted with
                   tools/convert_diffusers.py into WORK/diffusers/*.h5
  --original-ckpt  also convert the original Lightning checkpoint
                   (tools/convert_musicldm_original.py -> WORK/original/*.h5), compare it tensor by
                   tensor with the diffusers conversion, and run mcm's UNet from it (the
                   original's 32-channel heads) against diffusers' UNet built with those heads
  --audiomae-ckpt  also convert the AudioMAE ViT-B pretrained checkpoint (tools/convert_audiomae.py)
                   and compare the encoder's taps -1, 0, 5, 11 and cls
  --device         where mcm runs (run_component --device); the references run on the CPU
                   unless --ref-device cuda
  --make-random DIR  instead of a download: write a diffusers MusicLDM folder with the released
                   configurations and seeded random weights to DIR, plus the same weights in the
                   original Lightning layout (DIR/musicldm-ckpt.ckpt) and an AudioMAE ViT-B
                   checkpoint (DIR/audiomae_pretrained.pth), then check against them. This tests
                   the architectures and the converters at full size; it cannot test the released
                   files' own names and configs.

Inputs (seeded, --seed): UNet x (1, 8, 256, 16), t = 981, a unit-norm 512-d class embedding;
VAE encoder a (1, 1, 1024, 64) log-mel-like input; VAE decoder z (1, 8, 256, 16); vocoder a
(1, 1024, 64) mel; CLAP text five prompts padded to the longest (the empty prompt included);
AudioMAE a (1, 1, 1024, 128) fbank.

The UNet's heads (shared/reference/musicldm.md §3): the hub config's attention_head_dim makes
diffusers build 8 heads at every level; the original uses 32-channel heads (8/12/20). The
script reports both: mcm built from the hub config against diffusers as published, mcm with
--unet-head-channels 32 against diffusers rebuilt with per-level heads, and how far the two
references are apart (the size of the discrepancy).

Record the printed table in the README.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import h5py
import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))

COMPONENTS = ("unet", "unet-original-heads", "vae-encode", "vae-decode", "vocoder", "clap-text", "audiomae")
PROMPTS = ["", "a calm piano melody", "Upbeat techno with heavy bass, 128 BPM!",
           "lo-fi hip hop beat with vinyl crackle and a mellow electric piano",
           "an epic orchestral piece with strings, brass and thundering timpani, building to a climax"]
AUDIOMAE_TAPS = [-1, 0, 5, 11]

# The released configurations (ucsd-reach/musicldm configs; AudioMAE ViT-B), for --make-random.
UNET_CONFIG = dict(sample_size=256, in_channels=8, out_channels=8,
                   down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                     "CrossAttnDownBlock2D"],
                   up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                   block_out_channels=[128, 256, 384, 640], layers_per_block=2, norm_num_groups=32,
                   cross_attention_dim=[128, 256, 384, 640], attention_head_dim=8,
                   class_embed_type="simple_projection", projection_class_embeddings_input_dim=512,
                   class_embeddings_concat=True)
VAE_CONFIG = dict(in_channels=1, out_channels=1, down_block_types=["DownEncoderBlock2D"] * 3,
                  up_block_types=["UpDecoderBlock2D"] * 3, block_out_channels=[128, 256, 512], layers_per_block=2,
                  latent_channels=8, norm_num_groups=32, sample_size=1024, scaling_factor=1.0753,
                  force_upcast=True)
VOCODER_CONFIG = dict(model_in_dim=64, sampling_rate=16000, upsample_initial_channel=1024,
                      upsample_rates=[5, 4, 2, 2, 2], upsample_kernel_sizes=[16, 16, 8, 4, 4],
                      resblock_kernel_sizes=[3, 7, 11], resblock_dilation_sizes=[[1, 3, 5]] * 3,
                      leaky_relu_slope=0.1, normalize_before=False)
AUDIOMAE_CONFIG = dict(img_size=[1024, 128], patch_size=16, in_chans=1, embed_dim=768, depth=12, num_heads=12,
                       mlp_ratio=4.0, norm_eps=1e-6, decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16)


def rel_l2(got, ref):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    if got.shape != ref.shape:
        return float("inf"), float("inf")
    return float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30)), float(np.abs(got - ref).max())


def write_inputs(path, tensors, attrs=None):
    with h5py.File(path, "w") as f:
        for k, v in tensors.items():
            f.create_dataset(k, data=v)
        for k, v in (attrs or {}).items():
            f.attrs[k] = v


def run_mcm(args, component, weights, inputs, out, extra=()):
    cmd = [args.run_component, "--component", component, "--weights", weights, "--config-from-weights", "--in",
           inputs, "--out", out, "--device", args.device] + list(extra)
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"check_fidelity_full: {' '.join(cmd)} failed:\n{p.stderr.strip()}")
    with h5py.File(out, "r") as f:
        return {k: f[k][()] for k in f.keys()}, time.time() - t0


# ------------------------------------------------------------------ --make-random
def make_random(folder, seed):
    """A diffusers MusicLDM folder at the released sizes with seeded random weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from model_audiomae import MaskedAutoencoderViT
    from transformers import ClapTextConfig, ClapTextModelWithProjection, SpeechT5HifiGan, SpeechT5HifiGanConfig
    torch.manual_seed(seed)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump({"_class_name": "MusicLDMPipeline",
                   "_mcm_note": "random weights (check_fidelity_full --make-random)"}, f)
    print("make-random: UNet", flush=True)
    UNet2DConditionModel(**UNET_CONFIG).save_pretrained(os.path.join(folder, "unet"))
    print("make-random: VAE", flush=True)
    AutoencoderKL(**VAE_CONFIG).save_pretrained(os.path.join(folder, "vae"))
    print("make-random: vocoder", flush=True)
    voc = SpeechT5HifiGan(SpeechT5HifiGanConfig(**VOCODER_CONFIG))
    with torch.no_grad():  # transformers' N(0, 0.01) init leaves the output near zero: PyTorch's conv default
        for m in voc.modules():
            if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
                m.reset_parameters()
    voc.save_pretrained(os.path.join(folder, "vocoder"))
    print("make-random: CLAP text tower (RoBERTa-base + projection)", flush=True)
    clap = ClapTextModelWithProjection(ClapTextConfig(projection_dim=512, layer_norm_eps=1e-5))
    clap.save_pretrained(os.path.join(folder, "text_encoder"))
    tok = os.path.join(folder, "tokenizer")
    os.makedirs(tok, exist_ok=True)
    for name in ("vocab.json", "merges.txt"):  # the test tokenizer: ids below 1911, inside RoBERTa's 50265
        with open(os.path.join(ROOT, "tests", "fixtures", "tokenizer", name), "rb") as src, \
                open(os.path.join(tok, name), "wb") as dst:
            dst.write(src.read())
    print("make-random: AudioMAE ViT-B", flush=True)
    c = AUDIOMAE_CONFIG
    mae = MaskedAutoencoderViT(tuple(c["img_size"]), c["patch_size"], c["in_chans"], c["embed_dim"], c["depth"],
                               c["num_heads"], c["decoder_embed_dim"], c["decoder_depth"], c["decoder_num_heads"],
                               c["mlp_ratio"], c["norm_eps"])
    with torch.no_grad():  # MAE's init leaves biases 0 and LayerNorms 1/0: perturb them
        for name, p in mae.named_parameters():
            if name != "pos_embed" and (name.endswith(".bias") or "norm" in name):
                p.add_(0.1 * torch.randn_like(p))
    torch.save({"model": mae.state_dict(), "epoch": 0}, os.path.join(folder, "audiomae_pretrained.pth"))


def make_random_original(folder, path):
    """The random folder's UNet, VAE, vocoder and CLAP text tower in the ORIGINAL Lightning layout
    (tests/fixtures/converters.py's inverse rename table), as musicldm-ckpt.ckpt would hold them."""
    from converters import to_original_clap, to_original_unet, to_original_vae, to_original_vocoder
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import ClapTextModelWithProjection, SpeechT5HifiGan
    print("make-random: the same weights in the original checkpoint layout", flush=True)
    sd = {}
    unet = UNet2DConditionModel.from_pretrained(os.path.join(folder, "unet")).state_dict()
    attn = tuple(t.startswith("CrossAttn") for t in UNET_CONFIG["down_block_types"])
    for k, v in to_original_unet(unet, UNET_CONFIG["layers_per_block"], attn).items():
        sd["model.diffusion_model." + k] = v
    vae = AutoencoderKL.from_pretrained(os.path.join(folder, "vae")).state_dict()
    for k, v in to_original_vae(vae, len(VAE_CONFIG["block_out_channels"])).items():
        sd["first_stage_model." + k] = v
    voc = SpeechT5HifiGan.from_pretrained(os.path.join(folder, "vocoder")).state_dict()
    for k, v in to_original_vocoder(voc).items():
        sd["first_stage_model.vocoder." + k] = v
    clap = ClapTextModelWithProjection.from_pretrained(os.path.join(folder, "text_encoder")).state_dict()
    for k, v in to_original_clap(clap).items():
        sd["cond_stage_model.model." + k] = v
    sd["scale_factor"] = torch.tensor(VAE_CONFIG["scaling_factor"])
    torch.save({"state_dict": sd, "epoch": 0, "global_step": 0}, path)


# ------------------------------------------------------------------ references
def load_references(pipeline, device):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import (ClapModel, ClapTextModelWithProjection, RobertaTokenizer,
                              SpeechT5HifiGan)
    refs = {}
    refs["unet"] = UNet2DConditionModel.from_pretrained(os.path.join(pipeline, "unet"), torch_dtype=torch.float32)
    refs["vae"] = AutoencoderKL.from_pretrained(os.path.join(pipeline, "vae"), torch_dtype=torch.float32)
    refs["vocoder"] = SpeechT5HifiGan.from_pretrained(os.path.join(pipeline, "vocoder"), dtype=torch.float32)
    te = os.path.join(pipeline, "text_encoder")
    with open(os.path.join(te, "config.json")) as f:
        is_full = "text_config" in json.load(f)
    if is_full:
        refs["clap"] = ClapModel.from_pretrained(te, dtype=torch.float32)
        refs["clap_fn"] = lambda m, ids, mask: m.get_text_features(input_ids=ids, attention_mask=mask)
    else:
        refs["clap"] = ClapTextModelWithProjection.from_pretrained(te, dtype=torch.float32)
        refs["clap_fn"] = lambda m, ids, mask: torch.nn.functional.normalize(
            m(input_ids=ids, attention_mask=mask).text_embeds, dim=-1)
    tok = os.path.join(pipeline, "tokenizer")
    refs["tokenizer"] = RobertaTokenizer(os.path.join(tok, "vocab.json"), os.path.join(tok, "merges.txt"))
    for k in ("unet", "vae", "vocoder", "clap"):
        refs[k] = refs[k].to(device).eval()
    return refs


def unet_with_original_heads(unet):
    """diffusers' UNet with the original's 32-channel heads (per-level head counts), same weights."""
    from diffusers import UNet2DConditionModel
    cfg = dict(unet.config)
    cfg["attention_head_dim"] = [c // 32 for c in cfg["block_out_channels"]]
    cfg["num_attention_heads"] = None
    m = UNet2DConditionModel.from_config(cfg)
    m.load_state_dict(unet.state_dict())
    return m.to(unet.device).eval()


def audiomae_reference(ckpt_path, device):
    from model_audiomae import MaskedAutoencoderViT
    sd = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    sd = sd.get("model", sd)
    c = AUDIOMAE_CONFIG
    m = MaskedAutoencoderViT(tuple(c["img_size"]), c["patch_size"], c["in_chans"], c["embed_dim"], c["depth"],
                             c["num_heads"], c["decoder_embed_dim"], c["decoder_depth"], c["decoder_num_heads"],
                             c["mlp_ratio"], c["norm_eps"])
    enc = {k: v for k, v in sd.items() if not (k.startswith("decoder_") or k == "mask_token")}
    missing, unexpected = m.load_state_dict(enc, strict=False)
    missing = [k for k in missing if not (k.startswith("decoder_") or k == "mask_token")]
    if missing or unexpected:
        raise SystemExit(f"check_fidelity_full: the AudioMAE checkpoint does not fit ViT-B: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return m.to(device).eval()


# ------------------------------------------------------------------ the check
def compare_files(a_path, b_path, only_prefix=None):
    """Tensor-by-tensor comparison of two converted files: (equal, differing, only in a, only in b, max abs)."""
    with h5py.File(a_path, "r") as a, h5py.File(b_path, "r") as b:
        ka = {k for k in a.keys() if not only_prefix or k.startswith(only_prefix)}
        kb = {k for k in b.keys() if not only_prefix or k.startswith(only_prefix)}
        equal, differ, worst = 0, [], 0.0
        for k in sorted(ka & kb):
            x, y = a[k][()].astype(np.float32), b[k][()].astype(np.float32)
            if x.shape != y.shape:
                differ.append(f"{k} {x.shape} vs {y.shape}")
                continue
            d = float(np.abs(x - y).max()) if x.size else 0.0
            worst = max(worst, d)
            if d == 0.0:
                equal += 1
            else:
                differ.append(k)
        cfg_a, cfg_b = a.attrs.get("config"), b.attrs.get("config")
    return equal, differ, sorted(ka - kb), sorted(kb - ka), worst, cfg_a, cfg_b


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline", help="diffusers MusicLDM folder")
    ap.add_argument("--make-random", metavar="DIR", help="write a random-weight folder at the released sizes to DIR "
                                                         "and check against it")
    ap.add_argument("--original-ckpt")
    ap.add_argument("--audiomae-ckpt")
    ap.add_argument("--work", default="/tmp/mcm_fidelity")
    ap.add_argument("--device", default="cpu", help="mcm's device (run_component --device)")
    ap.add_argument("--ref-device", default="cpu", help="the references' torch device")
    ap.add_argument("--components", default=",".join(COMPONENTS))
    ap.add_argument("--run-component", default=None, help="the run_component binary (default build/{cuda,cpu}/tools/)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for both sides (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--json", help="also write the results as JSON")
    args = ap.parse_args()

    if args.make_random:
        if not os.path.exists(os.path.join(args.make_random, "model_index.json")):
            make_random(args.make_random, args.seed)
        args.pipeline = args.make_random
        if not args.audiomae_ckpt:
            args.audiomae_ckpt = os.path.join(args.make_random, "audiomae_pretrained.pth")
        if not args.original_ckpt:
            args.original_ckpt = os.path.join(args.make_random, "musicldm-ckpt.ckpt")
            if not os.path.exists(args.original_ckpt):
                make_random_original(args.make_random, args.original_ckpt)
    if not args.pipeline or not os.path.exists(os.path.join(args.pipeline, "model_index.json")):
        ap.error("--pipeline must be a diffusers MusicLDM folder (with model_index.json), or use --make-random DIR")
    if args.run_component is None:
        flavour = "cuda" if args.device.startswith("cuda") else "cpu"
        args.run_component = os.path.join(ROOT, "build", flavour, "tools", "run_component")
        if not os.path.exists(args.run_component) and flavour == "cpu":
            args.run_component = os.path.join(ROOT, "build", "cuda", "tools", "run_component")
    if not os.path.exists(args.run_component):
        ap.error(f"{args.run_component} does not exist: run `make` first (or pass --run-component)")
    if args.threads:
        torch.set_num_threads(args.threads)
    comps = [c.strip() for c in args.components.split(",") if c.strip()]
    for c in comps:
        if c not in COMPONENTS:
            ap.error(f"--components: unknown {c} (expected some of {', '.join(COMPONENTS)})")
    if "audiomae" in comps and not args.audiomae_ckpt:
        comps.remove("audiomae")

    from convert_diffusers import convert_file, find_weights
    work = args.work
    conv = os.path.join(work, "diffusers")
    os.makedirs(conv, exist_ok=True)
    for c in ("unet", "vae", "vocoder", "text_encoder"):
        out = os.path.join(conv, c + ".h5")
        if not os.path.exists(out):
            folder = os.path.join(args.pipeline, c)
            convert_file(c, find_weights(folder), out, os.path.join(folder, "config.json"))
    print(f"references on {args.ref_device}, mcm ({args.run_component}) on {args.device}", flush=True)
    dev = torch.device(args.ref_device)
    refs = load_references(args.pipeline, dev)
    g = torch.Generator().manual_seed(args.seed)
    rows = []

    def record(component, output, got, ref, t_mcm, t_ref, note=""):
        e, m = rel_l2(got, ref)
        rows.append(dict(component=component, output=output, rel_l2=e, max_abs=m, mcm_s=t_mcm, ref_s=t_ref,
                         note=note))
        print(f"  {component:20s} {output:8s} rel L2 {e:9.2e}  max |err| {m:9.2e}  mcm {t_mcm:7.2f} s  "
              f"ref {t_ref:7.2f} s  {note}", flush=True)

    def ref_run(fn):
        t0 = time.time()
        with torch.no_grad():
            out = fn()
        return out, time.time() - t0

    def inp(name):
        return os.path.join(work, f"in_{name}.h5"), os.path.join(work, f"out_{name}.h5")

    if "unet" in comps or "unet-original-heads" in comps:
        x = torch.randn(1, 8, 256, 16, generator=g)
        t = torch.tensor([981.0])
        cls = torch.nn.functional.normalize(torch.randn(1, 512, generator=g), dim=-1)
        i, o = inp("unet")
        write_inputs(i, {"x": x.numpy(), "t": t.numpy(), "class_emb": cls.numpy()})
        args_ref = (x.to(dev), t.to(dev))
        ref_hub, t_hub = ref_run(lambda: refs["unet"](*args_ref, encoder_hidden_states=None,
                                                      class_labels=cls.to(dev)).sample.cpu().numpy())
        if "unet" in comps:
            got, t_m = run_mcm(args, "unet", os.path.join(conv, "unet.h5"), i, o)
            heads = refs["unet"].config.attention_head_dim
            record("unet", "out", got["out"], ref_hub, t_m, t_hub, f"hub config heads ({heads})")
        if "unet-original-heads" in comps:
            orig = unet_with_original_heads(refs["unet"])
            ref_orig, t_orig = ref_run(lambda: orig(*args_ref, encoder_hidden_states=None,
                                                    class_labels=cls.to(dev)).sample.cpu().numpy())
            got, t_m = run_mcm(args, "unet", os.path.join(conv, "unet.h5"), i, o, ["--unet-head-channels", "32"])
            record("unet-original-heads", "out", got["out"], ref_orig, t_m, t_orig, "32-channel heads (8/12/20)")
            e, _ = rel_l2(ref_orig, ref_hub)
            rows.append(dict(component="unet heads", output="ref vs ref", rel_l2=e, max_abs=None, mcm_s=None,
                             ref_s=None, note="diffusers hub heads vs original heads, same weights (not an mcm error)"))
            print(f"  {'unet heads':20s} hub vs original heads in diffusers itself: rel L2 {e:.3g} "
                  f"(the size of the discrepancy, not an mcm error)", flush=True)
            del orig
    if "vae-encode" in comps:
        mel = torch.randn(1, 1, 1024, 64, generator=g) * 2.0 - 5.0
        i, o = inp("vae_enc")
        write_inputs(i, {"mel": mel.numpy()})
        vae = refs["vae"]
        ref, t_r = ref_run(lambda: torch.chunk(vae.quant_conv(vae.encoder(mel.to(dev))), 2, dim=1))
        got, t_m = run_mcm(args, "vae-encode", os.path.join(conv, "vae.h5"), i, o)
        record("vae-encode", "mean", got["mean"], ref[0].cpu().numpy(), t_m, t_r)
        record("vae-encode", "logvar", got["logvar"], ref[1].cpu().numpy(), t_m, t_r)
    if "vae-decode" in comps:
        z = torch.randn(1, 8, 256, 16, generator=g)
        i, o = inp("vae_dec")
        write_inputs(i, {"z": z.numpy()})
        ref, t_r = ref_run(lambda: refs["vae"].decode(z.to(dev)).sample.cpu().numpy())
        got, t_m = run_mcm(args, "vae-decode", os.path.join(conv, "vae.h5"), i, o)
        record("vae-decode", "out", got["out"], ref, t_m, t_r, "4096-token mid attention")
    if "vocoder" in comps:
        mel = torch.randn(1, 1024, 64, generator=g) * 2.0 - 5.0
        i, o = inp("vocoder")
        write_inputs(i, {"mel": mel.numpy()})
        ref, t_r = ref_run(lambda: refs["vocoder"](mel.to(dev)).cpu().numpy())
        got, t_m = run_mcm(args, "vocoder", os.path.join(conv, "vocoder.h5"), i, o)
        record("vocoder", "out", got["out"], ref, t_m, t_r, f"{ref.shape[-1]} samples")
    if "clap-text" in comps:
        enc = refs["tokenizer"](PROMPTS, padding="longest", truncation=True, max_length=512, return_tensors="pt")
        i, o = inp("clap")
        write_inputs(i, {"ids": enc.input_ids.numpy().astype(np.int32),
                         "mask": enc.attention_mask.numpy().astype(np.float32)})
        ref, t_r = ref_run(lambda: refs["clap_fn"](refs["clap"], enc.input_ids.to(dev),
                                                   enc.attention_mask.to(dev)).cpu().numpy())
        got, t_m = run_mcm(args, "clap-text", os.path.join(conv, "text_encoder.h5"), i, o)
        record("clap-text", "out", got["out"], ref, t_m, t_r, f"{len(PROMPTS)} prompts, T = {enc.input_ids.shape[1]}")
    if "audiomae" in comps:
        from convert_audiomae import convert as convert_audiomae
        amae = os.path.join(work, "audiomae.h5")
        convert_audiomae(args.audiomae_ckpt, amae, allow_pickle=True)
        mae = audiomae_reference(args.audiomae_ckpt, dev)
        fb = torch.randn(1, 1, 1024, 128, generator=g)
        i, o = inp("audiomae")
        write_inputs(i, {"fbank": fb.numpy()}, {"taps": ",".join(str(t) for t in AUDIOMAE_TAPS)})
        ref, t_r = ref_run(lambda: mae.forward_encoder_taps(fb.to(dev), AUDIOMAE_TAPS))
        got, t_m = run_mcm(args, "audiomae", amae, i, o)
        for tap in AUDIOMAE_TAPS:
            name = "tap_m1" if tap < 0 else f"tap_{tap}"
            record("audiomae", name, got[name], ref[0][tap].cpu().numpy(), t_m, t_r)
        record("audiomae", "cls", got["cls"], ref[1].cpu().numpy(), t_m, t_r)

    if args.original_ckpt:
        import convert_musicldm_original as cmo
        orig_dir = os.path.join(work, "original")
        print(f"original checkpoint: converting {args.original_ckpt} -> {orig_dir}", flush=True)
        sd = cmo.state_dict_of(cmo.load_checkpoint(args.original_ckpt, allow_pickle=True))
        cmo.convert([(args.original_ckpt, sd)], orig_dir, cmo.COMPONENTS, cmo.parse_sets([]))
        del sd
        for c in cmo.COMPONENTS:
            prefix = "text_" if c == "text_encoder" else None
            eq, differ, only_o, only_d, worst, cfg_o, cfg_d = compare_files(
                os.path.join(orig_dir, c + ".h5"), os.path.join(conv, c + ".h5"), prefix)
            note = (f"{eq} equal, {len(differ)} differ (max |diff| {worst:.3g}"
                    + (f", e.g. {differ[:3]}" if differ else "") + f"), only in original {only_o[:3]}"
                    + f", only in diffusers {only_d[:3]}")
            rows.append(dict(component=f"original {c}", output="tensors", rel_l2=None, max_abs=worst, mcm_s=None,
                             ref_s=None, note=note))
            print(f"  original vs diffusers {c}: {note}", flush=True)
        if "unet-original-heads" in comps:
            orig = unet_with_original_heads(refs["unet"])
            i, o = inp("unet")
            with h5py.File(i, "r") as f:
                x, t, cls = (torch.from_numpy(f[k][()]).to(dev) for k in ("x", "t", "class_emb"))
            ref, t_r = ref_run(lambda: orig(x, t, encoder_hidden_states=None, class_labels=cls).sample.cpu().numpy())
            got, t_m = run_mcm(args, "unet", os.path.join(orig_dir, "unet.h5"), i, os.path.join(work, "out_unet_o.h5"))
            record("unet (original ckpt)", "out", got["out"], ref, t_m, t_r,
                   "original conversion (its config: 32-ch heads) vs diffusers weights with those heads")

    bad = [r for r in rows if r["rel_l2"] is not None and r["component"] != "unet heads" and
           not (r["rel_l2"] <= args.tol) and not r["component"].startswith("unet (original")]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(pipeline=args.pipeline, device=args.device, ref_device=args.ref_device, tol=args.tol,
                           rows=rows), f, indent=2)
    print(f"{len(rows)} results; {'all' if not bad else 'NOT all'} mcm outputs within rel L2 {args.tol:g}"
          + (f": {[(r['component'], r['output']) for r in bad]}" if bad else ""))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
