"""Active queries (papa_core.selection): the right number of distinct candidates, reproducible, and each
strategy doing what it claims on pools built to show it."""
import pytest
import torch

from papa_core.errors import PapaError
from papa_core.selection import STRATEGIES, features, select


def clustered_pool(clusters: int = 4, copies: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``clusters`` distinct latents, each repeated ``copies`` times with a little noise → (pool, cluster id)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, 4, 8, 8, generator=g) * 3
    ids = torch.arange(clusters).repeat_interleave(copies)
    return centres[ids] + 0.01 * torch.randn(len(ids), 4, 8, 8, generator=g), ids


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_returns_k_distinct_candidates_reproducibly(strategy):
    pool, _ = clustered_pool()
    labelled, answers = pool[:3] + 0.5, torch.tensor([1.0, -1.0, 0.0])
    picks = [select(pool, 5, strategy, torch.Generator().manual_seed(7), labelled, answers) for _ in range(2)]
    assert picks[0] == picks[1]
    assert len(picks[0]) == 5 and len(set(picks[0])) == 5 and all(0 <= i < len(pool) for i in picks[0])
    assert sorted(select(pool, len(pool), strategy, torch.Generator().manual_seed(1))) == list(range(len(pool)))


def test_diverse_covers_a_pool_of_near_duplicates_where_random_does_not():
    pool, ids = clustered_pool(clusters=4, copies=6)
    covered = {"random": [], "diverse": []}
    for seed in range(20):
        for strategy in covered:
            picks = select(pool, 4, strategy, torch.Generator().manual_seed(seed))
            covered[strategy].append(len(set(ids[picks].tolist())))
    assert all(c == 4 for c in covered["diverse"])  # one of each distinct image, every time
    assert sum(covered["random"]) / 20 < 3.5  # random asks about the same image twice most of the time


def test_uncertain_asks_about_what_the_answers_so_far_leave_undecided():
    # liked images on one side, disliked on the other; the pool spans the line between them
    direction = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(3))
    labelled = torch.stack([s * direction for s in (-2.0, -1.8, 1.8, 2.0)])
    answers = torch.tensor([-1.0, -1.0, 1.0, 1.0])
    pool = torch.stack([a * direction for a in torch.linspace(-2, 2, 21)])
    picks = select(pool, 3, "uncertain", torch.Generator().manual_seed(0), labelled, answers)
    assert all(abs(float(torch.linspace(-2, 2, 21)[i])) <= 0.6 for i in picks), picks  # the middle of the line
    assert select(pool, 3, "uncertain", torch.Generator().manual_seed(0)) == select(
        pool, 3, "diverse", torch.Generator().manual_seed(0))  # no answers yet: cover the pool


def test_uncertain_from_a_pool_of_twice_the_batch_covers_the_whole_pool():
    # docs/benchmarks.md §7.19: with UNSURE_SHORTLIST × B candidates the shortlist of the most unsure is the
    # pool itself, so the B shown are a farthest-point cover of all of it, started from the most unsure one
    from papa_core.selection import UNSURE_SHORTLIST, farthest_points, predicted_answer
    pool, ids = clustered_pool(clusters=4, copies=UNSURE_SHORTLIST)  # a batch of 4 from a pool of that size
    n = len(pool)
    labelled, answers = pool[[0, 2]] + 0.3, torch.tensor([1.0, -1.0])
    picks = select(pool, 4, "uncertain", torch.Generator().manual_seed(0), labelled, answers)
    f = features(torch.cat([pool, labelled]))
    unsure = int(torch.argmin(predicted_answer(f[:n], f[n:], answers).abs()))
    assert picks == farthest_points(f[:n], 4, unsure) and picks[0] == unsure
    assert len(set(ids[picks].tolist())) == 4  # every distinct image once: the cover, not the four most unsure


def test_features_compare_latents_of_any_size_and_bad_requests_say_what_to_do():
    assert features(torch.randn(5, 4, 64, 64)).shape == (5, 4 * 8 * 8)
    assert features(torch.randn(5, 1, 16, 16)).shape == (5, 64)
    with pytest.raises(PapaError, match="at least the batch"):
        select(torch.randn(3, 1, 8, 8), 4)
    with pytest.raises(PapaError, match="selection must be one of"):
        select(torch.randn(3, 1, 8, 8), 2, "best")


def test_pool_size_defaults_to_a_multiple_of_the_batch_and_refuses_a_pool_below_it():
    from papa_core.selection import POOL_FACTOR, pool_size

    assert pool_size(4) == POOL_FACTOR * 4 and pool_size(4, 6) == 6
    for batch, pool in ((4, 3), (0, None)):
        with pytest.raises(PapaError, match="leave the pool out"):
            pool_size(batch, pool)
