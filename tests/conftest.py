"""Test-wide settings: the tests use tiny models, for which one intra-op thread is the
fastest choice and keeps timings stable on a shared 2-core CI machine."""
import os

import torch

torch.set_num_threads(1)

import pytest  # noqa: E402

from tests.required import skip_unless_required  # noqa: E402

# The fused training kernels (trainables/fused_elementwise.py) take 15-47 s to torch.compile in
# every process that reaches them (an evaluation batch of the tests' tiny models does). Tests not
# marked slow run without them, their spawned processes too: test_fused_elementwise.py holds the
# kernels to the torch operations (its compiled run is slow), and the slow end-to-end runs keep
# them on, as a study does. A value set by whoever runs pytest is left as it is.
FUSED_ENV_VAR = "SMOOTHING_FUSED_ELEMENTWISE"
_FUSED_FROM_CALLER = FUSED_ENV_VAR in os.environ


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before the test's fixtures (module-scoped ones too): the fused kernels off unless it is slow."""
    if _FUSED_FROM_CALLER:
        return
    want = None if item.get_closest_marker("slow") else "0"
    if os.environ.get(FUSED_ENV_VAR) != want:
        from trainables import fused_elementwise

        if want is None:
            os.environ.pop(FUSED_ENV_VAR)
        else:
            os.environ[FUSED_ENV_VAR] = want
        fused_elementwise._state.update(checked=False, reason="")  # available() reads the variable again


@pytest.fixture(scope="session")
def mnist_halves_dir(tmp_path_factory):
    """../shared/data/mnist (the real 10k test split) as a dataset folder: a seeded half is the
    training split, the other half the test split. Skips where the shared files are absent."""
    from tests.idx_files import SHARED_MNIST, SHARED_MNIST_MISSING, mnist_halves

    if not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists():
        skip_unless_required("shared-mnist", SHARED_MNIST_MISSING)
    return mnist_halves(tmp_path_factory.mktemp("mnist-halves"))


@pytest.fixture(scope="session")
def real_28x28(request) -> tuple[str, str]:
    """(dataset, data dir) of real 28x28 data for end-to-end tests: MNIST re-split from
    ../shared/data/mnist where it is beside the checkout, else Debian's Fashion-MNIST, which
    .ci/run installs; skips only where neither is on the machine."""
    from tests.idx_files import FASHION_DIR, SHARED_MNIST, SHARED_MNIST_MISSING

    if (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists():
        return "mnist", str(request.getfixturevalue("mnist_halves_dir"))
    if os.path.exists(f"{FASHION_DIR}/train-images-idx3-ubyte.gz"):
        return "fashion_mnist", FASHION_DIR
    skip_unless_required("real-28x28", f"{SHARED_MNIST_MISSING}, and Debian's dataset-fashion-mnist is not "
                         f"installed ({FASHION_DIR})")


@pytest.fixture(scope="session")
def real_data_cache_dir(tmp_path_factory):
    """One classifier cache for the tests on real data: the classifier a floor test trains (a
    minute or two) is the one the end-to-end study loads, and the other way round."""
    return tmp_path_factory.mktemp("real-data-cache")


@pytest.fixture(scope="session")
def digits_cache_dir(tmp_path_factory):
    """One classifier cache for the tests on the digits classifier: it is trained once per session
    (the sample-quality and diagnostics tests read the same one), never from ~/.cache."""
    return tmp_path_factory.mktemp("digits-cache")
