"""A real OpenAI chat-completions server on loopback for planner tests (stdlib http.server in a thread).

It answers POST /v1/chat/completions from a queue of recorded responses and records every request, so
tests see exactly what the planner sent (messages, response_format, max_tokens) and what it made of each
answer. Streamed requests (`stream: true`) get server-sent events, a piece of `chunk` characters at a time,
`Reply.chunk_delay` seconds apart. An answer longer than the request's `max_tokens` (counted as
TOKEN_CHARS characters a token) is cut there with finish_reason "length", as a real server does.

`LLMServer(llama_cpp=True, context=N)` behaves like llama-cpp-python's server: it refuses
`response_format` json_schema with HTTP 500 ("Input should be 'text' or 'json_object'"), refuses a request
whose prompt plus max_tokens exceeds N tokens with HTTP 400, and does not say its context window.
Otherwise GET /props says `context` when given (llama.cpp's server).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN_CHARS = 3  # how many characters this server counts as one token


@dataclass
class Reply:
    """One recorded response: chat content (status 200), or an HTTP error status with a body, after a delay
    (before anything is sent: the time to the first token)."""

    content: str | None = None
    status: int = 200
    body: dict | None = None
    delay: float = 0.0
    finish_reason: str = "stop"
    chunk_delay: float = 0.0  # seconds between streamed pieces


@dataclass
class FakeLLM:
    replies: deque = field(default_factory=deque)
    requests: list = field(default_factory=list)
    llama_cpp: bool = False
    context: int | None = None
    chunk: int = 64
    refused: list = field(default_factory=list)  # (status, message) of each request refused by the rules above

    def queue(self, *replies: Reply | str) -> None:
        self.replies.extend(r if isinstance(r, Reply) else Reply(r) for r in replies)

    def tokens(self, request: dict) -> int:
        text = "".join(str(m.get("content") or "") for m in request.get("messages", []))
        return len(text) // TOKEN_CHARS + 4 * len(request.get("messages", []))

    def rule_refusal(self, request: dict) -> tuple[int, str] | None:
        if not self.llama_cpp:
            return None
        if (request.get("response_format") or {}).get("type") not in (None, "text", "json_object"):
            return 500, ("1 validation error for CreateChatCompletionRequest\nresponse_format.type\n  Input should be "
                         "'text' or 'json_object' [type=literal_error, input_value='json_schema']")
        wanted = self.tokens(request) + int(request.get("max_tokens") or 0)
        if self.context is not None and wanted > self.context:
            return 400, f"Requested tokens ({wanted}) exceed context window of {self.context}"
        return None


def _handler(llm: FakeLLM):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output clean
            pass

        def _send_json(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/props" and llm.context is not None and not llm.llama_cpp:
                self._send_json(200, {"default_generation_settings": {"n_ctx": llm.context}})
            else:
                self._send_json(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            request = json.loads(self.rfile.read(length) or b"{}")
            if self.path != "/v1/chat/completions":
                self._send_json(404, {"error": {"message": f"no route {self.path}"}})
                return
            llm.requests.append({"path": self.path, "body": request, "auth": self.headers.get("Authorization")})
            try:
                refusal = llm.rule_refusal(request)
                if refusal is not None:
                    llm.refused.append(refusal)
                    self._send_json(refusal[0], {"error": {"message": refusal[1], "type": "server_error"}})
                    return
                reply = llm.replies.popleft() if llm.replies else Reply(status=500, body={"error": {"message": "no recorded reply left"}})
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.status != 200:
                    self._send_json(reply.status, reply.body or {"error": {"message": f"status {reply.status}", "type": "server_error"}})
                    return
                content, finish = reply.content or "", reply.finish_reason
                limit = request.get("max_tokens")
                if limit is not None and len(content) > limit * TOKEN_CHARS:
                    content, finish = content[: limit * TOKEN_CHARS], "length"
                if request.get("stream"):
                    self._stream(request, content, finish, reply.chunk_delay)
                    return
                self._send_json(200, {
                    "id": f"chatcmpl-{len(llm.requests)}", "object": "chat.completion", "created": int(time.time()),
                    "model": request.get("model", "test"),
                    "choices": [{"index": 0, "finish_reason": finish,
                                 "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                })
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout or cancel test)

        def _stream(self, request: dict, content: str, finish: str, chunk_delay: float) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            pieces = [content[i:i + llm.chunk] for i in range(0, len(content), llm.chunk)] or [""]
            for number, piece in enumerate(pieces):
                last = number == len(pieces) - 1
                event = {"id": f"chatcmpl-{len(llm.requests)}", "object": "chat.completion.chunk",
                         "created": int(time.time()), "model": request.get("model", "test"),
                         "choices": [{"index": 0, "delta": {"content": piece},
                                      "finish_reason": finish if last else None}]}
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()
                if chunk_delay and not last:
                    time.sleep(chunk_delay)
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

    return Handler


class LLMServer:
    """Context manager: `with LLMServer() as server: server.base_url ... server.llm.queue(...)`."""

    def __init__(self, llama_cpp: bool = False, context: int | None = None, chunk: int = 64):
        self.llm = FakeLLM(llama_cpp=llama_cpp, context=context, chunk=chunk)
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
