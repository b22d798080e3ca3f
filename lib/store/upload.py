"""Checkpoints uploaded through the browser, checked before anything is built from them.

Accepted: a run folder as a .zip (with model.safetensors and meta.json, at its
top or under best/ or last/), or the loose files model.safetensors + meta.json
(+ optional loss.safetensors).

What is refused, and why:
- anything that is not safetensors: pickled .pt/.pth files run code when loaded,
  so they are never opened (safetensors holds tensors and a JSON header only);
- files over the size caps, zips with too many members or that inflate too much;
- zip members with absolute paths, ``..`` or links (nothing is extracted to disk
  anyway: members are read into memory);
- damaged zips (a bad checksum, cut-off or corrupt data), encrypted members and
  compression methods Python cannot read: a ValueError says which, never zipfile's own error;
- a model over this host's activation memory or MACs limit (lib.model.limits), checked on
  paper before the model is built: it could not be explored here anyway;
- weights whose names or shapes do not fit the spec in meta.json
  (lib.store.checkpoint.load_weights_checked, which also accepts the ``module.``
  prefix of weights saved from nn.DataParallel).
"""
from __future__ import annotations

import hashlib
import io
import lzma
import re
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors

from lib.model.limits import check_explorable
from lib.model.net import FaceNet, count_params
from lib.model.spec import ModelSpec
from lib.store.checkpoint import LOSS_FILE, MODEL_FILE, load_weights_checked
from lib.store.meta import META_FILE, CheckpointMeta, meta_from_json
from lib.store.run_folder import BEST_DIR, LAST_DIR, METRICS_FILE, parse_metrics

MAX_FILE_BYTES = 50 * 2**20      # one uploaded file (the app's upload limit is the same 50 MB)
MAX_UNZIPPED_BYTES = 200 * 2**20  # everything inside a zip, inflated
MAX_MEMBER_BYTES = 100 * 2**20
MAX_MEMBERS = 200
MAX_RATIO = 200                   # inflated / compressed size of one member (zip bombs)
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".bin", ".ckpt")
_SAFETENSORS_HEADER_LIMIT = 16 * 2**20


# What zipfile raises on a damaged archive besides BadZipFile: inflating corrupt data (zlib, lzma,
# bz2 as OSError), data cut short (EOFError), offsets past the end or beyond any file
# (ValueError, OverflowError from seeking), a member name that is not the UTF-8 it claims.
_DAMAGED_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, ValueError,
                       OverflowError, struct.error)


_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")
_UNSAFE_MEMBER = re.compile(r"[^A-Za-z0-9._/ -]+")


def display_name(name: str) -> str:
    """An uploaded file's name as FaceLab uses and shows it: the last part only, without markup,
    links or line breaks (messages are rendered as Markdown)."""
    base = re.split(r"[\\/]", str(name))[-1]
    return _UNSAFE_NAME.sub("_", base).strip()[:80] or "the file"


def _member_name(name: str) -> str:
    """A zip member's path for messages, with anything but plain path characters replaced."""
    return _UNSAFE_MEMBER.sub("_", name)[:120]


@dataclass
class UploadedCheckpoint:
    model: FaceNet
    spec: ModelSpec
    meta: CheckpointMeta
    loss_state: dict[str, torch.Tensor]
    fingerprint: str                                  # hash of the weights bytes
    metrics_rows: list[dict] = field(default_factory=list)  # metrics.jsonl of a zipped run, if any
    notes: list[str] = field(default_factory=list)    # what was adjusted (e.g. a stripped prefix)


def _check_size(name: str, data: bytes, limit: int = MAX_FILE_BYTES) -> None:
    if len(data) > limit:
        raise ValueError(f"{name}: {len(data) / 2**20:.1f} MB is over the {limit / 2**20:.0f} MB limit")
    if not data:
        raise ValueError(f"{name}: the file is empty")


