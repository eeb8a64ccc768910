#!/usr/bin/env python3
"""Convert the ORIGINAL MusicLDM checkpoint (RetroCirce/MusicLDM's PyTorch Lightning file,
musicldm-ckpt.ckpt, and optionally its separate vae / hifigan / clap files) into the same
per-component HDF5 files as tools/convert_diffusers.py writes for the diffusers release:

  unet.h5          model.diffusion_model.*  (or its EMA copy, model_ema.*)
  vae.h5           first_stage_model.{encoder,decoder,quant_conv,post_quant_conv}.*  + scale_factor
  vocoder.h5       first_stage_model.vocoder.*  (HiFi-GAN generator)
  text_encoder.h5  cond_stage_model.model.{text_branch,text_projection}.*  (CLAP text tower)

mcm's parameter names are the diffusers / transformers keys, so this is a rename table plus
two reshapes, checked strictly: every key under a component's prefix must be consumed by the
table (an unknown key stops the conversion, naming it), and the sizes are read from the
tensors. The renames (facts from the LDM / MusicLDM code; the code here is mcm's own):

  UNet  time_embed.{0,2} -> time_embedding.linear_{1,2};  film_emb -> class_embedding;
        input_blocks.0.0 -> conv_in;  out.{0,2} -> conv_norm_out, conv_out;
        input_blocks.i (i >= 1), l = (i-1) // (R+1), j = (i-1) % (R+1), R resnets per level:
          j < R:  .0 -> down_blocks.l.resnets.j,  .1 -> down_blocks.l.attentions.j
          j = R:  .0.op -> down_blocks.l.downsamplers.0.conv
        middle_block.{0,1,2} -> mid_block.{resnets.0, attentions.0, resnets.1}
        output_blocks.i, b = i // (R+1), j = i % (R+1): .0 -> up_blocks.b.resnets.j,
          .1 -> up_blocks.b.attentions.j (a spatial transformer) or upsamplers.0.conv (a conv),
          .2 -> up_blocks.b.upsamplers.0.conv
        ResBlock: in_layers.{0,2} -> norm1, conv1; emb_layers.1 -> time_emb_proj;
          out_layers.{0,3} -> norm2, conv2; skip_connection -> conv_shortcut
        SpatialTransformer: the same names (proj_in / proj_out stay 1x1 convs).
  VAE   {encoder,decoder}.norm_out -> conv_norm_out;  encoder.down.i.block.j -> encoder.
        down_blocks.i.resnets.j;  encoder.down.i.downsample.conv -> ...downsamplers.0.conv;
        decoder.up.i -> decoder.up_blocks.(n-1-i) (reversed), .upsample.conv -> upsamplers.0.conv;
        nin_shortcut -> conv_shortcut;  mid.block_{1,2} -> mid_block.resnets.{0,1};
        mid.attn_1.{norm,q,k,v,proj_out} -> mid_block.attentions.0.{group_norm,to_q,to_k,to_v,
        to_out.0}, the 1x1 conv weights (C, C, 1, 1) squeezed to linear (C, C).
  HiFi-GAN  ups.i -> upsampler.i; weight norm (weight_g / weight_v), if present, folded;
        mean = 0 and scale = 1 buffers added (normalize_before is false).
  CLAP  text_branch -> text_model; text_projection.{0,2} -> text_projection.linear{1,2}.
        The audio tower (audio_branch, audio_projection, *_transform, logit scales) is not
        converted: mcm uses only the text tower.

Each file gets a `config` attribute: the diffusers / transformers config.json that describes
the original network, with the sizes read from the tensors and the rest from the original
configuration (interface/musicldm.yaml, config_16k_64.json, roberta-base), which the C
loaders compare with the model configuration:

  unet          attention_head_dim = per-level heads, channels / 32: the original's
                num_head_channels 32 (8/12/20 heads), which diffusers reads as head counts.
                The hub's diffusers config says 8 heads at every level instead (see
                shared/reference/musicldm.md §3); a model built from this file's config
                computes what the original computes.
  vae           scaling_factor = the checkpoint's scale_factor buffer (1.0753 for MusicLDM).
  vocoder       upsample_rates [5,4,2,2,2], dilations [[1,3,5]]x3, 16 kHz, slope 0.1.
  text_encoder  roberta-base: 12 heads, layer_norm_eps 1e-5, pad id 1 (a ClapConfig with a
                text_config; the hub's diffusers text_encoder states transformers' default
                1e-12 instead).

Values that cannot be read from the tensors can be changed with --set COMPONENT.KEY=JSON
(for a checkpoint trained with another configuration), e.g. --set unet.num_head_channels=64
--set vocoder.upsample_rates=[4,4,4,4]. --set lists the keys when given a wrong one.

Usage (from the repository root; needs torch and h5py):

  python tools/convert_musicldm_original.py --ckpt musicldm-ckpt.ckpt --out checkpoints/musicldm-original \\
      [--tokenizer DIR_WITH_roberta-base_vocab.json_merges.txt]
  python tools/convert_musicldm_original.py --ckpt musicldm-ckpt.ckpt --components unet --out DIR
  python tools/convert_musicldm_original.py --vae-ckpt vae-ckpt.ckpt \\
      --vocoder-ckpt "hifigan-ckpt(only generator).ckpt" --clap-ckpt clap-ckpt.pt --out DIR

  --unet-weights auto|ema|model   auto (default): the EMA copy (model_ema.*) when the file has
                                  one, as the original's inference does (ema_scope)
  --dtype fp32|fp16|bf16          stored precision (default fp32)
  --allow-pickle                  load a file that torch refuses with weights_only=True
                                  (arbitrary Python objects: only for files you trust)

Then load them as the diffusers-converted files, e.g. for a parity run:
  build/cpu/tools/run_component --component unet --weights DIR/unet.h5 --config-from-weights ...
"""
import argparse
import json
import os
import re
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convert_diffusers import convert_state_dict, write_h5  # noqa: E402

