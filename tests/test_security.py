"""A shared classroom host: data only from configured roots, safe uploads, XSRF on,
no secrets in the repository."""
from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lib.base import config
from lib.data import datasets as data

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- data roots

@pytest.fixture
def roots(tmp_path, monkeypatch):
    """One extra configured root with a data set in it, and a look-alike folder beside it
    whose name merely starts with the root's name (a string-prefix check would let it in)."""
    allowed = tmp_path / "course"
    (allowed / "hw2p2" / "cls_data" / "train").mkdir(parents=True)
    outside = tmp_path / "course-private"
    (outside / "cls_data" / "train").mkdir(parents=True)
    (allowed / "escape").symlink_to(outside, target_is_directory=True)
    monkeypatch.setenv(config.DATA_ROOTS_ENV, str(allowed))
    return allowed, outside


def test_data_sets_inside_configured_roots_are_accepted(roots):
    allowed, _ = roots
    assert data.resolve_dataset(allowed / "hw2p2") == (allowed / "hw2p2").resolve()
    assert data.resolve_dataset(config.EMBEDDED_DATA) == config.EMBEDDED_DATA.resolve()
    assert (allowed / "hw2p2").resolve() in data.find_datasets()


@pytest.mark.parametrize("attempt", [
    "/etc", "/", "~", "..", "data/../..", "{allowed}/../course-private", "{allowed}/escape",
    "{allowed}/hw2p2/../../course-private", "{outside}", str(ROOT),
])
def test_path_traversal_out_of_the_roots_is_rejected(roots, attempt):
    allowed, outside = roots
    path = attempt.format(allowed=allowed, outside=outside)
    with pytest.raises(ValueError, match="not inside a configured data root"):
        data.resolve_dataset(path)


def test_a_symlink_out_of_a_root_is_not_listed_as_a_data_set(roots):
    allowed, outside = roots
    listed = data.find_datasets()
    assert outside.resolve() not in listed
    assert all(data.resolve_dataset(folder) == folder for folder in listed)  # what is offered can be opened


def test_pairs_file_name_cannot_leave_the_data_set(tmp_path):
    """The pairs file is chosen by name in the UI; a name climbing out of the data set
    must be refused before the file is read (its lines would be echoed in messages)."""
    secret = tmp_path / "secret.txt"
    secret.write_text("ver_data/a.jpg ver_data/b.jpg 1\nroot:x:0:0:the secret line\n")
    relative = Path("..") / ".." / ".." / ".." / ".." / ".." / ".." / ".." / secret.relative_to("/")
    with pytest.raises(ValueError) as caught:
        data.load_pairs(config.EMBEDDED_DATA, str(relative))
    assert "the secret line" not in str(caught.value)
    with pytest.raises(ValueError):
        data.load_pairs(config.EMBEDDED_DATA, str(secret))


def test_pairs_lines_naming_files_outside_the_data_set_are_skipped(tmp_path):
    root = tmp_path / "set"
    (root / "ver_data").mkdir(parents=True)
    real = sorted((config.EMBEDDED_DATA / "ver_data").iterdir())[:2]
    for image in real:
        (root / "ver_data" / image.name).write_bytes(image.read_bytes())
    (tmp_path / "outside.jpg").write_bytes(real[0].read_bytes())
    (root / "val_pairs.txt").write_text(
        f"ver_data/{real[0].name} ver_data/{real[1].name} 1\n"
        f"ver_data/{real[0].name} ver_data/../../outside.jpg 0\n")
    pairs = data.load_pairs(root)
    assert len(pairs.pairs) == 1
    assert all(".." not in path for path in pairs.paths)
    assert any("outside" in problem for problem in pairs.problems)


@pytest.mark.parametrize("name", ["../../../escape", "/etc/cron.d/x", "a/b\\c", "..", "."])
def test_run_names_from_the_train_page_stay_inside_the_runs_folder(tmp_path, name):
    from lib.jobs.queue import JobQueue
    from tests.job_cases import tiny

    queue = JobQueue(tmp_path / "runs", max_running=1)
    job_id = queue.submit(tiny(name), "ada")
    assert queue.run_dir(job_id).parent == queue.runs_dir and queue.run_dir(job_id).is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


@pytest.mark.parametrize("job_id", ["../runs", "../../etc", "/etc/passwd", ""])
def test_job_ids_from_the_runs_page_must_name_a_job(tmp_path, job_id):
    from lib.jobs.queue import JobQueue

    queue = JobQueue(tmp_path / "runs", max_running=1)
    for action in (queue.get, lambda job: queue.cancel(job, by="ada"), lambda job: queue.resume(job, by="ada")):
        with pytest.raises(ValueError, match="no such job"):
            action(job_id)


