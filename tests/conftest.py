import pytest


@pytest.fixture
def simple_scene_data() -> dict:
    """A valid scene as plain data: a witch flying right, an owl sitting still."""
    keyframes = []
    for k in range(6):
        x = 0.1 * k
        keyframes.append({
            "index": k,
            "entities": [
                {"name": "witch", "character_id": "c1", "motion": "flying", "description": "A [v1] witch flying",
                 "box": [x, 0.1, x + 0.3, 0.5]},
                {"name": "owl", "motion": None, "description": "An owl on a branch", "box": [0.7, 0.6, 0.9, 0.9]},
            ],
        })
    return {"id": "s1", "narration": "The witch flies past the owl.", "motions": ["flying"],
            "background": "A moonlit forest", "keyframes": keyframes}


@pytest.fixture
def simple_story_data(simple_scene_data) -> dict:
    return {"title": "Night flight", "topic": "a witch at night",
            "characters": [{"id": "c1", "name": "Mira", "token": "[v1]", "reference_images": ["media/mira.png"]}],
            "scenes": [simple_scene_data]}
