"""Real media files with the metadata that phones, editors and scanners write, made on the fly (Pillow, ffmpeg)."""

from __future__ import annotations

import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

RED = (255, 0, 0)


def ffmpeg(*arguments: str) -> None:
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *arguments],
                   check=True, capture_output=True)


def ramp_16bit_png(path: Path, top: int = 40000) -> Path:
    """A 16-bit grayscale PNG (Pillow mode I;16): each row is a ramp 0..top over 256 columns."""
    row = np.linspace(0, top, 256).round().astype(np.uint16)
    Image.fromarray(np.tile(row, (64, 1))).save(path)
    return path


def exif_rotated_jpeg(path: Path, orientation: int = 6) -> Path:
    """A JPEG stored 256x192 (width x height) with a red block in the stored top-left corner, tagged with an
    EXIF orientation. Orientation 6 means "turn 90 degrees clockwise to show": shown 192x256, block top-right."""
    pixels = np.full((192, 256, 3), 40, np.uint8)
    pixels[:48, :64] = RED
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    return path


def transparent_png(path: Path) -> Path:
    """RGBA 96x96: a fully transparent background whose hidden colour is black, an opaque blue square inside."""
    pixels = np.zeros((96, 96, 4), np.uint8)
    pixels[32:64, 32:64] = (0, 0, 255, 255)
    Image.fromarray(pixels, "RGBA").save(path)
    return path


def huge_png(path: Path, side: int = 20000) -> Path:
    """A valid 1-bit PNG of side x side pixels (all black) written row by row: a few kB, no big buffer."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    data = b"".join(compressor.compress(row * 500) for _ in range(side // 500)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def rotated_clip(path: Path, seconds: float = 2.0, fps: int = 8, display: tuple[str, ...] = ("-display_rotation", "90")) -> Path:
    """A phone-style clip: coded 640x360 with a red block in the coded top-left corner, and a display matrix
    that rotates it 90 degrees counter-clockwise, so players show it 360x640 with the block bottom-left.
    `display`: other ffmpeg display-matrix options (-display_hflip, -display_vflip, -display_rotation N)."""
    plain = path.with_name(path.stem + "-coded.mp4")
    ffmpeg("-f", "lavfi", "-i", f"color=c=gray:s=640x360:r={fps}:d={seconds},"
           "drawbox=x=0:y=0:w=160:h=90:color=red:t=fill,drawbox=x=560:y=0:w=80:h=40:color=blue:t=fill",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", str(plain))
    ffmpeg(*display, "-i", str(plain), "-c", "copy", str(path))
    plain.unlink()
    return path


def audio_only_mp4(path: Path) -> Path:
    """An mp4 with one AAC audio stream and no video."""
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", str(path))
    return path


def ffmpeg_frames(path: Path, width: int, height: int) -> np.ndarray:
    """Every frame as the ffmpeg command line shows it (it applies the display rotation), uint8 [F, H, W, 3]."""
    import imageio_ffmpeg

    raw = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i", str(path), "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def red_mask(frame: np.ndarray) -> np.ndarray:
    frame = frame.astype(int)
    return (frame[..., 0] > 180) & (frame[..., 1] < 90) & (frame[..., 2] < 90)


def moving_square_clip(path: Path, frames: int = 16, fps: int = 8) -> Path:
    """A small real H.264 clip (96x64): a square moving left to right."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for t in range(frames):
            image = np.full((64, 96, 3), 200, np.uint8)
            image[20:44, 4 + 4 * t:28 + 4 * t] = (200, 60, 40)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return Path(path)
