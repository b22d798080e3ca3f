"""What the Train page needs, without Streamlit: the hyperparameter fields (type,
range, help, and the lesson shown beside each), recipe values, facts about the
model and data that will train, and the run dict that gets submitted.

The fields are data so the page renders every widget with one generic function
(like the augmentation registry); TrainConfig (lib/train/config.py) stays the
single authority on what is valid: build_run() validates through it.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from pathlib import Path

from lib.base import config
from lib.train.config import TrainConfig, config_from_run
from lib.train.recipes import Recipe


@dataclass(frozen=True)
class Field:
    name: str  # a TrainConfig field
    label: str
    kind: str  # "choice" | "bool" | "float" | "int"
    help: str
    low: float = 0.0
    high: float = 1.0
    step: float | None = None
    choices: tuple = ()
    shown_if: tuple = ()  # (other field, value) this field depends on
    lesson: str = ""  # shown beside the widget: what changing it does


GROUPS: dict[str, tuple[Field, ...]] = {
    "Optimizer": (
        Field("optimizer", "Optimizer", "choice", "SGD with momentum (course default for HW2P2) or AdamW "
              "(ConvNeXt's choice).", choices=("sgd", "adamw")),
        Field("lr", "Learning rate", "float", "Peak rate, reached after the warm-up.", 1e-5, 2.0, 1e-4),
        Field("momentum", "Momentum (β1)", "float", "Share of the previous update kept (AdamW: its β1).", 0.0,
              0.999, 0.01),
        Field("nesterov", "Nesterov", "bool", "Look-ahead momentum for SGD.", shown_if=("optimizer", "sgd")),
        Field("weight_decay", "Weight decay", "float", "Pulls weights toward 0 (not biases or norm scales).",
              0.0, 0.5, 1e-4),
    ),
    "Schedule": (
        Field("epochs", "Epochs", "int", "Passes over the training images.", 1, 500, 1),
        Field("batch_size", "Batch size", "int", "Images per step.", 2, 1024, 8),
        Field("schedule", "Schedule", "choice", "Cosine decay to 0, or a constant rate.", choices=("cosine", "constant")),
        Field("warmup_epochs", "Warm-up epochs", "float", "Linear ramp from lr/100 to lr.", 0.0, 50.0, 0.5,
              lesson="A warm-up keeps the first, large and noisy gradients of a fresh network from "
                     "throwing it into a bad region before the statistics (BatchNorm, Adam) settle."),
    ),
    "Regularisation": (
        Field("mix", "Batch mix", "choice", "MixUp or CutMix blend pairs of images and their labels.",
              choices=("none", "mixup", "cutmix"),
              lesson="**MixUp** blends two faces and their labels with weight λ ~ Beta(α, α); **CutMix** pastes "
                     "a box of one face into another, labels weighted by area. Both forbid memorising single "
                     "images. They make soft labels, so they work with cross-entropy only, not margin losses."),
        Field("mix_alpha", "Mix α", "float", "α of Beta(α, α).", 0.05, 10.0, 0.05, shown_if=("mix", "!none")),
        Field("drop_path_rate", "Stochastic depth", "float", "Highest drop rate of a residual branch "
              "(the last block; earlier blocks drop less).", 0.0, 0.5, 0.05,
              lesson="**Stochastic depth** skips a whole residual branch at random during training (the block "
                     "becomes the identity), so the net trains as an ensemble of shallower nets; at evaluation "
                     "every block runs. Like dropout, it acts in training only."),
        Field("ema", "EMA", "bool", "Evaluate and save an exponential moving average of the weights.",
              lesson="**EMA** keeps a running average of the weights, θ̄ ← d·θ̄ + (1−d)·θ, over about "
                     "1/(1−d) steps. The average sits in a flatter spot than the last noisy step, which often "
                     "evaluates better; training itself is unchanged."),
        Field("ema_decay", "EMA decay d", "float", "Closer to 1 averages more steps.", 0.5, 0.99999, 0.001,
              shown_if=("ema", True)),
        Field("grad_clip", "Gradient clipping", "float", "Max global gradient norm; 0 = off.", 0.0, 100.0, 0.5),
    ),
    "System": (
        Field("precision", "Precision", "choice", "auto: bf16 where the hardware has bf16 units (recent GPUs, "
              "CPUs with AMX), fp16 with loss scaling on older GPUs, else fp32. Evaluation is always fp32.",
              choices=("auto", "fp32", "bf16", "fp16")),
        Field("channels_last", "channels_last", "bool", "NHWC layout: faster convolutions on most hardware."),
        Field("compile_model", "torch.compile", "choice", "auto: on a GPU (fused kernels, a minute or two to "
              "compile first); off on a CPU, where compiling takes minutes and gains a few percent.",
              choices=("auto", "on", "off")),
        Field("workers", "Data workers", "int", "Processes that augment batches (0 = in the training process).", 0, 16, 1),
        Field("augment_on", "Augment on", "choice", "auto: on the GPU when there is one (uint8 batches go there and "
              "are augmented a whole batch at a time), else in the loader.", choices=("auto", "loader", "device")),
        Field("seed", "Seed", "int", "Same seed, same run.", 0, 2**31 - 1, 1),
    ),
}
# Shown with the loss, for the losses that train on P x K batches (triplet, center); P follows the batch size.
PK_FIELD = Field("images_per_identity", "Images per identity (K)", "int",
                 "K images of each identity in every batch; the batch then holds P = batch size / K identities.",
                 2, 32, 1)
# Shown only on a machine with several GPUs (gpu_count() > 1): one job trained across them (DDP).
GPUS_FIELD = Field("gpus_per_job", "GPUs per job", "int", "Train one job on several GPUs at once "
                   "(DistributedDataParallel): each GPU trains on batch size / N images of every batch, "
                   "so the batch size stays the same.", 1, 8, 1)
# Shown with a loss that is not already CE plus a metric term: the course's joint training.
JOINT_FIELD = Field("joint_metric", "Joint metric term", "choice", "Add a weighted center term to this loss, "
                    "trained together from the first step.", choices=("none", "center"))
JOINT_WEIGHT_FIELD = Field("joint_weight", "Joint weight w", "float", "(1 − w) × the loss above + w × the "
                           "center term; the course's example is w = 0.3.", 0.0, 1.0, 0.05)
JOINT_LESSON = ("**Joint training** (the course's sense): one objective, (1 − w) × the loss above + w × a metric "
                "term, trained together from the first step; the course's example is 0.7 × CE + 0.3 × center. "
                "The center term pulls each face toward its identity's learned center, so faces of one person "
                "cluster tighter than cross-entropy alone asks for.")
FIELDS: dict[str, Field] = ({f.name: f for group in GROUPS.values() for f in group} | {PK_FIELD.name: PK_FIELD}
                            | {GPUS_FIELD.name: GPUS_FIELD, JOINT_FIELD.name: JOINT_FIELD,
                               JOINT_WEIGHT_FIELD.name: JOINT_WEIGHT_FIELD})


def gpu_count() -> int:
    import torch
    return torch.cuda.device_count()


def gpus_field(gpus: int) -> Field:
    """The GPUs-per-job input for a machine with ``gpus`` GPUs."""
    return replace(GPUS_FIELD, high=gpus)
PK_WHY = {
    "triplet": "Batch-hard mining needs positives in the batch: each image is compared with the farthest image "
               "of its own identity and the nearest of another, and random batches over hundreds of identities "
               "rarely hold two images of one person.",
    "center": "The center term then pulls K images of each identity toward its center in every step, rather "
              "than mostly single images of many identities.",
}

LABEL_SMOOTHING_LESSON = (
    "**Label smoothing** ε trains toward (1−ε) on the true identity and ε/C on every class instead of a "
    "one-hot target. The logits then need not grow without bound to lower the loss, which curbs "
    "over-confidence; {example}")
LAUNCH_HINT = "Change the setting named above and launch again."
RUNS_FOLDER_HINT = ("this is the runs folder, not a setting of this page: once it can be written again (as the "
                    "message says), press Launch again. Everything set on this page is kept.")
DROPOUT_LESSON = (
    "**Dropout** before the classifier (p = {p} in this model; set it on the Build page) zeroes features at "
    "random in training and scales the rest by 1/(1−p); in evaluation it does nothing. Training and dev "
    "numbers are therefore measured on slightly different networks.")
RECIPE_MODEL = "The recipe's model"
SCHEMES = {
    "scratch": "From scratch",
    "sequential": "Fine-tune a checkpoint (sequential)",
}
SCHEME_LESSON = (
    "**From scratch** starts from random weights and trains with the loss of section 3 from the first step. "
    "**Joint** training, in the course's sense, is one such loss: cross-entropy plus a weighted metric term "
    "trained together (the course's example: 0.7 × CE + 0.3 × center or triplet; the center and triplet "
    "losses below add their term to CE). **Sequential** training first learns separable features with plain "
    "cross-entropy, then fine-tunes that checkpoint with a margin loss; its class weights start from the CE "
    "classifier. Margin losses trained from scratch can stall near chance, and fine-tuning is the usual remedy.")


def label_smoothing_lesson(identities: int, epsilon: float) -> str:
    """The lesson with the numbers of this run: C = the data set's identities, ε = the chosen value."""
    classes = max(1, int(identities))
    if epsilon <= 0:
        example = f"with ε = 0 the target over these {classes:,} identities is one-hot: 1 on the true one."
    else:
        true, other = 1 - epsilon + epsilon / classes, epsilon / classes
        example = (f"with ε = {epsilon:g} and the {classes:,} identities of this data set the true identity's "
                   f"target is {true:.4g} and every other one's {other:.2g}, not 1 and 0.")
    return LABEL_SMOOTHING_LESSON.format(example=example)


