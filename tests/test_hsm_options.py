"""HSM settings and the PIN's sources, without a token: what reaches the scripts, what is shown."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from fioca.cli.context import AppContext, Terminal
from fioca.cli.hsm_options import PIN_FLAG_WARNING, resolve_hsm
from fioca.errors import ConfigError, UsageError
from fioca.pki import hsm

PIN = "hsm-Pin-4f7Q-zx"
MODULE = "/usr/lib/softhsm/libsofthsm2.so"


class FakeTerminal(Terminal):
    def __init__(self, *, interactive: bool, answer: str = ""):
        self._interactive = interactive
        self.answer = answer
        self.errors: list[str] = []
        self.asked: list[str] = []

    def err(self, text: str = "") -> None:
        self.errors.append(text)

    def interactive(self) -> bool:
        return self._interactive

    def prompt_secret(self, question: str) -> str:
        self.asked.append(question)
        return self.answer


def ctx(terminal: Terminal) -> AppContext:
    return AppContext(options={}, terminal=terminal)


def test_settings_never_show_the_pin():
    settings = hsm.HsmSettings(MODULE, "tok", PIN)
    for text in (repr(settings), str(settings), str(settings.describe()), repr(hsm.TokenKey(settings, None))):
        assert PIN not in text
    assert settings.describe()["script_env"]["HSM_PIN"] == "<hidden>"


def test_scripts_get_the_hsm_variables_and_the_module_config_only():
    environ = {
        "SOFTHSM2_CONF": "/x/softhsm2.conf",
        "FIOCA_HSM_PASS_ENV": "VENDOR_CFG, LD_PRELOAD,FIOCTL_TOKEN,OPENSSL_CONF",
        "VENDOR_CFG": "/etc/vendor.cfg",
        "LD_PRELOAD": "/tmp/evil.so",
        "FIOCTL_TOKEN": "secret-token",
        "OPENSSL_CONF": "/tmp/x.cnf",
        "UNRELATED": "1",
    }
    settings = hsm.HsmSettings(MODULE, "tok", PIN, module_env=hsm.module_env(environ))
    assert settings.script_env() == {
        "HSM_MODULE": MODULE,
        "HSM_TOKEN_LABEL": "tok",
        "HSM_PIN": PIN,  # in the scripts' environment: never on their command line
        "SOFTHSM2_CONF": "/x/softhsm2.conf",
        "VENDOR_CFG": "/etc/vendor.cfg",
    }


@pytest.mark.parametrize("label", ["a;object=x", "a?pin-value=1", "a%20b", "tab\there"])
def test_a_label_that_would_change_the_uri_is_refused(label: str):
    with pytest.raises(ConfigError, match="relabel the token"):
        hsm.HsmSettings(MODULE, label, PIN).check()


def test_a_plain_label_with_spaces_fits_but_a_missing_module_does_not(tmp_path):
    module = tmp_path / "module.so"
    module.write_bytes(b"")
    hsm.HsmSettings(str(module), "Factory Root 1", PIN).check()
    with pytest.raises(ConfigError, match="does not exist"):
        hsm.HsmSettings("/nonexistent/module.so", "tok", PIN).check()


def test_the_token_key_signs_sha256_only_and_never_leaves():
    key = hsm.TokenKey(hsm.HsmSettings(MODULE, "tok", PIN), None)
    with pytest.raises(ValueError, match="ECDSA-SHA256 only"):
        key.sign(b"data", ec.ECDSA(hashes.SHA384()))
    with pytest.raises(NotImplementedError):
        key.private_bytes()
    with pytest.raises(NotImplementedError):
        key.private_numbers()


# --- the PIN's sources ---------------------------------------------------------------------------


def test_the_pin_from_the_environment(monkeypatch):
    monkeypatch.setenv("FIOCA_HSM_PIN", PIN)
    terminal = FakeTerminal(interactive=True)
    settings = resolve_hsm(ctx(terminal), MODULE, None, "tok")
    assert settings.pin == PIN and terminal.asked == [] and terminal.errors == []


def test_the_pin_from_a_hidden_prompt_on_a_terminal(monkeypatch):
    monkeypatch.delenv("FIOCA_HSM_PIN", raising=False)
    terminal = FakeTerminal(interactive=True, answer=PIN)
    settings = resolve_hsm(ctx(terminal), MODULE, None, "tok")
    assert settings.pin == PIN and terminal.asked == ["User PIN of HSM token 'tok'"]
    assert all(PIN not in line for line in terminal.errors)


def test_no_terminal_and_no_pin_is_refused_not_hung(monkeypatch):
    monkeypatch.delenv("FIOCA_HSM_PIN", raising=False)
    terminal = FakeTerminal(interactive=False, answer=PIN)
    with pytest.raises(UsageError, match="--hsm-pin is required with --hsm-module"):
        resolve_hsm(ctx(terminal), MODULE, None, "tok")
    assert terminal.asked == []


def test_the_pin_flag_wins_with_a_warning(monkeypatch):
    monkeypatch.setenv("FIOCA_HSM_PIN", "from-env")
    terminal = FakeTerminal(interactive=True)
    settings = resolve_hsm(ctx(terminal), MODULE, PIN, "tok")
    assert settings.pin == PIN and terminal.errors == [PIN_FLAG_WARNING]
    assert PIN not in PIN_FLAG_WARNING


def test_a_dry_run_needs_no_pin(monkeypatch):
    monkeypatch.delenv("FIOCA_HSM_PIN", raising=False)
    terminal = FakeTerminal(interactive=False)
    settings = resolve_hsm(ctx(terminal), MODULE, None, "tok", need_pin=False)
    assert settings.pin == "" and terminal.asked == []


def test_no_module_means_no_hsm():
    assert resolve_hsm(ctx(FakeTerminal(interactive=False)), None, None, None) is None


def test_the_settings_a_runner_is_handed_back_carry_only_the_modules_configuration():
    """of_script_env inverts script_env: the server values fioca's scripts also get (FACTORY,
    LOCAL_CA_CN) are no module configuration, set in fioca's environment for each token session."""
    from fioca.pki import reference

    settings = hsm.HsmSettings("/usr/lib/softhsm/libsofthsm2.so", "root", "1234", (("SOFTHSM2_CONF", "/etc/s.conf"),))
    env = {**reference.script_env(factory="acme", local_ca_cn="fio-" + "a" * 24), **settings.script_env()}
    assert hsm.HsmSettings.of_script_env(env) == settings
