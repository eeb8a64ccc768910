/* Text to music: the whole MusicLDM pipeline as a library call (./infer, the tests, and
 * later the demo and the evaluation use it).
 *
 *   prompt ─ tokenizer ─ CLAP text tower ─ cond (1, P) ─┐     (and uncond = embedding of the
 *                                                        ▼      negative prompt, "" by default)
 *   x_T (1, C, H, W) ~ N(0, 1) ─ UNet × steps (sample_cm / sample_ddim, windowed beyond the
 *     native length) ─ latent ÷ scaling_factor ─ VAE decoder ─ log-mel (1, 1, f·H, M)
 *     ─ HiFi-GAN ─ waveform, cut to round(seconds · rate) samples
 *
 * Sizes: C latent channels (8), H latent frames, W = M / f latent bins (16), f the VAE's
 * factor (4), M mel bins (64), P the text embedding (512).
 *
 * Bundle: a directory (models/weights.h): unet.h5 (teacher), student.h5, vae.h5,
 * vocoder.h5, text_encoder.h5, tokenizer/{vocab.json,merges.txt}. Each model is built from
 * its file's config attribute and cross-checked with the others (latent channels, embedding
 * size, mel bins) before any weight is read. The consistency sampler runs student.h5; DDIM
 * runs unet.h5. A bundle without a student is refused for the consistency sampler unless
 * allow_teacher_cm is set: the teacher was not trained for few-step consistency sampling
 * and gives poor (blurred) results there, which should be a choice, not a fallback.
 *
 * Length (as diffusers' MusicLDMPipeline, reference/musicldm.md §7): n = round(seconds ·
 * rate) samples; mel frames = ⌈n / hop⌉, rounded up so that the latent frames H = frames / f
 * are a multiple of 2^(UNet levels − 1) (8 at full size: 0.32 s); the vocoder gives
 * hop · f · H (+ a few) samples, cut to n. 10.24 s: H = 256, 163872 samples cut to 163840.
 *
 * Long form. H above the UNet's native frames (its config's sample_size, 256) runs the
 * sampler's fused overlapping windows (sample_*_long): window = window_frames (0: the native
 * frames), stride = stride_frames (0: window / 4), overlap averaging by default. Noise is
 * global. The VAE decoder and the vocoder then run once on the whole latent: no seams, and
 * their convolutions and O(T)-memory attention handle any length, at a memory cost linear
 * in the length. Measured per-step activations at full size, fp32, no gradients (the
 * context arena keeps every intermediate of a forward until the step ends): one UNet row
 * (a window, or a guidance half) 0.52 GB; the VAE decoder 1.85 GB per 10.24 s; the vocoder
 * 4.73 GB per 10.24 s. The pipeline frees the arena between the stages, so the peak is the
 * largest one: 4.7 GB for 10.24 s, about 28 GB (the vocoder) for 60 s, where a consistency
 * step's 21 windows take 11 GB (22 GB for DDIM with guidance).
 *   window_frames < 0 turns windows off (the UNet sees the whole latent at once: attention
 * over all of it).
 *
 * Seeds. Each output is sampled from its own seed: the context's RNG is set to (seed, 0)
 * before x_T (or the init latent's posterior sample and its noise) is drawn, so an output
 * depends on its seed only, never on what was generated before it in the same run.
 *
 * Init audio (variation / style transfer): pipeline_set_init_audio cuts or zero-pads the
 * audio to the request's length, normalises it as MusicLDM's loader does (audio_normalize),
 * takes its log-mel and encodes it with the VAE once. Each request with strength < 1 then
 * draws a posterior sample z = mean + σ ⊙ ε (as MusicLDM's get_first_stage_encoding and
 * diffusers' img2img pipelines do: the model was trained on sampled latents), scales it,
 * and the sampler noises it to the strength's first timestep and runs the rest of the
 * schedule (DDIM: the last ⌊steps · strength⌋ timesteps; LCM: its strength-shortened
 * origin grid). strength 1 ignores the init audio (pure noise, as diffusers).
 *
 * Memory: sampling runs in the sampler's state mode (the arena is reset after every step);
 * latents, embeddings and the init moments live in persistent buffers that are reused while
 * the shape stays the same. Everything runs without gradients. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "data/mel.h"
#include "data/tokenizer.h"
#include "diffusion/sampler.h"
#include "diffusion/schedule.h"
#include "models/clap_text.h"
#include "models/hifigan.h"
#include "models/unet.h"
#include "models/vae.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PIPELINE_MAX_SECONDS 86400 /* a day: beyond any sensible request, well inside int sizes */

typedef enum PipeSampler { PIPE_CM = 0, PIPE_DDIM = 1 } PipeSampler;

typedef struct PipelineOptions {
  const char *bundle;    /* directory */
  PipeSampler sampler;   /* which UNet is loaded: cm -> student.h5, ddim -> unet.h5 */
  bool allow_teacher_cm; /* cm on unet.h5 when the bundle has no student.h5 */
  DType precision;       /* DT_F32 (the default) or DT_BF16: UNet, VAE and vocoder compute in it */
} PipelineOptions;

