"""Launch the DreamRunner Studio editor."""

import argparse
from pathlib import Path

from ui.app import build_app


def main() -> None:
    parser = argparse.ArgumentParser(description="DreamRunner Studio: the storyboard editor")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument("--project", type=Path, help="project folder to open")
    args = parser.parse_args()
    build_app(args.project).launch(server_name=args.host, server_port=args.port, share=args.share)


if __name__ == "__main__":
    main()
