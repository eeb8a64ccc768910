#!/usr/bin/env python3
"""Convert an AudioMAE pretrained checkpoint (facebookresearch/AudioMAE, "ViT-B, AS-2M
pretrained": torch.save({"model": state_dict, "optimizer": ..., "epoch": ..., "args": ...}))
into mcm's audiomae.h5 (models/audiomae.c).

The names stay as they are (patch_embed.proj, cls_token, pos_embed, blocks.i.{norm1,attn.qkv,
attn.proj,norm2,mlp.fc1,mlp.fc2}, norm): mcm's AudioMAE parameters carry the checkpoint's
keys. pos_embed is the fixed 2-D sin-cos table the checkpoint stores; it is copied, and
compared with the table AudioMAE's get_2d_sincos_pos_embed_flexible builds (a note is
printed when they differ, e.g. for a checkpoint trained with learned positions).

The pretraining decoder (decoder_*, mask_token) is DROPPED by default: mcm uses the encoder
only (about a quarter of the file); --keep-decoder keeps it (models/audiomae.c ignores it on
load either way).

The output's `config` attribute holds MaskedAutoencoderViT's constructor sizes as JSON, the
keys audiomae_load compares with the model configuration:
  img_size [T, F], patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio, norm_eps.
embed_dim, patch_size, in_chans, depth and mlp_ratio are read from the tensors; img_size
(default [1024, 128], checked against pos_embed's token count), num_heads (default
embed_dim / 64: 12 for ViT-B) and norm_eps (1e-6) cannot be, and --set KEY=JSON changes them.

A fine-tuned checkpoint (models_vit: fc_norm and head, no final norm) is refused: use the
pretrained one.

Usage (from the repository root; needs torch, numpy and h5py):
  python tools/convert_audiomae.py --ckpt pretrained.pth --out checkpoints/audiomae.h5
  python tools/convert_audiomae.py --ckpt pretrained.pth --out audiomae.h5 --set img_size=[512,128]
The checkpoint stores its training arguments as an argparse.Namespace, which is allowed; a
file that holds other Python objects needs --allow-pickle (only for files you trust).
"""
import argparse
import json
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convert_diffusers import convert_state_dict, write_h5  # noqa: E402
from convert_musicldm_original import ConversionError, load_checkpoint  # noqa: E402

DEFAULTS = {"img_size": [1024, 128], "num_heads": None, "norm_eps": 1e-6}


def is_decoder_key(k):
    return k.startswith("decoder_") or k == "mask_token"