COMPONENTS = ("unet", "vae", "vocoder", "text_encoder")

# The original configuration's values that the tensors do not show (--set can change them).
HPARAMS = {
    "unet": {"num_head_channels": 32, "norm_num_groups": 32, "norm_eps": 1e-5, "sample_size": 256,
             "flip_sin_to_cos": True, "freq_shift": 0},
    "vae": {"norm_num_groups": 32, "sample_size": 1024, "scaling_factor": 1.075324296951294},
    "vocoder": {"upsample_rates": [5, 4, 2, 2, 2], "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
                "sampling_rate": 16000, "leaky_relu_slope": 0.1},
    "text_encoder": {"num_attention_heads": 12, "layer_norm_eps": 1e-5, "pad_token_id": 1, "bos_token_id": 0,
                     "eos_token_id": 2},
}

# Where each component's keys live in the Lightning state dict (first match wins); the
# separate files keep them under shorter prefixes.
PREFIXES = {
    "unet": ("model.diffusion_model.",),
    "vae": ("first_stage_model.", ""),
    "vocoder": ("first_stage_model.vocoder.", ""),
    "text_encoder": ("cond_stage_model.model.", "module.", ""),
}


class ConversionError(Exception):
    pass


# ------------------------------------------------------------------------------ loading
def load_checkpoint(path, allow_pickle=False):
    """torch.load with weights_only=True (tensors and plain containers only); argparse.Namespace
    (AudioMAE's and Lightning's saved arguments) is allowed as harmless. Anything else needs
    --allow-pickle."""
    if not os.path.exists(path):
        raise ConversionError(f"{path}: no such file")
    import argparse as _argparse
    try:
        with torch.serialization.safe_globals([_argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (torch raises several kinds)
        if not allow_pickle:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConversionError(
                f"{path}: torch.load(weights_only=True) refused it ({first[:200]}); if it is a checkpoint from a "
                f"source you trust, rerun with --allow-pickle") from None
        print(f"note: {path}: loading with weights_only=False (--allow-pickle)")
        return torch.load(path, map_location="cpu", weights_only=False)


def state_dict_of(ckpt):
    """The tensor dictionary inside a checkpoint: Lightning's "state_dict", HiFi-GAN's
    "generator", or the checkpoint itself."""
    if not isinstance(ckpt, dict):
        raise ConversionError(f"the checkpoint is a {type(ckpt).__name__}, not a dictionary of tensors")
    for key in ("state_dict", "generator", "model"):
        if key in ckpt and isinstance(ckpt[key], dict):
            return ckpt[key]
    return ckpt


def take(sd, prefix, exclude=()):
    """{name without prefix: tensor} for the keys under prefix (minus the excluded sub-prefixes)."""
    out = {}
    for k, v in sd.items():
        if not k.startswith(prefix):
            continue
        rest = k[len(prefix):]
        if any(rest.startswith(e) for e in exclude):
            continue
        out[rest] = v
    return out


# ------------------------------------------------------------------------------ helpers
def _fail(component, msg):
    raise ConversionError(f"{component}: {msg}")


def _indices(keys, pattern):
    """Sorted distinct integers captured by pattern (one group) over the keys."""
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys for m in [rx.match(k)] if m})


