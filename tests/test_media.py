"""The one image loader (dreamrunner.media) and every path that reads pictures through it: the editor's reference
upload, `plan --character`, subject-prior training and the metrics' reference images. Real files, made on the fly."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dreamrunner.cli import main
from dreamrunner.errors import DreamRunnerError
from dreamrunner.media import ImageFileError, ImageTooLargeError, UnreadableImageError, load_image
from dreamrunner.metrics.frames import read_image
from dreamrunner.priors import PriorDataError, load_static_clip
from dreamrunner.project import Project
from dreamrunner.story import Character, Story
from media_files import exif_rotated_jpeg, huge_png, ramp_16bit_png, red_mask, transparent_png
from dreamrunner.edits import add_reference_images
from dreamrunner.media import load_reference_image as check_image


@pytest.fixture
def project(tmp_path):
    story = Story(characters=[Character(id="mira", name="Mira", token="[v1]")])
    return Project.create(tmp_path / "story", story)


def stored(project: Project, source) -> np.ndarray:
    """Add a reference image as the editor does and read back the stored file's pixels as they are on disk."""
    (added,) = add_reference_images(project, "mira", [source])
    with Image.open(project.resolve(added)) as image:
        assert image.mode == "RGB"
        return np.asarray(image)


def test_16bit_grayscale_ramp_is_stored_and_trained_as_a_ramp_not_white(tmp_path, project):
    path = ramp_16bit_png(tmp_path / "scan16.png")  # 0..40000 of 65535
    assert Image.open(path).mode == "I;16"
    expected = np.round(np.linspace(0, 40000, 256).round() * 255 / 65535)  # 0..156: the same tones in 8 bits
    for pixels in (np.asarray(load_image(path)), stored(project, path)):
        row = pixels[10, :, 0].astype(int)
        assert np.array_equal(pixels[..., 0], pixels[..., 2])  # still gray
        assert np.abs(row - expected).max() <= 1 and row[0] == 0 and row[-1] == 156
        assert np.all(np.diff(row) >= 0) and len(np.unique(row)) > 150
        assert (pixels == 255).mean() == 0.0  # Pillow's own conversion made 99.6% of it white
    clip = load_static_clip(path, 2, 64, 256)  # training data, [-1, 1]
    trained = (clip[0, 0, 32].numpy() + 1) * 127.5
    assert np.abs(trained - expected).max() <= 3 and (trained > 250).mean() == 0.0


def test_exif_orientation_6_jpeg_is_stored_and_trained_upright(tmp_path, project):
    path = exif_rotated_jpeg(tmp_path / "phone.jpg")
    with Image.open(path) as raw:
        assert raw.size == (256, 192)  # what a loader that ignores EXIF sees
    shown = np.asarray(load_image(path))
    assert shown.shape == (256, 192, 3)
    pixels = stored(project, path)
    assert pixels.shape == (256, 192, 3)
    # The block stored top-left is shown top-right after turning 90 degrees clockwise.
    assert red_mask(pixels[:64, -48:]).mean() > 0.9 and red_mask(pixels[-64:, :48]).mean() == 0.0
    clip = load_static_clip(path, 1, 256, 192)
    frame = ((clip[0].permute(1, 2, 0).numpy() + 1) * 127.5).round()
    assert red_mask(frame[:64, -48:]).mean() > 0.9 and red_mask(frame[:64, :48]).mean() == 0.0
    assert read_image(path).shape == (256, 192, 3)  # the metrics' reference images too


