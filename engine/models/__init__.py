"""Models: encoder, fusion and mid-fusion registries and the multimodal model built from a preset's spec."""

from .encoders import ENCODERS
from .fusion import FUSIONS
from .mid_fusion import MID_FUSIONS
from .multimodal import (ModalitySpec, ModelOutput, ModelSpec, MultimodalModel, batchnorm_needs_two, build_model,
                         default_encoder)

__all__ = ["ENCODERS", "FUSIONS", "MID_FUSIONS", "ModelOutput", "ModalitySpec", "ModelSpec", "MultimodalModel",
           "batchnorm_needs_two", "build_model", "default_encoder"]
