import pytest
import torch

from sharp_utils import scores
from sharp_utils.gaussian import random_covariance
from sharp_utils.scores import GaussianVPModel


def linear_alphas(T=1000):
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, T, dtype=torch.float64) ** 2  # SD's scaled_linear
    return torch.cumprod(1 - betas, 0)


@pytest.mark.parametrize("ptype", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("t", [1, 500, 981])
def test_output_to_score_matches_closed_form_gaussian(ptype, t, gen):
    d = 4
    mu = torch.randn(d, dtype=torch.float64, generator=gen)
    S = random_covariance(d, generator=gen)
    model = GaussianVPModel({None: (mu, S)}, linear_alphas(), prediction_type=ptype)
    x = torch.randn(5, d, dtype=torch.float64, generator=gen)
    a = model.alpha_bar(t)
    C = a * S + (1 - a) * torch.eye(d, dtype=torch.float64)
    exact = -(x - a.sqrt() * mu) @ torch.linalg.inv(C)  # C symmetric
    torch.testing.assert_close(model.score(x, t), exact, rtol=1e-9, atol=1e-9)
    # the raw output converts back to the same ε for every parameterisation
    eps_exact = -torch.sqrt(1 - a) * exact
    torch.testing.assert_close(scores.output_to_eps(model.model_output(x, t), x, a, ptype), eps_exact)


def test_tweedie_x0_and_v_definitions(gen):
    # Independent of the code under test: Tweedie's formula E[x0|xt] = (xt + (1-a) s)/sqrt(a)
    d = 3
    mu = torch.randn(d, dtype=torch.float64, generator=gen)
    S = random_covariance(d, generator=gen)
    al = linear_alphas()
    t = 300
    a = al[t]
    x = torch.randn(4, d, dtype=torch.float64, generator=gen)
    s = GaussianVPModel({None: (mu, S)}, al).score(x, t)
    x0 = (x + (1 - a) * s) / a.sqrt()
    eps = -torch.sqrt(1 - a) * s
    v = a.sqrt() * eps - torch.sqrt(1 - a) * x0
    torch.testing.assert_close(scores.output_to_score(x0, x, a, "sample"), s)
    torch.testing.assert_close(scores.output_to_score(v, x, a, "v_prediction"), s)
    torch.testing.assert_close(scores.score_to_eps(s, a), eps)


def test_per_sample_alpha_bar_broadcasts():
    eps = torch.ones(3, 2, 2)
    a = torch.tensor([0.1, 0.5, 0.9])
    s = scores.eps_to_score(eps, a)
    for i in range(3):
        torch.testing.assert_close(s[i], -torch.ones(2, 2) / torch.sqrt(1 - a[i]))


def test_cfg_and_delta():
    c, u = torch.tensor([3.0, 1.0]), torch.tensor([1.0, 1.0])
    torch.testing.assert_close(scores.cfg_combine(c, u, 1.0), c)
    torch.testing.assert_close(scores.cfg_combine(c, u, 0.0), u)
    torch.testing.assert_close(scores.cfg_combine(c, u, 7.5), torch.tensor([16.0, 1.0]))
    torch.testing.assert_close(scores.score_delta(c, u), torch.tensor([2.0, 0.0]))


def test_unknown_prediction_type_names_the_choices():
    with pytest.raises(ValueError, match="epsilon"):
        scores.output_to_eps(torch.zeros(1, 2), torch.zeros(1, 2), 0.5, "flow")


def test_delta_fn_is_conditional_minus_unconditional(gen):
    d = 3
    al = linear_alphas()
    m = GaussianVPModel(
        {None: (torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64)),
         "c": (torch.ones(d, dtype=torch.float64), 0.1 * torch.eye(d, dtype=torch.float64))}, al)
    x = torch.randn(2, d, dtype=torch.float64, generator=gen)
    torch.testing.assert_close(m.delta_fn(700, "c")(x), m.score(x, 700, "c") - m.score(x, 700))
    torch.testing.assert_close(m.delta_fn(700, "c", space="eps")(x), m.eps(x, 700, "c") - m.eps(x, 700))
