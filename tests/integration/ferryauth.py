"""ferryauth - keys and the target's side of ferry's authentication, for the
integration tests (stdlib plus the openssl command line tool).

Keys are the harness's (ferrytest.test_key: the real keygen commands, 2048
bits, once per test process); tests copy one when they need to change it
(copy_key()).

Client speaks the handshake of common/handshake.h by hand (hello, challenge,
proof; RSA-PSS and RSA-OAEP through `openssl`), signs requests with the
session's HMAC and checks the source's response MACs, and can break each of
those on purpose: tests of refusals drive the source with it directly.
"""

import base64
import hashlib
import hmac
import http.client
import os
import shutil
import ssl
import struct
import subprocess
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FERRY_BIN = os.environ.get("FERRY_BIN") or os.path.join(ROOT, "build", "bin")
FERRY_TEST_TMP = os.environ.get("FERRY_TEST_TMP") or tempfile.gettempdir()
KEY_BITS = 2048

MAGIC = b"FRHS"
VERSION = 1
LABEL_SOURCE = b"ferry-hs-v1 source"
LABEL_TARGET = b"ferry-hs-v1 target"

# ---------------------------------------------------------------------------
# Keys

def keygen(path, agent="ferry-dst", bits=KEY_BITS):
    """Run `<agent> keygen --out path --bits bits`; the CompletedProcess (str output)."""
    cp = subprocess.run([os.path.join(FERRY_BIN, agent), "keygen", "--out", path,
                         "--bits", str(bits)], capture_output=True, timeout=120)
    cp.stdout = cp.stdout.decode(errors="replace")
    cp.stderr = cp.stderr.decode(errors="replace")
    return cp


def key(name):
    """Path of the private key called name ("src", "dst-1", ...; its public
    key: path + ".pub"), made once per test process by the harness
    (ferrytest.test_key). Shared: never modify it (copy_key)."""
    import ferrytest
    return ferrytest.test_key(name)


def target_key(tenant):
    """The target key the harness binds to tenant."""
    return key("dst-%s" % tenant)


def source_key():
    return key("src")


def copy_key(name, dest):
    """Copy key name (private, mode 0600, and .pub) to dest; returns dest."""
    src = key(name)
    shutil.copyfile(src, dest)
    os.chmod(dest, 0o600)
    shutil.copyfile(src + ".pub", dest + ".pub")
    return dest


def pem_der(path):
    """The DER bytes of the one PEM object in path."""
    with open(path) as f:
        lines = [l.strip() for l in f if l.strip() and not l.startswith("-----")]
    return base64.b64decode("".join(lines))


def fingerprint(pubpath):
    """"SHA256:" + unpadded base64 of SHA-256 over the DER public key, as ferry prints it."""
    digest = hashlib.sha256(pem_der(pubpath)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def run_keys(args, timeout=60):
    """`ferry-src keys ARGS`: the CompletedProcess (str output)."""
    cp = subprocess.run([os.path.join(FERRY_BIN, "ferry-src"), "keys"] + list(args),
                        capture_output=True, timeout=timeout)
    cp.stdout = cp.stdout.decode(errors="replace")
    cp.stderr = cp.stderr.decode(errors="replace")
    return cp


def authorize(src_conf, tenant, keypath, comment=None):
    """Bind keypath's public key to tenant in src_conf's authorized_keys
    (idempotent for the same tenant). Returns the fingerprint."""
    args = ["add", "--config", src_conf, "--tenant", str(tenant), keypath + ".pub"]
    if comment:
        args += ["--comment", comment]
    cp = run_keys(args)
    if cp.returncode != 0 and "already authori" not in cp.stderr:
        raise AssertionError("ferry-src keys add failed (exit %d): %s"
                             % (cp.returncode, cp.stderr))
    return fingerprint(keypath + ".pub")


def revoke(src_conf, fpr):
    cp = run_keys(["revoke", "--config", src_conf, fpr])
    if cp.returncode != 0:
        raise AssertionError("ferry-src keys revoke failed (exit %d): %s"
                             % (cp.returncode, cp.stderr))


def _openssl(args, data, what):
    cp = subprocess.run(["openssl"] + args, input=data, capture_output=True, timeout=60)
    if cp.returncode != 0:
        raise AssertionError("openssl %s failed: %s" % (what, cp.stderr.decode(errors="replace")))
    return cp.stdout


_PSS = ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32",
        "-sigopt", "rsa_mgf1_md:sha256"]


def pss_sign(keypath, msg):
    return _openssl(["dgst", "-sha256", "-sign", keypath] + _PSS, msg, "sign")


def pss_verify(pubpath, msg, sig):
    with tempfile.NamedTemporaryFile() as f:
        f.write(sig)
        f.flush()
        cp = subprocess.run(["openssl", "dgst", "-sha256", "-verify", pubpath,
                             "-signature", f.name] + _PSS, input=msg, capture_output=True,
                            timeout=60)
    return cp.returncode == 0


