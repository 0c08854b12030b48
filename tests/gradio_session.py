"""Talk to a running gradio app the way its page does, over plain HTTP: one browser session (a session
hash), events sent through the queue (`/gradio_api/queue/join`) and answers read from its server-sent
event stream, including the toasts (`gr.Warning`, `gr.Info`) a handler shows, which gradio_client drops.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from dataclasses import dataclass, field


def http(url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 30):
    """(status, body bytes) of a GET (or POST with `data`), HTTP errors included."""
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@dataclass
class Answer:
    output: list | None  # the event's outputs, None when it failed
    toasts: list[tuple[str, str]] = field(default_factory=list)  # (level, text)
    raw: list[str] = field(default_factory=list)  # every stream line, for tests that grep answers

    def toast_text(self) -> str:
        return "\n".join(text for _, text in self.toasts)


class Session:
    """One page session of the app at `url` (ending in /)."""

    def __init__(self, url: str):
        self.url = url
        self.hash = uuid.uuid4().hex[:11]
        status, body = http(url + "config")
        assert status == 200, body[:300]
        self.config_text = body.decode()
        config = json.loads(body)
        self.types = {c["id"]: c["type"] for c in config["components"]}
        self.events = {d["api_name"]: d for d in config["dependencies"] if d.get("api_name")}

    def call(self, api_name: str, *args, timeout: float = 120) -> Answer:
        """Run one event: `args` fill its inputs in order, gr.State inputs excluded (the server keeps those)."""
        event = self.events[api_name]
        values = iter(args)
        data = [None if self.types[cid] == "state" else next(values) for cid in event["inputs"]]
        body = json.dumps({"data": data, "fn_index": event["id"], "session_hash": self.hash,
                           "event_data": None, "trigger_id": event["targets"][0][0] if event["targets"] else None})
        status, reply = http(self.url + "gradio_api/queue/join", body.encode(), {"Content-Type": "application/json"})
        assert status == 200, reply[:300]
        event_id = json.loads(reply)["event_id"]
        answer = Answer(output=None)
        request = urllib.request.Request(f"{self.url}gradio_api/queue/data?session_hash={self.hash}")
        with urllib.request.urlopen(request, timeout=timeout) as stream:
            for line in stream:
                text = line.decode().strip()
                if not text.startswith("data:"):
                    continue
                answer.raw.append(text)
                message = json.loads(text[5:])
                if message.get("event_id") not in (None, event_id):
                    continue
                if message.get("msg") == "log":
                    answer.toasts.append((message.get("level"), message.get("log")))
                elif message.get("msg") == "process_completed":
                    if message.get("success"):
                        answer.output = message["output"]["data"]
                    else:
                        answer.toasts.append(("error", json.dumps(message.get("output"))))
                    return answer
                elif message.get("msg") == "close_stream":
                    return answer
        return answer