def _weight(sd, name):
    """The weight under name (or its weight norm direction weight_v) — for shapes."""
    for suffix in ("weight", "weight_v"):
        if f"{name}.{suffix}" in sd:
            return sd[f"{name}.{suffix}"]
    raise KeyError(f"{name}.weight")


# ------------------------------------------------------------------------------ UNet
RESNET_RENAMES = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
                  "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}
TRANSFORMER_PARTS = ("norm.", "proj_in.", "proj_out.", "transformer_blocks.")


def _resnet(rest, where):
    for old, new in RESNET_RENAMES.items():
        if rest.startswith(old + "."):
            return new + rest[len(old):]
    _fail("unet", f"unknown ResBlock key '{where}.{rest}'")


def _transformer(rest, where):
    if not rest.startswith(TRANSFORMER_PARTS):
        _fail("unet", f"unknown SpatialTransformer key '{where}.{rest}'")
    return rest


def unet_to_diffusers(sd, hp):
    """Original UNetModel keys (model.diffusion_model. stripped) -> (diffusers keys, config)."""
    keys = list(sd)
    n_in = len(_indices(keys, r"input_blocks\.(\d+)\."))
    n_out = len(_indices(keys, r"output_blocks\.(\d+)\."))
    if n_in == 0 or "input_blocks.0.0.weight" not in sd:
        _fail("unet", "no input_blocks.0.0.weight: not an LDM UNet (openaimodel.UNetModel) state dict")
    ops = _indices(keys, r"input_blocks\.(\d+)\.0\.op\.weight")
    if ops:
        step = ops[0]
        levels = len(ops) + 1
        if ops != [step * k for k in range(1, levels)] or n_in != levels * step:
            _fail("unet", f"input_blocks 0..{n_in - 1} with downsamplers at {ops}: not the layout of a UNet "
                          f"with a fixed number of resnets per level")
    else:
        step, levels = n_in, 1
    R = step - 1  # resnets per down level
    if R < 1 or n_out != levels * (R + 1):
        _fail("unet", f"{n_in} input and {n_out} output blocks do not fit {levels} levels of {R} resnets")

    boc, attn = [], []
    for lvl in range(levels):
        i = 1 + lvl * (R + 1)
        boc.append(int(sd[f"input_blocks.{i}.0.out_layers.3.weight"].shape[0]))
        attn.append(f"input_blocks.{i}.1.norm.weight" in sd)
    depth = 1
    if any(attn):
        i = 1 + attn.index(True) * (R + 1)
        depth = len(_indices(keys, rf"input_blocks\.{i}\.1\.transformer_blocks\.(\d+)\."))
    hc = int(hp["num_head_channels"])
    for c in boc:
        if hc < 1 or c % hc:
            _fail("unet", f"{c} channels are not a whole number of {hc}-channel heads (--set unet.num_head_channels)")
    heads = [c // hc for c in boc]
    E, mc = sd["time_embed.0.weight"].shape
    if mc != boc[0]:
        _fail("unet", f"time_embed.0 reads {mc} sinusoidal features but the first level has {boc[0]} channels")
    if "film_emb.weight" not in sd:
        _fail("unet", "no film_emb.weight: MusicLDM's UNet is FiLM-conditioned (conditioning_key: film)")
    P_out, P_in = sd["film_emb.weight"].shape
    if P_out != E:
        _fail("unet", f"film_emb gives {P_out} features, the time embedding {E}: diffusers' class_embeddings_concat "
                      f"needs them equal")

    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if k.startswith("time_embed.0."):
            new = "time_embedding.linear_1." + k[len("time_embed.0."):]
        elif k.startswith("time_embed.2."):
            new = "time_embedding.linear_2." + k[len("time_embed.2."):]
        elif k.startswith("film_emb."):
            new = "class_embedding." + k[len("film_emb."):]
        elif k.startswith("out.0."):
            new = "conv_norm_out." + k[len("out.0."):]
        elif k.startswith("out.2."):
            new = "conv_out." + k[len("out.2."):]
        elif parts[0] == "input_blocks":
            i, sub, rest = int(parts[1]), parts[2], ".".join(parts[3:])
            where = ".".join(parts[:3])
            if i == 0:
                if sub != "0":
                    _fail("unet", f"unknown key '{k}'")
                new = "conv_in." + rest
            else:
                lvl, j = (i - 1) // (R + 1), (i - 1) % (R + 1)
                if j < R and sub == "0":
                    new = f"down_blocks.{lvl}.resnets.{j}." + _resnet(rest, where)
                elif j < R and sub == "1":
                    new = f"down_blocks.{lvl}.attentions.{j}." + _transformer(rest, where)
                elif j == R and sub == "0" and rest.startswith("op."):
                    new = f"down_blocks.{lvl}.downsamplers.0.conv." + rest[len("op."):]
                else:
                    _fail("unet", f"unknown key '{k}'")
        elif parts[0] == "middle_block":
            sub, rest = parts[1], ".".join(parts[2:])
            if sub == "0":
                new = "mid_block.resnets.0." + _resnet(rest, "middle_block.0")
            elif sub == "1":
                new = "mid_block.attentions.0." + _transformer(rest, "middle_block.1")
            elif sub == "2":
                new = "mid_block.resnets.1." + _resnet(rest, "middle_block.2")
            else:
                _fail("unet", f"unknown key '{k}'")
        elif parts[0] == "output_blocks":
            i, sub, rest = int(parts[1]), parts[2], ".".join(parts[3:])
            b, j = i // (R + 1), i % (R + 1)
            where = ".".join(parts[:3])
            if sub == "0":
                new = f"up_blocks.{b}.resnets.{j}." + _resnet(rest, where)
            elif sub in ("1", "2") and rest.startswith("conv."):
                new = f"up_blocks.{b}.upsamplers.0.conv." + rest[len("conv."):]
            elif sub == "1":
                new = f"up_blocks.{b}.attentions.{j}." + _transformer(rest, where)
            else:
                _fail("unet", f"unknown key '{k}'")
        else:
            _fail("unet", f"unknown key '{k}'")
        if new in out:
            _fail("unet", f"two keys map to '{new}'")
        out[new] = v

    down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn]
    up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)]
    config = {
        "_class_name": "UNet2DConditionModel",
        "_mcm_converted_from": "original MusicLDM checkpoint (openaimodel.UNetModel, FiLM)",
        "sample_size": hp["sample_size"], "in_channels": int(sd["input_blocks.0.0.weight"].shape[1]),
        "out_channels": int(sd["out.2.weight"].shape[0]), "down_block_types": down, "up_block_types": up,
        "mid_block_type": "UNetMidBlock2DCrossAttn", "block_out_channels": boc, "layers_per_block": R,
        "transformer_layers_per_block": depth, "norm_num_groups": hp["norm_num_groups"], "norm_eps": hp["norm_eps"],
        "cross_attention_dim": boc, "attention_head_dim": heads, "num_attention_heads": None,
        "use_linear_projection": False, "only_cross_attention": False, "upcast_attention": False,
        "flip_sin_to_cos": hp["flip_sin_to_cos"], "freq_shift": hp["freq_shift"], "time_embedding_type": "positional",
        "time_embedding_dim": int(E), "class_embed_type": "simple_projection",
        "projection_class_embeddings_input_dim": int(P_in), "class_embeddings_concat": True,
        "resnet_time_scale_shift": "default", "act_fn": "silu", "downsample_padding": 1, "conv_in_kernel": 3,
        "conv_out_kernel": 3, "mid_block_scale_factor": 1, "dropout": 0.0,
    }
    return out, config


