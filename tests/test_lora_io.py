"""Export in kohya naming; diffusers' own loader reproduces the session's ε."""
import pytest
import torch
from safetensors import safe_open

from papa_core.denoiser import DiffusersDenoiser
from papa_core.errors import LoraFileError, SessionMismatch
from papa_core.lora import LoraConfig, states_equal
from papa_core.lora_io import export_lora, import_lora

from papa_testkit.models import randomize_lora, tiny_sd_unet


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


@pytest.mark.parametrize("base, prediction, version, v2, arch, impl, reso, ptype", [
    ("sd15", None, "sd_v1", "False", "stable-diffusion-v1/lora", "diffusers", "512x512", "epsilon"),
    ("sd21", "eps", "sd_v2", "True", "stable-diffusion-v2-512/lora", "diffusers", "512x512", "epsilon"),
    ("sd21", "v", "sd_v2_v", "True", "stable-diffusion-v2-768-v/lora", "diffusers", "768x768", "v"),
    ("sdxl", "eps", "sdxl_base_v1-0", "False", "stable-diffusion-xl-v1-base/lora",
     "https://github.com/Stability-AI/generative-models", "1024x1024", "epsilon"),
])
def test_metadata_names_the_base_as_kohya_and_the_model_spec_do(tmp_path, base, prediction, version, v2, arch, impl,
                                                                   reso, ptype):
    cfg = LoraConfig(rank=2, alpha=2.0)
    state = {"a.to_q.lora_down.weight": torch.zeros(2, 4), "a.to_q.lora_up.weight": torch.zeros(4, 2)}
    path = export_lora(tmp_path / "m.safetensors", state, cfg, base_model=base, prediction=prediction)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert (meta["ss_base_model_version"], meta["ss_v2"], meta["modelspec.architecture"]) == (version, v2, arch)
    assert (meta["modelspec.implementation"], meta["modelspec.resolution"]) == (impl, reso)
    assert meta["modelspec.prediction_type"] == ptype


def test_an_sd2_lora_of_unknown_prediction_claims_no_architecture(tmp_path):
    cfg = LoraConfig(rank=2, alpha=2.0)
    state = {"a.to_q.lora_down.weight": torch.zeros(2, 4), "a.to_q.lora_up.weight": torch.zeros(4, 2)}
    with safe_open(str(export_lora(tmp_path / "u.safetensors", state, cfg, base_model="sd21")), "pt") as f:
        meta = f.metadata()
    assert "modelspec.architecture" not in meta and "ss_base_model_version" not in meta
