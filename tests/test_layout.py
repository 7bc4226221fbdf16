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
    ids = set(re.findall(r'"(PAPA_\w+)"', (root / "nodes" / "protocol.py").read_text(encoding="utf-8")))
    assert len(ids) >= 6
    for node_id in ids:
        page = root / "web" / "docs" / f"{node_id}.md"
        assert page.exists() and page.read_text(encoding="utf-8").startswith("# "), page
    meta = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    icon = meta["tool"]["comfy"]["Icon"].rsplit("/main/", 1)[1]
    assert (root / icon).exists() and (root / meta["project"]["license"]["file"]).exists()
    assert (root / ".comfyignore").exists()


def test_shape_a_newcomer_can_carry_on():
    """The node layer stays thin, papa_core's functions readable at once, and nothing edits sys.path:
    tests, benchmarks and tools import papa_testkit and papa_core the ordinary way."""
    root = CORE.parent
    long_node_files = [(p.name, n) for p in (root / "nodes").glob("*.py")
                       if (n := len(p.read_text(encoding="utf-8").splitlines())) >= 250]
    assert not long_node_files, long_node_files
    long_functions = []
    for path in CORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long_functions.append(f"{path.name}:{node.name}")
    assert not long_functions, long_functions
    path_edits = [str(p.relative_to(root)) for folder in ("papa_core", "nodes", "papa_testkit", "tests", "benchmarks",
                                                          "tools", "scripts", "papa_webui")
                  for p in (root / folder).rglob("*.py") if "sys.path" in p.read_text(encoding="utf-8")
                  and p.name != "test_layout.py"]
    assert not path_edits, path_edits