def unet_state(sd_all, which):
    """The UNet's tensors, original names: the raw ones or the EMA copy (LitEma names each
    parameter by its key below 'model.' with the dots removed)."""
    raw = take(sd_all, "model.diffusion_model.")
    if not raw:
        return None, None
    ema_keys = [k for k in sd_all if k.startswith("model_ema.diffusion_model")]
    use_ema = which == "ema" or (which == "auto" and ema_keys)
    if not use_ema:
        return raw, "model.diffusion_model.* (not the EMA copy)"
    if not ema_keys:
        _fail("unet", "--unet-weights ema, but the checkpoint has no model_ema.* copy")
    out = {}
    for k in raw:
        ek = "model_ema." + ("diffusion_model." + k).replace(".", "")
        if ek not in sd_all:
            _fail("unet", f"the EMA copy has no {ek} for model.diffusion_model.{k}")
        out[k] = sd_all[ek]
    return out, "model_ema.* (the EMA copy the original samples with)"


# ------------------------------------------------------------------------------ VAE
def _vae_resnet(rest, where):
    for old, new in (("norm1.", "norm1."), ("conv1.", "conv1."), ("norm2.", "norm2."), ("conv2.", "conv2."),
                     ("nin_shortcut.", "conv_shortcut.")):
        if rest.startswith(old):
            return new + rest[len(old):]
    _fail("vae", f"unknown ResnetBlock key '{where}.{rest}'")


