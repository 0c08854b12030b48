"""Story changes of issue 15: a new plan keeps what it can, titles are never cut mid-word, a render
variant can be deleted (and the chosen one follows)."""

from __future__ import annotations

import pytest

from dreamrunner import edits
from dreamrunner.planning import OfflinePlanner
from dreamrunner.planning.base import short_title
from dreamrunner.story import ClipRef, Prior, RenderResult
from dreamrunner.validation import validate_story


def test_short_title_cuts_at_a_word_boundary():
    topic = "Pip the owl who cannot sleep at night wanders through the whole forest looking for somebody to talk to"
    title = short_title(topic)
    assert len(title) <= 80 and title.endswith("…") and topic[len(title) - 1] == " "
    assert short_title("A short topic") == "A short topic"


def test_a_new_plan_keeps_clips_of_its_motions_priors_bindings_and_the_title(simple_story_data):
    story = validate_story(simple_story_data)
    story.scenes[0].motions = ["flying"]
    story.scenes[0].approved_clips = [ClipRef(id="c", motion="flying", path="media/c.mp4"),
                                      ClipRef(id="d", motion="gone", path="media/d.mp4")]
    edits.register_prior(story, Prior(id="p", kind="subject", target="c1", path="media/p.safetensors"), bind=False)
    edits.bind_prior(story, "p", [story.scenes[0].id], scale=0.5)
    planned = OfflinePlanner().plan_story("Mira flies over the town", story.characters, 5)
    planned.scenes[1].motions = ["flying", "waving"]
    adopted = validate_story(edits.adopt_plan(story, planned).model_dump())
    assert adopted.title == story.title
    assert [c.id for c in adopted.scenes[1].approved_clips] == ["c"]
    assert not any(c.id == "d" for s in adopted.scenes for c in s.approved_clips)
    bound = [b for s in adopted.scenes for b in s.prior_bindings]
    assert bound and all(b.prior_id == "p" and b.scale == 0.5 for b in bound)
    assert edits.plan_replaces(story)[0].startswith(f"the {len(story.scenes)} scenes")


def test_delete_render_moves_the_chosen_variant_along(simple_story_data):
    story = validate_story(simple_story_data)
    scene = story.scenes[0]
    scene.renders = [RenderResult(seed=s, path=f"media/r{s}.mp4", cache_key=k, backend="tiny")
                     for s, k in ((1, "aa"), (2, "aa"), (2, "bb"))]
    scene.chosen_render = 2
    with pytest.raises(edits.EditError, match="2 renders with seed 2"):
        edits.delete_render(story, scene.id, 2)
    assert edits.delete_render(story, scene.id, 1).path == "media/r1.mp4"
    assert scene.chosen_render == 1 and scene.renders[1].cache_key == "bb"
    edits.delete_render(story, scene.id, 2, "b")
    assert scene.chosen_render is None and [r.cache_key for r in scene.renders] == ["aa"]