def oaep_decrypt(keypath, data):
    return _openssl(["pkeyutl", "-decrypt", "-inkey", keypath,
                     "-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256",
                     "-pkeyopt", "rsa_mgf1_md:sha256"], data, "decrypt")


# ---------------------------------------------------------------------------
# Handshake messages

def _field(b):
    return struct.pack(">H", len(b)) + b


def encode_hello(tenant, fpr, nonce, ts):
    t = tenant if isinstance(tenant, bytes) else str(tenant).encode()
    return (MAGIC + bytes((1,)) + struct.pack(">H", VERSION) + _field(t) + _field(fpr.encode())
            + _field(nonce) + _field(struct.pack(">q", ts)))


def encode_proof(session, sig):
    return MAGIC + bytes((3,)) + struct.pack(">H", VERSION) + _field(session.encode()) + _field(sig)


def decode_challenge(msg):
    if msg[:4] != MAGIC or msg[4] != 2:
        raise ValueError("not a challenge: %r" % msg[:40])
    p, out = 7, []
    while p < len(msg):
        n = struct.unpack(">H", msg[p:p + 2])[0]
        out.append(msg[p + 2:p + 2 + n])
        p += 2 + n
    fpr, nonce, session, ttl, ts, wrapped, sig = out
    return {"fingerprint": fpr.decode(), "nonce": nonce, "session": session.decode(),
            "ttl": struct.unpack(">I", ttl)[0], "timestamp": struct.unpack(">q", ts)[0],
            "wrapped": wrapped, "sig": sig}


def transcript(label, tenant, tfpr, sfpr, tnonce, snonce, session, hts, cts, ttl, wrapped):
    parts = [label, struct.pack(">H", VERSION), str(tenant).encode(), tfpr.encode(),
             sfpr.encode(), tnonce, snonce, session.encode(), struct.pack(">q", hts),
             struct.pack(">q", cts), struct.pack(">I", ttl), hashlib.sha256(wrapped).digest()]
    return b"".join(struct.pack(">I", len(x)) + x for x in parts)


def request_mac(secret, method, path, query, counter, body):
    msg = "%s\n%s\n%s\n%d\n%s" % (method, path, query, counter, hashlib.sha256(body).hexdigest())
    return hmac.new(secret, msg.encode(), hashlib.sha256).hexdigest()


def response_mac(secret, counter, status, body):
    msg = "resp\n%d\n%d\n%s" % (counter, status, hashlib.sha256(body).hexdigest())
    return hmac.new(secret, msg.encode(), hashlib.sha256).hexdigest()


# ---------------------------------------------------------------------------
# The client

class Response:
    """status, headers (dict, lowercase names), body; mac_ok: True when
    X-Ferry-Mac verified, False when present and wrong, None when absent."""

    def __init__(self, status, headers, body, mac_ok=None):
        self.status, self.headers, self.body, self.mac_ok = status, headers, body, mac_ok

    def __repr__(self):
        return "<HTTP %d mac_ok=%r %r>" % (self.status, self.mac_ok, self.body[:200])