def _vae_mid(rest, k):
    parts = rest.split(".")
    if parts[0] == "block_1":
        return "mid_block.resnets.0." + _vae_resnet(".".join(parts[1:]), k)
    if parts[0] == "block_2":
        return "mid_block.resnets.1." + _vae_resnet(".".join(parts[1:]), k)
    if parts[0] == "attn_1" and len(parts) == 3:
        name = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}.get(parts[1])
        if name:
            return f"mid_block.attentions.0.{name}.{parts[2]}"
    _fail("vae", f"unknown key '{k}'")


def vae_to_diffusers(sd, hp, scaling_factor):
    """Original AutoencoderKL keys (first_stage_model. stripped, no vocoder / loss) ->
    (diffusers keys, config)."""
    keys = list(sd)
    n = len(_indices(keys, r"encoder\.down\.(\d+)\."))
    if n == 0 or "encoder.conv_in.weight" not in sd:
        _fail("vae", "no encoder.down.* / encoder.conv_in: not an LDM AutoencoderKL state dict")
    n_up = len(_indices(keys, r"decoder\.up\.(\d+)\."))
    if n_up != n:
        _fail("vae", f"{n} encoder levels but {n_up} decoder levels")
    boc = [int(sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) for i in range(n)]
    lpb = len(_indices(keys, r"encoder\.down\.0\.block\.(\d+)\."))
    out, ignored = {}, []
    for k, v in sd.items():
        parts = k.split(".")
        new = None
        if parts[0] not in ("encoder", "decoder", "quant_conv", "post_quant_conv"):
            ignored.append(k)  # not part of the autoencoder (e.g. training buffers)
            continue
        if parts[0] in ("quant_conv", "post_quant_conv"):
            new = k
        elif parts[0] in ("encoder", "decoder") and len(parts) >= 3:
            side, what = parts[0], parts[1]
            if what in ("conv_in", "conv_out") and len(parts) == 3:
                new = k
            elif what == "norm_out" and len(parts) == 3:
                new = f"{side}.conv_norm_out.{parts[2]}"
            elif what == "mid":
                new = f"{side}." + _vae_mid(".".join(parts[2:]), k)
            elif side == "encoder" and what == "down":
                i = int(parts[2])
                if parts[3] == "block":
                    new = f"encoder.down_blocks.{i}.resnets.{parts[4]}." + _vae_resnet(".".join(parts[5:]), k)
                elif parts[3] == "downsample" and parts[4] == "conv":
                    new = f"encoder.down_blocks.{i}.downsamplers.0.conv." + ".".join(parts[5:])
            elif side == "decoder" and what == "up":
                b = n - 1 - int(parts[2])  # the original counts up levels from the highest resolution
                if parts[3] == "block":
                    new = f"decoder.up_blocks.{b}.resnets.{parts[4]}." + _vae_resnet(".".join(parts[5:]), k)
                elif parts[3] == "upsample" and parts[4] == "conv":
                    new = f"decoder.up_blocks.{b}.upsamplers.0.conv." + ".".join(parts[5:])
        if new is None:
            _fail("vae", f"unknown key '{k}'")
        if new.split(".")[-2] in ("to_q", "to_k", "to_v", "0") and "attentions" in new and v.dim() == 4:
            v = v[:, :, 0, 0]  # 1x1 conv -> linear
        if new in out:
            _fail("vae", f"two keys map to '{new}'")
        out[new] = v
    config = {
        "_class_name": "AutoencoderKL",
        "_mcm_converted_from": "original MusicLDM checkpoint (ldm AutoencoderKL)",
        "in_channels": int(sd["encoder.conv_in.weight"].shape[1]),
        "out_channels": int(sd["decoder.conv_out.weight"].shape[0]),
        "down_block_types": ["DownEncoderBlock2D"] * n, "up_block_types": ["UpDecoderBlock2D"] * n,
        "block_out_channels": boc, "layers_per_block": lpb, "act_fn": "silu",
        "latent_channels": int(sd["decoder.conv_in.weight"].shape[1]), "norm_num_groups": hp["norm_num_groups"],
        "sample_size": hp["sample_size"], "scaling_factor": float(scaling_factor), "force_upcast": True,
        "mid_block_add_attention": "encoder.mid.attn_1.q.weight" in sd,
        "use_quant_conv": "quant_conv.weight" in sd, "use_post_quant_conv": "post_quant_conv.weight" in sd,
    }
    return out, config, ignored


