#!/usr/bin/env python3
"""Peer baseline: the official OSEDiff one-step pipeline (PyTorch + diffusers + peft + the official
OSEDiff code), timed on the CPU at full Stable Diffusion 2.1-base size, fp32.

This is our own script.  It imports the real libraries and the official OSEDiff modules (checkouts given on
PYTHONPATH / on the command line; see README.md beside this file) and builds
the SD 2.1-base UNet, VAE and CLIP text encoder with their real configurations but RANDOM weights (no
download is possible; dense compute does not depend on the weight values).  OSEDiff's LoRA is applied with
the official code: the target-module lists come from the official initialize_unet / initialize_vae, the
adapters are added and loaded by the official OSEDiff_test.load_ckpt (from an in-memory checkpoint with
random LoRA values), and merged by the official merge_and_unload (test_inference_time.py forces the merge;
test_osediff.py's default is unmerged: --no-merge).  The pipeline object replicates OSEDiff_test.__init__
with "cuda" replaced by the CPU and then runs the official OSEDiff_test.forward.

Timed stages (wall clock, perf_counter), marked with forward hooks around the official forward:
  preprocess    PNG decode + convert RGB + the test_osediff.py resizes (PIL bicubic x4, Lanczos snap to /8)
                + ToTensor + (x*2-1)
  tokenizer     OSEDiff_test.forward start .. text encoder start (the slow CLIPTokenizer: the Rust `tokenizers`
                package that AutoTokenizer would pick is not installable here)
  text_encoder  CLIPTextModel forward
  vae_encode    text encoder end .. UNet start (VAEHook/encoder, quant_conv, posterior sample, *0.18215)
  unet          first UNet call start .. scheduler step start (all latent tiles + stitching when tiled)
  scheduler     DDPMScheduler.step
  vae_decode    scheduler end .. forward return (/0.18215, post_quant_conv, decoder, clamp)
  to_pil        ToPILImage(out*0.5+0.5)
  colorfix      adain_color_fix (official my_utils.wavelet_color_fix)
  png_encode    saving the result as PNG (into memory)

Usage: normally through bench/peer/run.sh (which sets PYTHONPATH and the offline switches; see README.md
beside this file):
  python3 bench/peer/peer_bench.py --osediff-src <OSEDiff checkout> --bpe-gz <bpe_simple_vocab_16e6.txt.gz> \
      --case 128_to_512 --warmup 1 --runs 3 --json out.json
  ... --case 512_to_2048 --warmup 0 --runs 1 --count-flops timed   # official tile settings (tiled VAE + UNet)
  ... --case 256_to_1024 ...                                        # (--lq N is the same as --case N_to_4N)
  ... --dape                                                        # the RAM/DAPE tagger alone at 384x384
Options: --no-merge (unmerged peft LoRA), --channels-last, --profile (extra profiled run), --threads N,
--no-wait (skip the quiet-machine gate; for smoke runs).
Each timed run starts only after a 2 s window in which other processes used <= 3% of the machine (/proc/stat
minus this process's own ticks) and is repeated (up to 3 times) when others used more during it (unless
--no-wait).  Peak RSS: VmHWM is reset (/proc/self/clear_refs) after the models are built, so the reported peak
is the inference peak (the Go bench does the same).

Output: one JSON object on stdout (and in --json FILE) in the schema of `osediff bench --case C --json`:
case, precision, stages [{name, seconds, flops, gflops, percent_of_peak}], total_seconds, total_flops, gflops,
percent_of_peak, peak_rss_bytes, peak_gflops; plus "peer" with every detail (per-run times, interference,
versions, MACs by kind).  Stage seconds are medians over the timed runs, total_seconds the median of the run
totals (PNG encoding of the result is left out of the stages and the total, as in the Go bench).  All logs go
to stderr.
"""
import argparse
import gc
import gzip
import io
import json
import math
import os
import resource
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# ---------------------------------------------------------------------------------------------------------
# Stable Diffusion 2.1-base configurations (stabilityai/stable-diffusion-2-1-base: unet/, vae/, text_encoder/)
# ---------------------------------------------------------------------------------------------------------
UNET_CFG = dict(
    act_fn="silu", attention_head_dim=[5, 10, 20, 20], block_out_channels=[320, 640, 1280, 1280],
    center_input_sample=False, cross_attention_dim=1024,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    downsample_padding=1, dual_cross_attention=False, flip_sin_to_cos=True, freq_shift=0, in_channels=4,
    layers_per_block=2, mid_block_scale_factor=1, norm_eps=1e-05, norm_num_groups=32, num_class_embeds=None,
    only_cross_attention=False, out_channels=4, sample_size=64,
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    use_linear_projection=True,
)
VAE_CFG = dict(
    act_fn="silu", block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
    in_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32, out_channels=3, sample_size=768,
    up_block_types=["UpDecoderBlock2D"] * 4,  # scaling_factor: diffusers default 0.18215 (not in the SD2.1 file)
)
TEXT_CFG = dict(
    vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
    max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-05, attention_dropout=0.0, dropout=0.0,
    initializer_range=0.02, initializer_factor=1.0, bos_token_id=0, eos_token_id=2, pad_token_id=1,
    projection_dim=512, torch_dtype="float32", architectures=["CLIPTextModel"],
)
# narrow clones with the same module structure (the same in/out channel changes, so the same conv_shortcuts):
# only used to obtain the module-name lists from the official initialize_unet / initialize_vae cheaply
UNET_NARROW = dict(block_out_channels=[16, 32, 64, 64], attention_head_dim=[1, 2, 4, 4], norm_num_groups=8,
                   cross_attention_dim=32)
