"""The editor server against a caller who is not the user: a running app.py on loopback, called over
gradio's API the way any client that reaches the port can (docs/editor.md, "Security").

The app runs with a fake $HOME holding a secret `~/.ssh/id_rsa`, an OPENAI_API_KEY and OPENAI_BASE_URL
pointing at a loopback LLM server (the server's endpoint), and a 1 MB upload limit. A second loopback
LLM server stands for an address a caller types into the page.
"""

from __future__ import annotations

import json
import urllib.parse
import uuid
from pathlib import Path

import httpx
import pytest
from browser import AppServer
from gradio_session import Session, http
from llm_server import LLMServer, Reply

SECRET = "ssh-secret-" + uuid.uuid4().hex
API_KEY = "sk-env-" + uuid.uuid4().hex
TYPED_KEY = "sk-typed-" + uuid.uuid4().hex
REFUSED = "is outside the folders this editor may use"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("site")
    home = base / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text(SECRET)
    with LLMServer() as server_llm, LLMServer() as caller_llm:
        env = {"HOME": str(home), "OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": server_llm.base_url,
               "GRADIO_TEMP_DIR": str(base / "gradio-tmp")}
        app = AppServer(base / "dreamrunner-home", env=env, args=("--max-upload", "1mb"),
                        log=base / "app.log")
        with app:
            yield {"app": app, "home": home, "base": base, "server_llm": server_llm, "caller_llm": caller_llm,
                   "answers": []}


def file_route(app: AppServer, path: Path | str, form: str = "file=") -> int:
    return http(app.url + "gradio_api/" + form + urllib.parse.quote(str(path)))[0]


def served_urls(output) -> list[str]:
    """The /gradio_api/file= URLs (absolute) in an event's outputs (gallery images and the like)."""
    found = []

    def walk(value):
        if isinstance(value, dict):
            url = value.get("url")
            if isinstance(url, str) and "/gradio_api/file=" in url:
                found.append(url)
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(output)
    return found


def test_folders_outside_the_roots_are_refused_and_the_file_route_serves_no_server_file(site):
    app, home = site["app"], site["home"]
    page = Session(app.url)
    loaded = page.call("on_load")
    site["answers"].append(loaded)
    state = app.home / "state.json"
    last_before = json.loads(state.read_text())["last_project"]
    assert Path(last_before).is_relative_to(app.home / "projects")

    attempts = [("open_project", str(home)), ("new_project", str(home)), ("new_from_demo", str(home / "demo")),
                ("copy_project", str(home / "copy")), ("new_project", "~"), ("open_project", "../../.."),
                ("new_project", "../escape")]
    for api_name, folder in attempts:
        answer = page.call(api_name, folder)
        site["answers"].append(answer)
        assert REFUSED in answer.toast_text(), (api_name, folder, answer.toasts)
    assert not (home / "project.json").exists() and not (home / "demo").exists() and not (home / "copy").exists()
    assert not (app.home / "escape").exists()
    assert json.loads(state.read_text())["last_project"] == last_before

    secret = home / ".ssh" / "id_rsa"
    upload_dir = site["base"] / "gradio-tmp"
    for path in (secret, f"{upload_dir}/../home/.ssh/id_rsa", app.home / "state.json",
                 app.home / "projects" / "demo" / "project.json"):
        assert file_route(app, path) == 403, path
        assert file_route(app, path, "file/") == 403, path
    assert file_route(app, "https://example.com/") == 403

    # Inside the roots the page works as before, and media the page shows are served (as gradio's copies).
    made = page.call("new_from_demo", "mine")
    site["answers"].append(made)
    assert REFUSED not in made.toast_text() and (app.home / "projects" / "mine" / "project.json").is_file()
    urls = served_urls(made.output)
    assert urls, "the demo's reference images are shown"
    status, body = http(urls[0])
    assert status == 200 and body[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_server_api_key_goes_only_to_the_server_endpoint(site):
    app, server_llm, caller_llm = site["app"], site["server_llm"], site["caller_llm"]
    page = Session(app.url)
    site["answers"].append(page.call("on_load"))
    unauthorized = Reply(status=401, body={"error": {"message": "invalid key", "type": "invalid_request_error"}})

    # A typed base URL without a typed key: refused before any request leaves the server.
    answer = page.call("plan_story", "a cat", 3, 0, "llm", caller_llm.base_url, "gpt-4o", "")
    site["answers"].append(answer)
    assert "type an API key for it" in answer.toast_text(), answer.toasts
    assert caller_llm.llm.requests == []

    # With a typed key, that key (and only it) goes to the typed URL.
    caller_llm.llm.queue(*[unauthorized] * 6)
    # (The demo is planned: the call that plans over it is the confirming one.)
    answer = page.call("plan_story_confirmed", "a cat", 3, 0, "llm", caller_llm.base_url, "gpt-4o", TYPED_KEY)
    site["answers"].append(answer)
    assert caller_llm.llm.requests
    assert {r["auth"] for r in caller_llm.llm.requests} == {f"Bearer {TYPED_KEY}"}

    # The server's own endpoint (left empty, or typed as configured) gets the server's key.
    for typed in ("", server_llm.base_url + "/"):
        server_llm.llm.requests.clear()
        server_llm.llm.queue(*[unauthorized] * 6)
        site["answers"].append(page.call("plan_story_confirmed", "a cat", 3, 0, "llm", typed, "gpt-4o", ""))
        assert server_llm.llm.requests and {r["auth"] for r in server_llm.llm.requests} == {f"Bearer {API_KEY}"}


def test_uploads_over_the_limit_are_refused(site):
    app = site["app"]
    small = httpx.post(app.url + "gradio_api/upload", files={"files": ("small.png", b"x" * 100_000)}, timeout=60)
    assert small.status_code == 200 and Path(small.json()[0]).is_file()
    large = httpx.post(app.url + "gradio_api/upload", files={"files": ("large.png", b"x" * 2_000_000)}, timeout=60)
    assert large.status_code == 413, (large.status_code, large.text[:300])
    assert "large.png" not in {p.name for p in (site["base"] / "gradio-tmp").rglob("*")}


def test_the_api_key_appears_nowhere_a_client_or_a_file_could_show_it(site):
    """Runs last in this module: everything the tests above made the app answer and write is searched."""
    app = site["app"]
    texts = {"/config": http(app.url + "config")[1].decode(), "/": http(app.url)[1].decode(),
             "/gradio_api/info": http(app.url + "gradio_api/info")[1].decode(),
             "answers": "\n".join("\n".join(a.raw) for a in site["answers"]), "log": app.log_path.read_text()}
    assert site["answers"], "run with the tests above"
    for name, text in texts.items():
        assert API_KEY not in text, name
    for root in (app.home, site["home"], site["base"] / "gradio-tmp"):
        for path in root.rglob("*"):
            if path.is_file():
                assert API_KEY.encode() not in path.read_bytes(), path


def test_the_upload_limit_setting_is_checked_at_start(tmp_path):
    import subprocess
    import sys

    from browser import ROOT

    from ui.server import parse_size

    assert parse_size("200mb") == 200 << 20 and parse_size("512") == 512 and parse_size(" 2 GB ") == 2 << 30
    env = {"DREAMRUNNER_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "app.py", "--max-upload", "lots"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "upload limit 'lots' is not a size such as 500kb, 200mb or 2gb" in result.stderr
