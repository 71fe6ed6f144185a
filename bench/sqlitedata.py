"""bench/sqlitedata.py - the SQLite benchmarks' database: bench/pgdata.sh's
tables (teams, channels, posts, reactions) in SQLite, three teams, 60
channels, ROWS posts, a reaction on every fifth. Imported by bench/capture.sh
and bench/install.sh --sqlite.

    python3 bench/sqlitedata.py PATH ROWS   (or make(path, rows) imported)
"""

import sqlite3
import sys

SCHEMA = """
PRAGMA journal_mode=WAL;
CREATE TABLE teams (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE channels (id INTEGER PRIMARY KEY,
  team_id INTEGER NOT NULL REFERENCES teams(id) ON DELETE CASCADE, name TEXT);
CREATE TABLE posts (id INTEGER PRIMARY KEY,
  channel_id INTEGER NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
  user_id INTEGER, body TEXT, score REAL, flag INTEGER, meta TEXT, created TEXT);
CREATE TABLE reactions (post_id INTEGER NOT NULL REFERENCES posts(id) ON DELETE CASCADE,
  emoji TEXT NOT NULL, user_id INTEGER NOT NULL, PRIMARY KEY (post_id, emoji, user_id));
WITH RECURSIVE t(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM t WHERE i < 3)
  INSERT INTO teams SELECT i, 'team ' || i FROM t;
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 60)
  INSERT INTO channels SELECT i, 1 + (i - 1) % 3, 'channel ' || i FROM c;
"""


def make(path, rows, extra=None):
    """The database at path (new), with rows posts; extra: SQL run last."""
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    db.execute("""
WITH RECURSIVE p(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM p WHERE i < ?)
INSERT INTO posts SELECT i, 1 + i % 60, i % 97, 'post ' || i || ': lorem ipsum dolor sit amet',
  i * 0.25, i % 2, '{"n": ' || i || '}', '2024-01-01 00:00:00' FROM p""", (rows,))
    db.execute("INSERT INTO reactions SELECT id, ':+1:', id % 97 FROM posts WHERE id % 5 = 0")
    if extra:
        db.execute(extra)
    db.commit()
    db.close()


if __name__ == "__main__":
    make(sys.argv[1], int(sys.argv[2]))
