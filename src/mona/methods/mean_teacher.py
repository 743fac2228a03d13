"""Mean teacher (Tarvainen & Valpola, NeurIPS 2017) as in SSL4MIS, with a ramp that scales.

Student and teacher see the same weakly augmented slices; the teacher sees only the unlabeled
ones (as in SSL4MIS: its output on labeled slices is never used), with clipped Gaussian noise;
the consistency loss is the MSE between their softmax maps on unlabeled slices, weighted by
`consistency` x a sigmoid ramp over a *fraction* of the run (SSL4MIS's ramp is tuned for
30000 iterations and stays near 0 in shorter runs).
"""

from __future__ import annotations

import torch

from mona.augment.weak import draw_weak_affine, warp_views
from mona.config import Config, MeanTeacherConfig
from mona.losses.supervised import SupervisedSegLoss
from mona.methods.base import Method, Stage, sigmoid_rampup
from mona.randomness import device_generator, host_to_device


class MeanTeacher(Method):
    name = "mean_teacher"
    uses_unlabeled = True

    def __init__(self, num_classes: int, config: MeanTeacherConfig):
        super().__init__(num_classes, ema=config.ema)
        self.config = config
        self.seg_loss = SupervisedSegLoss()

    def prepare(self, labeled, unlabeled, progress, generator):
        """The weak affine maps (labeled then unlabeled images), the teacher's noise and the consistency
        weight, on the batch's device."""
        images_u = unlabeled["image"]
        weak = draw_weak_affine(labeled["image"].shape[0] + images_u.shape[0], generator, images_u.device)
        noise_generator = device_generator(generator, images_u.device)
        noise = torch.randn(images_u.shape, generator=noise_generator, device=images_u.device)
        weight = torch.tensor(self.config.consistency * sigmoid_rampup(progress, self.config.rampup))
        return {"weak": weak, "noise": noise,
                "weight": host_to_device(weight, images_u.device)}

    def training_step(self, labeled, unlabeled, progress, prepared):
        images_l, labels_l, images_u = warp_views(prepared["weak"], labeled, unlabeled)
        n_labeled = images_l.shape[0]
        noise = prepared["noise"] * self.config.noise
        noise = noise.clamp(-2 * self.config.noise, 2 * self.config.noise).to(images_u.dtype)
        student_logits = self.model(torch.cat([images_l, images_u])).logits
        with torch.no_grad():
            teacher_logits = self.teacher(images_u + noise).logits
        sup = self.seg_loss(student_logits[:n_labeled], labels_l)
        student_prob = torch.softmax(student_logits[n_labeled:].float(), dim=1)
        teacher_prob = torch.softmax(teacher_logits.float(), dim=1)
        consistency = torch.mean((student_prob - teacher_prob) ** 2)
        loss = sup + prepared["weight"] * consistency
        return {"loss": loss, "sup": sup.detach(), "consistency": consistency.detach()}


def stages(config: Config) -> list[Stage]:
    """One stage in the run folder itself."""
    return [Stage("", lambda num_classes: MeanTeacher(num_classes, config.mean_teacher), config.train.iterations,
                  config.data.batch_labeled, config.data.batch_unlabeled, nesterov=config.optim.nesterov)]