# ------------------------------------------------------------------------------ HiFi-GAN
def vocoder_to_diffusers(sd, hp):
    """Original HiFi-GAN generator keys -> (SpeechT5HifiGan keys, config). Weight norm is folded
    afterwards by convert_state_dict("vocoder", ...)."""
    keys = list(sd)
    if not any(k.startswith("conv_pre.") for k in keys):
        _fail("vocoder", "no conv_pre.*: not a HiFi-GAN generator state dict")
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[0] in ("conv_pre", "conv_post", "resblocks"):
            new = k
        elif parts[0] == "ups":
            new = "upsampler." + ".".join(parts[1:])
        else:
            _fail("vocoder", f"unknown key '{k}'")
        out[new] = v
    stages = _indices(keys, r"ups\.(\d+)\.")
    blocks = _indices(keys, r"resblocks\.(\d+)\.")
    if not stages or len(blocks) % len(stages):
        _fail("vocoder", f"{len(blocks)} residual blocks do not divide into {len(stages)} upsampling stages")
    nk = len(blocks) // len(stages)
    rates = list(hp["upsample_rates"])
    if len(rates) != len(stages):
        _fail("vocoder", f"{len(stages)} upsampling stages in the weights, {len(rates)} upsample_rates "
                         f"(--set vocoder.upsample_rates=[...])")
    dil = [list(d) for d in hp["resblock_dilation_sizes"]]
    if len(dil) != nk:
        _fail("vocoder", f"{nk} residual blocks per stage, {len(dil)} resblock_dilation_sizes lists")
    for j in range(nk):
        nd = len(_indices(keys, rf"resblocks\.{j}\.convs1\.(\d+)\."))
        if nd != len(dil[j]):
            _fail("vocoder", f"resblocks.{j} has {nd} dilated convs, resblock_dilation_sizes[{j}] = {dil[j]}")
    pre = _weight(sd, "conv_pre")
    if "mean" not in out:  # SpeechT5HifiGan's normalisation buffers (unused: normalize_before is false)
        out["mean"] = torch.zeros(pre.shape[1])
        out["scale"] = torch.ones(pre.shape[1])
    config = {
        "model_type": "hifigan", "_mcm_converted_from": "original MusicLDM checkpoint (HiFi-GAN generator)",
        "model_in_dim": int(pre.shape[1]), "sampling_rate": hp["sampling_rate"],
        "upsample_initial_channel": int(pre.shape[0]), "upsample_rates": rates,
        "upsample_kernel_sizes": [int(_weight(sd, f"ups.{i}").shape[2]) for i in stages],
        "resblock_kernel_sizes": [int(_weight(sd, f"resblocks.{j}.convs1.0").shape[2]) for j in range(nk)],
        "resblock_dilation_sizes": dil, "leaky_relu_slope": hp["leaky_relu_slope"], "normalize_before": False,
    }
    return out, config


