"""Subject and motion priors on Wan 2.2 A14B's two experts (CPU, `tiny-wan2.2`): one LoRA per expert, each trained
on its own side of the boundary, saved as a high-noise / low-noise pair that stock diffusers' Wan loader reads, and
rendered with the low-noise file on `transformer_2` in both region controls."""

from __future__ import annotations

import json

import pytest
import torch
from render_helpers import three_scene_story
from safetensors import safe_open

from dreamrunner.attention.lora import GatedLinearHook, LoRAFileError, low_noise_file
from dreamrunner.backends.wan import build_tiny_wan
from dreamrunner.priors import PriorRequest, TrainingClip, train_prior
from dreamrunner.priors.objectives import expert_draws, flow_sigmas
from dreamrunner.regions import build_region_plan
from dreamrunner.rendering.pipeline import LoraBinding, SceneInput, StockRegionControl
from dreamrunner.rendering.wan_pipeline import WanDreamRunnerPipeline
from dreamrunner.story import PriorSettings, VideoSettings
from test_priors_training import FAST, write_clip, write_image
from test_wan22 import write_wan_subject_lora

BOUNDARY = 0.875 * 1000  # tiny-wan2.2's boundary_ratio times num_train_timesteps: WanPipeline's switch
STEPS = 4


def tensors(path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), "pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


