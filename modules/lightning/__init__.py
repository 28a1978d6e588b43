"""One LightningModule per block family over a shared base; `MODULES[family]` picks it."""

from modules.lightning.base import AttentionClassifier
from modules.lightning.nonlocal_module import NonLocalModule
from modules.lightning.se_module import SqueezeExciteModule
from modules.lightning.selfattn_module import SelfAttentionModule

MODULES: dict[str, type[AttentionClassifier]] = {
    "none": AttentionClassifier,
    "nonlocal": NonLocalModule,
    "se": SqueezeExciteModule,
    "selfattn": SelfAttentionModule,
}

__all__ = ["MODULES", "AttentionClassifier", "NonLocalModule", "SqueezeExciteModule", "SelfAttentionModule"]
