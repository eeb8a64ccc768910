#!/usr/bin/env python3
"""Convert diffusers-format MusicLDM weights (and components built like them) into mcm's
HDF5 tensor files. mcm's parameter names ARE the diffusers/transformers state-dict keys,
so conversion is a copy plus a few documented fix-ups:

  * HiFi-GAN (transformers SpeechT5HifiGan): weight norm, if present as weight_g/weight_v,
    is folded into a plain weight (w = g · v / ‖v‖ over all dims but 0); the mean/scale
    normalisation buffers are kept (MusicLDM's are 0/1).
  * Non-float tensors (position_ids buffers, counters) are skipped and listed.

Usage (from the repository root; needs torch, safetensors, h5py — see
tests/fixtures/requirements.txt):

  python tools/convert_diffusers.py --pipeline PATH/TO/musicldm --out checkpoints/musicldm
      converts unet/, vae/, vocoder/, text_encoder/ and copies the tokenizer files
  python tools/convert_diffusers.py --component unet --weights FILE --out unet.h5 [--config config.json]

Each output file carries root attributes: mcm_format ("mcm-weights 1"), component,
source (the input path) and config (the component's config.json text, when known), so the
C loader can compare the model configuration with the weights.
"""
import argparse
import json
import os
import shutil
import sys

import h5py
import numpy as np
import torch

COMPONENTS = ("unet", "vae", "vocoder", "text_encoder")
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "model.safetensors", "diffusion_pytorch_model.bin",
                "pytorch_model.bin")


def load_state_dict(path):
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return sd.get("state_dict", sd)


def fold_weight_norm(sd):
    """Replaces every X.weight_g / X.weight_v pair by X.weight."""
    out = {}
    for k, v in sd.items():
        if k.endswith(".weight_g"):
            continue
        if k.endswith(".weight_v"):
            g = sd[k[: -len("_v")] + "_g"].float()
            v = v.float()
            norm = v.flatten(1).norm(dim=1).reshape([-1] + [1] * (v.dim() - 1))
            out[k[: -len(".weight_v")] + ".weight"] = g * v / norm
            continue
        out[k] = v
    return out


def convert_state_dict(component, sd):
    if component == "vocoder":
        sd = fold_weight_norm(sd)
    kept, skipped = {}, []
    for k, v in sd.items():
        if not torch.is_floating_point(v):
            skipped.append(k)
            continue
        kept[k] = v.detach().to(torch.float32).cpu().numpy()
    return kept, skipped


def write_h5(path, tensors, component, source, config_text, dtype):
    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as f:
        f.attrs["mcm_format"] = "mcm-weights 1"
        f.attrs["component"] = component
        f.attrs["source"] = str(source)
        if config_text is not None:
            f.attrs["config"] = config_text
        for name in sorted(tensors):
            a = tensors[name]
            if dtype == "fp16":
                f.create_dataset(name, data=a.astype(np.float16))
            elif dtype == "bf16":
                bits = (a.astype(np.float32).view(np.uint32) + 0x7FFF + ((a.view(np.uint32) >> 16) & 1)) >> 16
                d = f.create_dataset(name, data=bits.astype(np.uint16))
                d.attrs["dtype"] = "bfloat16"
            else:
                f.create_dataset(name, data=a)
    os.replace(tmp, path)


def convert_file(component, weights, out, config=None, dtype="fp32"):
    sd = load_state_dict(weights)
    tensors, skipped = convert_state_dict(component, sd)
    config_text = open(config).read() if config and os.path.exists(config) else None
    write_h5(out, tensors, component, weights, config_text, dtype)
    n = sum(a.size for a in tensors.values())
    print(f"{component}: {len(tensors)} tensors, {n / 1e6:.2f} M parameters -> {out}"
          + (f" (skipped non-float: {', '.join(skipped)})" if skipped else ""))


def find_weights(folder):
    for name in WEIGHT_FILES:
        p = os.path.join(folder, name)
        if os.path.exists(p):
            return p
    raise SystemExit(f"convert_diffusers: no weights file in {folder} (looked for {', '.join(WEIGHT_FILES)})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline", help="a diffusers MusicLDM folder (model_index.json, unet/, vae/, ...)")
    ap.add_argument("--component", choices=COMPONENTS)
    ap.add_argument("--weights", help="one component's weights (.safetensors or .bin)")
    ap.add_argument("--config", help="that component's config.json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32")
    a = ap.parse_args()
    if a.pipeline:
        if not os.path.exists(os.path.join(a.pipeline, "model_index.json")):
            sys.exit(f"convert_diffusers: {a.pipeline} has no model_index.json: not a diffusers pipeline folder")
        os.makedirs(a.out, exist_ok=True)
        for c in COMPONENTS:
            folder = os.path.join(a.pipeline, c)
            convert_file(c, find_weights(folder), os.path.join(a.out, c + ".h5"),
                         os.path.join(folder, "config.json"), a.dtype)
        tok = os.path.join(a.pipeline, "tokenizer")
        os.makedirs(os.path.join(a.out, "tokenizer"), exist_ok=True)
        for name in ("vocab.json", "merges.txt"):
            shutil.copy(os.path.join(tok, name), os.path.join(a.out, "tokenizer", name))
    elif a.component and a.weights:
        convert_file(a.component, a.weights, a.out, a.config, a.dtype)
    else:
        ap.error("give --pipeline DIR, or --component NAME --weights FILE")


if __name__ == "__main__":
    main()
