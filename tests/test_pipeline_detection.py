"""Detection engine on tiny random-weight SD pipelines (ε and v-prediction), loaded through load_pipeline."""
import math

import pytest
import torch

from sharp_utils import metrics
from sharp_utils.detection import METHODS, DetectOptions, detect, run_batched
from sharp_utils.hessian import dense_jacobian
from sharp_utils.pipeline import PipelineLoadError, load_pipeline
from sharp_utils.sampling import prompt_seed
from sharp_utils.sampling import ddim_timesteps
from sharp_utils.scores import v_to_eps
from sharp_utils.tiny_sd import save_tiny_pipeline

PROMPTS = ["the cat", "an apple", "of the and", "zebra", "blue sky"]
OPTS = DetectOptions(num_inference_steps=10)


@pytest.fixture(scope="module", params=["epsilon", "v_prediction"])
def model(request, tmp_path_factory):
    folder = save_tiny_pipeline(tmp_path_factory.mktemp(request.param), request.param)
    return load_pipeline(folder, device="cpu")


@pytest.fixture(scope="module")
def eps_model(tmp_path_factory):
    return load_pipeline(save_tiny_pipeline(tmp_path_factory.mktemp("eps")), device="cpu")


def scores(model, methods, prompts=PROMPTS, batch_size=8, steps=(1, 5), ns=(2,), opts=OPTS):
    return {(r["prompt"], r["method"], r["steps"], r["n"]): r["score"]
            for r in detect(model, prompts, methods, steps, ns, 0, batch_size, opts)}


def test_every_method_runs_with_finite_scores(model):
    s = scores(model, list(METHODS), prompts=PROMPTS[:3], ns=(1, 2))
    got = {k[1] for k in s}
    assert got == set(METHODS)
    assert all(math.isfinite(v) for v in s.values())
    # fixed-step methods report the steps they are defined at
    assert {k[2] for k in s if k[1] in ("le", "anisotropy")} == {1}
    assert {k[2] for k in s if k[1] in ("ae", "tiled-l2")} == {OPTS.num_inference_steps}
    assert {k[3] for k in s if k[1] == "tiled-l2"} == {2}  # needs two generations


def test_adapter_matches_raw_unet_and_schedule(model):
    """ε from the adapter = the UNet output converted by hand (v → ε for SD2-style models)."""
    x = model.initial_noise([1, 2])
    c = model.encode(["the cat", "zebra"])
    t = 501
    raw = model.unet(x, torch.full((2,), t), encoder_hidden_states=c).sample
    a = model.pipe.scheduler.alphas_cumprod[t]
    want = raw if model.prediction_type == "epsilon" else v_to_eps(raw, x, a)
    torch.testing.assert_close(model.eps(x, t, c), want, rtol=1e-5, atol=1e-6)
    assert model.steps_offset == 1 and model.pipe.scheduler.__class__.__name__ == "DDIMScheduler"


def test_ours_jvp_equals_dense_jacobian_oracle(model):
    """‖H^Δ s^Δ‖² by the engine's JVP = ‖J s^Δ‖² with J the dense 256×256 Jacobian of s^Δ (torch.func.jacrev)."""
    x = model.initial_noise([prompt_seed(0, "zebra", 0)])
    c = model.encode(["zebra"])
    t = ddim_timesteps(1000, OPTS.num_inference_steps, 1)[0]  # the engine's step 1
    f = model.delta_fn(t, c, None, "score")
    J = dense_jacobian(f, x[0])
    v = f(x).reshape(-1).detach()
    want = (J @ v).pow(2).sum()
    got = metrics.hessian_score_metric(f, x, "jvp")
    torch.testing.assert_close(got[0].double(), want.double(), rtol=1e-4, atol=0)
    # and the engine's ours-jvp at step 1 is that same number
    s = scores(model, ["ours-jvp"], prompts=["zebra"], steps=(1,), ns=(1,))
    assert s[("zebra", "ours-jvp", 1, 1)] == pytest.approx(float(want), rel=1e-4)


def test_fd_agrees_with_jvp(model):
    """Documented tolerance: forward FD with h = √u(1+‖x‖)/‖v‖ in float32 is within 1 % of the JVP."""
    s = scores(model, ["ours-fd", "ours-jvp"], prompts=PROMPTS[:3])
    for p in PROMPTS[:3]:
        for k in (1, 5):
            assert s[(p, "ours-fd", k, 2)] == pytest.approx(s[(p, "ours-jvp", k, 2)], rel=1e-2)