def record_timesteps(transformers):
    """The timesteps each transformer is called with (by position), while the returned hooks stay registered."""
    seen = [[] for _ in transformers]

    def recorder(i):
        def hook(module, args, kwargs):
            seen[i].extend(kwargs["timestep"].flatten().tolist())
        return hook

    return seen, [t.register_forward_pre_hook(recorder(i), with_kwargs=True) for i, t in enumerate(transformers)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A subject and a motion prior trained on tiny-wan2.2, with the timesteps each expert saw and the progress."""
    folder = tmp_path_factory.mktemp("a14b")
    components = build_tiny_wan("tiny-wan2.2")
    settings = PriorSettings(max_steps=STEPS, **FAST)
    requests = {"subject": PriorRequest("subject", "witch", (TrainingClip(write_image(folder / "ref.png"), "[v1] witch",
                                                                           static=True),), settings),
                "motion": PriorRequest("motion", "running", (TrainingClip(write_clip(folder / "a.mp4"), "a fox running",
                                                                          static=False),), settings)}
    outcomes, seen, progress = {}, {}, {}
    for kind, request in requests.items():
        seen[kind], hooks = record_timesteps(components.transformers)
        progress[kind] = []
        try:
            outcomes[kind] = train_prior(components, request, folder / "priors", progress=progress[kind].append)
        finally:
            for hook in hooks:
                hook.remove()
    return components, outcomes, seen, progress


def test_expert_draws_split_where_wan_pipeline_switches_experts():
    """The draws' model timesteps (flow-shifted, as the trainers call the transformer) cross the boundary exactly
    at the split: tiny-wan2.2's flow_shift 3 puts 0.875 at the unshifted 0.7."""
    scheduler = build_tiny_wan("tiny-wan2.2").scheduler
    high, low = expert_draws(scheduler, 0.875)
    assert high == (700, 1000) and low == (0, 700)
    model = flow_sigmas(scheduler, torch.tensor([699, 700])) * 1000
    assert model[0] < BOUNDARY <= model[1]


def test_each_expert_trains_only_on_its_own_timesteps(trained):
    """The high-noise expert sees only timesteps >= boundary, the low-noise one only below it, each for every step
    (a subject step is one forward pass, a motion step one or two); progress counts both experts as one job."""
    components, _, seen, progress = trained
    assert len(seen["subject"][0]) == len(seen["subject"][1]) == STEPS
    for kind in ("subject", "motion"):
        high, low = seen[kind]
        assert high and low
        assert min(high) >= BOUNDARY, high
        assert max(low) < BOUNDARY, low
        steps = [(p.step, p.total, p.message) for p in progress[kind] if p.stage == f"{kind} prior"]
        assert steps == ([(i, 2 * STEPS, "high-noise expert") for i in range(1, STEPS + 1)]
                         + [(i, 2 * STEPS, "low-noise expert") for i in range(STEPS + 1, 2 * STEPS + 1)])
    # Training leaves both experts as they were given: no adapter left on either.
    assert all("lora" not in name for t in components.transformers for name, _ in t.named_modules())


def test_a14b_priors_write_a_high_noise_and_a_low_noise_file(trained):
    _, outcomes, _, _ = trained
    for kind, blocks in (("subject", {1, 3}), ("motion", {0, 2})):
        outcome = outcomes[kind]
        low_noise = outcome.path.with_name(outcome.path.stem + "-low-noise.safetensors")
        assert outcome.path.is_file() and low_noise.is_file()
        card = json.loads(outcome.path.with_suffix(".json").read_text())
        assert card == outcome.card and card["model"] == "tiny-wan2.2" and card["steps"] == STEPS
        assert card["low_noise_file"] == low_noise.name and card["boundary_ratio"] == 0.875
        assert [(e["expert"], e["transformer"], e["file"], e["timesteps"]) for e in card["experts"]] == [
            ("high-noise", "transformer", outcome.path.name, [BOUNDARY, 1000]),
            ("low-noise", "transformer_2", low_noise.name, [0, BOUNDARY])]
        for path in (outcome.path, low_noise):
            saved = tensors(path)
            assert {int(key.split(".")[2]) for key in saved} == blocks
            assert all(key.startswith("transformer.blocks.") for key in saved)
        high, low = tensors(outcome.path), tensors(low_noise)
        assert high.keys() == low.keys() and any(not torch.equal(high[k], low[k]) for k in high)
        assert not (outcome.path.parent / ".work").exists()  # no work folder left behind, not even an empty one


def test_a_finished_pair_is_reused(trained):
    components, outcomes, _, _ = trained
    outcome = outcomes["subject"]
    request = PriorRequest("subject", "witch", (TrainingClip(outcome.path.parent.parent / "ref.png", "[v1] witch",
                                                             static=True),), PriorSettings(max_steps=STEPS, **FAST))
    assert train_prior(components, request, outcome.path.parent).cached


def test_a_job_cancelled_in_the_low_noise_expert_resumes_there(trained, tmp_path):
    """Cancelled after the first low-noise step: the run again does not train the high-noise expert again (its last
    checkpoint is its end), resumes the low-noise one, and gives the files of an uninterrupted job."""
    from dreamrunner.jobs import CancelToken, Cancelled

    components, outcomes, _, _ = trained
    uninterrupted = outcomes["subject"]
    request = PriorRequest("subject", "witch", (TrainingClip(uninterrupted.path.parent.parent / "ref.png", "[v1] witch",
                                                             static=True),), PriorSettings(max_steps=STEPS, **FAST))
    cancel = CancelToken()
    with pytest.raises(Cancelled):
        train_prior(components, request, tmp_path, progress=lambda p: p.step == STEPS + 1 and cancel.cancel(),
                    cancel=cancel)
    # Nothing half-done among the priors: the finished high-noise file waits in the work folder.
    assert not list(tmp_path.glob("*.safetensors")) and not list(tmp_path.glob("*.json"))
    seen, hooks = record_timesteps(components.transformers)
    try:
        resumed = train_prior(components, request, tmp_path)
    finally:
        for hook in hooks:
            hook.remove()
    assert [len(calls) for calls in seen] == [0, STEPS - 1]
    assert [e["resumed_from"] for e in resumed.card["experts"]] == [STEPS, 1]
    for name in (uninterrupted.path.name, uninterrupted.card["low_noise_file"]):
        got, expected = tensors(tmp_path / name), tensors(uninterrupted.path.with_name(name))
        assert all(torch.equal(got[key], value) for key, value in expected.items()), name


def test_the_pair_loads_into_stock_diffusers_wan_pipeline(trained):
    """diffusers' own Wan loader: the high-noise file into `transformer`, the low-noise one into `transformer_2`
    (`load_into_transformer_2=True`); each expert holds its own file's factors, and they differ."""
    from diffusers import WanPipeline

    _, outcomes, _, _ = trained
    outcome = outcomes["motion"]
    low_noise = outcome.path.with_name(outcome.card["low_noise_file"])
    pipe = WanPipeline(**build_tiny_wan("tiny-wan2.2").pipeline_kwargs())
    pipe.load_lora_weights(str(outcome.path), adapter_name="running", use_safetensors=True)
    pipe.load_lora_weights(str(low_noise), adapter_name="running", use_safetensors=True, load_into_transformer_2=True)
    loaded = []
    for transformer, path in ((pipe.transformer, outcome.path), (pipe.transformer_2, low_noise)):
        assert "running" in transformer.peft_config
        state = transformer.state_dict()
        for key, value in tensors(path).items():
            module_key = key.removeprefix("transformer.").replace(".weight", ".running.weight")
            assert torch.equal(state[module_key], value), key
        loaded.append({k: v for k, v in state.items() if ".running." in k})
    assert loaded[0].keys() == loaded[1].keys()
    assert any(not torch.equal(loaded[0][k], loaded[1][k]) for k in loaded[0])


def lora_up_in_use(transformer, adapter: str):
    """The lora_B factor of blocks.1.attn1.to_q that a forward of `transformer` runs: peft's adapter (stock path)
    or the region-gated hook's (SR3AI path)."""
    linear = transformer.blocks[1].attn1.to_q
    if hasattr(linear, "lora_B"):  # a peft layer
        return linear.lora_B[adapter].weight.detach().clone()
    (hook,) = [hook for hook in linear._forward_hooks.values() if isinstance(hook, GatedLinearHook)]
    return hook.up.detach().clone()


@pytest.mark.parametrize("control", ["sr3ai", "stock"])
def test_a_render_runs_the_low_noise_file_on_transformer_2(trained, tmp_path, control):
    """Both region controls: a two-expert prior runs its high-noise factors on `transformer` and its low-noise ones
    on `transformer_2`; a one-file prior runs the same factors on both (today's behaviour)."""
    _, outcomes, _, _ = trained
    outcome = outcomes["subject"]
    low_noise = outcome.path.with_name(outcome.card["low_noise_file"])
    write_wan_subject_lora(tmp_path / "mia.safetensors")
    components = build_tiny_wan("tiny-wan2.2")
    video = VideoSettings(num_frames=9, fps=16, height=64, width=96)
    plan = build_region_plan(three_scene_story().scenes[0], video.token_grid, video.num_frames)
    pipeline = WanDreamRunnerPipeline.from_components(components, None if control == "sr3ai" else StockRegionControl())
    up = lambda path: tensors(path)["transformer.blocks.1.attn1.to_q.lora_B.weight"]  # noqa: E731
    for binding, expected in (
            (LoraBinding("subject-witch", outcome.path, "subject", 1.0, (1,), low_noise_path=low_noise),
             (up(outcome.path), up(low_noise))),
            (LoraBinding("subject-mia", tmp_path / "mia.safetensors", "subject", 1.0, (1,)),
             (up(tmp_path / "mia.safetensors"),) * 2)):
        used = [[], []]
        hooks = [t.register_forward_pre_hook(lambda module, args, i=i: used[i].append(lora_up_in_use(module, binding.name)))
                 for i, t in enumerate(components.transformers)]
        try:
            pipeline(SceneInput("a cat", plan, (binding,)), num_inference_steps=4, guidance_scale=1.0, video=video)
        finally:
            for hook in hooks:
                hook.remove()
        assert [len(calls) for calls in used] == [2, 2]
        for calls, factor in zip(used, expected):
            for got in calls:
                torch.testing.assert_close(got.float(), factor.float(), rtol=0, atol=0)
    assert not torch.equal(up(outcome.path), up(low_noise))


def test_several_priors_on_the_stock_control_load_without_peft_warnings(trained, tmp_path):
    """A pair and a one-file prior in one scene are two adapters per expert: peft's "Already found a peft_config"
    caution printed on every such render."""
    import warnings

    _, outcomes, _, _ = trained
    outcome = outcomes["subject"]
    write_wan_subject_lora(tmp_path / "mia.safetensors")
    components = build_tiny_wan("tiny-wan2.2")
    video = VideoSettings(num_frames=9, fps=16, height=64, width=96)
    plan = build_region_plan(three_scene_story().scenes[0], video.token_grid, video.num_frames)
    pipeline = WanDreamRunnerPipeline.from_components(components, StockRegionControl())
    bindings = (LoraBinding("subject-witch", outcome.path, "subject", 1.0, (1,),
                            low_noise_path=outcome.path.with_name(outcome.card["low_noise_file"])),
                LoraBinding("subject-mia", tmp_path / "mia.safetensors", "subject", 1.0, (1,)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipeline(SceneInput("a cat", plan, bindings), num_inference_steps=2, guidance_scale=1.0, video=video)
    assert not [w for w in caught if "peft_config" in str(w.message)]


@pytest.mark.parametrize("control", ["sr3ai", "stock"])
def test_a_two_expert_prior_is_refused_on_one_transformer(trained, control):
    _, outcomes, _, _ = trained
    outcome = outcomes["subject"]
    components = build_tiny_wan("tiny-wan")
    video = VideoSettings(num_frames=9, fps=16, height=64, width=96)
    plan = build_region_plan(three_scene_story().scenes[0], video.token_grid, video.num_frames)
    pipeline = WanDreamRunnerPipeline.from_components(components, None if control == "sr3ai" else StockRegionControl())
    binding = LoraBinding("subject-witch", outcome.path, "subject", 1.0, (1,),
                          low_noise_path=outcome.path.with_name(outcome.card["low_noise_file"]))
    with pytest.raises(LoRAFileError, match="a two-expert prior .* renders on Wan 2.2 A14B only; .* or unbind it"):
        pipeline(SceneInput("a cat", plan, (binding,)), num_inference_steps=2, guidance_scale=1.0, video=video)
    assert all("lora" not in name for name, _ in components.transformer.named_modules())


def test_the_story_binds_the_pair_and_keys_renders_on_both_files(trained, tmp_path):
    """A registered two-expert prior: the scene input carries its low-noise file, and the render cache key changes
    when that file does."""
    import shutil

    from dreamrunner import edits
    from dreamrunner.project import Project
    from dreamrunner.rendering.story_render import scene_cache_key, scene_input
    from dreamrunner.story import Prior

    _, outcomes, _, _ = trained
    outcome = outcomes["subject"]
    project = Project.create(tmp_path / "story", three_scene_story())
    for name in (outcome.path.name, outcome.card["low_noise_file"]):
        shutil.copy(outcome.path.with_name(name), project.media / name)
    prior = Prior(id="subject-mia", kind="subject", target="mia", path=f"media/{outcome.path.name}", card=outcome.card)
    with project.edit():
        edits.register_prior(project.story, prior)
    video = VideoSettings(num_frames=9, fps=16, height=64, width=96)
    scene = project.story.scenes[0]
    (binding,) = scene_input(project, scene, video).loras
    assert binding.path == project.media / outcome.path.name
    assert binding.low_noise_path == project.media / outcome.card["low_noise_file"]
    key = scene_cache_key(project, scene, "tiny-wan2.2", "sr3ai-fast", video)
    shutil.copy(outcome.path, binding.low_noise_path)  # another low-noise LoRA
    assert scene_cache_key(project, scene, "tiny-wan2.2", "sr3ai-fast", video) != key
    with pytest.raises(LoRAFileError, match="its card's low_noise_file '../elsewhere.safetensors' is not a file name"):
        low_noise_file(binding.path, {"low_noise_file": "../elsewhere.safetensors"})


def test_an_outside_a14b_pair_imports_as_a_two_expert_prior(tmp_path, capsys):
    """`import-lora FILE --low-noise LOW`: a Wan 2.2 A14B pair becomes a two-expert prior like a trained one (the
    high-noise file where a prior's file goes, the low-noise one beside it, the card naming it), bound to its scenes
    with each file on its own expert; a pair that is not of Wan LoRAs is refused."""
    from safetensors.torch import save_file

    from dreamrunner.cli import main
    from dreamrunner.priors.imports import LoRAImportError, import_lora
    from dreamrunner.project import Project
    from dreamrunner.rendering.story_render import scene_input

    write_wan_subject_lora(tmp_path / "mia_high_noise.safetensors")
    low = {key: -2 * value for key, value in tensors(tmp_path / "mia_high_noise.safetensors").items()}
    save_file(low, str(tmp_path / "mia_low_noise.safetensors"))
    project = Project.create(tmp_path / "story", three_scene_story())
    assert main(["import-lora", str(project.folder), str(tmp_path / "mia_high_noise.safetensors"), "--target", "mia",
                 "--low-noise", str(tmp_path / "mia_low_noise.safetensors"), "--id", "subject-mia-a14b"]) == 0
    assert "imported" in capsys.readouterr().out
    project = Project.load(project.folder)
    (prior,) = project.story.priors
    path = project.resolve(prior.path)
    assert path.name == "subject-mia-a14b.safetensors"
    assert prior.card["low_noise_file"] == "subject-mia-a14b-low-noise.safetensors"
    assert [(e["expert"], e["transformer"], e["source"]) for e in prior.card["experts"]] == [
        ("high-noise", "transformer", "mia_high_noise.safetensors"),
        ("low-noise", "transformer_2", "mia_low_noise.safetensors")]
    for written, source in ((path, "mia_high_noise"), (path.with_name(prior.card["low_noise_file"]), "mia_low_noise")):
        got, expected = tensors(written), tensors(tmp_path / f"{source}.safetensors")
        assert got.keys() == expected.keys() and all(torch.equal(got[key], value) for key, value in expected.items())
    video = VideoSettings(num_frames=9, fps=16, height=64, width=96)
    (binding,) = scene_input(project, project.story.scenes[0], video).loras
    assert (binding.path, binding.low_noise_path) == (path, path.with_name(prior.card["low_noise_file"]))

    cogvideox = {"transformer.transformer_blocks.1.attn1.to_q.lora_A.weight": torch.ones(2, 8),
                 "transformer.transformer_blocks.1.attn1.to_q.lora_B.weight": torch.ones(8, 2)}
    save_file(cogvideox, str(tmp_path / "cogvideox.safetensors"))
    with pytest.raises(LoRAImportError, match="cogvideox.safetensors: a high-noise / low-noise pair is Wan 2.2 A14B's"):
        import_lora(project, tmp_path / "mia_high_noise.safetensors", "subject", "mia",
                    low_noise=tmp_path / "cogvideox.safetensors")
    with pytest.raises(LoRAImportError, match="are the same LoRA"):  # one file given twice is no pair
        import_lora(project, tmp_path / "mia_high_noise.safetensors", "subject", "mia",
                    low_noise=tmp_path / "mia_high_noise.safetensors")


def test_a_registered_pair_is_current_only_with_both_files(tmp_path, capsys):
    """`dreamrunner train-subject --backend tiny-wan2.2` names both files; `current_prior` (what `dreamrunner story`
    trains again) finds the prior up to date while both its files are there, and not once its low-noise file is
    gone."""
    import shutil

    from dreamrunner.cli import main
    from dreamrunner.priors import current_prior, subject_request
    from dreamrunner.project import Project

    project = Project.create(tmp_path / "story", three_scene_story())
    shutil.copy(write_image(tmp_path / "mia.png"), project.media / "mia.png")
    with project.edit():
        project.story.characters[0].reference_images = ["media/mia.png"]
        project.story.settings.prior = PriorSettings(max_steps=1, **FAST)
    assert main(["train-subject", str(project.folder), "--character", "mia", "--backend", "tiny-wan2.2"]) == 0
    captured = capsys.readouterr()
    assert "-low-noise.safetensors (low-noise expert)" in captured.out
    # The story renders with another model: said, with the command that switches it.
    story_backend = project.story.settings.render.backend
    assert (f"training on tiny-wan2.2, but the story renders with {story_backend}" in captured.err
            and "render.backend=tiny-wan2.2" in captured.err)
    project = Project.load(project.folder)
    (prior,) = project.story.priors
    request = subject_request(project, "mia")
    assert current_prior(project, request, "tiny-wan2.2") is not None
    project.resolve(prior.path).with_name(prior.card["low_noise_file"]).unlink()
    assert current_prior(project, request, "tiny-wan2.2") is None


@pytest.mark.parametrize("edit", ["../x", None])
def test_a_pair_whose_card_no_longer_names_its_low_noise_file_is_trained_again(trained, tmp_path, edit):
    """A finished pair is reused only while its card names its own low-noise file: a card edited to name
    '../x' (or none) is not handed back (it would be registered and fail every render, or render the high-noise
    LoRA on both experts); the prior is trained again and its card names the low-noise file again."""
    import shutil

    components, outcomes, _, _ = trained
    outcome = outcomes["subject"]
    folder = tmp_path / "priors"
    shutil.copytree(outcome.path.parent, folder)
    card_path = folder / outcome.path.with_suffix(".json").name
    card = json.loads(card_path.read_text())
    if edit is None:
        del card["low_noise_file"]
    else:
        card["low_noise_file"] = edit
    card_path.write_text(json.dumps(card))
    request = PriorRequest("subject", "witch", (TrainingClip(outcome.path.parent.parent / "ref.png", "[v1] witch",
                                                             static=True),), PriorSettings(max_steps=STEPS, **FAST))
    again = train_prior(components, request, folder)
    assert not again.cached
    assert again.card["low_noise_file"] == outcome.card["low_noise_file"]
    assert json.loads(card_path.read_text())["low_noise_file"] == outcome.card["low_noise_file"]


def test_validate_checks_a_two_expert_priors_low_noise_file(tmp_path, capsys):
    """`dreamrunner validate` names a two-expert prior's missing low-noise file (render would stop on it) and a
    card whose low_noise_file is no file name, as it names a missing prior file."""
    from safetensors.torch import save_file

    from dreamrunner.cli import main
    from dreamrunner.project import Project

    write_wan_subject_lora(tmp_path / "high.safetensors")
    save_file(tensors(tmp_path / "high.safetensors"), str(tmp_path / "low.safetensors"))
    project = Project.create(tmp_path / "story", three_scene_story())
    assert main(["import-lora", str(project.folder), str(tmp_path / "high.safetensors"), "--target", "mia",
                 "--low-noise", str(tmp_path / "low.safetensors"), "--id", "pair"]) == 0
    assert main(["validate", str(project.folder)]) == 0
    capsys.readouterr()
    project = Project.load(project.folder)
    (prior,) = project.story.priors
    project.resolve(prior.path).with_name(prior.card["low_noise_file"]).unlink()
    assert main(["validate", str(project.folder)]) != 0
    assert "media/priors/pair-low-noise.safetensors" in capsys.readouterr().err
    with project.edit():
        project.story.priors[0].card["low_noise_file"] = "../x"
    assert main(["validate", str(project.folder)]) != 0
    assert "'pair'" in (err := capsys.readouterr().err) and "'../x' is not a file name" in err


def test_an_import_never_overwrites_another_priors_file(tmp_path):
    """An imported prior's files (`<id>.safetensors`, and `<id>-low-noise.safetensors` for a pair) are refused where
    they are another registered prior's: `--id pair-low-noise` would have replaced the low-noise LoRA of the pair
    'pair', and a pair `--id solo` the file of the prior 'solo-low-noise'. The same id replaces its own files."""
    from safetensors.torch import save_file

    from dreamrunner import edits
    from dreamrunner.priors.imports import LoRAImportError, import_lora
    from dreamrunner.project import Project

    write_wan_subject_lora(tmp_path / "high.safetensors")
    save_file({key: -value for key, value in tensors(tmp_path / "high.safetensors").items()},
              str(tmp_path / "low.safetensors"))
    project = Project.create(tmp_path / "story", three_scene_story())

    def register(prior):
        with project.edit():
            edits.register_prior(project.story, prior)

    register(import_lora(project, tmp_path / "high.safetensors", "subject", "mia", "pair",
                         low_noise=tmp_path / "low.safetensors"))
    register(import_lora(project, tmp_path / "high.safetensors", "subject", "mia", "solo-low-noise"))
    priors = project.media / "priors"
    before = {path.name: path.read_bytes() for path in priors.glob("*.safetensors")}
    with pytest.raises(LoRAImportError, match="pair-low-noise.safetensors is the low-noise file of prior 'pair'"):
        import_lora(project, tmp_path / "low.safetensors", "subject", "mia", "pair-low-noise")
    with pytest.raises(LoRAImportError, match="solo-low-noise.safetensors is the file of prior 'solo-low-noise'"):
        import_lora(project, tmp_path / "high.safetensors", "subject", "mia", "solo",
                    low_noise=tmp_path / "low.safetensors")
    assert {path.name: path.read_bytes() for path in priors.glob("*.safetensors")} == before
    register(import_lora(project, tmp_path / "low.safetensors", "subject", "mia", "pair",
                         low_noise=tmp_path / "high.safetensors"))
    assert (priors / "pair.safetensors").read_bytes() != before["pair.safetensors"]


def test_importing_a_pair_into_a_story_not_on_a14b_warns(tmp_path, capsys):
    """`import-lora --low-noise` on a story whose backend has one transformer imports and binds the pair (the
    backend may be switched later) but says that its scenes will not render until then; on A14B it says nothing."""
    from safetensors.torch import save_file

    from dreamrunner.cli import main
    from dreamrunner.project import Project

    write_wan_subject_lora(tmp_path / "high.safetensors")
    save_file(tensors(tmp_path / "high.safetensors"), str(tmp_path / "low.safetensors"))
    for backend, warned in (("tiny-wan", True), ("tiny-wan2.2", False)):
        project = Project.create(tmp_path / backend, three_scene_story())
        with project.edit():
            project.story.settings.render.backend = backend
        capsys.readouterr()
        assert main(["import-lora", str(project.folder), str(tmp_path / "high.safetensors"), "--target", "mia",
                     "--low-noise", str(tmp_path / "low.safetensors"), "--id", "pair"]) == 0
        err = capsys.readouterr().err
        assert ("warning: pair: a two-expert prior renders on Wan 2.2 A14B only" in err) is warned, err
        assert ("this story renders with tiny-wan:" in err) is warned


def test_both_files_of_a_pair_are_as_readable_as_its_card(trained):
    """safetensors writes its files 0600; a prior's files get the permissions a plain open() gives (the umask's),
    as its card does, so a project shared with someone else renders with its priors there too."""
    import os
    import stat

    _, outcomes, _, _ = trained
    outcome = outcomes["motion"]
    card_mode = stat.S_IMODE(os.stat(outcome.path.with_suffix(".json")).st_mode)
    for path in (outcome.path, outcome.path.with_name(outcome.card["low_noise_file"])):
        assert stat.S_IMODE(os.stat(path).st_mode) == card_mode, path
