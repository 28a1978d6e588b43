"""Starting a network from pretrained weights: formats, 2D→3D inflation, loading with a report, fine-tuning controls.

``load_pretrained(net, state_dict, head=, strict=, selfattn_from_conv=) -> LoadingReport`` copies a
torchvision / timm / attnlab state dict into a built attnlab network (loading.py);
``fine_tuning(net, report, freeze=, frozen_bn=, new_lr_multiplier=)`` sets what then trains and how
fast (finetune.py). Reading files and MLflow models is the training layer's job (training/init_weights.py).
"""

from modules.pretrained.finetune import FREEZE_POINTS, FineTuning, fine_tuning
from modules.pretrained.formats import FORMATS, NotAStateDict, detect_format, unwrap
from modules.pretrained.inflation import can_inflate, inflate
from modules.pretrained.loading import HEAD_POLICIES, LoadError, load_pretrained
from modules.pretrained.report import STATUSES, LoadingReport

__all__ = ["FORMATS", "FREEZE_POINTS", "HEAD_POLICIES", "STATUSES", "FineTuning", "LoadError", "LoadingReport",
           "NotAStateDict", "can_inflate", "detect_format", "fine_tuning", "inflate", "load_pretrained", "unwrap"]