typedef struct Pipeline {
  Ctx *ctx; /* not owned */
  PipeSampler sampler;
  bool teacher; /* the loaded UNet is unet.h5 */
  char unet_path[4200];
  ParamSet ps_text, ps_unet, ps_vae, ps_voc;
  Tokenizer *tok;
  ClapText *text;
  Unet *unet;
  Vae *vae;
  Hifigan *voc;
  Schedule sched;
  MelConfig mel;     /* the front end that matches the vocoder (for init audio) */
  int native_frames; /* latent frames the UNet was trained on (sample_size; 256) */
  int f;             /* VAE downsampling factor (4) */
  int unet_div;      /* latent frames must be a multiple of this: 2^(levels − 1) */
  int lat_c, lat_w;  /* latent channels and bins (8, 16) */
  int rate, hop;     /* output sample rate and samples per mel frame (16000, 160) */
  /* persistent buffers, reused while the shape stays (see pipeline.c) */
  Tensor *x_in, *state, *cond, *uncond, *init_mean, *init_logvar, *mel_buf;
  char *cond_text, *uncond_text; /* what cond / uncond hold (NULL: nothing yet) */
  int init_frames;               /* latent frames of the encoded init audio (0: none) */
} Pipeline;

/* Checks the bundle (one line naming a missing file, with how to get a model), builds the
 * models from their configs in ctx, cross-checks and loads them, and proves that tokenizer
 * and text tower fit. NULL with err on any problem. */
Pipeline *pipeline_open(Ctx *ctx, const PipelineOptions *o, McmErr *err);
void pipeline_close(Pipeline *p); /* NULL is a no-op; the models' tensors live until ctx_destroy */

typedef struct PipelineRequest {
  const char *prompt;
  const char *negative; /* DDIM's unconditional prompt; NULL: "" (MusicLDM's unconditional embedding) */
  int steps;
  double guidance;      /* DDIM: classifier-free guidance g in the Imagen / diffusers form (w = g − 1; 1: off) */
  double seconds;
  uint64_t seed;
  double strength;      /* 1: from noise; (0, 1): from the init audio (pipeline_set_init_audio) */
  int window_frames;    /* long form: 0 the native frames, < 0 no windows */
  int stride_frames;    /* long form: 0 window / 4 */
  FuseMode fuse;
  SampleProgressFn progress;
  void *progress_user;
} PipelineRequest;

/* steps 4 (cm) / 200 (ddim), guidance 2, 10.24 s, seed 0, strength 1, default long form. */
PipelineRequest pipeline_request_default(PipeSampler sampler);
/* The long-form settings of a config's [infer] section (window_frames, stride_frames, fuse). */
void pipeline_request_long_form(PipelineRequest *r, const Config *cfg);

/* Latent frames H and output samples n for a length in seconds (see "Length" above). */
int pipeline_latent_frames(const Pipeline *p, double seconds);
int64_t pipeline_samples(const Pipeline *p, double seconds);

/* Everything about a request that can be checked without running a model: length, steps
 * for the sampler and strength, strength against the init audio, the long-form layout, the
 * prompt's UTF-8. 0, or -1 with one line. */
int pipeline_check_request(const Pipeline *p, const PipelineRequest *r, McmErr *err);

/* Encodes init audio x (n samples at p->rate) for requests of `seconds`. -1 with err when
 * the audio is empty or the length is bad. */
int pipeline_set_init_audio(Pipeline *p, const float *x, int64_t n, double seconds, McmErr *err);

typedef struct PipelineOutput {
  float *audio; /* (n) in [-1, 1] (the vocoder ends in tanh) */
  int64_t n;
  int rate;
  float *mel;   /* (frames, n_mels): the decoded log-mel, first ⌈n / hop⌉ frames */
  int frames, n_mels;
} PipelineOutput;
void pipeline_output_free(PipelineOutput *o);

/* Seconds spent per stage (added to, so one struct can sum a run), device-synchronised, and
 * the largest per-step activation memory seen (the context arena's high-water mark: the
 * largest of one sampling step, the decoder and the vocoder, plus the models' share of
 * nothing: parameters are persistent memory). */
typedef struct PipelineTimings {
  double text, sampling, decoding, vocoding;
  int outputs;
  size_t peak_act_bytes;
} PipelineTimings;

/* One output for one request. tm may be NULL. 0, or -1 with err (a bad request, or a model
 * that produced non-finite values). */
int pipeline_generate(Pipeline *p, const PipelineRequest *r, PipelineOutput *out, PipelineTimings *tm, McmErr *err);

/* File name for output `index` of several: "<index>_<slug>_seed<seed>.<ext>" in dir, the
 * index zero-padded to `width` digits (at least 3), the slug the prompt's ASCII letters and
 * digits lower-cased, other runs of characters as one '-', at most 40 characters, trimmed
 * of '-' ("prompt" when nothing is left). -1 with err when it does not fit in buf. */
int pipeline_output_name(char *buf, size_t size, const char *dir, int index, int width, const char *prompt,
                         uint64_t seed, const char *ext, McmErr *err);

#ifdef __cplusplus
}
#endif
