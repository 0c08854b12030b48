"""Three-way merge of story revisions: what one side changed is taken, keyed lists merge item by item, sets
merge as sets, and anything both sides changed differently is named as a conflict."""

from dreamrunner.revisions import merge_values


def scene(scene_id, narration="n", box=(0.1, 0.1, 0.5, 0.5), edited=()):
    return {"id": scene_id, "narration": narration, "user_edited": list(edited),
            "keyframes": [{"index": 0, "entities": [{"name": "a", "box": list(box)}, {"name": "b", "box": [0, 0, 1, 1]}]}],
            "renders": []}


def test_one_sided_changes_are_taken_from_each_side():
    base = {"title": "t", "scenes": [scene("s1"), scene("s2")]}
    ours = {"title": "mine", "scenes": [scene("s1"), scene("s2")]}
    theirs = {"title": "t", "scenes": [scene("s1"), scene("s2")]}
    theirs["scenes"][0]["renders"] = [{"path": "media/r1.mp4", "seed": 1}]
    merged, conflicts = merge_values(base, ours, theirs)
    assert conflicts == []
    assert merged["title"] == "mine" and merged["scenes"][0]["renders"] == [{"path": "media/r1.mp4", "seed": 1}]


def test_keyed_lists_add_and_delete_items_from_both_sides():
    base = {"scenes": [scene("s1"), scene("s2")]}
    ours = {"scenes": [scene("s1"), scene("s2"), scene("s3")]}
    theirs = {"scenes": [scene("s2"), scene("s4")]}
    merged, conflicts = merge_values(base, ours, theirs)
    assert conflicts == [] and [s["id"] for s in merged["scenes"]] == ["s2", "s3", "s4"]


def test_deleting_what_the_other_side_changed_is_a_conflict():
    base = {"scenes": [scene("s1")]}
    merged, conflicts = merge_values(base, {"scenes": []}, {"scenes": [scene("s1", narration="changed")]})
    assert conflicts == ["scenes[s1]"]


def test_a_box_is_one_value_and_entities_merge_by_position():
    base = {"scenes": [scene("s1")]}
    ours, theirs = {"scenes": [scene("s1", box=(0.2, 0.1, 0.5, 0.5))]}, {"scenes": [scene("s1", box=(0.1, 0.2, 0.5, 0.5))]}
    _, conflicts = merge_values(base, ours, theirs)
    assert conflicts == ["scenes[s1].keyframes[0].entities[1].box"]
    theirs = {"scenes": [scene("s1")]}
    theirs["scenes"][0]["keyframes"][0]["entities"][1]["box"] = [0, 0, 0.5, 0.5]
    merged, conflicts = merge_values(base, ours, theirs)
    assert conflicts == []
    assert [e["box"] for e in merged["scenes"][0]["keyframes"][0]["entities"]] == [[0.2, 0.1, 0.5, 0.5], [0, 0, 0.5, 0.5]]


def test_user_edited_merges_as_a_set():
    base = {"scenes": [scene("s1", edited=["narration"])]}
    ours = {"scenes": [scene("s1", narration="x", edited=["narration", "background"])]}
    theirs = {"scenes": [scene("s1", edited=["motions", "narration"])]}
    merged, conflicts = merge_values(base, ours, theirs)
    assert conflicts == [] and sorted(merged["scenes"][0]["user_edited"]) == ["background", "motions", "narration"]
