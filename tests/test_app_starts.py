import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from browser import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_app_starts_and_serves_its_page(tmp_path):
    port = free_port()
    env_home = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "GRADIO_ANALYTICS_ENABLED": "False"}
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env_home,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        page = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5) as response:
                    page = response.read().decode()
                break
            except OSError:
                time.sleep(0.5)
        assert page is not None, f"the app did not start: {process.stdout.read() if process.poll() is not None else ''}"
        assert "DreamRunner Studio" in page
    finally:
        process.terminate()
        process.wait(timeout=30)
