"""Keys that never leave a PKCS#11 token: a module and a token opened with a PIN file, EC key pairs made
inside the token (sensitive, never extractable), and a private-key object that cryptography's builders and
:func:`hubsim.sign` accept, whose every signature the token computes.

The token signs with ``CKM_ECDSA`` over a digest the host computes with cryptography (SoftHSM2 offers no
``CKM_ECDSA_SHA256``); its raw ``r || s`` is DER-encoded with cryptography's ``encode_dss_signature``.
Nothing here asks a token for private key material, and a key that a token would let out is refused.

Debian's ``softhsm2`` stands in for the HSM (:data:`DEFAULT_MODULE`); tokens live where ``SOFTHSM2_CONF``
points. Every failure is a :class:`TokenError` whose message is one line naming what failed and whose
``code`` names it in failure tables.
"""

from __future__ import annotations

import os
import stat

import pkcs11
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as px
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

__all__ = ["CURVES", "DEFAULT_MODULE", "Token", "TokenError", "TokenKey", "load_module", "open_token", "read_pin"]

DEFAULT_MODULE = "/usr/lib/softhsm/libsofthsm2.so"  # Debian's softhsm2
CURVES = {"p256": "secp256r1", "p384": "secp384r1"}
MAX_PIN = 255  # PKCS#11 PINs are short; a PIN file holding more is not a PIN file

# PKCS#11 failures of a key or of the token itself, by the code the failure tables show
_KEY_GONE = (px.KeyHandleInvalid, px.ObjectHandleInvalid, px.NoSuchKey)
_TOKEN_GONE = (px.DeviceRemoved, px.TokenNotPresent, px.SessionHandleInvalid, px.SessionClosed, px.DeviceError)


