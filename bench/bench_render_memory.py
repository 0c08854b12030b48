"""Memory presets, quantized and compiled transformers: one SR3AI scene with two region-gated LoRAs.

GPU (default): CogVideoX-2B and -5B at full size (their checkpoints' configs, T5-XXL text encoder) with
**random bf16 weights**, built on the GPU: no weights are downloaded, the output is noise, only time, memory
and numerical agreement mean anything. 49 frames at 480x720 (13 x 30 x 45 latent tokens), guidance 6 (CFG
batch 2), SR3AI with 3 prompts (background + 2 entities) and a subject and a motion prior (rank 32).

Sections (each one's results are written to --out as soon as it ends, so a stopped run keeps the others):
- presets-<model>: one whole `DreamRunnerPipeline.__call__` per memory preset (none, vae-tiling, model,
  group): resident GB once placed, peak GB (`max_memory_allocated` over the call), s/step (mean of steps
  2..N, GPU synced each step), VAE decode s, the whole call s. An untimed 1-step call warms the kernels first.
- quant-<model>: the transformer alone, one SR3AI step (CFG batch 2, both gated LoRAs): bf16 vs torchao
  int8 / float8 weight-only (blocks' linears): weight GB, peak GB, median step s, and the step output's
  relative L2 / max abs difference against bf16 on the same inputs.
- compile-<model>: the same step eager vs with the transformer blocks compiled (`memory.compile_transformer`,
  as the renderer does: SR3AI attention and the LoRA-hooked feed-forward eager): compile (warm-up) s, median step s after warm-up, and the dynamo recompiles and graph
  counts over 2 scenes x 3 timesteps after the warm-up (a second scene = new regions and new LoRA hooks).

    python bench/bench_render_memory.py --out DIR                      # GPU, all sections
    python bench/bench_render_memory.py --tiny --out DIR               # CPU, tiny models, same code paths
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

try:
    import cv2  # noqa: F401
    CV2_NOTE = None
except ImportError:  # a bare GPU machine may lack OpenCV; only the live preview's upscale uses it (cheap either way)
    import types

    import numpy as np

    cv2 = types.ModuleType("cv2")
    cv2.INTER_NEAREST = 0
    cv2.resize = lambda image, size, interpolation=0: np.repeat(
        np.repeat(image, size[1] // image.shape[0], 0), size[0] // image.shape[1], 1)
    sys.modules["cv2"] = cv2
    import importlib.machinery

    cv2.__spec__ = importlib.machinery.ModuleSpec("cv2", None)
    CV2_NOTE = "OpenCV missing: the live preview was upscaled with numpy.repeat"

try:
    import av  # noqa: F401
except ImportError:  # PyAV (video files) is imported by dreamrunner.priors, which the compile helper lives in;
    import types  # nothing here reads or writes a video, so an empty module stands in on a bare GPU machine

    import importlib.machinery

    sys.modules["av"] = types.ModuleType("av")
    sys.modules["av"].__spec__ = importlib.machinery.ModuleSpec("av", None)  # libraries probe find_spec("av")
    CV2_NOTE = (CV2_NOTE or "") + "; PyAV missing: an empty module stood in (no video is read or written)"

from bench_render import bench_scene, build_full, run_once, write_lora  # noqa: E402

from dreamrunner.attention import GatedLoRA, LoRAWeights, SR3AIController, bound_prompts  # noqa: E402
from dreamrunner.backends import ModelComponents  # noqa: E402
from dreamrunner.backends.memory import PRESETS, MemoryOptions, quantize_transformer  # noqa: E402
from dreamrunner.regions import build_region_plan  # noqa: E402
from dreamrunner.rendering.pipeline import DreamRunnerPipeline, LoraBinding, SceneInput, SR3AIRegionControl  # noqa: E402
from dreamrunner.story import Entity, KeyFrame, Scene, VideoSettings  # noqa: E402


def second_scene() -> Scene:
    """Other boxes than bench_scene: other regions, so a compiled model sees a new layout."""
    keyframes = [KeyFrame(index=k, entities=[
        Entity(name="cat", character_id="mia", motion="walking", description="[v1] black cat walking",
               box=(0.5 - 0.05 * k, 0.4, 0.9 - 0.05 * k, 0.95)),
        Entity(name="owl", description="a brown owl", box=(0.05, 0.05, 0.3, 0.3)),
    ]) for k in range(6)]
    return Scene(id="bench2", narration="The cat walks back.", motions=["walking"], background="a forest",
                 keyframes=keyframes)


def gb(value: float) -> float:
    return round(value / 1e9, 2)


def sync(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


class Bench:
    def __init__(self, args):
        self.args = args
        self.cuda = torch.cuda.is_available() and not args.tiny
        self.device = "cuda" if self.cuda else "cpu"
        self.started = time.monotonic()
        self.out = Path(args.out) if args.out else None
        self.results = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        "device": torch.cuda.get_device_name() if self.cuda else platform.processor() or "cpu",
                        "torch": torch.__version__, "argv": sys.argv[1:], "stand_ins": (CV2_NOTE or "none").lstrip("; "),
                        "sections": {}}
        try:
            import diffusers
            import torchao

            self.results.update(diffusers=diffusers.__version__, torchao=torchao.__version__)
        except ImportError as error:
            self.results["torchao"] = f"missing: {error}"
        self.folder = Path(tempfile.mkdtemp(prefix="bench_memory_"))

    def save(self) -> None:
        self.results["elapsed_s"] = round(time.monotonic() - self.started, 1)
        if self.out:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "bench_render_memory.json").write_text(json.dumps(self.results, indent=2) + "\n")

    def over_budget(self) -> bool:
        return time.monotonic() - self.started > self.args.budget_s

    # -- models and inputs ---------------------------------------------------------------------------

    def components(self, model: str) -> tuple[ModelComponents, VideoSettings]:
        if self.args.tiny:
            from dreamrunner.backends.tiny import TINY_VIDEO, build_tiny

            components = build_tiny("5b" if model == "5b" else "2b")
            for module in (components.transformer, components.vae, components.text_encoder):
                module.to(torch.bfloat16)
            return components, VideoSettings(**TINY_VIDEO)
        return build_full(f"cogvideox-{model}", self.device), VideoSettings()

    def scene_input(self, components, video, scene: Scene, tag: str) -> SceneInput:
        plan = build_region_plan(scene, video.token_grid)
        rank = self.args.rank
        loras = (
            LoraBinding("mia", write_lora(self.folder / f"mia-{tag}.safetensors", components.transformer, "subject",
                                          rank, 1), "subject", 1.0, bound_prompts(plan, "subject", "mia")),
            LoraBinding("walking", write_lora(self.folder / f"walking-{tag}.safetensors", components.transformer,
                                              "motion", rank, 2), "motion", 1.0, bound_prompts(plan, "motion", "walking")),
        )
        return SceneInput(prompt=scene.narration, region_plan=plan, loras=loras)

    # -- sections ------------------------------------------------------------------------------------

    def section(self, name: str, fn, *args) -> None:
        if self.over_budget():
            self.results["sections"][name] = {"skipped": f"time budget of {self.args.budget_s} s spent"}
            print(f"[{name}] skipped (budget)", flush=True)
            self.save()
            return
        began = time.monotonic()
        print(f"[{name}] start at {began - self.started:.0f} s", flush=True)
        try:
            result = fn(*args)
        except Exception as error:  # one failing section still leaves the others' numbers
            traceback.print_exc()
            result = {"error": f"{type(error).__name__}: {error}"}
        result["section_s"] = round(time.monotonic() - began, 1)
        self.results["sections"][name] = result
        print(json.dumps({name: result}), flush=True)
        self.save()

    def presets(self, components, video, scene_input) -> dict:
        """One whole render per preset, lightest first; `group` last (its hooks stay on the modules)."""
        runs = []
        names = [p for p in PRESETS if p in self.args.presets]
        warm = None
        for preset in names:
            if self.over_budget():
                runs.append({"preset": preset, "skipped": "budget"})
                continue
            if not self.cuda and PRESETS[preset].offload != "none":
                runs.append({"preset": preset, "skipped": "needs a GPU"})
                continue
            components.memory = MemoryOptions(device=self.device, preset=preset, compile="off")
            if self.cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            placed = time.perf_counter()
            pipeline = DreamRunnerPipeline.from_components(components, SR3AIRegionControl())
            sync(self.cuda)
            row = {"preset": preset, "placement_s": round(time.perf_counter() - placed, 2),
                   "resident_gb": gb(torch.cuda.memory_allocated()) if self.cuda else None}
            if warm is None:  # kernel selection for these shapes, untimed
                run_once(pipeline, scene_input, video, 1, self.cuda)
                warm = True
            try:
                row.update(run_once(pipeline, scene_input, video, self.args.steps, self.cuda))
            except Exception as error:
                traceback.print_exc()
                row["error"] = f"{type(error).__name__}: {error}"
            runs.append(row)
            print(json.dumps(row), flush=True)
            if PRESETS[preset].offload == "model":
                pipeline.remove_all_hooks()
                for module in (components.transformer, components.vae, components.text_encoder):
                    module.to(self.device)
        base = next((r for r in runs if r.get("preset") == "none" and "step_s" in r), None)
        for row in runs:
            if base and "step_s" in row:
                row["step_vs_none"] = round(row["step_s"] / base["step_s"], 3)
                row["call_vs_none"] = round(row["total_s"] / base["total_s"], 3)
                if self.cuda:
                    row["peak_vs_none"] = round(row["peak_gb"] / base["peak_gb"], 3)
        return {"video": f"{video.num_frames} frames {video.height}x{video.width}", "steps": self.args.steps,
                "runs": runs}

    def step_inputs(self, components, video, scene_input):
        """Transformer inputs of one SR3AI CFG step (random latents and prompt embeddings of the real shapes)."""
        config = components.transformer.config
        generator = torch.Generator(device="cpu").manual_seed(0)
        prompts = scene_input.region_plan.num_prompts
        latents = torch.randn(2, video.latent_frames, config.in_channels, video.height // 8, video.width // 8,
                              generator=generator).to(self.device, torch.bfloat16)
        text = torch.randn(2, prompts * config.max_text_seq_length, config.text_embed_dim,
                           generator=generator).to(self.device, torch.bfloat16)
        rotary = None
        if config.use_rotary_positional_embeddings:
            pipeline = DreamRunnerPipeline(**components.pipeline_kwargs())
            rotary = pipeline._prepare_rotary_positional_embeddings(video.height, video.width,
                                                                   video.latent_frames, torch.device(self.device))
        return latents, text, rotary

    def attach(self, transformer, scene_input) -> SR3AIController:
        controller = SR3AIController(transformer).attach()
        controller.set_regions(scene_input.region_plan)
        controller.set_loras([GatedLoRA(LoRAWeights.load(b.path, b.kind), prompts=b.prompts, scale=b.scale)
                              for b in scene_input.loras])
        return controller

    def timed_steps(self, transformer, inputs, count: int, timesteps=(900,)) -> tuple[float, torch.Tensor]:
        latents, text, rotary = inputs
        times, output = [], None
        for i in range(count):
            t = torch.full((2,), timesteps[i % len(timesteps)], device=self.device, dtype=torch.long)
            sync(self.cuda)
            start = time.perf_counter()
            with torch.no_grad():
                output = transformer(hidden_states=latents, encoder_hidden_states=text, timestep=t,
                                     image_rotary_emb=rotary, return_dict=False)[0]
            sync(self.cuda)
            times.append(time.perf_counter() - start)
        return statistics.median(times), output

    def quant(self, components, video, scene_input) -> dict:
        inputs = self.step_inputs(components, video, scene_input)
        base = components.transformer.to(self.device)
        rows = []
        reference = None
        for mode in ("none", *self.args.quantize):
            if self.over_budget():
                rows.append({"quantize": mode, "skipped": "budget"})
                continue
            row = {"quantize": mode}
            try:
                if self.cuda:
                    torch.cuda.empty_cache()
                before = torch.cuda.memory_allocated() if self.cuda else 0
                transformer = base if mode == "none" else copy.deepcopy(base)
                quantized_s = time.perf_counter()
                quantize_transformer(transformer, mode)
                sync(self.cuda)
                row["quantize_s"] = round(time.perf_counter() - quantized_s, 2)
                if self.cuda and mode != "none":
                    row["weights_gb"] = gb(torch.cuda.memory_allocated() - before)
                elif self.cuda:
                    row["weights_gb"] = gb(sum(p.numel() * p.element_size() for p in base.parameters()))
                controller = self.attach(transformer, scene_input)
                self.timed_steps(transformer, inputs, 1)  # warm-up
                if self.cuda:
                    torch.cuda.reset_peak_memory_stats()
                step, output = self.timed_steps(transformer, inputs, self.args.repeats)
                row["step_s"] = round(step, 4)
                if self.cuda:
                    row["peak_gb"] = gb(torch.cuda.max_memory_allocated())
                controller.detach()
                output = output.float()
                if reference is None:
                    reference = output
                else:
                    row["rel_l2_vs_bf16"] = float((output - reference).norm() / reference.norm())
                    row["max_abs_vs_bf16"] = float((output - reference).abs().max())
                    row["ref_abs_mean"] = float(reference.abs().mean())
                if transformer is not base:
                    del transformer
            except Exception as error:
                traceback.print_exc()
                row["error"] = f"{type(error).__name__}: {error}"
            rows.append(row)
            print(json.dumps(row), flush=True)
        first = rows[0]
        for row in rows[1:]:
            if "step_s" in row and "step_s" in first:
                row["step_vs_bf16"] = round(row["step_s"] / first["step_s"], 3)
            if self.cuda and "weights_gb" in row and "weights_gb" in first:
                row["weights_vs_bf16"] = round(row["weights_gb"] / first["weights_gb"], 3)
        return {"runs": rows, "repeats": self.args.repeats, "prompts": scene_input.region_plan.num_prompts}

    def compiled(self, components, video, scene_input, other_input, variant: str = "render") -> dict:
        from torch._dynamo.utils import counters

        from dreamrunner.backends.memory import compile_transformer
        from dreamrunner.priors.speed import uncompile_blocks

        transformer = components.transformer.to(self.device)
        inputs = self.step_inputs(components, video, scene_input)
        controller = self.attach(transformer, scene_input)
        self.timed_steps(transformer, inputs, 1)
        eager, reference = self.timed_steps(transformer, inputs, self.args.repeats)
        controller.detach()
        torch._dynamo.reset()
        if variant == "render":
            compile_transformer(transformer)
        else:  # every block traced whole, SR3AI included (the priors' regional compilation)
            from dreamrunner.priors.speed import compile_blocks

            compile_blocks(transformer)
        result = {"variant": variant, "eager_step_s": round(eager, 4)}
        try:
            controller = self.attach(transformer, scene_input)
            warm = time.perf_counter()
            self.timed_steps(transformer, inputs, 2, timesteps=(900, 800))
            result["warmup_s"] = round(time.perf_counter() - warm, 1)
            graphs = dict(counters["stats"])
            breaks = sum(counters["graph_break"].values())
            step, output = self.timed_steps(transformer, inputs, self.args.repeats, timesteps=(700, 600, 500))
            result["compiled_step_s"] = round(step, 4)
            result["compiled_vs_eager"] = round(step / eager, 3)
            result["rel_l2_vs_eager"] = float((output.float() - reference.float()).norm() / reference.float().norm())
            same_scene = dict(counters["stats"])
            controller.detach()
            # A second scene: other regions and new LoRA hooks, as the next scene of a story brings.
            controller = self.attach(transformer, other_input)
            other = self.step_inputs(components, video, other_input)
            self.timed_steps(transformer, other, 3, timesteps=(900, 800, 700))
            controller.detach()
            after = dict(counters["stats"])
            result["graphs_after_warmup"] = graphs.get("unique_graphs", 0)
            result["new_graphs_same_scene_steps"] = same_scene.get("unique_graphs", 0) - graphs.get("unique_graphs", 0)
            result["new_graphs_second_scene"] = after.get("unique_graphs", 0) - same_scene.get("unique_graphs", 0)
            result["graph_breaks_during_warmup"] = breaks
            result["dynamo_stats"] = after
        finally:
            uncompile_blocks(transformer)
            transformer.dreamrunner_compiled = False
            torch._dynamo.reset()
        return result

    def run(self) -> None:
        for model in self.args.models:
            if self.over_budget():
                self.results["sections"][f"model-{model}"] = {"skipped": "budget"}
                continue
            built = time.perf_counter()
            components, video = self.components(model)
            sync(self.cuda)
            self.results[f"build_{model}_s"] = round(time.perf_counter() - built, 1)
            scene_input = self.scene_input(components, video, bench_scene(), f"{model}-a")
            other_input = self.scene_input(components, video, second_scene(), f"{model}-b")
            wanted = self.args.sections
            # Whole-model sections that leave the models on the device first; group offload (last preset) last.
            if "quant" in wanted and model in self.args.quant_models:
                self.section(f"quant-{model}", self.quant, components, video, scene_input)
            if "compile" in wanted and model in self.args.compile_models:
                for variant in self.args.compile_variants:
                    self.section(f"compile-{variant}-{model}", self.compiled, components, video, scene_input,
                                 other_input, variant)
            if "presets" in wanted:
                self.section(f"presets-{model}", self.presets, components, video, scene_input)
            del components
            if self.cuda:
                torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny random models on CPU (checks the script)")
    parser.add_argument("--models", nargs="+", default=["2b", "5b"], choices=("2b", "5b"))
    parser.add_argument("--sections", nargs="+", default=["presets", "quant", "compile"],
                        choices=("presets", "quant", "compile"))
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--quantize", nargs="+", default=["int8wo", "fp8wo"], choices=("int8wo", "fp8wo"))
    parser.add_argument("--quant-models", nargs="+", default=["2b", "5b"], choices=("2b", "5b"))
    parser.add_argument("--compile-models", nargs="+", default=["2b", "5b"], choices=("2b", "5b"))
    parser.add_argument("--compile-variants", nargs="+", default=["render", "whole-blocks"],
                        choices=("render", "whole-blocks"),
                        help="render: SR3AI attention and the hooked feed-forward eager (what rendering uses); "
                             "whole-blocks: everything in a block traced")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps per preset run (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="timed transformer steps per quant/compile run")
    parser.add_argument("--rank", type=int, default=32, help="rank of the two gated LoRAs")
    parser.add_argument("--budget-s", type=float, default=1e9, help="start no new run after this many seconds")
    parser.add_argument("--out", help="folder for bench_render_memory.json (written after every section)")
    args = parser.parse_args()
    bench = Bench(args)
    bench.run()
    bench.save()
    print(json.dumps({k: v for k, v in bench.results.items() if k != "sections"}, indent=1))


if __name__ == "__main__":
    main()
