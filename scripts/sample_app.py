#!/usr/bin/env python3
"""Create the sample multi-team chat application database used by the demo
and the integration tests.

    python3 scripts/sample_app.py PATH [--teams 3] [--posts-per-team 200]
                                       [--seed 1] [--force]

The data is deterministic for a given seed. Ids of channels and posts are
interleaved across teams (rows are created round-robin), so a tenant's rows
are never one contiguous key range. Every team also gets a set of "kinds"
rows holding every value kind SQLite can store, including the awkward ones
(64-bit extremes, -0.0, TEXT with NUL or invalid UTF-8, empty BLOB, 100 KB
TEXT), so a copy that is not bit-exact shows.

Also importable: create(), add_posts(), KINDS_VALUES, SCHEMA.
"""

import argparse
import os
import random
import sqlite3
import struct
import sys

SCHEMA = """
CREATE TABLE teams(id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT UNIQUE);
CREATE TABLE channels(id INTEGER PRIMARY KEY,
    team_id INTEGER NOT NULL REFERENCES teams(id) ON DELETE CASCADE, name TEXT);
CREATE TABLE posts(id INTEGER PRIMARY KEY,
    channel_id INTEGER NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    user_id INTEGER REFERENCES users(id), body TEXT, score REAL, data BLOB);
CREATE TABLE reactions(post_id INTEGER NOT NULL REFERENCES posts(id) ON DELETE CASCADE,
    emoji TEXT NOT NULL, user_id INTEGER NOT NULL,
    PRIMARY KEY(post_id, emoji, user_id)) WITHOUT ROWID;
CREATE TABLE settings(team_id INTEGER NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    key TEXT NOT NULL, value, PRIMARY KEY(team_id, key)) WITHOUT ROWID;
CREATE TABLE kinds(id INTEGER PRIMARY KEY,
    channel_id INTEGER NOT NULL REFERENCES channels(id) ON DELETE CASCADE, v);
CREATE TABLE tags(name TEXT PRIMARY KEY, team_ref INTEGER);
CREATE TABLE audit_log(id INTEGER PRIMARY KEY, team_id INTEGER REFERENCES teams(id), what TEXT);
"""

# The largest finite mantissa: 1.9999999999999998 (0x3FFFFFFFFFFFFFFF).
ALL_MANTISSA = struct.unpack("<d", struct.pack("<Q", 0x3FFFFFFFFFFFFFFF))[0]

# (SQL expression for the value, bound parameter). Every team gets all of
# them. In an untyped column SQLite keeps -0.0 as a REAL with its sign bit
# set (checked with SQLite 3.40: typeof real, bytes 0000000000000080), even
# though quote(-0.0) prints '0.0'; only a column with REAL affinity turns it
# into +0.0. So a copy must carry the sign bit through.
KINDS_VALUES = [
    ("?", None),
    ("?", -9223372036854775808),
    ("?", 9223372036854775807),
    ("?", 0),
    ("?", -0.0),
    ("?", 1e-300),
    ("?", 5e-324),  # smallest subnormal
    ("?", ALL_MANTISSA),
    ("?", "a\x00b"),  # TEXT with an embedded NUL
    ("CAST(? AS TEXT)", b"\xff\xfe"),  # TEXT that is not valid UTF-8
    ("?", b"\x00\x01\x00\xff"),  # BLOB with NUL bytes
    ("?", b""),  # zero-length BLOB
    ("?", ""),  # empty TEXT
    ("?", "h\u00e9llo \u2713 \U0001f680"),  # multi-byte UTF-8
    ("?", None),  # placeholder: 100 KB TEXT, filled per team below
]

WORDS = ("hello world ship it deploy merge review lunch friday release bug fix "
         "caf\u00e9 na\u00efve \u2713 \U0001f680 \u65e5\u672c").split()
EMOJI = ("+1", "tada", "eyes", "rocket", "heart")
USERS = 40
SETTINGS = (("theme", "dark"), ("max_upload", 25 << 20), ("ratio", 0.75),
            ("logo", b"\x89PNG\x00\x00"), ("nothing", None))


def _big_text(rng, size=100 * 1024):
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(size))


def _post_row(rng, channel_id):
    body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))
    r = rng.random()
    if r < 0.1:
        score = None
    elif r < 0.2:
        score = float(rng.randint(-5, 5))  # integral: stored compactly, still REAL
    else:
        score = rng.uniform(-1000, 1000)
    data = None if rng.random() < 0.5 else rng.randbytes(rng.randint(0, 24))
    user = None if rng.random() < 0.05 else rng.randint(1, USERS)
    return (channel_id, user, body, score, data)


