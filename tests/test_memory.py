"""The update's memory budget: pass size and checkpointing from free memory, and the out-of-memory retry."""
import pytest
import torch

from papa_core.errors import PapaError
from papa_core.lora import states_equal
from papa_core.memory import DEFAULT_PAIRS_PER_PASS, NoProbe, PassSizer
from papa_core.objective import ObjectiveConfig
from papa_core.session import SessionStore
from papa_core.update import UpdateConfig, update

GiB = 2**30


class FakeProbe:
    """A GPU with ``free`` bytes available, ``base`` in use, and a pass that adds ``per_pair`` per pair."""

    def __init__(self, free, base=2 * GiB, per_pair=GiB):
        self.free, self.base, self.per_pair = free, base, per_pair
        self.pairs = 0
        self.released = 0

    def free_bytes(self):
        return self.free

    def reset_peak(self):
        return self.base

    def peak_bytes(self):
        return self.base + self.per_pair * self.pairs

    def release(self):
        self.released += 1


@pytest.mark.parametrize("mode, free, pairs, checkpointing", [
    ("low VRAM", 10 * GiB, 1, True),
    ("fast", 10 * GiB, 64, False),
    ("auto", None, DEFAULT_PAIRS_PER_PASS, False),  # CPU: nothing to measure
    ("auto", 10 * GiB, 1, False),  # GPU: the first pass measures
])
def test_each_mode_starts_where_it_should(mode, free, pairs, checkpointing):
    probe = FakeProbe(free) if free else NoProbe()
    s = PassSizer.start(mode, probe, max_pairs=64)
    assert (s.pairs, s.checkpointing) == (pairs, checkpointing)


@pytest.mark.parametrize("free_gib, per_pair_gib, expected", [(10, 1, 8), (6, 1, 5), (0.5, 1, 1), (80, 0.25, 64),
                                                              (80, 1, 64), (12, 0.5, 20)])
def test_auto_sizes_the_pass_from_the_first_measured_pass(free_gib, per_pair_gib, expected):
    probe = FakeProbe(int(free_gib * GiB), per_pair=int(per_pair_gib * GiB))
    s = PassSizer.start("auto", probe, max_pairs=64)
    probe.pairs = s.pairs
    s.before_step()
    s.after_step()
    assert s.pairs == expected == min(64, max(1, int(0.85 * free_gib / per_pair_gib)))
    assert s.peak_bytes == probe.base + probe.per_pair and "per pair" in s.notes[0]


def test_out_of_memory_halves_the_pass_then_checkpoints_then_says_what_to_do():
    probe = FakeProbe(GiB)
    s = PassSizer.start("fast", probe, max_pairs=8)
    seen = []
    for _ in range(4):
        s.shrink("CUDA out of memory")
        seen.append((s.pairs, s.checkpointing))
    assert seen == [(4, False), (2, False), (1, False), (1, True)]
    with pytest.raises(PapaError, match="even with one pair per pass"):
        s.shrink("CUDA out of memory")
    assert probe.released == 5 and s.oom_retries == 5


def test_bad_mode_or_pass_size_is_refused():
    with pytest.raises(PapaError, match="memory mode must be one of"):
        PassSizer.start("turbo", NoProbe(), 8)
    with pytest.raises(PapaError, match="pairs per pass"):
        PassSizer.start("auto", NoProbe(), 0)


class OomAbove:
    """Wraps a denoiser: a forward pass of more than ``limit`` pairs raises torch's OutOfMemoryError."""

    def __init__(self, inner, limit):
        self.inner, self.limit, self.failures = inner, limit, 0

    def eps(self, x_t, t, cond, lora=True):
        if x_t.shape[0] > self.limit:
            self.failures += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return self.inner.eps(x_t, t, cond, lora)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _session(tmp_path, d, name):
    store = SessionStore(tmp_path)
    s = store.create(name, d.fingerprint, d.lora_config, d.get_lora_state())
    s.add_round(torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)).clamp(-1, 1), {}, list(range(4)))
    s.record_feedback([1, -1, 1, -1])
    return s


CFG = UpdateConfig(objective=ObjectiveConfig(timesteps_per_image=4, max_batch=16), steps=2, lr=1e-2, autocast="none")


def test_an_update_that_runs_out_of_memory_retries_smaller_and_gives_the_same_lora(tmp_path, tiny_denoiser):
    s = _session(tmp_path, tiny_denoiser, "oom")
    flaky = OomAbove(tiny_denoiser, limit=4)
    stats = update(s, flaky, CFG, memory=PassSizer.start("fast", NoProbe(), 16))
    assert flaky.failures >= 2 and stats.oom_retries == flaky.failures and stats.pairs_per_pass == 4
    assert "out of memory: retried with 4 pairs per pass" in stats.memory_notes
    assert s.update_count == 1
    # the same update with passes of 4 from the start: the same LoRA (the pass size changes no result)
    tiny_denoiser.set_lora_state(s.initial_lora)
    ref = _session(tmp_path, tiny_denoiser, "ref")
    from dataclasses import replace

    update(ref, tiny_denoiser, replace(CFG, objective=replace(CFG.objective, max_batch=4)))
    assert all(torch.allclose(s.lora_state[k], ref.lora_state[k], atol=1e-6) for k in s.lora_state)
    assert not states_equal(s.lora_state, s.initial_lora)


def test_an_update_that_cannot_fit_leaves_the_session_and_the_round_as_they_were(tmp_path, tiny_denoiser):
    s = _session(tmp_path, tiny_denoiser, "nofit")
    before, version = {k: v.clone() for k, v in s.lora_state.items()}, s.version
    with pytest.raises(PapaError, match="out of memory even with one pair"):
        update(s, OomAbove(tiny_denoiser, limit=0), CFG, memory=PassSizer.start("auto", NoProbe(), 16))
    assert states_equal(s.lora_state, before) and s.version == version
    assert s.untrained_rounds() == [s.rounds[0]] and s.rounds[0].feedback == [1, -1, 1, -1]
    assert states_equal(tiny_denoiser.get_lora_state(), before)