def pk_batch_lesson(loss: str, batch_size: int, k: int) -> str:
    """What a P x K batch is for this loss, with this run's numbers."""
    p = int(batch_size) // max(1, int(k))
    why = PK_WHY.get(loss, "The loss compares images of one identity within a batch, so each needs company there.")
    return (f"**P = {p} identities × K = {k} images per batch** (batch size {batch_size} = P × K: P follows "
            f"the batch size, set in section 4). {why}")


def pk_batch_problem(loss: str, batch_size: int, k: int) -> str:
    """Why this batch size and K cannot make P x K batches for ``loss`` ('' when they can)."""
    try:
        TrainConfig(loss=loss, batch_size=int(batch_size), images_per_identity=int(k)).check_pk_batches()
    except ValueError as err:
        return str(err)
    return ""


def launch_hint(err: Exception) -> str:
    """How to fix a refused launch: a runs folder that cannot be written is not a setting of the page."""
    from lib.jobs.queue import RunsFolderError
    return RUNS_FOLDER_HINT if isinstance(err, RunsFolderError) else LAUNCH_HINT


def recipe_summary(recipe: Recipe, spec: dict | None, source: str) -> str:
    """The recipe's description when the model that will train is the one it was written for;
    otherwise a sentence saying its settings are applied to this other model, whose time and
    accuracy its description does not predict."""
    own = recipe_spec(recipe)
    if own is None or spec is None or same_architecture(own, spec):
        return recipe.summary
    written_for = f"its own model `{own.get('name', 'model')}`" if recipe.model else f"the preset `{recipe.preset}`"
    return (f"The settings of **{recipe.name}** applied to **{spec.get('name', 'your model')}** ({source}). "
            f"The recipe was written for {written_for}: the time and accuracy its description gives are for "
            "that model, not this one.")


