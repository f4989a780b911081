"""ResNet-18 / ResNet-50 from torchvision's blocks, behind the Encoder contract.

For inputs of 64 px or less the stem is the CIFAR one (He et al. 2016, sec. 4.2;
SimCLR appendix B.9): a 3x3 stride-1 convolution and no max-pool, so a 28 px
image still reaches the last stage at 4x4 instead of 1x1.

``width`` is the channel count of the first stage (64 in the paper, doubling per
stage). At width 64 the network is exactly torchvision's resnet18 / resnet50 without
its classifier. Left unset, it is chosen for the device: the paper's 64 on a GPU, 16 on
a CPU, where the paper's network trains a step in tens of seconds (see ``ResNetParams``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1

from selfsup.data.spec import ImageSpec
from selfsup.encoders.base import Encoder, Features, ImageInput
from selfsup.errors import UserError
from selfsup.registry import ENCODERS

_LAYOUT = {18: (BasicBlock, [2, 2, 2, 2]), 50: (Bottleneck, [3, 4, 6, 3])}
PAPER_WIDTH, CPU_WIDTH = 64, 16


@dataclass
class ResNetParams:
    width: int | None = None  # first-stage channels; None: 64 (the paper's) on a GPU, 16 on a CPU
    small_stem: bool | None = None  # None: the 3x3 stem without max-pool for inputs of 64 px or less
    SHOWN = ("width",)  # what tables print of the size

    def resolve(self, spec: ImageSpec, device_type: str, name: str = "resnet18") -> ResNetParams:
        width = self.width if self.width is not None else (PAPER_WIDTH if device_type == "cuda" else CPU_WIDTH)
        if width < 4:
            raise UserError(f"encoder.width={width} must be at least 4")
        return ResNetParams(width, spec.size <= 64 if self.small_stem is None else bool(self.small_stem))

    def size_note(self, name: str, device_type: str) -> str | None:
        """One line when the size was chosen for the device, with the flag that overrides it."""
        if self.width is not None or device_type == "cuda":
            return None
        return (f"encoder: {name} at width {CPU_WIDTH} for a CPU (the paper's width {PAPER_WIDTH} trains a step in "
                f"tens of seconds here); set --width to choose another")  # fmt: skip


def _stage(block, inplanes: int, planes: int, blocks: int, stride: int) -> tuple[nn.Sequential, int]:
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(conv1x1(inplanes, planes * block.expansion, stride),
                                   nn.BatchNorm2d(planes * block.expansion))  # fmt: skip
    layers = [block(inplanes, planes, stride, downsample)]
    inplanes = planes * block.expansion
    layers += [block(inplanes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers), inplanes


class ResNetEncoder(Encoder):
    def __init__(self, depth: int, spec: ImageSpec, width: int = 64, small_stem: bool = True):
        super().__init__()
        block, counts = _LAYOUT[depth]
        c = spec.channels
        conv1 = nn.Conv2d(c, width, 3, 1, 1, bias=False) if small_stem else nn.Conv2d(c, width, 7, 2, 3, bias=False)
        pool = nn.Identity() if small_stem else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.input = ImageInput(c, list(spec.mean), list(spec.std))
        self.stem = nn.Sequential(conv1, nn.BatchNorm2d(width), nn.ReLU(inplace=True), pool)
        stages, inplanes = [], width
        for i, n in enumerate(counts):
            stage, inplanes = _stage(block, inplanes, width * 2**i, n, 1 if i == 0 else 2)
            stages.append(stage)
        self.layers = nn.Sequential(*stages)
        self.dim = inplanes  # 512 (resnet18) or 2048 (resnet50) at width 64
        for m in self.modules():  # torchvision's initialization
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor, mask: Tensor | None = None, lengths: Tensor | None = None) -> Features:
        if mask is not None or lengths is not None:
            raise ValueError("ResNet encoders take whole images: no token mask, no lengths")
        h = self.layers(self.stem(self.input(x)))  # [B, D, h, w]
        tokens = h.flatten(2).transpose(1, 2)  # [B, h*w, D]
        return Features(tokens=tokens, pooled=h.mean(dim=(2, 3)))  # pooled [B, D]

    def inference_copy(self) -> ResNetEncoder:
        """A copy for frozen-feature extraction with every BatchNorm folded into the convolution before it
        (eval-mode BN is an affine map per channel): the same outputs to float rounding, one pass over each
        activation fewer."""
        out = copy.deepcopy(self).eval()
        out.stem[0], out.stem[1] = fuse_conv_bn_eval(out.stem[0], out.stem[1]), nn.Identity()
        for m in out.modules():
            if isinstance(m, (BasicBlock, Bottleneck)):
                for i in (1, 2, 3):
                    if hasattr(m, f"conv{i}"):
                        setattr(m, f"conv{i}", fuse_conv_bn_eval(getattr(m, f"conv{i}"), getattr(m, f"bn{i}")))
                        setattr(m, f"bn{i}", nn.Identity())
                if m.downsample is not None:
                    m.downsample = fuse_conv_bn_eval(m.downsample[0], m.downsample[1])
        return out


def _builder(depth: int):
    def build(spec: ImageSpec, params: ResNetParams) -> ResNetEncoder:
        return ResNetEncoder(depth, spec, params.width, params.small_stem)

    build.Params, build.spec_kind = ResNetParams, "image"
    build.__doc__ = f"ResNet-{depth} (torchvision's blocks; CIFAR stem at 64 px or less)."
    return build


ENCODERS.register("resnet18")(_builder(18))
ENCODERS.register("resnet50")(_builder(50))
