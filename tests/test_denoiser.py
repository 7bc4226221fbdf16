import os
from pathlib import Path

import pytest
import torch

from papa_core.denoiser import DiffusersDenoiser, Denoiser
from papa_core.errors import PapaError
from papa_core.lora import LoraConfig, states_equal

from papa_testkit.models import randomize_lora, tiny_sd_unet, tiny_unet2d


def test_lora_off_is_the_base_model(small_schedule):
    base = tiny_unet2d(seed=3)
    reference = tiny_unet2d(seed=3)
    d = DiffusersDenoiser(base, small_schedule, LoraConfig(rank=2, alpha=2.0, targets="attention+conv"))
    assert isinstance(d, Denoiser)
    randomize_lora(d)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 40])
    with torch.no_grad():
        off = d.eps(x, t, {}, lora=False)
        on = d.eps(x, t, {}, lora=True)
        plain = reference(x, t).sample
    assert torch.allclose(off, plain, atol=1e-6)
    assert (on - off).abs().max() > 1e-3
    # the context manager restores the LoRA afterwards
    with torch.no_grad():
        assert torch.allclose(d.eps(x, t, {}), on)


def test_class_conditional_and_text_conditional(small_schedule):
    d = DiffusersDenoiser(tiny_unet2d(num_class_embeds=10), small_schedule, LoraConfig(rank=2, alpha=2.0))
    out = d.eps(torch.randn(3, 1, 8, 8), torch.tensor([1, 2, 3]), {"class_labels": torch.tensor([0, 5, 9])})
    assert out.shape == (3, 1, 8, 8)
    sd = DiffusersDenoiser(tiny_sd_unet(), small_schedule, LoraConfig(rank=2, alpha=2.0, targets="attention+conv"))
    assert any(m.endswith("proj_in") for m in sd.module_names())
    out = sd.eps(torch.randn(2, 4, 8, 8), torch.tensor([1, 49]), {"encoder_hidden_states": torch.randn(2, 7, 32)})
    assert out.shape == (2, 4, 8, 8)


def test_v_prediction_is_converted_to_eps(small_schedule):
    """A model that predicts v exactly yields the true ε after conversion."""
    d = DiffusersDenoiser(tiny_unet2d(), small_schedule, LoraConfig(rank=2, alpha=2.0), prediction_type="v_prediction")
    x0, eps, t = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8), torch.tensor([5, 30])
    a = small_schedule.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
    v = a.sqrt() * eps - (1 - a).sqrt() * x0

    class Out:
        sample = v

    d.unet.forward = lambda *args, **kw: Out()
    assert torch.allclose(d.eps(xt, t, {}), eps, atol=1e-5)
    with pytest.raises(PapaError, match="prediction_type"):
        DiffusersDenoiser(tiny_unet2d(), small_schedule, LoraConfig(), prediction_type="sample")


def test_fingerprint_tracks_base_weights_not_lora(small_schedule):
    a = DiffusersDenoiser(tiny_unet2d(seed=0), small_schedule, LoraConfig(rank=2, alpha=2.0))
    b = DiffusersDenoiser(tiny_unet2d(seed=0), small_schedule, LoraConfig(rank=2, alpha=2.0))
    c = DiffusersDenoiser(tiny_unet2d(seed=1), small_schedule, LoraConfig(rank=2, alpha=2.0))
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_lora_state_round_trip_and_seeded_init(small_schedule):
    a = DiffusersDenoiser(tiny_unet2d(), small_schedule, LoraConfig(rank=3, alpha=1.5, init_seed=4))
    b = DiffusersDenoiser(tiny_unet2d(), small_schedule, LoraConfig(rank=3, alpha=1.5, init_seed=4))
    assert states_equal(a.get_lora_state(), b.get_lora_state())
    randomize_lora(a)
    b.set_lora_state(a.get_lora_state())
    assert states_equal(a.get_lora_state(), b.get_lora_state())
    k = next(iter(a.get_lora_state()))
    bad = a.get_lora_state()
    bad[k] = bad[k][:1]
    with pytest.raises(PapaError, match="shape"):
        b.set_lora_state(bad)


def test_bad_lora_config(small_schedule):
    with pytest.raises(PapaError, match="rank"):
        LoraConfig(rank=0)
    with pytest.raises(PapaError, match="alpha"):
        LoraConfig(alpha=-1)
    with pytest.raises(PapaError, match="match no module"):
        DiffusersDenoiser(tiny_unet2d(), small_schedule, LoraConfig(targets="no_such_layer"))


def test_fingerprint_is_the_same_in_every_process():
    """Sessions resume after a restart only if the base model's fingerprint is reproducible."""
    import subprocess
    import sys

    code = ("from papa_testkit.models import tiny_unet2d\nfrom papa_core.denoiser import model_fingerprint\n"
            "print(model_fingerprint(tiny_unet2d()))")
    root = Path(__file__).resolve().parents[1]
    prints = {subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                             env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout.strip() for seed in (1, 2, 3)}
    assert len(prints) == 1 and len(next(iter(prints))) == 16
