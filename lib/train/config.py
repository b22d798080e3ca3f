"""TrainConfig: everything one training run needs, as data.

A run file (``recipes/*.json``, or what the Train page submits) is
``{"name": ..., "model": <preset name or spec dict>, "config": {<TrainConfig fields>}}``;
``config_from_run`` turns it into a validated TrainConfig. ``validate()``
raises a ValueError naming the field and the bad value, like ModelSpec does.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from lib.base import config as paths
from lib.data.augment import DEFAULT_PIPELINE, validate_pipeline
from lib.data.transforms import BATCH_MIXES
from lib.losses.registry import LOSSES, validate_params
from lib.model.limits import check_training
from lib.model.presets import PRESETS
from lib.model.spec import ModelSpec
from lib.store.meta import META_FILE

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
COMPILE_CHOICES = ("auto", "on", "off")
AUGMENT_PLACES = ("auto", "loader", "device")
JOINT_METRICS = ("none", "center")  # metric terms lib/train/step.py joint_loss adds to the loss
SUBSET_KEYS = ("classes", "images", "pairs")


def _default_model() -> dict:
    return PRESETS["face_resnet"].to_dict()


@dataclass
class TrainConfig:
    """One training run. Numbers in their usual units; 0 switches an optional feature off."""

    name: str = "run"
    model: dict = field(default_factory=_default_model)  # ModelSpec.to_dict(); num_classes follows the data
    data_root: str = "data/lfw64"  # relative paths are relative to the project folder
    pairs_file: str = "val_pairs.txt"
    augment: list = field(default_factory=lambda: copy.deepcopy(DEFAULT_PIPELINE))
    loss: str = "ce"
    loss_params: dict = field(default_factory=dict)  # besides label_smoothing (below)
    # The course's joint training: (1 - joint_weight) x the loss above + joint_weight x a metric term,
    # trained together from the first step (the course's example: 0.7 x CE + 0.3 x center loss).
    joint_metric: str = "none"  # "none": the loss alone; "center": add the center term
    joint_weight: float = 0.3
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9  # SGD momentum; AdamW's beta1
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 1.0  # linear warm-up from lr/100 to lr
    min_lr_ratio: float = 0.0  # cosine ends at lr * min_lr_ratio
    epochs: int = 10
    batch_size: int = 64  # images per step; for a P x K loss it is P x K
    # Triplet and center losses compare images of one identity within a batch, so they train on
    # P x K batches: P identities with K images each (the other losses ignore these two fields).
    images_per_identity: int = 4  # K: at least 2, so every image has a positive in its batch
    identities_per_batch: int = 0  # P; 0: batch_size // K (set, P x K must equal batch_size)
    label_smoothing: float = 0.0
    ema: bool = False
    ema_decay: float = 0.999
    drop_path_rate: float | None = None  # None keeps the spec's stochastic depth
    mix: str = "none"  # "none" | "mixup" | "cutmix"
    mix_alpha: float = 0.2
    # "auto": bf16 autocast where the hardware has bf16 units (a recent GPU, a CPU with AMX), fp16 with
    # loss scaling on an older GPU, else fp32 (lib.base.device.resolve_precision)
    precision: str = "auto"
    channels_last: bool = True
    # torch.compile of the training forward pass. "auto": on a GPU only; on this project's 2-core CPU
    # the first step took 139 s to compile and the steps after were 2% faster (lib.base.device.compile_pays)
    compile_model: str = "auto"
    grad_clip: float = 0.0  # max global gradient norm
    seed: int = 0
    workers: int = 0  # DataLoader worker processes that augment batches (0: in the training process)
    # Where batches are augmented: "loader" (the DataLoader: its workers, or the training process),
    # "device" (the uint8 batch goes to the training device and is augmented there, a whole batch in
    # a few tensor ops), "auto" (the device when it is a GPU and the pipeline has a batched form)
    augment_on: str = "auto"
    threads: int = 0  # torch CPU threads (0: PyTorch's default, one per core)
    device: str = "auto"
    init_from: str = ""  # a checkpoint folder to start from (sequential fine-tuning)
    subset: dict = field(default_factory=dict)  # {"classes": N, "images": N, "pairs": N}: quick runs
    eval_flip: bool = False  # verification embeddings also from the mirrored face
    resume_every_s: float = 300.0  # also save resume state mid-epoch this often (0: after every step)
    # One job across several processes (DDP under torchrun): one per GPU, or gloo processes on the CPU.
    # batch_size stays the global batch; each process trains on batch_size / gpus_per_job of it.
    gpus_per_job: int = 1
    sync_batchnorm: bool = False  # with gpus_per_job > 1: BatchNorm statistics over the global batch

    def to_dict(self) -> dict:
        return copy.deepcopy(dataclasses.asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        if not isinstance(data, dict):
            raise ValueError(f"config must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"config: unknown field {unknown[0]!r} (known: {', '.join(sorted(names))})")
        return cls(**copy.deepcopy(data))

    def spec(self) -> ModelSpec:
        spec = ModelSpec.from_dict(self.model)
        if self.drop_path_rate is not None:
            spec = dataclasses.replace(spec, drop_path_rate=float(self.drop_path_rate))
        return spec

    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the first bad field; return self (normalized) when valid."""
        _check_text("name", self.name)
        try:
            self.spec().validate()
        except ValueError as err:
            raise ValueError(f"model: {err}") from None
        # JSON form (lists, not tuples), so a config equals itself after a trip through a file.
        self.model = json.loads(json.dumps(ModelSpec.from_dict(self.model).to_dict()))
        self.augment = _prefixed("augment", validate_pipeline, self.augment)
        _check_choice("loss", self.loss, tuple(LOSSES))
        if not isinstance(self.loss_params, dict):
            raise ValueError(f"loss_params: must be an object of parameter values, got {self.loss_params!r}")
        _prefixed("loss_params", validate_params, self.loss, self.effective_loss_params())
        _check_choice("joint_metric", self.joint_metric, JOINT_METRICS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("mix", self.mix, tuple(BATCH_MIXES))
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("device", self.device, DEVICES)
        _check_choice("compile_model", self.compile_model, COMPILE_CHOICES)
        _check_choice("augment_on", self.augment_on, AUGMENT_PLACES)
        self._validate_numbers()
        self._validate_combinations()
        self.check_pk_batches()
        # Last, with the batch size known: a model whose batch would exhaust a shared host is
        # refused here, so the Train page, the queue and the CLI all refuse it before a job starts.
        check_training(self.spec(), self.batch_size)
        return self

    def _validate_numbers(self) -> None:
        _check_number("lr", self.lr, 1e-7, 10.0)
        _check_number("momentum", self.momentum, 0.0, 0.999)
        _check_number("weight_decay", self.weight_decay, 0.0, 1.0)
        _check_number("warmup_epochs", self.warmup_epochs, 0.0, 1000.0)
        _check_number("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        _check_int("epochs", self.epochs, 1, 10_000)
        _check_int("batch_size", self.batch_size, 2, 4096)
        _check_number("label_smoothing", self.label_smoothing, 0.0, 0.5)
        _check_number("joint_weight", self.joint_weight, 0.0, 1.0)
        _check_number("ema_decay", self.ema_decay, 0.5, 0.99999)
        if self.drop_path_rate is not None:
            _check_number("drop_path_rate", self.drop_path_rate, 0.0, 0.9)
        _check_number("mix_alpha", self.mix_alpha, 0.05, 10.0)
        _check_number("grad_clip", self.grad_clip, 0.0, 1e6)
        _check_int("seed", self.seed, 0, 2**31 - 1)
        _check_int("workers", self.workers, 0, 64)
        _check_int("threads", self.threads, 0, 1024)
        _check_number("resume_every_s", self.resume_every_s, 0.0, 1e7)
        _check_int("gpus_per_job", self.gpus_per_job, 1, 64)
        for flag in ("nesterov", "ema", "channels_last", "eval_flip", "sync_batchnorm"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag}: {getattr(self, flag)!r} is not true or false")
        _check_text("pairs_file", self.pairs_file)
        if not isinstance(self.subset, dict):
            raise ValueError(f"subset: must be an object like {{'classes': 20}}, got {self.subset!r}")
        for key, value in self.subset.items():
            _check_choice("subset key", key, SUBSET_KEYS)
            _check_int(f"subset.{key}", value, 0, 10**9)

    def _validate_combinations(self) -> None:
        if self.joint_metric != "none" and self.loss in ("center", "triplet"):
            raise ValueError(f"joint_metric: the {self.loss!r} loss already adds a metric term to CE; set joint_metric "
                             f"to 'none', or use loss 'ce' with joint_metric {self.joint_metric!r}")
        if self.joint_metric != "none" and self.mix != "none":
            raise ValueError(f"mix: {self.mix!r} makes soft labels, but the joint {self.joint_metric} term needs one "
                             f"class per image; set mix to 'none' or joint_metric to 'none'")
        if self.mix != "none" and LOSSES[self.loss].needs_hard_labels:
            raise ValueError(f"mix: {self.mix!r} makes soft labels, but the {self.loss!r} loss needs one class "
                             f"per image; set mix to 'none' or use the 'ce' loss")
        if self.batch_size % self.gpus_per_job:
            raise ValueError(f"gpus_per_job: the batch of {self.batch_size} images is split over {self.gpus_per_job} "
                             f"processes, so it must be a multiple of {self.gpus_per_job}")
        if self.optimizer == "sgd" and self.nesterov and self.momentum == 0:
            raise ValueError("nesterov: Nesterov momentum needs momentum > 0")
        if not isinstance(self.init_from, str):
            raise ValueError(f"init_from: {self.init_from!r} is not a checkpoint folder path")
        if self.init_from and not (self.init_folder() / META_FILE).is_file():
            raise ValueError(f"init_from: {self.init_from!r} is not a checkpoint folder (no meta.json)")

    def check_pk_batches(self) -> None:
        """P x K = batch_size with K >= 2 and P >= 2 (P <= the identities of the data is checked
        where the data is known: lib/train/batches.py training_batches)."""
        _check_int("images_per_identity", self.images_per_identity, 1, 1024)
        _check_int("identities_per_batch", self.identities_per_batch, 0, 4096)
        if not LOSSES[self.loss].needs_pk_batches:
            return
        p, k = self.pk_batch()
        if k < 2:
            raise ValueError(f"images_per_identity: K = {k}, but the {self.loss!r} loss compares images of one "
                             f"identity within a batch, so each identity needs K >= 2 images there")
        if self.identities_per_batch and p * k != self.batch_size:
            raise ValueError(f"identities_per_batch: P x K = {p} x {k} = {p * k} images, but batch_size is "
                             f"{self.batch_size}; the batch is P x K, so make them agree (or set "
                             f"identities_per_batch to 0: P = batch_size / K)")
        if self.batch_size % k:
            nearest = " or ".join(str(n * k) for n in (p, p + 1) if n >= 2)
            raise ValueError(f"batch_size: {self.batch_size} is not a multiple of images_per_identity K = {k}, "
                             f"but a {self.loss!r} batch is P identities x K images: use {nearest}")
        if self.gpus_per_job > 1 and (p % self.gpus_per_job or p // self.gpus_per_job < 2):
            raise ValueError(f"gpus_per_job: each of the {self.gpus_per_job} processes draws its own batch of P / "
                             f"{self.gpus_per_job} identities (P = {p}), which must be a whole number >= 2")
        if p < 2:
            raise ValueError(f"identities_per_batch: P = {p} identity per batch (batch_size {self.batch_size} / "
                             f"K = {k}), but the {self.loss!r} loss needs other identities in the batch too: "
                             f"P >= 2, so a batch_size of at least {2 * k}")

    def pk_batch(self) -> tuple[int, int]:
        """(P, K): a P x K batch holds P identities with K images each."""
        k = self.images_per_identity
        return (self.identities_per_batch or self.batch_size // k), k

    def effective_loss_params(self) -> dict:
        """loss_params plus label_smoothing for losses that take it (loss_params wins if it sets it)."""
        params = dict(self.loss_params)
        if "label_smoothing" in LOSSES.get(self.loss, LOSSES["ce"]).params:
            params.setdefault("label_smoothing", self.label_smoothing)
        return params

    def init_folder(self) -> Path:
        """init_from as a folder; relative paths are relative to the project."""
        folder = Path(self.init_from).expanduser()
        return folder if folder.is_absolute() else paths.PROJECT_ROOT / folder

    def data_folder(self) -> Path:
        folder = Path(self.data_root).expanduser()
        return folder if folder.is_absolute() else paths.PROJECT_ROOT / folder


def _prefixed(name: str, check, *args):
    try:
        return check(*args)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None


def _check_text(name: str, value) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name}: {value!r} must be a non-empty text")


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name}: {value!r} is not one of {', '.join(map(str, choices))}")


def _check_number(name: str, value, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{name}: {value!r} is not a number in [{low:g}, {high:g}]")


def _check_int(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name}: {value!r} is not a whole number in [{low}, {high}]")


def resolve_model(model) -> dict:
    """A run file's "model": a preset name or a spec dict -> spec dict."""
    if isinstance(model, str):
        if model not in PRESETS:
            raise ValueError(f"model: unknown preset {model!r}; presets: {', '.join(PRESETS)}")
        return PRESETS[model].to_dict()
    if isinstance(model, dict):
        return ModelSpec.from_dict(model).to_dict()
    raise ValueError(f"model: expected a preset name or a spec object, got {type(model).__name__}")


def config_from_run(run: dict) -> TrainConfig:
    """A validated TrainConfig from a run dict {"name", "model", "config"}."""
    if not isinstance(run, dict):
        raise ValueError(f"a run must be a JSON object with 'model' and 'config', got {type(run).__name__}")
    unknown = sorted(set(run) - {"name", "model", "config", "description"})
    if unknown:
        raise ValueError(f"run: unknown key {unknown[0]!r} (a run has name, description, model, config)")
    values = dict(run.get("config") or {})
    if not isinstance(values, dict):
        raise ValueError("config: must be an object of TrainConfig fields")
    if "model" in run:
        values["model"] = resolve_model(run["model"])
    if "name" in run:
        values["name"] = run["name"]
    return TrainConfig.from_dict(values).validate()


def load_run_file(path: str | Path) -> TrainConfig:
    path = Path(path)
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ValueError(f"{path}: cannot be read ({err.strerror})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    return config_from_run(run)
