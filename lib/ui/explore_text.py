"""Short explanations for the Explore pages, one per curriculum item (23-33).

Each is shown beside the plot or number that demonstrates it; keeping them in
one place keeps the pages short and the wording consistent.
"""
from __future__ import annotations

LESSONS: dict[int, tuple[str, str]] = {
    23: ("Closed set vs open set",
         "**Classification** is closed-set: every test face belongs to one of the training identities, so the "
         "classifier can name it. **Verification** is open-set: the two faces may belong to people never seen "
         "in training, so there is no class to name; we can only compare their embeddings. The dev images "
         "below are closed-set, the verification images open-set."),
    24: ("Separable is not discriminative",
         "Cross-entropy only needs each class on the right side of the boundaries, so its features are "
         "**separable**: classes lie in long petals that touch at the origin and nearby classes' edges meet. "
         "For verification we need **discriminative** features: tight within an identity and far from the "
         "others, so that one threshold on the similarity works even for new people."),
    25: ("Cosine similarity, thresholds, ROC",
         "Two faces are declared the same person when the cosine of their embeddings is above a threshold. "
         "Moving the threshold trades false accepts (FAR, different people above it) against false rejects "
         "(same person below it). The **ROC** curve draws that trade-off; **AUC** summarises it (1 = perfect), "
         "the **EER** is the error where FAR equals the false reject rate, and **TPR@FPR=1e-3** asks how many "
         "true pairs pass when only 1 in 1,000 impostors may."),
    26: ("Center loss",
         "Cross-entropy plus a pull of every feature toward a learned center of its identity: classes stay "
         "separable (CE) and become compact (center term). The weight of the center term sets the balance."),
    27: ("Triplet loss",
         "For each anchor image, the farthest image of the same person must be closer than the nearest image "
         "of anyone else, by a margin. It works on distances directly, so it needs batches holding several "
         "images of each identity."),
    28: ("SphereFace: multiplicative angular margin",
         "The target class must win with its angle **multiplied** by m. The curve falls m times faster, so "
         "the margin grows with the angle between classes: between two classes theta apart, a class may only "
         "occupy angles below theta/(m+1)."),
    29: ("CosFace: additive cosine margin",
         "The target class must win with **m subtracted from its cosine**. The curve is the softmax curve "
         "shifted down by s*m: a margin constant in cosine, which is a wide angle near theta = 0 and a narrow "
         "one near 90 degrees."),
    30: ("ArcFace: additive angular margin",
         "The target class must win with **m added to its angle**. The margin is the same m radians "
         "everywhere on the sphere (a geodesic distance), the cleanest geometry of the three and the usual "
         "first choice."),
    31: ("Joint vs sequential training",
         "**Joint** (the course's word): one loss from the start that adds a weighted metric term to "
         "cross-entropy, e.g. 0.7 × CE + 0.3 × center loss: CE keeps the identities apart while the metric term "
         "pulls each one tight. **Sequential**: train with cross-entropy first, then fine-tune with the margin "
         "loss, its class weights started from the CE classifier. A large margin alone, from scratch, can stall "
         "(the target never wins, so the gradients point nowhere useful); the CE term of a joint loss, or CE "
         "features to start from, avoid that."),
    32: ("Saliency",
         "A saliency map shows which pixels move a chosen output. For a class, that output is the class score; "
         "for a verification pair it is the cosine similarity of the two embeddings, attributed to each face "
         "in turn. Maps explain one model on one image: compare models on the same face to see what a loss "
         "changes."),
    33: ("What a checkpoint holds",
         "The weights (model.safetensors: tensors only, nothing runs on load, unlike a pickled .pt), the loss "
         "head's own weights (loss.safetensors, e.g. ArcFace's class centers) and meta.json: the model spec to "
         "rebuild the network, the training config, class names, metrics and normalization. Weights saved "
         "from nn.DataParallel carry a `module.` prefix on every name; FaceLab strips it on load."),
}


# Beside the nearest faces of a face on the Embeddings page (the TensorBoard Projector's idea).
NEIGHBOURS = ("**What to look for:** in a good face embedding the nearest faces of a photo are other photos "
              "of the same person, at a high cosine, and the first stranger comes clearly lower: that gap is "
              "what a verification threshold uses. Features trained only to separate the training classes "
              "(cross-entropy) often bring in strangers with the same pose, lighting or background instead; "
              "an untrained network ranks mostly by such image statistics.")


# Beside "Embeddings over time" on the Embeddings page (curriculum items 24, 30, 31).
OVER_TIME = ("**What to look for:** press play and watch each color gather: a discriminative loss (ArcFace, "
             "above all when fine-tuning from cross-entropy) pulls the same identity together (its cosine rises) "
             "and keeps the others apart, so the gap between the two numbers widens epoch by epoch.")


def lesson(number: int) -> tuple[str, str]:
    """(title, text) of curriculum item ``number``."""
    if number not in LESSONS:
        raise ValueError(f"lesson: no explanation for curriculum item {number}")
    return LESSONS[number]
