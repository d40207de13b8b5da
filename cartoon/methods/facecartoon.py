"""Face cartoonization with a landmark consistency loss: White-box plus MTCNN's O-Net.

The FacialCartoonization report (Hsu, Yang, Liu and others, on a White-box base) trains
White-box's generator and its two discriminators on 128 px faces and adds a facial landmark
representation to the loss:

  G = content * L_content + tv * L_tv + landmark * L_landmark + structure * L_structure
      + texture * L_texture + surface * L_surface

with, in its training command, TV 1e5, surface 0.2, texture 5, content 20 and structure 0.6
(the class defaults here). Its landmark weight is not published, and its public code never
implemented the term (README only) and dropped the U-Net skip of the upsampling block; both
are built here, the skip kept (White-box's generator, unchanged).

The landmark term (``cartoon.landmarks.landmark_loss``): on face batches, whose crops are
aligned to one template (``cartoon.data.faces``) so the face is the same square in every image,
the square is cut from the photo and from the output by differentiable sampling, O-Net's five
points on the photo (no gradient) are the target, and the L1 between the output's points and
the target, as fractions of the square, is the term, counted only for crops whose photo O-Net
sees as a face (probability >= ``landmark_min_probability``). On scenery batches it is 0.

The landmark weight: the term starts near 0 (after pretraining the output is close to the
photo, so its landmarks are too), and grows as the adversarial terms pull the output away; a
drift of 2 px in a 48 px O-Net crop is an L1 of about 0.04. The default, 10, makes such a drift
cost about 0.4, comparable with the report's weighted texture term (5 x about 0.1 to 0.25 at the
start of training, measured in the default run): large enough to hold eyes and mouth in place,
not so large that it outweighs the style terms. See README: Faces.
"""

from __future__ import annotations

import torch
from pydantic import Field

from cartoon.landmarks import LandmarkModel, landmark_loss, load_onet
from cartoon.methods import register
from cartoon.methods.base import Batch, Phase
from cartoon.methods.whitebox import GeneratorParams, PretrainParams, TrainParams, WhiteBox, WhiteBoxParams
from cartoon.params import Params


class FaceTrainParams(TrainParams):
    tv_weight: float = Field(1e5, ge=0, description="total-variation weight, TV normalised by 3 H W (report: 1e5)")
    surface_weight: float = Field(0.2, ge=0, description="surface (guided-filter) adversarial weight of G (report: 0.2)")
    texture_weight: float = Field(5.0, ge=0, description="texture (random grayscale) adversarial weight of G (report: 5)")
    content_weight: float = Field(20.0, ge=0, description="content weight, L1 of VGG conv4_4 to the photo / (h w c) (report: 20)")
    structure_weight: float = Field(0.6, ge=0, description="structure weight, L1 of VGG conv4_4 to the superpixel image / (h w c) (report: 0.6)")
    landmark_weight: float = Field(
        10.0, ge=0, description="landmark weight: L1 between O-Net's five points on output and photo, fractions of the face square (not published; see the module doc)"
    )
    landmark_min_probability: float = Field(
        0.9, ge=0, le=1, description="a face crop counts in the landmark term only if O-Net's face probability on the photo is at least this"
    )


class FaceCartoonParams(WhiteBoxParams):
    generator: GeneratorParams = GeneratorParams()
    pretrain: PretrainParams = PretrainParams()
    train: FaceTrainParams = FaceTrainParams()


@register
class FaceCartoon(WhiteBox):
    name = "facecartoon"
    title = "Face cartoonization with a landmark loss"
    reference = (
        "Wang, Yu. Learning to Cartoonize Using White-box Cartoon Representations. CVPR 2020; with the facial "
        "landmark representation of the FacialCartoonization report and MTCNN's O-Net (Zhang et al. 2016)."
    )
    Params = FaceCartoonParams
    params: FaceCartoonParams
    requires_face_batches = True

    def load_pretrained(self, params: Params, phase: Phase) -> None:
        if phase == "train":  # pretraining is White-box's pixel L1 alone
            self.landmarks: LandmarkModel = load_onet(params.landmarks.weights, self.device)

    def tags(self) -> dict[str, str]:
        if not hasattr(self, "landmarks"):
            return {}
        return {"landmarks.source": self.landmarks.source, "landmarks.sha256": self.landmarks.sha256}

    def extra_generator_terms(self, batch: Batch, output: torch.Tensor) -> dict[str, tuple[float, torch.Tensor]]:
        t = self.params.train
        boxes = batch.get("face_boxes")
        if boxes is None:  # a scenery batch
            return {"landmark": (t.landmark_weight, output.new_zeros((), dtype=torch.float32))}
        term = landmark_loss(self.landmarks, batch["photo"], output, boxes, t.landmark_min_probability)
        return {"landmark": (t.landmark_weight, term)}
