"""Docker build and push streams: errors arrive as chunks and must become clear failures."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from deploykit.errors import ConfigError, StepFailed, UsageError
from deploykit.images import BuildStream, PushStream, build_context


def collect() -> tuple[list[str], list[str], BuildStream]:
    said: list[str] = []
    states: list[str] = []
    return said, states, BuildStream(said.append, states.append)


def test_build_error_names_the_failing_instruction_and_shows_the_log_tail() -> None:
    said, _, stream = collect()
    stream.feed({"stream": "Step 1/3 : FROM base\n"})
    stream.feed({"stream": " ---> Using cache\n"})
    stream.feed({"stream": "Step 2/3 : RUN pip install -r requirements.txt\n"})
    stream.feed({"stream": "\x1b[91mERROR: No matching distribution found for fastapy\n\x1b[0m"})
    with pytest.raises(StepFailed) as err:
        stream.feed(
            {
                "errorDetail": {
                    "code": 1,
                    "message": "The command '/bin/sh -c pip install' returned a non-zero code: 1",
                },
                "error": "The command ... returned a non-zero code: 1",
            }
        )
    text = str(err.value)
    assert "at 'RUN pip install -r requirements.txt'" in text
    assert "No matching distribution found for fastapy" in text and "\x1b" not in text
    assert "inv build" in (err.value.next_step or "")
    assert stream.steps_cached == 1 and stream.steps_total == 3
    assert "  Step 2/3 : RUN pip install -r requirements.txt" in said


def test_build_stream_records_the_image_id() -> None:
    _, _, stream = collect()
    stream.feed({"aux": {"ID": "sha256:abc"}})
    stream.feed({"stream": "Successfully built abc\n"})
    assert stream.image_id == "sha256:abc"


def test_push_progress_per_layer_and_digest() -> None:
    said: list[str] = []
    states: list[str] = []
    stream = PushStream(said.append, states.append)
    stream.feed({"status": "Preparing", "id": "aaa"})
    stream.feed({"status": "Preparing", "id": "bbb"})
    stream.feed({"status": "Layer already exists", "id": "aaa"})
    stream.feed({"status": "Pushing", "id": "bbb", "progressDetail": {"current": 5_000_000, "total": 10_000_000}})
    assert states[-1] == "layers 1/2 done, 1 pushing 5.0/10.0 MB"
    stream.feed({"status": "Pushed", "id": "bbb"})
    stream.feed({"status": "tag: digest: sha256:d size: 9"})
    stream.feed({"progressDetail": {}, "aux": {"Tag": "tag", "Digest": "sha256:d", "Size": 9}})
    assert stream.digest == "sha256:d" and stream.size == 9
    assert said == ["  layer aaa already in the registry", "  layer bbb pushed (10.0 MB)"]


@pytest.mark.parametrize(
    ("message", "hint"),
    [
        (
            'Get "http://127.0.0.1:5000/v2/": dial tcp 127.0.0.1:5000: connect: connection refused',
            "not reachable",
        ),
        ("denied: Your authorization token has expired. Reauthenticate and try again.", "credentials"),
        ("tag invalid: The image tag 'abc' already exists and cannot be overwritten", "immutable"),
    ],
)
def test_push_errors_are_failures_with_a_next_step(message: str, hint: str) -> None:
    stream = PushStream(lambda _s: None, lambda _s: None)
    with pytest.raises(StepFailed) as err:
        stream.feed({"errorDetail": {"message": message}, "error": message})
    assert message in err.value.message
    assert hint in (err.value.next_step or "")


def test_build_context_honours_dockerignore_and_adds_ca_certificates(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "app").mkdir(parents=True)
    (ctx / "certs").mkdir()
    (ctx / "Dockerfile").write_text("FROM x\n")
    (ctx / "app" / "main.py").write_text("print(1)\n")
    (ctx / "app" / "cache.pyc").write_bytes(b"\0")
    (ctx / "certs" / "stale.crt").write_text("old")  # never taken from the tree
    (ctx / ".dockerignore").write_text("# comment\n**/*.pyc\n")
    cas = tmp_path / "cas" / "corp"
    cas.mkdir(parents=True)
    (cas / "proxy.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (cas / "notes.txt").write_text("not a cert")
    with tarfile.open(fileobj=build_context(ctx, "Dockerfile", tmp_path / "cas")) as tar:
        names = set(tar.getnames())
    assert {"Dockerfile", "app", "app/main.py", "certs", "certs/corp", "certs/corp/proxy.crt"} <= names
    assert "app/cache.pyc" not in names and "certs/stale.crt" not in names and "certs/notes.txt" not in names
    with tarfile.open(fileobj=build_context(ctx, "Dockerfile", None)) as tar:
        assert "certs" in tar.getnames() and not [n for n in tar.getnames() if n.startswith("certs/")]


def test_ca_certificates_of_one_name_in_two_subfolders_are_both_in_the_context(tmp_path: Path) -> None:
    """Flattened into certs/, the second of two root.crt (corp/, lab/) took the first's place: one CA not trusted."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM x\n")
    for folder in ("corp", "lab"):
        (tmp_path / "cas" / folder).mkdir(parents=True)
        (tmp_path / "cas" / folder / "root.crt").write_text(f"-----BEGIN CERTIFICATE-----\n{folder}\n")
    with tarfile.open(fileobj=build_context(ctx, "Dockerfile", tmp_path / "cas")) as tar:
        files = {name: tar.extractfile(name) for name in ("certs/corp/root.crt", "certs/lab/root.crt")}
        held = {name: file.read() for name, file in files.items() if file is not None}
    assert held == {f"certs/{f}/root.crt": f"-----BEGIN CERTIFICATE-----\n{f}\n".encode() for f in ("corp", "lab")}


