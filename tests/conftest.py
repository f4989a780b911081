import os
import shutil
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: with subprocess tests (DDP, compare) or anything else
# on the cores, spinning threads slow every small kernel several-fold. Set before torch starts OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))

FMNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory) -> Path:
    """One cache for the whole session, so datasets are decoded once."""
    root = tmp_path_factory.mktemp("selfsup-cache")
    os.environ["SELFSUP_CACHE"] = str(root)
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(cache_root, monkeypatch):
    monkeypatch.setenv("SELFSUP_CACHE", str(cache_root))


def have_fmnist() -> bool:
    return FMNIST_DEBIAN.is_dir() or bool(os.environ.get("SELFSUP_FASHION_MNIST_DIR"))


def require_fmnist():
    """CI installs Debian's dataset-fashion-mnist; elsewhere the test says how to get it."""
    if not have_fmnist():
        if os.environ.get("CI"):
            raise AssertionError("Fashion-MNIST missing in CI: .ci/run must apt-get install dataset-fashion-mnist")
        pytest.skip("Fashion-MNIST not installed: apt-get install dataset-fashion-mnist")


def run_env() -> dict:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def torchrun() -> list[str]:
    exe = shutil.which("torchrun")
    return [exe] if exe else ["python", "-m", "torch.distributed.run"]
