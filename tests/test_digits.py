"""The embedded default: committed models meet their bar, and a short online loop aligns."""
import json
import re
import pytest
from pathlib import Path

from papa_core.digits.data import digits_16, split_indices
from papa_core.digits.metrics import batch_quality, classify
from papa_core.digits.models import load_classifier

ROOT = Path(__file__).resolve().parents[1]


def test_classifier_held_out_accuracy():
    x, y = digits_16()
    _, te = split_indices(len(x))
    pred, _ = classify(load_classifier(), x[te])
    assert float((pred == y[te]).float().mean()) >= 0.97


def test_real_digits_pass_the_quality_bar():
    x, _ = digits_16()
    q = batch_quality(load_classifier(), x[:300])
    assert q.confident_share > 0.95
    assert q.nearest_real == 0.0  # they are their own nearest neighbours


def test_short_online_loop_aligns(tmp_path):
    """5 rounds of 10 labels with the default preset lift the preferred fraction on a fixed batch.

    Margin: in the benchmark of the default (k = 200, docs/benchmarks.md §7.18, 9 seeds, same evaluation
    size, one thread) it rose by 0.21–0.55 after 5 rounds (seed 0, this test's: 0.375), confident moved
    by −0.16 to +0.03 (seed 0: +0.02), nearest-real −11 % to +50 % (seed 0: −4 %): seed 0 holds the issue's
    guard, seeds 3 and 8 do not at round 5 (§7.18). 0.2, 0.1 and +15 % are asked.
    """
    from papa_core.digits.loop import LoopConfig, run_loop
    from papa_core.session import SessionStore

    cfg = LoopConfig(rounds=5, eval_size=128, eval_rounds=(5,), seed=0)
    history, session, _ = run_loop(cfg, SessionStore(tmp_path), "t")
    base, final = history[0], history[-1]
    assert session.label_count == 50 and final.round == 5
    assert final.preferred - base.preferred >= 0.2, (base.preferred, final.preferred)
    assert final.confident >= base.confident - 0.1  # quality guard: still recognisable digits
    assert final.nearest_real <= base.nearest_real * 1.15


def test_short_online_loop_aligns_the_bold_strokes_task(tmp_path):
    """The fine-grained task: 2 rounds of 10 labels lift the share of heavy-stroke samples, with the
    preset a person picks for a look (``style``; the demo's for ``--task bold``).

    Margin: in the benchmark with the LoRA at every step (docs/benchmarks.md §7.17, 6 seeds, same
    evaluation size, one thread) ``style`` rose by 0.61–0.70 at round 2 from a base of 0.305 (seed 0,
    this test's: 0.70), nearest-real +12 % to +25 % (seed 0: +25 %), confident down by at most 0.055;
    0.4, 0.1 and +40 % are asked. The default swings on this task (§7.4; at round 2, with the step's
    cap at 2, it rose by 0.15–0.70 over the same seeds), so it is not what this test holds.
    """
    from papa_core.digits.loop import LoopConfig, run_loop
    from papa_core.session import SessionStore

    cfg = LoopConfig(rounds=2, eval_size=128, eval_rounds=(2,), seed=0, task="bold", preset="style")
    history, _, _ = run_loop(cfg, SessionStore(tmp_path), "t")
    base, final = history[0], history[-1]
    assert final.preferred - base.preferred >= 0.4, (base.preferred, final.preferred)
    assert final.confident >= base.confident - 0.1
    assert final.nearest_real <= base.nearest_real * 1.4


def test_loop_samples_with_the_lora_at_every_step_as_the_hosts_do():
    """A LoRA file acts at every denoising step in ComfyUI, Forge and diffusers alike, so the loop's
    images (demo, benchmarks) do too; the paper's EPAPA sampler (θ* below k) only when asked for."""
    import torch
    from papa_core.digits.loop import DigitsWorld, LoopConfig
    from papa_core.sampling import sample
    from papa_testkit.models import randomize_lora

    noise = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    worlds = [DigitsWorld(LoopConfig(eval_size=2, sampling_steps=10, base_below_k=b)) for b in (False, True)]
    for w in worlds:
        randomize_lora(w.denoiser, scale=0.2)
    d = worlds[0].denoiser
    every = sample(lambda x, t: d.eps(x, t, {}, lora=True), worlds[0].schedule, noise, num_steps=10, eta=0.0)
    assert torch.equal(worlds[0].generate(noise), every)
    k = worlds[1].update_config.objective.k
    assert k > 0 and not torch.allclose(worlds[1].generate(noise), every, atol=1e-4)