def test_training_reads_data_only_from_the_roots(tmp_path):
    """A run file (written by the Train page, or by hand) naming other folders is refused."""
    from lib.train.batches import load_train_data
    from lib.train.config import config_from_run

    with pytest.raises(ValueError, match="not inside a configured data root"):
        load_train_data(tmp_path)
    with pytest.raises(ValueError, match="outside the data set"):
        load_train_data(config.EMBEDDED_DATA, pairs_file="../../../../etc/passwd")
    with pytest.raises(ValueError, match="init_from"):
        config_from_run({"name": "x", "model": "face_resnet", "config": {"init_from": "/etc"}})


def test_a_data_root_smuggled_into_session_state_is_replaced(tmp_path):
    """The sidebar offers only the data sets found under the roots; anything else in the
    session (a stale or forged value) falls back to the embedded set."""
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    app.session_state["facelab.data_root"] = "/etc"
    app.run()
    assert app.session_state["facelab.data_root"] == str(config.EMBEDDED_DATA)


# --------------------------------------------------------------------------- server settings

def test_streamlit_settings_protect_a_shared_host():
    settings = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    server = settings["server"]
    assert server["enableXsrfProtection"] is True
    assert 1 <= server["maxUploadSize"] <= 200  # MB: a checkpoint fits, a disk-filler does not
    assert settings["browser"]["gatherUsageStats"] is False


# --------------------------------------------------------------------------- secrets

TEXT_SUFFIXES = {".py", ".md", ".toml", ".txt", ".json", ".cfg", ".ini", ".yml", ".yaml", ".sh", ".env", ""}
SECRET_PATTERNS = {
    "private key": re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"),
    "AWS access key": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"),
    "OpenAI-style key": re.compile(r"\bsk-[A-Za-z0-9_\-]{32,}\b"),
    "Hugging Face token": re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"),
    "assigned secret": re.compile(
        r"(?i)\b(?:api[_-]?key|secret|password|passwd|token|client_secret|cookie_secret)\b\s*[:=]\s*"
        r"['\"][A-Za-z0-9+/=_\-]{16,}['\"]"),
}
SECRET_FILES = re.compile(r"(^|/)(secrets\.toml|\.env|id_rsa|id_ed25519|.*\.pem|.*\.key)$")


def find_secrets(text: str) -> list[str]:
    return [name for name, pattern in SECRET_PATTERNS.items() if pattern.search(text)]


def tracked_files() -> list[str]:
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [name for name in listing.stdout.decode().split("\0") if name]


def test_the_secret_scanner_finds_key_like_strings():
    # Built from pieces so that this file itself holds no key-like string.
    samples = ["AKIA" + "Q" * 16, "gh" + "p_" + "a1" * 20, "-----BEGIN RSA " + "PRIVATE KEY-----",
               "api_key = '" + "x9" * 12 + "'", "AIza" + "b" * 35]
    for sample in samples:
        assert find_secrets(f"config\n{sample}\n"), sample
    assert not find_secrets("token = st.session_state.get('facelab.user')\npassword: str = ''\n")


def test_no_secrets_are_tracked_in_the_repository():
    files = tracked_files()
    assert len(files) > 50  # the scan really saw the repository
    leaks = [name for name in files if SECRET_FILES.search(name)]
    for name in files:
        path = ROOT / name
        if Path(name).suffix.lower() not in TEXT_SUFFIXES or not path.is_file() or path.stat().st_size > 2**21:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        leaks += [f"{name}: {kind}" for kind in find_secrets(text)]
    assert not leaks, f"key-like strings or secret files are tracked: {leaks}"


def test_local_secrets_are_ignored_by_git():
    ignored = subprocess.run(["git", "check-ignore", "-q", ".streamlit/secrets.toml"], cwd=ROOT)
    assert ignored.returncode == 0, "add .streamlit/secrets.toml to .gitignore (a login's secrets live there)"


# --------------------------------------------------------------------------- uploads