class TokenError(ValueError):
    """A token that cannot be used, on one line: ``code`` names it for failure tables (``pin_incorrect``,
    ``token_missing``, ``key_missing``, ``token_failed`` ...)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def read_pin(path: str, what: str = "--pin-file") -> str:
    """The PIN on the first line of ``path``, refused when the file is not a regular file only its owner may
    read or change (as the hub's operator token)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise TokenError("pin_file", f"{what} {path}: no such file") from None
    except OSError as exc:
        raise TokenError("pin_file", f"{what} {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise TokenError("pin_file", f"{what} {path}: not a regular file")
    if info.st_mode & 0o077:
        raise TokenError(
            "pin_file",
            f"{what} {path}: readable or writable by group or others (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"chmod 600 {path}",
        )
    try:
        with open(path, encoding="utf-8") as fh:
            pin = fh.read(MAX_PIN + 2).split("\n", 1)[0].rstrip("\r")
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenError("pin_file", f"{what} {path}: not readable as text ({type(exc).__name__})") from None
    if not pin:
        raise TokenError("pin_file", f"{what} {path}: the file holds no PIN on its first line")
    if len(pin) > MAX_PIN:
        raise TokenError("pin_file", f"{what} {path}: the first line is longer than any PIN ({MAX_PIN} characters)")
    return pin


_LOADED: dict[str, tuple[pkcs11.lib, int]] = {}  # module path -> (library, pid that initialised it)
_OPEN: dict[str, int] = {}  # module path -> tokens open through it in this process


def load_module(path: str, what: str = "--pkcs11-module") -> pkcs11.lib:
    """The PKCS#11 module at ``path``, initialised in this process (again after a fork: a module initialised
    by the parent is not usable in the child)."""
    if not os.path.isfile(path):
        raise TokenError("pkcs11_module_missing", f"{what} {path}: no such file (Debian: apt-get install softhsm2)")
    loaded = _LOADED.get(path)
    try:
        if loaded is None:
            lib = pkcs11.lib(path)
        else:
            lib = loaded[0]
            if loaded[1] != os.getpid():
                lib.reinitialize()
    except px.PKCS11Error as exc:
        raise TokenError("pkcs11_module_missing", f"{what} {path}: not a usable PKCS#11 module ({exc})") from None
    _LOADED[path] = (lib, os.getpid())
    return lib


def _find_token(lib: pkcs11.lib, path: str, label: str):
    try:
        return lib.get_token(token_label=label)
    except px.NoSuchToken:
        pass
    except px.MultipleTokensReturned:
        raise TokenError("token_ambiguous", f"more than one token labelled {label!r} in {path}") from None
    if not _OPEN.get(path):  # tokens made since the module was initialised appear after a re-initialisation
        lib.reinitialize()
        try:
            return lib.get_token(token_label=label)
        except px.NoSuchToken:
            pass
    raise TokenError(
        "token_missing", f"no token labelled {label!r} in {path} (softhsm2-util --show-slots lists the tokens)"
    )


def open_token(module: str, label: str, pin_file: str, *, rw: bool = True, what: str = "--pin-file") -> Token:
    """A user session on the token labelled ``label``, logged in with the PIN in ``pin_file``."""
    pin = read_pin(pin_file, what)
    lib = load_module(module)
    token = _find_token(lib, module, label)
    try:
        session = token.open(user_pin=pin, rw=rw)
    except px.PinIncorrect:
        raise TokenError("pin_incorrect", f"{what} {pin_file}: wrong PIN for token {label!r}") from None
    except px.PinLocked:
        raise TokenError("pin_locked", f"token {label!r} is locked after too many wrong PINs") from None
    except (px.PinExpired, px.PinInvalid, px.PinLenRange):
        raise TokenError("pin_incorrect", f"{what} {pin_file}: not a valid PIN for token {label!r}") from None
    except px.UserAlreadyLoggedIn:
        # A second login in one process would be granted without checking this PIN: refused instead.
        raise TokenError("token_busy", f"token {label!r} is already open in this process; close it first") from None
    except px.PKCS11Error as exc:
        raise TokenError("token_failed", f"token {label!r}: cannot log in ({type(exc).__name__})") from None
    _OPEN[module] = _OPEN.get(module, 0) + 1
    return Token(session, label, module)


class Token:
    """A logged-in session on one token; its keys are :class:`TokenKey` objects."""

    def __init__(self, session, label: str, module: str):
        self.session = session
        self.label = label
        self.module = module
        self._closed = False

    def __enter__(self) -> Token:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _OPEN[self.module] = max(0, _OPEN.get(self.module, 1) - 1)
            try:
                self.session.close()
            except px.PKCS11Error:
                pass

    def generate_key(self, label: str, alg: str = "p256") -> TokenKey:
        """A key pair made inside the token under ``label``: the private half is sensitive, never extractable
        and kept on the token; only the public half is read out."""
        if alg not in CURVES:
            raise TokenError("key_algorithm", f"token keys are {', '.join(CURVES)}, not {alg!r}")
        if self._private_handles({Attribute.LABEL: label}):
            raise TokenError("key_exists", f"token {self.label!r} already holds a key labelled {label!r}")
        try:
            params = self.session.create_domain_parameters(
                KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(CURVES[alg])}, local=True
            )
            public, private = params.generate_keypair(
                store=True,
                label=label,
                id=label.encode("utf-8"),
                public_template={Attribute.VERIFY: True},
                private_template={
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.PRIVATE: True,
                    Attribute.SIGN: True,
                    Attribute.DERIVE: False,
                    Attribute.DECRYPT: False,
                    Attribute.UNWRAP: False,
                },
            )
        except px.PKCS11Error as exc:
            raise TokenError(
                "token_failed", f"token {self.label!r}: key generation failed ({type(exc).__name__})"
            ) from None
        return TokenKey(private, _public_key(public), self.label, label)

    def key(self, label: str) -> TokenKey:
        """The key pair labelled ``label``; refused when the token would let its private half out."""
        private = self._private_handles({Attribute.LABEL: label})
        if not private:
            raise TokenError("key_missing", f"token {self.label!r} holds no private key labelled {label!r}")
        if len(private) > 1:
            raise TokenError("key_ambiguous", f"token {self.label!r} holds several private keys labelled {label!r}")
        try:
            public = self.session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=label)
        except px.NoSuchKey:
            raise TokenError("key_missing", f"token {self.label!r} holds no public key labelled {label!r}") from None
        except px.PKCS11Error as exc:
            raise TokenError("token_failed", f"token {self.label!r}: {type(exc).__name__}") from None
        return TokenKey(_held(private[0], self.label, label), _public_key(public), self.label, label)

    def keys(self) -> dict[str, TokenKey]:
        """Every EC key pair on the token by label, read in one pass over its objects."""
        try:
            publics = {
                k[Attribute.LABEL]: k
                for k in self.session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY})
                if k.key_type == KeyType.EC
            }
            privates = [
                k
                for k in self.session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})
                if k.key_type == KeyType.EC
            ]
        except px.PKCS11Error as exc:
            raise TokenError("token_failed", f"token {self.label!r}: {type(exc).__name__}") from None
        out = {}
        for private in privates:
            label = private[Attribute.LABEL]
            if label in out:  # as key(): which of two keys signs must never be a guess
                raise TokenError("key_ambiguous", f"token {self.label!r} holds several private keys labelled {label!r}")
            if label in publics:
                out[label] = TokenKey(_held(private, self.label, label), _public_key(publics[label]), self.label, label)
        return out

    def describe_private_keys(self) -> list[dict]:
        """What the token says of each private key: whether it was made inside (CKA_LOCAL) and whether it can
        ever leave (CKA_SENSITIVE, CKA_EXTRACTABLE and their ALWAYS/NEVER histories)."""
        flags = {
            "local": Attribute.LOCAL,
            "sensitive": Attribute.SENSITIVE,
            "always_sensitive": Attribute.ALWAYS_SENSITIVE,
            "extractable": Attribute.EXTRACTABLE,
            "never_extractable": Attribute.NEVER_EXTRACTABLE,
        }
        out = []
        for key in self.session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY}):
            out.append({"label": key[Attribute.LABEL], **{name: bool(key[a]) for name, a in flags.items()}})
        return sorted(out, key=lambda row: row["label"])

    def _private_handles(self, template: dict) -> list:
        try:
            return list(self.session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, **template}))
        except px.PKCS11Error as exc:
            raise TokenError("token_failed", f"token {self.label!r}: {type(exc).__name__}") from None


