"""A small 3-scene story for the rendering and export tests, at the tiny backend's geometry."""

from __future__ import annotations

from dreamrunner.story import Character, Entity, KeyFrame, Scene, Story, StorySettings, VideoSettings

TINY_VIDEO = VideoSettings(num_frames=9, fps=8, height=64, width=96)


def moving_scene(scene_id: str, narration: str, start_x: float = 0.05, end_x: float = 0.55) -> Scene:
    """A cat sliding from `start_x` to `end_x` (box 0.4 wide) under a still owl in the top-right corner."""
    keyframes = []
    for k in range(6):
        x = start_x + (end_x - start_x) * k / 5
        keyframes.append(KeyFrame(index=k, entities=[
            Entity(name="cat", character_id="mia", motion="walking", description="[v1] cat walking",
                   box=(round(x, 4), 0.35, round(x + 0.4, 4), 0.85)),
            Entity(name="owl", description="a brown owl sitting", box=(0.7, 0.1, 0.95, 0.3)),
        ]))
    return Scene(id=scene_id, narration=narration, motions=["walking"], background="a green forest at day",
                 keyframes=keyframes)


def three_scene_story(video: VideoSettings = TINY_VIDEO, steps: int = 2) -> Story:
    story = Story(
        title="Mia's walk",
        characters=[Character(id="mia", name="Mia", token="[v1]", description="a small black cat")],
        scenes=[
            moving_scene("s1", "Mia sets out through the forest."),
            moving_scene("s2", "She meets an old owl.", 0.55, 0.05),
            moving_scene("s3", "Together they walk home.", 0.3, 0.3),
        ],
    )
    settings = StorySettings(video=video)
    settings.render.steps = steps
    settings.render.guidance_scale = 6.0
    story.settings = settings
    return story


def write_subject_lora(path, seed: int = 0, rank: int = 4) -> None:
    """A subject prior in the diffusers CogVideoX LoRA layout (odd blocks), written the way training does:
    peft LoRA on a tiny transformer, saved with `CogVideoXPipeline.save_lora_weights`."""
    import torch
    from diffusers import CogVideoXPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    from dreamrunner.backends.tiny import build_tiny

    transformer = build_tiny("2b").transformer
    config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                        target_modules=r".*transformer_blocks\.(1|3)\.attn1\.to_(q|k|v)")
    torch.manual_seed(seed)
    transformer.add_adapter(config)
    state = get_peft_model_state_dict(transformer)
    CogVideoXPipeline.save_lora_weights(str(path.parent), transformer_lora_layers=state,
                                        weight_name=path.name, safe_serialization=True)
