import json
import subprocess
import sys

import pytest

from dreamrunner.cli import build_parser
from dreamrunner.project import Project
from dreamrunner.validation import validate_story

from published_plans import PLAN_FILES


def dreamrunner(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dreamrunner", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


def test_import_plan_then_validate(tmp_path):
    result = dreamrunner("import-plan", PLAN_FILES[1], "--out", tmp_path / "p")
    assert result.returncode == 0, result.stderr
    assert "imported 100 scenes" in result.stdout
    assert "swapped y0 and y1" in result.stderr  # the published candle plan's repair is reported
    story = Project.load(tmp_path / "p").story
    assert len(story.scenes) == 100 and story.scenes[0].id == "0001"
    result = dreamrunner("validate", tmp_path / "p")
    assert result.returncode == 0, result.stderr
    assert "ok: 100 scenes" in result.stdout


def test_import_refuses_to_overwrite_without_force(tmp_path):
    assert dreamrunner("import-plan", PLAN_FILES[0], "--out", tmp_path).returncode == 0
    result = dreamrunner("import-plan", PLAN_FILES[0], "--out", tmp_path)
    assert result.returncode == 1 and "already holds a project" in result.stderr
    assert dreamrunner("import-plan", PLAN_FILES[0], "--out", tmp_path, "--force").returncode == 0


@pytest.mark.parametrize("content,message", [
    ("not json\n", "1: expected a JSON array [video_name, plan_string]"),
    ('["a.mp4", "Background:x"]\n', "1: a: the plan has no 'Frame_k:' lines"),
    ("\n", "holds no plans"),
])
def test_import_plan_bad_input(tmp_path, content, message):
    source = tmp_path / "plans.jsonl"
    source.write_text(content)
    result = dreamrunner("import-plan", source, "--out", tmp_path / "p")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "p").exists()


def test_validate_reports_problems_without_traceback(tmp_path, simple_story_data):
    Project.create(tmp_path, validate_story(simple_story_data))
    result = dreamrunner("validate", tmp_path)
    assert result.returncode == 1 and "missing media files: media/mira.png" in result.stderr
    payload = json.loads((tmp_path / "project.json").read_text())
    payload["story"]["scenes"][0]["keyframes"][0]["entities"][1]["box"] = [0.7, 0.6, 1.5, 0.9]
    (tmp_path / "project.json").write_text(json.dumps(payload))
    result = dreamrunner("validate", tmp_path / "project.json")
    assert result.returncode == 1
    assert "scene 1 ('s1'), keyframe 1, entity 2 ('owl'), box: x1 = 1.5 is outside [0, 1]" in result.stderr
    assert "Traceback" not in result.stderr
    result = dreamrunner("validate", tmp_path / "missing")
    assert result.returncode == 1 and "does not exist" in result.stderr


@pytest.mark.parametrize("content, message", [
    (lambda text: text.replace('"Night flight"', '"Nuit \u00e9t\u00e9"').encode("latin-1"), "is not UTF-8 text (byte "),
    (lambda text: b'{"a": ' * 200_000, "is nested too deeply to be a project"),
    (lambda text: text.replace('"media/mira.png"', '"media/mi\\u0000ra.png"').encode(),
     "media path 'media/mi\\x00ra.png' contains the control character '\\x00'"),
    (lambda text: text.replace('"schema_version": 1', '"schema_version": true').encode(), "has no integer schema_version"),
])
def test_validate_hostile_files_fail_by_name_without_traceback(tmp_path, simple_story_data, content, message):
    """A named error and exit status 1 (the command ran and found the file unusable; 2 is for a wrong command line)."""
    Project.create(tmp_path, validate_story(simple_story_data))
    path = tmp_path / "project.json"
    path.write_bytes(content(path.read_text(encoding="utf-8")))
    result = dreamrunner("validate", path)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("argument", [b"caf\xe9 story", b"\xff\xfe"])
def test_non_utf8_command_line_bytes_are_a_clear_error(tmp_path, argument):
    result = subprocess.run([sys.executable, "-m", "dreamrunner", "plan", "--offline", "--topic", argument,
                             "--character", "Mira", "--out", str(tmp_path / "p")], capture_output=True, timeout=120)
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 2 and "Traceback" not in stderr
    shown = argument.decode("utf-8", "backslashreplace")
    assert stderr.startswith(f"error: the topic argument is not valid UTF-8 text: '{shown}'"), stderr
    assert not (tmp_path / "p").exists()


