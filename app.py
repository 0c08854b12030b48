"""Launch the DreamRunner Studio storyboard editor from a checkout: `python app.py [options]`.

The editor itself is `ui.launch` (installed as `dreamrunner-studio` and `dreamrunner app`); see its --help.
"""

from ui.launch import main

if __name__ == "__main__":
    raise SystemExit(main())