def recipe_spec(recipe: Recipe) -> dict | None:
    """The model a recipe was written for, as a spec dict (None for a recipe that names none)."""
    from lib.model.presets import PRESETS
    if recipe.model:
        return recipe.model
    return PRESETS[recipe.preset].to_dict() if recipe.preset in PRESETS else None


def same_architecture(first: dict, second: dict) -> bool:
    """The same network apart from its name and classifier size (Train sizes that to the data)."""
    from lib.model.spec import ModelSpec
    try:
        a, b = (replace(ModelSpec.from_dict(spec), name="", num_classes=1) for spec in (first, second))
    except (ValueError, TypeError, KeyError):
        return False
    return a == b


def defaults() -> dict:
    """TrainConfig's defaults for every field the page shows."""
    base = TrainConfig()
    return {name: getattr(base, name) for name in FIELDS} | {"label_smoothing": base.label_smoothing}


def recipe_values(recipe: Recipe) -> dict:
    """Widget values of a recipe: the defaults, overlaid with what the recipe sets."""
    values = defaults()
    values.update({key: value for key, value in recipe.config.items() if key in values})
    if values.get("drop_path_rate") is None:
        del values["drop_path_rate"]  # the model's own stochastic depth stays
    casts = {"float": float, "int": int}  # a widget takes only its own number type (JSON may say 2 for 2.0)
    return {key: casts[FIELDS[key].kind](value) if key in FIELDS and FIELDS[key].kind in casts else value
            for key, value in values.items()}


