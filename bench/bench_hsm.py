"""Signatures by a key in a PKCS#11 token (SoftHSM2 through python-pkcs11) against the same signatures by a
cryptography key, in one run.

Run with::

    .venv/bin/python -m pytest bench/bench_hsm.py --benchmark-only -p no:cacheprovider -o python_files='bench_*.py' -s

``test_token_signature_against_software`` times a batch of proofs of possession (:func:`hubsim.sign` over a
160-byte challenge, P-256) signed in the token, and in the same rounds -- in its setup step, which
pytest-benchmark does not time -- the same batch signed by a software key. ``extra_info`` records both per
signature and ``token_over_software``, each from the fastest round. Skipped where softhsm2 is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from devicekit.hsm import DEFAULT_MODULE, open_token
from hubsim import sign, verify_signature

BATCH = 200
ROUNDS = 7


@pytest.fixture(scope="module")
def token_key():
    if shutil.which("softhsm2-util") is None or not os.path.isfile(DEFAULT_MODULE):
        pytest.skip("install softhsm2 (Debian/Ubuntu: apt-get install softhsm2)")
    root = Path(tempfile.mkdtemp(prefix="certstorm-bench-hsm-"))
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    label, pin = f"bench-{os.getpid()}", os.urandom(6).hex()
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)  # restored below: the rest of the session keeps its own
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", os.urandom(6).hex()],
        check=True,
        capture_output=True,
    )
    pin_file = root / "token.pin"
    fd = os.open(pin_file, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, pin.encode())
    os.close(fd)
    token = open_token(DEFAULT_MODULE, label, str(pin_file))
    try:
        yield token.generate_key("device")
    finally:
        token.close()
        shutil.rmtree(root, ignore_errors=True)
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous


def _batch(key, challenges) -> float:
    started = time.perf_counter()
    for challenge in challenges:
        sign(key, challenge)
    return time.perf_counter() - started


def test_token_signature_against_software(benchmark, calibration, token_key):
    challenges = [os.urandom(160) for _ in range(BATCH)]
    software = ec.generate_private_key(ec.SECP256R1())
    assert verify_signature(token_key.public_key(), sign(token_key, challenges[0]), challenges[0])
    softs: list[float] = []

    def setup():
        softs.append(_batch(software, challenges))

    benchmark.pedantic(_batch, args=(token_key, challenges), setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    if benchmark.stats is None:  # --benchmark-disable: the code ran once, nothing was timed
        return
    calibration.record(benchmark, per=BATCH)
    token_s, software_s = benchmark.stats.stats.min / BATCH, min(softs) / BATCH
    benchmark.extra_info.update(
        operations_per_round=BATCH,
        token_sign_us=round(token_s * 1e6, 2),
        software_sign_us=round(software_s * 1e6, 2),
        token_signatures_per_s=round(1 / token_s),
        software_signatures_per_s=round(1 / software_s),
        token_over_software=round(token_s / software_s, 2),
    )
    print(
        f"\nP-256 proof of possession: token {token_s * 1e6:.0f} µs ({1 / token_s:,.0f}/s), software "
        f"{software_s * 1e6:.0f} µs ({1 / software_s:,.0f}/s): the token costs {token_s / software_s:.1f}x"
    )
