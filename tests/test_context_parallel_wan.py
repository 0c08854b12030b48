"""Context parallelism (diffusers' own, Ulysses) with SR3AI on tiny-wan: two CPU processes on gloo give what one
process gives, for the transformer and for a whole scene; the refusals before anything runs."""

import os
import socket
import traceback

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dreamrunner.attention import RegionLayout, RegionLayoutError
from dreamrunner.backends import MemoryOptions
from dreamrunner.backends.memory import MemorySettingError
from dreamrunner.backends.parallel import ContextParallelError, check_context_parallel, init_from_launcher
from dreamrunner.backends.wan import TINY_TEXT_TOKENS as L
from dreamrunner.cli import main

WORLD = 2
GRID = (3, 4, 6)  # tiny-wan at 9 frames, 64x96: 72 video tokens, 36 per rank


def three_overlapping_regions() -> np.ndarray:
    """Background + 3 entity boxes on GRID: each overlaps another, the third only in the later frames."""
    masks = np.zeros((4, *GRID), dtype=bool)
    masks[1, :, 0:3, 0:4] = True
    masks[2, :, 1:4, 2:6] = True
    masks[3, 1:, 0:2, 3:6] = True
    masks[0] = ~masks[1:].any(0)
    return masks


def _subject_prior(transformer, folder) -> str:
    """A subject prior (odd blocks) on self-attention, cross-attention key/value (text) and feed-forward linears."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(5)
    tensors = {}
    for block in (1, 3):
        for module in ("attn1.to_q", "attn1.to_v", "attn2.to_k", "attn2.to_v", "ffn.net.0.proj"):
            linear = transformer.get_submodule(f"blocks.{block}.{module}")
            key = f"transformer.blocks.{block}.{module}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(2, linear.in_features, generator=generator)
            tensors[f"{key}.lora_B.weight"] = torch.randn(linear.out_features, 2, generator=generator) * 0.5
    path = os.path.join(folder, "cat.safetensors")
    save_file(tensors, path)
    return path


@torch.no_grad()
def _compare(folder) -> dict:
    """This rank's results: one process first (no parallelism), then 2-way Ulysses, on the same weights."""
    from dreamrunner.attention import GatedLoRA, LoRAWeights
    from dreamrunner.attention.wan import WanSR3AIController
    from dreamrunner.backends.wan import build_tiny_wan
    from dreamrunner.regions import RegionPlan
    from dreamrunner.rendering.pipeline import LoraBinding, SceneInput
    from dreamrunner.rendering.wan_pipeline import WanDreamRunnerPipeline

    components = build_tiny_wan()
    tr = components.transformer
    masks = three_overlapping_regions()
    layout = RegionLayout.from_masks(masks, L)
    prior = _subject_prior(tr, folder)
    lora = GatedLoRA(LoRAWeights.load(prior, "subject"), prompts=(1, 2), scale=1.0)
    generator = torch.Generator().manual_seed(0)
    kwargs = dict(hidden_states=torch.randn(1, 4, 3, 8, 12, generator=generator),
                  encoder_hidden_states=torch.randn(1, 4 * L, 16, generator=generator), timestep=torch.tensor([700]))
    plan = RegionPlan(prompts=("a forest", "a cat", "a dog", "a bird"), masks=masks)
    scene = SceneInput(prompt="a cat, a dog and a bird in a forest", region_plan=plan,
                       loras=(LoraBinding("cat", prior, "subject", 1.0, (1, 2)),))
    call = dict(seed=3, num_inference_steps=2, guidance_scale=5.0, num_frames=9, height=64, width=96)

    def transformer_outputs():
        out = {"stock": tr(**kwargs, return_dict=False)[0]}
        for reorder in (True, False):
            with WanSR3AIController(tr, L, reorder_tokens=reorder) as controller:
                controller.set_regions(layout)
                controller.set_loras([lora])
                out[f"sr3ai-reorder-{reorder}"] = tr(**kwargs, return_dict=False)[0]
                local = controller.layout.num_video_tokens
        return out, local

    single, _ = transformer_outputs()
    components.memory = MemoryOptions(device="cpu", preset="none")
    single["scene"] = WanDreamRunnerPipeline.from_components(components)(scene, **call).frames
    components.memory = MemoryOptions(device="cpu", preset="none", context_parallel=WORLD)
    pipeline = WanDreamRunnerPipeline.from_components(components)  # enables 2-way Ulysses on the transformer
    split, local = transformer_outputs()
    split["scene"] = pipeline(scene, **call).frames
    differences = {name: float((torch.as_tensor(split[name]).float() - torch.as_tensor(single[name]).float())
                               .abs().max()) for name in single}
    return {"local_tokens": local, "differences": differences,
            "sr3ai_effect": float((single["sr3ai-reorder-True"] - single["stock"]).abs().max())}


