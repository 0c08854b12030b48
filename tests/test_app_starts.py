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


def test_a_damaged_last_project_opens_the_demo_and_offers_its_backup(tmp_path):
    import json

    from browser import AppServer
    from gradio_session import Session

    from dreamrunner.project import Project
    from dreamrunner.story import Story

    home = tmp_path / "home"
    folder = home / "projects" / "mine"
    project = Project.create(folder, Story(title="Before the last save"))
    project.story.title = "Last save"
    project.save()
    (folder / "project.json").write_text('{"format": "dreamrunner-studio", "story": {"ti')  # torn by a bad disk
    home.joinpath("state.json").write_text(json.dumps({"last_project": str(folder.resolve())}))

    with AppServer(home, log=tmp_path / "app.log") as app:
        assert "project.json is not valid JSON" in app.log()
        page = Session(app.url)
        assert "could not be opened" in page.config_text and "Open the backup" in page.config_text
        shown = page.call("on_load")
        assert "demo" in json.dumps(shown.output)  # the demo story is open meanwhile
        restored = page.call("open_backup")
        assert "opened the backup" in restored.toast_text(), restored.toasts
        assert Project.load(folder).story.title == "Before the last save"
        assert [p.name for p in folder.glob("project.json.damaged-*")]
        assert json.loads((home / "state.json").read_text())["last_project"] == str(folder.resolve())
