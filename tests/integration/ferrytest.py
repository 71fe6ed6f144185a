"""ferrytest - shared harness of ferry's integration tests (stdlib only).

The tests run the real agents ($FERRY_BIN/ferry-src, ferry-dst) on loopback
against real SQLite files in a temporary directory per test (under
$FERRY_TEST_TMP; kept when the test fails, removed when it passes).

The oracle, tenant_rows(), is hand-written SQL over the sample schema of
scripts/sample_app.py. It never uses ferry's code or ferry's notion of scope,
so a scope bug cannot hide behind an equally wrong check. Rows are compared
exactly, types included: every value is a (typeof, value) pair, TEXT as raw
bytes (it may be invalid UTF-8) and REAL as its 8 IEEE bytes (so -0.0 and
+0.0 differ, and no rounding is forgiven).
"""

import atexit
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FERRY_BIN = os.environ.get("FERRY_BIN") or os.path.join(ROOT, "build", "bin")
FERRY_TEST_TMP = os.environ.get("FERRY_TEST_TMP") or tempfile.gettempdir()
FERRY_SRC = os.path.join(FERRY_BIN, "ferry-src")
FERRY_DST = os.path.join(FERRY_BIN, "ferry-dst")

SANITIZER_PATTERNS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                      "ERROR: ThreadSanitizer", "WARNING: MemorySanitizer")