def _rank(rank: int, port: int, folder: str, project: str, results) -> None:
    # What torchrun sets for each process it starts.
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        own = os.path.join(folder, f"rank{rank}")  # each process writes its (identical) prior file apart
        os.makedirs(own)
        result = _compare(own)
        try:
            check_context_parallel("wan", 4)
        except ContextParallelError as error:
            result["mismatch"] = str(error)
        # The user's command, as each torchrun process runs it (the process group is joined, not made again).
        result["exit"] = main(["--quiet", "render", project, "--scene", "1", "--backend", "tiny-wan", "--force",
                               "--context-parallel", str(WORLD)])
        results.put((rank, result))
    except BaseException:
        results.put((rank, traceback.format_exc()))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_give_the_single_process_result(tmp_path):
    """SR3AI (4 prompts, 3 overlapping regions) + a gated subject prior on self-attention, text key/value and
    feed-forward linears: the 2-way split transformer output (re-ordered tokens or not) and a whole 2-step CFG
    scene equal one process's within float32 error, on both ranks. Then `dreamrunner render --context-parallel 2`
    in both processes renders the clip one process rendered, rank 0 writing it and the story."""
    from render_helpers import three_scene_story

    from dreamrunner.project import Project
    from dreamrunner.video_io import read_video

    project = Project.create(tmp_path / "story", three_scene_story())
    assert main(["--quiet", "render", str(project.folder), "--scene", "1", "--backend", "tiny-wan"]) == 0
    alone = Project.load(project.folder).story.scenes[0].renders
    alone_frames = read_video(project.resolve(alone[0].path))
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    port = _free_port()
    ranks = [context.Process(target=_rank, args=(rank, port, str(tmp_path), str(project.folder), results))
             for rank in range(WORLD)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=240)
    found = dict(results.get() for _ in range(WORLD))
    for rank in range(WORLD):
        assert isinstance(found[rank], dict), found[rank]
        result = found[rank]
        assert result["local_tokens"] == 36  # each rank's blocks held half the 72 video tokens
        assert result["sr3ai_effect"] > 1e-2  # the regions and the prior change the output: the check has teeth
        differences = result["differences"]
        assert max(differences[name] for name in differences if name != "scene") < 1e-5, differences
        assert differences["scene"] <= 1, differences  # uint8 frames: at most a rounding step
        assert result["exit"] == 0
        assert "--context-parallel 4 but torch.distributed has 2 processes" in result["mismatch"]
    split = Project.load(project.folder).story.scenes[0].renders
    assert [(r.path, r.cache_key, r.seed) for r in split] == [(r.path, r.cache_key, r.seed) for r in alone]
    assert np.abs(read_video(project.resolve(split[0].path)).astype(int) - alone_frames).max() <= 1


def test_context_parallel_is_refused_before_anything_runs(monkeypatch, tmp_path):
    with pytest.raises(ContextParallelError, match="Wan backends only"):
        check_context_parallel("cogvideox", 2)
    with pytest.raises(ContextParallelError, match="torchrun --nproc-per-node 2"):
        check_context_parallel("wan", 2)  # no process group in this process
    with pytest.raises(MemorySettingError, match="at least 1"):
        MemoryOptions(context_parallel=0)
    for name in ("WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ContextParallelError, match="launch it with `torchrun --nproc-per-node 2"):
        init_from_launcher(2, None)


def test_the_render_command_needs_a_launcher_and_a_wan_backend(tmp_path, capsys, monkeypatch):
    from render_helpers import three_scene_story

    from dreamrunner.project import Project

    for name in ("WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    Project.create(tmp_path / "story", three_scene_story())
    folder = str(tmp_path / "story")
    assert main(["render", folder, "--scene", "1", "--backend", "tiny-wan", "--context-parallel", "2"]) == 2  # usage errors
    assert "torchrun --nproc-per-node 2 -m dreamrunner render" in capsys.readouterr().err
    assert main(["render", folder, "--scene", "1", "--backend", "tiny", "--context-parallel", "2"]) == 2
    assert "Wan backends only" in capsys.readouterr().err
    assert main(["render", folder, "--scene", "1", "--backend", "tiny-wan2.2", "--context-parallel", "2"]) == 2
    assert "tested on Wan 2.1 only; tiny-wan2.2" in capsys.readouterr().err
    assert main(["render", folder, "--context-parallel", "2", "--ray"]) == 2
    assert "--context-parallel" in capsys.readouterr().err


def test_a_rank_sees_its_run_of_the_grouped_layout():
    """`RegionLayout.local`: the two halves of a grouped layout are grouped (one contiguous span per class, no
    permutation) and their token masks, side by side, are the whole layout's."""
    grouped = RegionLayout.from_masks(three_overlapping_regions(), L)
    grouped = grouped.reordered(grouped.cover_classes().order)
    halves = [grouped.local(slice(0, 36)), grouped.local(slice(36, 72))]
    assert all(half.num_video_tokens == 36 and half.cover_classes().identity for half in halves)
    for prompts in [(0,), (1, 2), (3,)]:
        video = [half.token_mask(prompts)[grouped.text_length:] for half in halves]
        assert torch.equal(torch.cat(video), grouped.token_mask(prompts)[grouped.text_length:])
    with pytest.raises(RegionLayoutError, match="not a part of the 72"):
        grouped.local(slice(36, 80))
