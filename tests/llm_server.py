"""A real OpenAI chat-completions server on loopback for planner tests (stdlib http.server in a thread).

It answers POST /v1/chat/completions from a queue of recorded responses and records every request, so
tests see exactly what the planner sent (messages, response_format) and what it made of each answer.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    """One recorded response: chat content (status 200), or an HTTP error status with a body, after a delay."""

    content: str | None = None
    status: int = 200
    body: dict | None = None
    delay: float = 0.0
    finish_reason: str = "stop"


@dataclass
class FakeLLM:
    replies: deque = field(default_factory=deque)
    requests: list = field(default_factory=list)

    def queue(self, *replies: Reply | str) -> None:
        self.replies.extend(r if isinstance(r, Reply) else Reply(r) for r in replies)


def _handler(llm: FakeLLM):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            request = json.loads(self.rfile.read(length) or b"{}")
            llm.requests.append({"path": self.path, "body": request, "auth": self.headers.get("Authorization")})
            reply = llm.replies.popleft() if llm.replies else Reply(status=500, body={"error": {"message": "no recorded reply left"}})
            if reply.delay:
                time.sleep(reply.delay)
            if reply.status != 200:
                payload = reply.body or {"error": {"message": f"status {reply.status}", "type": "server_error"}}
            else:
                payload = {
                    "id": f"chatcmpl-{len(llm.requests)}", "object": "chat.completion", "created": int(time.time()),
                    "model": request.get("model", "test"),
                    "choices": [{"index": 0, "finish_reason": reply.finish_reason,
                                 "message": {"role": "assistant", "content": reply.content}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
            data = json.dumps(payload).encode()
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test)

    return Handler


class LLMServer:
    """Context manager: `with LLMServer() as server: server.base_url ... server.llm.queue(...)`."""

    def __init__(self):
        self.llm = FakeLLM()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.llm))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> LLMServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