def _team_channels(conn, team_id):
    return [r[0] for r in conn.execute(
        "SELECT id FROM channels WHERE team_id = ? ORDER BY id", (team_id,))]


def add_posts(conn, rng, team_id, n, reactions=True):
    """Insert n posts (and some reactions) into random channels of team_id.
    Returns nothing; the caller owns the transaction."""
    chans = _team_channels(conn, team_id)
    if not chans:
        raise ValueError("team %r has no channels" % (team_id,))
    for _ in range(n):
        cur = conn.execute(
            "INSERT INTO posts(channel_id, user_id, body, score, data) VALUES (?,?,?,?,?)",
            _post_row(rng, rng.choice(chans)))
        if reactions:
            _add_reactions(conn, rng, cur.lastrowid)


def _add_reactions(conn, rng, post_id):
    seen = set()
    for _ in range(rng.randint(0, 2)):
        key = (rng.choice(EMOJI), rng.randint(1, USERS))
        if key in seen:
            continue
        seen.add(key)
        conn.execute("INSERT INTO reactions(post_id, emoji, user_id) VALUES (?,?,?)",
                     (post_id,) + key)


def create(path, teams=3, posts_per_team=200, seed=1, channels_per_team=4):
    """Create the sample database at path (must not exist)."""
    if os.path.exists(path):
        raise FileExistsError(path)
    rng = random.Random(seed)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(SCHEMA)
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO users(id, email) VALUES (?, ?)",
                         [(i, "user%d@example.com" % i) for i in range(1, USERS + 1)])
        team_ids = list(range(1, teams + 1))
        conn.executemany("INSERT INTO teams(id, name) VALUES (?, ?)",
                         [(t, "Team %d" % t) for t in team_ids])
        # Round-robin so that ids interleave across teams.
        for c in range(channels_per_team):
            for t in team_ids:
                conn.execute("INSERT INTO channels(team_id, name) VALUES (?, ?)",
                             (t, "team%d-channel%d" % (t, c)))
        chans = {t: _team_channels(conn, t) for t in team_ids}
        for _ in range(posts_per_team):
            for t in team_ids:
                cur = conn.execute(
                    "INSERT INTO posts(channel_id, user_id, body, score, data) "
                    "VALUES (?,?,?,?,?)", _post_row(rng, rng.choice(chans[t])))
                _add_reactions(conn, rng, cur.lastrowid)
        for t in team_ids:
            conn.executemany("INSERT INTO settings(team_id, key, value) VALUES (?,?,?)",
                             [(t, k, v) for k, v in SETTINGS])
            for i, (expr, val) in enumerate(KINDS_VALUES):
                if i == len(KINDS_VALUES) - 1:
                    val = _big_text(rng)
                conn.execute("INSERT INTO kinds(channel_id, v) VALUES (?, %s)" % expr,
                             (chans[t][i % len(chans[t])], val))
            conn.executemany("INSERT INTO tags(name, team_ref) VALUES (?, ?)",
                             [("team%d-tag%d" % (t, k), t) for k in range(5)])
            conn.executemany("INSERT INTO audit_log(team_id, what) VALUES (?, ?)",
                             [(t, "event %d of team %d" % (k, t)) for k in range(3)])
        # Tags that belong to no team: a NULL and a dangling reference.
        conn.executemany("INSERT INTO tags(name, team_ref) VALUES (?, ?)",
                         [("orphan-null", None), ("orphan-999", 999)])
        conn.execute("COMMIT")
        bad = conn.execute("PRAGMA foreign_key_check").fetchall()
        if bad:
            raise RuntimeError("sample data breaks foreign keys: %r" % bad[:5])
    finally:
        conn.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description="Create the sample chat-app SQLite database.")
    ap.add_argument("path")
    ap.add_argument("--teams", type=int, default=3)
    ap.add_argument("--posts-per-team", type=int, default=200)
    ap.add_argument("--channels-per-team", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--force", action="store_true", help="replace PATH if it exists")
    a = ap.parse_args(argv)
    if a.teams < 1 or a.posts_per_team < 0 or a.channels_per_team < 1:
        ap.error("--teams and --channels-per-team must be >= 1, --posts-per-team >= 0")
    if a.force:
        for suffix in ("", "-wal", "-shm", "-journal"):
            if os.path.exists(a.path + suffix):
                os.unlink(a.path + suffix)
    try:
        create(a.path, a.teams, a.posts_per_team, a.seed, a.channels_per_team)
    except FileExistsError:
        print("sample_app.py: '%s' exists (use --force to replace it)" % a.path,
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
