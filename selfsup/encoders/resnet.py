"""ResNet-18 / ResNet-50 (torchvision) behind the Encoder contract.

For inputs of 64 px or less the stem is the CIFAR one (He et al. 2016, sec. 4.2;
SimCLR appendix B.9): a 3x3 stride-1 convolution and no max-pool, so a 28 px
image still reaches the last stage at 4x4 instead of 1x1.
"""

from __future__ import annotations

import torchvision
from torch import Tensor, nn

from selfsup.encoders.base import Encoder, Features, ImageInput
from selfsup.registry import ENCODERS


class ResNetEncoder(Encoder):
    def __init__(self, depth: int = 18, in_channels: int = 3, image_size: int = 224, small_stem: bool | None = None,
                 mean: float | list[float] = 0.5, std: float | list[float] = 0.25):  # fmt: skip
        super().__init__()
        net = {18: torchvision.models.resnet18, 50: torchvision.models.resnet50}[depth](weights=None)
        small = image_size <= 64 if small_stem is None else small_stem
        if small:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.input = ImageInput(in_channels, mean, std)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layers = nn.Sequential(net.layer1, net.layer2, net.layer3, net.layer4)
        self.dim = net.fc.in_features  # 512 or 2048
        nn.init.kaiming_normal_(self.stem[0].weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Features:
        if mask is not None:
            raise ValueError("ResNet encoders take no token mask")
        h = self.layers(self.stem(self.input(x)))  # [B, D, h, w]
        tokens = h.flatten(2).transpose(1, 2)  # [B, h*w, D]
        return Features(tokens=tokens, pooled=h.mean(dim=(2, 3)))  # pooled [B, D]


@ENCODERS.register("resnet18")
def resnet18(**kw) -> ResNetEncoder:
    return ResNetEncoder(18, **kw)


@ENCODERS.register("resnet50")
def resnet50(**kw) -> ResNetEncoder:
    return ResNetEncoder(50, **kw)
