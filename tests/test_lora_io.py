"""Export in kohya naming; diffusers' own loader reproduces the session's ε."""
import pytest
import torch
from safetensors import safe_open

from papa_core.denoiser import DiffusersDenoiser
from papa_core.errors import LoraFileError, SessionMismatch
from papa_core.lora import LoraConfig, states_equal
from papa_core.lora_io import export_lora, import_lora

from conftest import randomize_lora, tiny_sd_unet


@pytest.mark.parametrize("targets", ["attention", "attention+conv"])
def test_export_matches_diffusers_load_lora_weights(tmp_path, small_schedule, targets):
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    cfg = LoraConfig(rank=4, alpha=2.0, targets=targets)
    d = DiffusersDenoiser(tiny_sd_unet(seed=5), small_schedule, cfg)
    randomize_lora(d, scale=0.2)
    path = export_lora(tmp_path / "papa.safetensors", d.get_lora_state(), cfg, base_model="sd15",
                       papa_metadata={"rounds": 3, "labels": 30, "algorithm": "PAPA", "hyperparameters": {"lr": 1e-3}})
    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
        meta = f.metadata()
    assert all(k.startswith("lora_unet_") for k in keys)
    assert not any("lora_A" in k or "lora_B" in k for k in keys)
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2.0"
    assert meta["ss_base_model_version"] == "sd_v1" and meta["papa_rounds"] == "3" and meta["papa_labels"] == "30"
    if targets == "attention+conv":
        with safe_open(str(path), "pt") as f:
            k = next(k for k in keys if "proj_in" in k and k.endswith("lora_down.weight"))
            assert f.get_tensor(k).ndim == 4  # 1×1-conv LoRA stays 4-D

    plain = tiny_sd_unet(seed=5)
    sd, alphas = StableDiffusionLoraLoaderMixin.lora_state_dict(str(path))
    StableDiffusionLoraLoaderMixin.load_lora_into_unet(sd, alphas, plain)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([3, 40])
    ctx = torch.randn(2, 7, 32)
    with torch.no_grad():
        ours = d.eps(x, t, {"encoder_hidden_states": ctx})
        theirs = plain(x, t, encoder_hidden_states=ctx).sample
        base = d.eps(x, t, {"encoder_hidden_states": ctx}, lora=False)
    assert (ours - base).abs().max() > 1e-3  # the LoRA does something
    assert (ours - theirs).abs().max() < 1e-4


def test_import_restores_state_and_rescales_alpha(tmp_path, small_schedule):
    cfg = LoraConfig(rank=4, alpha=4.0, targets="attention")
    d = DiffusersDenoiser(tiny_sd_unet(), small_schedule, cfg)
    randomize_lora(d)
    path = export_lora(tmp_path / "a.safetensors", d.get_lora_state(), cfg)
    back = import_lora(path, d.module_names(), cfg)
    assert states_equal(back, d.get_lora_state())
    # same ΔW under another alpha
    other = LoraConfig(rank=4, alpha=2.0, targets="attention")
    rescaled = import_lora(path, d.module_names(), other)
    k = next(k for k in rescaled if k.endswith("lora_up.weight"))
    assert torch.allclose(rescaled[k] * other.scale, back[k] * cfg.scale)


def test_import_refuses_foreign_files(tmp_path, small_schedule):
    cfg = LoraConfig(rank=4, alpha=4.0)
    d = DiffusersDenoiser(tiny_sd_unet(), small_schedule, cfg)
    path = export_lora(tmp_path / "a.safetensors", d.get_lora_state(), cfg)
    with pytest.raises(SessionMismatch, match="rank 4"):
        import_lora(path, d.module_names(), LoraConfig(rank=8, alpha=4.0))
    with pytest.raises(SessionMismatch, match="does not fit"):
        import_lora(path, d.module_names()[:-1], cfg)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00\x01not a safetensors file")
    with pytest.raises(LoraFileError, match="not a readable safetensors"):
        import_lora(tmp_path / "junk.safetensors", d.module_names(), cfg)
    with pytest.raises(LoraFileError, match="does not exist"):
        import_lora(tmp_path / "missing.safetensors", d.module_names(), cfg)
    with pytest.raises(LoraFileError, match=".safetensors"):
        export_lora(tmp_path / "x.ckpt", d.get_lora_state(), cfg)


def test_import_into_a_session_survives_restart(tmp_path, small_schedule):
    from papa_core.session import SessionStore

    cfg = LoraConfig(rank=4, alpha=4.0, targets="attention")
    d = DiffusersDenoiser(tiny_sd_unet(), small_schedule, cfg)
    store = SessionStore(tmp_path / "s")
    s = store.create("imp", d.fingerprint, cfg, d.get_lora_state())
    randomize_lora(d)
    path = export_lora(tmp_path / "a.safetensors", d.get_lora_state(), cfg)
    s.set_lora(import_lora(path, d.module_names(), cfg))
    store.save(s)
    assert states_equal(SessionStore(tmp_path / "s").get("imp").lora_state, d.get_lora_state())
    with pytest.raises(SessionMismatch):
        s.set_lora({"x.lora_down.weight": torch.zeros(1)})