def _load_sample_app():
    spec = importlib.util.spec_from_file_location(
        "sample_app", os.path.join(ROOT, "scripts", "sample_app.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


sample_app = _load_sample_app()

# ---------------------------------------------------------------------------
# The oracle: the sample schema and each table's tenant, by hand.

# table -> (columns in declared order, primary key columns)
TABLES = {
    "teams": (("id", "name"), ("id",)),
    "channels": (("id", "team_id", "name"), ("id",)),
    "posts": (("id", "channel_id", "user_id", "body", "score", "data"), ("id",)),
    "reactions": (("post_id", "emoji", "user_id"), ("post_id", "emoji", "user_id")),
    "settings": (("team_id", "key", "value"), ("team_id", "key")),
    "kinds": (("id", "channel_id", "v"), ("id",)),
    "tags": (("name", "team_ref"), ("name",)),
}
IN_SCOPE = tuple(TABLES)
OUT_OF_SCOPE = ("users", "audit_log")

# FROM ... WHERE clause selecting a tenant's rows of each table, alias t.
ORACLE_FROM = {
    "teams": "FROM teams t WHERE t.id = :tenant",
    "channels": "FROM channels t WHERE t.team_id = :tenant",
    "posts": "FROM posts t JOIN channels c ON c.id = t.channel_id WHERE c.team_id = :tenant",
    "reactions": "FROM reactions t JOIN posts p ON p.id = t.post_id "
                 "JOIN channels c ON c.id = p.channel_id WHERE c.team_id = :tenant",
    "settings": "FROM settings t WHERE t.team_id = :tenant",
    "kinds": "FROM kinds t JOIN channels c ON c.id = t.channel_id WHERE c.team_id = :tenant",
    "tags": "FROM tags t WHERE t.team_ref = :tenant",
}


def _norm(typ, val):
    """One value as a (typeof, python value) pair that compares exactly and
    sorts: within one type the second members are of one Python type."""
    if isinstance(typ, bytes):
        typ = typ.decode()
    if typ == "null":
        return ("null", b"")
    if typ == "real":
        return ("real", struct.pack("<d", val))
    if typ == "integer":
        return ("integer", val)
    if typ in ("text", "blob"):
        return (typ, bytes(val))
    raise AssertionError("unknown sqlite type %r" % (typ,))


def _connect(path):
    """A connection that reads TEXT as raw bytes (it may be invalid UTF-8)."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.text_factory = bytes
    return conn


def _typed_select(cols, alias="t"):
    return ", ".join("typeof(%s.\"%s\"), %s.\"%s\"" % (alias, c, alias, c) for c in cols)


def _rows(conn, sql, params, ncols):
    out = []
    for r in conn.execute(sql, params):
        out.append(tuple(_norm(r[2 * i], r[2 * i + 1]) for i in range(ncols)))
    return out


def tenant_rows(db, table, tenant):
    """The oracle: the rows of table that belong to tenant in database file
    db, as a list of tuples of (typeof, value), in primary key order."""
    cols, pk = TABLES[table]
    sql = "SELECT %s %s ORDER BY %s" % (_typed_select(cols), ORACLE_FROM[table],
                                       ", ".join("t.\"%s\"" % c for c in pk))
    conn = _connect(db)
    try:
        return _rows(conn, sql, {"tenant": int(tenant)}, len(cols))
    finally:
        conn.close()


def table_rows(db, table):
    """Every row of table in db, same shape and order as tenant_rows()."""
    cols, pk = TABLES[table]
    sql = "SELECT %s FROM \"%s\" t ORDER BY %s" % (_typed_select(cols), table,
                                                  ", ".join("t.\"%s\"" % c for c in pk))
    conn = _connect(db)
    try:
        return _rows(conn, sql, (), len(cols))
    finally:
        conn.close()


def table_names(db):
    """Names of the tables in db (sqlite_schema, no sqlite_ internals)."""
    conn = _connect(db)
    try:
        return sorted(r[0].decode() for r in conn.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"))
    finally:
        conn.close()


def columns(db, table):
    conn = _connect(db)
    try:
        return tuple(r[1].decode() for r in conn.execute("PRAGMA table_info(\"%s\")" % table))
    finally:
        conn.close()


def db_dump(path):
    """A full logical dump of a database: every schema object and every row
    of every table (typed, sorted). Two dumps are equal iff the content is."""
    if not os.path.exists(path):
        return None
    conn = _connect(path)
    try:
        schema = sorted(tuple(r) for r in conn.execute(
            "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_schema"))
        data = {}
        for typ, name, _, _ in schema:
            if typ != b"table":
                continue
            name = name.decode()
            cols = [r[1].decode() for r in conn.execute("PRAGMA table_info(\"%s\")" % name)]
            sql = "SELECT %s FROM \"%s\" t" % (_typed_select(cols), name)
            data[name] = sorted(_rows(conn, sql, (), len(cols)))
        return {"schema": schema, "data": data}
    finally:
        conn.close()


def dump_diff(before, after):
    """A short description of how two db_dump() results differ ('' if not)."""
    if before == after:
        return ""
    if before is None or after is None:
        return "database %s" % ("created" if before is None else "removed")
    out = []
    sb, sa = set(before["schema"]), set(after["schema"])
    for o in sorted(sa - sb):
        out.append("schema added: %s %s" % (o[0].decode(), o[1].decode()))
    for o in sorted(sb - sa):
        out.append("schema removed: %s %s" % (o[0].decode(), o[1].decode()))
    for t in sorted(set(before["data"]) | set(after["data"])):
        rb, ra = before["data"].get(t, []), after["data"].get(t, [])
        if rb != ra:
            added = [r for r in ra if r not in rb]
            gone = [r for r in rb if r not in ra]
            out.append("table %s: %d rows added (e.g. %s), %d removed (e.g. %s)"
                       % (t, len(added), _short(added[:2]), len(gone), _short(gone[:2])))
    return "\n".join(out)


def source_conn(db):
    """A writable connection to the source with foreign keys (and so the
    schema's ON DELETE CASCADE) on, as the application would have."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def on_source(db, *statements):
    """Run each statement (SQL, or (SQL, params)) on the source as the
    application would (source_conn, autocommit), then close."""
    conn = source_conn(db)
    try:
        for st in statements:
            if isinstance(st, str):
                conn.execute(st)
            else:
                conn.execute(*st)
    finally:
        conn.close()


def query(db, sql, *params):
    """All rows of one query on a SQLite database (opened and closed here)."""
    conn = source_conn(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


# The tenant's rows of a table "pins" that a test added under posts, and the
# same rows on a target that holds one tenant.
PINS_OF_TEAM_1 = ("SELECT x.post_id, x.at FROM pins x JOIN posts p ON p.id = x.post_id "
                  "JOIN channels c ON c.id = p.channel_id WHERE c.team_id = 1 ORDER BY 1")
PINS_ON_TARGET = "SELECT post_id, at FROM pins ORDER BY 1"


def make_sample_db(path, teams=3, posts_per_team=200, seed=1, channels_per_team=4):
    sample_app.create(path, teams=teams, posts_per_team=posts_per_team, seed=seed,
                      channels_per_team=channels_per_team)
    return path


# ---------------------------------------------------------------------------
# Configs

def db_url(db):
    """The database URL for db: a path (SQLite) or already a URL (postgresql:...)."""
    if db.startswith(("postgresql:", "postgres:", "sqlite:")):
        return db
    return "sqlite://%s" % os.path.abspath(db)


def write_src_conf(path, db, listen="127.0.0.1:0", batch_rows=None, extra="",
                   identity=None, authorized_keys=None):
    """A source config; with identity and authorized_keys, authenticated.
    db: a SQLite path or a database URL."""
    lines = ["[source]", "database = %s" % db_url(db),
             "listen = %s" % listen]
    if batch_rows is not None:
        lines.append("batch_rows = %d" % batch_rows)
    if identity:
        lines.append("identity = %s" % os.path.abspath(identity))
    if authorized_keys:
        lines.append("authorized_keys = %s" % os.path.abspath(authorized_keys))
    lines += ["", "[scope]", "root = teams", "exclude = audit_log", "",
              "[table tags]", "scope = tags.team_ref = :tenant", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines) + extra)
    return path


def set_max_message(conf, mb):
    """[source] max_message = mb in the config file conf (None: the line out)."""
    with open(conf) as f:
        text = re.sub(r"\nmax_message = \d+", "", f.read())
    if mb:
        text = text.replace("[source]\n", "[source]\nmax_message = %d\n" % mb, 1)
    with open(conf, "w") as f:
        f.write(text)


def write_dst_conf(path, db, state, tenant, url, extra="", identity=None, public_key=None):
    """A target config; with identity and public_key (the pinned source key),
    authenticated. db: a SQLite path or a database URL."""
    lines = ["[target]", "database = %s" % db_url(db),
             "state = %s" % os.path.abspath(state), "tenant = %s" % tenant]
    if identity:
        lines.append("identity = %s" % os.path.abspath(identity))
    lines += ["", "[source]", "url = %s" % url]
    if public_key:
        lines.append("public_key = %s" % os.path.abspath(public_key))
    lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines) + extra)
    return path


_KEYS = {}
_KEYDIR = []


def test_key(name):
    """The private key file of a test identity ("src", "dst-1", ...): made
    once per process with keygen (2048 bits: quick), FILE.pub beside it.
    A target key is bound to one tenant, hence one per tenant."""
    if name not in _KEYS:
        if not _KEYDIR:
            os.makedirs(FERRY_TEST_TMP, exist_ok=True)
            _KEYDIR.append(tempfile.mkdtemp(prefix="keys-", dir=FERRY_TEST_TMP))
            atexit.register(shutil.rmtree, _KEYDIR[0], True)
        path = os.path.join(_KEYDIR[0], name + ".key")
        exe = FERRY_SRC if name == "src" else FERRY_DST
        cp = _run(exe, ["keygen", "--out", path, "--bits", "2048"], 120)
        if cp.returncode != 0 or not os.path.exists(path + ".pub"):
            raise AssertionError("%s keygen failed (exit %d): %s"
                                 % (os.path.basename(exe), cp.returncode, cp.stderr))
        _KEYS[name] = path
    return _KEYS[name]


# ---------------------------------------------------------------------------
# Running the agents

def sanitizer_report(text):
    """The first sanitizer report line in text, or None."""
    for line in text.splitlines():
        if any(p in line for p in SANITIZER_PATTERNS):
            return line
    return None


def _run(exe, args, timeout, input=None):
    try:
        cp = subprocess.run([exe] + list(args), capture_output=True, timeout=timeout,
                            input=input)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("%s %s: no exit within %ss\nstderr: %s" % (
            os.path.basename(exe), " ".join(args), timeout,
            (e.stderr or b"").decode(errors="replace")[-4000:]))
    cp.stdout = cp.stdout.decode(errors="replace")
    cp.stderr = cp.stderr.decode(errors="replace")
    bad = sanitizer_report(cp.stderr)
    if bad:
        raise AssertionError("%s %s: sanitizer report: %s\n%s" % (
            os.path.basename(exe), " ".join(args), bad, cp.stderr[-8000:]))
    return cp


def run_src(args, timeout=120):
    """Run ferry-src with args; CompletedProcess with str stdout/stderr.
    Fails the test on a timeout or a sanitizer report."""
    return _run(FERRY_SRC, args, timeout)


def run_dst(args, timeout=300):
    """Run ferry-dst with args, as run_src."""
    return _run(FERRY_DST, args, timeout)


def start_dst(args, log_path):
    """Start ferry-dst in the background (stdout+stderr to log_path): a Popen."""
    log = open(log_path, "wb")
    try:
        return subprocess.Popen([FERRY_DST] + list(args), stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def status_json(conf):
    cp = run_dst(["status", "--config", conf, "--json"], timeout=60)
    if cp.returncode != 0:
        raise AssertionError("ferry-dst status --json exit %d: %s" % (cp.returncode, cp.stderr))
    try:
        return json.loads(cp.stdout)
    except ValueError as e:
        raise AssertionError("status --json is not JSON (%s): %r" % (e, cp.stdout[:2000]))


def free_port():
    """A loopback port nothing listens on (bound and released)."""
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def refusing_port():
    """(port, sock): a loopback port bound by sock but not listening, so a
    connection to it is refused and no other process (another test's
    source, running at the same time) can take it until sock.close()."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1], s


class SrcServer:
    """`ferry-src serve --config conf` for the duration of a with block.

    Waits up to 10 s for "listening on HOST:PORT" in its stderr log; .url is
    then http://HOST:PORT. On exit it is stopped with SIGTERM (SIGKILL after
    10 s); the test fails if it had died early, did not exit 0, or its log
    holds a sanitizer report.
    """

    def __init__(self, conf, log_path, sign_http=False, env=None):
        self.conf = conf
        self.log_path = log_path
        self.sign_http = sign_http  # http_post() to it signs (ferryauth), see make_source
        self.env = env              # extra environment, e.g. FERRY_SESSION_TTL
        self.proc = None
        self.url = None
        self.host = None
        self.port = None

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self):
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen([FERRY_SRC, "serve", "--config", self.conf],
                                         stdout=log, stderr=log,
                                         env=dict(os.environ, **(self.env or {})))
        finally:
            log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            m = re.search(r"listening on (\S+):(\d+)", self.log())
            if m:
                self.host, self.port = m.group(1), int(m.group(2))
                tls = re.search(r"listening on \S+ \(https\)", self.log())
                self.url = "%s://%s:%d" % ("https" if tls else "http", self.host, self.port)
                if self.sign_http:
                    _SIGNED[self.url] = self.conf
                return self
            if self.proc.poll() is not None:
                raise AssertionError("ferry-src serve exited %d before listening:\n%s" % (
                    self.proc.returncode, self.log()[-4000:]))
            time.sleep(0.02)
        self.proc.kill()
        self.proc.wait()
        raise AssertionError("ferry-src serve did not say 'listening on' within 10 s:\n%s"
                             % self.log()[-4000:])

    def stop(self):
        """Stop the server; returns a problem description or None."""
        if self.proc is None:
            return None
        problem = None
        if self.proc.poll() is not None:
            problem = "ferry-src serve died during the test (exit %d)" % self.proc.returncode
        else:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                problem = "ferry-src serve ignored SIGTERM for 10 s"
            if problem is None and self.proc.returncode != 0:
                problem = "ferry-src serve exited %d after SIGTERM" % self.proc.returncode
        bad = sanitizer_report(self.log())
        if bad:
            problem = "ferry-src serve sanitizer report: %s" % bad
        self.proc = None
        _SIGNED.pop(self.url, None)
        return problem

    def __exit__(self, exc_type, exc, tb):
        problem = self.stop()
        if problem:
            raise AssertionError("%s\n%s" % (problem, self.log()[-8000:]))
        return False


# ---------------------------------------------------------------------------
# HTTP by hand, with a tiny msgpack codec (the stdlib has none)

def mp_pack(obj):
    """msgpack-encode None/bool/int/float/str/bytes/list/tuple/dict."""
    out = bytearray()
    _pack(obj, out)
    return bytes(out)


def _pack(o, out):
    if o is None:
        out.append(0xC0)
    elif o is True:
        out.append(0xC3)
    elif o is False:
        out.append(0xC2)
    elif isinstance(o, int):
        if 0 <= o < 0x80:
            out.append(o)
        elif -32 <= o < 0:
            out.append(o & 0xFF)
        elif 0 <= o <= 0xFFFFFFFFFFFFFFFF:
            out += b"\xcf" + struct.pack(">Q", o)
        elif -(1 << 63) <= o < 0:
            out += b"\xd3" + struct.pack(">q", o)
        else:
            raise ValueError("int out of range")
    elif isinstance(o, float):
        out += b"\xcb" + struct.pack(">d", o)
    elif isinstance(o, str):
        b = o.encode()
        _hdr(out, len(b), 0xA0, 31, 0xD9, 0xDA, 0xDB)
        out += b
    elif isinstance(o, (bytes, bytearray)):
        _hdr(out, len(o), None, 0, 0xC4, 0xC5, 0xC6)
        out += o
    elif isinstance(o, (list, tuple)):
        _hdr(out, len(o), 0x90, 15, None, 0xDC, 0xDD)
        for x in o:
            _pack(x, out)
    elif isinstance(o, dict):
        _hdr(out, len(o), 0x80, 15, None, 0xDE, 0xDF)
        for k, v in o.items():
            _pack(k, out)
            _pack(v, out)
    else:
        raise TypeError("cannot msgpack %r" % type(o))


def _hdr(out, n, fix, fixmax, b8, b16, b32):
    if fix is not None and n <= fixmax:
        out.append(fix | n)
    elif b8 is not None and n < 0x100:
        out += bytes((b8, n))
    elif n < 0x10000:
        out += bytes((b16,)) + struct.pack(">H", n)
    else:
        out += bytes((b32,)) + struct.pack(">I", n)


def mp_unpack(data):
    """Decode one msgpack object (must use all of data). str -> str when
    valid UTF-8, else bytes; bin -> bytes."""
    obj, pos = _unpack(data, 0)
    if pos != len(data):
        raise ValueError("%d trailing bytes" % (len(data) - pos))
    return obj


def _take(data, pos, n):
    if pos + n > len(data):
        raise ValueError("truncated msgpack")
    return data[pos:pos + n], pos + n


def _unpack(d, p):
    b, p = _take(d, p, 1)
    t = b[0]
    fixed = {0xC0: None, 0xC2: False, 0xC3: True}
    if t in fixed:
        return fixed[t], p
    if t < 0x80:
        return t, p
    if t >= 0xE0:
        return t - 0x100, p
    if 0x80 <= t <= 0x8F:
        return _map(d, p, t & 0x0F)
    if 0x90 <= t <= 0x9F:
        return _arr(d, p, t & 0x0F)
    if 0xA0 <= t <= 0xBF:
        return _str(d, p, t & 0x1F)
    ints = {0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q",
            0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q", 0xCA: ">f", 0xCB: ">d"}
    if t in ints:
        fmt = ints[t]
        raw, p = _take(d, p, struct.calcsize(fmt))
        return struct.unpack(fmt, raw)[0], p
    lens = {0xD9: (">B", "s"), 0xDA: (">H", "s"), 0xDB: (">I", "s"),
            0xC4: (">B", "b"), 0xC5: (">H", "b"), 0xC6: (">I", "b"),
            0xDC: (">H", "a"), 0xDD: (">I", "a"), 0xDE: (">H", "m"), 0xDF: (">I", "m")}
    if t in lens:
        fmt, kind = lens[t]
        raw, p = _take(d, p, struct.calcsize(fmt))
        n = struct.unpack(fmt, raw)[0]
        if kind == "s":
            return _str(d, p, n)
        if kind == "b":
            return _take(d, p, n)
        if kind == "a":
            return _arr(d, p, n)
        return _map(d, p, n)
    raise ValueError("unsupported msgpack type 0x%02x" % t)


def _str(d, p, n):
    raw, p = _take(d, p, n)
    try:
        return raw.decode(), p
    except UnicodeDecodeError:
        return raw, p


def _arr(d, p, n):
    if n > len(d) - p:
        raise ValueError("array longer than the data")
    out = []
    for _ in range(n):
        o, p = _unpack(d, p)
        out.append(o)
    return out, p


def _map(d, p, n):
    if 2 * n > len(d) - p:
        raise ValueError("map longer than the data")
    out = {}
    for _ in range(n):
        k, p = _unpack(d, p)
        v, p = _unpack(d, p)
        out[k if not isinstance(k, list) else tuple(k)] = v
    return out, p


# url -> source config of the servers whose http_post() requests are signed
_SIGNED = {}


def http_post(url, path, body, timeout=30, content_type="application/msgpack"):
    """POST body to url+path: (status, response bytes). Never raises for an
    HTTP error status. To a source made with make_source(auth=False) the
    request is signed in a session for the body's tenant (ferryauth); to
    any other it goes without a session."""
    if url in _SIGNED:
        import ferryauth
        return ferryauth.signed_post(url, _SIGNED[url], path, body)
    req = urllib.request.Request(url + path, data=body, method="POST",
                                 headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_get(url, path, timeout=30, headers=None):
    req = urllib.request.Request(url + path, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# ---------------------------------------------------------------------------
# Test case base

class FerryTestCase(unittest.TestCase):
    """A temporary directory per test (self.dir), kept when the test fails."""

    maxDiff = 4000

    @classmethod
    def setUpClass(cls):
        # A missing agent is an error, not a skip: a broken build must not
        # turn into passing integration tests.
        for exe in (FERRY_SRC, FERRY_DST):
            if not os.access(exe, os.X_OK):
                raise AssertionError("%s is not built (FERRY_BIN=%s)" % (exe, FERRY_BIN))

    def setUp(self):
        os.makedirs(FERRY_TEST_TMP, exist_ok=True)
        name = self.id().split(".", 1)[-1].replace(".", "-")
        self.dir = tempfile.mkdtemp(prefix=name + "-", dir=FERRY_TEST_TMP)
        # The first cleanup runs last: after a subclass's (an unmount, say).
        self.addCleanup(self._drop_dir)

    def _drop_dir(self):
        ok = getattr(self._outcome, "success", False)
        if ok and not os.environ.get("FERRY_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            sys.stderr.write("\n[kept %s]\n" % self.dir)

    def path(self, name):
        return os.path.join(self.dir, name)

    # -- fixtures -----------------------------------------------------------

    def make_source(self, teams=3, posts_per_team=200, batch_rows=None, install=True, auth=True):
        """src.db with the sample app, src.conf, and (by default) install.
        The source always has a key and an authorized_keys file (there is no
        unauthenticated source), and make_target() authorises a target key
        for its tenant: the agents run as they are deployed. auth only
        decides what ft.http_post() does to this source: with auth=False
        (raw HTTP tests) it signs each request in a session for the body's
        tenant, as a target would (ferryauth); with auth=True it sends them
        without a session, to be refused."""
        self.src_db = make_sample_db(self.path("src.db"), teams=teams,
                                     posts_per_team=posts_per_team)
        self.source_conf(self.src_db, batch_rows=batch_rows, install=install, auth=auth)

    def source_conf(self, db, batch_rows=None, extra="", install=True, auth=True):
        """src.conf for db (a SQLite path or a database URL) with the test's
        source key and an empty authorized_keys (make_target() authorises a
        target key for its tenant), and (by default) install."""
        self.auth = auth
        self.authorized = set()
        self.src_conf = write_src_conf(
            self.path("src.conf"), db, batch_rows=batch_rows, extra=extra,
            identity=test_key("src"), authorized_keys=self.path("authorized_keys"))
        open(self.path("authorized_keys"), "a").close()
        if install:
            cp = run_src(["install", "--config", self.src_conf])
            self.assertEqual(cp.returncode, 0, "ferry-src install failed: %s" % cp.stderr)

    def serve(self, env=None):
        """A SrcServer for src.conf (use in a with block); env: extra environment."""
        self._nserve = getattr(self, "_nserve", 0) + 1
        return SrcServer(self.src_conf, self.path("src-%d.log" % self._nserve),
                         sign_http=not getattr(self, "auth", True), env=env)

    def make_target(self, url, tenant=1, extra="", db=None):
        """dst.conf for tenant; db: the target (default dst.db; or a URL)."""
        self.dst_db = db or self.path("dst.db")
        self.state = self.path("state")
        # Keys even without a source (a test of an unreachable one): ferry-dst needs them.
        identity = test_key("dst-%s" % tenant)
        public_key = test_key("src") + ".pub"
        if hasattr(self, "src_conf") and tenant not in getattr(self, "authorized", set()):
            import ferryauth
            ferryauth.authorize(self.src_conf, tenant, identity)
            self.authorized.add(tenant)
        self.dst_conf = write_dst_conf(self.path("dst.conf"), self.dst_db, self.state,
                                       tenant, url, extra=extra, identity=identity,
                                       public_key=public_key)

    def sync(self, *args, expect=0, timeout=300):
        """ferry-dst sync on dst.conf; asserts the exit status unless expect is None."""
        cp = run_dst(["sync", "--config", self.dst_conf] + list(args), timeout=timeout)
        if expect is not None:
            self.assertEqual(cp.returncode, expect, "ferry-dst sync %s exit %d, expected %d\n"
                             "stdout: %s\nstderr: %s" % (" ".join(args), cp.returncode, expect,
                                                        cp.stdout[-3000:], cp.stderr[-3000:]))
        return cp

    # -- assertions ---------------------------------------------------------

    def assertOneLine(self, text, what="stderr"):
        lines = [l for l in text.splitlines() if l.strip()]
        self.assertEqual(len(lines), 1, "%s must be exactly one line, got:\n%s" % (what, text))

    def assertTableEqual(self, expected, actual, table):
        """Rows lists equal; on failure name the first differing keys."""
        if expected == actual:
            return
        exp, act = set(expected), set(actual)
        missing = sorted(exp - act)[:5]
        extra = sorted(act - exp)[:5]
        self.fail("table %s differs from the oracle: %d rows expected, %d found; "
                  "%d missing, %d unexpected (duplicates: %d)\nmissing e.g. %s\nunexpected e.g. %s"
                  % (table, len(expected), len(actual), len(exp - act), len(act - exp),
                     len(actual) - len(act), _short(missing), _short(extra)))

    def assertUnchanged(self, before, path, what):
        diff = dump_diff(before, db_dump(path))
        if diff:
            self.fail("%s changed the database %s:\n%s" % (what, os.path.basename(path), diff))

    def assertTenantCopy(self, src_db, dst_db, tenant, others=()):
        """The target holds exactly the tenant's rows of every in-scope table
        (types and bits included), the same columns, nothing out of scope,
        and nothing of the other tenants."""
        self.assertTrue(os.path.exists(dst_db), "target database was not created")
        names = table_names(dst_db)
        for t in OUT_OF_SCOPE:
            self.assertNotIn(t, names, "out-of-scope table %s exists on the target" % t)
        for t in IN_SCOPE:
            self.assertIn(t, names, "in-scope table %s missing on the target" % t)
            self.assertEqual(columns(dst_db, t), columns(src_db, t),
                             "columns of %s differ from the source" % t)
            self.assertTableEqual(tenant_rows(src_db, t, tenant), table_rows(dst_db, t), t)
            for o in others:
                self.assertEqual(tenant_rows(dst_db, t, o), [],
                                 "target holds rows of tenant %s in %s" % (o, t))


# A commit from before this session's protocol additions: its ferry-src knows
# neither the keyed row hash (digest "hash") nor the first change batch with
# the manifest (manifest "changes"), and refuses both keys.
OLD_SRC_COMMIT = "43c2e43"


def old_source(commit=OLD_SRC_COMMIT):
    """Path of a ferry-src from commit (default OLD_SRC_COMMIT, or
    FERRY_OLD_SRC for it), built once per machine from the repository's
    history (git archive, cmake). Without that commit (a tarball, a
    shallow clone) the test is skipped, loudly."""
    if os.environ.get("FERRY_OLD_SRC") and commit == OLD_SRC_COMMIT:
        return os.environ["FERRY_OLD_SRC"]
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    base = os.path.join(os.environ.get("TMPDIR", "/tmp"), "ferry-old-src-%s" % commit)
    exe = os.path.join(base, "build", "bin", "ferry-src")
    if os.path.exists(exe):
        return exe
    have = subprocess.run(["git", "-C", repo, "cat-file", "-e", commit + "^{commit}"],
                          capture_output=True)
    if have.returncode != 0:
        # a tarball or a shallow clone: nothing to build the old source from
        raise unittest.SkipTest("no commit %s in %s (shallow clone?); set FERRY_OLD_SRC"
                                % (commit, repo))
    tmp = "%s.%d" % (base, os.getpid())
    os.makedirs(tmp, exist_ok=True)
    steps = [
        "git -C '%s' archive %s | tar -x -C '%s'" % (repo, commit, tmp),
        "cmake -S '%s' -B '%s/build' -DCMAKE_BUILD_TYPE=Release >/dev/null" % (tmp, tmp),
        "cmake --build '%s/build' --target ferry-src -j2 >/dev/null" % tmp,
    ]
    for s in steps:
        cp = subprocess.run(s, shell=True, capture_output=True, text=True, timeout=900)
        if cp.returncode != 0:
            raise AssertionError("cannot build the ferry-src of %s for the compatibility test "
                                 "(set FERRY_OLD_SRC to one instead): %s: %s"
                                 % (commit, s, cp.stderr[-2000:]))
    try:
        os.rename(tmp, base)
    except OSError:  # another run got there first
        subprocess.run(["rm", "-rf", tmp])
    return exe


def _short(rows):
    def one(v):
        # SQLite oracles give (typeof, value) pairs, PostgreSQL ones text forms
        typ, val = v if isinstance(v, tuple) and len(v) == 2 else (None, v)
        if isinstance(val, (bytes, str)) and len(val) > 40:
            val = val[:40] + ("..." if isinstance(val, str) else b"...")
        return "%r" % (val,) if typ is None else "%s:%r" % (typ, val)
    return "[" + "; ".join("(" + ", ".join(one(v) for v in r) + ")" for r in rows) + "]"


def main():
    unittest.main(verbosity=2)
