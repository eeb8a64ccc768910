/* The configuration schema: every key mcm reads, with its type, default, range and help.
 * This table is the only documentation of the keys: `--help-config` prints it (config_help),
 * and the parser accepts nothing that is not in it.
 *
 * To add a key:
 *   1. add the field to Config in core/config.h, in the struct of its section, with the C type
 *      of its CfgType (int64_t, double, bool, char[CFG_MAX_STRING], CfgIntList, CfgFloatList);
 *   2. add a row below with the macro of that type; the row takes the section and key from
 *      the Config member, so `INT(train, steps, ...)` is [train] steps and cfg.train.steps;
 *   3. if the key constrains others, add the check to mcm_schema_cross_check at the bottom.
 * A default of NULL makes the key required. config_defaults checks every row's type against
 * its field size and every default against its own range, so a wrong row fails at start-up
 * (and in `make test`), not in the middle of a run.
 */
#include <math.h>
#include <stddef.h>

#include "core/config.h"

/* Fills section, key, type, offset and size from the Config member sec.name. */
#define ROW_(sec, name, t)                                                                  \
  .section = #sec, .key = #name, .type = (t), .offset = offsetof(Config, sec.name),         \
  .size = sizeof(((Config *)0)->sec.name)
#define ANY 1, 0 /* no range: min > max */
#define NOMAX INFINITY

#define INT(sec, name, def_, lo, hi, help_) \
  { ROW_(sec, name, CFG_INT), .def = (def_), .min = (lo), .max = (hi), .help = (help_) }
#define FLOAT(sec, name, def_, lo, hi, help_) \
  { ROW_(sec, name, CFG_FLOAT), .def = (def_), .min = (lo), .max = (hi), .help = (help_) }
/* A float that must be > lo (a learning rate, a scale). */
#define FLOAT_GT(sec, name, def_, lo, hi, help_)                                            \
  { ROW_(sec, name, CFG_FLOAT), .def = (def_), .min = (lo), .max = (hi), .min_open = true,  \
    .help = (help_) }
#define BOOL(sec, name, def_, help_) \
  { ROW_(sec, name, CFG_BOOL), .def = (def_), .min = 1, .max = 0, .help = (help_) }
#define STRING(sec, name, def_, check_, help_)                                              \
  { ROW_(sec, name, CFG_STRING), .def = (def_), .min = 1, .max = 0, .check = (check_),      \
    .help = (help_) }
#define ENUM(sec, name, def_, choices_, help_)                                              \
  { ROW_(sec, name, CFG_ENUM), .def = (def_), .min = 1, .max = 0, .choices = (choices_),    \
    .help = (help_) }
#define INT_LIST(sec, name, def_, lo, hi, help_) \
  { ROW_(sec, name, CFG_INT_LIST), .def = (def_), .min = (lo), .max = (hi), .help = (help_) }

/* run.device: "auto", "cpu", "cuda" or "cuda:N" with N a GPU index. */
static int check_device(const void *field, char *why, size_t why_size) {
  const char *s = field;
  if (!strcmp(s, "auto") || !strcmp(s, "cpu") || !strcmp(s, "cuda")) return 0;
  if (!strncmp(s, "cuda:", 5) && s[5]) {
    const char *p = s + 5;
    while (*p >= '0' && *p <= '9') p++;
    if (!*p && p - (s + 5) <= 4) return 0;
  }
  mcm_snprintf(why, why_size, "expected auto, cpu, cuda or cuda:N (N a GPU index such as cuda:0)");
  return -1;
}

