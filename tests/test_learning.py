"""End to end: every image method, pretrained briefly on Fashion-MNIST, beats the same encoder at random init.

Scored on the validation split that evaluation carves from the labelled training images (the settings
below were chosen on it); the test split is not looked at here."""

import json

import pytest

import selfsup
import selfsup.methods  # noqa: F401  (registers)
from selfsup.registry import METHODS

from .conftest import require_fmnist

IMAGE_METHODS = [name for name, cls in METHODS.items() if cls.modality == "image"]

# Per-method settings on top of BASE (each case should take well under a minute on 2 CPU cores).
BASE = dict(data="fashion-mnist", width=8, limit=4096, batch_size=128, budget="80steps", device="cpu")
SETTINGS = {
    "inpainting": dict(budget="250steps"),
    "rotation": dict(budget="40steps"),  # rotation sees each image 4 times per step
    # fresher negatives in a short run; 160 steps (validation kNN 67.2 vs random init 61.7 on the 2-core VM,
    # 2026-12-04):
    # at 80 steps kNN was 2.8 points ahead, under the margin on this machine's numerics though not on CI's
    "moco": dict(budget="160steps", params={"queue_size": 512}),
    "byol": dict(batch_size=64, budget="320steps"),  # BYOL starts slowly
    "dino": dict(batch_size=64, budget="240steps"),  # DINO starts slowly
    "jigsaw": dict(batch_size=32, budget="160steps"),  # a puzzle of 24 px tiles costs ~7 images
    # MAE: a 64-d x 4-block ViT on 7 px patches (16 per image, 4 visible) and a 64-d x 1 decoder; cheap steps
    "mae": dict(
        width=None,  # a ResNet field: MAE's ViT has none
        budget="300steps",
        lr=3e-3,
        patch_size=7,
        encoder__dim=64,
        encoder__depth=4,
        params=dict(decoder_dim=64, decoder_depth=1),
    ),
}
MARGIN = 0.03  # accuracy the pretrained encoder must gain over random init: 3 points


@pytest.mark.parametrize("method", IMAGE_METHODS)
def test_pretrained_beats_random_init(method, tmp_path):
    require_fmnist()
    out = tmp_path / method
    selfsup.pretrain(method=method, out=out, log=lambda s: None, **{**BASE, **SETTINGS.get(method, {})})
    rows = selfsup.evaluate(out, protocol="knn,linear", labels="100%", train_limit=8192, test_limit=1000,
                            log=lambda s: None)
    acc = {(r["protocol"], r["encoder"]): r["value"] for r in rows if r["split"] == "val"}
    print(method, {k: round(v, 4) for k, v in sorted(acc.items())})
    for proto in ("knn", "linear"):
        assert acc[(proto, "pretrained")] > acc[(proto, "random_init")] + MARGIN, acc
    written = json.loads((out / "eval.json").read_text())
    assert written == rows and {r["encoder"] for r in rows} == {"pretrained", "random_init", "raw"}
