"""dyco_ops: native (C++ CPU, CUDA) kernels of the DyCo3D pipeline's hot non-convolution ops.

An optional speed-up: `dyco_perception.ops` validates inputs and calls these kernels when they
are built (`python -m dyco_ops.build`), else its own pure-PyTorch implementations, which define
the semantics the kernels must reproduce. The C++/CUDA sources ship as package data (csrc/).
"""