const CfgKey MCM_SCHEMA[] = {
    /* ------------------------------------------------------------------ [run] */
    STRING(run, device, "auto", check_device,
           "where to run: auto (every visible GPU, else the CPU), cpu, cuda (every GPU) or cuda:N"),
    INT(run, seed, "0", 0, NOMAX, "seed of the counter-based RNG: noise, timesteps, data order"),
    STRING(run, out_dir, "runs/mcm", NULL, "directory for the log, samples and the resolved config"),
    INT(run, log_every, "10", 1, NOMAX, "print and log the losses every this many steps"),

    /* ------------------------------------------------------------------ [train] */
    ENUM(train, mode, "distill", "distill|teacher|vae|vocoder",
         "what to train: consistency distillation of the UNet, or the teacher, VAE or vocoder"),
    INT(train, steps, NULL, 1, NOMAX, "optimizer steps to run (the run ends at this step)"),
    INT(train, batch_size, "8", 1, 65536, "clips per optimizer step on each GPU (process)"),
    FLOAT_GT(train, lr, "1e-5", 0, 1, "AdamW learning rate (MusicCM: 1e-5), constant"),
    FLOAT(train, weight_decay, "0.0", 0, 1, "AdamW decoupled weight decay"),
    FLOAT(train, grad_clip, "1.0", 0, NOMAX, "clip the global gradient norm to this; 0 = no clipping"),
    FLOAT(train, ema_decay, "0.95", 0, 1, "rate mu of the EMA target: theta- <- mu theta- + (1-mu) theta"),
    ENUM(train, precision, "bf16", "fp32|bf16",
         "distill: bf16 runs the frozen teacher, VAE and AudioMAE in bf16 with fp32 accumulation (emulated, "
         "slower, on the CPU); the student, its EMA target and the heads stay fp32. Other modes: fp32 throughout"),
    BOOL(train, adversarial, "true",
         "distill: add the AudioMAE discriminator loss (false = consistency loss only); vocoder: HiFi-GAN's "
         "multi-period and multi-scale discriminators (false = the quick start, mel L1 + multi-resolution STFT)"),
    FLOAT(train, lambda_distill, "3.0", 0, NOMAX, "weight of the consistency loss: L = L_adv + lambda L_distill"),
    INT(train, num_ddim_steps, "50", 1, 1000, "N, points of the teacher's DDIM solver grid"),
    INT(train, skip_k, "20", 1, 1000, "k, timesteps between neighbouring grid points (N k <= 1000)"),
    FLOAT(train, guidance_w, "2.0", 0, NOMAX, "w of the guided teacher step x + (1+w) Psi(c) - w Psi(empty)"),
    ENUM(train, loss, "huber", "l2|huber", "distance of the consistency loss: l2 or pseudo-Huber"),
    FLOAT_GT(train, huber_c, "0.001", 0, NOMAX, "c of the pseudo-Huber loss sqrt(d^2 + c^2) - c"),
    FLOAT(train, beta1, "0.9", 0, 0.999999, "AdamW beta1 of the trained UNet"),
    FLOAT(train, beta2, "0.999", 0, 0.999999, "AdamW beta2 of the trained UNet"),
    FLOAT(train, adam_eps, "1e-8", 0, 1, "AdamW eps of the trained UNet"),
    ENUM(train, lr_schedule, "constant", "constant|cosine",
         "learning rate after warmup: constant, or cosine decay to 0 at train.steps"),
    INT(train, warmup_steps, "0", 0, NOMAX, "linear warmup of the learning rate from 0 over this many steps"),
    FLOAT(train, cond_dropout, "0.1", 0, 1,
          "teacher mode: probability that a row's text embedding is replaced by the unconditional one (MusicLDM 0.1)"),
    FLOAT(train, teacher_ema_decay, "0.9999", 0, 1,
          "teacher mode: rate of the EMA of the weights kept for sampling (MusicLDM 0.9999)"),
    INT(train, nan_tolerance, "10", 1, NOMAX,
        "a step with a NaN/Inf loss or gradient is skipped; this many in a row stop the run"),
    FLOAT(train, allreduce_bucket_mb, "25", 0, 4096,
          "data parallel: gradients are averaged over ranks in buckets of at most this many MiB, each started "
          "during backward once its gradients are final (kernels/grad_sync.h); 0 = one all-reduce after backward"),

    /* ------------------------------------------------------------------ [teacher] */
    STRING(teacher, weights, "", NULL,
           "converted teacher UNet (tools/convert_diffusers.py unet.h5); distill: required, frozen; "
           "teacher mode: the weights to fine-tune, empty = train from random init"),

    /* ------------------------------------------------------------------ [student] */
    STRING(student, init, "", NULL, "distill: weights the student and its EMA target start from; empty = teacher.weights"),

    /* ------------------------------------------------------------------ [vae] */
    STRING(vae, weights, "", NULL,
           "converted VAE (vae.h5): decodes the student's x0 for the discriminator; required when train.adversarial"),

    /* ------------------------------------------------------------------ [vae_train] */
    FLOAT(vae_train, kl_weight, "1e-6", 0, NOMAX,
          "train.mode = vae: L = recon + kl_weight KL(N(mu, sigma^2) || N(0, 1)), both means per element"),
    ENUM(vae_train, recon, "l1", "l1", "train.mode = vae: reconstruction distance on the log-mel (mean |x^ - x|)"),
    FLOAT(vae_train, ema_decay, "0", 0, 0.999999,
          "train.mode = vae: rate of an EMA of the weights, exported in vae.h5; 0 = no EMA (the trained weights)"),
    INT(vae_train, scale_batches, "8", 1, NOMAX,
        "train.mode = vae: scaling_factor = 1/std of the sampled latents of this many training batches"),
    INT(vae_train, in_channels, "1", 1, 64, "train.mode = vae from scratch (vae.weights empty): input channels (1: the log-mel)"),
    INT(vae_train, latent_channels, "8", 1, 1024, "train.mode = vae from scratch: latent channels L (MusicLDM: 8)"),
    INT_LIST(vae_train, block_out_channels, "128,256,512", 1, 65536,
             "train.mode = vae from scratch: channels per level; n levels downsample by 2^(n-1)"),
    INT(vae_train, layers_per_block, "2", 1, 4, "train.mode = vae from scratch: resnets per encoder level (decoder: one more)"),
    INT(vae_train, norm_groups, "32", 1, 4096, "train.mode = vae from scratch: GroupNorm groups (divide every level's channels)"),

    /* ------------------------------------------------------------------ [vocoder_train] */
    STRING(vocoder_train, weights, "", NULL,
           "train.mode = vocoder: a vocoder.h5 to fine-tune (its sizes win); empty = from scratch with the sizes below"),
    INT(vocoder_train, upsample_initial_channel, "1024", 2, 65536,
        "train.mode = vocoder from scratch: HiFi-GAN channels after conv_pre (halved at every stage)"),
    INT_LIST(vocoder_train, upsample_rates, "5,4,2,2,2", 1, 64,
             "train.mode = vocoder from scratch: upsampling factors; their product must be mel.hop"),
    INT_LIST(vocoder_train, upsample_kernel_sizes, "16,16,8,4,4", 1, 256,
             "train.mode = vocoder from scratch: transposed-conv kernels, one per rate (>= the rate)"),
    INT_LIST(vocoder_train, resblock_kernel_sizes, "3,7,11", 1, 63,
             "train.mode = vocoder from scratch: residual block kernels (odd), every stage"),
    INT_LIST(vocoder_train, resblock_dilations, "1,3,5", 1, 64,
             "train.mode = vocoder from scratch: dilations of every residual block (HiFi-GAN V1: 1,3,5)"),
    FLOAT(vocoder_train, mel_weight, "45", 0, NOMAX,
          "train.mode = vocoder: L = mel_weight |mel(wav^) - mel|_1 + (train.adversarial = false) the multi-resolution "
          "STFT loss, or (true) HiFi-GAN's least-squares GAN loss + fm_weight x feature matching"),
    FLOAT(vocoder_train, fm_weight, "2", 0, NOMAX,
          "train.mode = vocoder, train.adversarial: weight of the feature-matching loss, sum over every "
          "discriminator layer of mean |f(wav) - f(wav^)| (HiFi-GAN: 2)"),
    INT_LIST(vocoder_train, disc_periods, "2,3,5,7,11", 1, 65536,
             "train.mode = vocoder, train.adversarial: one multi-period sub-discriminator per period (HiFi-GAN V1: "
             "2,3,5,7,11)"),
    INT_LIST(vocoder_train, disc_period_channels, "32,128,512,1024,1024", 1, 65536,
             "train.adversarial: channels of each period sub-discriminator's (5,1) convs, stride 3 but the last "
             "(HiFi-GAN V1: 32,128,512,1024,1024)"),
    INT(vocoder_train, disc_scales, "3", 0, 4,
        "train.adversarial: multi-scale sub-discriminators on the waveform average-pooled 0, 1, 2, ... times "
        "(HiFi-GAN: 3; 0 = none)"),
    INT_LIST(vocoder_train, disc_scale_channels, "128,128,256,512,1024,1024,1024", 1, 65536,
             "train.adversarial: channels of the 7 convs of each scale sub-discriminator (kernels 15,41,41,41,41,"
             "41,5; strides 1,2,2,4,4,1,1)"),
    INT_LIST(vocoder_train, disc_scale_groups, "1,4,16,16,16,16,1", 1, 65536,
             "train.adversarial: groups of those 7 convs; each divides its conv's input and output channels"),
    BOOL(vocoder_train, disc_spectral_norm, "true",
         "train.adversarial: spectral norm on the first scale's convs (HiFi-GAN); false = weight norm as all others"),

    /* ------------------------------------------------------------------ [text] */
    BOOL(text, joint, "false",
         "train.mode = teacher: train a small RoBERTa-shaped text tower jointly with the UNet from the shards' "
         "captions (the shards need no text_emb); exported to run.out_dir/text_encoder.h5 and tokenizer/"),
    STRING(text, tokenizer, "", NULL, "text.joint: the tokenizer directory (vocab.json and merges.txt)"),
    INT(text, max_length, "77", 2, 4096, "text.joint: tokens per caption, <s> and </s> included (longer ones are truncated)"),
    INT(text, vocab_size, "0", 0, 1 << 24, "text.joint: the tower's word embedding rows; 0 = the tokenizer's vocabulary size"),
    INT(text, hidden, "64", 1, 65536, "text.joint: the tower's width (divisible by text.heads)"),
    INT(text, layers, "2", 1, 64, "text.joint: encoder layers"),
    INT(text, heads, "2", 1, 256, "text.joint: attention heads"),
    INT(text, intermediate, "256", 1, 1 << 20, "text.joint: feed-forward width"),
    INT(text, projection_dim, "0", 0, 65536, "text.joint: the embedding size; 0 = unet.context_dim (which it must equal)"),

    /* ------------------------------------------------------------------ [adversarial] */
    STRING(adversarial, audiomae, "", NULL,
           "converted AudioMAE ViT-B encoder (frozen feature network), or random: mae_* sizes, fixed-seed weights"),
    STRING(adversarial, bridge, "", NULL, "the fitted 64-bin mel -> 128-bin fbank bridge (tools/fit_bridge)"),
    INT_LIST(adversarial, taps, "-1,2,5,8,11", -1, 63,
             "AudioMAE layers feeding a head: -1 = tokens after patch + position, i = output of block i (0-based)"),
    FLOAT_GT(adversarial, lr, "1e-4", 0, 1, "AdamW learning rate of the discriminator heads"),
    FLOAT(adversarial, beta1, "0.0", 0, 0.999999, "heads AdamW beta1 (StyleGAN-T: 0)"),
    FLOAT(adversarial, beta2, "0.99", 0, 0.999999, "heads AdamW beta2 (StyleGAN-T: 0.99)"),
    FLOAT(adversarial, weight_decay, "0.0", 0, 1, "heads AdamW weight decay"),
    FLOAT(adversarial, r1_gamma, "1e-5", 0, NOMAX, "gamma of the R1 penalty on each head's input (real samples)"),
    INT(adversarial, r1_interval, "1", 1, NOMAX, "lazy R1: every this many steps, scaled by the interval"),
    INT(adversarial, mae_frames, "1024", 1, 1 << 20, "AudioMAE input frames (the bridge's output is padded or cut to it)"),
    INT(adversarial, mae_bins, "128", 1, 4096, "AudioMAE input bins (Kaldi fbank bins; the bridge maps the mel to them)"),
    INT(adversarial, mae_patch, "16", 1, 256, "AudioMAE square patch size"),
    INT(adversarial, mae_dim, "768", 1, 65536, "AudioMAE width (ViT-B: 768)"),
    INT(adversarial, mae_depth, "12", 1, 64, "AudioMAE blocks (ViT-B: 12)"),
    INT(adversarial, mae_heads, "12", 1, 1024, "AudioMAE attention heads (ViT-B: 12)"),
    INT(adversarial, cmap_dim, "64", 1, 65536, "the heads' projection size (StyleGAN-T: 64)"),
    INT(adversarial, head_kernel, "9", 1, 99, "kernel of the heads' residual conv (odd; StyleGAN-T: 9)"),
    INT(adversarial, virtual_bs, "8", 1, 4096,
        "BatchNormLocal group size of the heads: the batch per process must split into groups of equal size"),

    /* ------------------------------------------------------------------ [infer] */
    INT(infer, window_frames, "0", -1, 1 << 20,
        "./infer beyond the UNet's native length: window of latent frames sampled at once, fused every step; "
        "0 = the native length (the weights' sample_size), -1 = no windows (the whole latent at once)"),
    INT(infer, stride_frames, "0", 0, 1 << 20,
        "./infer long form: latent frames between window starts; 0 = window / 4"),
    ENUM(infer, fuse, "average", "average|triangular",
         "./infer long form: how overlapping windows are fused: the plain average (MultiDiffusion) or weights "
         "that fall toward each window's edges"),
    ENUM(infer, precision, "fp32", "fp32|bf16",
         "./infer: bf16 runs the UNet, VAE decoder and vocoder in bf16 with fp32 accumulation (tensor cores on the "
         "GPU; emulated, slower, on the CPU); the text tower stays fp32"),

    /* ------------------------------------------------------------------ [sample] */
    INT(sample, every, "0", 0, NOMAX,
        "write samples of the EMA weights (WAV + mel PNG under run.out_dir/samples) every this many steps; 0 = never"),
    INT(sample, steps, "4", 1, 1000, "sampling steps: consistency sampling (distill) or DDIM (teacher mode)"),
    STRING(sample, prompts, "", NULL, "file of fixed prompts (one a line, at most 16) for the training samples"),
    STRING(sample, bundle, "", NULL,
           "model bundle directory (./infer's: vae.h5, vocoder.h5, text_encoder.h5, tokenizer/, unet.h5) for samples"),
    FLOAT(sample, seconds, "0", 0, 3600, "length of each sample; 0 = the UNet's native length"),
    INT(sample, seed, "0", 0, NOMAX, "prompt i is sampled with seed + i, the same at every sampling step"),

    /* ------------------------------------------------------------------ [data] */
    STRING(data, train_shards, NULL, NULL,
           "the prepared HDF5 training shards (latents + text embeddings): a path or a glob"),
    INT(data, num_workers, "1", 0, 64, "loader threads per process; 0 = load in the training thread"),
    STRING(data, encoders, "", NULL,
           "the dataset's encoders.h5 (uncond_text_emb, vae_scaling_factor); empty = beside the shards"),

    /* ------------------------------------------------------------------ [checkpoint] */
    STRING(checkpoint, dir, "checkpoints/run", NULL,
           "directory for this run's checkpoints ckpt_<step>.h5; an existing one is resumed"),
    INT(checkpoint, every, "1000", 1, NOMAX, "write a checkpoint every this many steps"),
    INT(checkpoint, keep, "3", 1, NOMAX, "keep the newest this many checkpoints, delete older ones"),
    STRING(checkpoint, init, "", NULL,
           "a checkpoint of another run whose student (or teacher-mode UNet) weights a new run starts from; "
           "empty = teacher.weights / student.init"),

    /* ------------------------------------------------------------------ [unet] */
    INT(unet, in_channels, "8", 1, 1024, "latent channels in and out (the VAE's embed_dim)"),
    INT(unet, model_channels, "128", 1, 4096, "channels of the first level"),
    INT_LIST(unet, channel_mult, "1,2,3,5", 1, 64,
             "channel multiplier per level (level i has model_channels * mult[i])"),
    INT(unet, num_res_blocks, "2", 1, 16, "ResBlocks per level on the way down"),
    INT_LIST(unet, attention_levels, "1,2,3", 0, CFG_MAX_LIST - 1,
             "levels (0 = full resolution) that have a spatial transformer"),
    INT(unet, norm_groups, "32", 1, 4096, "GroupNorm groups of every resnet and transformer (MusicLDM: 32)"),
    INT(unet, num_head_channels, "32", 1, 4096, "channels per attention head (heads = channels / this)"),
    INT(unet, context_dim, "512", 1, 65536, "size of the text embedding fed by FiLM (CLAP: 512)"),
    INT(unet, latent_frames, "256", 1, 1 << 20, "latent time frames (10.24 s = 256)"),
    INT(unet, latent_bins, "16", 1, 4096, "latent frequency bins (64 mel bins / 4 = 16)"),

    /* ------------------------------------------------------------------ [mel] */
    INT(mel, rate, "16000", 1000, 384000, "sample rate of the mel front end (audio is resampled to it)"),
    INT(mel, n_fft, "1024", 16, 65536, "FFT size of the STFT (even)"),
    INT(mel, hop, "160", 1, 65536, "STFT hop in samples (160 = 10 ms at 16 kHz)"),
    INT(mel, win, "1024", 2, 65536, "Hann window length in samples, centred in n_fft (<= n_fft)"),
    INT(mel, n_mels, "64", 1, 1024, "mel bins (Slaney scale and area normalisation)"),
    FLOAT(mel, fmin, "0", 0, NOMAX, "lowest mel filter edge in Hz"),
    FLOAT_GT(mel, fmax, "8000", 0, NOMAX, "highest mel filter edge in Hz (<= rate / 2)"),
    FLOAT_GT(mel, log_floor, "1e-5", 0, 1, "the mel is ln(max(mel, log_floor))"),

    /* ------------------------------------------------------------------ [prepare] */
    INT(prepare, segment_frames, "1024", 1, 1 << 20,
        "mel frames per training segment (1024 = 10.24 s at hop 160); a segment is frames x hop samples"),
    ENUM(prepare, crop, "segments", "segments|first",
         "segments: every full window, hop_frames apart, plus a padded last partial one if it holds "
         ">= min_fraction of a window; first: the first window only, zero-padded"),
    INT(prepare, hop_frames, "1024", 1, 1 << 20,
        "crop = segments: windows start every hop_frames x hop samples (= segment_frames: no overlap)"),
    FLOAT_GT(prepare, min_fraction, "0.5", 0, 1,
             "crop = segments: keep the last partial window if it holds at least this fraction of a window"),
    FLOAT(prepare, min_seconds, "1.0", 0, NOMAX, "skip files shorter than this (reported as too short)"),
    FLOAT(prepare, silence_threshold, "1e-4", 0, 1,
          "a file or window whose peak |x| (before normalisation) is at most this is silent and skipped"),
    INT(prepare, shard_size, "512", 1, 1 << 24, "segments per shard file (the last shard may hold fewer)"),
    INT(prepare, threads, "0", 0, 256, "worker threads reading and transforming audio; 0 = one per CPU core"),
    BOOL(prepare, keep_audio, "false",
         "also store each segment's normalised waveform (segment_frames x hop samples) in the shards: train.mode = vocoder needs it"),
};
const int MCM_SCHEMA_N = (int)(sizeof MCM_SCHEMA / sizeof MCM_SCHEMA[0]);
_Static_assert(sizeof MCM_SCHEMA / sizeof MCM_SCHEMA[0] <= CFG_MAX_KEYS, "raise CFG_MAX_KEYS");

