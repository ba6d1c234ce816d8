"""`platepipe check`: database, endpoint and keys verified with one request (an empty image),
exit 0/1, nothing written, the secret never shown."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli import platepipe


def test_check_passes_with_one_request_and_writes_nothing(
    tmp_path, db_url, start_emulator, platepipe_env, secret_key
):
    emulator = start_emulator()
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db_url}

    checked = platepipe("check", env=env)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "FAILED" not in checked.stdout
    assert "keys: accepted" in checked.stdout and "4000004" in checked.stdout
    assert "cost: 1 request" in checked.stdout
    stats = emulator.stats()
    assert stats["calls"] == 1 and stats["by_code"] == {"4000004": 1}
    assert secret_key not in checked.stdout + checked.stderr
    assert not list(tmp_path.iterdir())  # no SQLite file made


def test_check_fails_on_wrong_keys_a_dead_endpoint_and_a_bad_database(
    tmp_path, start_emulator, platepipe_env, secret_key
):
    emulator = start_emulator()
    db = f"sqlite:///{tmp_path / 'plates.db'}"
    env = {**platepipe_env, "NHN_OCR_ENDPOINT": emulator.url, "PLATEPIPE_DB": db}

    wrong = platepipe("check", env={**env, "NHN_OCR_SECRET_KEY": "wrong-one"})
    dead = platepipe("check", "--endpoint", "http://127.0.0.1:9", env=env)
    nowhere = platepipe("check", "--db", "sqlite:////nonexistent/dir/plates.db", env=env)
    no_keys = platepipe("check", env={**env, "NHN_OCR_SECRET_KEY": ""})

    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    assert "FAILED: keys: refused (4010001" in wrong.stdout
    assert dead.returncode == 1 and "FAILED: endpoint http://127.0.0.1:9" in dead.stdout
    assert "cost: nothing; no request reached the API" in dead.stdout
    assert nowhere.returncode == 1 and "FAILED: database" in nowhere.stdout
    assert no_keys.returncode == 1 and "Traceback" not in no_keys.stderr
    for result in (wrong, dead, nowhere, no_keys):
        assert secret_key not in result.stdout + result.stderr
    assert not Path(tmp_path / "plates.db").exists()