def test_transparent_background_is_composited_on_the_documented_colour(tmp_path, project):
    path = transparent_png(tmp_path / "cutout.png")
    default = np.asarray(load_image(path))
    assert tuple(default[0, 0]) == (255, 255, 255) and tuple(default[48, 48]) == (0, 0, 255)
    assert tuple(stored(project, path)[0, 0]) == (255, 255, 255)  # white is the setting's default
    project.story.settings.reference_background = "#00ff00"
    pixels = stored(project, path)
    assert tuple(pixels[0, 0]) == (0, 255, 0) and tuple(pixels[48, 48]) == (0, 0, 255)
    assert tuple(np.asarray(load_image(path, background=(10, 20, 30)))[0, 0]) == (10, 20, 30)
    # A palette image with a transparent index is composited the same way.
    palette = tmp_path / "palette.png"
    indexed = Image.new("P", (96, 96), 0)
    indexed.putpalette([0, 0, 0, 0, 0, 255])
    indexed.paste(1, (32, 32, 64, 64))
    indexed.save(palette, transparency=0)
    pixels = np.asarray(load_image(palette))
    assert tuple(pixels[0, 0]) == (255, 255, 255) and tuple(pixels[48, 48]) == (0, 0, 255)


@pytest.mark.parametrize("mode, top", [("I;16", 40000), ("L", 200)])
def test_a_grayscale_colour_key_is_composited_at_any_bit_depth(tmp_path, project, mode, top):
    """A 16-bit grayscale PNG with tRNS (transparent value 0) showed its transparent pixels black."""
    path = ramp_16bit_png(tmp_path / "key.png", top) if mode == "I;16" else tmp_path / "key.png"
    if mode == "L":
        Image.fromarray(np.tile(np.linspace(0, top, 256).round().astype(np.uint8), (64, 1))).save(path)
    Image.open(path).save(path, transparency=0)
    with Image.open(path) as image:
        assert (image.mode, image.info["transparency"]) == (mode, 0)
    for pixels in (np.asarray(load_image(path)), stored(project, path)):
        assert tuple(pixels[5, 0]) == (255, 255, 255)  # the keyed column shows the background
        assert 0 < pixels[5, 1, 0] < 10 and pixels[5, -1, 0] == round(top * 255 / (65535 if mode == "I;16" else 255))
    project.story.settings.reference_background = "#00ff00"
    assert tuple(stored(project, path)[5, 0]) == (0, 255, 0)


def test_20000_square_png_gives_a_named_error_from_the_editor_and_the_cli(tmp_path, capsys):
    path = huge_png(tmp_path / "poster.png")
    with pytest.raises(ImageTooLargeError, match=r"poster\.png is 400,000,000 pixels") as error:
        check_image(path)
    assert isinstance(error.value, DreamRunnerError)  # shown as a message, not "unexpected error"
    out = tmp_path / "story"
    assert main(["plan", "--topic", "a witch", "--character", f"Mira={path}", "--out", str(out), "--offline"]) == 1
    err = capsys.readouterr().err
    assert "poster.png is 400,000,000 pixels" in err and "Traceback" not in err
    assert not (out / "project.json").exists()


def test_undecodable_and_missing_images_give_named_errors(tmp_path):
    text = tmp_path / "scan.png"
    text.write_text("not a picture")
    truncated = tmp_path / "cut.png"
    buffer = tmp_path / "whole.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(buffer)
    truncated.write_bytes(buffer.read_bytes()[:2000])
    for path in (text, truncated):
        with pytest.raises(UnreadableImageError, match=f"{path.name} is not an image Pillow can read"):
            load_image(path)
        with pytest.raises(UnreadableImageError, match=path.name):
            check_image(path)
        with pytest.raises(PriorDataError, match=path.name):
            load_static_clip(path, 1, 16, 16)
    with pytest.raises(ImageFileError, match="gone.png does not exist"):
        load_image(tmp_path / "gone.png")


def test_the_editor_rules_for_reference_images_hold_in_the_library(tmp_path):
    small = tmp_path / "tiny.png"
    Image.new("RGB", (32, 200)).save(small)
    with pytest.raises(ImageFileError, match="32x200 pixels"):
        check_image(small)
    tiff = tmp_path / "scan.tif"
    Image.new("RGB", (100, 100)).save(tiff)
    with pytest.raises(ImageFileError, match="TIFF image; use PNG, JPEG or WebP"):
        check_image(tiff)
    # Orientation is applied before the size rule: 256x192 stored is 192x256 shown, both sides >= 64.
    assert check_image(exif_rotated_jpeg(tmp_path / "phone.jpg")).size == (192, 256)