@pytest.mark.parametrize(
    ("content", "said", "next_step"),
    [
        (
            bytes.fromhex("308203a1308202"),
            "is not a PEM certificate (binary: DER-encoded, it seems): update-ca-certificates would skip it inside the "
            "image without a word",
            "convert it to PEM: openssl x509 -inform DER -in ",
        ),
        (b"just some notes\n", "is not a PEM certificate (no -----BEGIN CERTIFICATE----- line)", "replace it with the"),
    ],
    ids=["der", "not-a-certificate"],
)
def test_a_ca_certificate_that_is_not_pem_is_refused_before_the_build(
    tmp_path: Path, content: bytes, said: str, next_step: str
) -> None:
    """update-ca-certificates skipped it inside the image, its output sent to /dev/null: pip then failed behind the
    proxy with CERTIFICATE_VERIFY_FAILED, on a CA the user had put in extra_ca_dir. Now: exit 2, before the build."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM x\n")
    (tmp_path / "cas").mkdir()
    (tmp_path / "cas" / "proxy ca.crt").write_bytes(content)
    with pytest.raises(ConfigError) as raised:
        build_context(ctx, "Dockerfile", tmp_path / "cas")
    assert raised.value.exit_code == 2
    assert raised.value.message.startswith(f"{tmp_path}/cas/proxy ca.crt in [build] extra_ca_dir {said}")
    assert (raised.value.next_step or "").startswith(next_step)
    if content.startswith(b"0"):
        assert f"-in '{tmp_path}/cas/proxy ca.crt' -out '/tmp/proxy ca.pem' && mv " in (raised.value.next_step or "")


def test_build_context_without_a_dockerfile_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no Dockerfile"):
        build_context(tmp_path, "Dockerfile", None)


def test_build_context_leaves_out_git_whatever_the_dockerignore_says(tmp_path: Path) -> None:
    """A build context that is a git submodule's folder holds a .git file (gitdir: ../.git/modules/backend) pointing
    outside the context; one that is a clone's top a .git folder. Both went into the image unless the context's own
    .dockerignore left them out (the backend's did not); they never go now, a !.git there included, at any depth."""
    ctx = tmp_path / "ctx"
    (ctx / "app").mkdir(parents=True)
    (ctx / "Dockerfile").write_text("FROM x\n")
    (ctx / "app" / "main.py").write_text("print(1)\n")
    (ctx / ".git").write_text("gitdir: ../.git/modules/backend\n")  # a submodule's gitfile
    (ctx / "vendor" / "lib" / ".git" / "objects").mkdir(parents=True)  # a clone inside it
    (ctx / "vendor" / "lib" / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (ctx / "vendor" / "lib" / "lib.py").write_text("L = 1\n")
    (ctx / ".gitignore").write_text("*.pyc\n")  # not .git: kept
    for dockerignore in ("", "*.md\n", "!.git\n!**/.git\n"):
        (ctx / ".dockerignore").write_text(dockerignore)
        with tarfile.open(fileobj=build_context(ctx, "Dockerfile", None)) as tar:
            names = set(tar.getnames())
        assert {"Dockerfile", "app/main.py", "vendor/lib/lib.py", ".gitignore"} <= names
        assert not [n for n in names if ".git" in n.split("/")], dockerignore


def test_in_a_git_work_tree_the_context_holds_what_git_sees_and_not_what_it_ignores(tmp_path: Path) -> None:
    """A .env beside the code, a local settings module: git ignores them, the commit the image is named after does
    not hold them, and a CI build of it would not have them; they went into the image (a secret shipped) unless the
    .dockerignore named them too."""
    ctx = tmp_path / "ctx"
    (ctx / "app").mkdir(parents=True)
    (ctx / "Dockerfile").write_text("FROM x\n")
    (ctx / "app" / "main.py").write_text("print(1)\n")
    (ctx / ".gitignore").write_text(".env\nlocal_settings.py\nbuild/\n")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (ctx / "app" / ".env").write_text("SECRET=1\n")
    (ctx / "app" / "local_settings.py").write_text("DEBUG = True\n")
    (ctx / "build" / "x").mkdir(parents=True)
    (ctx / "build" / "x" / "out.txt").write_text("built\n")
    (ctx / "app" / "new.py").write_text("X = 1\n")  # untracked, not ignored: an uncommitted change, built
    (ctx / "vendor" / "lib" / ".git").mkdir(parents=True)  # a repository cloned there: its files go, as git's
    (ctx / "vendor" / "lib" / "lib.py").write_text("L = 1\n")
    with tarfile.open(fileobj=build_context(ctx, "Dockerfile", None)) as tar:
        names = set(tar.getnames())
    assert {"Dockerfile", ".gitignore", "app", "app/main.py", "app/new.py", "vendor/lib/lib.py", "certs"} <= names
    assert not names & {"app/.env", "app/local_settings.py", "build", "build/x", "build/x/out.txt"}, names
