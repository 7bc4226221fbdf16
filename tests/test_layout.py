"""papa_core stays host-agnostic: no ComfyUI imports anywhere in it."""
import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "papa_core"
HOST_MODULES = {"comfy", "comfy_extras", "comfy_api", "comfy_execution", "folder_paths", "server", "nodes",
                "execution", "latent_preview", "node_helpers"}


def test_core_imports_no_host_module():
    offenders = []
    for path in CORE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in HOST_MODULES]
    assert not offenders, offenders
    assert len(list(CORE.rglob("*.py"))) >= 8  # the scan saw the package


def test_every_example_workflow_has_its_template_thumbnail():
    """ComfyUI's template browser shows ``example_workflows/<name>.jpg`` beside ``<name>.json``."""
    from PIL import Image

    folder = CORE.parent / "example_workflows"
    workflows = sorted(folder.glob("*.json"))
    assert workflows
    for wf in workflows:
        with Image.open(wf.with_suffix(".jpg")) as im:
            assert im.format == "JPEG" and im.size[0] >= 256