def test_import_plan_reads_the_published_variants_and_refuses_unknown_encodings(tmp_path):
    plans = [json.loads(line) for line in PLAN_FILES[0].read_text(encoding="utf-8").splitlines()[:3]]
    # A leading quote only, blank lines between Frame lines, CRLF (as in 5_action_binding/0093 of the paper).
    plans[0][1] = plans[0][1].rstrip().rstrip('"').replace("\nFrame_", "\n\nFrame_").replace("\n", "\r\n") + "\n"
    source = tmp_path / "plans.jsonl"
    source.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(json.dumps(p) for p in plans).encode())
    result = dreamrunner("import-plan", source, "--out", tmp_path / "p")
    assert result.returncode == 0, result.stderr
    assert "imported 3 scenes" in result.stdout
    # Windows-1252 is read with a warning (test_import_plan_reads_windows_1252_and_bom_files); bytes it does
    # not define are refused by name.
    source.write_bytes(json.dumps(["a.mp4", "Background:caf\u00e9"], ensure_ascii=False).encode("latin-1") + b"\x81")
    result = dreamrunner("import-plan", source, "--out", tmp_path / "q")
    assert result.returncode == 1 and "is neither UTF-8 nor Windows-1252 text (from about byte 25)" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_subcommand_has_help(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"validate", "import-plan"} <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args([name, "--help"])
        assert exit_.value.code == 0
        assert "usage: dreamrunner " + name in capsys.readouterr().out


def test_unknown_subcommand_exits_nonzero():
    result = dreamrunner("frobnicate")
    assert result.returncode == 2 and "invalid choice" in result.stderr


@pytest.mark.parametrize("text_break", ["\u2028", "\u0085", "\x0c"])
def test_import_plan_reads_plans_holding_unicode_line_breaks(tmp_path, capsys, text_break):
    """A valid JSONL line whose plan holds U+2028 / U+0085 (legal in a JSON string) was refused."""
    from dreamrunner.cli import main

    frames = "\n".join(f"Frame_{i}: [[\"car\", \"driving\", \"A blue car\"], [{0.1 * i:.1f}, 0.3, {0.1 * i + 0.3:.1f}, 0.7]]"
                       for i in range(1, 7))
    plan = f"Background:a street{text_break}at night\n" + frames.replace("\nFrame_6", "\u2028Frame_6")
    path = tmp_path / "plans.jsonl"
    path.write_text(json.dumps(["0001.mp4", plan], ensure_ascii=False) + "\n", encoding="utf-8")
    assert main(["import-plan", str(path), "--out", str(tmp_path / "p")]) == 0, capsys.readouterr().err
    scene = Project.load(tmp_path / "p").story.scenes[0]
    assert scene.background == f"a street{text_break}at night"
    assert scene.keyframes[5].entities[0].box[0] == pytest.approx(0.6)


def test_import_plan_reads_windows_1252_and_bom_files(tmp_path, caplog):
    from dreamrunner.cli import main

    plan = "Background:a caf\u00e9 street\n" + "\n".join(
        f"Frame_{i}: [[\"car\u201d\", \"driving\", \"A blue car\"], [0.1, 0.3, 0.5, 0.7]]" for i in range(1, 7))
    line = json.dumps(["0001.mp4", plan], ensure_ascii=False) + "\r\n"
    for name, data in [("cp1252.jsonl", line.encode("cp1252")), ("bom.jsonl", line.encode("utf-8-sig")),
                       ("inner-bom.jsonl", json.dumps(["0001.mp4", "\ufeff" + plan]).encode())]:
        (tmp_path / name).write_bytes(data)
        assert main(["import-plan", str(tmp_path / name), "--out", str(tmp_path / (name + ".p"))]) == 0
        scene = Project.load(tmp_path / (name + ".p")).story.scenes[0]
        assert (scene.background, scene.keyframes[0].entities[0].name) == ("a caf\u00e9 street", "car\u201d")
    assert "cp1252.jsonl is not UTF-8 (from about byte 30); read it as Windows-1252" in caplog.text
