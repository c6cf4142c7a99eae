"""The embedded Ray's auth environment: a fresh private token when none is configured, the configured one
otherwise, and RAY_AUTH_MODE=disabled kept when set on purpose (a real embedded Ray: test_train_ray.py)."""

import stat
from pathlib import Path

from gvseg.runtime.ray_init import _auth_env


def test_a_private_token_is_written_only_when_none_is_configured(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(key, raising=False)
    env = _auth_env()
    assert env["RAY_AUTH_MODE"] == "token" and set(env) == {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"}
    path = Path(env["RAY_AUTH_TOKEN_PATH"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    token = path.read_text()
    assert len(token) == 64 and set(token) <= set("0123456789abcdef") and token not in repr(env)
    assert Path(_auth_env()["RAY_AUTH_TOKEN_PATH"]).read_text() != token  # one per start
    assert not (tmp_path / ".ray").exists()

    monkeypatch.setenv("RAY_AUTH_TOKEN", "given")
    assert _auth_env() == {"RAY_AUTH_MODE": "token"}
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("home")
    assert _auth_env() == {"RAY_AUTH_MODE": "token"}
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert _auth_env() == {}
