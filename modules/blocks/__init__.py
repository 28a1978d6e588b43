"""Attention blocks inserted into convolutional backbones, built by kind through one factory.

Every block takes the channel count first, keyword-only family options after, and returns a tensor of
its input's shape: ``make_block("nonlocal", 512, dim=3, mode="dot_product")``.
"""

import inspect

from modules.blocks.non_local import NonLocalBlock
from modules.blocks.self_attention import SelfAttention2d
from modules.blocks.squeeze_excite import SqueezeExcite

# kind -> block class. A new family adds one import and one line here; tests parametrize over the keys.
BLOCKS = {
    "nonlocal": NonLocalBlock,
    "se": SqueezeExcite,
    "selfattn": SelfAttention2d,
}


def _accepted_keywords(block_class):
    """Keyword options of a block class, or None when it takes **kwargs (then any name may be valid)."""
    parameters = list(inspect.signature(block_class).parameters.values())[1:]  # skip `channels`
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
        return None
    return [parameter.name for parameter in parameters]


def make_block(kind, channels, **kw):
    """Build the block ``kind`` (a key of BLOCKS) for ``channels`` input channels.

    Raises ValueError naming the valid kinds for an unknown kind, the accepted keywords for an unknown
    keyword, and the allowed values for a bad value (raised by the block itself).
    """
    if kind not in BLOCKS:
        raise ValueError(f"unknown block kind {kind!r}; valid kinds: {sorted(BLOCKS)}")
    block_class = BLOCKS[kind]
    accepted = _accepted_keywords(block_class)
    unknown = sorted(set(kw) - set(accepted or kw))
    if unknown:
        raise ValueError(f"block {kind!r} does not accept {unknown}; accepted keywords: {accepted}")
    try:
        return block_class(channels, **kw)
    except TypeError as error:  # e.g. a **kwargs block rejecting a name deeper down
        raise ValueError(f"block {kind!r}: {error}; accepted keywords: {accepted or 'see its docstring'}") from error


__all__ = ["BLOCKS", "NonLocalBlock", "SelfAttention2d", "SqueezeExcite", "make_block"]