def read_safetensors(name: str, data: bytes) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file given as bytes; ValueError if it is anything else."""
    _check_size(name, data)
    header = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    if not 2 <= header <= min(len(data) - 8, _SAFETENSORS_HEADER_LIMIT) or data[8:9] != b"{":
        # torch.save writes a zip ("PK"), older versions a bare pickle (protocol byte 0x80).
        if data[:2] == b"PK" or data[:1] == b"\x80":
            raise ValueError(f"{name}: this is a pickled PyTorch file (torch.save), not safetensors. Pickles run "
                             "code when loaded, so they are never opened: convert it with "
                             "safetensors.torch.save_file(model.state_dict(), 'model.safetensors')")
        raise ValueError(f"{name}: not a safetensors file (it must start with an 8-byte header length and a "
                         "JSON header)")
    try:
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name}: damaged safetensors file ({err})") from None
    if not tensors:
        raise ValueError(f"{name}: the file holds no tensors")
    return tensors


def read_meta(data: bytes) -> CheckpointMeta:
    """The checked meta of an uploaded meta.json (lib.store.checkpoint reads it, as for a folder)."""
    _check_size(META_FILE, data, 4 * 2**20)
    return meta_from_json(data, META_FILE)


def checkpoint_from_files(files: dict[str, bytes], metrics_text: str | None = None) -> UploadedCheckpoint:
    """Build the model from {"model.safetensors": ..., "meta.json": ..., ["loss.safetensors": ...]}."""
    missing = [name for name in (MODEL_FILE, META_FILE) if name not in files]
    if missing:
        raise ValueError(f"missing {' and '.join(missing)}: upload model.safetensors together with its meta.json "
                         "(or the run folder as a .zip)")
    meta = read_meta(files[META_FILE])
    spec = meta.spec
    weights = read_safetensors(MODEL_FILE, files[MODEL_FILE])
    _check_budget(spec, weights)
    check_explorable(spec)
    notes = []
    if any(key.startswith("module.") for key in weights):
        notes.append("the weights were saved from nn.DataParallel: their 'module.' prefix was removed")
    model = load_weights_checked(weights, spec).eval()
    loss_state = read_safetensors(LOSS_FILE, files[LOSS_FILE]) if LOSS_FILE in files else {}
    rows = _metrics_rows(metrics_text, notes)
    fingerprint = hashlib.sha256(files[MODEL_FILE]).hexdigest()[:32]
    return UploadedCheckpoint(model, spec, meta, loss_state, fingerprint, rows, notes)


def _metrics_rows(text: str | None, notes: list[str]) -> list[dict]:
    """The rows of a zipped run's metrics.jsonl. The file only adds the run's curves, so one that
    cannot be read (nested too deeply, keys of the wrong type) loses them, with a note saying so."""
    if not text:
        return []
    try:
        return parse_metrics(text)
    except (RecursionError, TypeError, OverflowError, ValueError):
        notes.append(f"{METRICS_FILE} could not be read, so the run's curves are not shown")
        return []


def _check_budget(spec: ModelSpec, weights: dict[str, torch.Tensor]) -> None:
    """Count the spec's parameters on the meta device before building it: a spec far larger than
    the uploaded weights would only fail later, after allocating all that memory."""
    needed = count_params(spec)
    held = sum(tensor.numel() for tensor in weights.values())
    if needed > held:
        raise ValueError(f"the spec in {META_FILE} has {needed:,} parameters but {MODEL_FILE} holds only {held:,} "
                         "values: the two files do not belong together")


def _safe_member(info: zipfile.ZipInfo) -> PurePosixPath:
    path = PurePosixPath(info.filename)
    if info.filename.startswith(("/", "\\")) or ":" in info.filename or ".." in path.parts or "\\" in info.filename:
        raise ValueError(f"zip member {_member_name(info.filename)!r}: paths must stay inside the archive (no '..', no "
                         "absolute paths)")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ValueError(f"zip member {_member_name(info.filename)!r}: links are not accepted")
    if info.file_size > MAX_MEMBER_BYTES:
        raise ValueError(f"zip member {_member_name(info.filename)!r}: {info.file_size / 2**20:.0f} MB is over the "
                         f"{MAX_MEMBER_BYTES / 2**20:.0f} MB limit")
    if info.compress_size and info.file_size / info.compress_size > MAX_RATIO:
        raise ValueError(f"zip member {_member_name(info.filename)!r} inflates {info.file_size // info.compress_size}x: "
                         "refused as a possible zip bomb")
    return path


def _checked_members(archive: zipfile.ZipFile) -> dict[PurePosixPath, zipfile.ZipInfo]:
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise ValueError(f"the zip has {len(infos)} members; a run folder has far fewer (limit {MAX_MEMBERS})")
    members = {_safe_member(info): info for info in infos if not info.is_dir()}
    total = sum(info.file_size for info in members.values())
    if total > MAX_UNZIPPED_BYTES:
        raise ValueError(f"the zip inflates to {total / 2**20:.0f} MB, over the {MAX_UNZIPPED_BYTES / 2**20:.0f} "
                         "MB limit")
    return members


def _checkpoint_folder(members: dict[PurePosixPath, zipfile.ZipInfo]) -> PurePosixPath:
    """The folder holding model.safetensors + meta.json: best/ before last/ before anything else."""
    folders = [path.parent for path in members if path.name == MODEL_FILE and path.parent / META_FILE in members]
    if not folders:
        pickles = [_member_name(str(p)) for p in members if p.suffix in PICKLE_SUFFIXES or p.name == "data.pkl"]
        hint = (f" It holds pickled files ({', '.join(pickles[:3])}), which are never loaded: save the weights "
                "with safetensors.") if pickles else ""
        raise ValueError("the zip has no folder with both model.safetensors and meta.json." + hint)
    return sorted(folders, key=lambda f: ({BEST_DIR: 0, LAST_DIR: 1}.get(f.name, 2), len(f.parts)))[0]


def _open_zip(data: bytes) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except _DAMAGED_ZIP_ERRORS:
        raise ValueError("not a zip archive (or a damaged one): zip the run folder again and upload that") from None


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """A member's bytes; ValueError naming the member when zipfile cannot give them."""
    where = f"zip member {_member_name(info.filename)!r}"
    try:
        return archive.read(info)
    except RuntimeError:  # zipfile's word for "encrypted, password required"
        raise ValueError(f"{where} is encrypted: upload a zip made without a password") from None
    except NotImplementedError:
        raise ValueError(f"{where} uses a compression method Python cannot read: zip it again with the usual "
                         "(deflate) compression") from None
    except _DAMAGED_ZIP_ERRORS:
        raise ValueError(f"{where} is damaged (a bad checksum, or data cut short or corrupt): zip the run folder "
                         "again and upload that") from None


