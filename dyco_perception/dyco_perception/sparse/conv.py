"""`SparseConv`: submanifold 3x3x3, strided 2x2x2 down, and its inverse (up) convolution."""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from dyco_perception.sparse import gemm, native_conv, torch_backend
from dyco_perception.sparse.algorithms import default_table
from dyco_perception.sparse.tensor import SparseVoxels, resolve_backend, spconv_available

KINDS = ("subm", "down", "up")
# backend value -> algorithm of a subm layer (float32, bfloat16); down/up use "torch" for gemm.
FIXED_ALGORITHMS = {
    "torch": ("torch", "torch_bf16"),
    "gemm": ("gemm", "gemm_bf16"),
    "spconv": ("spconv", None),
    "native": ("native", None),
}
# Backends written for subm only: their down/up convs run torch.
SUBM_ONLY = ("gemm", "native")


class SparseConv(nn.Module):
    """One sparse conv layer; no bias (BatchNorm follows it) unless a BN is folded in.

    kind="subm": 3x3x3 submanifold conv (output voxels = input voxels).
    kind="down": 2x2x2 stride-2 conv; output voxel = input coords // 2.
    kind="up":   the inverse of the "down" conv that produced this level (restores its voxels).
    `backend` may be switched at any time; the weight does not change:
      "torch" | "spconv" | "gemm" (gather-GEMM for subm, torch for down/up): that algorithm;
      "native" (the output-stationary C++ kernel for subm, inference only; torch for down/up);
      "auto": on CPU without autograd, the fastest measured algorithm for this layer's size
      (`algorithms.py`) other than spconv (never imported for CPU inference); with autograd
      (training) or on GPU, spconv when importable, else torch.
    `precision` "bfloat16" runs the matmuls of the torch/gemm algorithms in bfloat16
    (inference only). `fold_scale(scale, shift)` folds a following eval BatchNorm into a
    separate weight and bias (non-persistent: the state_dict keeps the trained weight).
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
        self.precision = "float32"
        self._spconv_modules: dict[str, nn.Module] = {}  # plain dict: not in state_dict
        # Set only by fold_scale (inference); non-persistent, so state_dict is unchanged.
        self.register_buffer("folded_weight", None, persistent=False)
        self.register_buffer("bias", None, persistent=False)
        self.last_algorithm = ""  # what the last forward ran (benches, tests)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kind={self.kind}"

    @property
    def is_folded(self) -> bool:
        return self.folded_weight is not None

    def fold_scale(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        """Inference weights for conv followed by `y * scale + shift` per output channel."""
        with torch.no_grad():
            self.folded_weight = self.weight * scale
            self.bias = shift.clone()

    def forward(self, x: SparseVoxels) -> SparseVoxels:
        if x.features.shape[1] != self.in_channels:
            raise ValueError(
                f"SparseConv expects {self.in_channels} channels, got {x.features.shape[1]}"
            )
        algorithm = self.algorithm_for(x)
        self.last_algorithm = algorithm
        weight = self.folded_weight if self.is_folded else self.weight
        if algorithm == "spconv":
            out = self._forward_spconv(x, weight)
        elif self.kind != "subm":
            out = _torch_forward(self.kind, x, weight)
        elif algorithm in ("gemm", "gemm_bf16"):
            dtype = torch.bfloat16 if algorithm == "gemm_bf16" else None
            return gemm.subm_conv_gemm(x, weight, self.bias, dtype)
        elif algorithm == "native":
            return native_conv.subm_conv_native(x, weight, self.bias)
        elif algorithm == "torch_bf16":
            return gemm.subm_conv_offsets_bf16(x, weight, self.bias)
        else:
            out = torch_backend.subm_conv(x, weight)
        if self.bias is not None:
            out = out.with_features(out.features + self.bias)
        return out

    def algorithm_for(self, x: SparseVoxels) -> str:
        """The algorithm this layer runs on `x` (see the class docstring)."""
        grad = torch.is_grad_enabled()
        if self.precision != "float32" and grad:
            raise RuntimeError(
                "bfloat16 sparse convs are inference-only: run under torch.no_grad() "
                "or set precision 'float32'"
            )
        if self.backend == "auto":
            if grad or x.features.device.type != "cpu":
                return resolve_backend("auto")  # training, or a GPU: spconv's implicit GEMM
            # CPU inference: the table measured on this CPU, without spconv, whose import alone
            # takes 6-12 s (it builds its GPU kernel catalogue in Python) at every start of a
            # node, and which the native kernel outruns wherever spconv was the choice.
            usable = _usable_algorithms(self.kind, x, spconv=False)
            choice = default_table().choose(
                self.kind,
                int(x.coords.shape[0]),
                self.in_channels,
                self.out_channels,
                self.precision,
                usable,
            )
            return choice or "torch"
        fp32, bf16 = FIXED_ALGORITHMS[resolve_backend(self.backend)]
        if self.kind != "subm" and self.backend in SUBM_ONLY:
            fp32, bf16 = "torch", None
        if self.precision == "bfloat16" and bf16 is not None:
            return bf16 if self.kind == "subm" else fp32
        return fp32

    # ---- spconv backend -------------------------------------------------------------------
    def _spconv_module(self, stride: int, device: torch.device) -> nn.Module:
        key = f"{device.type}:{stride}"
        if key not in self._spconv_modules:
            self._spconv_modules[key] = _make_spconv_module(
                self.kind, self.in_channels, self.out_channels, stride, device
            )
        return self._spconv_modules[key]

    def _forward_spconv(self, x: SparseVoxels, weight: torch.Tensor) -> SparseVoxels:
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
        weight = _to_spconv_layout(weight, self.kernel_size)
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


def _usable_algorithms(kind: str, x: SparseVoxels, spconv: bool = True) -> set[str]:
    """An up conv reuses the maps of its down conv, so it must run that conv's algorithm;
    "native" only where its kernel can run on `x` (built, CPU, float32, no autograd);
    "spconv" only when asked for and importable."""
    usable = {"torch", "gemm", "torch_bf16", "gemm_bf16"}
    if spconv and spconv_available():
        usable.add("spconv")
    if kind == "subm" and native_conv.usable(x):
        usable.add("native")
    if kind == "up":
        fine = x.stride // 2
        usable = {a for a in usable if a == "torch"} if ("down", fine) in x.cache else set()
        if f"down{fine}" in x.cache.get("spconv", {}):
            usable.add("spconv")
    return usable


def _torch_forward(kind: str, x: SparseVoxels, weight: torch.Tensor) -> SparseVoxels:
    if kind == "down":
        return torch_backend.down_conv(x, weight)
    return torch_backend.up_conv(x, weight)


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