class Client:
    """A target's session with the source at url for tenant, with the
    private key keypath. source_pub: the pinned source key to check the
    challenge against (None: not checked). cafile: for https."""

    def __init__(self, url, tenant, keypath, source_pub=None, cafile=None):
        self.url = url
        self.tenant = str(tenant)
        self.keypath = keypath
        self.source_pub = source_pub
        self.fpr = fingerprint(keypath + ".pub")
        u = urllib.parse.urlsplit(url)
        self.https = u.scheme == "https"
        self.host, self.port = u.hostname, u.port
        self.cafile = cafile
        self.session = None
        self.secret = None
        self.counter = 0
        self.challenge = None
        self._conn = None

    # -- transport --

    def _connection(self):
        if self._conn is None:
            if self.https:
                ctx = ssl.create_default_context(cafile=self.cafile)
                self._conn = http.client.HTTPSConnection(self.host, self.port, timeout=30,
                                                         context=ctx)
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        return self._conn

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def raw(self, path, body, headers=None, method="POST"):
        """One HTTP exchange: Response without MAC check."""
        h = {"Content-Type": "application/msgpack"}
        h.update(headers or {})
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers=h)
                r = conn.getresponse()
                data = r.read()
                hdrs = {k.lower(): v for k, v in r.getheaders()}
                if hdrs.get("connection", "").lower() == "close":
                    self.close()
                return Response(r.status, hdrs, data)
            except (ConnectionError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise

    # -- handshake --

    def hello(self, ts=None, nonce=None, tenant=None):
        """The hello message (fresh nonce, now); remembered for challenge()."""
        self._nonce = nonce if nonce is not None else os.urandom(32)
        self._hts = int(time.time()) if ts is None else ts
        return encode_hello(self.tenant if tenant is None else tenant, self.fpr, self._nonce,
                            self._hts)

    def send_hello(self, msg=None):
        return self.raw("/v1/session/hello", self.hello() if msg is None else msg,
                        {"Content-Type": "application/octet-stream"})

    def answer(self, challenge, bad_signature=False, sign_key=None):
        """Check a challenge (when source_pub is known), unwrap the secret,
        and return the proof (signed with sign_key instead when given, or
        with one bit of the signature flipped); the session becomes current."""
        ch = decode_challenge(challenge)
        t = dict(tenant=self.tenant, tfpr=self.fpr, sfpr=ch["fingerprint"], tnonce=self._nonce,
                 snonce=ch["nonce"], session=ch["session"], hts=self._hts,
                 cts=ch["timestamp"], ttl=ch["ttl"], wrapped=ch["wrapped"])
        if self.source_pub and not pss_verify(self.source_pub, transcript(LABEL_SOURCE, **t),
                                              ch["sig"]):
            raise AssertionError("the source's challenge signature does not verify")
        sig = pss_sign(sign_key or self.keypath, transcript(LABEL_TARGET, **t))
        if bad_signature:
            sig = bytes((sig[0] ^ 1,)) + sig[1:]
        self.challenge = ch
        self.session = ch["session"]
        self.secret = oaep_decrypt(self.keypath, ch["wrapped"])
        self.counter = 0
        return encode_proof(ch["session"], sig)

    def send_proof(self, msg):
        return self.raw("/v1/session/proof", msg, {"Content-Type": "application/octet-stream"})

    def handshake(self):
        """hello + proof; raises AssertionError if the source refuses."""
        r = self.send_hello()
        if r.status != 200:
            raise AssertionError("hello refused: %r" % r)
        r = self.send_proof(self.answer(r.body))
        if r.status != 200:
            raise AssertionError("proof refused: %r" % r)
        return self

    # -- requests --

    def post(self, path, body, query="", counter=None, session=None, mac=None, mac_path=None,
             mac_query=None, mac_body=None, headers=None):
        """A signed POST of body to path (+ "?" query). Any part of what the
        MAC covers can be made to differ from what is sent (mac_path,
        mac_query, mac_body), or the MAC (hex) and session replaced. The
        counter is the next one unless given. Returns a Response whose
        mac_ok says whether the answer's X-Ferry-Mac verified."""
        if self.session is None:
            self.handshake()
        if counter is None:
            self.counter += 1
            counter = self.counter
        if mac is None:
            mac = request_mac(self.secret, "POST", path if mac_path is None else mac_path,
                              query if mac_query is None else mac_query, counter,
                              body if mac_body is None else mac_body)
        h = {"X-Ferry-Session": self.session if session is None else session,
             "X-Ferry-Counter": str(counter), "X-Ferry-Mac": mac}
        h.update(headers or {})
        r = self.raw(path + ("?" + query if query else ""), body, h)
        got = r.headers.get("x-ferry-mac")
        if got is not None:
            r.mac_ok = hmac.compare_digest(got, response_mac(self.secret, counter, r.status,
                                                             r.body))
        return r

    def call(self, path, body):
        """post(), renewing the session once when the source asks; the
        answer's MAC must verify when it has one (AssertionError if not)."""
        r = self.post(path, body)
        if r.status == 401 and r.headers.get("x-ferry-auth") == "renew":
            self.handshake()
            r = self.post(path, body)
        if r.mac_ok is False:
            raise AssertionError("response MAC of %s does not verify: %r" % (path, r))
        return r


# ---------------------------------------------------------------------------
# ferrytest.http_post() to a source made with make_source(auth=False)

_clients = {}
_bound = set()


def _body_tenant(body):
    """The tenant a request body names, when it is a well-formed one; else "1"."""
    import re
    import ferrytest
    try:
        t = ferrytest.mp_unpack(body).get("tenant")
    except Exception:
        t = None
    if isinstance(t, str) and re.fullmatch(r"[A-Za-z0-9_.-]{1,255}", t):
        return t
    return "1"


def signed_post(url, src_conf, path, body):
    """POST body in a session for the body's tenant (its key bound on
    first use); (status, response bytes) as ferrytest.http_post. The
    answer's MAC must verify whenever it has one."""
    tenant = _body_tenant(body)
    if (src_conf, tenant) not in _bound:
        authorize(src_conf, tenant, target_key(tenant))
        _bound.add((src_conf, tenant))
    c = _clients.get((url, tenant))
    if c is None:
        c = _clients[(url, tenant)] = Client(url, tenant, target_key(tenant),
                                             source_pub=source_key() + ".pub")
    r = c.call(path, body)
    return r.status, r.body