def test_demo_command_writes_everything(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "papa_core", "demo", "--rounds", "1", "--eval-size", "8",
                           "--final-eval", "20", "--out", str(out)], capture_output=True, text=True, cwd=str(ROOT),
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"preferred (\d+)% -> (\d+)% after 10 labels", last)
    assert m, last
    # the last line's figures are the fresh-sample evaluation's (at most --final-eval samples), not the fixed batch's
    final_eval = json.loads((out / "history.json").read_text())["final_eval"]
    assert 0 < final_eval["base_samples"] <= 20 and 0 < final_eval["final_samples"] <= 20
    assert (int(m.group(1)), int(m.group(2))) == (round(100 * final_eval["base"]), round(100 * final_eval["final"]))
    assert (out / "round_001.png").exists() and (out / "alignment.png").exists()
    assert (out / "papa_digits_classes.safetensors").exists()
    assert (out / "sessions" / "demo-classes-0" / "session.json").exists()


def test_demo_with_selection_shows_the_picked_candidates_only(tmp_path):
    """``demo --select``: each round samples a pool and records only the images shown (their own seeds)."""
    import subprocess
    import sys

    from papa_core.session import SessionStore

    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "papa_core", "demo", "--rounds", "2", "--eval-size", "8", "--final-eval", "16", "--batch-size",
                           "4", "--select", "--pool", "12", "--out", str(out)], capture_output=True, text=True,
                          cwd=str(ROOT), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.fullmatch(r"preferred \d+% -> \d+% after 8 labels", proc.stdout.strip().splitlines()[-1])
    s = SessionStore(out / "sessions").get("demo-classes-0")
    for r, rnd in enumerate(s.rounds):
        pool_seeds = set(range(r * 1000, r * 1000 + 12))  # the loop's seeds of round r (demo seed 0)
        assert rnd.batch_size == 4 and len(set(rnd.seeds)) == 4 and set(rnd.seeds) <= pool_seeds


def test_loop_refuses_a_session_of_another_model_and_says_which_folder(tmp_path):
    """A demo folder left by another digits model is not overwritten; the error names it and --out."""
    import pytest

    from papa_core.digits.loop import DigitsWorld, LoopConfig, run_loop
    from papa_core.errors import SessionMismatch
    from papa_core.session import SessionStore

    cfg = LoopConfig(rounds=1, eval_size=4)
    world = DigitsWorld(cfg)
    store = SessionStore(tmp_path)
    d = world.denoiser
    store.create("old", "another-model", d.lora_config, d.get_lora_state())
    before = (tmp_path / "old" / "session.json").read_bytes()
    with pytest.raises(SessionMismatch, match=r"(?s)another-model.*delete it.*--out"):
        run_loop(cfg, store, "old", world=world)
    assert (tmp_path / "old" / "session.json").read_bytes() == before


def test_loop_with_a_pairwise_preset_keeps_a_round_without_pairs_for_the_next_update(tmp_path):
    """All 👍 in round 1: the dpo preset has no pair, the round waits (untrained, nothing lost) and round
    2's update, which brings a 👎, trains on both."""
    from papa_core.digits.loop import LoopConfig, run_loop
    from papa_core.session import SessionStore

    answers = {0: [1.0] * 4, 1: [1.0, -1.0, 0.0, 1.0]}
    cfg = LoopConfig(rounds=2, batch_size=4, eval_size=4, preset="dpo", eval_rounds=())
    _, session, _ = run_loop(cfg, SessionStore(tmp_path), "pairs", feedback_fn=lambda imgs, r: answers[r])
    first, second = session.rounds
    assert first.update is not None and first.update["update_id"] == second.update["update_id"]  # one update, both
    assert first.update["images"] == 7 and first.update["objective"] == "dpo"
    assert not session.untrained_rounds()


def test_demo_rejects_bad_arguments(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "papa_core", "demo", "--rounds", "0", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=str(ROOT), timeout=120)
    assert proc.returncode == 2 and "at least 1" in proc.stderr


def test_demo_interactive_reasks_on_bad_input_and_ends_cleanly_when_the_input_ends(tmp_path):
    """--interactive, 2 rounds, input for round 1 only (a wrong count first: asked again): round 1 is kept
    with its answers; at round 2 the closed input gives a clear message and exit 1, and the base model's
    measurement (1024 samples: over a minute on one thread) is stopped, neither waited for nor left
    sampling while the interpreter shuts down."""
    import subprocess
    import sys
    import time

    from papa_core.session import SessionStore

    answers = "+ -\n" + "+ - 0 + - 0 + - 0 +\n"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "papa_core", "demo", "--interactive", "--rounds", "2", "--eval-size",
                           "8", "--out", str(tmp_path)], input=answers, capture_output=True, text=True, cwd=str(ROOT),
                          timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "2 feedback symbols for a batch of 10" in proc.stdout and (tmp_path / "round_001_to_rate.png").exists()
    assert "the input ended before the last round" in proc.stderr
    assert "Traceback" not in proc.stderr and "terminate called" not in proc.stderr
    assert time.perf_counter() - t0 < 60  # the base's 1024 samples alone take longer
    rounds = SessionStore(tmp_path / "sessions").get("demo-classes-0").rounds
    assert len(rounds) == 1 and rounds[0].feedback == [1.0, -1.0, 0.0, 1.0, -1.0, 0.0, 1.0, -1.0, 0.0, 1.0]


