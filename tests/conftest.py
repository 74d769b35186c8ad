import torch
import pytest

from sharp_utils.runtime import set_threads

set_threads()  # $SHARP_THREADS, default 2


@pytest.fixture(scope="session")
def train_script():
    """MiniSD's training module (python -m sharp_utils.minisd.train)."""
    from sharp_utils.minisd import train

    return train


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def mc_close(samples: torch.Tensor, expected: float, z: float = 4.5) -> tuple[bool, str]:
    """Monte-Carlo mean of ``samples`` equals ``expected`` within ``z`` standard errors."""
    samples = samples.double()
    mean = samples.mean().item()
    se = (samples.std() / samples.numel() ** 0.5).item()
    ok = abs(mean - float(expected)) <= z * se
    return ok, f"mean={mean:.6g} expected={float(expected):.6g} se={se:.3g}"