# ------------------------------------------------------------------------------ CLAP text
def clap_to_transformers(sd, hp):
    """Original CLAP keys (text_branch = a transformers RobertaModel) -> (ClapModel text keys,
    config, the keys not converted: the audio tower, the transforms, the logit scales)."""
    out, ignored = {}, []
    for k, v in sd.items():
        if k.startswith("text_branch."):
            new = "text_model." + k[len("text_branch."):]
        elif k.startswith("text_projection.0."):
            new = "text_projection.linear1." + k[len("text_projection.0."):]
        elif k.startswith("text_projection.2."):
            new = "text_projection.linear2." + k[len("text_projection.2."):]
        elif k.startswith("text_projection."):
            _fail("text_encoder", f"unknown key '{k}'")
        else:
            ignored.append(k)
            continue
        out[new] = v
    if "text_model.embeddings.word_embeddings.weight" not in out:
        _fail("text_encoder", "no text_branch.embeddings.word_embeddings.weight: not a CLAP checkpoint with a "
                              "RoBERTa text branch")
    V, D = out["text_model.embeddings.word_embeddings.weight"].shape
    layers = len(_indices(list(out), r"text_model\.encoder\.layer\.(\d+)\."))
    heads = int(hp["num_attention_heads"])
    if heads < 1 or D % heads:
        _fail("text_encoder", f"hidden size {D} is not a whole number of {heads} heads (--set "
                              f"text_encoder.num_attention_heads)")
    P = int(out["text_projection.linear2.weight"].shape[0])
    text = {
        "model_type": "clap_text_model", "vocab_size": int(V), "hidden_size": int(D), "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": int(out["text_model.encoder.layer.0.intermediate.dense.weight"].shape[0]),
        "max_position_embeddings": int(out["text_model.embeddings.position_embeddings.weight"].shape[0]),
        "type_vocab_size": int(out["text_model.embeddings.token_type_embeddings.weight"].shape[0]),
        "layer_norm_eps": hp["layer_norm_eps"], "pad_token_id": hp["pad_token_id"],
        "bos_token_id": hp["bos_token_id"], "eos_token_id": hp["eos_token_id"], "hidden_act": "gelu",
        "position_embedding_type": "absolute", "projection_dim": P, "projection_hidden_act": "relu",
    }
    config = {"model_type": "clap", "_mcm_converted_from": "original MusicLDM checkpoint (LAION CLAP, text tower)",
              "projection_dim": P, "projection_hidden_act": "relu", "text_config": text}
    return out, config, ignored


# ------------------------------------------------------------------------------ driver
def parse_sets(items):
    hp = {c: dict(v) for c, v in HPARAMS.items()}
    for item in items or ():
        key, eq, value = item.partition("=")
        comp, dot, name = key.partition(".")
        if not eq or not dot or comp not in hp or name not in hp[comp]:
            allowed = ", ".join(f"{c}.{n}" for c in hp for n in hp[c])
            raise ConversionError(f"--set {item}: expected COMPONENT.KEY=JSON with one of: {allowed}")
        try:
            hp[comp][name] = json.loads(value)
        except json.JSONDecodeError as e:
            raise ConversionError(f"--set {item}: the value is not JSON ({e})") from None
    return hp


def find_component(component, sources):
    """(tensors with original names, where they came from) from the first source holding them."""
    for path, sd in sources:
        for prefix in PREFIXES[component]:
            if component == "unet":
                continue  # handled by unet_state
            exclude = ("vocoder.", "loss.") if component == "vae" else ()
            part = take(sd, prefix, exclude)
            probe = {"vae": "encoder.conv_in.weight", "vocoder": "conv_pre.", "text_encoder": "text_branch."}[component]
            if any(k.startswith(probe) for k in part):
                return part, f"{path}: {prefix or '(no prefix)'}*"
    return None, None


