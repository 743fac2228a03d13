"""MONA (You et al., "Mine yOur owN Anatomy", TPAMI 2024, arXiv 2209.13476): two stages.

Stage 1, `MonaPretrain` (MONA_SPEC section 3): relational pre-training by similarity
distillation against queues, a global branch (pooled bottleneck) and a local branch (one
embedding per 64x64 patch of the output), plus the supervised loss on the labeled half.

Stage 2, `MonaFinetune` (section 4): mean teacher with strong augmentation of unlabeled
slices, confidence-weighted pseudo-labels (L_unsup), hard-pixel anatomical contrast
(tailness, L_contrast), equivariance under random similarity + TPS warps (consistency,
L_eqv) and nearest-neighbour mining with a gradient to the student (diversity, L_nn).

`stages` declares them to the engine, which runs stage 1 into RUN/pretrain and stage 2 into
RUN/finetune, stage 2 starting from stage 1's student.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mona.augment.strong import StrongAugment, apply_photometric, draw_photometric, photometric_view
from mona.augment.warp import random_equivariance_warp
from mona.augment.weak import draw_weak_affine, resize_images, resize_labels, warp_views, weak_views
from mona.config import Config, MonaConfig
from mona.losses import (
    AnatomicalContrastLoss,
    ClassMemoryBank,
    EquivarianceLoss,
    FeatureQueue,
    NearestNeighbourLoss,
    SimilarityDistillationLoss,
    SupervisedSegLoss,
    extract_patches,
)
from mona.methods.base import Method, Stage, frozen_copy, sigmoid_rampup
from mona.models.heads import LocalHead, ProjectionMLP, RepresentationHead
from mona.models.unet import frozen_batchnorm_statistics


class MonaPretrain(Method):
    """Stage 1: supervised loss + global and local similarity distillation (ISD).

    The global queue holds the pooled embeddings of the last `queue_size` (K = 36) images.
    The spec gives the local branch "the same KL against a queue of patch embeddings" and no
    size of its own; we read it as the same K images, so the local queue holds K images' worth
    of patch embeddings (36 x 49 = 1764 at 256 px: patches are 64 px with stride 32), and both
    queues span the same past steps. `local_queue_size` > 0 sets the number of patches instead
    (36 was the earlier reading: the anchors were the last patches of about one slice).
    """

    name = "mona_pretrain"
    uses_unlabeled = True

    def __init__(self, num_classes: int, config: MonaConfig, image_size: int = 256):
        super().__init__(num_classes, ema=config.ema)
        self.config = config
        self.global_head = ProjectionMLP(256, 256, 512)
        self.global_predictor = ProjectionMLP(512, 512, 512)
        self.local_head = LocalHead(num_classes)
        self.local_predictor = LocalHead(num_classes)
        self.teacher_global_head = frozen_copy(self.global_head)
        self.teacher_local_head = frozen_copy(self.local_head)
        local_dim = num_classes * 8 * 8
        self.global_queue = FeatureQueue(config.queue_size, 512)
        patches = ((image_size - config.patch_size) // config.patch_stride + 1) ** 2
        self.local_queue = FeatureQueue(config.local_queue_size or config.queue_size * patches, local_dim)
        self.seg_loss = SupervisedSegLoss()
        self.distill = SimilarityDistillationLoss(config.tau_student, config.tau_teacher)

    def ema_pairs(self):
        return super().ema_pairs() + [
            (self.teacher_global_head, self.global_head),
            (self.teacher_local_head, self.local_head),
        ]

    def _local(self, logits: torch.Tensor, head: nn.Module, predictor: nn.Module | None = None) -> torch.Tensor:
        patches = extract_patches(logits.float(), self.config.patch_size, self.config.patch_stride)
        embedding = head(patches)
        if predictor is not None:
            embedding = predictor(embedding)
        return embedding.flatten(1)

    def prepare(self, labeled, unlabeled, progress, generator):
        """The weak affine maps and the teacher view's photometric draws, on the batch's device."""
        batch, device = labeled["image"].shape[0] + unlabeled["image"].shape[0], labeled["image"].device
        weak = draw_weak_affine(batch, generator, device)
        return {"weak": weak, "photometric": draw_photometric(generator, batch, device)}

    def training_step(self, labeled, unlabeled, progress, prepared):
        images_l, labels_l, images_u = warp_views(prepared["weak"], labeled, unlabeled)
        student_view = torch.cat([images_l, images_u])
        teacher_view = apply_photometric(student_view, prepared["photometric"])
        student = self.model(student_view)
        with torch.no_grad():
            teacher = self.teacher(teacher_view)
            z_teacher = self.teacher_global_head(teacher.bottleneck.float().mean((2, 3)))
            local_teacher = self._local(teacher.logits, self.teacher_local_head)
        sup = self.seg_loss(student.logits[: images_l.shape[0]], labels_l)
        z_student = self.global_predictor(self.global_head(student.bottleneck.float().mean((2, 3))))
        global_kl = self.distill(z_student, z_teacher, self.global_queue.items())
        local_student = self._local(student.logits, self.local_head, self.local_predictor)
        local_kl = self.distill(local_student, local_teacher, self.local_queue.items())
        self.global_queue.push(z_teacher)
        self.local_queue.push(local_teacher)
        loss = sup + self.config.global_weight * global_kl + self.config.local_weight * local_kl
        return {"loss": loss, "sup": sup.detach(), "global": global_kl.detach(), "local": local_kl.detach()}


class MonaFinetune(Method):
    """Stage 2: L_sup + r(t) (w_c L_contrast + w_u L_unsup + w_e L_eqv + w_n L_nn), each switchable.

    r(t) is 1 as in the spec unless `mona.rampup` > 0, which ramps the unlabeled losses in
    with the mean teacher's sigmoid: from a weak stage-1 start (short schedules) they
    otherwise pull the student toward its own wrong predictions before L_sup has taught it
    anything (docs/method.md, departures).
    """

    name = "mona"
    uses_unlabeled = True

    def __init__(self, num_classes: int, config: MonaConfig):
        super().__init__(num_classes, ema=config.ema)
        self.config = config
        self.rep_head = RepresentationHead(config.embed_dim, stride=config.representation_stride)
        self.teacher_rep_head = frozen_copy(self.rep_head)
        sizes = [config.background_bank_size] + [config.bank_size] * (num_classes - 1)
        self.negative_bank = ClassMemoryBank(sizes, config.embed_dim)
        self.nn_bank = FeatureQueue(config.nn_bank_size, config.embed_dim)
        self.seg_loss = SupervisedSegLoss()
        self.contrast = AnatomicalContrastLoss(
            num_queries=config.num_queries, num_negatives=config.num_negatives,
            temperature=config.contrast_temperature, entropy_split=config.entropy_split,
        )
        self.equivariance = EquivarianceLoss()
        self.nearest = NearestNeighbourLoss(config.nn_topk)
        self.strong = StrongAugment(enabled=config.strong_aug, diffeomorphism=config.diffeomorphism)

    def ema_pairs(self):
        return super().ema_pairs() + [(self.teacher_rep_head, self.rep_head)]

    def _unsup(self, logits: torch.Tensor, pseudo: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
        """Pixel CE to the pseudo-label, each image weighted by its share of confident pixels."""
        per_pixel = F.cross_entropy(logits.float(), pseudo, reduction="none")
        weight = (confidence >= self.config.confidence_threshold).float().mean((1, 2))
        return (per_pixel.mean((1, 2)) * weight).mean()

    def _equivariance(self, images, labels, confidence, generator) -> torch.Tensor:
        """KL(W(softmax(student(view1))) || student(W(view2))) on confident pixels.

        `labels` and `confidence` (B, H, W) say which pixels count: the truth with confidence 1
        on labeled slices, the teacher's pseudo-label and confidence on unlabeled ones (the
        spec's "label or pseudo-label"). `mona.eqv_pixels` "foreground" (spec) keeps pixels whose
        label is not background; "confident" keeps background too, so the loss also penalises
        foreground the warped view invents; "balanced" keeps the same pixels as "confident" but
        averages per class, then over classes (docs/method.md). Its two extra student forwards
        leave BatchNorm's running statistics alone (`frozen_batchnorm_statistics`).
        """
        warp = random_equivariance_warp(generator, images.shape[0], images.shape[-2:], images.device,
                                        kernel_centres=self.config.eqv_tps_centres)
        second_view = photometric_view(images, generator)
        with frozen_batchnorm_statistics(self.model):
            with torch.no_grad():
                target = warp(torch.softmax(self.model(images).logits.float(), dim=1))
            prediction = self.model(warp(second_view)).logits
        mask = (warp(confidence) >= self.config.eqv_confidence) & warp.inside
        pixels = self.config.eqv_pixels
        warped_labels = warp(labels) if pixels in ("foreground", "balanced") else None  # "confident" needs none
        if pixels == "foreground":
            mask &= warped_labels != 0
        return self.equivariance(target, prediction, mask, warped_labels if pixels == "balanced" else None)

    def training_step(self, labeled, unlabeled, progress, generator):
        cfg = self.config
        images_l, labels_l, images_u = weak_views(labeled, unlabeled, generator)
        n_labeled = images_l.shape[0]
        with torch.no_grad():
            teacher_u = self.teacher(images_u)
            probs_u = torch.softmax(teacher_u.logits.float(), dim=1)
            confidence, pseudo = probs_u.max(dim=1)
        strong_u, pseudo_s, confidence_s = self.strong(images_u, pseudo, confidence, generator)
        inputs = torch.cat([images_l, strong_u])
        student = self.model(inputs)
        sup = self.seg_loss(student.logits[:n_labeled], labels_l)
        unsup = self._unsup(student.logits[n_labeled:], pseudo_s, confidence_s)
        losses = {"sup": sup, "unsup": unsup}
        ramped = cfg.unsup_weight * unsup
        if cfg.tailness or cfg.diversity:
            embeddings = self.rep_head(student.decoder)
        if cfg.tailness:
            with torch.no_grad():
                teacher_all = self.teacher(inputs)
                teacher_embeddings = self.teacher_rep_head(teacher_all.decoder)
                teacher_probs = torch.softmax(teacher_all.logits.float(), dim=1)
            is_labeled = torch.arange(inputs.shape[0]) < n_labeled  # on the host: it sets L_contrast's shapes
            size = tuple(embeddings.shape[-2:])
            contrast = self.contrast(
                embeddings, teacher_embeddings, resize_labels(torch.cat([labels_l, pseudo_s]), size),
                resize_images(teacher_probs, size), is_labeled, progress, self.negative_bank, generator,
            )
            losses["contrast"] = contrast
            ramped = ramped + cfg.contrast_weight * contrast
        if cfg.consistency:
            if cfg.eqv_labeled:
                certain = torch.ones(labels_l.shape, dtype=confidence.dtype, device=confidence.device)
                eqv = self._equivariance(torch.cat([images_l, images_u]), torch.cat([labels_l, pseudo]),
                                         torch.cat([certain, confidence]), generator)
            else:
                eqv = self._equivariance(images_u, pseudo, confidence, generator)
            losses["eqv"] = eqv
            ramped = ramped + cfg.eqv_weight * eqv
        if cfg.diversity:
            student_vectors = embeddings[n_labeled:].float().mean((2, 3))
            with torch.no_grad():
                teacher_vectors = self.teacher_rep_head(teacher_u.decoder).float().mean((2, 3))
            nn_loss = self.nearest(student_vectors, self.nn_bank.items())
            self.nn_bank.push(teacher_vectors)
            losses["nn"] = nn_loss
            ramped = ramped + cfg.nn_weight * nn_loss
        total = sup + sigmoid_rampup(progress, cfg.rampup) * ramped
        return {"loss": total, **{key: value.detach() for key, value in losses.items()}}


def stages(config: Config) -> list[Stage]:
    """Stage 1 (`pretrain/`) then stage 2 (`finetune/`), as `mona.stage` and `mona.pretrain` say.

    Stage 2 starts from `mona.init_from` when set (another run's stage 1), else from this run's
    stage 1 (also when only `--stage finetune` runs, after an earlier `--stage pretrain`).
    """
    cfg = config.mona
    pretrain = Stage("pretrain", lambda num_classes: MonaPretrain(num_classes, cfg, config.data.image_size),
                     cfg.pretrain_iterations or config.train.iterations, cfg.pretrain_batch_labeled,
                     cfg.pretrain_batch_unlabeled)
    finetune = Stage("finetune", lambda num_classes: MonaFinetune(num_classes, cfg), config.train.iterations,
                     cfg.finetune_batch_labeled, cfg.finetune_batch_unlabeled, nesterov=True,
                     init_from=cfg.init_from or ("pretrain" if cfg.pretrain else ""))
    if cfg.stage == "pretrain":
        return [pretrain]
    if cfg.stage == "finetune" or not cfg.pretrain:
        return [finetune]
    return [pretrain, finetune]
