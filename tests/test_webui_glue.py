"""The webui glue's host-free parts: the training pass through inference-mode weights (gradients equal
plain autograd's, the weights untouched, layers restored), the txt2img request arguments, and the
layout rule that the ComfyUI and webui glue never import each other."""
import ast
from pathlib import Path

import pytest
import torch

from papa_core.errors import PapaError
from papa_core.lora import lora_delta
from papa_webui.forge_denoiser import _forward
from papa_webui.loop import Request

ROOT = Path(__file__).resolve().parents[1]


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.GroupNorm(4, 8), torch.nn.SiLU(),
                               torch.nn.Flatten(2), Transpose(), torch.nn.LayerNorm(8), torch.nn.Linear(8, 5))


class Transpose(torch.nn.Module):
    def forward(self, x):
        return x.transpose(1, 2)


def test_training_through_inference_weights_matches_autograd_and_leaves_them_untouched():
    net = _net()
    x = torch.randn(2, 3, 6, 6)
    down_c, up_c = torch.randn(2, 3, 3, 3) * 0.1, torch.randn(8, 2, 1, 1) * 0.1
    down_l, up_l = torch.randn(2, 8) * 0.1, torch.randn(5, 2) * 0.1
    # reference: plain autograd on normal weights with W + ΔW
    ref = [t.clone().requires_grad_() for t in (down_c, up_c, down_l, up_l)]
    conv, gn, lin = net[0], net[1], net[6]
    h = torch.nn.functional.conv2d(x, conv.weight + lora_delta(ref[0], ref[1], 0.5), conv.bias, padding=1)
    h = net[5](net[4](net[3](net[2](gn(h)))))
    (torch.nn.functional.linear(h, lin.weight + lora_delta(ref[2], ref[3], 0.5), lin.bias) ** 2).sum().backward()
    # the same through _Layer, with every weight an inference tensor (as Forge loads them)
    with torch.inference_mode():
        frozen = _net()
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    ours = [t.clone().requires_grad_() for t in (down_c, up_c, down_l, up_l)]
    lora = {0: (ours[0], ours[1]), 6: (ours[2], ours[3])}
    with pytest.raises(RuntimeError, match="[Ii]nference tensors"):  # what plain autograd does with them
        (frozen[6](frozen[5](frozen[4](frozen[3](frozen[2](frozen[1](frozen[0](x))))))).sum() + ours[0].sum()).backward()
    for i in (0, 1, 5, 6):
        d, u = lora.get(i, (None, None))
        frozen[i].forward = (lambda m, d, u: lambda inp: _forward(m, d, u, 0.5 if d is not None else 0.0, inp))(frozen[i], d, u)
    (frozen(x) ** 2).sum().backward()
    for a, b in zip(ref, ours):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6)
    assert all(torch.equal(v, frozen.state_dict()[k]) for k, v in before.items())


def test_request_arguments_are_checked():
    assert Request.from_args(()) == Request()
    assert Request.from_args((True, "cats", "+ -", True, "gentle", "cats_v1")).strength == "gentle"
    with pytest.raises(PapaError, match="strength must be one of gentle, normal, strong"):
        Request.from_args((True, "cats", "", False, "huge"))
    with pytest.raises(PapaError, match="session name"):
        Request.from_args((True, "../etc"))
    with pytest.raises(PapaError, match="at most 7 arguments"):
        Request.from_args((True,) * 8)
    assert Request.from_args((True, "cats", "", False, "normal", "", "style")).preset == "style"
    assert Request.from_args((True, "cats")).preset == "default"  # a request written before the choice existed
    with pytest.raises(PapaError, match="preset must be one of default, style"):
        Request.from_args((True, "cats", "", False, "normal", "", "dpo"))


def test_the_two_hosts_glue_never_import_each_other():
    def imports(folder: str) -> set[str]:
        found = set()
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom):
                    found.add((node.module or "").split(".")[0] if node.level == 0 else f".{node.module}")
                elif isinstance(node, ast.Import):
                    found.update(a.name.split(".")[0] for a in node.names)
        return found
    webui = imports("papa_webui") | imports("scripts")
    assert not webui & {"comfy", "nodes", "folder_paths", "server", "comfy_extras"}, webui
    comfy = imports("nodes")
    assert not comfy & {"modules", "backend", "modules_forge", "papa_webui", "gradio"}, comfy
    assert [p.name for p in (ROOT / "scripts").glob("*.py")] == ["papa.py"], "webui loads every scripts/*.py"
