"""Transformer building blocks shared by the applications."""

from .attention import Attention
from .blocks import Block
from .embeddings import PatchEmbed, sincos_1d, sincos_2d, sincos_2d_at
from .params import ParamCount, count_params

__all__ = ["Attention", "Block", "PatchEmbed", "sincos_1d", "sincos_2d", "sincos_2d_at", "ParamCount", "count_params"]