def checkpoint_from_zip(data: bytes) -> UploadedCheckpoint:
    _check_size("the zip", data)
    with _open_zip(data) as archive:
        members = _checked_members(archive)
        folder = _checkpoint_folder(members)
        files = {name: _read_member(archive, members[folder / name]) for name in (MODEL_FILE, META_FILE, LOSS_FILE)
                 if folder / name in members}
        run_root = folder.parent if folder.name in (BEST_DIR, LAST_DIR) else folder
        metrics = members.get(run_root / METRICS_FILE)
        metrics_text = _read_member(archive, metrics).decode("utf-8", errors="replace") if metrics else None
    return checkpoint_from_files(files, metrics_text)


def is_facelab_upload(names: list[str]) -> bool:
    """A FaceLab checkpoint comes as a .zip of its folder or with its meta.json; anything else
    (one .pth, .pt, .bin, .onnx or a .safetensors alone) is a model made elsewhere
    (lib/store/foreign_open.py reads those)."""
    return any(Path(name).suffix.lower() in (".zip", ".json") for name in names)


def load_upload(files: list[tuple[str, bytes]]) -> UploadedCheckpoint:
    """Dispatch what the user uploaded: one .zip, or model.safetensors + meta.json (+ loss.safetensors)."""
    if not files:
        raise ValueError("nothing uploaded")
    files = [(display_name(name), data) for name, data in files]  # names classify files, never paths
    for name, data in files:
        _check_size(name, data)
        if Path(name).suffix.lower() in PICKLE_SUFFIXES:
            raise ValueError(f"{name}: pickled PyTorch files are never loaded (they can run code). Save the "
                             "weights with safetensors instead")
    zips = [data for name, data in files if name.lower().endswith(".zip")]
    if zips:
        if len(files) > 1:
            raise ValueError("upload either one .zip of a run folder, or the loose files, not both")
        return checkpoint_from_zip(zips[0])
    named = {}
    for name, data in files:
        lower = Path(name).name.lower()
        key = META_FILE if lower.endswith(".json") else LOSS_FILE if lower == LOSS_FILE else MODEL_FILE
        if not lower.endswith((".json", ".safetensors")):
            raise ValueError(f"{name}: only .zip, .safetensors and meta.json are accepted")
        if key in named:
            raise ValueError(f"{name}: two files for {key}; upload one model, one meta.json, optionally one "
                             "loss.safetensors")
        named[key] = data
    return checkpoint_from_files(named)