VAE_NARROW = dict(block_out_channels=[16, 32, 64, 64], norm_num_groups=8)

OFFICIAL_TILES = dict(vae_encoder_tiled_size=1024, vae_decoder_tiled_size=224, latent_tiled_size=96,
                      latent_tiled_overlap=32)
PROMPT = "building, city, sky, street, tree, road, car, ,"  # = f"{tags}, {''}," with a fixed RAM/DAPE tag list
PROCESS_SIZE, UPSCALE = 512, 4  # test_osediff.py defaults
PEAK_GFLOPS = 234.0  # measured fp32 peak of the 2 vCPUs (shared/design/compute.md)
LORA_RANK = 4

LOADAVG_AT_START = None
STAGES = ["preprocess", "tokenizer", "text_encoder", "vae_encode", "unet", "scheduler", "vae_decode", "to_pil",
          "colorfix", "png_encode"]


# ---------------------------------------------------------------------------------------------------------
# environment, tokenizer and scheduler files, LQ image (our own small helpers)
# ---------------------------------------------------------------------------------------------------------
DIST_VERSIONS = [("safetensors", "0.4.2"), ("diffusers", "0.25.0"), ("transformers", "4.28.0.dev0"), ("peft", "0.9.0"),
                 ("huggingface_hub", "0.20.3"), ("accelerate", "0.27.2"), ("einops", "0.7.0"), ("ftfy", "6.1.1"),
                 ("timm", "0.6.13"), ("loralib", "0.1.2"), ("fairscale", "0.4.13")]


def setup_environment(osediff_src, workdir):
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DIFFUSERS_OFFLINE"):
        os.environ.setdefault(k, "1")
    shim = os.path.join(HERE, "pyshim")  # pure-python stand-in for the `safetensors` package
    if shim not in sys.path:
        sys.path.insert(0, shim)
    meta = os.path.join(workdir, "meta")  # dist-info so that importlib.metadata sees the source checkouts
    for name, ver in DIST_VERSIONS:
        d = os.path.join(meta, f"{name}-{ver}.dist-info")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "METADATA"), "w") as f:
            f.write(f"Metadata-Version: 2.1\nName: {name}\nVersion: {ver}\n")
    sys.path.append(meta)
    # transformers 4.28 without the Rust `tokenizers` package uses a dataclass AddedToken with no __str__ (the
    # Rust one returns its content); without this the slow CLIPTokenizer looks up "AddedToken(...)" strings
    import transformers.tokenization_utils_base as tub
    tub.AddedToken.__str__ = lambda self: self.content
    src = os.path.abspath(osediff_src)
    sys.path.insert(1, src)
    os.chdir(src)  # the official modules do sys.path.append(os.getcwd())


# stabilityai/stable-diffusion-2-1-base scheduler/scheduler_config.json
SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler", "_diffusers_version": "0.8.0", "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "beta_start": 0.00085, "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "epsilon",
    "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
}


