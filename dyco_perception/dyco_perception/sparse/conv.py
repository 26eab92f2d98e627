"""`SparseConv`: submanifold 3x3x3, strided 2x2x2 down, and its inverse (up) convolution."""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from dyco_perception.sparse import torch_backend
from dyco_perception.sparse.tensor import SparseVoxels, resolve_backend

KINDS = ("subm", "down", "up")


class SparseConv(nn.Module):
    """One sparse conv layer without bias (BatchNorm follows it in the U-Net).

    kind="subm": 3x3x3 submanifold conv (output voxels = input voxels).
    kind="down": 2x2x2 stride-2 conv; output voxel = input coords // 2.
    kind="up":   the inverse of the "down" conv that produced this level (restores its voxels).
    `backend` ("torch" | "spconv") may be switched at any time; the weight does not change.
    """

    def __init__(self, in_channels: int, out_channels: int, kind: str, backend: str = "torch"):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"SparseConv kind {kind!r}; choose one of {KINDS}")
        self.kind = kind
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = 3 if kind == "subm" else 2
        volume = self.kernel_size**3
        self.weight = nn.Parameter(torch.empty(volume, in_channels, out_channels))
        bound = 1.0 / math.sqrt(volume * in_channels)
        nn.init.uniform_(self.weight, -bound * math.sqrt(3), bound * math.sqrt(3))
        self.backend = backend
        self._spconv_modules: dict[str, nn.Module] = {}  # plain dict: not in state_dict

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kind={self.kind}"

    def forward(self, x: SparseVoxels) -> SparseVoxels:
        if x.features.shape[1] != self.in_channels:
            raise ValueError(
                f"SparseConv expects {self.in_channels} channels, got {x.features.shape[1]}"
            )
        if resolve_backend(self.backend) == "spconv":
            return self._forward_spconv(x)
        if self.kind == "subm":
            return torch_backend.subm_conv(x, self.weight)
        if self.kind == "down":
            return torch_backend.down_conv(x, self.weight)
        return torch_backend.up_conv(x, self.weight)

    # ---- spconv backend -------------------------------------------------------------------
    def _spconv_module(self, stride: int, device: torch.device) -> nn.Module:
        key = f"{device.type}:{stride}"
        if key not in self._spconv_modules:
            self._spconv_modules[key] = _make_spconv_module(
                self.kind, self.in_channels, self.out_channels, stride, device
            )
        return self._spconv_modules[key]

    def _forward_spconv(self, x: SparseVoxels) -> SparseVoxels:
        import spconv.pytorch as spc

        # "up" restores the level the matching "down" started from (stride / 2).
        key_stride = x.stride // 2 if self.kind == "up" else x.stride
        module = self._spconv_module(key_stride, x.features.device)
        tensor = spc.SparseConvTensor(
            x.features,
            x.coords.int(),
            list(x.spatial_shape),
            x.batch_size,
            indice_dict=x.cache.setdefault("spconv", {}),
        )
        weight = _to_spconv_layout(self.weight, self.kernel_size)
        out = module._conv_forward(module.training, tensor, weight, None)
        x.cache["spconv"] = out.indice_dict  # spconv copies the dict; keep the newest
        stride = {"subm": x.stride, "down": x.stride * 2, "up": x.stride // 2}[self.kind]
        return SparseVoxels(
            out.features,
            out.indices.long(),
            stride,
            tuple(int(s) for s in out.spatial_shape),
            x.batch_size,
            x.cache,
        )


def _to_spconv_layout(weight: torch.Tensor, k: int) -> torch.Tensor:
    """(k^3, in, out) -> spconv's KRSC layout (out, k, k, k, in)."""
    _, c_in, c_out = weight.shape
    return weight.reshape(k, k, k, c_in, c_out).permute(4, 0, 1, 2, 3).contiguous()


def _make_spconv_module(
    kind: str, c_in: int, c_out: int, stride: int, device: torch.device
) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import spconv.pytorch as spc
    # The implicit-GEMM default asserts on CPU tensors; Native works on both.
    algo = None if device.type == "cuda" else spc.ConvAlgo.Native
    if kind == "subm":
        return spc.SubMConv3d(c_in, c_out, 3, bias=False, indice_key=f"subm{stride}", algo=algo)
    if kind == "down":
        return spc.SparseConv3d(
            c_in, c_out, 2, stride=2, bias=False, indice_key=f"down{stride}", algo=algo
        )
    return spc.SparseInverseConv3d(
        c_in, c_out, 2, bias=False, indice_key=f"down{stride}", algo=algo
    )
