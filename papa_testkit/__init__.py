"""What the tests, benchmarks and scripts share: tiny random-weight models, the pack loaded as ComfyUI
loads it, an isolated session store, HTTP calls to the pack's routes, and a real ComfyUI server.

Imported the ordinary way (``from papa_testkit.models import tiny_unet2d``) with the repository root
on the path: pytest puts it there (``pythonpath`` in pytest.ini), and benchmarks and scripts run
as modules from the root (``python -m benchmarks.alignment``). Not part of the node pack
(``.comfyignore``).
"""
