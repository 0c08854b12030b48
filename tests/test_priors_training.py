"""Prior training on tiny random CogVideoX models (CPU): learning, frozen backbone, block split, cancel and
resume, the prior cache, stock diffusers loading, and the CLI."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from dreamrunner.backends.tiny import TINY_VIDEO, build_tiny
from dreamrunner.cli import main
from dreamrunner.jobs import Cancelled, CancelToken
from dreamrunner.priors import (
    EncodingCache,
    Example,
    MotionTrainer,
    PriorRequest,
    SubjectTrainer,
    TrainingClip,
    train_prior,
)
from dreamrunner.priors.lora import adapter_parameters, tuner_layers
from dreamrunner.project import Project
from dreamrunner.story import Character, ClipRef, KeyFrame, PriorSettings, Scene, Story
from media_files import audio_only_mp4

F, H, W, FPS = TINY_VIDEO["num_frames"], TINY_VIDEO["height"], TINY_VIDEO["width"], TINY_VIDEO["fps"]
FAST = dict(rank=4, learning_rate=5e-3, gradient_checkpointing="off")


def write_image(path, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (80, 120, 3), dtype=np.uint8)).save(path)
    return path


def write_clip(path, speed=5):
    import imageio.v3 as iio

    video = np.zeros((12, 64, 96, 3), np.uint8)
    for i in range(12):
        video[i, 20:40, speed * i:speed * i + 20] = (255, 128, 0)
    iio.imwrite(path, video, plugin="pyav", codec="libx264", fps=8)
    return path


@pytest.fixture(scope="module")
def components():
    return build_tiny("2b")


def example(components, tmp_path, clip: TrainingClip, sample_latents: bool = True) -> Example:
    cache = EncodingCache(tmp_path / "cache", components)
    mean, std = cache.latents(clip, F, H, W, FPS)
    # The random tiny VAE's posterior std (about 1.2) dwarfs its mean (about 0.3), unlike a trained VAE's:
    # overfitting tests learn the posterior mean so that there is a clip to overfit.
    return Example(mean, std if sample_latents else torch.zeros_like(std), cache.text(clip.caption))


def fixed_loss(trainer, samples=6) -> float:
    """The trainer's own objective on a fixed set of clips, timesteps and noise."""
    saved, trainer.generator = trainer.generator, torch.Generator().manual_seed(1234)
    try:
        with torch.no_grad():
            return float(np.mean([trainer.loss().item() for _ in range(samples)]))
    finally:
        trainer.generator = saved


def lora_blocks(path) -> set[int]:
    with safe_open(str(path), "pt") as handle:
        return {int(key.split(".")[2]) for key in handle.keys()}


def test_subject_prior_overfits_one_clip_and_leaves_the_backbone_untouched(components, tmp_path):
    backbone = {k: v.clone() for k, v in components.transformer.state_dict().items()}
    clip = TrainingClip(write_image(tmp_path / "ref.png"), "[v1] witch", static=True)
    settings = PriorSettings(max_steps=20, **{**FAST, "learning_rate": 2e-2})
    trainer = SubjectTrainer(components.transformer, components.scheduler,
                             [example(components, tmp_path, clip, sample_latents=False)], settings, tmp_path / "work")
    try:
        before = fixed_loss(trainer)
        result = trainer.train()
        after = fixed_loss(trainer)
        lora_weights = [p for n, p in components.transformer.named_parameters() if "lora_B" in n]
        assert lora_weights and all(int(n.split(".")[1]) % 2 == 1  # subject priors: 0-based odd blocks
                                    for n, _ in components.transformer.named_parameters() if "lora_" in n)
        assert any(p.abs().sum() > 0 for p in lora_weights)  # B starts at zero: it learned something
    finally:
        trainer.close()
    assert after < 0.75 * before, (before, after)
    assert len(result.losses) == 20
    assert components.transformer.state_dict().keys() == backbone.keys()  # adapters taken off again
    for key, value in components.transformer.state_dict().items():
        assert torch.equal(value, backbone[key]), key