class Trap:
    """Unpickling this creates a file: proof that a pickle was (or was not) opened."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def good_files(tmp_path) -> dict[str, bytes]:
    """model.safetensors and meta.json of a real (tiny) checkpoint, as an upload carries them."""
    from lib.model.net import FaceNet
    from lib.model.spec import ModelSpec
    from lib.store.checkpoint import save_checkpoint
    from tests.train_cases import TINY_MODEL

    folder = save_checkpoint(tmp_path / "ckpt", FaceNet(ModelSpec.from_dict(TINY_MODEL)), {"epoch": 1})
    return {name: (folder / name).read_bytes() for name in ("model.safetensors", "meta.json")}


def zipped(members: dict[str, bytes]) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def pickles(marker: Path) -> dict[str, bytes]:
    import io
    import pickle

    import torch

    saved = io.BytesIO()
    torch.save({"weight": Trap(marker)}, saved)
    return {"torch.save": saved.getvalue(), "pickle": pickle.dumps(Trap(marker))}


def test_the_trap_fires_when_a_pickle_is_opened(tmp_path):
    import pickle

    marker = tmp_path / "opened"
    pickle.loads(pickles(marker)["pickle"])
    assert marker.exists()  # so its absence below means: never unpickled


@pytest.mark.parametrize("kind", ["torch.save", "pickle"])
def test_uploaded_pickles_are_refused_and_never_opened(tmp_path, good_files, kind):
    from lib.store import upload

    marker = tmp_path / "opened"
    payload = pickles(marker)[kind]
    attempts = [
        [("model.safetensors", payload), ("meta.json", good_files["meta.json"])],  # disguised
        [("model.pt", payload), ("meta.json", good_files["meta.json"])],
        [("run.zip", zipped({"best/model.safetensors": payload, "best/meta.json": good_files["meta.json"]}))],
        [("run.zip", zipped({"best/model.pt": payload, "best/meta.json": good_files["meta.json"]}))],
    ]
    for files in attempts:
        with pytest.raises(ValueError):
            upload.load_upload(files)
    assert not marker.exists()


def test_a_real_checkpoint_upload_loads(good_files):
    from lib.store import upload

    loose = upload.load_upload(list(good_files.items()))
    packed = upload.load_upload([("run.zip", zipped({f"run/best/{k}": v for k, v in good_files.items()}))])
    assert loose.fingerprint == packed.fingerprint
    assert loose.spec.name == "tiny_face"  # tests/train_cases.py TINY_MODEL


def test_uploads_are_capped(good_files):
    from lib.store import upload

    settings = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert upload.MAX_FILE_BYTES <= settings["server"]["maxUploadSize"] * 2**20
    with pytest.raises(ValueError, match="limit"):
        upload.load_upload([("model.safetensors", b"\0" * (upload.MAX_FILE_BYTES + 1)),
                            ("meta.json", good_files["meta.json"])])
    bomb = zipped({"best/meta.json": good_files["meta.json"], "best/model.safetensors": b"\0" * (30 * 2**20)})
    assert len(bomb) < 2**20
    with pytest.raises(ValueError, match="bomb|limit"):
        upload.load_upload([("run.zip", bomb)])
    crowd = zipped({f"run/{i}.txt": b"x" for i in range(upload.MAX_MEMBERS + 1)})
    with pytest.raises(ValueError, match="members"):
        upload.load_upload([("run.zip", crowd)])


def test_upload_names_never_become_paths(tmp_path, monkeypatch, good_files):
    """Names only say what a file is; nothing is written, and a zip may not point outside itself."""
    from lib.store import upload

    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    upload.load_upload([("../../../../tmp/escape/model.safetensors", good_files["model.safetensors"]),
                        ("..\\..\\meta.json", good_files["meta.json"])])
    assert sorted(tmp_path.rglob("*")) == before and not Path("/tmp/escape").exists()
    for member in ("../best/model.safetensors", "/abs/model.safetensors"):
        with pytest.raises(ValueError, match="inside the archive"):
            upload.load_upload([("run.zip", zipped({member: good_files["model.safetensors"],
                                                    "best/meta.json": good_files["meta.json"]}))])


def test_upload_names_in_messages_are_sanitized(good_files):
    """A file name is shown back in the error (rendered as Markdown): markup, links and line
    breaks in it must not reach the page."""
    from lib.store import upload

    name = "x<img src=x onerror=alert(1)>\n# big [click](http://example.invalid) `code`.pt"
    with pytest.raises(ValueError) as caught:
        upload.load_upload([(name, b"\x80\x04junk"), ("meta.json", good_files["meta.json"])])
    message = str(caught.value)
    for fragment in ("<img", "\n", "](", "`", "# big"):
        assert fragment not in message, (fragment, message)
    member = "best/[click](http://example.invalid)/../model.safetensors"
    with pytest.raises(ValueError) as caught:
        upload.load_upload([("run.zip", zipped({member: b"x", "best/meta.json": good_files["meta.json"]}))])
    assert "](" not in str(caught.value)


# --------------------------------------------------------------------------- the live server

def test_the_running_app_refuses_uploads_without_its_xsrf_token(tmp_path):
    """An upload from another site (no XSRF cookie and header) is refused before anything else."""
    import urllib.error
    import urllib.request

    from tests.browser_support import running_app

    with running_app(tmp_path / "runs") as server:
        request = urllib.request.Request(f"{server.url}/_stcore/upload_file/any-session/any-file", method="PUT",
                                         data=b"--x--", headers={"Content-Type": "multipart/form-data; boundary=x"})
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=30)
        assert caught.value.code == 403