def write_model_dir(dst, bpe_gz):
    """tokenizer/ (the SD 2.1 CLIP BPE vocabulary rebuilt from open_clip's merges file) and scheduler/"""
    from transformers.models.clip.tokenization_clip import bytes_to_unicode
    tok = os.path.join(dst, "tokenizer")
    os.makedirs(tok, exist_ok=True)
    merges = gzip.open(bpe_gz).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    byte_syms = list(bytes_to_unicode().values())
    vocab = byte_syms + [b + "</w>" for b in byte_syms] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408
    with open(os.path.join(tok, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({v: i for i, v in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(tok, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    with open(os.path.join(tok, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
                   "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                   "pad_token": "!", "add_prefix_space": False, "errors": "replace"}, f)
    os.makedirs(os.path.join(dst, "scheduler"), exist_ok=True)
    with open(os.path.join(dst, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(SCHEDULER_CONFIG, f)


def make_lq_png(side, seed=4242):
    """a deterministic synthetic photo-like LQ image (smooth colour field, edges, noise), as PNG bytes"""
    import numpy as np
    from PIL import Image, ImageDraw
    rng = np.random.RandomState(seed)
    field = (rng.rand(side // 16 + 2, side // 16 + 2, 3) * 255).astype(np.uint8)
    img = Image.fromarray(field, "RGB").resize((side, side), Image.BICUBIC)
    d = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = rng.randint(0, side, 2)
        x1, y1 = x0 + rng.randint(4, side // 3), y0 + rng.randint(4, side // 3)
        d.rectangle([int(x0), int(y0), int(x1), int(y1)], fill=tuple(int(c) for c in rng.randint(0, 256, 3)))
    a = np.asarray(img, dtype=np.float32) + rng.randn(side, side, 3) * 6
    b = io.BytesIO()
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB").save(b, format="PNG")
    return b.getvalue()


# ---------------------------------------------------------------------------------------------------------
# machine state: quiet check, RSS
# ---------------------------------------------------------------------------------------------------------
def _proc_stat():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    return sum(v) - v[3] - v[4], sum(v)


def _self_ticks():
    with open("/proc/self/stat") as f:
        s = f.read()
    fl = s[s.rfind(")") + 2:].split()
    return int(fl[11]) + int(fl[12])  # utime + stime of all threads


class CpuWatch:
    """CPU time used by OTHER processes (fraction of the whole machine) between start() and stop()."""

    def start(self):
        self.b0, self.t0 = _proc_stat()
        self.s0 = _self_ticks()

    def stop(self):
        b1, t1 = _proc_stat()
        s1 = _self_ticks()
        dt = max(1, t1 - self.t0)
        return max(0.0, ((b1 - self.b0) - (s1 - self.s0)) / dt)


def wait_quiet(limit=0.03, window=2.0, max_wait=1200.0, log=print):
    t_start = time.time()
    w = CpuWatch()
    while True:
        w.start()
        time.sleep(window)
        other = w.stop()
        if other <= limit:
            return other, time.time() - t_start
        if time.time() - t_start > max_wait:
            log(f"  [quiet] still busy after {max_wait:.0f}s (others {other:.1%}); going on")
            return other, time.time() - t_start
        log(f"  [quiet] others use {other:.1%} of the machine; waiting")
        time.sleep(5.0)


def proc_status(keys=("VmRSS", "VmHWM")):
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k = line.split(":")[0]
            if k in keys:
                out[k] = int(line.split()[1]) / 1024.0  # MiB
    return out


def reset_hwm():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def maxrss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------------------------------------------------
# stage marks (forward hooks) and MAC counting
# ---------------------------------------------------------------------------------------------------------
class Recorder:
    def __init__(self):
        self.marks = {}
        self.stage = None
        self.macs = {}
        self.macs_by_kind = {}
        self.counting = False
        self.prof_ranges = None  # list of open record_function objects when profiling

    def reset(self):
        self.marks = {}

    def mark(self, name, stage=None, first=True):
        t = time.perf_counter()
        if not (first and name in self.marks):
            self.marks[name] = t
        if stage is not None and stage != self.stage:
            self.set_stage(stage)

    def set_stage(self, stage):
        if self.prof_ranges is not None:
            import torch
            if self.prof_ranges:
                self.prof_ranges.pop().__exit__(None, None, None)
            if stage is not None:
                r = torch.autograd.profiler.record_function("stage::" + stage)
                r.__enter__()
                self.prof_ranges.append(r)
        self.stage = stage

    def add_macs(self, n, kind):
        if self.counting:
            self.macs[self.stage] = self.macs.get(self.stage, 0) + int(n)
            k = f"{self.stage}/{kind}"
            self.macs_by_kind[k] = self.macs_by_kind.get(k, 0) + int(n)


REC = Recorder()


def install_mac_counters(models):
    """MACs of every Conv2d / Linear call (module hooks) and of torch.bmm / torch.baddbmm (attention)."""
    import torch
    import torch.nn as nn

    def conv_hook(mod, inp, out):
        kh, kw = mod.kernel_size
        REC.add_macs(out.numel() * (mod.in_channels // mod.groups) * kh * kw, "conv")

    def lin_hook(mod, inp, out):
        REC.add_macs(out.numel() * mod.in_features, "linear")

    handles = []
    for model in models:
        for mod in model.modules():
            if isinstance(mod, nn.Conv2d):
                handles.append(mod.register_forward_hook(conv_hook))
            elif isinstance(mod, nn.Linear):
                handles.append(mod.register_forward_hook(lin_hook))
    orig_bmm, orig_baddbmm = torch.bmm, torch.baddbmm

    def bmm(a, b, *args, **kw):
        REC.add_macs(a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2], "attention_matmul")
        return orig_bmm(a, b, *args, **kw)

    def baddbmm(inp, a, b, *args, **kw):
        REC.add_macs(a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2], "attention_matmul")
        return orig_baddbmm(inp, a, b, *args, **kw)

    orig_matmul, orig_tmatmul = torch.matmul, torch.Tensor.__matmul__

    def mm_macs(a, b):
        if a.dim() >= 2 and b.dim() >= 2:
            batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
            REC.add_macs(math.prod(batch) * a.shape[-2] * a.shape[-1] * b.shape[-1], "attention_matmul")

    def matmul(a, b, *args, **kw):
        mm_macs(a, b)
        return orig_matmul(a, b, *args, **kw)

    def tmatmul(a, b):
        mm_macs(a, b)
        return orig_tmatmul(a, b)

    torch.bmm, torch.baddbmm, torch.matmul, torch.Tensor.__matmul__ = bmm, baddbmm, matmul, tmatmul
    return handles


# ---------------------------------------------------------------------------------------------------------
# building the models and the pipeline object
# ---------------------------------------------------------------------------------------------------------
def official_target_lists(workdir):
    """Module-name lists from the official initialize_unet / initialize_vae, run on narrow clones (same module
    names as the full models) saved with save_pretrained so that the official from_pretrained calls work."""
    import torch
    import osediff as O
    from types import SimpleNamespace
    torch.manual_seed(0)
    u = O.UNet2DConditionModel(**dict(UNET_CFG, **UNET_NARROW))
    u.save_pretrained(os.path.join(workdir, "unet"), safe_serialization=True)
    v = O.AutoencoderKL(**dict(VAE_CFG, **VAE_NARROW))
    v.save_pretrained(os.path.join(workdir, "vae"), safe_serialization=True)
    args = SimpleNamespace(pretrained_model_name_or_path=workdir, lora_rank=LORA_RANK)
    _, l_vae = O.initialize_vae(args)
    _, l_enc, l_dec, l_oth = O.initialize_unet(args)
    return dict(vae_lora_encoder_modules=l_vae, unet_lora_encoder_modules=l_enc,
                unet_lora_decoder_modules=l_dec, unet_lora_others_modules=l_oth,
                rank_unet=LORA_RANK, rank_vae=LORA_RANK)


class RandomStateDict:
    """Stands in for osediff.pkl's state_dict_unet / state_dict_vae: OSEDiff_test.load_ckpt asks for every
    parameter whose name contains "lora" (or "conv_in" for the UNet); this returns random values of the
    shape the official code asks for (lora_A ~ N(0, 1/r^2) like peft's gaussian init, small non-zero
    lora_B, and a perturbed copy of conv_in, which the official checkpoint stores fully fine-tuned)."""

    def __init__(self, get_model, seed):
        import torch
        self.get_model = get_model
        self.gen = torch.Generator().manual_seed(seed)
        self.params = None
        self.served = 0

    def __getitem__(self, name):
        import torch
        if self.params is None:
            self.params = dict(self.get_model().named_parameters())
        p = self.params[name].detach()
        self.served += 1
        r = torch.randn(p.shape, generator=self.gen)
        if "lora_A" in name:
            return r / LORA_RANK
        if "lora_B" in name:
            return r * 1e-3
        return p + 0.01 * float(p.std()) * r


def build_pipeline(args, workdir, log):
    import torch
    import osediff as O
    from transformers import AutoTokenizer, CLIPTextModel, CLIPTextConfig
    from diffusers import DDPMScheduler
    from types import SimpleNamespace

    t0 = time.time()
    ckpt = official_target_lists(os.path.join(workdir, "narrow"))
    model_dir = os.path.join(workdir, "model")
    write_model_dir(model_dir, args.bpe_gz)

    torch.manual_seed(args.seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_CFG))  # transformers' own random init
    vae = O.AutoencoderKL(**VAE_CFG)  # PyTorch default init
    unet = O.UNet2DConditionModel(**UNET_CFG)
    log(f"models built in {time.time() - t0:.1f}s; params: unet {sum(p.numel() for p in unet.parameters()):,} "
        f"vae {sum(p.numel() for p in vae.parameters()):,} text {sum(p.numel() for p in text_encoder.parameters()):,}")

    # ---- OSEDiff_test.__init__, line by line, "cuda" -> CPU, models from memory instead of from_pretrained ----
    tiles = OFFICIAL_TILES
    oargs = SimpleNamespace(pretrained_model_name_or_path=model_dir, osediff_path=None, mixed_precision="fp32",
                            merge_and_unload_lora=not args.no_merge, **tiles)
    m = O.OSEDiff_test.__new__(O.OSEDiff_test)
    torch.nn.Module.__init__(m)
    m.args = oargs
    m.device = torch.device("cpu")
    # official: AutoTokenizer -> CLIPTokenizerFast (Rust `tokenizers`); not installable here -> slow CLIPTokenizer
    m.tokenizer = AutoTokenizer.from_pretrained(model_dir, subfolder="tokenizer", use_fast=False)
    m.text_encoder = text_encoder
    m.noise_scheduler = DDPMScheduler.from_pretrained(model_dir, subfolder="scheduler")
    m.noise_scheduler.set_timesteps(1, device="cpu")
    m.vae = vae
    m.unet = unet
    m._init_tiled_vae(encoder_tile_size=oargs.vae_encoder_tiled_size, decoder_tile_size=oargs.vae_decoder_tiled_size)
    # the official tiled VAE (my_utils/vaehook.py, used when the image is larger than a tile, e.g. 512 -> 2048)
    # puts its GroupNorm statistics on my_utils.devices.device, hard-coded to "cuda": the same cuda -> CPU change
    import my_utils.devices as official_devices
    for name in ("device", "device_interrogate", "device_gfpgan", "device_esrgan", "device_codeformer"):
        setattr(official_devices, name, torch.device("cpu"))
    m.weight_dtype = torch.float32
    ckpt["state_dict_unet"] = RandomStateDict(lambda: m.unet, args.seed + 1)
    ckpt["state_dict_vae"] = RandomStateDict(lambda: m.vae, args.seed + 2)
    m.load_ckpt(ckpt)  # official: add_adapter x3 (UNet) + x1 (VAE), copy values, set_adapter
    lora_info = dict(unet_modules=[len(ckpt["unet_lora_encoder_modules"]), len(ckpt["unet_lora_decoder_modules"]),
                                   len(ckpt["unet_lora_others_modules"])],
                     vae_modules_listed=len(ckpt["vae_lora_encoder_modules"]),
                     vae_modules_unique=len(set(ckpt["vae_lora_encoder_modules"])),
                     unet_tensors_loaded=ckpt["state_dict_unet"].served, vae_tensors_loaded=ckpt["state_dict_vae"].served,
                     lora_params_unet=sum(p.numel() for n, p in m.unet.named_parameters() if "lora" in n),
                     lora_params_vae=sum(p.numel() for n, p in m.vae.named_parameters() if "lora" in n))
    if oargs.merge_and_unload_lora:
        m.vae = m.vae.merge_and_unload()
        m.unet = m.unet.merge_and_unload()
    m.unet.to("cpu", dtype=m.weight_dtype)
    m.vae.to("cpu", dtype=m.weight_dtype)
    m.text_encoder.to("cpu", dtype=m.weight_dtype)
    m.timesteps = torch.tensor([999], device="cpu").long()
    m.noise_scheduler.alphas_cumprod = m.noise_scheduler.alphas_cumprod.cpu()
    m.eval()
    if args.channels_last:
        m.unet.to(memory_format=torch.channels_last)
        m.vae.to(memory_format=torch.channels_last)
    lora_info["lora_params_after_merge"] = sum(p.numel() for n, p in list(m.unet.named_parameters()) +
                                               list(m.vae.named_parameters()) if "lora" in n)
    log(f"pipeline ready in {time.time() - t0:.1f}s; LoRA: {lora_info}")
    return m, lora_info


def install_stage_hooks(m):
    m.text_encoder.register_forward_pre_hook(lambda mod, inp: REC.mark("te_start", "text_encoder"))
    m.text_encoder.register_forward_hook(lambda mod, inp, out: REC.mark("te_end", "vae_encode"))
    m.unet.register_forward_pre_hook(lambda mod, inp: REC.mark("unet_start", "unet"))
    m.unet.register_forward_hook(lambda mod, inp, out: REC.mark("unet_end", first=False))
    m.vae.quant_conv.register_forward_hook(lambda mod, inp, out: REC.mark("quant_conv_end"))
    m.vae.post_quant_conv.register_forward_pre_hook(lambda mod, inp: REC.mark("dec_start"))
    sched = m.noise_scheduler
    orig_step = sched.step

    def step(*a, **k):
        REC.mark("step_start", "scheduler")
        out = orig_step(*a, **k)
        REC.mark("step_end", "vae_decode")
        return out

    sched.step = step


# ---------------------------------------------------------------------------------------------------------
# one pipeline run (test_osediff.py's per-image body)
# ---------------------------------------------------------------------------------------------------------
def run_once(m, png_bytes, process_size, upscale, channels_last):
    import torch
    from PIL import Image
    from torchvision import transforms
    from my_utils.wavelet_color_fix import adain_color_fix
    REC.reset()
    tt = {}
    t0 = time.perf_counter()
    REC.set_stage("preprocess")
    input_image = Image.open(io.BytesIO(png_bytes)).convert("RGB")
    ori_width, ori_height = input_image.size
    rscale = upscale
    if ori_width < process_size // rscale or ori_height < process_size // rscale:
        scale = (process_size // rscale) / min(ori_width, ori_height)
        input_image = input_image.resize((int(scale * ori_width), int(scale * ori_height)))
    input_image = input_image.resize((input_image.size[0] * rscale, input_image.size[1] * rscale))
    new_width = input_image.width - input_image.width % 8
    new_height = input_image.height - input_image.height % 8
    input_image = input_image.resize((new_width, new_height), Image.LANCZOS)
    lq = transforms.ToTensor()(input_image).unsqueeze(0)
    with torch.no_grad():
        lq = lq * 2 - 1
        if channels_last:
            lq = lq.contiguous(memory_format=torch.channels_last)
        t1 = time.perf_counter()
        REC.set_stage("tokenizer")
        output_image = m(lq, prompt=PROMPT)
        t2 = time.perf_counter()
        REC.set_stage("to_pil")
        output_pil = transforms.ToPILImage()(output_image[0].cpu() * 0.5 + 0.5)
        t3 = time.perf_counter()
        REC.set_stage("colorfix")
        output_pil = adain_color_fix(target=output_pil, source=input_image)
        t4 = time.perf_counter()
    REC.set_stage("png_encode")
    buf = io.BytesIO()
    output_pil.save(buf, format="PNG")
    t5 = time.perf_counter()
    REC.set_stage(None)
    mk = REC.marks
    tt["preprocess"] = t1 - t0
    tt["tokenizer"] = mk["te_start"] - t1
    tt["text_encoder"] = mk["te_end"] - mk["te_start"]
    tt["vae_encode"] = mk["unet_start"] - mk["te_end"]
    tt["unet"] = mk["step_start"] - mk["unet_start"]
    tt["scheduler"] = mk["step_end"] - mk["step_start"]
    tt["vae_decode"] = t2 - mk["step_end"]
    tt["to_pil"] = t3 - t2
    tt["colorfix"] = t4 - t3
    tt["png_encode"] = t5 - t4
    tt["total"] = t5 - t0
    info = dict(input_size=list(input_image.size), output_size=list(output_pil.size),
                output_finite=bool(torch.isfinite(output_image).all()),
                output_mean=float(output_image.mean()), output_std=float(output_image.std()),
                png_bytes=len(buf.getvalue()))
    return tt, info


def timed_loop(args, fn, log):
    """warm-up + timed runs, each started on a quiet machine and repeated when others used > limit during it"""
    results = dict(runs=[], warmup=[])
    for i in range(args.warmup + args.runs):
        timed = i >= args.warmup
        REC.counting = (args.count_flops == "warmup" and i == 0) or (args.count_flops == "timed" and i == args.warmup)
        for attempt in range(4):
            other_before, waited = (None, 0.0) if args.no_wait else wait_quiet(args.quiet_limit, log=log)
            w = CpuWatch()
            w.start()
            tt, info = fn()
            other = w.stop()
            rec = dict(times=tt, info=info, others_cpu_during=other, others_cpu_before=other_before,
                       waited_s=waited, attempt=attempt, vm=proc_status(), ru_maxrss_mib=maxrss_mib())
            log(f"{'run' if timed else 'warmup'} {i}: total {tt['total']:.2f}s "
                + " ".join(f"{k}={v:.3f}" for k, v in tt.items() if k != "total")
                + f" | others {other:.1%} | VmHWM {rec['vm'].get('VmHWM', 0):.0f} MiB | {info}")
            REC.counting = False
            if other <= args.quiet_limit or not timed or args.no_wait:
                break
            log("  machine was not quiet during the run: repeating it")
        (results["runs"] if timed else results["warmup"]).append(rec)
    results["macs_per_stage"] = dict(REC.macs)
    results["macs_per_stage_and_kind"] = dict(REC.macs_by_kind)
    med = {}
    for k in results["runs"][0]["times"] if results["runs"] else []:
        vals = sorted(r["times"][k] for r in results["runs"])
        med[k] = vals[len(vals) // 2]
    results["median"] = med
    return results


def profile_once(fn):
    import torch
    from collections import defaultdict
    REC.prof_ranges = []
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    REC.prof_ranges = None
    per = defaultdict(float)
    for ev in prof.events():
        if ev.name.startswith("stage::"):
            continue
        par, stage = ev.cpu_parent, None
        while par is not None:
            if par.name.startswith("stage::"):
                stage = par.name[7:]
                break
            par = par.cpu_parent
        per[(stage, ev.name)] += ev.self_cpu_time_total / 1e6
    return sorted(([s, n, t] for (s, n), t in per.items()), key=lambda x: -x[2])[:100]


def build_dape(workdir, log):
    """The official RAM/DAPE tagger constructor (ram.models.ram_lora.ram, swin_l, 384, the official configs),
    random weights.  One runtime patch: init_tokenizer builds the official BertTokenizer steps on a synthetic
    30522-entry vocabulary (bert-base-uncased's size; the official code loads it from a hard-coded local
    path; the tokenizer is not used for tagging)."""
    import torch
    import ram.models.ram_lora as RL
    from transformers import BertTokenizer
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "picture", "of"]
    vocab += [f"w{i}" for i in range(30522 - len(vocab))]
    vf = os.path.join(workdir, "bert_vocab.txt")
    with open(vf, "w") as f:
        f.write("\n".join(vocab) + "\n")

    def init_tokenizer():
        tokenizer = BertTokenizer(vf)
        tokenizer.add_special_tokens({'bos_token': '[DEC]'})
        tokenizer.add_special_tokens({'additional_special_tokens': ['[ENC]']})
        tokenizer.enc_token_id = tokenizer.additional_special_tokens_ids[0]
        return tokenizer

    RL.init_tokenizer = init_tokenizer
    torch.manual_seed(0)
    t0 = time.time()
    dape = RL.ram(pretrained='', pretrained_condition='', image_size=384, vit='swin_l')
    with torch.no_grad():
        dape.label_embed.normal_(0, 0.02)  # zeros before the checkpoint load (value-only, same compute)
    dape.eval()
    dape = dape.to(dtype=torch.float32)
    n = lambda mod: sum(p.numel() for p in mod.parameters())
    info = dict(params_total=n(dape), visual_encoder=n(dape.visual_encoder), tagging_head=n(dape.tagging_head),
                unused_for_tagging=n(dape.tag_encoder) + n(dape.text_decoder))
    log(f"DAPE built in {time.time() - t0:.1f}s: {info}")
    return dape, info


def to_bench_schema(args, out):
    """The schema of `osediff bench --case C --json` (osediff.BenchResult), from the full peer record."""
    if args.dape:
        case, names = "dape_384", [("tagger", "dape")]
    else:
        case = f"{args.lq}_to_{UPSCALE * args.lq}"
        names = [(s, s) for s in STAGES if s != "png_encode"]
    med = out.get("median", {})
    macs = out.get("macs_per_stage", {})
    stages = []
    for name, key in names:
        sec = med.get(key, 0.0)
        flops = 2.0 * macs.get(key, 0)
        st = dict(name=name, seconds=sec, flops=flops, gflops=0.0, percent_of_peak=0.0)
        if sec > 0 and flops > 0:
            st["gflops"] = flops / sec / 1e9
            st["percent_of_peak"] = 100.0 * st["gflops"] / PEAK_GFLOPS
        stages.append(st)
    # total: the median of the run totals without the PNG encode (which the Go bench does not do)
    totals = sorted(r["times"]["total"] - r["times"].get("png_encode", 0.0) for r in out.get("runs", []))
    total = totals[len(totals) // 2] if totals else 0.0
    total_flops = sum(s["flops"] for s in stages)
    gflops = total_flops / total / 1e9 if total > 0 else 0.0
    hwm = out["memory"]["peak_since_setup"].get("VmHWM", out["memory"]["ru_maxrss_mib"])
    others = [round(r["others_cpu_during"], 4) for r in out.get("runs", [])]
    return dict(case=case, precision="fp32", stages=stages, total_seconds=total, total_flops=total_flops,
                gflops=gflops, percent_of_peak=100.0 * gflops / PEAK_GFLOPS, peak_rss_bytes=int(hwm * 1024 * 1024),
                peak_gflops=PEAK_GFLOPS, others_cpu_during_runs=others, peer=out)


def main():
    global LOADAVG_AT_START
    with open("/proc/loadavg") as f:
        LOADAVG_AT_START = f.read().split()[:3]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--osediff-src", required=True)
    ap.add_argument("--bpe-gz", help="open_clip v2.20.0 src/open_clip/bpe_simple_vocab_16e6.txt.gz")
    ap.add_argument("--case", default=None, help="128_to_512, 256_to_1024 or 512_to_2048 (sets --lq)")
    ap.add_argument("--lq", type=int, default=128, help="LQ image side (square); output = 4x")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-merge", action="store_true", help="keep the peft LoRA layers unmerged (test_osediff.py default)")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--dape", action="store_true", help="time only the RAM/DAPE tagger (get_validation_prompt)")
    ap.add_argument("--count-flops", choices=["warmup", "timed", "none"], default="warmup",
                    help="run in which the Conv2d/Linear/matmul MACs are counted (hooks cost ~ms)")
    ap.add_argument("--profile", action="store_true", help="one extra torch.profiler run (op breakdown per stage)")
    ap.add_argument("--quiet-limit", type=float, default=0.03)
    ap.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine, never repeat a run")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.case:
        lq, _, out = args.case.partition("_to_")
        if not (lq.isdigit() and out.isdigit() and int(out) == UPSCALE * int(lq)):
            ap.error(f"--case {args.case!r}: want N_to_{UPSCALE}N, e.g. 128_to_512 or 512_to_2048")
        args.lq = int(lq)
    if not args.dape and not args.bpe_gz:
        ap.error("--bpe-gz is required")
    if args.bpe_gz:
        args.bpe_gz = os.path.abspath(args.bpe_gz)
    if args.json:
        args.json = os.path.abspath(args.json)

    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # everything printed (ours and the official code's) goes to stderr

    def log(*a):
        print(*a, file=sys.stderr, flush=True)

    import shutil
    workdir = tempfile.mkdtemp(prefix="peer_bench_")
    try:
        setup_environment(args.osediff_src, workdir)
        import torch
        torch.set_num_threads(args.threads)
        import builtins
        _print = builtins.print

        def quiet_print(*a, **k):  # the official code prints a few lines per call; keep them out of the log
            if a and isinstance(a[0], str) and a[0].startswith(("[Tiled Latent]", "[Tiled VAE]")):
                return
            _print(*a, **k)

        builtins.print = quiet_print
        png_bytes = make_lq_png(args.lq)

        if args.dape:
            from torchvision import transforms
            from ram import inference_ram as inference
            dape, model_info = build_dape(workdir, log)
            models = [dape]
            ram_transforms = transforms.Compose([
                transforms.Resize((384, 384)),
                transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
            from PIL import Image
            img = Image.open(io.BytesIO(png_bytes)).convert("RGB")
            img = img.resize((img.size[0] * UPSCALE, img.size[1] * UPSCALE))
            lq = transforms.ToTensor()(img).unsqueeze(0)

            def fn():  # test_osediff.get_validation_prompt after ToTensor (counted in preprocess)
                REC.reset()
                t0 = time.perf_counter()
                REC.set_stage("dape")
                with torch.no_grad():
                    lq_ram = ram_transforms(lq).to(dtype=torch.float32)
                    captions = inference(lq_ram, dape)
                prompt = f"{captions[0]}, {''},"
                t1 = time.perf_counter()
                REC.set_stage(None)
                return dict(dape=t1 - t0, total=t1 - t0), dict(n_tags=len(captions[0].split(", ")) if captions[0] else 0,
                                                              prompt_chars=len(prompt))
        else:
            m, model_info = build_pipeline(args, workdir, log)
            install_stage_hooks(m)
            models = [m.unet, m.vae, m.text_encoder]

            def fn():
                return run_once(m, png_bytes, PROCESS_SIZE, UPSCALE, args.channels_last)

        gc.collect()
        rss_setup = proc_status()
        hwm_reset = reset_hwm()
        log(f"after setup: {rss_setup}; VmHWM reset: {hwm_reset}")
        if args.count_flops != "none":
            install_mac_counters(models)
        results = timed_loop(args, fn, log)
        if args.profile:
            if not args.no_wait:
                wait_quiet(args.quiet_limit, log=log)
            results["profile_self_cpu_s"] = profile_once(fn)
        memory = dict(peak_since_setup=proc_status(), ru_maxrss_mib=maxrss_mib(), after_setup=rss_setup,
                      hwm_reset_ok=hwm_reset)
        import diffusers, transformers, peft, PIL, torchvision, numpy
        out = dict(
            config=dict(mode="dape" if args.dape else "sd", lq=args.lq, output=UPSCALE * args.lq, threads=args.threads,
                        merged=not args.no_merge, channels_last=args.channels_last, dtype="float32",
                        tiles=OFFICIAL_TILES, prompt=PROMPT, seed=args.seed, warmup=args.warmup, runs=args.runs),
            versions=dict(torch=torch.__version__, diffusers=diffusers.__version__,
                          transformers=transformers.__version__, peft=peft.__version__, pillow=PIL.__version__,
                          torchvision=torchvision.__version__, numpy=numpy.__version__,
                          python=sys.version.split()[0], torch_threads=torch.get_num_threads(),
                          mkldnn=torch.backends.mkldnn.is_available()),
            model=model_info, memory=memory,
            environment=dict(loadavg_at_start=LOADAVG_AT_START, **{k: os.environ.get(k) for k in (
                "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS", "PYTHONPATH")}),
            **results)
        log("median: " + " ".join(f"{k}={v:.3f}" for k, v in results["median"].items()))
        log(f"memory: {memory}")
        log(f"MACs per stage: { {k: f'{v / 1e9:.2f}G' for k, v in REC.macs.items()} }")
        summary = to_bench_schema(args, out)
        text = json.dumps(summary, indent=1)
        if args.json:
            with open(args.json, "w") as f:
                f.write(text + "\n")
        real_stdout.write(text + "\n")
        real_stdout.flush()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