def _bold_person():
    import torch

    from papa_core.digits.metrics import ink_mass
    from papa_core.digits.user import BoldPreference

    x, _ = digits_16()
    x = x[:400]
    return BoldPreference(threshold=float(ink_mass(x).quantile(0.5))), x, torch


def test_simulated_person_flips_the_asked_share_of_answers_and_only_those():
    from papa_core.digits.user import Answering, binary_feedback

    pref, x, torch = _bold_person()
    truth = binary_feedback(pref, x)
    noisy = binary_feedback(pref, x, Answering(flip=0.1), torch.Generator().manual_seed(0))
    again = binary_feedback(pref, x, Answering(flip=0.1), torch.Generator().manual_seed(0))
    flipped = sum(a != b for a, b in zip(truth, noisy))
    assert noisy == again  # deterministic for a generator
    assert all(b == -a for a, b in zip(truth, noisy) if a != b)
    assert 0.06 * len(x) <= flipped <= 0.14 * len(x)  # binomial(400, 0.1): sd 6, so ±4 sd


def test_simulated_person_skips_the_images_it_is_unsure_of():
    from papa_core.digits.user import Answering, binary_feedback

    pref, x, torch = _bold_person()
    truth = binary_feedback(pref, x)
    score = pref.score(x)
    answers = binary_feedback(pref, x, Answering(skip_margin=0.3))
    unsure = (score.abs() < 0.3).tolist()
    assert 0 < sum(unsure) < len(x)
    assert all((a == 0) == u for a, u in zip(answers, unsure))
    assert all(a == t for a, t, u in zip(answers, truth, unsure) if not u)


def test_simulated_person_rejects_impossible_noise():
    import pytest

    from papa_core.digits.user import Answering

    for bad in ({"flip": 0.6}, {"flip": -0.1}, {"skip_margin": 1.0}):
        with pytest.raises(ValueError):
            Answering(**bad)


def test_preferred_share_draws_until_its_interval_is_within_the_bound():
    """The demo's last-line figures: sampling stops once 1.96·√(p(1−p)/n) ≤ half_width, or at the cap."""
    import math

    import torch

    from papa_core.digits.loop import DigitsWorld, LoopConfig

    world = DigitsWorld(LoopConfig(eval_size=8, sampling_steps=4))
    world.preference.liked = lambda imgs: torch.arange(len(imgs)) % 10 == 0  # p = 0.1 exactly per chunk of 10
    p, n = world.preferred_share(half_width=0.05, max_samples=1000, chunk=10)
    assert p == pytest.approx(0.1) and 1.96 * math.sqrt(0.09 / n) <= 0.05 < 1.96 * math.sqrt(0.09 / (n - 10))
    p, n = world.preferred_share(half_width=0.001, max_samples=50, chunk=20)
    assert n == 50  # the cap wins


def test_the_base_measured_in_another_thread_is_the_base_while_the_rounds_train():
    """The demo measures the base model's share on a copy, in a thread, while the rounds change the LoRA:
    the copy's samples are the base model's and nothing the rounds do reaches them."""
    import torch

    from papa_core.demo import InBackground
    from papa_core.digits.loop import DigitsWorld, LoopConfig

    world = DigitsWorld(LoopConfig(eval_size=8, sampling_steps=4))
    noise = torch.randn((6, 1, 16, 16), generator=torch.Generator().manual_seed(3))
    base = world.generate(noise, lora=False)
    copy = world.base_copy()
    with torch.no_grad():
        for p in world.denoiser.lora_parameters():  # as an update would, after the copy was taken
            p.add_(0.05)
    assert not torch.equal(world.generate(noise), base)
    with InBackground(lambda stop: copy.generate(noise, lora=False, stop=stop)) as task:
        assert torch.equal(task.result(), base)
    assert torch.equal(copy.generate(noise), base)  # the copy's LoRA is the one at the copy (zero up-weights)

    def fails(stop):
        raise RuntimeError("out of memory")
    with InBackground(fails) as task, pytest.raises(RuntimeError, match="out of memory"):
        task.result()


def test_leaving_the_block_stops_the_background_sampling_within_a_step():
    """An error or a Ctrl-C in the demo's rounds must not leave the base thread sampling (the interpreter
    would shut down under it): leaving the block stops it at the next sampling step."""
    import time

    import torch

    from papa_core.demo import InBackground
    from papa_core.digits.loop import DigitsWorld, LoopConfig, Stopped

    world = DigitsWorld(LoopConfig(eval_size=8, sampling_steps=1000))  # ~ a minute of sampling
    noise = torch.randn((64, 1, 16, 16))
    with pytest.raises(KeyboardInterrupt):
        with InBackground(lambda stop: world.generate(noise, stop=stop)) as task:
            time.sleep(0.5)
            t0 = time.perf_counter()
            raise KeyboardInterrupt
    assert time.perf_counter() - t0 < 5 and not task._thread.is_alive()
    with pytest.raises(Stopped):
        task.result()