def recipe_loss_values(recipe: Recipe) -> dict:
    """The recipe's loss parameters (label smoothing included), typed as the loss's ParamSpecs say."""
    from lib.losses.registry import LOSSES
    specs = LOSSES.get(recipe.config.get("loss", "ce"), LOSSES["ce"]).params
    params = dict(recipe.config.get("loss_params") or {})
    if "label_smoothing" in specs:
        params.setdefault("label_smoothing", recipe_values(recipe)["label_smoothing"])
    return {name: (int if specs[name].kind == "int" else float)(value)
            for name, value in params.items() if name in specs and isinstance(value, (int, float))}


def recipe_state(recipe: Recipe, checkpoints: list[tuple[str, Path]]) -> tuple[dict, str]:
    """The Train page's widget values (session keys) for a recipe, and a note for the user ('' if none):
    hyperparameters, loss and its parameters, the model's source, and the checkpoint it fine-tunes."""
    from lib.model.presets import PRESETS
    state = {f"train.{name}": value for name, value in recipe_values(recipe).items() if name != "label_smoothing"}
    state.update({f"train.lp.{name}": value for name, value in recipe_loss_values(recipe).items()})
    state["train.loss"] = recipe.config.get("loss", "ce")
    init_from = recipe.config.get("init_from", "")
    checkpoint = checkpoint_choice(init_from, checkpoints)
    state["train.scheme"] = "sequential" if checkpoint else "scratch"
    note = "" if checkpoint or not init_from else (
        f"This recipe fine-tunes `{init_from}`, which is not here yet: train that checkpoint first. "
        "Until then the run starts from scratch.")
    if checkpoint:
        state["train.init_from"] = checkpoint
    if recipe.model:
        state["train.source"] = RECIPE_MODEL
    elif recipe.preset in PRESETS:
        state["train.source"], state["train.preset"] = "Preset", recipe.preset
    return state, note


def checkpoint_choice(init_from: str, found: list[tuple[str, Path]]) -> str | None:
    """The label, among list_checkpoints(), of the folder a recipe fine-tunes (None if absent)."""
    if not init_from:
        return None
    wanted = Path(init_from).expanduser()
    wanted = (wanted if wanted.is_absolute() else config.PROJECT_ROOT / wanted).resolve()
    return next((label for label, folder in found if Path(folder).resolve() == wanted), None)


def checkpoint_values(folder: Path, fallback: dict) -> tuple[dict, str]:
    """The settings for fine-tuning the checkpoint in ``folder``, and where they came from: those its
    run trained with (the run folder's config.json) where a widget can show them, else ``fallback``
    (the recipe's). A demo checkpoint has no run folder: the recipe's settings then."""
    from lib.store.run_folder import BEST_DIR, LAST_DIR, RunFolder
    folder = Path(folder)
    saved = RunFolder(folder.parent).train_config() if folder.name in (BEST_DIR, LAST_DIR) else {}
    values, taken = dict(fallback), 0
    for name, value in saved.items():
        if name in FIELDS and name in values and (typed := widget_value(FIELDS[name], value)) is not None:
            values[name], taken = typed, taken + 1
    return values, ("those its run trained with" if taken else "the recipe's (section 4)")


def widget_value(item: Field, value):
    """``value`` as ``item``'s widget holds it, or None when the widget cannot show it (a wrong type,
    a number out of its range, an unknown choice): a saved file never puts a widget out of bounds."""
    if item.kind == "choice":
        return value if value in item.choices else None
    if item.kind == "bool":
        return value if isinstance(value, bool) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not item.low <= value <= item.high:
        return None
    if item.kind == "int":
        return int(value) if float(value).is_integer() else None
    return float(value)


def is_shown(item: Field, values: dict) -> bool:
    if not item.shown_if:
        return True
    other, wanted = item.shown_if
    if isinstance(wanted, str) and wanted.startswith("!"):
        return values.get(other) != wanted[1:]
    return values.get(other) == wanted


