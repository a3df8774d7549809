"""Archives customers send beyond zip and tar: .7z, and zips and 7z archives with a password.

The archives are made here from the committed example bundle with the libraries lmtrace
reads them with (py7zr writes 7z, pyzipper writes WinZip-AES zips, as 7-Zip does with
"zip, AES-256"), then analysed as a user would. The guards that protect the other kinds
(traversal names, bombs) hold for 7z too, and a password appears in no output.
"""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import py7zr
import pytest
import pyzipper
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.discover import discover

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "bundles" / "healthy"
SECRET = "c0rrect-h0rse-Battery"
runner = CliRunner()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _seven_zip(path: Path, password: str | None = None) -> Path:
    with py7zr.SevenZipFile(path, "w", password=password, header_encryption=bool(password)) as z:
        for file in _files(EXAMPLE):
            z.write(file, file.relative_to(EXAMPLE).as_posix())
    return path


def _aes_zip(path: Path, password: str) -> Path:
    with pyzipper.AESZipFile(
        path, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES
    ) as z:
        z.setpassword(password.encode())
        for file in _files(EXAMPLE):
            z.write(file, file.relative_to(EXAMPLE).as_posix())
    return path


def _rename_in_header(archive: Path, old: str, new: str) -> None:
    """Patch a member name as a hostile archive would have it (py7zr refuses to write
    '..'), and the start header's CRCs so that the archive still opens."""
    data = bytearray(archive.read_bytes())
    at = data.index(old.encode("utf-16-le"), 32)
    data[at : at + len(new) * 2] = new.encode("utf-16-le")
    offset, size = struct.unpack_from("<QQ", data, 12)
    struct.pack_into("<I", data, 28, zlib.crc32(data[32 + offset : 32 + offset + size]))
    struct.pack_into("<I", data, 8, zlib.crc32(data[12:32]))
    archive.write_bytes(bytes(data))


def _analyze(*args: object, env: dict[str, str] | None = None) -> object:
    argv = ["analyze", *map(str, args), "--jobs", "1", "--quiet"]
    return runner.invoke(app, argv, env=env)


@pytest.fixture(scope="module")
def truth() -> dict:
    return json.loads((EXAMPLE / "ground_truth.json").read_text())


def test_a_7z_bundle_is_read_like_the_folder(tmp_path: Path, truth: dict, example_analysis) -> None:
    archive = _seven_zip(tmp_path / "bundle.7z")
    run = _analyze(archive, "--out", tmp_path / "out")
    assert run.exit_code == 0, run.output
    assert f"verdict: {truth['verdict']}" in run.stdout
    read = json.loads((tmp_path / "out" / "findings.json").read_text())["integrity"]
    folder = json.loads((example_analysis("healthy").out / "findings.json").read_text())
    assert (read["files"], read["records_read"]) == (
        folder["integrity"]["files"],
        folder["integrity"]["records_read"],
    )


@pytest.mark.parametrize("kind", ["7z", "zip"])
def test_an_encrypted_archive_opens_with_its_password_which_is_never_written(
    tmp_path: Path, truth: dict, kind: str
) -> None:
    archive = (
        _seven_zip(tmp_path / "bundle.7z", SECRET)
        if kind == "7z"
        else _aes_zip(tmp_path / "bundle.zip", SECRET)
    )
    without = _analyze(archive, "--out", tmp_path / "no")
    assert without.exit_code == 2, without.output
    assert "--password" in without.stderr and "Traceback" not in without.stderr
    wrong = _analyze(archive, "--out", tmp_path / "wrong", "--password", "guess")
    assert wrong.exit_code == 2 and "password" in wrong.stderr, wrong.output
    out = tmp_path / "out"
    run = _analyze(archive, "--out", out, "--password", SECRET)
    assert run.exit_code == 0, run.output
    assert f"verdict: {truth['verdict']}" in run.stdout
    by_env = _analyze(archive, "--out", tmp_path / "env", env={"LMTRACE_ARCHIVE_PASSWORD": SECRET})
    assert by_env.exit_code == 0, by_env.output
    said = run.stdout + run.stderr + wrong.stdout + wrong.stderr
    assert SECRET not in said
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_7z_members_meet_the_same_guards(tmp_path: Path) -> None:
    """A name that climbs out, a bomb (64 MiB of zeros in a few KiB): refused and named;
    nothing written outside the scratch folder."""
    archive = tmp_path / "hostile.7z"
    evtx = next(f for f in _files(EXAMPLE) if f.suffix == ".evtx")
    with py7zr.SevenZipFile(archive, "w") as z:
        z.encoded_header_mode = False  # names in the clear, so that one can be patched
        z.writestr(evtx.read_bytes(), "XX/XX/escaped.evtx")
        z.writestr(bytes(64 << 20), "bomb.evtx")
        z.write(evtx, "ok/System.evtx")
    _rename_in_header(archive, "XX/XX/", "../../")
    scratch = tmp_path / "scratch"
    found = discover([archive], scratch)
    reasons = {s.member: s.reason for s in found.skipped}
    assert "member path with '..'" in reasons["../../escaped.evtx"]
    assert "a zip bomb?" in reasons["bomb.evtx"] or "7z bomb" in reasons["bomb.evtx"]
    assert [s.member for s in found.sources] == ["ok/System.evtx"]
    assert not list(tmp_path.parent.rglob("escaped.evtx"))
    shutil.rmtree(scratch)
