import os
import shutil
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: with subprocess tests (DDP, compare) or anything else
# on the cores, spinning threads slow every small kernel several-fold. Set before torch starts OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


def _locate_fmnist() -> Path | None:
    """Where selfsup itself finds Fashion-MNIST (SELFSUP_FASHION_MNIST_DIR, Debian's package, the user's cache),
    looked up before the tests point SELFSUP_CACHE at a temporary folder."""
    from selfsup.data.named import _find_fmnist_raw

    return _find_fmnist_raw()


FMNIST_DIR = _locate_fmnist()
if FMNIST_DIR is not None:
    os.environ["SELFSUP_FASHION_MNIST_DIR"] = str(FMNIST_DIR)
_USER_CACHE = os.environ.get("SELFSUP_CACHE")


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory) -> Path:
    """One cache for the whole session, so datasets are decoded once."""
    root = tmp_path_factory.mktemp("selfsup-cache")
    os.environ["SELFSUP_CACHE"] = str(root)
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(cache_root, monkeypatch):
    monkeypatch.setenv("SELFSUP_CACHE", str(cache_root))


@pytest.fixture(scope="session")
def synth_small(cache_root):
    """synth-speech at its small size, built once per session (espeak-ng installed with apt-get as root, as CI runs);
    a machine that cannot have it fails here, never skips."""
    from selfsup.data import fetch, named_speech, synth_speech_splits
    from selfsup.errors import UserError

    try:
        named_speech.ensure_espeak()
    except UserError as e:
        pytest.fail(f"espeak-ng cannot be installed here: {e}")
    lines = []
    fetch("synth-speech", log=lines.append, size="small")
    assert "synth-speech (small)" in lines[-1]
    return synth_speech_splits("small")


def require_fmnist() -> Path:
    """Fashion-MNIST's raw files, found the way selfsup finds them, or fetched the way `selfsup data get
    fashion-mnist` fetches them (into the user's cache). Missing data fails the test: it never skips."""
    global FMNIST_DIR
    if FMNIST_DIR is None:
        from selfsup.data import named
        from selfsup.errors import UserError

        before = os.environ.get("SELFSUP_CACHE")
        try:
            if _USER_CACHE is None:
                os.environ.pop("SELFSUP_CACHE", None)
            else:
                os.environ["SELFSUP_CACHE"] = _USER_CACHE
            FMNIST_DIR = named._find_fmnist_raw() or named._apt_download_fmnist(print) or \
                named._torchvision_download_fmnist(print)  # fmt: skip
        except UserError as e:
            pytest.fail(f"Fashion-MNIST could not be found or fetched ({e}); run `selfsup data get fashion-mnist`")
        finally:
            if before is None:
                os.environ.pop("SELFSUP_CACHE", None)
            else:
                os.environ["SELFSUP_CACHE"] = before
        if FMNIST_DIR is None:
            pytest.fail("Fashion-MNIST is not on this machine and could not be fetched; "
                        "run `selfsup data get fashion-mnist` or apt-get install dataset-fashion-mnist")  # fmt: skip
        os.environ["SELFSUP_FASHION_MNIST_DIR"] = str(FMNIST_DIR)
    return FMNIST_DIR


def run_env() -> dict:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def torchrun() -> list[str]:
    exe = shutil.which("torchrun")
    return [exe] if exe else ["python", "-m", "torch.distributed.run"]


def image_spec(channels: int = 1, size: int = 16, mean: float = 0.5, std: float = 0.25):
    from selfsup.data.spec import ImageSpec

    return ImageSpec(channels, size, (mean,) * channels, (std,) * channels)


def make_method(name: str, channels: int = 1, image_size: int = 16, num_samples: int | None = None,
                encoder: str | None = None, encoder_params: dict | None = None, seed: int = 0, **params):
    """A method built as the trainer builds it, from a config resolved for a dataset of this spec."""
    import numpy as np

    from selfsup.config import RunConfig, resolve
    from selfsup.data import Dataset, Split
    from selfsup.methods import build_method
    from selfsup.registry import METHODS

    spec = image_spec(channels, image_size)
    cfg = RunConfig()
    cfg.method.name, cfg.method.params = name, dict(params)
    cfg.encoder.name = encoder or getattr(METHODS.get(name), "default_encoder", "resnet18")
    default = {"width": 8} if cfg.encoder.name.startswith("resnet") else {}
    cfg.encoder.params = dict(default if encoder_params is None else encoder_params)
    cfg.train.batch_size = 16
    n = num_samples or 1000
    ds = Dataset("fake", spec, Split(np.broadcast_to(np.zeros((1, channels, image_size, image_size), np.uint8),
                                                    (n, channels, image_size, image_size))))
    torch.manual_seed(seed)
    return build_method(resolve(cfg, ds), spec)


def die_after_save(monkeypatch, step: int):
    """Make the trainer raise KeyboardInterrupt (a kill) right after it saves step ``step``'s checkpoint;
    -> a function that puts the real save back (for the resume)."""
    from selfsup.train import loop

    real_save = loop.Trainer._save

    def save_then_die(self, at):
        real_save(self, at)
        if at == step:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop.Trainer, "_save", save_then_die)
    return lambda: monkeypatch.setattr(loop.Trainer, "_save", real_save)


@pytest.fixture(scope="session")
def tera_run(synth_small, tmp_path_factory):
    """A tiny tera run (4 steps, a 32-d encoder) on the small synth-speech, shared by the speech task and audit
    tests."""
    from selfsup.cli import main
    from tests.test_speech_run import SMALL

    run = tmp_path_factory.mktemp("speech-tasks") / "run"
    assert main(["pretrain", "--data", "synth-speech", "--method", "tera", "--budget", "4steps", "--batch-size", "8",
                 "--device", "cpu", "--out", str(run), *SMALL]) == 0  # fmt: skip
    return run
