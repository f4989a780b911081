"""Batched, generator-driven data augmentation ("views") for self-supervised learning."""

from selfsup.views.audio import (
    add_noise,
    apply_gain,
    random_gain,
    random_noise,
    random_segment,
    random_speed,
    speed_lengths,
    speed_perturb,
)
from selfsup.views.image import (
    BLUR_MIN_SIZE,
    ImageAugment,
    all_rotations,
    blur_p_for,
    color_jitter,
    gaussian_blur,
    horizontal_flip,
    random_grayscale,
    random_resized_crop,
    rotate90,
    solarize,
    to_float,
)
from selfsup.views.jigsaw import (
    all_permutations,
    jigsaw_tiles,
    maximal_hamming_permutations,
    min_hamming_distance,
    normalize_tiles,
    shuffle_tiles,
)
from selfsup.views.masking import (
    block_side,
    center_block_mask,
    dilate_mask,
    fill_masked,
    random_block_mask,
    random_token_mask,
    visible_count,
)
from selfsup.views.sequence import SeqCodec

__all__ = [
    "BLUR_MIN_SIZE",
    "ImageAugment",
    "all_rotations",
    "blur_p_for",
    "color_jitter",
    "gaussian_blur",
    "horizontal_flip",
    "random_grayscale",
    "random_resized_crop",
    "rotate90",
    "solarize",
    "to_float",
    # jigsaw puzzles
    "all_permutations",
    "jigsaw_tiles",
    "maximal_hamming_permutations",
    "min_hamming_distance",
    "normalize_tiles",
    "shuffle_tiles",
    # block masks
    "block_side",
    "center_block_mask",
    "dilate_mask",
    "fill_masked",
    "random_block_mask",
    "random_token_mask",
    "visible_count",
    # biological sequences
    "SeqCodec",
    # waveforms
    "add_noise",
    "apply_gain",
    "random_gain",
    "random_noise",
    "random_segment",
    "random_speed",
    "speed_lengths",
    "speed_perturb",
]


def finetune_augment(spec):
    """The light augmentation of end-to-end fine-tuning for a modality: ``f(x, generator) -> float batch``.

    Images: random resized crop (scale 0.5-1) and horizontal flip, as MAE's fine-tuning recipe scaled
    to small images, on uint8 or [0, 1] input."""
    if spec.kind == "image":
        size = spec.size

        def augment(x, generator):
            return random_resized_crop(to_float(x), size, scale=(0.5, 1.0), flip_p=0.5, generator=generator)

        return augment
    return lambda x, generator: x


__all__ += ["finetune_augment"]