def test_scores_do_not_depend_on_batch_size_or_prompt_order(eps_model):
    """Per-(prompt, generation) seeds: batch 8 vs batch 1 on reversed prompts agree to float roundoff.

    FD divides roundoff by its relative step √u ≈ 3e-4, so it gets a looser bound (its own FD error is
    of the same size, see test_fd_agrees_with_jvp).
    """
    methods = ["wen", "ours-fd", "ours-jvp", "le", "be", "anisotropy"]
    a = scores(eps_model, methods, prompts=PROMPTS[:3], steps=(1, 3), batch_size=8)
    b = scores(eps_model, methods, prompts=PROMPTS[:3][::-1], steps=(1, 3), batch_size=1)
    assert a.keys() == b.keys()
    for k in a:
        tol = 1e-2 if k[1] == "ours-fd" else 1e-4
        assert b[k] == pytest.approx(a[k], rel=tol), k


def test_n_uses_the_first_generations(eps_model):
    """n=1 and n=2 come from one run; the n=1 row is generation 0 alone, as a separate n=1 run gives."""
    both = scores(eps_model, ["wen"], prompts=PROMPTS[:2], ns=(1, 2), steps=(1,))
    one = scores(eps_model, ["wen"], prompts=PROMPTS[:2], ns=(1,), steps=(1,))
    for p in PROMPTS[:2]:
        assert both[(p, "wen", 1, 1)] == pytest.approx(one[(p, "wen", 1, 1)], rel=1e-6)


def test_oom_halves_the_batch_and_keeps_results(eps_model, monkeypatch):
    ref = scores(eps_model, ["wen"], batch_size=2)
    real = type(eps_model).model_output
    seen = []

    def flaky(self, x, t, cond=None):
        seen.append(x.shape[0])
        if x.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, x, t, cond)

    monkeypatch.setattr(type(eps_model), "model_output", flaky)
    logs = []
    got = {(r["prompt"], r["method"], r["steps"], r["n"]): r["score"]
           for r in detect(eps_model, PROMPTS, ["wen"], (1, 5), (2,), 0, 8, OPTS, log=logs.append)}
    assert any("halved to 2" in m for m in logs) and max(seen) == 8
    assert got == pytest.approx(ref, rel=1e-5)


def test_run_batched_reraises_other_errors():
    def boom(sl):
        raise ValueError("not memory")

    with pytest.raises(ValueError, match="not memory"):
        run_batched(boom, 4, 2)


def test_cross_attention_processor_leaves_outputs_unchanged(eps_model):
    """Our explicit-softmax processor (recording, rescaling at C = 1) reproduces diffusers' own attention."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    x = eps_model.initial_noise([3, 4])
    c = eps_model.encode(["the cat", "zebra"])
    eps_model.unet.set_attn_processor(AttnProcessor2_0())
    eps_model._cross_procs_installed = False
    with torch.no_grad():
        want = eps_model.eps(x, 501, c)
        with eps_model.recording() as store:
            got = eps_model.eps(x, 501, c)
        n_layers = len(store.token_means)
        with eps_model.attention_rescaling(bos_scale=1.0):
            got_c1 = eps_model.eps(x, 501, c)
        with eps_model.attention_rescaling(bos_scale=1.5):
            got_c15 = eps_model.eps(x, 501, c)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_c1, want, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got_c15, want, atol=1e-6)
    assert n_layers == eps_model.num_cross_attention_layers == 11
    # recorded token distributions are distributions
    torch.testing.assert_close(store.token_means[0].sum(-1), torch.ones(2), rtol=1e-5, atol=1e-5)


def test_anisotropy_reduces_to_wen_at_zero_weight(eps_model):
    w = scores(eps_model, ["wen"], steps=(1,), ns=(2,))
    a = scores(
        eps_model, ["anisotropy"], steps=(1,), ns=(2,), opts=DetectOptions(num_inference_steps=10, aniso_weight=0.0)
    )
    for p in PROMPTS:
        assert a[(p, "anisotropy", 1, 2)] == pytest.approx(w[(p, "wen", 1, 2)], rel=1e-5)


def test_prompt_seed_is_stable_and_distinct():
    assert prompt_seed(0, "a", 0) == prompt_seed(0, "a", 0)
    assert len({prompt_seed(0, "a", 0), prompt_seed(0, "a", 1), prompt_seed(0, "b", 0), prompt_seed(1, "a", 0)}) == 4


def test_missing_weights_give_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(PipelineLoadError, match="model_index.json"):
        load_pipeline(tmp_path, device="cpu")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PipelineLoadError, match="download it first"):
        load_pipeline("CompVis/stable-diffusion-v1-4", device="cpu")