def sincos_table(dim, grid_t, grid_f):
    """AudioMAE's get_2d_sincos_pos_embed_flexible(dim, patch_hw=(F/p, T/p), cls_token=True):
    (1 + N, dim), cls row zeros; the first dim/2 channels encode the index along the T/p axis
    of an (F/p) x (T/p) grid, the last dim/2 the other."""
    def one_axis(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)
    gh, gw = np.arange(grid_f, dtype=np.float32), np.arange(grid_t, dtype=np.float32)
    grid = np.stack(np.meshgrid(gw, gh), axis=0).reshape(2, 1, grid_f, grid_t)
    emb = np.concatenate([one_axis(dim // 2, grid[0]), one_axis(dim // 2, grid[1])], axis=1)
    return np.concatenate([np.zeros([1, dim]), emb], axis=0)


def audiomae_config(sd, sets):
    """The constructor sizes, from the tensors and the settings; raises ConversionError."""
    if "norm.weight" not in sd:
        if "fc_norm.weight" in sd or "head.weight" in sd:
            raise ConversionError("this is a fine-tuned AudioMAE (fc_norm / head, no final norm): mcm's "
                                  "discriminator uses the pretrained encoder; convert the pretrained checkpoint")
        raise ConversionError("no norm.weight: not an AudioMAE (MaskedAutoencoderViT) state dict")
    for k in ("patch_embed.proj.weight", "cls_token", "pos_embed", "blocks.0.mlp.fc1.weight"):
        if k not in sd:
            raise ConversionError(f"no {k}: not an AudioMAE (MaskedAutoencoderViT) state dict")
    C, in_chans, p, p2 = sd["patch_embed.proj.weight"].shape
    if p != p2:
        raise ConversionError(f"patch_embed.proj is {p} x {p2}: mcm's AudioMAE has square patches")
    depth = len({int(m.group(1)) for k in sd for m in [re.match(r"blocks\.(\d+)\.", k)] if m})
    hidden = sd["blocks.0.mlp.fc1.weight"].shape[0]
    n_tokens = sd["pos_embed"].shape[1] - 1
    img = sets["img_size"]
    if not (isinstance(img, list) and len(img) == 2 and all(isinstance(x, int) and x > 0 for x in img)):
        raise ConversionError(f"img_size = {img}: expected [T, F]")
    if img[0] % p or img[1] % p or (img[0] // p) * (img[1] // p) != n_tokens:
        raise ConversionError(f"pos_embed has {n_tokens} patch positions, img_size {img} with {p} x {p} patches "
                              f"gives {(img[0] // p) * (img[1] // p)} (--set img_size=[T,F])")
    heads = sets["num_heads"] if sets["num_heads"] is not None else C // 64
    if heads < 1 or C % heads:
        raise ConversionError(f"embed_dim {C} is not a whole number of {heads} heads (--set num_heads=N)")
    return {"img_size": img, "patch_size": int(p), "in_chans": int(in_chans), "embed_dim": int(C), "depth": depth,
            "num_heads": int(heads), "mlp_ratio": float(hidden) / float(C), "norm_eps": float(sets["norm_eps"])}


def convert(ckpt_path, out, sets=None, keep_decoder=False, dtype="fp32", allow_pickle=False, quiet=False):
    ckpt = load_checkpoint(ckpt_path, allow_pickle)
    sd = ckpt["model"] if isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict) else ckpt
    if not isinstance(sd, dict):
        raise ConversionError(f"{ckpt_path}: holds a {type(sd).__name__}, not a state dict (expected ckpt['model'])")
    s = dict(DEFAULTS)
    s.update(sets or {})
    cfg = audiomae_config(sd, s)
    kept = {k: v for k, v in sd.items() if keep_decoder or not is_decoder_key(k)}
    tensors, skipped = convert_state_dict("audiomae", kept)
    grid_t, grid_f = cfg["img_size"][0] // cfg["patch_size"], cfg["img_size"][1] // cfg["patch_size"]
    table = sincos_table(cfg["embed_dim"], grid_t, grid_f)
    diff = float(np.abs(tensors["pos_embed"][0].astype(np.float64) - table).max())
    write_h5(out, tensors, "audiomae", ckpt_path, json.dumps(cfg), dtype)
    if not quiet:
        n = sum(a.size for a in tensors.values())
        dropped = len(sd) - len(kept)
        print(f"audiomae: {len(tensors)} tensors, {n / 1e6:.2f} M parameters -> {out} "
              f"(config {json.dumps(cfg)}; {dropped} decoder tensors {'kept' if keep_decoder else 'dropped'})"
              + (f" (skipped non-float: {', '.join(skipped)})" if skipped else ""))
        if diff > 1e-5:
            print(f"note: pos_embed differs from AudioMAE's fixed sin-cos table by up to {diff:.3g} "
                  f"(copied as stored)")
    return cfg, diff


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True, help="AudioMAE pretrained checkpoint (.pth)")
    ap.add_argument("--out", required=True, help="output .h5")
    ap.add_argument("--set", action="append", metavar="KEY=JSON",
                    help="img_size=[T,F], num_heads=N or norm_eps=X")
    ap.add_argument("--keep-decoder", action="store_true", help="keep decoder_* and mask_token")
    ap.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32")
    ap.add_argument("--allow-pickle", action="store_true", help="allow torch.load(weights_only=False)")
    a = ap.parse_args()
    try:
        sets = {}
        for item in a.set or ():
            k, eq, v = item.partition("=")
            if not eq or k not in DEFAULTS:
                raise ConversionError(f"--set {item}: expected KEY=JSON with KEY one of {', '.join(DEFAULTS)}")
            try:
                sets[k] = json.loads(v)
            except json.JSONDecodeError as e:
                raise ConversionError(f"--set {item}: the value is not JSON ({e})") from None
        convert(a.ckpt, a.out, sets, a.keep_decoder, a.dtype, a.allow_pickle)
    except ConversionError as e:
        sys.exit(f"convert_audiomae: {e}")


if __name__ == "__main__":
    main()
