"""Zero-shot CLIP's recipe: the CoOp template (ImageNet: the 7 select templates), no support views needed."""
from clipbridge.bridge.recipes.common import COOP_TEXT, PLAIN

ROWS = {
    "default": {"families": PLAIN, "prompts": ["coop"], "source": COOP_TEXT},
    "imagenet": {"prompts": ["ensemble"], "source": COOP_TEXT},
}
