"""Attention blocks inserted into convolutional backbones, built by kind through one factory.

Every block takes the channel count first, keyword-only family options after, and returns a tensor of
its input's shape: ``make_block("nonlocal", 512, dim=3, mode="dot_product")``.
"""

from modules.blocks.non_local import NonLocalBlock
from modules.blocks.self_attention import SelfAttention2d
from modules.blocks.squeeze_excite import SqueezeExcite
from modules.families import FAMILIES, accepted_keywords, family

# kind -> block class, read off the family table (modules/families.py); tests parametrize over the keys.
BLOCKS = {name: declared.block_class() for name, declared in FAMILIES.items()}


def make_block(kind, channels, **kw):
    """Build the block ``kind`` (a key of BLOCKS) for ``channels`` input channels.

    Raises ValueError naming the valid kinds for an unknown kind, the accepted keywords for an unknown
    keyword, and the allowed values for a bad value (raised by the block itself).
    """
    block_class = family(kind).block_class()
    accepted = accepted_keywords(block_class)
    unknown = sorted(set(kw) - set(accepted or kw))
    if unknown:
        raise ValueError(f"block {kind!r} does not accept {unknown}; accepted keywords: {accepted}")
    try:
        return block_class(channels, **kw)
    except TypeError as error:  # e.g. a **kwargs block rejecting a name deeper down
        raise ValueError(f"block {kind!r}: {error}; accepted keywords: {accepted or 'see its docstring'}") from error


__all__ = ["BLOCKS", "NonLocalBlock", "SelfAttention2d", "SqueezeExcite", "make_block"]