static int key_of(const char *section, const char *key) {
  int i = config_key_index(section, key);
  MCM_CHECK(i >= 0, "schema has no key %s.%s", section, key);
  return i;
}

static void fmt_list(const CfgIntList *l, char *buf, size_t size) {
  size_t n = 0;
  buf[0] = 0;
  for (int i = 0; i < l->n && n < size; i++)
    n += (size_t)snprintf(buf + n, size - n, "%s%lld", i ? "," : "", (long long)l->v[i]);
}

int mcm_schema_cross_check(const Config *cfg, char *why, size_t why_size) {
  char a[128], b[128];
  const CfgIntList *mult = &cfg->unet.channel_mult, *att = &cfg->unet.attention_levels;
  fmt_list(mult, a, sizeof a);
  fmt_list(att, b, sizeof b);

  /* The vocoder's multi-scale discriminators: seven convs each, groups that split their
   * channels (models/hifigan_disc.h). */
  if (!strcmp(cfg->train.mode, "vocoder") && cfg->train.adversarial && cfg->vocoder_train.disc_scales > 0) {
    const CfgIntList *ch = &cfg->vocoder_train.disc_scale_channels, *gr = &cfg->vocoder_train.disc_scale_groups;
    char lc[128], lg[128];
    fmt_list(ch, lc, sizeof lc);
    fmt_list(gr, lg, sizeof lg);
    if (ch->n != 7 || gr->n != 7) {
      mcm_snprintf(why, why_size, "vocoder_train.disc_scale_%s = %s has %d values: a scale sub-discriminator has 7 "
                   "convs (one value each)", ch->n != 7 ? "channels" : "groups", ch->n != 7 ? lc : lg,
                   ch->n != 7 ? ch->n : gr->n);
      return key_of("vocoder_train", ch->n != 7 ? "disc_scale_channels" : "disc_scale_groups");
    }
    for (int j = 0; j < 7; j++) {
      int64_t cin = j ? ch->v[j - 1] : 1, cout = ch->v[j], g = gr->v[j];
      if (cin % g || cout % g) {
        mcm_snprintf(why, why_size, "vocoder_train.disc_scale_groups = %s: conv %d's %lld groups do not divide its "
                     "%lld input and %lld output channels (vocoder_train.disc_scale_channels = %s)", lg, j,
                     (long long)g, (long long)cin, (long long)cout, lc);
        return key_of("vocoder_train", "disc_scale_groups");
      }
    }
  }

  /* Attention sits on existing levels, each once, in increasing order. */
  for (int i = 0; i < att->n; i++) {
    if (att->v[i] >= mult->n) {
      mcm_snprintf(why, why_size,
                   "unet.attention_levels = %s: level %lld does not exist; unet.channel_mult = %s "
                   "has levels 0..%d",
                   b, (long long)att->v[i], a, mult->n - 1);
      return key_of("unet", "attention_levels");
    }
    if (i > 0 && att->v[i] <= att->v[i - 1]) {
      mcm_snprintf(why, why_size, "unet.attention_levels = %s: list each level once, in increasing order", b);
      return key_of("unet", "attention_levels");
    }
  }
  /* Heads split the channels of every level that has attention. */
  for (int i = 0; i < att->n; i++) {
    int64_t ch = cfg->unet.model_channels * mult->v[att->v[i]];
    if (ch % cfg->unet.num_head_channels) {
      mcm_snprintf(why, why_size,
                   "unet.num_head_channels = %lld does not divide the %lld channels of attention "
                   "level %lld (model_channels %lld x channel_mult %s)",
                   (long long)cfg->unet.num_head_channels, (long long)ch, (long long)att->v[i],
                   (long long)cfg->unet.model_channels, a);
      return key_of("unet", "num_head_channels");
    }
  }
  /* GroupNorm splits every level's channels. */
  for (int i = 0; i < mult->n; i++) {
    int64_t ch = cfg->unet.model_channels * mult->v[i];
    if (ch % cfg->unet.norm_groups) {
      mcm_snprintf(why, why_size,
                   "unet.norm_groups = %lld does not divide the %lld channels of level %d (model_channels %lld x "
                   "channel_mult %s)",
                   (long long)cfg->unet.norm_groups, (long long)ch, i, (long long)cfg->unet.model_channels, a);
      return key_of("unet", "norm_groups");
    }
  }
  /* The heads' BatchNormLocal cuts each process's batch into ceil(B / virtual_bs) equal groups. */
  if (!strcmp(cfg->train.mode, "distill") && cfg->train.adversarial) {
    int64_t B = cfg->train.batch_size, G = (B + cfg->adversarial.virtual_bs - 1) / cfg->adversarial.virtual_bs;
    if (B % G) {
      mcm_snprintf(why, why_size,
                   "train.batch_size = %lld cannot be split by the discriminator heads' local batch norm: %lld groups "
                   "(adversarial.virtual_bs = %lld) of unequal size (use a batch size divisible by %lld, e.g. %lld)",
                   (long long)B, (long long)G, (long long)cfg->adversarial.virtual_bs, (long long)G,
                   (long long)(G * (B / G)));
      return key_of("train", "batch_size");
    }
  }
  if (cfg->infer.window_frames > 0 && cfg->infer.stride_frames > cfg->infer.window_frames) {
    mcm_snprintf(why, why_size,
                 "infer.stride_frames = %lld is longer than infer.window_frames = %lld: frames between windows would "
                 "never be sampled", (long long)cfg->infer.stride_frames, (long long)cfg->infer.window_frames);
    return key_of("infer", "stride_frames");
  }
  /* Each level below the first halves both latent axes, and the skip connections need the
   * halves to be exact. */
  int64_t down = (int64_t)1 << (mult->n - 1);
  if (cfg->unet.latent_frames % down || cfg->unet.latent_bins % down) {
    bool frames = cfg->unet.latent_frames % down != 0;
    mcm_snprintf(why, why_size,
                 "unet.%s = %lld is not divisible by %lld, the downsampling of a UNet with %d "
                 "levels (unet.channel_mult = %s)",
                 frames ? "latent_frames" : "latent_bins",
                 (long long)(frames ? cfg->unet.latent_frames : cfg->unet.latent_bins), (long long)down,
                 mult->n, a);
    return key_of("unet", frames ? "latent_frames" : "latent_bins");
  }
  /* A VAE trained from scratch: GroupNorm splits every level, and the mel segment halves
   * exactly at every level below the first (a VAE read from vae.weights is checked against
   * the shards by the trainer). */
  if (!strcmp(cfg->train.mode, "vae") && !cfg->vae.weights[0]) {
    const CfgIntList *bo = &cfg->vae_train.block_out_channels;
    char l[128];
    fmt_list(bo, l, sizeof l);
    if (bo->n > 6) {
      mcm_snprintf(why, why_size, "vae_train.block_out_channels = %s: at most 6 levels", l);
      return key_of("vae_train", "block_out_channels");
    }
    for (int i = 0; i < bo->n; i++)
      if (bo->v[i] % cfg->vae_train.norm_groups) {
        mcm_snprintf(why, why_size, "vae_train.norm_groups = %lld does not divide the %lld channels of level %d "
                     "(vae_train.block_out_channels = %s)", (long long)cfg->vae_train.norm_groups,
                     (long long)bo->v[i], i, l);
        return key_of("vae_train", "norm_groups");
      }
    int64_t f = (int64_t)1 << (bo->n - 1);
    if (cfg->prepare.segment_frames % f || cfg->mel.n_mels % f) {
      bool frames = cfg->prepare.segment_frames % f != 0;
      mcm_snprintf(why, why_size,
                   "%s = %lld is not divisible by %lld, the downsampling of a VAE with %d levels "
                   "(vae_train.block_out_channels = %s)",
                   frames ? "prepare.segment_frames" : "mel.n_mels",
                   (long long)(frames ? cfg->prepare.segment_frames : cfg->mel.n_mels), (long long)f, bo->n, l);
      return key_of(frames ? "prepare" : "mel", frames ? "segment_frames" : "n_mels");
    }
  }
  /* The DDIM grid t = k, 2k, ..., N k (minus one) lies in the teacher's 1000 timesteps. */
  if (cfg->train.num_ddim_steps * cfg->train.skip_k > 1000) {
    mcm_snprintf(why, why_size,
                 "train.skip_k = %lld with train.num_ddim_steps = %lld spans %lld timesteps; the "
                 "teacher has 1000 (use N k <= 1000, e.g. 50 x 20)",
                 (long long)cfg->train.skip_k, (long long)cfg->train.num_ddim_steps,
                 (long long)(cfg->train.skip_k * cfg->train.num_ddim_steps));
    return key_of("train", "skip_k");
  }
  /* The mel front end: what mel_create checks, said in config terms. */
  if (cfg->mel.n_fft % 2) {
    mcm_snprintf(why, why_size, "mel.n_fft = %lld must be even", (long long)cfg->mel.n_fft);
    return key_of("mel", "n_fft");
  }
  if (cfg->mel.win > cfg->mel.n_fft) {
    mcm_snprintf(why, why_size, "mel.win = %lld is longer than mel.n_fft = %lld (the window sits inside the FFT)",
                 (long long)cfg->mel.win, (long long)cfg->mel.n_fft);
    return key_of("mel", "win");
  }
  if (cfg->mel.fmax > cfg->mel.rate / 2.0) {
    mcm_snprintf(why, why_size, "mel.fmax = %g Hz is above the Nyquist frequency %g Hz of mel.rate = %lld",
                 cfg->mel.fmax, cfg->mel.rate / 2.0, (long long)cfg->mel.rate);
    return key_of("mel", "fmax");
  }
  if (cfg->mel.fmin >= cfg->mel.fmax) {
    mcm_snprintf(why, why_size, "mel.fmin = %g Hz must be below mel.fmax = %g Hz", cfg->mel.fmin, cfg->mel.fmax);
    return key_of("mel", "fmin");
  }
  /* A segment must be long enough for the STFT's centre (reflect) padding. */
  if (cfg->prepare.segment_frames * cfg->mel.hop <= cfg->mel.n_fft / 2) {
    mcm_snprintf(why, why_size,
                 "prepare.segment_frames = %lld x mel.hop = %lld is %lld samples, too short for mel.n_fft = %lld "
                 "(needs more than n_fft / 2)",
                 (long long)cfg->prepare.segment_frames, (long long)cfg->mel.hop,
                 (long long)(cfg->prepare.segment_frames * cfg->mel.hop), (long long)cfg->mel.n_fft);
    return key_of("prepare", "segment_frames");
  }
  return -1;
}
