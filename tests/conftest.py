import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_threads():
    """Two threads, as on the CI machine, so results do not depend on the host's core count."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    yield
