"""ResNet-18 / ResNet-50 from torchvision's blocks, behind the Encoder contract.

For inputs of 64 px or less the stem is the CIFAR one (He et al. 2016, sec. 4.2;
SimCLR appendix B.9): a 3x3 stride-1 convolution and no max-pool, so a 28 px
image still reaches the last stage at 4x4 instead of 1x1.

``width`` is the channel count of the first stage (64 in the paper, doubling per
stage). At width 64 the network is exactly torchvision's resnet18 / resnet50 without
its classifier; a narrower one (e.g. 16) is the practical choice on a few CPU cores.
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1

from selfsup.encoders.base import Encoder, Features, ImageInput
from selfsup.registry import ENCODERS

_LAYOUT = {18: (BasicBlock, [2, 2, 2, 2]), 50: (Bottleneck, [3, 4, 6, 3])}


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
    def __init__(self, depth: int = 18, in_channels: int = 3, image_size: int = 224, small_stem: bool | None = None,
                 width: int = 64, mean: float | list[float] = 0.5, std: float | list[float] = 0.25):  # fmt: skip
        super().__init__()
        block, counts = _LAYOUT[depth]
        small = image_size <= 64 if small_stem is None else small_stem
        conv1 = (nn.Conv2d(in_channels, width, 3, 1, 1, bias=False) if small
                 else nn.Conv2d(in_channels, width, 7, 2, 3, bias=False))  # fmt: skip
        pool = nn.Identity() if small else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.input = ImageInput(in_channels, mean, std)
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

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Features:
        if mask is not None:
            raise ValueError("ResNet encoders take no token mask")
        h = self.layers(self.stem(self.input(x)))  # [B, D, h, w]
        tokens = h.flatten(2).transpose(1, 2)  # [B, h*w, D]
        return Features(tokens=tokens, pooled=h.mean(dim=(2, 3)))  # pooled [B, D]


@ENCODERS.register("resnet18")
def resnet18(in_channels: int = 3, image_size: int = 224, small_stem: bool | None = None, width: int = 64,
             mean: float | list[float] = 0.5, std: float | list[float] = 0.25) -> ResNetEncoder:  # fmt: skip
    return ResNetEncoder(18, in_channels, image_size, small_stem, width, mean, std)


@ENCODERS.register("resnet50")
def resnet50(in_channels: int = 3, image_size: int = 224, small_stem: bool | None = None, width: int = 64,
             mean: float | list[float] = 0.5, std: float | list[float] = 0.25) -> ResNetEncoder:  # fmt: skip
    return ResNetEncoder(50, in_channels, image_size, small_stem, width, mean, std)