def dataset_facts(root: Path) -> dict:
    """Identities and images of the training split (a directory listing, no decoding)."""
    from lib.data.datasets import list_identities, list_images
    train = Path(root) / "cls_data" / "train"
    identities = list_identities(train)
    return {"identities": len(identities), "images": sum(len(list_images(train / name)) for name in identities)}


def model_facts(spec: dict, num_classes: int) -> dict:
    """Parameters and MACs per image of the model as it will train (classifier sized to the data)."""
    from lib.model.profile import profile
    from lib.model.spec import ModelSpec, embedding_dim
    model = replace(ModelSpec.from_dict(spec), num_classes=max(1, num_classes))
    report = profile(model)
    return {"params": report.params, "macs": report.macs, "embedding": embedding_dim(model),
            "input": model.input_size, "dropout": model.head.dropout}


def step_facts(images: int, values: dict) -> str:
    """Steps per epoch and in total, and what warm-up and EMA mean in steps."""
    per_epoch = max(1, images // int(values["batch_size"]))
    total = per_epoch * int(values["epochs"])
    text = f"{images:,} images / batch {values['batch_size']} = **{per_epoch} steps per epoch**, {total:,} in all"
    if values.get("warmup_epochs"):
        text += f"; warm-up {round(values['warmup_epochs'] * per_epoch):,} steps"
        if values["warmup_epochs"] >= int(values["epochs"]):
            text += " (**the whole run: the rate never decays; shorten the warm-up**)"
    if values.get("ema"):
        horizon = 1 / max(1e-9, 1 - float(values["ema_decay"]))
        text += f"; the EMA averages about {horizon:,.0f} steps"
        if horizon > total / 2:
            text += " (**over half the run, so early weights still weigh in: a lower decay fits a short run**)"
    return text + "."


def checkpoint_problem(folder: Path, data_root: Path) -> str:
    """Why a checkpoint cannot be fine-tuned on this data set ('' when it can): the classifier
    and the class weights only carry over when the identities are the same."""
    from lib.store.meta import read_meta
    try:
        classes = list(read_meta(folder).classes)
    except (OSError, ValueError) as err:
        return f"its meta.json cannot be read ({err})"
    from lib.data.datasets import list_identities
    identities = list_identities(Path(data_root) / "cls_data" / "train")
    if classes and classes != identities:
        return (f"it was trained on {len(classes)} identities and this data set has {len(identities)} "
                "(or other names); fine-tune a checkpoint trained on the same data set")
    return ""


def checkpoint_spec(folder: Path) -> dict | None:
    """The model spec saved with a checkpoint (meta.json), or None if unreadable."""
    from lib.store.meta import peek_meta
    meta = peek_meta(folder)
    return meta.to_dict()["spec"] if meta is not None else None  # as JSON holds it: stages a list


def build_run(name: str, model: dict, data_root: Path, pipeline: list, loss: str, loss_params: dict,
              values: dict, init_from: str = "") -> dict:
    """The run dict the queue gets; ValueError (naming the field) if the engine would refuse it."""
    from lib.losses.registry import LOSSES
    settings = {key: values[key] for key in FIELDS if key in values and is_shown(FIELDS[key], values)}
    if loss not in LOSSES or not LOSSES[loss].needs_pk_batches:
        settings.pop(PK_FIELD.name, None)  # K means nothing to this loss: the run keeps the default
    settings.update(data_root=str(data_root), augment=copy.deepcopy(pipeline), loss=loss,
                    loss_params=dict(loss_params), init_from=init_from)
    run = {"name": name.strip(), "model": copy.deepcopy(model), "config": settings}
    config_from_run(run)
    return run


def param_step(param) -> float | int:
    """A round widget step of about 1% of a loss parameter's range (whole numbers for int params)."""
    if param.kind == "int":
        return 1
    return 10.0 ** math.floor(math.log10(max(1e-12, (param.high - param.low) / 100)))


def format_count(value: float) -> str:
    """12,345 -> '12.3 K'; 1.8e9 -> '1.80 G'."""
    if not value:
        return "0"
    exponent = min(4, int(math.log10(abs(value)) // 3))
    scaled = value / 1000 ** exponent
    return f"{scaled:.3g} {' KMGT'[exponent]}".rstrip()
