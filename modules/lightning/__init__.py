"""One LightningModule per block family over a shared base; `MODULES[family]` picks it.

Which class trains a family is declared with the family (modules/families.py). A family that draws no
paper figures of its own trains with the shared module, under a subclass that carries its name.
"""

from modules.families import BASELINE, FAMILIES, Family, load
from modules.lightning.base import AttentionClassifier
from modules.lightning.nonlocal_module import NonLocalModule
from modules.lightning.se_module import SqueezeExciteModule
from modules.lightning.selfattn_module import SelfAttentionModule


def _module_class(declared: Family) -> type[AttentionClassifier]:
    if declared.module is not None:
        return load(declared.module)
    return type(f"{declared.name.title()}Module", (AttentionClassifier,),
                {"family": declared.name, "__module__": __name__})


MODULES: dict[str, type[AttentionClassifier]] = {
    BASELINE: AttentionClassifier,
    **{name: _module_class(declared) for name, declared in FAMILIES.items()},
}

__all__ = ["MODULES", "AttentionClassifier", "NonLocalModule", "SqueezeExciteModule", "SelfAttentionModule"]