def convert(sources, out_dir, components, hp, unet_weights="auto", dtype="fp32", quiet=False):
    """sources: [(path, state dict)] in order of preference per component. Writes
    out_dir/<component>.h5 for each component; returns {component: (tensor count, parameters)}."""
    os.makedirs(out_dir, exist_ok=True)
    done = {}
    for comp in components:
        note = ""
        if comp == "unet":
            part = where = None
            for path, sd in sources:
                part, how = unet_state(sd, unet_weights)
                if part is not None:
                    where = f"{path}: {how}"
                    break
            if part is None:
                _fail("unet", "no model.diffusion_model.* keys in " + ", ".join(p for p, _ in sources))
            renamed, config = unet_to_diffusers(part, hp["unet"])
        else:
            part, where = find_component(comp, sources)
            if part is None:
                _fail(comp, "not found in " + ", ".join(p for p, _ in sources) +
                      {"vae": " (looked for first_stage_model.encoder.*)",
                       "vocoder": " (looked for first_stage_model.vocoder.conv_pre.*)",
                       "text_encoder": " (looked for cond_stage_model.model.text_branch.*)"}[comp])
            if comp == "vae":
                scale = hp["vae"]["scaling_factor"]
                for _, sd in sources:
                    if "scale_factor" in sd:
                        scale = float(sd["scale_factor"])
                        break
                else:
                    note = f" (no scale_factor buffer: scaling_factor {scale} from --set / the release)"
                renamed, config, ignored = vae_to_diffusers(part, hp["vae"], scale)
            elif comp == "vocoder":
                renamed, config = vocoder_to_diffusers(part, hp["vocoder"])
            else:
                renamed, config, ignored = clap_to_transformers(part, hp["text_encoder"])
            if comp != "vocoder" and ignored:
                what = "not the text tower" if comp == "text_encoder" else "not part of the autoencoder"
                note += f" ({len(ignored)} tensors {what}, not converted: {', '.join(ignored[:4])}" + \
                        (", ..." if len(ignored) > 4 else "") + ")"
        tensors, skipped = convert_state_dict(comp, renamed)
        path = os.path.join(out_dir, comp + ".h5")
        write_h5(path, tensors, comp, where, json.dumps(config, indent=2, sort_keys=True), dtype)
        n = sum(a.size for a in tensors.values())
        done[comp] = (len(tensors), n)
        if not quiet:
            print(f"{comp}: {len(tensors)} tensors, {n / 1e6:.2f} M parameters from {where} -> {path}{note}"
                  + (f" (skipped non-float: {', '.join(skipped)})" if skipped else ""))
    return done


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", help="the original MusicLDM Lightning checkpoint (musicldm-ckpt.ckpt)")
    ap.add_argument("--vae-ckpt", help="a separate VAE checkpoint (vae-ckpt.ckpt); wins over --ckpt")
    ap.add_argument("--vocoder-ckpt", help="a separate HiFi-GAN checkpoint (key 'generator'); wins over --ckpt")
    ap.add_argument("--clap-ckpt", help="a separate CLAP checkpoint (clap-ckpt.pt); wins over --ckpt")
    ap.add_argument("--out", required=True, help="output folder: <component>.h5 files")
    ap.add_argument("--components", default=None,
                    help="comma-separated subset of " + ",".join(COMPONENTS) + " (default: every one the files hold)")
    ap.add_argument("--unet-weights", choices=("auto", "ema", "model"), default="auto")
    ap.add_argument("--set", action="append", metavar="COMPONENT.KEY=JSON", help="change a configuration value")
    ap.add_argument("--tokenizer", help="a folder with roberta-base's vocab.json and merges.txt to copy beside")
    ap.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32")
    ap.add_argument("--allow-pickle", action="store_true", help="allow torch.load(weights_only=False)")
    a = ap.parse_args()
    try:
        hp = parse_sets(a.set)
        if not (a.ckpt or a.vae_ckpt or a.vocoder_ckpt or a.clap_ckpt):
            raise ConversionError("give --ckpt FILE (and/or --vae-ckpt, --vocoder-ckpt, --clap-ckpt)")
        loaded = {}
        for p in (a.vae_ckpt, a.vocoder_ckpt, a.clap_ckpt, a.ckpt):
            if p and p not in loaded:
                loaded[p] = state_dict_of(load_checkpoint(p, a.allow_pickle))
        order = {"unet": [a.ckpt], "vae": [a.vae_ckpt, a.ckpt], "vocoder": [a.vocoder_ckpt, a.ckpt],
                 "text_encoder": [a.clap_ckpt, a.ckpt]}
        if a.components:
            comps = [c.strip() for c in a.components.split(",") if c.strip()]
            bad = [c for c in comps if c not in COMPONENTS]
            if bad:
                raise ConversionError(f"--components: unknown {', '.join(bad)} "
                                      f"(expected some of {', '.join(COMPONENTS)})")
        else:
            comps = []
            for c in COMPONENTS:  # those some source holds
                srcs = [(p, loaded[p]) for p in order[c] if p]
                has = (any(unet_state(sd, "model")[0] for _, sd in srcs) if c == "unet"
                       else find_component(c, srcs)[0] is not None)
                if has:
                    comps.append(c)
            if not comps:
                raise ConversionError("none of unet, vae, vocoder, text_encoder was found in the given files")
        for c in comps:
            srcs = [(p, loaded[p]) for p in order[c] if p]
            if not srcs:
                raise ConversionError(f"{c}: no file given that could hold it")
            convert(srcs, a.out, [c], hp, a.unet_weights, a.dtype)
        if a.tokenizer:
            os.makedirs(os.path.join(a.out, "tokenizer"), exist_ok=True)
            for name in ("vocab.json", "merges.txt"):
                src = os.path.join(a.tokenizer, name)
                if not os.path.exists(src):
                    raise ConversionError(f"--tokenizer: {src} does not exist")
                shutil.copy(src, os.path.join(a.out, "tokenizer", name))
        elif "text_encoder" in comps:
            print("note: the original checkpoint has no tokenizer files; copy roberta-base's vocab.json and "
                  f"merges.txt into {os.path.join(a.out, 'tokenizer')} (or pass --tokenizer DIR)")
    except ConversionError as e:
        sys.exit(f"convert_musicldm_original: {e}")


if __name__ == "__main__":
    main()
