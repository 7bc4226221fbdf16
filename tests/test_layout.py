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


def test_pack_conventions_every_node_has_a_help_page_and_the_registry_fields_are_true():
    """web/docs/<node id>.md is what ComfyUI's node-info panel shows; the icon and license that
    pyproject.toml names exist."""
    import re
    import tomllib

    root = CORE.parent
    ids = set(re.findall(r'"(PAPA_\w+)": PAPA\w+,', (root / "nodes" / "papa_nodes.py").read_text(encoding="utf-8")))
    assert len(ids) >= 6
    for node_id in ids:
        page = root / "web" / "docs" / f"{node_id}.md"
        assert page.exists() and page.read_text(encoding="utf-8").startswith("# "), page
    meta = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    icon = meta["tool"]["comfy"]["Icon"].rsplit("/main/", 1)[1]
    assert (root / icon).exists() and (root / meta["project"]["license"]["file"]).exists()
    assert (root / ".comfyignore").exists()