def _held(private, token: str, label: str):
    """``private`` when it was made inside the token and has never been able to leave it."""
    if not private[Attribute.SENSITIVE] or private[Attribute.EXTRACTABLE]:
        raise TokenError(
            "key_extractable",
            f"token {token!r} would let the private key {label!r} out (CKA_SENSITIVE false or CKA_EXTRACTABLE "
            "true): make a key inside the token that never leaves it",
        )
    if not (private[Attribute.LOCAL] and private[Attribute.ALWAYS_SENSITIVE] and private[Attribute.NEVER_EXTRACTABLE]):
        raise TokenError(
            "key_imported",
            f"token {token!r}: the private key {label!r} was not made inside it or could once leave it (CKA_LOCAL, "
            "CKA_ALWAYS_SENSITIVE or CKA_NEVER_EXTRACTABLE false): make a key inside the token that never leaves it",
        )
    return private


def _public_key(public) -> ec.EllipticCurvePublicKey:
    return serialization.load_der_public_key(encode_ec_public_key(public))


class TokenKey(ec.EllipticCurvePrivateKey):
    """An EC private key held by a token: cryptography's certificate and CSR builders and
    :func:`hubsim.sign` take it like any private key, and every signature is the token's. Its private half
    cannot be read, exchanged or exported."""

    def __init__(self, private, public: ec.EllipticCurvePublicKey, token: str, label: str):
        self._private = private
        self._public = public
        self.token = token
        self.label = label

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.curve.key_size

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    def sign(self, data: bytes, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        """DER ECDSA over ``data`` (or over a digest, with ``Prehashed``): the host hashes, the token signs."""
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise TypeError("a token key signs with ECDSA only")
        algorithm = signature_algorithm.algorithm
        if isinstance(algorithm, utils.Prehashed):
            digest = data
        else:
            h = hashes.Hash(algorithm)
            h.update(data)
            digest = h.finalize()
        try:
            raw = self._private.sign(digest, mechanism=Mechanism.ECDSA)
        except _KEY_GONE:
            raise TokenError("key_missing", f"token {self.token!r}: the key {self.label!r} is gone") from None
        except _TOKEN_GONE as exc:
            raise TokenError("token_failed", f"token {self.token!r}: {type(exc).__name__} while signing") from None
        except px.PKCS11Error as exc:
            raise TokenError("token_failed", f"token {self.token!r}: signing failed ({type(exc).__name__})") from None
        half = len(raw) // 2
        return utils.encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))

    def _kept(self, what: str):
        raise TokenError("key_not_extractable", f"{what}: the key {self.label!r} never leaves token {self.token!r}")

    def exchange(self, algorithm, peer_public_key) -> bytes:
        self._kept("key agreement")

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        self._kept("private numbers")

    def private_bytes(self, encoding, format, encryption_algorithm) -> bytes:
        self._kept("private bytes")

    def __copy__(self) -> TokenKey:
        return self

    def __deepcopy__(self, memo) -> TokenKey:
        return self

    def __repr__(self) -> str:
        return f"TokenKey({self.token!r}, {self.label!r}, {self.curve.name})"