def test_motion_prior_learns_one_clip_and_keeps_only_the_even_blocks(components, tmp_path):
    backbone = {k: v.clone() for k, v in components.transformer.state_dict().items()}
    clips = (TrainingClip(write_clip(tmp_path / "a.mp4"), "a fox running", static=False),
             TrainingClip(write_clip(tmp_path / "b.mp4", speed=3), "a dog running", static=False))
    settings = PriorSettings(max_steps=20, **{**FAST, "learning_rate": 2e-2})
    trainer = MotionTrainer(components.transformer, components.scheduler,
                            [example(components, tmp_path, clips[0], sample_latents=False)], settings, tmp_path / "work")
    try:
        assert trainer.adapters == ["temporal", "appearance_0"]
        before = fixed_loss(trainer)
        trainer.train()
        after = fixed_loss(trainer)
    finally:
        trainer.close()
    assert after < 0.75 * before, (before, after)

    outcome = train_prior(components, PriorRequest("motion", "running", clips, settings.model_copy(update={"max_steps": 3})),
                          tmp_path / "priors")
    assert lora_blocks(outcome.path) == {0, 2}  # tiny model: 4 blocks; temporal LoRA only, no appearance LoRA
    with safe_open(str(outcome.path), "pt") as handle:
        modules = {key.split(".", 3)[3].rsplit(".lora_", 1)[0] for key in handle.keys()}
    assert modules == {"attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "ff.net.0.proj", "ff.net.2"}
    card = json.loads(outcome.path.with_suffix(".json").read_text())
    assert card["kind"] == "motion" and card["blocks"] == [0, 2] and card["is_noise"] is True
    assert card["block_parity"] == "even" and card["fps"] == FPS
    assert [s["caption"] for s in card["sources"]] == ["a fox running", "a dog running"]
    for key, value in components.transformer.state_dict().items():
        assert torch.equal(value, backbone[key]), key


def test_motion_steps_follow_the_released_dual_path_schedule(components, tmp_path):
    """The released code's rule, from the issue: every step updates the temporal LoRA; 80% of steps also update
    the clip's appearance LoRA, each with its own optimizer; in the other 20% the appearance LoRA is off in the
    temporal pass. Both passes of a step see the appearance LoRA before that step's update (the released code
    computes both losses before either update). Recorded from every forward pass of a real training run."""
    clips = [TrainingClip(write_clip(tmp_path / f"{n}.mp4", speed=n + 2), "a fox running", static=False)
             for n in range(2)]
    steps = 25
    trainer = MotionTrainer(components.transformer, components.scheduler,
                            [example(components, tmp_path, clip) for clip in clips],
                            PriorSettings(max_steps=steps, **FAST), tmp_path / "work")
    layer = tuner_layers(components.transformer)[0]
    passes = []

    def record(module, args, kwargs):
        trainable = sorted({n.split(".lora_")[1].split(".")[1] for n, p in module.named_parameters()
                            if p.requires_grad and "lora_" in n})
        appearance = {name: float(sum(p.detach().double().sum() for p in adapter_parameters(module, name)))
                      for name in trainer.adapters if name != "temporal"}
        passes.append((sorted(layer.active_adapters), trainable, appearance))

    hook = components.transformer.register_forward_pre_hook(record, with_kwargs=True)
    try:
        assert set(trainer.optimizers) == {"temporal", "appearance_0", "appearance_1"}
        for name, optimizer in trainer.optimizers.items():  # separate optimizers, each over its own adapter
            assert {id(p) for group in optimizer.param_groups for p in group["params"]} == \
                {id(p) for p in adapter_parameters(components.transformer, name)}
        trainer.train()
        updates = {name: int(optimizer.state_dict()["state"][0]["step"]) if optimizer.state_dict()["state"] else 0
                   for name, optimizer in trainer.optimizers.items()}
    finally:
        hook.remove()
        trainer.close()
    spatial_steps, i = {"appearance_0": 0, "appearance_1": 0}, 0
    for _ in range(steps):
        active, trainable, weights = passes[i]
        assert trainable == ["temporal"] and "temporal" in active, passes[i]
        i += 1
        if len(active) == 2:  # the clip's appearance LoRA on (frozen): this step updates it afterwards
            appearance = next(name for name in active if name != "temporal")
            assert passes[i][:2] == ([appearance], [appearance])
            assert passes[i][2][appearance] == weights[appearance]  # not updated between the two passes
            spatial_steps[appearance] += 1
            i += 1
        else:
            assert active == ["temporal"]  # appearance off in the temporal pass of a step without spatial update
    assert i == len(passes)
    assert updates == {"temporal": steps, **spatial_steps}
    spatial = sum(spatial_steps.values())
    assert trainer.spatial_updates == spatial and 14 <= spatial <= 25  # 0.8 of 25 steps, within 3 sd


def test_lora_init_and_dropout_are_the_released_codes(components, tmp_path):
    """The released code's LoRA: down ~ N(0, 1/r^2), up = 0, scale 1, and dropout(up(down(x))) with p = 0.1
    while training; no dropout in eval mode."""
    clip = TrainingClip(write_image(tmp_path / "ref.png"), "[v1] witch", static=True)
    rank = 8
    trainer = SubjectTrainer(components.transformer, components.scheduler, [example(components, tmp_path, clip)],
                             PriorSettings(**{**FAST, "rank": rank}), tmp_path / "work")
    try:
        down = torch.cat([p.flatten() for n, p in components.transformer.named_parameters() if "lora_A" in n])
        up = [p for n, p in components.transformer.named_parameters() if "lora_B" in n]
        assert down.std().item() == pytest.approx(1 / rank, rel=0.05) and abs(down.mean().item()) < 0.01
        assert all(not p.any() for p in up)
        layer = next(layer for layer in tuner_layers(components.transformer) if "subject" in layer.lora_B)
        with torch.no_grad():
            layer.lora_B["subject"].weight.normal_()
        x = torch.randn(4, 64, layer.in_features, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            base = layer.base_layer(x)
            delta = layer.lora_B["subject"](layer.lora_A["subject"](x)) * layer.scaling["subject"]
            assert layer.scaling["subject"] == 1.0
            components.transformer.train()
            dropped = layer(x) - base
            components.transformer.eval()
            kept = layer(x) - base
        torch.testing.assert_close(kept, delta)
        zero = dropped == 0
        assert 0.08 < zero.float().mean().item() < 0.12  # p = 0.1 of the LoRA output's elements
        torch.testing.assert_close(dropped[~zero], delta[~zero] / 0.9)
    finally:
        trainer.close()


@pytest.mark.parametrize("mode, plain", [("full", 0), ("selective", 0), ("selective", 2)])
def test_checkpointing_modes_take_the_same_step(components, tmp_path, mode, plain):
    clip = TrainingClip(write_clip(tmp_path / "a.mp4"), "a fox running", static=False)
    data = [example(components, tmp_path, clip)]

    def two_steps(**memory):
        settings = PriorSettings(max_steps=2, **{**FAST, **memory})
        trainer = MotionTrainer(components.transformer, components.scheduler, data, settings, tmp_path / mode)
        try:
            losses = trainer.train().losses
            return losses, {n: p.detach().clone() for n, p in components.transformer.named_parameters() if "lora_" in n}
        finally:
            trainer.close()

    reference_losses, reference = two_steps(gradient_checkpointing="off")
    losses, weights = two_steps(gradient_checkpointing=mode, uncheckpointed_blocks=plain)
    assert losses == pytest.approx(reference_losses, rel=1e-5)
    for name, value in reference.items():
        assert torch.allclose(weights[name], value, atol=1e-6), name


def test_lora_compute_in_the_backbone_dtype_takes_the_same_step(tmp_path):
    """On a bf16 backbone the LoRA matmuls run in bf16 while the weights and AdamW state stay fp32."""
    components = build_tiny("2b")
    clip = TrainingClip(write_clip(tmp_path / "a.mp4"), "a fox running", static=False)
    data = [example(components, tmp_path, clip)]
    lora_input_dtypes = set()

    def record(module, args):
        lora_input_dtypes.add(args[0].dtype)

    def two_steps(lora_compute):
        lora_input_dtypes.clear()
        settings = PriorSettings(max_steps=2, lora_compute=lora_compute, **FAST)
        trainer = MotionTrainer(components.transformer, components.scheduler, data, settings,
                                tmp_path / lora_compute, dtype=torch.bfloat16)
        hooks = [m.register_forward_pre_hook(record) for n, m in components.transformer.named_modules()
                 if n.endswith("lora_A.temporal")]
        lora_weights = [p for n, p in components.transformer.named_parameters() if "lora_" in n]
        try:
            initial = torch.cat([p.detach().flatten() for p in lora_weights])
            losses = trainer.train().losses
            update = torch.cat([p.detach().flatten() for p in lora_weights]) - initial
            weights = {n: p.detach().clone() for n, p in components.transformer.named_parameters() if "lora_" in n}
            optimizer_dtypes = {v.dtype for optimizer in trainer.optimizers.values()
                                for state in optimizer.state.values() for v in state.values() if v.dim() > 0}
            return losses, weights, optimizer_dtypes, set(lora_input_dtypes), update
        finally:
            for hook in hooks:
                hook.remove()
            trainer.close()

    reference_losses, _, _, reference_inputs, reference_update = two_steps("float32")
    losses, weights, optimizer_dtypes, inputs, update = two_steps("backbone")
    assert reference_inputs == {torch.float32} and inputs == {torch.bfloat16}
    assert {w.dtype for w in weights.values()} == {torch.float32} and optimizer_dtypes == {torch.float32}
    assert losses == pytest.approx(reference_losses, rel=2e-2)
    # the same update up to bf16 rounding of the LoRA matmuls
    assert float((update - reference_update).norm() / reference_update.norm()) < 5e-2
    # close() gives the transformer back as it was: no adapters, the given dtype, PEFT's cast switched back on
    assert components.transformer.dtype == torch.float32 and not getattr(components.transformer, "peft_config", None)


def test_block_compilation_is_wired_and_undone(components, tmp_path):
    """`compile_blocks` compiles each block with the PEFT layers left eager, and close() undoes it. Only the
    wiring is checked here: compiling even the tiny model takes over a minute on a 2-core CPU, so compiled
    steps are exercised (and compared with eager ones) by bench/bench_priors.py on the GPU."""
    clip = TrainingClip(write_clip(tmp_path / "a.mp4"), "a fox running", static=False)
    data = [example(components, tmp_path, clip)]
    blocks = components.transformer.transformer_blocks
    on_cpu = SubjectTrainer(components.transformer, components.scheduler, data,
                            PriorSettings(compile_blocks="gpu", **FAST), tmp_path / "gpu")
    try:
        assert not on_cpu.compiled and all(block._compiled_call_impl is None for block in blocks)
    finally:
        on_cpu.close()
    trainer = SubjectTrainer(components.transformer, components.scheduler, data,
                             PriorSettings(compile_blocks="always", **FAST), tmp_path / "always")
    layers = tuner_layers(components.transformer)
    try:
        assert trainer.compiled and all(block._compiled_call_impl is not None for block in blocks)
        assert layers and all("forward" in layer.__dict__ for layer in layers)  # PEFT layers kept out of the graphs
    finally:
        trainer.close()
    assert all(block._compiled_call_impl is None for block in blocks) and not tuner_layers(components.transformer)
    with pytest.raises(ValueError, match="compile_blocks"):
        PriorSettings(compile_blocks="sometimes")


def test_saved_subject_prior_loads_in_a_stock_diffusers_pipeline(components, tmp_path):
    from diffusers import CogVideoXPipeline

    clip = TrainingClip(write_image(tmp_path / "ref.png"), "[v1] witch", static=True)
    outcome = train_prior(components, PriorRequest("subject", "witch", (clip,), PriorSettings(max_steps=3, **FAST)),
                          tmp_path / "priors")
    assert lora_blocks(outcome.path) == {1, 3}
    with safe_open(str(outcome.path), "pt") as handle:
        saved = {key: handle.get_tensor(key) for key in handle.keys()}
        assert json.loads(handle.metadata()["lora_adapter_metadata"])["transformer.r"] == 4
        assert handle.metadata()["dreamrunner_block_parity"] == "odd"

    fresh = build_tiny("2b")  # same seed: same backbone, no adapters
    pipe = CogVideoXPipeline(**fresh.pipeline_kwargs())
    pipe.load_lora_weights(str(outcome.path.parent), weight_name=outcome.path.name, adapter_name="witch")
    assert pipe.transformer.peft_config["witch"].r == 4
    loaded = pipe.transformer.state_dict()
    for key, value in saved.items():
        module_key = key.removeprefix("transformer.").replace(".lora_A.weight", ".lora_A.witch.weight").replace(
            ".lora_B.weight", ".lora_B.witch.weight")
        assert torch.equal(loaded[module_key], value), key

    def render():
        return pipe("[v1] witch", num_inference_steps=2, num_frames=F, height=H, width=W, guidance_scale=1.0,
                    max_sequence_length=fresh.max_text_tokens, generator=torch.Generator().manual_seed(0),
                    output_type="latent").frames

    with_lora = render()
    pipe.transformer.disable_lora()
    without = render()
    assert with_lora.shape == without.shape and not torch.allclose(with_lora, without)


def test_saved_priors_load_in_the_sr3ai_region_gated_loader(components, tmp_path):
    from dreamrunner.attention.lora import LoRAWeights

    image = TrainingClip(write_image(tmp_path / "ref.png"), "[v1] witch", static=True)
    clip = TrainingClip(write_clip(tmp_path / "a.mp4"), "a fox running", static=False)
    settings = PriorSettings(max_steps=2, **FAST)
    for request, blocks in ((PriorRequest("subject", "witch", (image,), settings), {1, 3}),
                            (PriorRequest("motion", "running", (clip,), settings), {0, 2})):
        outcome = train_prior(components, request, tmp_path / "priors")
        weights = LoRAWeights.load(outcome.path)  # the kind comes from the JSON card
        assert weights.kind == request.kind and weights.blocks == blocks
        with safe_open(str(outcome.path), "pt") as handle:
            for module, (down, up, scaling) in weights.modules.items():
                assert torch.equal(down, handle.get_tensor(f"transformer.{module}.lora_A.weight"))
                assert torch.equal(up, handle.get_tensor(f"transformer.{module}.lora_B.weight"))
                assert scaling == 1.0  # alpha = rank
        assert len(weights.modules) == 6 * len(blocks)


def test_cancel_then_resume_continues_from_the_checkpoint(components, tmp_path):
    clip = TrainingClip(write_image(tmp_path / "ref.png"), "[v1] witch", static=True)
    examples = [example(components, tmp_path, clip)]
    settings = PriorSettings(max_steps=6, checkpoint_every=2, **FAST)

    def run(workdir, progress=None, cancel=None):
        trainer = SubjectTrainer(components.transformer, components.scheduler, examples, settings, workdir)
        try:
            result = trainer.train(progress=progress, cancel=cancel)
            return result, {k: v.clone() for k, v in trainer.optimizers["subject"].state_dict()["state"][0].items()}, \
                lora_state(trainer)
        finally:
            trainer.close()

    def lora_state(trainer):
        from dreamrunner.priors.lora import adapter_state_dict

        return adapter_state_dict(trainer.transformer, "subject")

    straight, straight_optimizer, straight_lora = run(tmp_path / "straight")

    token = CancelToken()
    with pytest.raises(Cancelled):
        run(tmp_path / "cancelled", progress=lambda p: p.step == 3 and token.cancel(), cancel=token)
    saved = torch.load(tmp_path / "cancelled" / "checkpoint.pt", weights_only=True)
    assert saved["step"] == 3 and len(saved["losses"]) == 3 and saved["optimizers"]["subject"]["state"][0]["step"] == 3

    trainer = SubjectTrainer(components.transformer, components.scheduler, examples, settings, tmp_path / "cancelled")
    try:  # what a resume restores is exactly the checkpoint's optimizer state
        assert trainer.load_checkpoint()[0] == 3
        for name, value in saved["optimizers"]["subject"]["state"][0].items():
            assert torch.equal(trainer.optimizers["subject"].state_dict()["state"][0][name], value)
    finally:
        trainer.close()
    resumed, resumed_optimizer, resumed_lora = run(tmp_path / "cancelled")
    assert resumed.resumed_from == 3 and resumed.steps == 6 and len(resumed.losses) == 6
    assert resumed.losses == pytest.approx(straight.losses, rel=1e-5)
    for key in straight_lora:
        assert torch.allclose(straight_lora[key], resumed_lora[key], atol=1e-6), key
    assert torch.equal(resumed_optimizer["step"], straight_optimizer["step"])

    def crash(progress):
        if progress.step == 5:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        run(tmp_path / "crashed", progress=crash)
    assert torch.load(tmp_path / "crashed" / "checkpoint.pt", weights_only=True)["step"] == 4
    after_crash, _, crash_lora = run(tmp_path / "crashed")
    assert after_crash.resumed_from == 4
    for key in straight_lora:
        assert torch.allclose(straight_lora[key], crash_lora[key], atol=1e-6), key


def test_identical_request_hits_the_cache(components, tmp_path):
    clip = TrainingClip(write_image(tmp_path / "ref.png"), "[v1] witch", static=True)
    request = PriorRequest("subject", "witch", (clip,), PriorSettings(max_steps=2, **FAST))
    first = train_prior(components, request, tmp_path / "priors")
    stamp = first.path.stat().st_mtime_ns
    steps = []
    second = train_prior(components, request, tmp_path / "priors", progress=lambda p: steps.append(p))
    assert not first.cached and second.cached and second.path == first.path
    assert second.path.stat().st_mtime_ns == stamp and second.card == first.card
    assert [p.message for p in steps] == ["already trained with these inputs and settings: reused"]
    changed = PriorRequest("subject", "witch", (clip,), PriorSettings(max_steps=2, **{**FAST, "learning_rate": 1e-3}))
    third = train_prior(components, changed, tmp_path / "priors")
    assert not third.cached and third.path != first.path


def test_corrupt_reference_image_fails_naming_the_file(components, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    request = PriorRequest("subject", "witch", (TrainingClip(bad, "[v1] witch", static=True),), PriorSettings(**FAST))
    with pytest.raises(Exception, match="bad.jpg") as error:
        train_prior(components, request, tmp_path / "priors")
    assert error.type.__name__ == "PriorDataError"


def make_project(tmp_path) -> Project:
    folder = tmp_path / "story"
    (folder / "media").mkdir(parents=True)
    write_image(folder / "media" / "witch.png")
    write_clip(folder / "media" / "run1.mp4")
    write_clip(folder / "media" / "run2.mp4", speed=3)
    scene = Scene(id="s1", background="a forest", keyframes=[KeyFrame(index=i) for i in range(6)], motions=["running"],
                  approved_clips=[ClipRef(id="c1", motion="running", path="media/run1.mp4", caption="a fox running"),
                                  ClipRef(id="c2", motion="running", path="media/run2.mp4")])
    story = Story(characters=[Character(id="witch", name="witch", token="[v1]", reference_images=["media/witch.png"])],
                  scenes=[scene])
    story.settings.prior = PriorSettings(**FAST)
    return Project.create(folder, story)


def test_cli_trains_and_registers_priors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DREAMRUNNER_COGVIDEOX_2B", str(tmp_path / "no-weights"))  # no hub lookup in tests
    project = make_project(tmp_path)
    assert main(["train-subject", str(project.folder), "--character", "witch", "--steps", "2"]) == 0
    out = capsys.readouterr()
    assert "subject-witch: trained" in out.out and "noise" in out.out
    assert re.search(r"subject prior: 100%.*2/2", out.err)  # the one progress look: a tqdm bar
    assert main(["train-motion", str(project.folder), "--motion", "running", "--steps", "2"]) == 0
    story = Project.load(project.folder).story
    assert [(p.id, p.kind, p.target) for p in story.priors] == [
        ("subject-witch", "subject", "witch"), ("motion-running", "motion", "running")]
    motion = story.priors[1]
    assert project.resolve(motion.path).is_file()
    assert [s["path"] for s in motion.card["sources"]] == ["media/run1.mp4", "media/run2.mp4"]
    assert [s["caption"] for s in motion.card["sources"]] == ["a fox running", "running"]

    assert main(["train-subject", str(project.folder), "--character", "witch", "--steps", "2"]) == 0
    assert "reused" in capsys.readouterr().out

    assert main(["train-subject", str(project.folder), "--character", "nobody"]) == 1
    assert "'nobody' is not a character of the story" in capsys.readouterr().err
    assert main(["train-motion", str(project.folder), "--motion", "flying"]) == 1
    assert "no approved clips for motion 'flying'" in capsys.readouterr().err
    assert main(["train-subject", str(project.folder), "--character", "witch", "--backend", "cogvideox-2b"]) == 1
    assert "cogvideox-2b weights are not available" in capsys.readouterr().err

    (project.folder / "media" / "witch.png").write_bytes(b"garbage")
    assert main(["train-subject", str(project.folder), "--character", "witch", "--steps", "2"]) == 1
    assert "witch.png" in capsys.readouterr().err


def test_train_motion_on_an_audio_only_clip_names_the_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DREAMRUNNER_COGVIDEOX_2B", str(tmp_path / "no-weights"))
    project = make_project(tmp_path)
    audio_only_mp4(project.folder / "media" / "run1.mp4")  # an approved clip that turns out to be a voice memo
    assert main(["train-motion", str(project.folder), "--motion", "running", "--steps", "1"]) == 1
    err = capsys.readouterr().err
    assert "run1.mp4 has no video stream (audio only)" in err and "IndexError" not in err and "Traceback" not in err


def test_rotary_5b_flavour_trains_too(tmp_path):
    components = build_tiny("5b")
    clip = TrainingClip(write_clip(tmp_path / "a.mp4"), "a fox running", static=False)
    outcome = train_prior(components, PriorRequest("motion", "running", (clip,), PriorSettings(max_steps=2, **FAST)),
                          tmp_path / "priors")
    assert outcome.card["steps"] == 2 and np.isfinite(outcome.card["loss_last"])
    assert lora_blocks(outcome.path) == {0, 2}
