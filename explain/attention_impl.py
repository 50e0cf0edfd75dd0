"""Attention maps need a Hugging Face model's eager attention (sdpa and flash attention return none)."""

from __future__ import annotations

from typing import Any

from explain.errors import UnsupportedMethodError


def ensure_eager_attention(hf_model: Any) -> None:
    """Switch ``hf_model`` to the eager attention if it uses another (same weights, same outputs)."""
    if getattr(hf_model.config, "_attn_implementation", "eager") != "eager":
        try:
            hf_model.set_attn_implementation("eager")
        except (AttributeError, ValueError) as exc:
            raise UnsupportedMethodError(f"attention maps need attn_implementation='eager' ({exc})") from None
