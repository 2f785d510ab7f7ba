"""Model zoo: registered architectures, attention modules and counting (`pacb_edge.models`)."""

from pacb_edge.models import mobilenetv2, mobilenetv3, repvgg, resnet, vgg  # noqa: F401  (registers the builders)
from pacb_edge.models.attention import ATTENTIONS, ChannelAttentionBase, create_attention, list_attentions
from pacb_edge.models.counting import count_flops, count_params
from pacb_edge.models.registry import builder_default, create_model, list_models, register_model
from pacb_edge.models.spec import ModelSpec

__all__ = [
    "ATTENTIONS",
    "ChannelAttentionBase",
    "ModelSpec",
    "builder_default",
    "count_flops",
    "count_params",
    "create_attention",
    "create_model",
    "list_attentions",
    "list_models",
    "register_model",
]
