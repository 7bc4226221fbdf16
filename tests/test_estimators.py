"""Each estimator is unbiased for Σ_{t∈S} w_t g(t); importance sampling is the low-variance one."""
import pytest
import torch

from papa_core import estimators
from papa_core.errors import PapaError

N_DRAWS = 4000


def _g(T: int) -> torch.Tensor:
    """A fixed, realistic error profile: larger error at high noise, a bump in the middle."""
    t = torch.arange(T, dtype=torch.float64)
    return 0.05 + 0.3 * t / T + 0.1 * torch.exp(-((t - T / 3) / (T / 10)) ** 2)


@pytest.mark.parametrize("name", ["uniform", "importance", "importance_stratified"])
@pytest.mark.parametrize("k", [0, 400])
def test_unbiased(schedule, name, k):
    w = schedule.elbo_weights()
    g = _g(len(w))
    exact = float((w[k:] * g[k:]).sum())
    gen = torch.Generator().manual_seed(0)
    vals = torch.tensor([float((d.coef * g[d.t]).sum()) for d in
                         (estimators.draw(name, w, k, 16, gen) for _ in range(N_DRAWS))])
    se = float(vals.std()) / N_DRAWS**0.5
    # 4.5 standard errors: a false failure has probability < 1e-5.
    assert abs(float(vals.mean()) - exact) < 4.5 * se + 1e-12, (name, float(vals.mean()), exact, se)
    assert all(int(d) >= k for d in estimators.draw(name, w, k, 16, gen).t)


def test_exact_is_the_sum(schedule):
    w = schedule.elbo_weights()
    d = estimators.draw("exact", w, 0, 1)
    assert len(d.t) == 1000 and torch.equal(d.coef, w)


def test_importance_beats_uniform(schedule):
    """With ε-prediction the error is largest at low noise, where w_t is largest too."""
    w = schedule.elbo_weights()
    g = 0.02 + 0.5 * torch.exp(-torch.arange(len(w), dtype=torch.float64) / 50)
    gen = torch.Generator().manual_seed(1)
    var = {}
    for name in ("uniform", "importance", "importance_stratified"):
        vals = torch.tensor([float((d.coef * g[d.t]).sum()) for d in
                             (estimators.draw(name, w, 0, 32, gen) for _ in range(2000))])
        var[name] = float(vals.var())
    assert var["importance"] < var["uniform"] / 5
    assert var["importance_stratified"] < var["importance"]


def test_bad_arguments(schedule):
    w = schedule.elbo_weights()
    with pytest.raises(PapaError, match="unknown timestep estimator"):
        estimators.draw("nope", w, 0, 4)
    with pytest.raises(PapaError, match="k must be"):
        estimators.draw("uniform", w, 1000, 4)
    with pytest.raises(PapaError, match="positive integer"):
        estimators.draw("uniform", w, 0, 0)
